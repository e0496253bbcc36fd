package connector_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/dovecottest"
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/mapping"
	"github.com/mailbus/mailbus/schemas"
)

// After-actions that cannot destroy mail (docs/after-actions.md), against a Dovecot that
// announces UIDPLUS but no MOVE, as older servers do.

// dovecotSession logs alice in over TLS; the client is closed when the test ends.
func dovecotSession(t *testing.T, srv *dovecottest.Server) *imapclient.Client {
	t.Helper()
	c := loginAlice(t, dovecotTLS(srv))
	t.Cleanup(func() { c.Close() })
	return c
}

func dovecotAppend(t *testing.T, c *imapclient.Client, mailbox string, raw []byte, flags ...imap.Flag) {
	t.Helper()
	cmd := c.Append(mailbox, int64(len(raw)), &imap.AppendOptions{Flags: flags})
	if _, err := cmd.Write(raw); err != nil {
		t.Fatalf("Append().Write() = %v", err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatalf("Append().Close() = %v", err)
	}
	if _, err := cmd.Wait(); err != nil {
		t.Fatalf("Append().Wait() = %v", err)
	}
}

func msgIDs(msgs []mailboxMsg) []string {
	var ids []string
	for _, m := range msgs {
		ids = append(ids, m.msgID)
	}
	slices.Sort(ids)
	return ids
}

// TestIMAPDovecotMoveToMissingFolderWithoutMove: on a server without MOVE, a route whose
// moveTo does not exist is parked in state error naming the folder before it publishes
// anything, and the mailbox keeps every message, none of them flagged \Deleted. (go-imap's
// own fallback sent COPY, STORE \Deleted and UID EXPUNGE back to back: the COPY failed and
// the three messages were gone.)
func TestIMAPDovecotMoveToMissingFolderWithoutMove(t *testing.T) {
	srv := dovecottest.Start(t, &dovecottest.Options{IMAPCapability: dovecottest.WithoutMove})
	n := startBusNATS(t)
	for i := 1; i <= 3; i++ {
		srv.Deliver(t, "alice", testMail(i, ""))
	}
	rt := newIMAPRuntime(t, n)
	rt.TLSRootCAs = srv.CA
	route := imapRoute("nomove", schemas.SelectUnseen, schemas.AfterMove)
	route.MoveTo = "Processed"
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.TLSAddr, schemas.EncryptionSSL)})
	var st schemas.RouteStatus
	waitUntil(t, 20*time.Second, "state error", func() bool {
		st, _ = rt.Status.Get(route.Name)
		return st.State == schemas.StateError
	})
	t.Logf("lastError: %s", st.LastError)
	if !strings.Contains(st.LastError, `"Processed"`) {
		t.Errorf("lastError %q, want it to name the folder", st.LastError)
	}
	if st.Published != 0 || st.DeadLettered != 0 {
		t.Errorf("status published %d, deadLettered %d; want 0, 0", st.Published, st.DeadLettered)
	}
	if got := storedCount(t, n.js, busNames.BusStream(1), busNames.BusSubject(1, route.Name)); got != 0 {
		t.Errorf("%d events stored, want 0", got)
	}
	if got := storedCount(t, n.js, busNames.DeadStream(), busNames.DeadSubject(route.Name)); got != 0 {
		t.Errorf("%d dead letters stored, want 0", got)
	}
	inbox := listMailbox(t, dovecotTLS(srv), "INBOX")
	if len(inbox) != 3 {
		t.Fatalf("INBOX has %d messages, want 3", len(inbox))
	}
	for _, m := range inbox {
		if hasIMAPFlag(m.flags, imap.FlagDeleted) || hasIMAPFlag(m.flags, imap.FlagSeen) {
			t.Errorf("UID %d has flags %v, want none", m.uid, m.flags)
		}
	}
}

// TestIMAPDovecotMoveWithoutMove: on a server without MOVE, a move is UID COPY, then UID
// STORE \Deleted and UID EXPUNGE of exactly the copied messages: the route's three are in
// the folder, and a message someone else flagged \Deleted stays where it was.
func TestIMAPDovecotMoveWithoutMove(t *testing.T) {
	srv := dovecottest.Start(t, &dovecottest.Options{IMAPCapability: dovecottest.WithoutMove})
	n := startBusNATS(t)
	c := dovecotSession(t, srv)
	if err := c.Create("Archive", nil).Wait(); err != nil {
		t.Fatalf("Create().Wait() = %v", err)
	}
	// Read and flagged \Deleted by someone else: select unseen leaves it to them.
	dovecotAppend(t, c, "INBOX", testMail(0, ""), imap.FlagSeen, imap.FlagDeleted)
	for i := 1; i <= 3; i++ {
		dovecotAppend(t, c, "INBOX", testMail(i, ""))
	}
	rt := newIMAPRuntime(t, n)
	rt.TLSRootCAs = srv.CA
	route := imapRoute("copymove", schemas.SelectUnseen, schemas.AfterMove)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.TLSAddr, schemas.EncryptionSSL)})
	waitRouteIdle(t, rt, route.Name, 4)

	inbox := listMailbox(t, dovecotTLS(srv), "INBOX")
	archive := listMailbox(t, dovecotTLS(srv), "Archive")
	if got, want := msgIDs(inbox), []string{"m0@example.org"}; !slices.Equal(got, want) {
		t.Errorf("INBOX holds %q, want %q", got, want)
	}
	if got, want := msgIDs(archive), []string{"m1@example.org", "m2@example.org", "m3@example.org"}; !slices.Equal(got, want) {
		t.Errorf("Archive holds %q, want %q", got, want)
	}
	for _, m := range archive {
		if hasIMAPFlag(m.flags, imap.FlagDeleted) {
			t.Errorf("Archive UID %d is \\Deleted", m.uid)
		}
	}
	if got := storedCount(t, n.js, busNames.BusStream(1), busNames.BusSubject(1, route.Name)); got != 3 {
		t.Errorf("%d events stored, want 3", got)
	}
}

// TestIMAPMoveToMissingFolder: with MOVE too, a route whose moveTo does not exist is parked
// in state error naming the folder before it publishes anything (it used to publish every
// message, fail to move it, and publish it again on each retry).
func TestIMAPMoveToMissingFolder(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAPMail(t, 3, smallMail)
	rt := newIMAPRuntime(t, n)
	route := imapRoute("missing", schemas.SelectUnseen, schemas.AfterMove)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	var st schemas.RouteStatus
	waitUntil(t, 10*time.Second, "state error", func() bool {
		st, _ = rt.Status.Get(route.Name)
		return st.State == schemas.StateError
	})
	if !strings.Contains(st.LastError, `moveTo folder "Archive"`) {
		t.Errorf("lastError %q, want it to name the folder", st.LastError)
	}
	if got := storedCount(t, n.js, busNames.BusStream(1), busNames.BusSubject(1, route.Name)); got != 0 || st.Published != 0 {
		t.Errorf("%d events stored, status published %d; want 0, 0", got, st.Published)
	}
	if inbox := listMailbox(t, dialPlain(srv.addr), "INBOX"); len(inbox) != 3 {
		t.Errorf("INBOX has %d messages, want 3", len(inbox))
	}
}

// nilBodyProxy forwards IMAP connections to target and rewrites what the server says of
// one message: "BODY[] {n}" followed by its exact bytes becomes "BODY[] NIL", as a server
// says of a message it cannot read (a damaged file on its disk).
func nilBodyProxy(t *testing.T, target string, raw []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	old := append([]byte(fmt.Sprintf("BODY[] {%d}\r\n", len(raw))), raw...)
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer client.Close()
				server, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer server.Close()
				go func() { io.Copy(server, client); server.Close() }()
				replaceStream(client, server, old, []byte("BODY[] NIL"))
			}()
		}
	}()
	return ln.Addr().String()
}

// replaceStream copies src to dst with every old replaced by new, holding back only the
// end of what it read that may be the start of old, so that nothing else waits.
func replaceStream(dst io.Writer, src io.Reader, old, new []byte) {
	var buf []byte
	chunk := make([]byte, 32<<10)
	for {
		n, err := src.Read(chunk)
		buf = bytes.ReplaceAll(append(buf, chunk[:n]...), old, new)
		keep := 0
		for k := min(len(old)-1, len(buf)); k > 0; k-- {
			if bytes.HasSuffix(buf, old[:k]) {
				keep = k
				break
			}
		}
		if _, werr := dst.Write(buf[:len(buf)-keep]); werr != nil {
			return
		}
		buf = append(buf[:0], buf[len(buf)-keep:]...)
		if err != nil {
			dst.Write(buf)
			return
		}
	}
}

func deadLetters(t *testing.T, n *busNATS, route string) []bus.DeadLetter {
	t.Helper()
	var out []bus.DeadLetter
	for _, m := range storedMsgs(t, n.js, busNames.DeadStream(), busNames.DeadSubject(route)) {
		var d bus.DeadLetter
		if err := json.Unmarshal(m.Data, &d); err != nil {
			t.Fatalf("dead letter %s: %v", m.Data, err)
		}
		out = append(out, d)
	}
	return out
}

func objectBytes(t *testing.T, n *busNATS, ref *schemas.ObjectRef) []byte {
	t.Helper()
	if ref == nil {
		t.Fatal("no object reference")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := n.st.Objects.GetBytes(ctx, ref.Object)
	if err != nil {
		t.Fatalf("GetBytes(%s) = %v", ref.Object, err)
	}
	return b
}

// TestIMAPNilBodyLeftAlone: a message the server returns with a NIL body becomes a dead
// letter without a raw copy, and after delete leaves it in the mailbox untouched (it used
// to be expunged: the mailbox held its only copy). The others are deleted as usual.
func TestIMAPNilBodyLeftAlone(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAPMail(t, 3, smallMail)
	rt := newIMAPRuntime(t, n)
	route := imapRoute("nilbody", schemas.SelectUnseen, schemas.AfterDelete)
	addr := nilBodyProxy(t, srv.addr, testMail(2, ""))
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(addr, schemas.EncryptionNone)})
	st := waitRouteIdle(t, rt, route.Name, 3)

	subjects := subjectsOf(busEvents(t, n, 1, route.Name))
	if want := []string{"test 1", "test 3"}; !slices.Equal(subjects, want) {
		t.Errorf("events %q, want %q", subjects, want)
	}
	dead := deadLetters(t, n, route.Name)
	if len(dead) != 1 || dead[0].Uid != 2 || dead[0].RawRef != nil || !strings.Contains(dead[0].Error, "neither deleted nor moved") {
		t.Errorf("dead letters %+v, want one for UID 2 without RawRef, saying it is neither deleted nor moved", dead)
	}
	if st.Published != 2 || st.DeadLettered != 1 {
		t.Errorf("status published %d, deadLettered %d; want 2, 1", st.Published, st.DeadLettered)
	}
	inbox := listMailbox(t, dialPlain(srv.addr), "INBOX")
	if len(inbox) != 1 || inbox[0].uid != 2 || len(inbox[0].flags) != 0 {
		t.Errorf("INBOX %+v, want UID 2 alone, without flags", inbox)
	}
}

// panicky is a mapping that panics on a message with an X-Mapping-Panic header, as a bug
// would on input nobody foresaw; others it maps as usual.
func panicky(r io.Reader, opts *mapping.Options) (*mapping.Result, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if bytes.Contains(raw, []byte("X-Mapping-Panic: yes")) {
		var m map[string]int
		m["boom"]++ // a nil map: a real runtime panic
	}
	return mapping.MapMessage(bytes.NewReader(raw), opts)
}

// TestIMAPPanicDeadLetter: a message whose mapping panics becomes a dead letter with its
// raw copy (it used to become an event with a warning); with the copy stored, the after
// action applies to it like to any dead letter.
func TestIMAPPanicDeadLetter(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAP(t, memCaps...)
	bad := testMail(2, "X-Mapping-Panic: yes\r\n")
	srv.append(t, "INBOX", testMail(1, ""))
	srv.append(t, "INBOX", bad)
	srv.append(t, "INBOX", testMail(3, ""))
	rt := newIMAPRuntime(t, n)
	connector.SetMapping(rt, panicky)
	route := imapRoute("panics", schemas.SelectUnseen, schemas.AfterDelete)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	waitRouteIdle(t, rt, route.Name, 3)

	subjects := subjectsOf(busEvents(t, n, 1, route.Name))
	if want := []string{"test 1", "test 3"}; !slices.Equal(subjects, want) {
		t.Errorf("events %q, want %q", subjects, want)
	}
	dead := deadLetters(t, n, route.Name)
	if len(dead) != 1 || dead[0].Uid != 2 || !strings.Contains(dead[0].Error, "internal error") {
		t.Fatalf("dead letters %+v, want one for UID 2 naming the internal error", dead)
	}
	if got := objectBytes(t, n, dead[0].RawRef); !bytes.Equal(got, bad) {
		t.Errorf("raw copy %q, want %q", got, bad)
	}
	if inbox := listMailbox(t, dialPlain(srv.addr), "INBOX"); len(inbox) != 0 {
		t.Errorf("INBOX %+v, want empty", inbox)
	}
}

// truncatedNested is a nested multipart whose text part has a line that is the outer
// boundary with trailing blanks: RFC 2046 makes that line a delimiter of the outer
// multipart, so the inner ones end there without their closing delimiters.
var truncatedNested = []byte(strings.ReplaceAll(`From: Sender <sender@example.org>
To: bot@example.com
Subject: nested
Message-ID: <nested@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: multipart/alternative; boundary="inner"

--inner
Content-Type: multipart/related; boundary="third"

--third
Content-Type: text/plain

hello
--outer  
after the line
--third--
--inner
Content-Type: text/html

<p>html</p>
--inner--
--outer
Content-Type: application/pdf; name=a.pdf

PDF
--outer--
`, "\n", "\r\n"))

// TestIMAPPartialRawRef: an event that keeps only part of its message carries RawRef to
// the whole raw message, although the route does not ask for includeRaw (it used to carry
// nothing, and the rest was gone).
func TestIMAPPartialRawRef(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAP(t, memCaps...)
	srv.append(t, "INBOX", testMail(1, ""))
	srv.append(t, "INBOX", truncatedNested)
	rt := newIMAPRuntime(t, n)
	route := imapRoute("partial", schemas.SelectUnseen, schemas.AfterDelete)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	waitRouteIdle(t, rt, route.Name, 2)

	evs := busEvents(t, n, 1, route.Name)
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2", len(evs))
	}
	if evs[0].RawRef != nil {
		t.Errorf("whole message: RawRef %+v, want none (includeRaw is off)", evs[0].RawRef)
	}
	if got := objectBytes(t, n, evs[1].RawRef); !bytes.Equal(got, truncatedNested) {
		t.Errorf("raw copy %q, want the whole message", got)
	}
	if len(evs[1].Warnings) == 0 {
		t.Errorf("partial event without warnings")
	}
	if inbox := listMailbox(t, dialPlain(srv.addr), "INBOX"); len(inbox) != 0 {
		t.Errorf("INBOX %+v, want empty", inbox)
	}
}
