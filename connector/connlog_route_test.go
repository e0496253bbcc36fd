package connector

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailbus/mailbus/connector/connlog"
	"github.com/mailbus/mailbus/connector/control"
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/ews"
	"github.com/mailbus/mailbus/connector/ewstest"
	"github.com/mailbus/mailbus/connector/imap"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/connector/secrets"
	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/connector/supervisor"
	"github.com/mailbus/mailbus/schemas"
)

// The tests in this file run real route workers (IMAP against go-imap's in-memory server,
// Exchange against the EWS fake) on an embedded NATS server with the connection log and the
// control service of a replica, and read the log back with connection.log, as a user would.
// Each route gets three good messages and one the mapping rejects (a dead letter).

const connLogIMAPPassword = "imap-pw-7Qx!connlog"

// connLogRuntime is EWSRuntime with the connection log and the control service.
func connLogRuntime(t *testing.T) *engine.Runtime {
	t.Helper()
	rt := EWSRuntime(t)
	rt.ConnLog = connlog.New(rt.JS, rt.Names, rt.Logger)
	s := &secrets.Sealer{}
	svc, err := control.Start(context.Background(), rt.NC, control.Config{
		Names: rt.Names, Version: "test", Instance: rt.Instance,
		Store: store.New(rt.Storage.Config, s), Sealer: s, JS: rt.JS,
		Status: supervisor.Statuses{Board: rt.Status}, Logger: rt.Logger,
	})
	if err != nil {
		t.Fatalf("control.Start() = %v", err)
	}
	t.Cleanup(func() { svc.Stop() })
	return rt
}

// controlRequest sends a control command and returns its reply, decoded and raw.
func controlRequest(t *testing.T, rt *engine.Runtime, op string, body any) (schemas.Reply, []byte) {
	t.Helper()
	data, err := json.Marshal(body)
	if err != nil {
		t.Fatalf("json.Marshal() = %v", err)
	}
	msg, err := rt.NC.Request(rt.Names.ControlPrefix()+"."+op, data, 10*time.Second)
	if err != nil {
		t.Fatalf("Request(%s) = %v", op, err)
	}
	var r schemas.Reply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		t.Fatalf("reply of %s is not JSON: %v: %s", op, err, msg.Data)
	}
	if !r.OK {
		t.Fatalf("%s: reply %s, want ok", op, msg.Data)
	}
	return r, msg.Data
}

// runLoggedRoute saves the connection through the control service, runs the route until it
// has published want events and dead-lettered one message, stops it, and returns the
// connection's log read through connection.log (decoded and raw) and the events.
func runLoggedRoute(t *testing.T, rt *engine.Runtime, spec engine.RouteSpec, newWorker engine.WorkerFactory, want int) ([]schemas.LogEntry, []byte, []schemas.Event) {
	t.Helper()
	stop := startLoggedRoute(t, rt, spec, newWorker)
	EWSWaitFor(t, "the route done and idle", func() bool {
		st := EWSRouteStatus(rt, spec.Route.Name)
		return st.Published == uint64(want) && st.DeadLettered == 1 && st.State == schemas.StateIdle
	})
	stop()
	entries, raw := readRouteLog(t, rt, spec.Connection.Name)
	return entries, raw, EWSEvents(t, rt, spec.Route.Name, spec.Route.Bus)
}

// startLoggedRoute saves the connection through the control service and runs the route
// until stop, which waits for the worker to end.
func startLoggedRoute(t *testing.T, rt *engine.Runtime, spec engine.RouteSpec, newWorker engine.WorkerFactory) (stop func()) {
	t.Helper()
	controlRequest(t, rt, "connection.put", spec.Connection)
	w, err := newWorker(rt, spec)
	if err != nil {
		t.Fatalf("new worker = %v", err)
	}
	return testkit.RunWorker(t, w)
}

// readRouteLog reads a connection's log through connection.log once every entry written
// so far reached JetStream.
func readRouteLog(t *testing.T, rt *engine.Runtime, name string) ([]schemas.LogEntry, []byte) {
	t.Helper()
	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	if err := rt.ConnLog.Flush(fctx); err != nil {
		t.Fatalf("Flush() = %v", err)
	}
	r, raw := controlRequest(t, rt, "connection.log", map[string]any{"name": name, "limit": 10000})
	if testing.Verbose() {
		text, _ := controlRequest(t, rt, "connection.log", map[string]any{"name": name, "format": "text"})
		t.Logf("connection.log of %s:\n%s", name, text.Text)
	}
	return r.Entries, raw
}

// checkRouteLog checks a route's log at level against its events; ref is the field
// naming each event's message in the mailbox ("uid" or "itemId") and its value.
func checkRouteLog(t *testing.T, level string, entries []schemas.LogEntry, raw []byte, evs []schemas.Event,
	password string, ref func(ev schemas.Event) (string, any)) {
	t.Helper()
	if bytes.Contains(raw, []byte(password)) {
		t.Errorf("connection.log reply contains the password: %s", raw)
	}
	count := map[string]int{}
	for _, e := range entries {
		count[e.Event]++
		if e.Time.IsZero() || e.Level == "" || e.Message == "" || (e.Route != "" && e.Route != evs[0].Route) {
			t.Errorf("entry %+v: want time, level, message and the route", e)
		}
	}
	switch level {
	case schemas.LogOff:
		if len(entries) != 0 {
			t.Errorf("level off: %d entries, want none: %+v", len(entries), entries)
		}
		return
	case schemas.LogErrors:
		// The dead letter is the only failure; nothing is written per message or per poll.
		if len(entries) != 1 || entries[0].Event != connlog.EventError || entries[0].Fields["eventId"] == nil {
			t.Errorf("level errors: entries %+v, want only the dead letter", entries)
		}
		return
	}

	if count[connlog.EventPublished] != len(evs) {
		t.Errorf("%d published entries for %d events", count[connlog.EventPublished], len(evs))
	}
	for _, ev := range evs {
		var e *schemas.LogEntry
		for i := range entries {
			if entries[i].Event == connlog.EventPublished && entries[i].Fields["eventId"] == ev.Id {
				e = &entries[i]
			}
		}
		if e == nil {
			t.Errorf("no published entry for event %s", ev.Id)
			continue
		}
		key, val := ref(ev)
		f := e.Fields
		if f["messageId"] != ev.MessageId || f["subject"] != ev.Subject || f["size"] != float64(ev.Size) ||
			f["bus"] != float64(ev.Bus) || f[key] != val || ev.MessageId == "" || ev.Size == 0 {
			t.Errorf("published entry fields %v, want messageId %q, subject %q, size %d, bus %d, %s %v",
				f, ev.MessageId, ev.Subject, ev.Size, ev.Bus, key, val)
		}
		for _, s := range []string{ev.MessageId, ev.Subject, ev.Id, fmt.Sprint(val)} {
			if !strings.Contains(e.Message, s) {
				t.Errorf("published entry %q does not name %q", e.Message, s)
			}
		}
	}
	for _, ev := range []string{connlog.EventConnect, connlog.EventLogin, connlog.EventAction, connlog.EventError} {
		if count[ev] == 0 {
			t.Errorf("no %s entry: %+v", ev, entries)
		}
	}
	// The poll that took the four messages says how each ended.
	var poll bool
	for _, e := range entries {
		f := e.Fields
		poll = poll || e.Event == connlog.EventPoll && f["found"] == float64(len(evs)+1) &&
			f["published"] == float64(len(evs)) && f["deadLettered"] == float64(1)
	}
	if !poll {
		t.Errorf("no poll entry with found %d, published %d, deadLettered 1: %+v", len(evs)+1, len(evs), entries)
	}
}

var connLogLevels = []string{schemas.LogFull, schemas.LogErrors, schemas.LogOff}

// TestExchangeRouteConnLog: an Exchange route writes its connection log like an IMAP route,
// with one entry per item naming its Message-ID, subject, size, item id, bus and event Id.
func TestExchangeRouteConnLog(t *testing.T) {
	rt := connLogRuntime(t)
	for _, level := range connLogLevels {
		t.Run(level, func(t *testing.T) {
			f := ewstest.New(t, false)
			f.Auth, f.User, f.Password = "basic", `CORP\bot`, "s3cret!"
			ids := f.Add(4)
			f.Items[2].MIME = []byte("this is not a message at all\r\n")
			spec := EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
			spec.Connection.Name, spec.Route.Connection = "exch_"+level, "exch_"+level
			spec.Route.Name = "exch_route_" + level
			spec.Connection.LogLevel, spec.Connection.PollInterval = level, schemas.Duration(time.Second)
			entries, raw, evs := runLoggedRoute(t, rt, spec, ews.NewWorker, 3)
			if len(evs) != 3 {
				t.Fatalf("%d events, want 3", len(evs))
			}
			w, _ := ews.NewWorker(rt, spec)
			items := map[string]string{} // event Id to ItemId
			for _, id := range ids {
				items[w.(interface{ EventID(ews.ID) string }).EventID(ews.ID{ID: id})] = id
			}
			checkRouteLog(t, level, entries, raw, evs, f.Password, func(ev schemas.Event) (string, any) {
				return "itemId", items[ev.Id]
			})
		})
	}
}

// TestIMAPRouteConnLog: an IMAP route's entry per message names its Message-ID and subject
// (decoded), besides its size, UID, bus and event Id.
func TestIMAPRouteConnLog(t *testing.T) {
	rt := connLogRuntime(t)
	for _, level := range connLogLevels {
		t.Run(level, func(t *testing.T) {
			srv := testkit.StartIMAP(t, &testkit.IMAPOptions{Users: map[string]string{"alice": connLogIMAPPassword}})
			for i := 1; i <= 4; i++ {
				raw := fmt.Sprintf("From: Sender <sender@example.org>\r\nTo: bot@example.com\r\n"+
					"Subject: %s\r\nMessage-ID: <m%d-%s@example.org>\r\n\r\nbody of %d\r\n",
					mime.BEncoding.Encode("utf-8", fmt.Sprintf("Заявка #%d", i)), i, level, i)
				if i == 3 {
					raw = "this is not a mail message at all\r\nno header here\r\n"
				}
				srv.Append(t, "alice", "INBOX", []byte(raw))
			}
			host, port, _ := net.SplitHostPort(srv.Addr)
			p, _ := strconv.Atoi(port)
			c := schemas.Connection{
				Name: "imap_" + level, Type: schemas.TypeIMAP, Host: host, Port: p, Encryption: schemas.EncryptionNone,
				Auth: schemas.AuthBasic, Username: "alice", Password: connLogIMAPPassword,
				PollInterval: schemas.Duration(time.Hour), LogLevel: level,
			}
			route := schemas.Route{Name: "imap_route_" + level, Connection: c.Name, Bus: 2, Mailbox: "INBOX",
				Select: schemas.SelectUnseen, After: schemas.AfterMarkRead}
			entries, raw, evs := runLoggedRoute(t, rt, engine.RouteSpec{Route: route, Connection: c}, imap.NewWorker, 3)
			if len(evs) != 3 || evs[0].Subject != "Заявка #1" {
				t.Fatalf("events %+v, want 3, the first with subject Заявка #1", evs)
			}
			checkRouteLog(t, level, entries, raw, evs, connLogIMAPPassword, func(ev schemas.Event) (string, any) {
				return "uid", float64(ev.Uid)
			})
		})
	}
}

// TestRouteConnLogScrubsSecrets: an Exchange server that quotes the access token it was
// given in an item's error: the dead letter's entry says so with the token redacted, in the
// connection log and in the process log alike; neither holds the client secret.
func TestRouteConnLogScrubsSecrets(t *testing.T) {
	rt := connLogRuntime(t)
	var logs testkit.LogBuffer
	rt.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ts := testkit.StartTokenServer(t, time.Hour, false)
	f := ewstest.New(t, false)
	f.Auth, f.ValidToken = "bearer", ts.Valid
	spec := EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
	spec.Connection = EWSOAuthConn(f, ts)
	spec.Connection.LogLevel, spec.Connection.PollInterval = schemas.LogFull, schemas.Duration(time.Second)
	stop := startLoggedRoute(t, rt, spec, ews.NewWorker)
	EWSWaitFor(t, "an access token issued", func() bool { return ts.Count("client_credentials") > 0 })
	var token string
	for _, s := range ts.Secrets() {
		if ts.Valid(s) {
			token = s
		}
	}
	if token == "" {
		t.Fatal("no valid access token issued")
	}
	ids := f.Add(2)
	f.Lock()
	f.BadItems[ids[1]] = "ErrorCorruptData(" + token + ")"
	f.Unlock()
	EWSWaitFor(t, "one item published and one dead-lettered", func() bool {
		st := EWSRouteStatus(rt, spec.Route.Name)
		return st.Published == 1 && st.DeadLettered == 1 && st.State == schemas.StateIdle
	})
	stop()
	entries, raw := readRouteLog(t, rt, spec.Connection.Name)

	var dead bool
	for _, e := range entries {
		dead = dead || e.Event == connlog.EventError && strings.Contains(e.Message, "ErrorCorruptData([redacted])")
	}
	if !dead {
		t.Errorf("no dead letter entry quoting the server with the token redacted: %+v", entries)
	}
	proc := logs.String()
	if !strings.Contains(proc, "ErrorCorruptData([redacted])") {
		t.Errorf("process log does not quote the server with the token redacted:\n%s", proc)
	}
	for _, secret := range ts.Secrets() {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("connection.log holds the secret %q", secret)
		}
		if strings.Contains(proc, secret) {
			t.Errorf("process log holds the secret %q", secret)
		}
	}
}
