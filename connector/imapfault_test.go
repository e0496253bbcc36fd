package connector_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/engine"
	imapsrc "github.com/mailbus/mailbus/connector/imap"
	"github.com/mailbus/mailbus/schemas"
)

// The fault tests end with exact counts: events in the stream = distinct messages, every
// message marked read, none missing. Each also appends new mail while the faults happen.

const childEnv = "MAILBUS_TEST_CHILD"

// bigMail is a test message of about 4 KB, so that a batch's FETCH takes a while.
func bigMail(n int) []byte {
	return append(testMail(n, "X-Pad: "+strings.Repeat("p", 64)+"\r\n"), strings.Repeat("line of body text for padding\r\n", 130)...)
}

// trickle appends count messages numbered from first, one every gap, while the test runs.
func trickle(t *testing.T, srv *memIMAP, first, count int, gap time.Duration) (wait func()) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range count {
			time.Sleep(gap)
			srv.append(t, "INBOX", bigMail(first+i))
		}
	}()
	return wg.Wait
}

// verifyExact waits until the route has published all total messages and marked them
// read, then checks that each has exactly one event.
func verifyExact(t *testing.T, n *busNATS, srv *memIMAP, route string, total int, timeout time.Duration) {
	t.Helper()
	subject := busNames.BusSubject(1, route)
	var inbox []mailboxMsg
	waitUntil(t, timeout, fmt.Sprintf("%d events and all \\Seen", total), func() bool {
		if storedCount(t, n.js, busNames.BusStream(1), subject) < uint64(total) {
			return false
		}
		inbox = listMailbox(t, dialPlain(srv.addr), "INBOX")
		for _, m := range inbox {
			if !hasIMAPFlag(m.flags, imap.FlagSeen) {
				return false
			}
		}
		return len(inbox) == total
	})
	time.Sleep(200 * time.Millisecond) // anything still in flight would show now
	msgs := storedMsgs(t, n.js, busNames.BusStream(1), subject)
	if len(msgs) != total {
		t.Errorf("%d events in the stream, want %d", len(msgs), total)
	}
	byMsgID := map[string]int{}
	ids := map[string]bool{}
	for _, m := range msgs {
		var ev schemas.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		byMsgID[ev.MessageId]++
		// A message cut short (a connection dropped mid-literal) must never be published.
		if !strings.HasSuffix(strings.TrimSpace(ev.TextBody), "padding") {
			t.Errorf("event %s: body does not end as the message does: %q", ev.Id, tail(ev.TextBody))
		}
		ids[m.Header.Get("Nats-Msg-Id")] = true
	}
	if len(ids) != total {
		t.Errorf("%d distinct Msg-Ids, want %d", len(ids), total)
	}
	for _, m := range inbox {
		id := strings.Trim(m.msgID, "<>")
		if c := byMsgID[id] + byMsgID["<"+id+">"]; c != 1 {
			t.Errorf("message %s (UID %d) has %d events", m.msgID, m.uid, c)
		}
	}
}

// TestIMAPChildWorker is the worker process of TestIMAPFaultSIGKILL; it runs only there.
func TestIMAPChildWorker(t *testing.T) {
	if os.Getenv(childEnv) != "worker" {
		t.Skip("runs as the child of TestIMAPFaultSIGKILL")
	}
	nc, err := nats.Connect(os.Getenv("MAILBUS_TEST_NATS_URL"), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	st, err := bus.EnsureStorage(context.Background(), js, busNames, 1, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	pubs, _ := bus.NewPublishers(nc, 0)
	rt := &engine.Runtime{
		Names: busNames, NC: nc, JS: js, Storage: st, Logger: imapTestLogger(t), Instance: "child",
		MaxInlineBytes: 262144, Status: engine.NewStatusBoard(), Publishers: pubs,
	}
	route := imapRoute(os.Getenv("MAILBUS_TEST_ROUTE"), schemas.SelectUnseen, schemas.AfterMarkRead)
	conn := imapConn(os.Getenv("MAILBUS_TEST_IMAP_ADDR"), schemas.EncryptionNone)
	conn.PollInterval = schemas.Duration(time.Second)
	if enc := os.Getenv("MAILBUS_TEST_IMAP_ENCRYPTION"); enc != "" { // the Dovecot benchmark
		conn.Encryption = enc
		conn.PollInterval = schemas.Duration(time.Minute)
		pem, err := os.ReadFile(os.Getenv("MAILBUS_TEST_IMAP_CA"))
		if err != nil {
			t.Fatal(err)
		}
		rt.TLSRootCAs = x509.NewCertPool()
		rt.TLSRootCAs.AppendCertsFromPEM(pem)
	}
	w, err := imapsrc.NewWorker(rt, engine.RouteSpec{Route: route, Connection: conn})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if dir := os.Getenv("MAILBUS_BENCH_PPROF"); dir != "" { // the Dovecot benchmark
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGTERM)
		defer stop()
		f, err := os.Create(filepath.Join(dir, "cpu.pprof"))
		if err != nil {
			t.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
			if h, err := os.Create(filepath.Join(dir, "allocs.pprof")); err == nil {
				pprof.Lookup("allocs").WriteTo(h, 0)
				h.Close()
			}
		}()
	}
	w.Run(ctx) // until killed
}

// TestIMAPFaultSIGKILL kills the worker process with SIGKILL at random points while it
// works through a few hundred messages, several times, then lets one finish.
func TestIMAPFaultSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	const initial, more = 1200, 60
	n := startBusNATS(t)
	srv := startMemIMAPMail(t, initial, bigMail)
	route := "killed"
	child := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestIMAPChildWorker$", "-test.count=1")
		cmd.Env = append(os.Environ(), childEnv+"=worker",
			"MAILBUS_TEST_NATS_URL=nats://"+n.addr, "MAILBUS_TEST_IMAP_ADDR="+srv.addr, "MAILBUS_TEST_ROUTE="+route)
		cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start child: %v", err)
		}
		return cmd
	}
	done := trickle(t, srv, initial+1, more, 30*time.Millisecond)
	subject := busNames.BusSubject(1, route)
	for kill := 1; kill <= 6; kill++ {
		cmd := child()
		// Wait for the child to get going, then kill it at a random point.
		before := storedCount(t, n.js, busNames.BusStream(1), subject)
		waitUntil(t, 30*time.Second, "child publishing", func() bool {
			return storedCount(t, n.js, busNames.BusStream(1), subject) > before
		})
		time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
		if err := cmd.Process.Kill(); err != nil { // SIGKILL
			t.Fatal(err)
		}
		cmd.Wait()
		t.Logf("kill %d: %d events stored", kill, storedCount(t, n.js, busNames.BusStream(1), subject))
	}
	done()
	cmd := child()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	verifyExact(t, n, srv, route, initial+more, 120*time.Second)
}

// TestIMAPFaultNATSRestart stops the NATS server mid-ingest and starts it again on the same
// port and store, three times; publishing goes on within seconds of each restart.
func TestIMAPFaultNATSRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	const initial, more = 400, 60
	n := startBusNATS(t)
	srv := startMemIMAPMail(t, initial, bigMail)
	rt := newIMAPRuntime(t, n)
	route := imapRoute("natsrestart", schemas.SelectUnseen, schemas.AfterMarkRead)
	conn := imapConn(srv.addr, schemas.EncryptionNone)
	conn.PollInterval = schemas.Duration(time.Second)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: conn})
	done := trickle(t, srv, initial+1, more, 30*time.Millisecond)
	restartWhilePublishing(t, n, route.Name, 20, 500*time.Millisecond)
	done()
	verifyExact(t, n, srv, route.Name, initial+more, 120*time.Second)
}

// restartWhilePublishing restarts NATS three times (down for down each time), each once
// the route has stored more than progress events since the last. Publishing goes on within
// seconds of each restart: a reconnect fails every publish in flight, and republishing
// them one by one, each after its own pause, once took minutes (and passed a 60 s bound by
// luck). A correctness bound.
func restartWhilePublishing(t *testing.T, n *busNATS, route string, progress uint64, down time.Duration) {
	t.Helper()
	subject := busNames.BusSubject(1, route)
	for i := range 3 {
		before := storedCount(t, n.js, busNames.BusStream(1), subject)
		waitUntil(t, 15*time.Second, "publishing", func() bool {
			return storedCount(t, n.js, busNames.BusStream(1), subject) > before+progress
		})
		n.restart(t, down)
		t.Logf("restart %d after %d events", i+1, before)
	}
}

// cutProxy forwards TCP connections to target and cuts each of the first cuts connections
// after a random number of bytes from the server, in the middle of whatever it says.
type cutProxy struct {
	ln     net.Listener
	target string
	cuts   atomic.Int32
	cut    atomic.Int32 // connections cut so far
}

func startCutProxy(t *testing.T, target string, cuts int32) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	p.cuts.Store(cuts)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *cutProxy) serve(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	limit := int64(-1)
	if p.cuts.Add(-1) >= 0 {
		limit = 20<<10 + rand.Int64N(400<<10)
	}
	go func() { io.Copy(server, client); server.Close() }()
	if limit < 0 {
		io.Copy(client, server)
	} else {
		io.CopyN(client, server, limit)
		p.cut.Add(1)
	}
	client.Close()
	server.Close()
}

// TestIMAPFaultCutConnection cuts the IMAP connection in the middle of FETCH responses.
func TestIMAPFaultCutConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	const initial, more = 400, 60
	n := startBusNATS(t)
	srv := startMemIMAPMail(t, initial, bigMail)
	proxy := startCutProxy(t, srv.addr, 6)
	rt := newIMAPRuntime(t, n)
	route := imapRoute("cut", schemas.SelectUnseen, schemas.AfterMarkRead)
	conn := imapConn(proxy.ln.Addr().String(), schemas.EncryptionNone)
	conn.PollInterval = schemas.Duration(time.Second)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: conn})
	done := trickle(t, srv, initial+1, more, 30*time.Millisecond)
	done()
	verifyExact(t, n, srv, route.Name, initial+more, 120*time.Second)
	if c := proxy.cut.Load(); c < 3 {
		t.Errorf("only %d connections were cut", c)
	}
	t.Logf("%d connections cut", proxy.cut.Load())
}

func tail(s string) string {
	if len(s) > 60 {
		return "..." + s[len(s)-60:]
	}
	return s
}
