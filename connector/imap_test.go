package connector_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/schemas"
)

// TestIMAPCycle runs the whole cycle for each select and after: three messages (the second
// already seen) are in the mailbox when the route starts, a fourth arrives while it idles.
// With select all the route takes its backlog all too.
func TestIMAPCycle(t *testing.T) {
	for _, sel := range []string{schemas.SelectUnseen, schemas.SelectAll} {
		for _, after := range []string{schemas.AfterMarkRead, schemas.AfterNone, schemas.AfterDelete, schemas.AfterMove} {
			t.Run(sel+"/"+after, func(t *testing.T) {
				t.Parallel()
				n := startBusNATS(t)
				srv := startMemIMAP(t, memCaps...)
				if err := srv.user.Create("Archive", nil); err != nil {
					t.Fatalf("Create(Archive) = %v", err)
				}
				srv.append(t, "INBOX", testMail(1, ""))
				srv.append(t, "INBOX", testMail(2, ""), imap.FlagSeen)
				srv.append(t, "INBOX", testMail(3, ""))
				rt := newIMAPRuntime(t, n)
				route := imapRoute("r_"+sel+"_"+after, sel, after)
				if sel == schemas.SelectAll {
					route.Backlog = schemas.BacklogAll
				}
				runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
				waitRouteIdle(t, rt, route.Name, 3)
				srv.append(t, "INBOX", testMail(4, ""))
				st := waitRouteIdle(t, rt, route.Name, 4)

				want := []uint32{1, 3, 4}
				if sel == schemas.SelectAll {
					want = []uint32{1, 2, 3, 4}
				}
				evs := busEvents(t, n, 1, route.Name)
				var got []uint32
				for _, ev := range evs {
					got = append(got, ev.Uid)
					wantID := fmt.Sprintf("c1/INBOX/%d/%d", ev.UidValidity, ev.Uid)
					if ev.Id != wantID || ev.Route != route.Name || ev.Connection != "c1" || ev.Bus != 1 || ev.Mailbox != "INBOX" {
						t.Errorf("event %d: Id %q Route %q Connection %q Bus %d Mailbox %q", ev.Uid, ev.Id, ev.Route, ev.Connection, ev.Bus, ev.Mailbox)
					}
					if ev.Subject != fmt.Sprintf("test %d", ev.Uid) || ev.ReceivedAt == nil {
						t.Errorf("event %d: Subject %q ReceivedAt %v", ev.Uid, ev.Subject, ev.ReceivedAt)
					}
				}
				if !slices.Equal(got, want) {
					t.Fatalf("events for UIDs %v, want %v", got, want)
				}
				if st.Published != uint64(len(want)) || st.Owner != "test-replica" || st.LastSuccessAt == nil || st.LastPollAt == nil {
					t.Errorf("status = %+v", st)
				}

				inbox := listMailbox(t, dialPlain(srv.addr), "INBOX")
				archive := listMailbox(t, dialPlain(srv.addr), "Archive")
				published := func(uid imap.UID) bool { return slices.Contains(want, uint32(uid)) }
				switch after {
				case schemas.AfterMarkRead:
					if len(inbox) != 4 {
						t.Fatalf("INBOX has %d messages, want 4", len(inbox))
					}
					for _, m := range inbox {
						if !hasIMAPFlag(m.flags, imap.FlagSeen) {
							t.Errorf("UID %d not \\Seen", m.uid)
						}
					}
				case schemas.AfterNone:
					for _, m := range inbox {
						if seen := hasIMAPFlag(m.flags, imap.FlagSeen); seen != (m.uid == 2) {
							t.Errorf("UID %d: \\Seen %v", m.uid, seen)
						}
					}
				case schemas.AfterDelete, schemas.AfterMove:
					for _, m := range inbox {
						if published(m.uid) {
							t.Errorf("UID %d still in INBOX", m.uid)
						}
					}
					if len(inbox) != 4-len(want) {
						t.Errorf("INBOX has %d messages, want %d", len(inbox), 4-len(want))
					}
					wantArchive := 0
					if after == schemas.AfterMove {
						wantArchive = len(want)
					}
					if len(archive) != wantArchive {
						t.Errorf("Archive has %d messages, want %d", len(archive), wantArchive)
					}
				}
			})
		}
	}
}

// TestIMAPEventHeaders checks the wire form: Msg-Id, content type and CloudEvents headers.
func TestIMAPEventHeaders(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAP(t, memCaps...)
	srv.append(t, "INBOX", testMail(1, ""))
	rt := newIMAPRuntime(t, n)
	route := imapRoute("hdrs", schemas.SelectUnseen, schemas.AfterMarkRead)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	waitRouteIdle(t, rt, route.Name, 1)
	msgs := storedMsgs(t, n.js, busNames.BusStream(1), busNames.BusSubject(1, route.Name))
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	var ev schemas.Event
	if err := json.Unmarshal(msgs[0].Data, &ev); err != nil {
		t.Fatal(err)
	}
	h := msgs[0].Header
	for k, want := range map[string]string{
		"Nats-Msg-Id": ev.Route + "/" + ev.Id, "Content-Type": "application/json", "ce-specversion": "1.0",
		"ce-id": ev.Id, "ce-type": "mail.received", "ce-source": "mailbus/c1/INBOX",
		"ce-time": ev.ReceivedAt.Format(time.RFC3339),
	} {
		if got := h.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
}

// TestIMAPIdleDelivery: with IDLE, new mail becomes an event at once, not at the next poll
// (an hour away).
func TestIMAPIdleDelivery(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAP(t, memCaps...)
	rt := newIMAPRuntime(t, n)
	route := imapRoute("idle", schemas.SelectUnseen, schemas.AfterMarkRead)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	waitRouteIdle(t, rt, route.Name, 0)
	time.Sleep(100 * time.Millisecond) // let IDLE start
	for i := 1; i <= 3; i++ {
		start := time.Now()
		srv.append(t, "INBOX", testMail(i, ""))
		subj := busNames.BusSubject(1, route.Name)
		waitUntil(t, 5*time.Second, "event after APPEND", func() bool {
			return storedCount(t, n.js, busNames.BusStream(1), subj) == uint64(i)
		})
		t.Logf("APPEND to event: %s", time.Since(start))
		waitRouteIdle(t, rt, route.Name, uint32(i))
	}
}

// TestIMAPOrdering: events are stored in UID order, across batches.
func TestIMAPOrdering(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAP(t, memCaps...)
	const total = 600 // more than two FETCH batches
	for i := 1; i <= total; i++ {
		srv.append(t, "INBOX", testMail(i, ""))
	}
	rt := newIMAPRuntime(t, n)
	route := imapRoute("order", schemas.SelectUnseen, schemas.AfterMarkRead)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	waitRouteIdle(t, rt, route.Name, total)
	evs := busEvents(t, n, 1, route.Name)
	if len(evs) != total {
		t.Fatalf("%d events, want %d", len(evs), total)
	}
	for i, ev := range evs {
		if ev.Uid != uint32(i+1) {
			t.Fatalf("event %d has UID %d, want %d", i, ev.Uid, i+1)
		}
	}
}

// TestIMAPDeadLetter: a message the mapping rejects goes to mail.dead.<route> with its raw
// copy, counts as processed (marked read, checkpoint past it) and does not block the next.
func TestIMAPDeadLetter(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAP(t, memCaps...)
	bad := []byte("this is not a mail message at all\r\nno header here\r\n")
	srv.append(t, "INBOX", testMail(1, ""))
	srv.append(t, "INBOX", bad)
	srv.append(t, "INBOX", testMail(3, ""))
	rt := newIMAPRuntime(t, n)
	route := imapRoute("dead", schemas.SelectUnseen, schemas.AfterMarkRead)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	st := waitRouteIdle(t, rt, route.Name, 3)
	if st.Published != 2 || st.DeadLettered != 1 {
		t.Errorf("published %d, dead-lettered %d, want 2, 1", st.Published, st.DeadLettered)
	}
	evs := busEvents(t, n, 1, route.Name)
	if len(evs) != 2 || evs[0].Uid != 1 || evs[1].Uid != 3 {
		t.Fatalf("events %+v", evs)
	}
	dead := storedMsgs(t, n.js, busNames.DeadStream(), busNames.DeadSubject(route.Name))
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dead))
	}
	var d bus.DeadLetter
	if err := json.Unmarshal(dead[0].Data, &d); err != nil {
		t.Fatal(err)
	}
	if d.Route != route.Name || d.Connection != "c1" || d.Mailbox != "INBOX" || d.Uid != 2 || d.UidValidity == 0 || d.Error == "" || d.RawRef == nil {
		t.Fatalf("dead letter %+v", d)
	}
	if id := dead[0].Header.Get("Nats-Msg-Id"); id != fmt.Sprintf("dead/%s/c1/INBOX/%d/2", route.Name, d.UidValidity) {
		t.Errorf("dead letter Msg-Id %q", id)
	}
	// The raw copy is what the server serves as BODY[] (go-imap's memory server serves
	// nothing for a message without a header; Dovecot serves the bytes).
	raw, err := n.st.Objects.GetBytes(context.Background(), d.RawRef.Object)
	if want := serverBody(t, dialPlain(srv.addr), "INBOX", 2); err != nil || string(raw) != string(want) {
		t.Errorf("raw copy = %q, %v; want %q", raw, err, want)
	}
	for _, m := range listMailbox(t, dialPlain(srv.addr), "INBOX") {
		if !hasIMAPFlag(m.flags, imap.FlagSeen) {
			t.Errorf("UID %d not \\Seen", m.uid)
		}
	}
}

// TestIMAPLargeAttachment: an attachment over MaxInlineBytes goes to the object store and
// the event points at it; includeRaw stores the raw message and sets RawRef.
func TestIMAPLargeAttachment(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAP(t, memCaps...)
	content := make([]byte, 300<<10)
	for i := range content {
		content[i] = byte(i*7 + i/1000)
	}
	raw := mimeWithAttachment("report.bin", content)
	srv.append(t, "INBOX", raw)
	rt := newIMAPRuntime(t, n)
	rt.MaxInlineBytes = 1024
	route := imapRoute("large", schemas.SelectUnseen, schemas.AfterMarkRead)
	route.IncludeRaw = true
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	waitRouteIdle(t, rt, route.Name, 1)
	evs := busEvents(t, n, 1, route.Name)
	if len(evs) != 1 || len(evs[0].Attachments) != 1 {
		t.Fatalf("events %+v", evs)
	}
	ev := evs[0]
	a := ev.Attachments[0]
	if a.ContentRef == nil || a.Content != nil || a.ContentRef.Bucket != "mail_attachments" {
		t.Fatalf("attachment %+v", a)
	}
	if want := ev.Route + "/" + ev.Id + "/att-0"; a.ContentRef.Object != want {
		t.Errorf("object %q, want %q", a.ContentRef.Object, want)
	}
	stored, err := n.st.Objects.GetBytes(context.Background(), a.ContentRef.Object)
	if err != nil {
		t.Fatalf("GetBytes(%s) = %v", a.ContentRef.Object, err)
	}
	sum := sha256.Sum256(stored)
	if hex.EncodeToString(sum[:]) != a.Sha256 || string(stored) != string(content) {
		t.Errorf("stored attachment: sha256 %x, event says %s", sum, a.Sha256)
	}
	if ev.RawRef == nil || ev.RawRef.Object != ev.Route+"/"+ev.Id+"/raw" {
		t.Fatalf("RawRef = %+v", ev.RawRef)
	}
	gotRaw, err := n.st.Objects.GetBytes(context.Background(), ev.RawRef.Object)
	if err != nil || string(gotRaw) != string(raw) {
		t.Errorf("raw object: %d bytes, %v; want %d bytes", len(gotRaw), err, len(raw))
	}
}

// TestIMAPOversizeEvent: an event above the NATS max payload with everything inline has its
// inline content moved out until it fits.
func TestIMAPOversizeEvent(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAP(t, memCaps...)
	content := make([]byte, 3<<20)
	for i := range content {
		content[i] = byte(i)
	}
	var parts []string
	for i := range 4 { // 4 x 3 MiB inline (base64 in JSON: 16 MiB) > 8 MiB max payload
		parts = append(parts, attachmentPart(fmt.Sprintf("part%d.bin", i), content))
	}
	srv.append(t, "INBOX", multipart(parts...))
	rt := newIMAPRuntime(t, n)
	rt.MaxInlineBytes = 4 << 20
	route := imapRoute("oversize", schemas.SelectUnseen, schemas.AfterMarkRead)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	waitRouteIdle(t, rt, route.Name, 1)
	evs := busEvents(t, n, 1, route.Name)
	if len(evs) != 1 || len(evs[0].Attachments) != 4 {
		t.Fatalf("%d events", len(evs))
	}
	moved := 0
	for _, a := range evs[0].Attachments {
		if a.ContentRef != nil {
			moved++
			stored, err := n.st.Objects.GetBytes(context.Background(), a.ContentRef.Object)
			if err != nil || len(stored) != len(content) {
				t.Errorf("object %s: %d bytes, %v", a.ContentRef.Object, len(stored), err)
			}
		}
	}
	if moved == 0 || moved == 4 {
		t.Errorf("%d of 4 attachments moved out, want some", moved)
	}
}

// TestIMAPCheckpointAfterRestart: a new worker starts where the last one stopped and does
// not publish (even deduplicated) what was done.
func TestIMAPCheckpointAfterRestart(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAPMail(t, 3, smallMail)
	route := imapRoute("restart", schemas.SelectAll, schemas.AfterNone)
	spec := engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)}
	rt := newIMAPRuntime(t, n)
	stop := runIMAPWorker(t, rt, spec)
	waitRouteIdle(t, rt, route.Name, 3)
	stop()

	srv.append(t, "INBOX", testMail(4, ""))
	rt2 := newIMAPRuntime(t, n)
	runIMAPWorker(t, rt2, spec)
	st := waitRouteIdle(t, rt2, route.Name, 4)
	if st.Published != 1 {
		t.Errorf("second worker published %d, want 1", st.Published)
	}
	if evs := busEvents(t, n, 1, route.Name); len(evs) != 4 {
		t.Errorf("%d events, want 4", len(evs))
	}
	e, err := n.st.State.Get(context.Background(), "route.restart")
	if err != nil {
		t.Fatal(err)
	}
	var cp store.Checkpoint
	if err := json.Unmarshal(e.Value(), &cp); err != nil || cp.LastUid != 4 || cp.UidValidity != st.UidValidity {
		t.Errorf("checkpoint %s (%v), status uidValidity %d", e.Value(), err, st.UidValidity)
	}
}

// TestIMAPUIDValidityChange: a mailbox recreated (new UIDVALIDITY) resets the checkpoint,
// and its messages are published under new Ids.
func TestIMAPUIDValidityChange(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAP(t, memCaps...)
	srv.append(t, "INBOX", testMail(1, ""))
	srv.append(t, "INBOX", testMail(2, ""))
	route := imapRoute("validity", schemas.SelectAll, schemas.AfterNone)
	spec := engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)}
	rt := newIMAPRuntime(t, n)
	stop := runIMAPWorker(t, rt, spec)
	st1 := waitRouteIdle(t, rt, route.Name, 2)
	stop()

	if err := srv.user.Delete("INBOX"); err != nil {
		t.Fatal(err)
	}
	if err := srv.user.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	srv.append(t, "INBOX", testMail(1, ""))
	rt2 := newIMAPRuntime(t, n)
	runIMAPWorker(t, rt2, spec)
	var st2 schemas.RouteStatus
	waitUntil(t, 10*time.Second, "a cycle in the new generation", func() bool {
		st2, _ = rt2.Status.Get(route.Name)
		return st2.State == schemas.StateIdle && st2.UidValidity != st1.UidValidity && st2.LastUid == 1
	})
	evs := busEvents(t, n, 1, route.Name)
	if len(evs) != 3 {
		t.Fatalf("%d events, want 3", len(evs))
	}
	if last := evs[2]; last.UidValidity != st2.UidValidity || last.Uid != 1 || !strings.HasSuffix(last.Id, fmt.Sprintf("/%d/1", st2.UidValidity)) {
		t.Errorf("event after the change: %+v", last)
	}
}

// TestIMAPPermanentErrors: bad credentials, a missing mailbox and an after action the
// server cannot do park the route in state error with the reason, without the password.
func TestIMAPPermanentErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		caps  []imap.Cap
		edit  func(*engine.RouteSpec)
		wants string
	}{
		{"password", memCaps, func(s *engine.RouteSpec) { s.Connection.Password = "wrong-pass" }, "login"},
		{"mailbox", memCaps, func(s *engine.RouteSpec) { s.Route.Mailbox = "Nope" }, "Nope"},
		{"delete", nil, func(s *engine.RouteSpec) { s.Route.After = schemas.AfterDelete }, "UIDPLUS"},
		{"starttls", memCaps, func(s *engine.RouteSpec) { s.Connection.Encryption = schemas.EncryptionTLS }, "STARTTLS"},
		{"windows", memCaps, func(s *engine.RouteSpec) { s.Connection.Auth = schemas.AuthWindows }, "NTLM"},
		{"oauth2", memCaps, func(s *engine.RouteSpec) { s.Connection.Auth = schemas.AuthOAuth2 }, "oauth2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := startBusNATS(t)
			srv := startMemIMAP(t, tc.caps...)
			rt := newIMAPRuntime(t, n)
			spec := engine.RouteSpec{Route: imapRoute("perm", schemas.SelectUnseen, schemas.AfterMarkRead), Connection: imapConn(srv.addr, schemas.EncryptionNone)}
			tc.edit(&spec)
			runIMAPWorker(t, rt, spec)
			var st schemas.RouteStatus
			waitUntil(t, 10*time.Second, "state error", func() bool {
				st, _ = rt.Status.Get("perm")
				return st.State == schemas.StateError
			})
			if !strings.Contains(st.LastError, tc.wants) || strings.Contains(st.LastError, spec.Connection.Password) {
				t.Errorf("lastError = %q, want it to mention %q and not the password", st.LastError, tc.wants)
			}
		})
	}
}

// TestIMAPMoveWithoutMove: without MOVE, move is COPY + \Deleted + UID EXPUNGE, and a
// message someone else marked \Deleted stays.
func TestIMAPMoveWithoutMove(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAP(t, imap.CapUIDPlus)
	if err := srv.user.Create("Archive", nil); err != nil {
		t.Fatal(err)
	}
	srv.append(t, "INBOX", testMail(1, ""), imap.FlagSeen, imap.FlagDeleted)
	srv.append(t, "INBOX", testMail(2, ""))
	rt := newIMAPRuntime(t, n)
	route := imapRoute("copymove", schemas.SelectUnseen, schemas.AfterMove)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	waitRouteIdle(t, rt, route.Name, 2)
	inbox := listMailbox(t, dialPlain(srv.addr), "INBOX")
	archive := listMailbox(t, dialPlain(srv.addr), "Archive")
	if len(inbox) != 1 || inbox[0].uid != 1 || len(archive) != 1 {
		t.Errorf("INBOX %+v, Archive %+v", inbox, archive)
	}
}

func attachmentPart(name string, content []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=%q\r\nContent-Transfer-Encoding: base64\r\n\r\n", name)
	enc := make([]byte, 0, len(content)*4/3+4)
	enc = appendBase64Lines(enc, content)
	b.Write(enc)
	return b.String()
}

func multipart(parts ...string) []byte {
	var b strings.Builder
	b.WriteString("From: a@example.org\r\nTo: b@example.org\r\nSubject: with attachment\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n\r\n--XYZ\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n")
	for _, p := range parts {
		b.WriteString("--XYZ\r\n" + p + "\r\n")
	}
	b.WriteString("--XYZ--\r\n")
	return []byte(b.String())
}

func mimeWithAttachment(name string, content []byte) []byte {
	return multipart(attachmentPart(name, content))
}
