package control_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/mailbus/mailbus/connector/control"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/connector/oauth2"
	"github.com/mailbus/mailbus/connector/secrets"
	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/schemas"
)

// The tests here start the control service on its own, on an embedded NATS server with
// JetStream and mailbus's buckets, with the connection check and the statuses the wiring
// would hand it replaced by recording ones. The service as a replica runs it (connector.New)
// is tested in package connector.

// service is a control service under test, on the server its client talks to.
type service struct{ *testkit.NATS }

func start(t *testing.T, cfg control.Config) *service {
	t.Helper()
	n := testkit.StartStorage(t)
	sealer := &secrets.Sealer{}
	cfg.Names, cfg.Version, cfg.Instance = n.Names, "1.2.3", "test"
	cfg.Store, cfg.Sealer, cfg.JS, cfg.State = store.New(n.Storage.Config, sealer), sealer, n.JS, n.Storage.State
	svc, err := control.Start(context.Background(), n.NC, cfg)
	if err != nil {
		t.Fatalf("control.Start() = %v", err)
	}
	t.Cleanup(func() { svc.Stop() })
	return &service{n}
}

// request sends a command and returns the reply and the micro error code header.
func (s *service) request(t *testing.T, op string, body any) (schemas.Reply, string) {
	t.Helper()
	data, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.NC.Request("mail.control."+op, data, 10*time.Second)
	if err != nil {
		t.Fatalf("Request(%s) = %v", op, err)
	}
	var r schemas.Reply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		t.Fatalf("%s reply %s: %v", op, msg.Data, err)
	}
	return r, msg.Header.Get(micro.ErrorCodeHeader)
}

func (s *service) ok(t *testing.T, op string, body any) schemas.Reply {
	t.Helper()
	r, _ := s.request(t, op, body)
	if !r.OK {
		t.Fatalf("%s = %+v", op, r.Error)
	}
	return r
}

// checkCall is one call of the injected connection check.
type checkCall struct {
	conn      schemas.Connection
	mailboxes []string
	ts        *oauth2.Source
}

// recordingCheck answers every check with a reply naming its connection, and records it.
type recordingCheck struct {
	mu    sync.Mutex
	calls []checkCall
}

func (k *recordingCheck) check(_ context.Context, c schemas.Connection, mailboxes []string, ts *oauth2.Source) (*schemas.Reply, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls = append(k.calls, checkCall{c, slices.Clone(mailboxes), ts})
	return &schemas.Reply{Stages: []schemas.Stage{{Stage: "connect", OK: true, Detail: c.Name}}}, nil
}

func (k *recordingCheck) last(t *testing.T) checkCall {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.calls) == 0 {
		t.Fatal("the connection check was not called")
	}
	return k.calls[len(k.calls)-1]
}

// TestConnectionTestInjected: connection.test runs the check the wiring gave, on the saved
// connection with its password opened and the mailboxes its routes read (each once), or
// on a draft that carries its own secrets, never the stored ones; without a check it
// answers unavailable, and a refused draft never reaches the check.
func TestConnectionTestInjected(t *testing.T) {
	k := &recordingCheck{}
	s := start(t, control.Config{Check: k.check})
	s.ok(t, "connection.put", schemas.Connection{Name: "c", Type: schemas.TypeIMAP, Host: "imap.example.com", Username: "bot", Password: "pw-stored"})
	for _, r := range []schemas.Route{{Name: "r1", Connection: "c"}, {Name: "r2", Connection: "c", Mailbox: "Support"}, {Name: "r3", Connection: "c", Mailbox: "INBOX"}} {
		s.ok(t, "route.put", r)
	}

	r := s.ok(t, "connection.test", map[string]string{"name": "c"})
	if len(r.Stages) != 1 || r.Stages[0].Detail != "c" {
		t.Fatalf("connection.test reply = %+v; want the check's", r)
	}
	call := k.last(t)
	if call.conn.Password != "pw-stored" || call.conn.Port != 993 || call.ts != nil {
		t.Errorf("checked %+v (token source %v); want the stored connection, password opened, no token source", call.conn, call.ts)
	}
	if !slices.Equal(call.mailboxes, []string{"INBOX", "Support"}) {
		t.Errorf("checked mailboxes %v; want INBOX, Support", call.mailboxes)
	}

	// A draft of the same name without a password is refused before the check.
	n := len(k.calls)
	e, code := s.request(t, "connection.test", schemas.Connection{Name: "c", Type: schemas.TypeIMAP, Host: "imap.example.com", Username: "bot"})
	if e.OK || e.Error.Field != "password" || !strings.Contains(e.Error.Message, "does not use stored secrets") || code != "400" {
		t.Errorf("draft without a password = %+v (%s); want invalid password", e.Error, code)
	}
	if len(k.calls) != n {
		t.Errorf("the check ran for a refused draft")
	}
	s.ok(t, "connection.test", schemas.Connection{Name: "c", Type: schemas.TypeIMAP, Host: "other.example.com", Username: "bot", Password: "pw-draft"})
	if call := k.last(t); call.conn.Password != "pw-draft" || call.conn.Host != "other.example.com" {
		t.Errorf("draft checked as %+v; want its own host and password", call.conn)
	}

	bare := start(t, control.Config{})
	bare.ok(t, "connection.put", schemas.Connection{Name: "c", Type: schemas.TypeIMAP, Host: "imap.example.com", Username: "bot", Password: "pw"})
	if r, code := bare.request(t, "connection.test", map[string]string{"name": "c"}); r.OK || r.Error.Code != schemas.CodeUnavailable || code != "503" {
		t.Errorf("connection.test without a check = %+v (%s); want unavailable", r.Error, code)
	}
}

// statuses is a StatusReader of fixed statuses: local runs here, remote on other replicas.
type statuses struct {
	local, remote map[string]schemas.RouteStatus
}

func (s statuses) Local(route string) (schemas.RouteStatus, bool) {
	st, ok := s.local[route]
	return st, ok
}

func (s statuses) Remote(_ context.Context, route string) (schemas.RouteStatus, bool) {
	st, ok := s.remote[route]
	return st, ok
}

// TestRouteStatusReader: route.status and route.list with status read the injected reader:
// the worker here first; a disabled route that does not run here is disabled whatever a
// stale lease says; then the replica holding the lease; else stopped.
func TestRouteStatusReader(t *testing.T) {
	s := start(t, control.Config{Status: statuses{
		local: map[string]schemas.RouteStatus{"here": {Route: "here", State: schemas.StateRunning, Owner: "test", Published: 7}},
		remote: map[string]schemas.RouteStatus{
			"there": {Route: "there", State: schemas.StateError, Owner: "replica2", LastError: "login refused"},
			"off":   {Route: "off", State: schemas.StateRunning, Owner: "replica2"},
			"here":  {Route: "here", State: schemas.StateError, Owner: "replica2"},
		},
	}})
	s.ok(t, "connection.put", schemas.Connection{Name: "c", Type: schemas.TypeIMAP, Host: "imap.example.com", Username: "bot", Password: "pw"})
	for i, name := range []string{"here", "nowhere", "off", "there"} {
		s.ok(t, "route.put", schemas.Route{Name: name, Connection: "c", Mailbox: "m" + string(rune('a'+i)), Disabled: name == "off"})
	}
	want := map[string]schemas.RouteStatus{
		"here":    {Route: "here", State: schemas.StateRunning, Owner: "test", Published: 7},
		"nowhere": {Route: "nowhere", State: schemas.StateStopped},
		"off":     {Route: "off", State: schemas.StateDisabled},
		"there":   {Route: "there", State: schemas.StateError, Owner: "replica2", LastError: "login refused"},
	}
	for name, w := range want {
		r := s.ok(t, "route.status", map[string]string{"name": name})
		if got, _ := json.Marshal(r.Status); string(got) != mustJSON(t, w) {
			t.Errorf("route.status %s = %s, want %s", name, got, mustJSON(t, w))
		}
	}
	l := s.ok(t, "route.list", map[string]bool{"status": true})
	if len(l.Statuses) != len(want) {
		t.Fatalf("route.list statuses = %+v", l.Statuses)
	}
	for i, st := range l.Statuses {
		if got := mustJSON(t, st); got != mustJSON(t, want[l.Routes[i].Name]) {
			t.Errorf("route.list status of %s = %s, want %s", l.Routes[i].Name, got, mustJSON(t, want[l.Routes[i].Name]))
		}
	}
	if r, code := s.request(t, "route.status", map[string]string{"name": "gone"}); r.OK || r.Error.Code != schemas.CodeNotFound || code != "404" {
		t.Errorf("route.status of an unknown route = %+v (%s); want not found", r.Error, code)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestStartAnswersAtOnce: once Start returns, a command from another connection is
// answered: the server has the endpoints' subscriptions, not only the client's buffer
// (a connection.put right after "mailbus ready" found no responders, in CI).
func TestStartAnswersAtOnce(t *testing.T) {
	n := testkit.StartStorage(t)
	other, err := nats.Connect(n.Server.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	sealer := &secrets.Sealer{}
	cfg := control.Config{Names: n.Names, Version: "1.2.3", Instance: "test", Sealer: sealer,
		Store: store.New(n.Storage.Config, sealer), JS: n.JS, State: n.Storage.State}
	for i := range 50 {
		svc, err := control.Start(context.Background(), n.NC, cfg)
		if err != nil {
			t.Fatalf("control.Start() = %v", err)
		}
		_, err = other.Request("mail.control.route.list", []byte(`{}`), 5*time.Second)
		svc.Stop()
		if err != nil {
			t.Fatalf("start %d: route.list from another connection = %v", i, err)
		}
	}
}
