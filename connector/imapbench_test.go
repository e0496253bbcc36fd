package connector_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/connlog"
	"github.com/mailbus/mailbus/connector/dovecottest"
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/schemas"
)

// BenchmarkIngest measures the whole cycle (fetch, map, publish, ack, \Seen, checkpoint)
// per message of about 4 KB, against the in-memory IMAP server and embedded NATS.
func BenchmarkIngest(b *testing.B) {
	n := startBusNATS(b)
	srv := startMemIMAP(b, memCaps...)
	raw := bigMail(1)
	for range b.N {
		srv.append(b, "INBOX", raw)
	}
	rt := newIMAPRuntime(b, n)
	route := imapRoute("bench", schemas.SelectUnseen, schemas.AfterMarkRead)
	b.SetBytes(int64(len(raw)))
	b.ResetTimer()
	runIMAPWorker(b, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	deadline := time.Now().Add(10 * time.Minute)
	for {
		st, _ := rt.Status.Get(route.Name)
		if st.LastUid >= uint32(b.N) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("not done: %+v", st)
		}
		time.Sleep(2 * time.Millisecond)
	}
	b.StopTimer()
}

// BenchmarkIngestConnLog is BenchmarkIngest with the connection log at each level: what
// an entry per message (full) costs against errors, which writes none for a healthy route.
func BenchmarkIngestConnLog(b *testing.B) {
	for _, level := range []string{schemas.LogErrors, schemas.LogFull} {
		b.Run(level, func(b *testing.B) {
			n := startBusNATS(b)
			srv := startMemIMAP(b, memCaps...)
			raw := bigMail(1)
			for range b.N {
				srv.append(b, "INBOX", raw)
			}
			rt := newIMAPRuntime(b, n)
			rt.ConnLog = connlog.New(n.js, busNames, rt.Logger)
			route := imapRoute("bench", schemas.SelectUnseen, schemas.AfterMarkRead)
			conn := imapConn(srv.addr, schemas.EncryptionNone)
			conn.LogLevel = level
			b.SetBytes(int64(len(raw)))
			b.ResetTimer()
			runIMAPWorker(b, rt, engine.RouteSpec{Route: route, Connection: conn})
			waitRouteIdle(b, rt, route.Name, uint32(b.N))
			b.StopTimer()
		})
	}
}

// TestIMAPBenchDovecot is the measurement of the note (MAILBUS_BENCH_DOVECOT=1 with
// MAILBUS_TEST_DOVECOT=1): a gen_maildir.py corpus (MAILBUS_BENCH_COUNT messages, 5000 by
// default, profile MAILBUS_BENCH_PROFILE or mixed) ingested over IMAPS by a worker in its
// own process: messages per second and the worker's peak RSS; then the delay from APPEND
// to event with IDLE over 100 appends.
func TestIMAPBenchDovecot(t *testing.T) {
	if os.Getenv("MAILBUS_BENCH_DOVECOT") != "1" {
		t.Skip("set MAILBUS_BENCH_DOVECOT=1 (and MAILBUS_TEST_DOVECOT=1) to measure")
	}
	count := 5000
	if v := os.Getenv("MAILBUS_BENCH_COUNT"); v != "" {
		count, _ = strconv.Atoi(v)
	}
	profile := "mixed"
	if v := os.Getenv("MAILBUS_BENCH_PROFILE"); v != "" {
		profile = v
	}
	srv := dovecottest.Start(t, nil)
	maildir := srv.Maildir("alice")
	benchCorpus(t, maildir, count, profile)
	srv.Chown(t, "alice")
	var corpus int64
	files, _ := filepath.Glob(filepath.Join(maildir, "new", "*"))
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			corpus += fi.Size()
		}
	}
	t.Logf("corpus: %d messages, %.1f MB (%s)", len(files), float64(corpus)/1e6, profile)

	// The yardstick: a bare UID FETCH 1:* BODY.PEEK[] that throws the bytes away (it also
	// warms the page cache for the worker).
	// Over IMAPS, Dovecot's imap-login proxies every byte through its TLS: on a 2-core
	// machine that alone makes a bare FETCH of the mixed corpus 4x slower than plain IMAP.
	// MAILBUS_BENCH_ENCRYPTION=none measures both over plain IMAP.
	encryption, addr := schemas.EncryptionSSL, srv.TLSAddr
	dial := func() (*imapclient.Client, error) {
		return imapclient.DialTLS(srv.TLSAddr, &imapclient.Options{TLSConfig: &tls.Config{RootCAs: srv.CA}})
	}
	if os.Getenv("MAILBUS_BENCH_ENCRYPTION") == schemas.EncryptionNone {
		encryption, addr = schemas.EncryptionNone, srv.Addr
		dial = func() (*imapclient.Client, error) { return imapclient.DialInsecure(srv.Addr, nil) }
	}
	bare := func() time.Duration {
		c, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Login("alice", "secret").Wait(); err != nil {
			t.Fatalf("Login().Wait() = %v", err)
		}
		start := time.Now()
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatalf("Select().Wait() = %v", err)
		}
		fetch := c.Fetch(imap.UIDSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{
			BodySection: []*imap.FetchItemBodySection{{Peek: true}},
		})
		for m := fetch.Next(); m != nil; m = fetch.Next() {
			for item := m.Next(); item != nil; item = m.Next() {
				if b, ok := item.(imapclient.FetchItemDataBodySection); ok && b.Literal != nil {
					io.Copy(io.Discard, b.Literal)
				}
			}
		}
		if err := fetch.Close(); err != nil {
			t.Fatalf("Fetch().Close() = %v", err)
		}
		return time.Since(start)
	}
	bare() // the first one makes Dovecot index the Maildir
	t.Logf("bare UID FETCH 1:* BODY.PEEK[] (encryption %s): %s", encryption, bare().Round(time.Millisecond))

	n := startBusNATS(t)
	if os.Getenv("MAILBUS_BENCH_FLOOR") == "1" {
		// Dovecot moved the files to cur/ by now.
		files, _ := filepath.Glob(filepath.Join(maildir, "*", "*"))
		jetStreamFloor(t, n, files)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, srv.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	route := "benchdovecot"
	cmd := exec.Command(os.Args[0], "-test.run=^TestIMAPChildWorker$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=worker", "MAILBUS_TEST_NATS_URL=nats://"+n.addr,
		"MAILBUS_TEST_IMAP_ADDR="+addr, "MAILBUS_TEST_ROUTE="+route,
		"MAILBUS_TEST_IMAP_ENCRYPTION="+encryption, "MAILBUS_TEST_IMAP_CA="+caFile)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	subject := busNames.BusSubject(1, route)
	start, selfCPU := time.Now(), procCPU(os.Getpid())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill() }()
	// Done: every event stored and every message marked read (the worker's last step).
	status, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer status.Close()
	if err := status.Login("alice", "secret").Wait(); err != nil {
		t.Fatalf("Login().Wait() = %v", err)
	}
	waitUntil(t, 60*time.Minute, fmt.Sprintf("%d events, all read", count), func() bool {
		time.Sleep(50 * time.Millisecond)
		if storedCount(t, n.js, busNames.BusStream(1), subject) < uint64(count) {
			return false
		}
		d, err := status.Status("INBOX", &imap.StatusOptions{NumUnseen: true}).Wait()
		return err == nil && d.NumUnseen != nil && *d.NumUnseen == 0
	})
	elapsed := time.Since(start)
	t.Logf("ingest: %d messages in %s: %.0f messages/s, %.1f MB/s; worker peak RSS (VmHWM) %s, CPU %s (NATS server: %s)",
		count, elapsed.Round(time.Millisecond), float64(count)/elapsed.Seconds(),
		float64(corpus)/1e6/elapsed.Seconds(), procStatus(cmd.Process.Pid, "VmHWM"), procCPU(cmd.Process.Pid),
		procCPU(os.Getpid())-selfCPU)
	if os.Getenv("MAILBUS_BENCH_IDLE") == "0" {
		stopChild(t, cmd)
		return
	}

	// APPEND to event, with the worker in IDLE.
	sub, err := n.nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	c, err := imapclient.DialTLS(srv.TLSAddr, &imapclient.Options{TLSConfig: &tls.Config{RootCAs: srv.CA}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", "secret").Wait(); err != nil {
		t.Fatalf("Login().Wait() = %v", err)
	}
	time.Sleep(2 * time.Second) // the worker marks the last batch read and goes idle
	var delays []time.Duration
	for i := range 100 {
		raw := testMail(count+1+i, "")
		t0 := time.Now()
		a := c.Append("INBOX", int64(len(raw)), nil)
		a.Write(raw)
		a.Close()
		if _, err := a.Wait(); err != nil {
			t.Fatalf("Append().Wait() = %v", err)
		}
		if _, err := sub.NextMsg(30 * time.Second); err != nil {
			t.Fatalf("event of append %d: %v", i, err)
		}
		delays = append(delays, time.Since(t0))
		time.Sleep(20 * time.Millisecond)
	}
	slices.Sort(delays)
	t.Logf("APPEND to event with IDLE (100 appends): median %s, p99 %s, max %s",
		delays[49].Round(100*time.Microsecond), delays[98].Round(100*time.Microsecond), delays[99].Round(100*time.Microsecond))
	t.Logf("worker peak RSS at the end (VmHWM) %s", procStatus(cmd.Process.Pid, "VmHWM"))
	stopChild(t, cmd)
}

// jetStreamFloor publishes the corpus's bytes as they are, in 128 KB messages (the object
// store's chunks), to a stream with file storage on the benchmark's NATS server, and logs
// what that takes: the part of an ingest no worker design can save.
func jetStreamFloor(t *testing.T, n *busNATS, files []string) {
	ctx := context.Background()
	if _, err := n.js.CreateStream(ctx, jetstream.StreamConfig{Name: "FLOOR", Subjects: []string{"floor"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	defer n.js.DeleteStream(ctx, "FLOOR")
	js, _ := jetstream.New(n.nc, jetstream.WithPublishAsyncMaxPending(256))
	start, cpu := time.Now(), procCPU(os.Getpid())
	var total int64
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for len(b) > 0 {
			k := min(len(b), 128<<10)
			if _, err := js.PublishAsync("floor", b[:k]); err != nil {
				t.Fatal(err)
			}
			total += int64(k)
			b = b[k:]
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		t.Fatal("floor: publishes not acknowledged")
	}
	t.Logf("floor: %.1f MB published raw to JetStream (file storage) in %s, CPU %s (client and server)",
		float64(total)/1e6, time.Since(start).Round(time.Millisecond), procCPU(os.Getpid())-cpu)
}

// benchCorpus fills maildir/new with a gen_maildir.py corpus. With MAILBUS_BENCH_CORPUS
// set, the corpus is generated there once (it takes minutes) and hard-linked from then on.
func benchCorpus(t *testing.T, maildir string, count int, profile string) {
	gen := func(dir string) {
		cmd := exec.Command("python3", "/work/shared/bench/gen_maildir.py", dir, strconv.Itoa(count), "--profile", profile)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("gen_maildir.py: %v", err)
		}
	}
	cache := os.Getenv("MAILBUS_BENCH_CORPUS")
	if cache == "" {
		gen(maildir)
		return
	}
	cache = filepath.Join(cache, fmt.Sprintf("%s%d", profile, count))
	if _, err := os.Stat(cache); err != nil {
		gen(cache)
	}
	files, _ := filepath.Glob(filepath.Join(cache, "new", "*"))
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := os.MkdirAll(filepath.Join(maildir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		if err := os.Link(f, filepath.Join(maildir, "new", filepath.Base(f))); err != nil {
			t.Fatal(err)
		}
	}
}

// stopChild ends the worker process with SIGTERM (so that it can write its profiles,
// MAILBUS_BENCH_PPROF) and waits for it.
func stopChild(t *testing.T, cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("worker did not stop on SIGTERM")
	}
}

// procCPU is the user+system CPU time of a process, from /proc/<pid>/stat.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name (which may hold spaces) start after its ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// procStatus reads one field of /proc/<pid>/status.
func procStatus(pid int, field string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}
