package connector_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/ews"
	"github.com/mailbus/mailbus/connector/ewstest"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/connector/retry"
	"github.com/mailbus/mailbus/schemas"
)

func TestExchangeWorkerPublishesAndMarksRead(t *testing.T) {
	rt := connector.EWSRuntime(t)
	f := ewstest.New(t, false)
	f.Auth, f.User, f.Password = "basic", `CORP\bot`, "s3cret!"
	ids := f.Add(120) // three FindItem pages
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
	connector.RunEWSWorker(t, rt, spec)

	connector.EWSWaitFor(t, "all messages marked read", func() bool { return f.ReadCount() == 120 })
	connector.EWSWaitFor(t, "the route idle", func() bool { return connector.EWSRouteStatus(rt, "exch_inbox").State == schemas.StateIdle })
	evs := connector.EWSEvents(t, rt, "exch_inbox", 1)
	connector.EWSDistinctIDs(t, evs, 120)
	first := evs[0]
	wantID := "exch/INBOX/" + first.Id[len("exch/INBOX/"):]
	if first.Subject != "message 1" || first.Id != wantID || len(first.Id) != len("exch/INBOX/")+32 ||
		first.Route != "exch_inbox" || first.Connection != "exch" || first.Bus != 1 || first.Mailbox != "INBOX" ||
		first.ReceivedAt == nil || !first.ReceivedAt.Equal(time.Date(2026, 11, 25, 19, 0, 1, 0, time.UTC)) ||
		first.UidValidity != 0 || first.Uid != 0 {
		t.Errorf("first event = %+v", first)
	}
	if want := connector.ExchangeEventID(t, rt, spec, ids[0]); first.Id != want {
		t.Errorf("first Id = %q, want %q", first.Id, want)
	}
	st := connector.EWSRouteStatus(rt, "exch_inbox")
	if st.Published != 120 || st.LastSuccessAt == nil || st.LastError != "" || st.Owner != "test" {
		t.Errorf("status = %+v", st)
	}
	f.Lock()
	defer f.Unlock()
	// Marking read follows each batch of 50 in one UpdateItem.
	if n := strings.Count(strings.Join(f.Ops, " "), "UpdateItem"); n != 3 {
		t.Errorf("%d UpdateItem requests, want 3 (one per batch): %v", n, f.Ops)
	}
	for _, v := range f.Versions {
		if v != "Exchange2013_SP1" {
			t.Fatalf("RequestServerVersion %q for Exchange2016", v)
		}
	}
}

func TestExchangeWorkerNTLM(t *testing.T) {
	rt := connector.EWSRuntime(t)
	f := ewstest.New(t, false)
	f.Auth, f.User, f.Password = "ntlm", `CORP\bot`, "s3cret!"
	f.Add(3)
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
	spec.Connection.Auth = schemas.AuthWindows
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "all messages marked read", func() bool { return f.ReadCount() == 3 })
	connector.EWSDistinctIDs(t, connector.EWSEvents(t, rt, "exch_inbox", 1), 3)
	f.Lock()
	defer f.Unlock()
	if len(f.NTLMUsers) == 0 || f.NTLMUsers[0] != `CORP\bot` {
		t.Errorf("NTLM users %q, want CORP\\bot", f.NTLMUsers)
	}
}

func TestExchangeWorkerTLS(t *testing.T) {
	f := ewstest.New(t, true)
	f.Add(2)
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
	spec.Connection.Auth, spec.Connection.Encryption = schemas.AuthNone, schemas.EncryptionSSL

	t.Run("unknown CA", func(t *testing.T) {
		rt := connector.EWSRuntime(t)
		connector.RunEWSWorker(t, rt, spec)
		connector.EWSWaitFor(t, "state error", func() bool { return connector.EWSRouteStatus(rt, "exch_inbox").State == schemas.StateError })
		if st := connector.EWSRouteStatus(rt, "exch_inbox"); !strings.Contains(st.LastError, "certificate") {
			t.Errorf("lastError = %q, want a certificate error", st.LastError)
		}
	})
	t.Run("with the CA", func(t *testing.T) {
		rt := connector.EWSRuntime(t)
		rt.TLSRootCAs = x509.NewCertPool()
		rt.TLSRootCAs.AddCert(f.Certificate())
		connector.RunEWSWorker(t, rt, spec)
		connector.EWSWaitFor(t, "all messages marked read", func() bool { return f.ReadCount() == 2 })
	})
}

func TestExchangeWorkerBadCredentials(t *testing.T) {
	rt := connector.EWSRuntime(t)
	f := ewstest.New(t, false)
	f.Auth, f.User, f.Password = "basic", `CORP\bot`, "right"
	f.Add(1)
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
	spec.Connection.Password = "Wr0ng-pass"
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "state error", func() bool { return connector.EWSRouteStatus(rt, "exch_inbox").State == schemas.StateError })
	st := connector.EWSRouteStatus(rt, "exch_inbox")
	if !strings.Contains(st.LastError, "the server refused the user name or password") || strings.Contains(st.LastError, "Wr0ng") {
		t.Errorf("lastError = %q", st.LastError)
	}
	if n := len(connector.EWSEvents(t, rt, "exch_inbox", 1)); n != 0 {
		t.Errorf("%d events published", n)
	}
}

func TestExchangeWorkerServerBusy(t *testing.T) {
	rt := connector.EWSRuntime(t)
	f := ewstest.New(t, false)
	f.Add(3)
	f.Busy = 700 * time.Millisecond
	f.Fail500 = 1 // then a bare 500: temporary, backed off
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
	spec.Connection.Auth = schemas.AuthNone
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "all messages marked read", func() bool { return f.ReadCount() == 3 })
	connector.EWSDistinctIDs(t, connector.EWSEvents(t, rt, "exch_inbox", 1), 3)
	f.Lock()
	defer f.Unlock()
	if waited := f.AfterBusy.Sub(f.BusyAt); waited < 700*time.Millisecond {
		t.Errorf("next request %s after ErrorServerBusy, want at least the 700ms asked", waited)
	}
}

func TestExchangeWorkerItemError(t *testing.T) {
	rt := connector.EWSRuntime(t)
	f := ewstest.New(t, false)
	ids := f.Add(3)
	f.BadItems[ids[1]] = "ErrorMimeContentConversionFailed"
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
	spec.Connection.Auth = schemas.AuthNone
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "all messages marked read", func() bool { return f.ReadCount() == 3 })
	evs := connector.EWSEvents(t, rt, "exch_inbox", 1)
	if len(evs) != 2 || evs[0].Subject != "message 1" || evs[1].Subject != "message 3" {
		t.Errorf("events %+v, want messages 1 and 3", evs)
	}
	dead := connector.EWSStored(t, rt, rt.Names.DeadStream(), rt.Names.DeadSubject("exch_inbox"))
	if len(dead) != 1 || !strings.Contains(string(dead[0].Data), "ErrorMimeContentConversionFailed") {
		t.Fatalf("dead letters %d, want 1 naming the error", len(dead))
	}
	connector.EWSWaitFor(t, "status counts", func() bool {
		st := connector.EWSRouteStatus(rt, "exch_inbox")
		return st.Published == 2 && st.DeadLettered == 1
	})
}

// TestExchangeWorkerCrashBeforeMarkRead stops the route between the publish acks and a
// successful UpdateItem: the next worker finds the items in the journal and marks them
// read without fetching or publishing them again.
func TestExchangeWorkerCrashBeforeMarkRead(t *testing.T) {
	rt := connector.EWSRuntime(t)
	f := ewstest.New(t, false)
	f.Add(5)
	f.DropMarkRead = true
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
	spec.Connection.Auth = schemas.AuthNone
	stop := connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "a failed UpdateItem", func() bool { return f.CountOps("UpdateItem") > 0 })
	stop()
	if n := len(connector.EWSEvents(t, rt, "exch_inbox", 1)); n != 5 || f.ReadCount() != 0 {
		t.Fatalf("after the crash: %d events, %d read; want 5, 0", n, f.ReadCount())
	}
	f.Lock()
	f.DropMarkRead = false
	f.Unlock()
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "all messages marked read", func() bool { return f.ReadCount() == 5 })
	if n := f.CountOps("GetItem"); n != 1 {
		t.Errorf("%d GetItem, want 1: the second worker fetched the messages again", n)
	}
	connector.EWSDistinctIDs(t, connector.EWSEvents(t, rt, "exch_inbox", 1), 5)
}

func TestExchangeWorkerSelectAll(t *testing.T) {
	rt := connector.EWSRuntime(t)
	f := ewstest.New(t, false)
	f.Add(4)
	f.Items[0].Read = true // select all and backlog all take it anyway
	spec := connector.EWSSpec(f, schemas.SelectAll, schemas.AfterNone)
	spec.Route.Backlog = schemas.BacklogAll
	spec.Connection.Auth = schemas.AuthNone
	stop := connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "4 events", func() bool { return len(connector.EWSEvents(t, rt, "exch_inbox", 1)) == 4 })
	connector.EWSWaitFor(t, "the route idle", func() bool { return connector.EWSRouteStatus(rt, "exch_inbox").State == schemas.StateIdle })
	stop()

	e, err := rt.Storage.State.Get(context.Background(), bus.RouteKey("exch_inbox"))
	if err != nil {
		t.Fatalf("state of the route: %v", err)
	}
	// The route's checkpoint, as the state bucket holds it.
	var st struct {
		SyncState string `json:"syncState"`
	}
	if err := json.Unmarshal(e.Value(), &st); err != nil || st.SyncState == "" {
		t.Fatalf("state %s: %v", e.Value(), err)
	}

	f.Add(2)
	f.Lock()
	seen := len(f.SyncStates)
	f.Unlock()
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "6 events", func() bool { return len(connector.EWSEvents(t, rt, "exch_inbox", 1)) == 6 })
	connector.EWSDistinctIDs(t, connector.EWSEvents(t, rt, "exch_inbox", 1), 6)
	f.Lock()
	defer f.Unlock()
	if f.SyncStates[seen] != st.SyncState {
		t.Errorf("restarted worker synced from %q, want the stored %q", f.SyncStates[seen], st.SyncState)
	}
	for _, it := range f.Items {
		if it.Read != (it == f.Items[0]) {
			t.Errorf("after none changed the read flag of %s", it.ID)
		}
	}
	if strings.Contains(strings.Join(f.Ops, " "), "FindItem") {
		t.Errorf("select all used FindItem: %v", f.Ops)
	}
}

func TestExchangeWorkerUnseenAfterNone(t *testing.T) {
	rt := connector.EWSRuntime(t)
	f := ewstest.New(t, false)
	f.Add(3)
	f.Items[1].Read = true
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterNone)
	spec.Connection.Auth = schemas.AuthNone
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "2 events", func() bool { return len(connector.EWSEvents(t, rt, "exch_inbox", 1)) == 2 })
	// Polls go on; nothing is published twice although the items stay unread.
	connector.EWSWaitFor(t, "more polls", func() bool { return f.CountOps("SyncFolderItems") > 4 })
	evs := connector.EWSEvents(t, rt, "exch_inbox", 1)
	if len(evs) != 2 || evs[0].Subject != "message 1" || evs[1].Subject != "message 3" {
		t.Errorf("events %+v, want messages 1 and 3", evs)
	}
}

func TestExchangeWorkerAfterDeleteAndMove(t *testing.T) {
	for _, tc := range []struct{ after, moveTo, folder string }{
		{schemas.AfterDelete, "", "deleteditems"},
		{schemas.AfterMove, "Archive", "AAMkFolderArchive="},
	} {
		t.Run(tc.after, func(t *testing.T) {
			rt := connector.EWSRuntime(t)
			f := ewstest.New(t, false)
			f.Add(60)
			spec := connector.EWSSpec(f, schemas.SelectUnseen, tc.after)
			spec.Connection.Auth, spec.Route.MoveTo = schemas.AuthNone, tc.moveTo
			connector.RunEWSWorker(t, rt, spec)
			connector.EWSWaitFor(t, "the inbox empty", func() bool {
				f.Lock()
				defer f.Unlock()
				return len(f.Unread("inbox")) == 0 && len(f.Unread(tc.folder)) == 60
			})
			connector.EWSDistinctIDs(t, connector.EWSEvents(t, rt, "exch_inbox", 1), 60)
		})
	}
}

func TestNewExchangeWorkerRefuses(t *testing.T) {
	rt := connector.EWSRuntime(t)
	f := ewstest.New(t, false)
	for name, mod := range map[string]func(s *engine.RouteSpec){
		"imap connection": func(s *engine.RouteSpec) { s.Connection.Type = schemas.TypeIMAP },
		"scheme in url":   func(s *engine.RouteSpec) { s.Connection.ExchangeURL = "https://" + f.Host() },
		"unknown auth":    func(s *engine.RouteSpec) { s.Connection.Auth = "kerberos" },
		"move without to": func(s *engine.RouteSpec) { s.Route.After = schemas.AfterMove },
		"bad select":      func(s *engine.RouteSpec) { s.Route.Select = "recent" },
	} {
		spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
		mod(&spec)
		if _, err := ews.NewWorker(rt, spec); !retry.IsPermanent(err) {
			t.Errorf("%s: ews.NewWorker() = %v, want a permanent error", name, err)
		}
	}
}

func TestExchangeCheck(t *testing.T) {
	f := ewstest.New(t, false)
	f.Auth, f.User, f.Password = "basic", `CORP\bot`, "s3cret!"
	f.Add(3)
	check := func(c schemas.Connection, mailboxes ...string) *schemas.Reply {
		return connector.CheckConnection(context.Background(), c, mailboxes)
	}

	r := check(f.Connection(), "INBOX", "Archive")
	if !r.OK || checkStages(r) != "resolve dial login select select" || r.Mailbox == nil || r.Mailbox.Unseen != 3 {
		t.Errorf("check = ok %t, stages %q, mailbox %+v, error %+v", r.OK, checkStages(r), r.Mailbox, r.Error)
	}

	bad := f.Connection()
	bad.Password = "nope"
	if r := check(bad, "INBOX"); r.OK || r.Error.Field != "password" || checkStages(r) != "resolve dial login" {
		t.Errorf("bad password: ok %t, stages %q, error %+v", r.OK, checkStages(r), r.Error)
	}
	wrongPath := f.Connection()
	wrongPath.ExchangeURL = strings.TrimSuffix(f.Host(), "/EWS/Exchange.asmx") + "/owa"
	if r := check(wrongPath, "INBOX"); r.OK || r.Error.Field != "exchangeUrl" {
		t.Errorf("wrong path: ok %t, error %+v", r.OK, r.Error)
	}
	if r := check(f.Connection(), "Nope"); r.OK || r.Error.Field != "mailbox" {
		t.Errorf("missing folder: ok %t, error %+v", r.OK, r.Error)
	}
	closed := f.Connection()
	closed.ExchangeURL = fmt.Sprintf("127.0.0.1:%d/EWS/Exchange.asmx", checkFreePort(t))
	if r := check(closed, "INBOX"); r.OK || r.Error.Field != "exchangeUrl" || checkStages(r) != "resolve dial" ||
		!strings.Contains(r.Error.Message, "nothing listens on 127.0.0.1:") || r.Stages[0].Detail != "127.0.0.1" {
		t.Errorf("nothing listening: ok %t, stages %+v, error %+v", r.OK, r.Stages, r.Error)
	}
}

func TestExchangeWorkerRawAndDeadLetter(t *testing.T) {
	rt := connector.EWSRuntime(t)
	f := ewstest.New(t, false)
	f.Add(2)
	broken := []byte("this is not a message at all\r\n")
	f.Items[1].MIME = broken
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
	spec.Connection.Auth, spec.Route.IncludeRaw = schemas.AuthNone, true
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "all messages marked read", func() bool { return f.ReadCount() == 2 })
	ctx := context.Background()

	evs := connector.EWSEvents(t, rt, "exch_inbox", 1)
	if len(evs) != 1 || evs[0].RawRef == nil {
		t.Fatalf("events %+v, want one with RawRef", evs)
	}
	raw, err := rt.Storage.Objects.GetBytes(ctx, evs[0].RawRef.Object)
	if err != nil || string(raw) != string(ewstest.MIME(1)) {
		t.Errorf("raw object = %q, %v", raw, err)
	}
	dead := connector.EWSStored(t, rt, rt.Names.DeadStream(), rt.Names.DeadSubject("exch_inbox"))
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dead))
	}
	var d bus.DeadLetter
	if err := json.Unmarshal(dead[0].Data, &d); err != nil || d.RawRef == nil || d.Error == "" {
		t.Fatalf("dead letter %s: %v", dead[0].Data, err)
	}
	if raw, err := rt.Storage.Objects.GetBytes(ctx, d.RawRef.Object); err != nil || string(raw) != string(broken) {
		t.Errorf("dead letter raw object = %q, %v", raw, err)
	}
}

// TestExchangeWorkerLargeBatch: a batch whose events hold more than engine.MaxInflightBytes makes
// the worker wait for acknowledgements mid-batch and let go of those events; every item
// still becomes one event (no dead letter for an item whose event was let go of) and is
// marked read.
func TestExchangeWorkerLargeBatch(t *testing.T) {
	const n = 9 // 4 MB events: 36 MB, just over engine.MaxInflightBytes
	rt := connector.EWSRuntime(t)
	f := ewstest.New(t, false)
	f.Add(n)
	body := strings.Repeat("a line of a long report, repeated to make it big\r\n", 4<<20/50)
	f.Lock()
	for _, it := range f.Items {
		it.MIME = append(it.MIME, body...)
	}
	f.Unlock()
	connector.RunEWSWorker(t, rt, connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead))

	// Mapping 36 MB under the race detector takes a while on a busy machine.
	if !testkit.WaitFor(2*time.Minute, func() bool { return f.ReadCount() >= n }) {
		t.Fatalf("%d of %d messages marked read", f.ReadCount(), n)
	}
	connector.EWSWaitFor(t, "the route idle", func() bool { return connector.EWSRouteStatus(rt, "exch_inbox").State == schemas.StateIdle })
	connector.EWSDistinctIDs(t, connector.EWSEvents(t, rt, "exch_inbox", 1), n)
	if st := connector.EWSRouteStatus(rt, "exch_inbox"); st.Published != n || st.DeadLettered != 0 {
		t.Errorf("status = %+v, want %d published, none dead-lettered", st, n)
	}
	if dead := connector.EWSStored(t, rt, rt.Names.DeadStream(), rt.Names.DeadSubject("exch_inbox")); len(dead) != 0 {
		t.Errorf("%d dead letters, want none: %s", len(dead), dead[0].Data)
	}
}
