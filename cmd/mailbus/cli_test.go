package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/bus"
)

var update = flag.Bool("update", false, "rewrite the golden files of the CLI tests")

// cliFile is the definitions file of the CLI tests; IMAPPORT is the IMAP server's port.
const cliFile = `# The support mailbox, and its archive (not watched yet).
connections:
  - name: support_imap
    type: imap
    host: 127.0.0.1
    port: IMAPPORT
    encryption: none
    username: demo
    password: ${SUPPORT_PASSWORD}
    pollInterval: 1s
    logLevel: full
routes:
  - name: support_inbox
    connection: support_imap
    after: none
    headers: [X-Ticket-Id]
  - name: support_archive
    connection: support_imap
    mailbox: Archive
    disabled: true
`

// cliEnv runs a mailbus replica on an embedded NATS server of the test and an in-memory
// IMAP server, and points the CLI's environment at it. It returns the IMAP port and a KV
// client of the definitions.
func cliEnv(t *testing.T) (port string, kv jetstream.KeyValue) {
	t.Helper()
	srv, err := bus.StartEmbedded("127.0.0.1:-1", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return cliEnvOn(t, srv)
}

// cliEnvOn is cliEnv on the NATS server srv, which it shuts down at the end.
func cliEnvOn(t *testing.T, srv *server.Server) (port string, kv jetstream.KeyValue) {
	t.Helper()
	t.Cleanup(srv.Shutdown)
	clearEnv(t)
	user, imapAddr, stopIMAP, err := startDemoIMAP()
	if err != nil {
		t.Fatal(err)
	}
	if err := user.Create("Archive", nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stopIMAP)
	_, port, _ = net.SplitHostPort(imapAddr)

	c, err := connector.New(connector.Config{
		NATSURL: srv.ClientURL(), SubjectPrefix: "mail", StreamReplicas: 1, DedupWindow: time.Minute,
		MaxInlineBytes: 1 << 18, Instance: "replica-1",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MAILBUS_NATS_URL", srv.ClientURL())
	t.Setenv("SUPPORT_PASSWORD", "demo")

	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if kv, err = js.KeyValue(ctx, "mail_config"); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	return port, kv
}

// cli runs the program with args and returns what it printed and its error.
func cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), args, &out)
	return out.String(), err
}

// exitCode is the status main exits with for err.
func exitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.As(err, new(usageError)):
		return 2
	}
	return 1
}

var (
	timeRE = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)
	msRE   = regexp.MustCompile(`\b\d+ms\b`)
	// Routes are written side by side: which gets which revision varies.
	revRE = regexp.MustCompile(`"revision": \d+`)
)

// golden compares out, with times, durations and the IMAP port made stable, with
// testdata/name.golden (written with -update).
func golden(t *testing.T, name, port, out string) {
	t.Helper()
	out = timeRE.ReplaceAllString(out, "TIME")
	out = msRE.ReplaceAllString(out, "Nms")
	out = revRE.ReplaceAllString(out, `"revision": N`)
	out = strings.ReplaceAll(out, port, "IMAPP") // as wide as an ephemeral port, for the tables
	path := filepath.Join(testdataDir, name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if out != string(want) {
		t.Errorf("%s: output differs from %s\n--- got\n%s--- want\n%s", name, path, out, want)
	}
}

// testdataDir is cmd/mailbus/testdata, found before the tests change directory.
var testdataDir = func() string {
	wd, _ := os.Getwd()
	return filepath.Join(wd, "testdata")
}()

// revisions lists every definition's key and revision, and the bucket's last sequence.
func revisions(t *testing.T, kv jetstream.KeyValue) string {
	t.Helper()
	ctx := context.Background()
	keys, err := kv.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		t.Fatal(err)
	}
	var b []string
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, fmt.Sprintf("%s@%d", k, e.Revision()))
	}
	st, _ := kv.Status(ctx)
	return strings.Join(b, " ") + fmt.Sprintf(" last=%d", st.(*jetstream.KeyValueBucketStatus).StreamInfo().State.LastSeq)
}

func writeFile(t *testing.T, name, text, port string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(strings.ReplaceAll(text, "IMAPPORT", port)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCLIApply: apply creates, applying again changes nothing (not a revision), a dry run
// with --prune says what would change and changes nothing, --prune deletes, and a bad
// file is refused naming the file, the definition and the field.
func TestCLIApply(t *testing.T) {
	port, kv := cliEnv(t)
	writeFile(t, "support.yaml", cliFile, port)

	out, err := cli(t, "apply", "-f", "support.yaml")
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	golden(t, "apply_create", port, out)
	before := revisions(t, kv)

	out, err = cli(t, "apply", "-f", "support.yaml")
	if err != nil {
		t.Fatalf("apply again: %v", err)
	}
	golden(t, "apply_again", port, out)
	if after := revisions(t, kv); after != before {
		t.Errorf("apply again moved revisions: %s -> %s", before, after)
	}

	// The archive route left out, the inbox's action changed: a dry run first.
	changed := strings.Replace(cliFile, "    after: none\n", "    after: markRead\n", 1)
	changed = changed[:strings.Index(changed, "  - name: support_archive")]
	writeFile(t, "changed.yaml", changed, port)
	out, err = cli(t, "apply", "-f", "changed.yaml", "--dry-run", "--prune")
	if err != nil {
		t.Fatalf("apply --dry-run --prune: %v", err)
	}
	golden(t, "apply_dry_run_prune", port, out)
	if after := revisions(t, kv); after != before {
		t.Errorf("dry run moved revisions: %s -> %s", before, after)
	}
	out, err = cli(t, "apply", "--prune", "-f", "changed.yaml", "-o", "json")
	if err != nil {
		t.Fatalf("apply --prune: %v", err)
	}
	golden(t, "apply_prune_json", port, out)
	if after := revisions(t, kv); strings.Contains(after, "support_archive") || after == before {
		t.Errorf("after --prune: %s", after)
	}

	before = revisions(t, kv)
	bad := strings.Replace(cliFile, "    mailbox: Archive\n", "    mailbox: Archive\n    bus: 9\n", 1)
	writeFile(t, "bad.yaml", bad, port)
	out, err = cli(t, "apply", "-f", "bad.yaml")
	if exitCode(err) != 1 || out != "" {
		t.Fatalf("apply of a bad file: exit %d, output %q", exitCode(err), out)
	}
	golden(t, "apply_bad", port, "mailbus: "+err.Error()+"\n")
	// A route naming a connection that is nowhere: refused before the connection is written.
	writeFile(t, "dangling.yaml", strings.Replace(strings.Replace(cliFile, "name: support_imap", "name: other_imap", 1),
		"connection: support_imap\n    mailbox: Archive", "connection: nowhere_imap\n    mailbox: Archive", 1), port)
	if _, err := cli(t, "apply", "-f", "dangling.yaml"); exitCode(err) != 1 || !strings.Contains(err.Error(), "route support_archive (routes[1]): field connection: no connection named nowhere_imap") {
		t.Errorf("apply with a dangling route: %v", err)
	}
	if after := revisions(t, kv); after != before {
		t.Errorf("refused applies moved revisions: %s -> %s", before, after)
	}
}

// TestCLIReadCommands: get, status, test, log and delete, as people and as programs read
// them.
func TestCLIReadCommands(t *testing.T) {
	port, _ := cliEnv(t)
	writeFile(t, "support.yaml", cliFile, port)
	if out, err := cli(t, "apply", "-f", "support.yaml"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"get_connections", []string{"get", "connections"}},
		{"get_routes", []string{"get", "routes"}},
		{"get_route_json", []string{"get", "route", "support_inbox", "-o", "json"}},
		{"get_connections_yaml", []string{"get", "connections", "-o", "yaml"}},
		{"test_connection", []string{"test", "support_imap"}},
	} {
		out, err := cli(t, tc.args...)
		if err != nil {
			t.Errorf("%v: %v\n%s", tc.args, err, out)
			continue
		}
		golden(t, tc.golden, port, out)
	}

	// status, once the inbox route is idle.
	deadline := time.Now().Add(15 * time.Second)
	var out string
	for {
		var err error
		out, err = cli(t, "status", "support_inbox", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, `"state": "idle"`) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, err := cli(t, "status")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "status", port, out)

	if out, err = cli(t, "log", "support_imap", "--since", "1h", "-o", "support.log"); err != nil {
		t.Fatal(err)
	}
	logText, _ := os.ReadFile("support.log")
	if !strings.Contains(out, "written to support.log") || !strings.Contains(string(logText), "support_inbox") {
		t.Errorf("log: %q, file:\n%s", out, logText)
	}
	if strings.Contains(string(logText), "demo\n") {
		t.Errorf("log holds the password")
	}

	out, err = cli(t, "delete", "connection", "support_imap")
	if exitCode(err) != 1 || !strings.Contains(err.Error(), "used by route support_archive, support_inbox") {
		t.Errorf("delete of a used connection: %v", err)
	}
	out, err = cli(t, "delete", "route", "support_archive")
	if err != nil || out != "route/support_archive deleted\n" {
		t.Errorf("delete route: %q %v", out, err)
	}
	if _, err = cli(t, "get", "route", "support_archive"); exitCode(err) != 1 || !strings.Contains(err.Error(), "no route named support_archive") {
		t.Errorf("get of a deleted route: %v", err)
	}
}

// TestCLIUsage: a wrong call is exit status 2, before anything is dialled.
func TestCLIUsage(t *testing.T) {
	clearEnv(t)
	t.Setenv("MAILBUS_NATS_URL", "nats://127.0.0.1:1") // nothing there: a usage error comes first
	for _, args := range [][]string{
		{"apply"}, {"apply", "-f"}, {"apply", "-f", "x.yaml", "extra"}, {"apply", "-f", "x.yaml", "-o", "xml"},
		{"get"}, {"get", "widgets"}, {"get", "routes", "a", "b"}, {"get", "routes", "-o", "csv"},
		{"status", "a", "b"}, {"test"}, {"log"}, {"log", "c", "--since", "yesterday"},
		{"delete", "route"}, {"delete", "widget", "x"}, {"statuss"},
	} {
		if _, err := cli(t, args...); exitCode(err) != 2 {
			t.Errorf("mailbus %s: exit %d (%v), want 2", strings.Join(args, " "), exitCode(err), err)
		}
	}
	// Well formed, but nobody answers: exit 1.
	if _, err := cli(t, "get", "routes"); exitCode(err) != 1 {
		t.Errorf("get routes without a server: exit %d (%v), want 1", exitCode(err), err)
	}
}

// TestCLIListThousands: get and status list 10,000 connections and routes, far more than
// one NATS message (1 MB) holds, page by page; a list request without a limit that does
// not fit is refused, naming limit, rather than left unanswered.
func TestCLIListThousands(t *testing.T) {
	const n = 10000
	// A nats-server as an operator runs it: the default max payload, 1 MB (the embedded
	// server allows 8 MB).
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	port, _ := cliEnvOn(t, srv)
	var b strings.Builder
	b.WriteString("connections:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {name: conn_%05d, type: imap, host: 127.0.0.1, port: %s, encryption: none, username: user%d, password: secret, description: a connection with a description long enough to make the list large}\n", i, port, i)
	}
	b.WriteString("routes:\n")
	for i := range n {
		// Disabled: the list is under test, not 10,000 IMAP sessions.
		fmt.Fprintf(&b, "  - {name: route_%05d, connection: conn_%05d, disabled: true, headers: [X-Ticket-Id], description: a route with a description long enough to make the list large}\n", i, i)
	}
	writeFile(t, "many.yaml", b.String(), port)
	if out, err := cli(t, "apply", "-f", "many.yaml"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}

	for _, tc := range []struct {
		what, prefix string
		args         []string
	}{
		{"get connections", "conn", []string{"get", "connections", "-o", "json"}},
		{"get routes", "route", []string{"get", "routes", "-o", "json"}},
		{"status", "route", []string{"status", "-o", "json"}},
	} {
		start := time.Now()
		out, err := cli(t, tc.args...)
		if err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		t.Logf("%s: %d bytes in %s", tc.what, len(out), time.Since(start).Round(time.Millisecond))
		var got []struct{ Name, Route, State string }
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		if len(got) != n {
			t.Fatalf("%s: %d entries, want %d", tc.what, len(got), n)
		}
		for i, g := range got {
			if name, want := g.Name+g.Route, fmt.Sprintf("%s_%05d", tc.prefix, i); name != want {
				t.Fatalf("%s: entry %d is %q, want %q", tc.what, i, name, want)
			}
			if g.Route != "" && g.State != "disabled" {
				t.Fatalf("%s: %s is %q, want disabled", tc.what, g.Route, g.State)
			}
		}
	}
	out, err := cli(t, "get", "routes")
	if err != nil || strings.Count(out, "\n") != n+1 || !strings.Contains(out, "route_09999") {
		t.Errorf("get routes (table): %d lines, %v", strings.Count(out, "\n"), err)
	}

	// Asked for in one piece, the list is refused with a reason, not dropped.
	nc, err := nats.Connect(os.Getenv("MAILBUS_NATS_URL"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msg, err := nc.Request("mail.control.route.list", []byte(`{}`), 15*time.Second)
	if err != nil {
		t.Fatalf("route.list {}: %v", err)
	}
	if !strings.Contains(string(msg.Data), `"code":"invalid"`) || !strings.Contains(string(msg.Data), `"field":"limit"`) ||
		msg.Header.Get("Nats-Service-Error-Code") != "400" {
		t.Errorf("route.list {} = %.300s (%d bytes) %v, want invalid, field limit", msg.Data, len(msg.Data), msg.Header)
	}
}
