package connector_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/engine"
	imapsrc "github.com/mailbus/mailbus/connector/imap"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/schemas"
)

var busNames = bus.Names{Prefix: "mail"}

// busNATS is an embedded NATS server with mailbus's storage, and a client connection.
type busNATS struct {
	srv  *server.Server
	dir  string
	addr string // host:port, kept across restarts
	nc   *nats.Conn
	js   jetstream.JetStream
	st   *bus.Storage
}

func startBusNATS(t testing.TB) *busNATS {
	t.Helper()
	return startBusNATSWindow(t, 10*time.Minute)
}

// startBusNATSWindow is startBusNATS with the bus streams' duplicate window set to window.
func startBusNATSWindow(t testing.TB, window time.Duration) *busNATS {
	t.Helper()
	n := &busNATS{dir: t.TempDir()}
	srv, err := bus.StartEmbedded("127.0.0.1:-1", n.dir)
	if err != nil {
		t.Fatalf("StartEmbedded() = %v", err)
	}
	n.srv = srv
	n.addr = srv.Addr().String()
	n.nc, err = nats.Connect("nats://"+n.addr, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("nats.Connect() = %v", err)
	}
	n.js, _ = jetstream.New(n.nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n.st, err = bus.EnsureStorage(ctx, n.js, busNames, 1, window)
	if err != nil {
		t.Fatalf("EnsureStorage() = %v", err)
	}
	t.Cleanup(func() {
		n.nc.Close()
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	})
	return n
}

// restart stops the NATS server and starts it again on the same port and store.
func (n *busNATS) restart(t testing.TB, down time.Duration) {
	t.Helper()
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	time.Sleep(down)
	srv, err := bus.StartEmbedded(n.addr, n.dir)
	if err != nil {
		t.Fatalf("StartEmbedded() again = %v", err)
	}
	n.srv = srv
}

func newIMAPRuntime(t testing.TB, n *busNATS) *engine.Runtime {
	t.Helper()
	pubs, err := bus.NewPublishers(n.nc, 0)
	if err != nil {
		t.Fatalf("NewPublishers() = %v", err)
	}
	return &engine.Runtime{
		Names: busNames, NC: n.nc, JS: n.js, Storage: n.st,
		Logger: imapTestLogger(t), Instance: "test-replica", MaxInlineBytes: 262144,
		Status: engine.NewStatusBoard(), Publishers: pubs,
	}
}

func imapTestLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("MAILBUS_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// memIMAP is go-imap's in-memory server (testkit.StartIMAP) with one user, alice/secret,
// and an INBOX.
type memIMAP struct {
	*testkit.IMAP
	addr string
	user *imapmemserver.User
}

// startMemIMAP serves the in-memory server with IMAP4rev1 and caps.
func startMemIMAP(t testing.TB, caps ...imap.Cap) *memIMAP {
	t.Helper()
	return newMemIMAP(testkit.StartIMAP(t, &testkit.IMAPOptions{Caps: capSet(caps...)}))
}

func newMemIMAP(s *testkit.IMAP) *memIMAP {
	return &memIMAP{IMAP: s, addr: s.Addr, user: s.User("alice")}
}

// startMemIMAPMail is startMemIMAP with memCaps and mail(1) to mail(n) in the INBOX.
func startMemIMAPMail(t testing.TB, n int, mail func(int) []byte) *memIMAP {
	t.Helper()
	srv := startMemIMAP(t, memCaps...)
	for i := 1; i <= n; i++ {
		srv.append(t, "INBOX", mail(i))
	}
	return srv
}

// capSet is IMAP4rev1 and caps.
func capSet(caps ...imap.Cap) imap.CapSet {
	set := imap.CapSet{imap.CapIMAP4rev1: {}}
	for _, c := range caps {
		set[c] = struct{}{}
	}
	return set
}

// memCaps is what a modern server offers beyond IMAP4rev1 (IDLE comes with the session).
var memCaps = []imap.Cap{imap.CapUIDPlus, imap.CapMove}

func (m *memIMAP) append(t testing.TB, mailbox string, raw []byte, flags ...imap.Flag) imap.UID {
	t.Helper()
	return m.Append(t, "alice", mailbox, raw, flags...)
}

// imapConn is a connection definition for a server at addr (alice/secret).
func imapConn(addr string, encryption string) schemas.Connection {
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	return schemas.Connection{
		Name: "c1", Type: schemas.TypeIMAP, Host: host, Port: p, Encryption: encryption,
		Auth: schemas.AuthBasic, Username: "alice", Password: "secret",
		PollInterval: schemas.Duration(time.Hour), LogLevel: schemas.LogErrors,
	}
}

func imapRoute(name, sel, after string) schemas.Route {
	return schemas.Route{Name: name, Connection: "c1", Bus: 1, Mailbox: "INBOX", Select: sel, After: after, MoveTo: "Archive"}
}

// runIMAPWorker starts the route's worker; it is stopped at cleanup or by the returned func.
func runIMAPWorker(t testing.TB, rt *engine.Runtime, spec engine.RouteSpec) (stop func()) {
	t.Helper()
	w, err := imapsrc.NewWorker(rt, spec)
	if err != nil {
		t.Fatalf("imapsrc.NewWorker() = %v", err)
	}
	return testkit.RunWorker(t, w)
}

// testMail is a small test mail, with extra header lines.
func testMail(n int, extra string) []byte {
	return []byte(fmt.Sprintf("From: Sender <sender@example.org>\r\nTo: bot@example.com\r\n"+
		"Subject: test %d\r\nMessage-ID: <m%d@example.org>\r\n%s\r\nbody of %d\r\n", n, n, extra, n))
}

// smallMail is testMail n without extra headers.
func smallMail(n int) []byte { return testMail(n, "") }

// streamMsgsBySubject reads a whole stream once, grouped by subject.
func streamMsgsBySubject(t testing.TB, js jetstream.JetStream, stream string) map[string][]*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("Stream(%s) = %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("Info() = %v", err)
	}
	out := map[string][]*jetstream.RawStreamMsg{}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		out[m.Subject] = append(out[m.Subject], m)
	}
	return out
}

// storedMsgs returns every message stored on subject in stream, in stream order.
func storedMsgs(t testing.TB, js jetstream.JetStream, stream, subject string) []*jetstream.RawStreamMsg {
	t.Helper()
	return streamMsgsBySubject(t, js, stream)[subject]
}

func busEvents(t testing.TB, n *busNATS, bus int, route string) []schemas.Event {
	t.Helper()
	var evs []schemas.Event
	for _, m := range storedMsgs(t, n.js, busNames.BusStream(bus), busNames.BusSubject(bus, route)) {
		var ev schemas.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("event JSON: %v", err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// waitUntil polls cond until it holds, and fails the test when timeout passes first.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !testkit.WaitFor(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// storedCount is the number of messages stored on subject.
func storedCount(t testing.TB, js jetstream.JetStream, stream, subject string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0
	}
	return info.State.Subjects[subject]
}

// waitRouteIdle waits until the route finished a cycle with lastUid at least uid.
func waitRouteIdle(t testing.TB, rt *engine.Runtime, route string, uid uint32) schemas.RouteStatus {
	t.Helper()
	var st schemas.RouteStatus
	if !testkit.WaitFor(60*time.Second, func() bool {
		st, _ = rt.Status.Get(route)
		return st.State == schemas.StateIdle && st.LastUid >= uid
	}) {
		t.Fatalf("timed out waiting for route %s idle at lastUid %d: status %+v", route, uid, st)
	}
	return st
}

// mailbox lists a mailbox's messages: UID to flags, and Message-IDs, through a client.
type mailboxMsg struct {
	uid   imap.UID
	flags []imap.Flag
	msgID string
}

// loginAlice dials and logs alice in; the caller closes the client.
func loginAlice(t testing.TB, dial func() (*imapclient.Client, error)) *imapclient.Client {
	t.Helper()
	c, err := dial()
	if err != nil {
		t.Fatalf("dial = %v", err)
	}
	if err := c.Login("alice", "secret").Wait(); err != nil {
		c.Close()
		t.Fatalf("Login().Wait() = %v", err)
	}
	return c
}

func listMailbox(t testing.TB, dial func() (*imapclient.Client, error), mailbox string) []mailboxMsg {
	t.Helper()
	c := loginAlice(t, dial)
	defer c.Close()
	sel, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatalf("Select(%s).Wait() = %v", mailbox, err)
	}
	if sel.NumMessages == 0 {
		return nil
	}
	bufs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{
		UID: true, Flags: true, Envelope: true,
	}).Collect()
	if err != nil {
		t.Fatalf("Fetch().Collect() = %v", err)
	}
	var out []mailboxMsg
	for _, b := range bufs {
		m := mailboxMsg{uid: b.UID, flags: b.Flags}
		if b.Envelope != nil {
			m.msgID = b.Envelope.MessageID
		}
		out = append(out, m)
	}
	return out
}

func hasIMAPFlag(flags []imap.Flag, f imap.Flag) bool {
	for _, x := range flags {
		if strings.EqualFold(string(x), string(f)) {
			return true
		}
	}
	return false
}

func dialPlain(addr string) func() (*imapclient.Client, error) {
	return func() (*imapclient.Client, error) { return imapclient.DialInsecure(addr, nil) }
}

// appendBase64Lines appends content base64-encoded in 76-character lines.
func appendBase64Lines(dst, content []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(content)
	for len(enc) > 76 {
		dst = append(dst, enc[:76]...)
		dst = append(dst, '\r', '\n')
		enc = enc[76:]
	}
	dst = append(dst, enc...)
	return append(dst, '\r', '\n')
}

// serverBody is what the server returns as BODY[] of a message.
func serverBody(t testing.TB, dial func() (*imapclient.Client, error), mailbox string, uid imap.UID) []byte {
	t.Helper()
	c := loginAlice(t, dial)
	defer c.Close()
	if _, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatalf("Select().Wait() = %v", err)
	}
	section := &imap.FetchItemBodySection{Peek: true}
	bufs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil || len(bufs) != 1 {
		t.Fatalf("Fetch().Collect() = %d, %v", len(bufs), err)
	}
	return bufs[0].FindBodySection(section)
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}
