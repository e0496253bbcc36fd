package connector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/connlog"
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/schemas"
)

// The tests in this file and in control_test.go, store_test.go, secrets_test.go and
// supervisor_test.go run the whole Connector, as cmd/mailbus does, with an embedded NATS
// server on a free port and a temporary data directory, and talk to it over NATS.

// svcLog is a log sink the tests can search; slog handlers write from many goroutines.
type svcLog = testkit.LogBuffer

// testService is a running Connector and a client connection to its NATS server.
type testService struct {
	t   *testing.T
	c   *connector.Connector
	cfg connector.Config
	nc  *nats.Conn
	js  jetstream.JetStream
	kv  jetstream.KeyValue
	log *svcLog
	rec *recorder
}

// svcConfig is the configuration of a test replica: an embedded server on a free port.
func svcConfig(t *testing.T) connector.Config {
	return connector.Config{
		EmbeddedListen: "127.0.0.1:-1",
		DataDir:        t.TempDir(),
		SubjectPrefix:  "mail",
		StreamReplicas: 1,
		DedupWindow:    time.Minute,
		MaxInlineBytes: 1 << 18,
		Instance:       "test",
	}
}

// startService runs a Connector with cfg, its workers recorded by rec (a fresh recorder
// when nil), and stops it at the end of the test. log collects its output (a fresh one
// when nil).
func startService(t *testing.T, cfg connector.Config, rec *recorder, log *svcLog) *testService {
	t.Helper()
	if rec == nil {
		rec = newRecorder()
	}
	s := runService(t, cfg, log, connector.WithWorkers(map[string]engine.WorkerFactory{schemas.TypeIMAP: rec.factory}))
	s.rec = rec
	return s
}

// runService runs a Connector with cfg and opts until the end of the test.
func runService(t *testing.T, cfg connector.Config, log *svcLog, opts ...connector.Option) *testService {
	t.Helper()
	if log == nil {
		log = &svcLog{}
	}
	logger := slog.New(slog.NewJSONHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := connector.New(cfg, logger, append([]connector.Option{connector.WithVersion("v1.2.3")}, opts...)...)
	if err != nil {
		t.Fatalf("connector.New() = %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", log)
		}
	})
	testkit.RunService(t, c)
	s := &testService{t: t, c: c, cfg: cfg, log: log}
	url := cfg.NATSURL
	if url == "" {
		url = c.ClientURL()
	}
	s.connect(url)
	return s
}

// connect opens the test's own client connection, closed at the end of the test.
func (s *testService) connect(url string) {
	s.t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		s.t.Fatalf("nats.Connect(%s) = %v", url, err)
	}
	s.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		s.t.Fatalf("jetstream.New() = %v", err)
	}
	kv, err := js.KeyValue(context.Background(), "mail_config")
	if err != nil {
		s.t.Fatalf("KeyValue(mail_config) = %v", err)
	}
	s.nc, s.js, s.kv = nc, js, kv
}

// request sends a control command and returns the decoded reply and the raw message.
func (s *testService) request(subject string, body any) (schemas.Reply, *nats.Msg) {
	s.t.Helper()
	var data []byte
	switch b := body.(type) {
	case string:
		data = []byte(b)
	case []byte:
		data = b
	default:
		var err error
		if data, err = json.Marshal(body); err != nil {
			s.t.Fatalf("json.Marshal() = %v", err)
		}
	}
	msg, err := s.nc.Request(subject, data, 10*time.Second)
	if err != nil {
		s.t.Fatalf("Request(%s) = %v", subject, err)
	}
	var r schemas.Reply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		s.t.Fatalf("reply of %s is not JSON: %v: %s", subject, err, msg.Data)
	}
	return r, msg
}

// ok sends a command that must succeed.
func (s *testService) ok(subject string, body any) schemas.Reply {
	s.t.Helper()
	r, msg := s.request(subject, body)
	if !r.OK || r.Error != nil || msg.Header.Get(micro.ErrorCodeHeader) != "" {
		s.t.Fatalf("%s %v: reply %s (headers %v), want ok", subject, body, msg.Data, msg.Header)
	}
	return r
}

// fail sends a command that must be refused with code and field, in the body and in the
// micro error headers.
func (s *testService) fail(subject string, body any, code, field string) *schemas.Error {
	s.t.Helper()
	r, msg := s.request(subject, body)
	if r.OK || r.Error == nil {
		s.t.Fatalf("%s %v: reply %s, want error %s", subject, body, msg.Data, code)
	}
	if r.Error.Code != code || r.Error.Field != field {
		s.t.Errorf("%s %v: error %+v, want code %q field %q", subject, body, *r.Error, code, field)
	}
	if r.Error.Message == "" {
		s.t.Errorf("%s %v: error without message", subject, body)
	}
	wantHeader := map[string]string{"invalid": "400", "not_found": "404", "conflict": "409", "unavailable": "503", "internal": "500"}[code]
	if got := msg.Header.Get(micro.ErrorCodeHeader); got != wantHeader {
		s.t.Errorf("%s %v: %s = %q, want %q", subject, body, micro.ErrorCodeHeader, got, wantHeader)
	}
	if got := msg.Header.Get(micro.ErrorHeader); got != r.Error.Error() {
		s.t.Errorf("%s %v: %s = %q, want %q", subject, body, micro.ErrorHeader, got, r.Error.Error())
	}
	return r.Error
}

// snapshot is every key of the config bucket with its revision, and the bucket's last
// sequence, so that not even a delete marker can slip in unseen.
func (s *testService) snapshot() string {
	s.t.Helper()
	ctx := context.Background()
	var b strings.Builder
	keys, err := s.kv.ListKeys(ctx)
	if err != nil {
		s.t.Fatalf("ListKeys() = %v", err)
	}
	var all []string
	for k := range keys.Keys() {
		all = append(all, k)
	}
	slices.Sort(all)
	for _, k := range all {
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			s.t.Fatalf("Get(%s) = %v", k, err)
		}
		fmt.Fprintf(&b, "%s@%d ", k, e.Revision())
	}
	st, err := s.kv.Status(ctx)
	if err != nil {
		s.t.Fatalf("Status() = %v", err)
	}
	info := st.(*jetstream.KeyValueBucketStatus).StreamInfo()
	fmt.Fprintf(&b, "last=%d", info.State.LastSeq)
	return b.String()
}

// raw reads a stored definition as it is in KV.
func (s *testService) raw(key string) []byte {
	s.t.Helper()
	e, err := s.kv.Get(context.Background(), key)
	if err != nil {
		s.t.Fatalf("Get(%s) = %v", key, err)
	}
	return e.Value()
}

// status reads a route's status over the control plane.
func (s *testService) status(route string) schemas.RouteStatus {
	s.t.Helper()
	r := s.ok("mail.control.route.status", map[string]string{"name": route})
	if r.Status == nil {
		s.t.Fatalf("route.status %s: no status", route)
	}
	return *r.Status
}

// waitStatus waits until a route's status satisfies cond.
func (s *testService) waitStatus(route string, within time.Duration, cond func(schemas.RouteStatus) bool) schemas.RouteStatus {
	s.t.Helper()
	var st schemas.RouteStatus
	if !testkit.WaitFor(within, func() bool { st = s.status(route); return cond(st) }) {
		s.t.Fatalf("route %s: status %+v after %s", route, st, within)
	}
	return st
}

// imapConnection is a valid connection definition.
func imapConnection(name string) map[string]any {
	return map[string]any{
		"name": name, "type": "imap", "host": "imap.example.com", "encryption": "ssl",
		"auth": "basic", "username": "bot@example.com", "password": "s3cret-" + name,
	}
}

// inboxRoute is a valid route definition.
func inboxRoute(name, conn string) map[string]any {
	return map[string]any{"name": name, "connection": conn}
}

// recorder is a real Worker plug-in that records what the supervisor starts and stops; it
// fails while its route is in fail.
type recorder struct {
	mu      sync.Mutex
	events  chan string
	running map[string]engine.RouteSpec
	starts  map[string]int
	fail    map[string]error
}

func newRecorder() *recorder {
	return &recorder{
		events:  make(chan string, 1000),
		running: make(map[string]engine.RouteSpec),
		starts:  make(map[string]int),
		fail:    make(map[string]error),
	}
}

func (r *recorder) factory(_ *engine.Runtime, spec engine.RouteSpec) (engine.Worker, error) {
	return &recordingWorker{r: r, spec: spec}, nil
}

type recordingWorker struct {
	r    *recorder
	spec engine.RouteSpec
}

func (w *recordingWorker) Run(ctx context.Context) error {
	name := w.spec.Route.Name
	w.r.mu.Lock()
	w.r.running[name] = w.spec
	w.r.starts[name]++
	err := w.r.fail[name]
	w.r.mu.Unlock()
	w.r.events <- "start " + name
	defer func() {
		w.r.mu.Lock()
		delete(w.r.running, name)
		w.r.mu.Unlock()
		w.r.events <- "stop " + name
	}()
	if err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// spec returns the spec of a running route's worker.
func (r *recorder) spec(route string) (engine.RouteSpec, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.running[route]
	return s, ok
}

// expect waits for the next worker event, which must be want, within d.
func (r *recorder) expect(t *testing.T, want string, d time.Duration) {
	t.Helper()
	select {
	case got := <-r.events:
		if got != want {
			t.Fatalf("worker event %q, want %q", got, want)
		}
	case <-time.After(d):
		t.Fatalf("no worker event %q within %s", want, d)
	}
}

// quiet checks no worker event happens for d.
func (r *recorder) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case got := <-r.events:
		t.Fatalf("unexpected worker event %q", got)
	case <-time.After(d):
	}
}

func TestConnectorRunTwice(t *testing.T) {
	s := startService(t, svcConfig(t), nil, nil)
	if err := s.c.Run(context.Background()); err == nil {
		t.Fatal("second Run() = nil, want an error")
	}
}

func TestNewRefusesBadSecretKey(t *testing.T) {
	for _, key := range []string{"not base64!", "c2hvcnQ=", strings.Repeat("A", 64)} {
		cfg := svcConfig(t)
		cfg.SecretKey = key
		_, err := connector.New(cfg, nil)
		if err == nil {
			t.Errorf("New(SecretKey %q) = nil error", key)
			continue
		}
		if strings.Contains(err.Error(), key) {
			t.Errorf("New(SecretKey %q) error %q contains the key", key, err)
		}
	}
}

func TestRedactURLs(t *testing.T) {
	got := bus.RedactURLs("nats://u:pw1@a:4222, tls://tok@b:4222,c:4222,u2:pw2@d:4222")
	want := "nats://redacted@a:4222,tls://redacted@b:4222,c:4222,redacted@d:4222"
	if got != want {
		t.Errorf("RedactURLs() = %q, want %q", got, want)
	}
}

// TestEndToEndIMAP runs the real IMAP worker under the Connector: a connection and a route
// put over the control plane turn a message in an in-memory IMAP server into an event.
func TestEndToEndIMAP(t *testing.T) {
	m := startMemIMAP(t, memCaps...)
	s := runService(t, svcConfig(t), nil)
	sub, err := s.nc.SubscribeSync("mail.bus.2.e2e")
	if err != nil {
		t.Fatalf("SubscribeSync() = %v", err)
	}
	m.append(t, "INBOX", testMail(1, ""))

	host, port, _ := net.SplitHostPort(m.addr)
	s.ok("mail.control.connection.put", map[string]any{
		"name": "mem", "type": "imap", "host": host, "port": json.Number(port), "encryption": "none",
		"username": "alice", "password": "secret",
	})
	s.ok("mail.control.route.put", map[string]any{"name": "e2e", "connection": "mem", "bus": 2})

	msg, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no event: %v\nlog:\n%s", err, s.log)
	}
	var ev schemas.Event
	if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.Subject != "test 1" || ev.Route != "e2e" || ev.Bus != 2 {
		t.Fatalf("event = %+v (%v)", ev, err)
	}
	s.waitStatus("e2e", 5*time.Second, func(st schemas.RouteStatus) bool { return st.Published == 1 })
}

// TestEndToEndCheckAndLog runs connection.test on a saved connection and on an unsaved
// draft, and reads back through connection.log what the route wrote at level full.
func TestEndToEndCheckAndLog(t *testing.T) {
	m := startMemIMAP(t, memCaps...)
	s := runService(t, svcConfig(t), nil)
	m.append(t, "INBOX", testMail(1, ""))
	host, port, _ := net.SplitHostPort(m.addr)
	conn := map[string]any{
		"name": "mem", "type": "imap", "host": host, "port": json.Number(port), "encryption": "none",
		"username": "alice", "password": "secret", "logLevel": "full",
	}
	s.ok("mail.control.connection.put", conn)
	s.ok("mail.control.route.put", map[string]any{"name": "logged", "connection": "mem"})
	s.waitStatus("logged", 10*time.Second, func(st schemas.RouteStatus) bool { return st.Published == 1 })

	r, _ := s.request("mail.control.connection.test", map[string]string{"name": "mem"})
	if !r.OK || r.Mailbox == nil || r.Mailbox.Name != "INBOX" || r.Mailbox.Messages != 1 || len(r.Stages) == 0 {
		t.Fatalf("connection.test of the saved connection = %+v", r)
	}
	// A draft never takes the saved password; with its own it passes, with a wrong one it
	// fails as a normal reply that says why, and keeps the password out.
	conn["logLevel"] = "off"
	delete(conn, "password")
	s.fail("mail.control.connection.test", conn, "invalid", "password")
	conn["password"] = "secret"
	if r, _ := s.request("mail.control.connection.test", conn); !r.OK {
		t.Fatalf("connection.test of a draft with the password = %+v", r.Error)
	}
	conn["password"] = "wrong-password-123"
	r, msg := s.request("mail.control.connection.test", conn)
	if r.OK || r.Error == nil || r.Error.Field != "password" || msg.Header.Get("Nats-Service-Error") != "" {
		t.Fatalf("connection.test with a wrong password = %+v, headers %v", r, msg.Header)
	}
	if strings.Contains(string(msg.Data), "wrong-password-123") {
		t.Fatal("connection.test reply contains the password")
	}
	// The draft was never stored.
	if got := s.ok("mail.control.connection.get", map[string]string{"name": "mem"}); got.Connection.LogLevel != "full" {
		t.Fatalf("a checked draft changed the stored connection: %+v", got.Connection)
	}

	var entries []schemas.LogEntry
	testkit.WaitFor(5*time.Second, func() bool {
		entries = s.ok("mail.control.connection.log", map[string]any{"name": "mem", "limit": 100}).Entries
		return slices.ContainsFunc(entries, func(e schemas.LogEntry) bool { return e.Event == connlog.EventPublished })
	})
	if !slices.ContainsFunc(entries, func(e schemas.LogEntry) bool {
		return e.Event == connlog.EventPublished && e.Route == "logged"
	}) {
		t.Fatalf("connection.log has no published entry: %+v", entries)
	}
	text := s.ok("mail.control.connection.log", map[string]any{"name": "mem", "format": "text"}).Text
	if !strings.Contains(text, "route=logged") || strings.Contains(text, "secret") {
		t.Fatalf("connection.log as text = %q", text)
	}
}
