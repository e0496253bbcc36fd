package connector

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/ews"
	"github.com/mailbus/mailbus/connector/ewstest"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/schemas"
)

// The harness of the Exchange route tests: a runtime on an embedded NATS server, a route
// on the EWS fake (connector/ewstest), and readers of what it published. The names are
// exported for the black-box tests (package connector_test); the tests inside the package
// use them too.

// EWSRuntime starts an embedded NATS server with the mailbus storage and returns the
// runtime a worker runs on.
func EWSRuntime(t *testing.T) *engine.Runtime {
	t.Helper()
	_, rt := testkit.StartRuntime(t)
	return rt
}

// EWSSpec is route exch_inbox (bus 1, INBOX) on the fake's connection, polling every 100ms.
func EWSSpec(f *ewstest.Server, sel, after string) engine.RouteSpec {
	c := f.Connection()
	c.PollInterval = schemas.Duration(100 * time.Millisecond)
	return engine.RouteSpec{
		Connection: c,
		Route:      schemas.Route{Name: "exch_inbox", Connection: c.Name, Bus: 1, Mailbox: "INBOX", Select: sel, After: after},
	}
}

// EWSOAuthConn is an exchange connection with application access (client credentials)
// to bot@example.com's mailbox.
func EWSOAuthConn(f *ewstest.Server, ts *testkit.TokenServer) schemas.Connection {
	c := f.Connection()
	c.Auth, c.Username, c.Domain, c.Password = schemas.AuthOAuth2, "bot@example.com", "", ""
	c.OAuth2 = &schemas.OAuth2{
		TokenURL: ts.URL(), ClientID: ts.ClientID, ClientSecret: ts.ClientSecret,
		Scopes: []string{"https://outlook.office365.com/.default"},
	}
	return c
}

// RunEWSWorker starts the worker of spec and returns a stop that waits for it to end.
func RunEWSWorker(t *testing.T, rt *engine.Runtime, spec engine.RouteSpec) (stop func()) {
	t.Helper()
	w, err := ews.NewWorker(rt, spec)
	if err != nil {
		t.Fatalf("ews.NewWorker() = %v", err)
	}
	return testkit.RunWorker(t, w)
}

// EWSWaitFor polls cond for up to 15 seconds.
func EWSWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !testkit.WaitFor(15*time.Second, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// EWSStored returns the messages of subject in stream, oldest first.
func EWSStored(t *testing.T, rt *engine.Runtime, stream, subject string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := rt.JS.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("Stream(%s) = %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("Info() = %v", err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err == nil && m.Subject == subject {
			out = append(out, m)
		}
	}
	return out
}

// EWSEvents returns the events route published on bus, oldest first, and checks that each
// carries its Id in Nats-Msg-Id and ce-id.
func EWSEvents(t *testing.T, rt *engine.Runtime, route string, bus int) []schemas.Event {
	t.Helper()
	var evs []schemas.Event
	for _, m := range EWSStored(t, rt, rt.Names.BusStream(bus), rt.Names.BusSubject(bus, route)) {
		var ev schemas.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("event %s: %v", m.Data, err)
		}
		if m.Header.Get(jetstream.MsgIDHeader) != ev.Route+"/"+ev.Id || m.Header.Get("ce-id") != ev.Id {
			t.Errorf("event %s: Nats-Msg-Id %q, ce-id %q", ev.Id, m.Header.Get(jetstream.MsgIDHeader), m.Header.Get("ce-id"))
		}
		evs = append(evs, ev)
	}
	return evs
}

// EWSRouteStatus is the status of route on rt's board.
func EWSRouteStatus(rt *engine.Runtime, route string) schemas.RouteStatus {
	s, _ := rt.Status.Get(route)
	return s
}

// EWSDistinctIDs checks that evs have n different Ids.
func EWSDistinctIDs(t *testing.T, evs []schemas.Event, n int) {
	t.Helper()
	ids := map[string]bool{}
	for _, ev := range evs {
		ids[ev.Id] = true
	}
	if len(evs) != n || len(ids) != n {
		t.Errorf("%d events with %d distinct Ids, want %d", len(evs), len(ids), n)
	}
}

// ExchangeEventID is the event Id the route of spec gives the item itemID.
func ExchangeEventID(t *testing.T, rt *engine.Runtime, spec engine.RouteSpec, itemID string) string {
	t.Helper()
	w, err := ews.NewWorker(rt, spec)
	if err != nil {
		t.Fatalf("ews.NewWorker() = %v", err)
	}
	return w.(interface{ EventID(ews.ID) string }).EventID(ews.ID{ID: itemID})
}
