package connector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/connlog"
	"github.com/mailbus/mailbus/connector/dovecottest"
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/connector/metrics"
	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/schemas"
)

// Issue 21, part B: identity (Msg-Id per route), checkpoints bound to their source, what a
// route takes (select, backlog), the publish journal, unforgeable probes and true counters.

// uidsOf lists the UIDs of events, in stream order.
func uidsOf(evs []schemas.Event) []uint32 {
	var out []uint32
	for _, ev := range evs {
		out = append(out, ev.Uid)
	}
	return out
}

// subjectsOf lists the subjects of events, in stream order.
func subjectsOf(evs []schemas.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Subject)
	}
	return out
}

// connLogEntries reads what the connection log of c1 holds, after flushing rt's writer.
func connLogEntries(t *testing.T, n *busNATS, rt *engine.Runtime) []schemas.LogEntry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.ConnLog.Flush(ctx); err != nil {
		t.Fatalf("Flush() = %v", err)
	}
	var out []schemas.LogEntry
	for _, m := range storedMsgs(t, n.js, busNames.LogStream(), busNames.LogSubject("c1")) {
		var e schemas.LogEntry
		if err := json.Unmarshal(m.Data, &e); err != nil {
			t.Fatalf("log entry %s: %v", m.Data, err)
		}
		out = append(out, e)
	}
	return out
}

func logSays(entries []schemas.LogEntry, sub string) bool {
	return slices.ContainsFunc(entries, func(e schemas.LogEntry) bool { return strings.Contains(e.Message, sub) })
}

// TestIMAPSharedMailbox (path 2): two routes on one mailbox and one bus both get every
// mail. Both used the same Nats-Msg-Id: the stream dropped the second route's events as
// duplicates, and that route counted them as published (5 and 0 events).
func TestIMAPSharedMailbox(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAP(t, memCaps...)
	rt := newIMAPRuntime(t, n)
	conn := imapConn(srv.addr, schemas.EncryptionNone)
	a := imapRoute("share_a", "", schemas.AfterMarkRead)
	b := imapRoute("share_b", "", schemas.AfterNone)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: a, Connection: conn})
	runIMAPWorker(t, rt, engine.RouteSpec{Route: b, Connection: conn})
	for _, r := range []string{a.Name, b.Name} {
		waitUntil(t, 10*time.Second, "the first cycle of "+r, func() bool {
			st, _ := rt.Status.Get(r)
			return st.State == schemas.StateIdle
		})
	}
	// The mail arrives while both routes run (before, with the mail already there and
	// the default backlog unseen, share_a's markRead could come first).
	for i := 1; i <= 5; i++ {
		srv.append(t, "INBOX", testMail(i, ""))
	}
	sta := waitRouteIdle(t, rt, a.Name, 5)
	stb := waitRouteIdle(t, rt, b.Name, 5)
	for _, r := range []string{a.Name, b.Name} {
		evs := busEvents(t, n, 1, r)
		if got := uidsOf(evs); !slices.Equal(got, []uint32{1, 2, 3, 4, 5}) {
			t.Errorf("route %s: events for UIDs %v, want 1..5", r, got)
		}
		for _, m := range storedMsgs(t, n.js, busNames.BusStream(1), busNames.BusSubject(1, r)) {
			var ev schemas.Event
			json.Unmarshal(m.Data, &ev)
			if id := m.Header.Get(jetstream.MsgIDHeader); id != r+"/"+ev.Id {
				t.Errorf("route %s: Nats-Msg-Id %q, want %q", r, id, r+"/"+ev.Id)
			}
		}
	}
	if sta.Published != 5 || stb.Published != 5 || sta.Duplicates != 0 || stb.Duplicates != 0 {
		t.Errorf("published %d and %d, duplicates %d and %d; want 5, 5, 0, 0", sta.Published, stb.Published, sta.Duplicates, stb.Duplicates)
	}
}

// TestIMAPForgedProbePublished (path 3): a mail from outside carrying X-Mailbus-Probe is
// ordinary mail and is published; only a probe signed with the deployment's key (as the
// connection check writes it) is passed over.
func TestIMAPForgedProbePublished(t *testing.T) {
	for _, secret := range []string{"", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="} {
		name := "kv key"
		if secret != "" {
			name = "secret key"
		}
		t.Run(name, func(t *testing.T) {
			n := startBusNATS(t)
			srv := startMemIMAP(t, memCaps...)
			ctx := context.Background()
			real, err := connector.SignedProbeValue(ctx, secret, n.st.State, "abc")
			if err != nil {
				t.Fatalf("SignedProbeValue() = %v", err)
			}
			// The key of another deployment: the value looks right but is not ours.
			other, _ := connector.SignedProbeValue(ctx, "", startBusNATS(t).st.State, "abc")
			srv.append(t, "INBOX", testMail(1, engine.ProbeHeader+": 1\r\n"))
			srv.append(t, "INBOX", testMail(2, engine.ProbeHeader+": "+other+"\r\n"))
			srv.append(t, "INBOX", testMail(3, engine.ProbeHeader+": "+real+"\r\n"))
			srv.append(t, "INBOX", testMail(4, ""))
			rt := newIMAPRuntime(t, n)
			if secret != "" {
				rt = connector.RuntimeWithSecretKey(rt, secret)
			}
			route := imapRoute("probe", "", schemas.AfterMarkRead)
			route.Headers = []string{"X-Other"}
			runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
			waitRouteIdle(t, rt, route.Name, 4)
			if got := uidsOf(busEvents(t, n, 1, route.Name)); !slices.Equal(got, []uint32{1, 2, 4}) {
				t.Fatalf("events for UIDs %v, want 1, 2 and 4 (3 is the real probe)", got)
			}
			for _, m := range listMailbox(t, dialPlain(srv.addr), "INBOX") {
				if seen := hasIMAPFlag(m.flags, imap.FlagSeen); seen != (m.uid != 3) {
					t.Errorf("UID %d: \\Seen %v", m.uid, seen)
				}
			}
		})
	}
}

// TestIMAPRepointedConnection (path 4): a route whose connection is pointed at another
// server, whose INBOX has the same UIDVALIDITY (go-imap's memory server numbers them from
// 1, as small servers do), takes that server's mail: its checkpoint is reset, and the
// connection log says why. Nothing was published before: every UID up to the old
// checkpoint was skipped.
//
// The new server's events have the Ids (and so the Msg-Ids) of the old one's, which the
// stream still holds: the route takes the duplicate acknowledgements for what they are,
// events it never published, counts them and publishes again once the duplicate window
// (here 1s) has passed.
func TestIMAPRepointedConnection(t *testing.T) {
	n := startBusNATSWindow(t, time.Second)
	srvA, srvB := startMemIMAP(t, memCaps...), startMemIMAP(t, memCaps...)
	for i := 1; i <= 3; i++ {
		srvA.append(t, "INBOX", testMail(i, ""))
		srvB.append(t, "INBOX", testMail(10+i, ""))
	}
	rt := newIMAPRuntime(t, n)
	rt.ConnLog = connlog.New(n.js, busNames, rt.Logger)
	route := imapRoute("moved", "", schemas.AfterNone)
	stop := runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srvA.addr, schemas.EncryptionNone)})
	waitRouteIdle(t, rt, route.Name, 3)
	stop()

	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srvB.addr, schemas.EncryptionNone)})
	waitUntil(t, 30*time.Second, "the new server's 3 events", func() bool {
		return len(busEvents(t, n, 1, route.Name)) == 6
	})
	waitRouteIdle(t, rt, route.Name, 3)
	subjects := subjectsOf(busEvents(t, n, 1, route.Name))
	if want := []string{"test 1", "test 2", "test 3", "test 11", "test 12", "test 13"}; !slices.Equal(subjects, want) {
		t.Errorf("events %q, want %q", subjects, want)
	}
	if !logSays(connLogEntries(t, n, rt), "checkpoint reset: the route's source changed (server") {
		t.Errorf("the connection log does not say the checkpoint was reset")
	}
	if st, _ := rt.Status.Get(route.Name); st.Duplicates == 0 {
		t.Errorf("status %+v: the refused duplicates are not counted", st)
	}
}

// TestIMAPRepointedMailbox (path 4): a route moved to another mailbox resets its checkpoint
// and says so in the connection log, and takes that mailbox's backlog.
func TestIMAPRepointedMailbox(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAP(t, memCaps...)
	if err := srv.user.Create("Other", nil); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		srv.append(t, "INBOX", testMail(i, ""))
	}
	srv.append(t, "Other", testMail(21, ""))
	rt := newIMAPRuntime(t, n)
	rt.ConnLog = connlog.New(n.js, busNames, rt.Logger)
	route := imapRoute("repointed", "", schemas.AfterNone)
	stop := runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	waitRouteIdle(t, rt, route.Name, 3)
	stop()
	route.Mailbox = "Other"
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	waitRouteIdle(t, rt, route.Name, 1)
	evs := busEvents(t, n, 1, route.Name)
	if len(evs) != 4 || evs[3].Subject != "test 21" || evs[3].Mailbox != "Other" {
		t.Fatalf("events %v, want the 3 of INBOX and then test 21 of Other", uidsOf(evs))
	}
	if !logSays(connLogEntries(t, n, rt), `checkpoint reset: the route's source changed (mailbox "INBOX" -> "Other")`) {
		t.Errorf("the connection log does not say the checkpoint was reset for the new mailbox")
	}
}

// TestIMAPDovecotRestoredFolder (path 4, Dovecot): a folder restored from a backup, a copy
// of the Maildir with its dovecot-uidlist, has the UIDVALIDITY of the original. A route
// pointed at it after the original gets all of its mail; before, every UID up to the old
// checkpoint was skipped (0 of 3, status idle, no error).
func TestIMAPDovecotRestoredFolder(t *testing.T) {
	srv := dovecottest.Start(t, nil)
	n := startBusNATS(t)
	for i := 1; i <= 3; i++ {
		srv.Deliver(t, "alice", testMail(i, ""))
	}
	rt := newIMAPRuntime(t, n)
	rt.TLSRootCAs = srv.CA
	conn := imapConn(srv.TLSAddr, schemas.EncryptionSSL)
	route := imapRoute("restored", "", schemas.AfterNone)
	stop := runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: conn})
	st := waitRouteIdle(t, rt, route.Name, 3)
	stop()

	// The backup: INBOX's files and its dovecot-uidlist, restored as folder Restored.
	md := srv.Maildir("alice")
	dst := filepath.Join(md, ".Restored")
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dst, sub), 0o700); err != nil {
			t.Fatal(err)
		}
		files, _ := os.ReadDir(filepath.Join(md, sub))
		for _, f := range files {
			copyFile(t, filepath.Join(md, sub, f.Name()), filepath.Join(dst, sub, f.Name()))
		}
	}
	copyFile(t, filepath.Join(md, "dovecot-uidlist"), filepath.Join(dst, "dovecot-uidlist"))
	srv.Chown(t, "alice")

	route.Mailbox = "Restored"
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: conn})
	waitUntil(t, 30*time.Second, "the restored folder's events", func() bool {
		return len(busEvents(t, n, 1, route.Name)) >= 6
	})
	st2 := waitRouteIdle(t, rt, route.Name, 3)
	if st2.UidValidity != st.UidValidity {
		t.Fatalf("Restored has UIDVALIDITY %d, INBOX %d: the copy did not keep it, the test shows nothing", st2.UidValidity, st.UidValidity)
	}
	evs := busEvents(t, n, 1, route.Name)
	if len(evs) != 6 {
		t.Fatalf("%d events, want 6", len(evs))
	}
	for i, ev := range evs[3:] {
		if ev.Mailbox != "Restored" || ev.Subject != fmt.Sprintf("test %d", i+1) {
			t.Errorf("event %d: mailbox %q subject %q", i+4, ev.Mailbox, ev.Subject)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestIMAPDovecotReadElsewhere (path 5, Dovecot): a mail someone opens in another client
// while mailbus is down is published when it comes back, under the default select. Before,
// the default was select unseen: it was skipped and the checkpoint moved past it.
func TestIMAPDovecotReadElsewhere(t *testing.T) {
	srv := dovecottest.Start(t, nil)
	n := startBusNATS(t)
	srv.Deliver(t, "alice", testMail(1, ""))
	rt := newIMAPRuntime(t, n)
	rt.TLSRootCAs = srv.CA
	conn := imapConn(srv.TLSAddr, schemas.EncryptionSSL)
	route := imapRoute("elsewhere", "", schemas.AfterMarkRead)
	route.Select = "" // the default
	stop := runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: conn})
	waitRouteIdle(t, rt, route.Name, 1)
	stop()

	srv.Deliver(t, "alice", testMail(2, ""))
	srv.Deliver(t, "alice", testMail(3, ""))
	c := loginAlice(t, dovecotTLS(srv))
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("Select().Wait() = %v", err)
	}
	if err := c.Store(imap.UIDSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close(); err != nil {
		t.Fatalf("Store().Close() = %v", err)
	}
	c.Close()

	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: conn})
	waitRouteIdle(t, rt, route.Name, 3)
	if got := uidsOf(busEvents(t, n, 1, route.Name)); !slices.Equal(got, []uint32{1, 2, 3}) {
		t.Fatalf("events for UIDs %v, want 1, 2 and 3", got)
	}
}

// TestIMAPBacklog (path 5): what a route takes of the mail already in the mailbox when it
// first starts, for each backlog; and that, whatever the backlog, the default select then
// takes every mail that arrives, read or not.
func TestIMAPBacklog(t *testing.T) {
	for _, tc := range []struct {
		backlog string
		want    []uint32
	}{
		{"", []uint32{1, 3, 4, 5}}, // unseen, the default
		{schemas.BacklogUnseen, []uint32{1, 3, 4, 5}},
		{schemas.BacklogAll, []uint32{1, 2, 3, 4, 5}},
		{schemas.BacklogNone, []uint32{4, 5}},
	} {
		t.Run("backlog "+tc.backlog, func(t *testing.T) {
			t.Parallel()
			n := startBusNATS(t)
			srv := startMemIMAP(t, memCaps...)
			srv.append(t, "INBOX", testMail(1, ""))
			srv.append(t, "INBOX", testMail(2, ""), imap.FlagSeen)
			srv.append(t, "INBOX", testMail(3, ""))
			rt := newIMAPRuntime(t, n)
			route := imapRoute("backlog", "", schemas.AfterNone)
			route.Backlog = tc.backlog
			runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
			waitRouteIdle(t, rt, route.Name, 3)
			srv.append(t, "INBOX", testMail(4, ""), imap.FlagSeen) // read elsewhere already
			srv.append(t, "INBOX", testMail(5, ""))
			st := waitRouteIdle(t, rt, route.Name, 5)
			if got := uidsOf(busEvents(t, n, 1, route.Name)); !slices.Equal(got, tc.want) {
				t.Fatalf("events for UIDs %v, want %v", got, tc.want)
			}
			if st.SkippedSeen != 0 || st.Published != uint64(len(tc.want)) {
				t.Errorf("status %+v: want %d published, none skippedSeen (select all)", st, len(tc.want))
			}
		})
	}
}

// TestIMAPSkippedSeen (path 5): select unseen, an explicit choice now, counts the read mail
// it passes over, once each, and logs it at level full.
func TestIMAPSkippedSeen(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAP(t, memCaps...)
	rt := newIMAPRuntime(t, n)
	rt.ConnLog = connlog.New(n.js, busNames, rt.Logger)
	conn := imapConn(srv.addr, schemas.EncryptionNone)
	conn.LogLevel = schemas.LogFull
	conn.PollInterval = schemas.Duration(time.Second) // no IDLE on a poll: see below
	conn.Idle = new(bool)
	route := imapRoute("unseen_only", schemas.SelectUnseen, schemas.AfterMarkRead)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: conn})
	waitUntil(t, 10*time.Second, "the first cycle", func() bool {
		st, _ := rt.Status.Get(route.Name)
		return st.State == schemas.StateIdle
	})
	srv.append(t, "INBOX", testMail(1, ""), imap.FlagSeen)
	srv.append(t, "INBOX", testMail(2, ""))
	srv.append(t, "INBOX", testMail(3, ""), imap.FlagSeen)
	st := waitRouteIdle(t, rt, route.Name, 3)
	// Two more polls: the skipped are not counted again.
	polled := st.LastPollAt
	for range 2 {
		waitUntil(t, 10*time.Second, "another poll", func() bool {
			s, _ := rt.Status.Get(route.Name)
			return s.State == schemas.StateIdle && s.LastPollAt != nil && s.LastPollAt.After(*polled)
		})
		s, _ := rt.Status.Get(route.Name)
		polled = s.LastPollAt
	}
	st, _ = rt.Status.Get(route.Name)
	if got := uidsOf(busEvents(t, n, 1, route.Name)); !slices.Equal(got, []uint32{2}) {
		t.Fatalf("events for UIDs %v, want 2", got)
	}
	if st.SkippedSeen != 2 || st.Published != 1 {
		t.Errorf("status %+v: want skippedSeen 2, published 1", st)
	}
	entries := connLogEntries(t, n, rt)
	for _, uid := range []int{1, 3} {
		if !logSays(entries, fmt.Sprintf("UID %d skipped: already read", uid)) {
			t.Errorf("the connection log does not say UID %d was skipped", uid)
		}
	}
}

// failingMove is go-imap's memory server session whose MOVE is refused (a NO without a
// response code: temporary) while fail is set.
type failingMove struct {
	imapserver.SessionIMAP4rev2
	fail *atomic.Bool
}

func (s failingMove) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	if s.fail.Load() {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Text: "the archive is busy, try again later"}
	}
	return s.SessionIMAP4rev2.Move(w, numSet, dest)
}

// TestIMAPFailingMoveOnce (path 7): with the move failing and a duplicate window of 1s,
// each retry published the batch again: 3 mails became 6 events and more. With the
// publish journal, a retry only tries the move again; once it works, the mail is moved
// and still stored once.
func TestIMAPFailingMoveOnce(t *testing.T) {
	n := startBusNATSWindow(t, time.Second)
	var fail atomic.Bool
	fail.Store(true)
	srv := newMemIMAP(testkit.StartIMAP(t, &testkit.IMAPOptions{
		Mailboxes: []string{"INBOX", "Archive"},
		Session: func(_ *imapserver.Conn, s imapserver.Session) imapserver.Session {
			return failingMove{s.(imapserver.SessionIMAP4rev2), &fail}
		},
	}))
	for i := 1; i <= 3; i++ {
		srv.append(t, "INBOX", testMail(i, ""))
	}
	rt := newIMAPRuntime(t, n)
	reg := connector.NewRegistry()
	rt.Metrics = metrics.New(reg)
	route := imapRoute("failing_move", "", schemas.AfterMove)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	// Four sessions failed on the move: with backoff from 0.5s, well past the window.
	waitUntil(t, 60*time.Second, "four failed moves", func() bool {
		v, _ := testkit.MetricValue(testkit.Gather(t, reg), "mailbus_route_reconnects_total", "route="+route.Name)
		return v >= 4
	})
	st, _ := rt.Status.Get(route.Name)
	if !strings.Contains(st.LastError, "after move") {
		t.Errorf("lastError %q, want the failing move", st.LastError)
	}
	if n := storedCount(t, n.js, busNames.BusStream(1), busNames.BusSubject(1, route.Name)); n != 3 {
		t.Fatalf("%d events stored for 3 mails", n)
	}
	if st.Published != 3 || st.Duplicates != 0 {
		t.Errorf("status %+v: want published 3, duplicates 0", st)
	}

	fail.Store(false)
	waitUntil(t, 30*time.Second, "the mail moved", func() bool {
		return len(listMailbox(t, dialPlain(srv.addr), "Archive")) == 3
	})
	if inbox := listMailbox(t, dialPlain(srv.addr), "INBOX"); len(inbox) != 0 {
		t.Errorf("INBOX still holds %d messages", len(inbox))
	}
	if n := storedCount(t, n.js, busNames.BusStream(1), busNames.BusSubject(1, route.Name)); n != 3 {
		t.Errorf("%d events stored for 3 mails", n)
	}
}

// TestIMAPDuplicatesCountedApart: events published again after a crash between their
// acknowledgement and the checkpoint are dropped by the stream, and counted as duplicates,
// not as published, in the status and the metrics. (Before, a republished duplicate
// counted as published: Cyrus showed published 556 for 300 stored events.)
func TestIMAPDuplicatesCountedApart(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAPMail(t, 3, smallMail)
	rt := newIMAPRuntime(t, n)
	route := imapRoute("dups", "", schemas.AfterNone)
	stop := runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	waitRouteIdle(t, rt, route.Name, 3)
	stop()

	// The crash: the events were acknowledged, the checkpoint never moved.
	ctx := context.Background()
	e, err := n.st.State.Get(ctx, bus.RouteKey(route.Name))
	if err != nil {
		t.Fatal(err)
	}
	var cp store.Checkpoint
	if err := json.Unmarshal(e.Value(), &cp); err != nil {
		t.Fatal(err)
	}
	cp.LastUid = 0
	b, _ := json.Marshal(cp)
	if _, err := n.st.State.Put(ctx, bus.RouteKey(route.Name), b); err != nil {
		t.Fatal(err)
	}

	rt2 := newIMAPRuntime(t, n)
	reg := connector.NewRegistry()
	rt2.Metrics = metrics.New(reg)
	runIMAPWorker(t, rt2, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	st := waitRouteIdle(t, rt2, route.Name, 3)
	if st.Published != 0 || st.Duplicates != 3 {
		t.Errorf("status %+v: want published 0, duplicates 3", st)
	}
	if n := storedCount(t, n.js, busNames.BusStream(1), busNames.BusSubject(1, route.Name)); n != 3 {
		t.Errorf("%d events stored, want 3", n)
	}
	byName := testkit.Gather(t, reg)
	pub, _ := testkit.MetricValue(byName, "mailbus_route_events_published_total", "route="+route.Name)
	dup, _ := testkit.MetricValue(byName, "mailbus_route_duplicates_total", "route="+route.Name)
	if pub != 0 || dup != 3 {
		t.Errorf("metrics: published %v, duplicates %v; want 0, 3", pub, dup)
	}
}

// TestRouteDeleteRemovesCheckpoint: route.delete removes the route's checkpoint, so a
// route created again under the name starts afresh.
func TestRouteDeleteRemovesCheckpoint(t *testing.T) {
	s := startService(t, svcConfig(t), nil, nil)
	s.ok("mail.control.connection.put", imapConnection("c1"))
	s.ok("mail.control.route.put", inboxRoute("gone", "c1"))
	ctx := context.Background()
	state, err := s.js.KeyValue(ctx, "mail_state")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := state.Put(ctx, "route.gone", []byte(`{"uidValidity":1,"lastUid":42}`)); err != nil {
		t.Fatal(err)
	}
	s.ok("mail.control.route.delete", map[string]string{"name": "gone"})
	if e, err := state.Get(ctx, "route.gone"); err == nil {
		t.Fatalf("checkpoint still there after route.delete: %s", e.Value())
	}
}

// TestRoutePutSharedMailboxConflict: routes may share a mailbox, but not with a route that
// deletes or moves what it took; such a put is refused naming the other route, and
// changes nothing.
func TestRoutePutSharedMailboxConflict(t *testing.T) {
	s := startService(t, svcConfig(t), nil, nil)
	s.ok("mail.control.connection.put", imapConnection("c1"))
	s.ok("mail.control.connection.put", imapConnection("c2"))
	s.ok("mail.control.route.put", inboxRoute("reader", "c1"))
	s.ok("mail.control.route.put", map[string]any{"name": "reader2", "connection": "c1", "after": "none"})
	before := s.snapshot()
	for _, after := range []string{"move", "delete"} {
		r := map[string]any{"name": "taker", "connection": "c1", "mailbox": "inbox", "after": after}
		if after == "move" {
			r["moveTo"] = "Archive"
		}
		e := s.fail("mail.control.route.put", r, "conflict", "after")
		if !strings.Contains(e.Message, "reader") {
			t.Errorf("after %s: %q does not name the other route", after, e.Message)
		}
	}
	if after := s.snapshot(); after != before {
		t.Errorf("a refused put changed the bucket:\n%s\n%s", before, after)
	}
	// Another mailbox, or another connection: fine.
	s.ok("mail.control.route.put", map[string]any{"name": "taker", "connection": "c1", "mailbox": "Other", "after": "delete"})
	s.ok("mail.control.route.put", map[string]any{"name": "taker2", "connection": "c2", "after": "delete"})
	// And the other way round: a reader on a mailbox a route deletes from.
	e := s.fail("mail.control.route.put", map[string]any{"name": "late", "connection": "c2"}, "conflict", "mailbox")
	if !strings.Contains(e.Message, "taker2") {
		t.Errorf("%q does not name the other route", e.Message)
	}

	// definitions.apply checks the same, against the stored routes and within the request.
	before = s.snapshot()
	e = s.fail("mail.control.definitions.apply", map[string]any{"routes": []map[string]any{
		{"name": "reader", "connection": "c1"},
		{"name": "bulk_taker", "connection": "c1", "after": "delete"},
	}}, "conflict", "routes[1].after")
	if !strings.Contains(e.Message, "reader") {
		t.Errorf("apply: %q does not name the other route", e.Message)
	}
	s.fail("mail.control.definitions.apply", map[string]any{"routes": []map[string]any{
		{"name": "c3_a", "connection": "c2", "mailbox": "Shared", "after": "move", "moveTo": "Done"},
		{"name": "c3_b", "connection": "c2", "mailbox": "Shared"},
	}}, "conflict", "routes[0].after")
	if after := s.snapshot(); after != before {
		t.Errorf("a refused apply changed the bucket:\n%s\n%s", before, after)
	}
}

// TestIMAPLegacyCheckpointAdopted: a checkpoint written before checkpoints recorded their
// source is taken as the route's own, not reset: an upgrade publishes nothing again.
func TestIMAPLegacyCheckpointAdopted(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAPMail(t, 3, smallMail)
	ctx := context.Background()
	if _, err := n.st.State.Put(ctx, bus.RouteKey("legacy"), []byte(`{"uidValidity":1,"lastUid":2}`)); err != nil {
		t.Fatal(err)
	}
	rt := newIMAPRuntime(t, n)
	route := imapRoute("legacy", "", schemas.AfterNone)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	waitRouteIdle(t, rt, route.Name, 3)
	if got := uidsOf(busEvents(t, n, 1, route.Name)); !slices.Equal(got, []uint32{3}) {
		t.Fatalf("events for UIDs %v, want 3 only", got)
	}
	e, err := n.st.State.Get(ctx, bus.RouteKey("legacy"))
	if err != nil {
		t.Fatal(err)
	}
	var cp store.Checkpoint
	if err := json.Unmarshal(e.Value(), &cp); err != nil || cp.Source == nil || cp.Source.Mailbox != "INBOX" || cp.Source.User != "alice" {
		t.Errorf("checkpoint %s: want its source recorded", e.Value())
	}
}
