package connector_test

import (
	"bytes"
	"fmt"
	"mime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mailbus/mailbus/connector/dovecottest"
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/schemas"
)

// The two routes of a shared mailbox. invoices takes mail from the billing system whose
// subject says Счёт (non-ASCII: SEARCH CHARSET UTF-8); support takes mail to support@ that
// carries X-Priority-Tag high.
var (
	invoicesFilter = &schemas.RouteFilter{From: "@billing.example", Subject: "счёт"}
	supportFilter  = &schemas.RouteFilter{To: "support@", Headers: []schemas.FilterHeader{{Name: "X-Priority-Tag", Contains: "high"}}}
)

// filterMail is one message of the shared mailbox and the routes it must reach.
type filterMail struct {
	from, to, subject, extra string
	routes                   []string
}

func (m filterMail) raw(n int) []byte {
	return []byte(fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <f%d@example.org>\r\n%s"+
		"Content-Type: text/plain; charset=utf-8\r\n\r\nbody of message %d\r\n", m.from, m.to, m.subject, n, m.extra, n))
}

func bq(s string) string { return mime.BEncoding.Encode("UTF-8", s) }

// sharedMail is the mailbox: every combination of matching both routes, one, or none,
// with near misses (one condition of two), case differences and encoded subjects.
var sharedMail = []filterMail{
	{"Billing <billing@billing.example>", "accounts@example.com", bq("Счёт №1"), "", []string{"invoices"}},
	{"customer@example.net", "Support <support@example.com>", "Help please", "X-Priority-Tag: High\r\n", []string{"support"}},
	{"billing@billing.example", "support@example.com", bq("Ваш СЧЁТ №3 и вопрос"), "X-Priority-Tag: HIGH\r\n", []string{"invoices", "support"}},
	{"billing@billing.example", "accounts@example.com", "Newsletter", "", nil},                      // from, not subject
	{"someone@example.net", "support@example.com", bq("Счёт от поставщика"), "", nil},               // subject, not from; no tag
	{"customer@example.net", "support@example.com", "Low priority", "X-Priority-Tag: low\r\n", nil}, // tag, not high
	{"Billing <BILLING@Billing.Example>", "accounts@example.com", bq("СЧЁТ №7"), "", []string{"invoices"}},
	{"customer@example.net", "sales@example.com", "Urgent", "X-Priority-Tag: high\r\n", nil},                               // tag, not to support
	{"billing@billing.example", "accounts@example.com", "=?KOI8-R?B?896j1CAxMCAoS09JOC1SKQ==?=", "", []string{"invoices"}}, // another charset
}

// lateMail arrives while the routes run (IDLE).
var lateMail = []filterMail{
	{"billing@billing.example", "accounts@example.com", bq("Счёт №9"), "", []string{"invoices"}},
	{"nobody@example.net", "nobody@example.com", "Spam", "", nil},
}

// filterServer is the mailbox under test: deliver a message, list the mailbox.
type filterServer struct {
	conn    schemas.Connection
	dial    func() (*imapclient.Client, error)
	deliver func(t testing.TB, raw []byte)
	rootCAs *dovecottest.Server
	// bodies returns the UIDs whose whole message a client fetched (nil: not known).
	bodies func() []imap.UID
	rec    *fetchRecorder
	warm   func() // readies the server before a benchmark's clock starts (nil: nothing)
}

// TestIMAPFilterTwoRoutesMem runs the shared mailbox against go-imap's in-memory server,
// which records every FETCH: the body of mail no route's filter matches is never fetched.
func TestIMAPFilterTwoRoutesMem(t *testing.T) {
	runFilterTwoRoutes(t, memFilterServer(t, false))
}

// TestIMAPFilterTwoRoutesNoUTF8Search: the same against a server that refuses SEARCH
// CHARSET UTF-8 (BADCHARSET). The ASCII conditions are still searched by the server, the
// rest checked by mailbus on the header alone.
func TestIMAPFilterTwoRoutesNoUTF8Search(t *testing.T) {
	srv := memFilterServer(t, true)
	runFilterTwoRoutes(t, srv)
	srv.rec.mu.Lock()
	defer srv.rec.mu.Unlock()
	if srv.rec.utf8Refused == 0 {
		t.Errorf("no search was refused for its charset: the fallback was not exercised")
	}
}

// TestIMAPFilterTwoRoutesDovecot: the same against Dovecot (MAILBUS_TEST_DOVECOT=1).
func TestIMAPFilterTwoRoutesDovecot(t *testing.T) {
	srv := dovecottest.Start(t, nil)
	runFilterTwoRoutes(t, &filterServer{
		conn: imapConn(srv.TLSAddr, schemas.EncryptionSSL), dial: dovecotTLS(srv), rootCAs: srv,
		deliver: func(t testing.TB, raw []byte) { srv.Deliver(t, "alice", raw) },
	})
}

// runFilterTwoRoutes runs two routes with different filters on one shared mailbox, both
// on bus 1. Both select all, take all the backlog and mark read: a route that took unseen
// mail only would miss a message the other route matched and marked read first (message 3
// matches both), whether it was there before the route's first start (backlog) or arrived
// after it (select).
// Every message must reach exactly the routes whose filter it matches; mail that matches
// none is left unread, and each route counts what it passed over.
func runFilterTwoRoutes(t *testing.T, srv *filterServer) {
	n := startBusNATS(t)
	for i, m := range sharedMail {
		srv.deliver(t, m.raw(i+1))
	}
	rt := newIMAPRuntime(t, n)
	if srv.rootCAs != nil {
		rt.TLSRootCAs = srv.rootCAs.CA
	}
	routes := map[string]*schemas.RouteFilter{"invoices": invoicesFilter, "support": supportFilter}
	for name, f := range routes {
		r := imapRoute(name, schemas.SelectAll, schemas.AfterMarkRead)
		r.Backlog = schemas.BacklogAll
		r.Filter = f
		runIMAPWorker(t, rt, engine.RouteSpec{Route: r, Connection: srv.conn})
	}
	all := sharedMail
	check := func() {
		t.Helper()
		for name := range routes {
			st := waitRouteIdle(t, rt, name, uint32(len(all)))
			var want []string
			for i, m := range all {
				if slices.Contains(m.routes, name) {
					want = append(want, fmt.Sprintf("<f%d@example.org>", i+1))
				}
			}
			var got []string
			for _, ev := range busEvents(t, n, 1, name) {
				got = append(got, ev.MessageId)
			}
			if !slices.Equal(got, want) {
				t.Errorf("route %s: events %q, want %q", name, got, want)
			}
			if wantFiltered := uint64(len(all) - len(want)); st.Filtered != wantFiltered || st.LastUid != uint32(len(all)) {
				t.Errorf("route %s: filtered %d, lastUid %d; want %d, %d", name, st.Filtered, st.LastUid, wantFiltered, len(all))
			}
		}
		byMsgID := map[string]mailboxMsg{}
		for _, m := range listMailbox(t, srv.dial, "INBOX") {
			byMsgID[m.msgID] = m
		}
		for i, m := range all {
			id := fmt.Sprintf("f%d@example.org", i+1)
			got, ok := byMsgID[id]
			if !ok {
				t.Errorf("message %d is gone from the mailbox", i+1)
				continue
			}
			if seen := hasIMAPFlag(got.flags, imap.FlagSeen); seen != (len(m.routes) > 0) {
				t.Errorf("message %d (routes %v): \\Seen %t", i+1, m.routes, seen)
			}
			// The record must see the bodies that were fetched, or it proves nothing.
			if srv.bodies != nil && slices.Contains(srv.bodies(), got.uid) != (len(m.routes) > 0) {
				t.Errorf("message %d (routes %v): body fetched %t", i+1, m.routes, !(len(m.routes) > 0))
			}
		}
	}
	check()

	// Mail that arrives later: the checkpoint moved past the mail passed over, which is
	// neither taken nor counted again.
	time.Sleep(200 * time.Millisecond)
	for i, m := range lateMail {
		srv.deliver(t, m.raw(len(all)+i+1))
	}
	all = append(slices.Clip(all), lateMail...)
	check()
}

// memFilterServer is go-imap's in-memory server behind a session that records the UIDs of
// every FETCH of a whole message and, with noUTF8, refuses a SEARCH with other than ASCII.
func memFilterServer(t testing.TB, noUTF8 bool) *filterServer {
	rec := &fetchRecorder{}
	srv := testkit.StartIMAP(t, &testkit.IMAPOptions{Session: func(_ *imapserver.Conn, s imapserver.Session) imapserver.Session {
		return &filterSession{SessionMove: s.(imapserver.SessionMove), rec: rec, noUTF8: noUTF8}
	}})
	return &filterServer{
		conn: imapConn(srv.Addr, schemas.EncryptionNone), dial: dialPlain(srv.Addr),
		deliver: func(t testing.TB, raw []byte) {
			srv.Append(t, "alice", "INBOX", raw)
		},
		bodies: rec.uids, rec: rec,
	}
}

type fetchRecorder struct {
	mu     sync.Mutex
	bodies []imap.UID
	// utf8Refused counts the searches refused for their charset.
	utf8Refused int
}

func (r *fetchRecorder) uids() []imap.UID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.bodies)
}

type filterSession struct {
	imapserver.SessionMove
	rec    *fetchRecorder
	noUTF8 bool
}

func (s *filterSession) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	if s.noUTF8 {
		for _, h := range criteria.Header {
			if !isASCII(h.Value) {
				s.rec.mu.Lock()
				s.rec.utf8Refused++
				s.rec.mu.Unlock()
				return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeBadCharset, Text: "only US-ASCII"}
			}
		}
	}
	return s.SessionMove.Search(kind, criteria, options)
}

func (s *filterSession) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	whole := false
	for _, b := range options.BodySection {
		if b.Specifier == imap.PartSpecifierNone && len(b.Part) == 0 {
			whole = true
		}
	}
	if set, ok := numSet.(imap.UIDSet); ok && whole {
		if uids, ok := set.Nums(); ok {
			s.rec.mu.Lock()
			s.rec.bodies = append(s.rec.bodies, uids...)
			s.rec.mu.Unlock()
		}
	}
	return s.SessionMove.Fetch(w, numSet, options)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// TestIMAPFilterDatesAndSizes: since, before, minSize and maxSize, each bound inclusive
// where the contract says so, against the in-memory server (INTERNALDATE set by APPEND).
func TestIMAPFilterDatesAndSizes(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAP(t, memCaps...)
	day := func(d, h int) time.Time { return time.Date(2026, 11, d, h, 0, 0, 0, time.UTC) }
	pad := func(size int) string { return string(bytes.Repeat([]byte("x"), size)) }
	mails := []struct {
		at     time.Time
		body   string
		wanted bool
	}{
		{day(9, 23), "", false},         // the day before since
		{day(10, 0), "", true},          // since is inclusive
		{day(19, 23), "", true},         // the last day before before
		{day(20, 0), "", false},         // before is exclusive
		{day(15, 12), pad(5000), false}, // over maxSize
		{day(15, 12), pad(1000), true},
	}
	var sizes []int
	for i, m := range mails {
		raw := testMail(i+1, "")
		raw = append(raw, m.body...)
		sizes = append(sizes, len(raw))
		if _, err := srv.user.Append("INBOX", bytes.NewReader(raw), &imap.AppendOptions{Time: m.at}); err != nil {
			t.Fatalf("Append() = %v", err)
		}
	}
	// maxSize is exactly the size of message 6: inclusive. minSize excludes none here but
	// is the size of the smallest message: inclusive too.
	r := imapRoute("dated", schemas.SelectAll, schemas.AfterNone)
	r.Filter = &schemas.RouteFilter{Since: "2026-11-10", Before: "2026-11-20", MinSize: int64(slices.Min(sizes)), MaxSize: int64(sizes[5])}
	rt := newIMAPRuntime(t, n)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: r, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	st := waitRouteIdle(t, rt, r.Name, uint32(len(mails)))
	var want []string
	for i, m := range mails {
		if m.wanted {
			want = append(want, fmt.Sprintf("test %d", i+1))
		}
	}
	got := subjectsOf(busEvents(t, n, 1, r.Name))
	if !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
	if st.Filtered != uint64(len(mails)-len(want)) {
		t.Errorf("filtered %d, want %d", st.Filtered, len(mails)-len(want))
	}
}

// TestIMAPFilterChange: a new filter applies from the route's next start, to mail above
// its checkpoint. Mail the old filter passed over is not taken by the new one; mail that
// arrives later is judged by the new filter only.
func TestIMAPFilterChange(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAP(t, memCaps...)
	mail := func(i int, subject string) []byte {
		return []byte(fmt.Sprintf("From: a@example.org\r\nSubject: %s\r\nMessage-ID: <c%d@example.org>\r\n\r\nbody\r\n", subject, i))
	}
	srv.append(t, "INBOX", mail(1, "invoice 1"))
	srv.append(t, "INBOX", mail(2, "order 2")) // passed over by the first filter
	rt := newIMAPRuntime(t, n)
	r := imapRoute("changing", schemas.SelectAll, schemas.AfterNone)
	r.Filter = &schemas.RouteFilter{Subject: "invoice"}
	conn := imapConn(srv.addr, schemas.EncryptionNone)
	stop := runIMAPWorker(t, rt, engine.RouteSpec{Route: r, Connection: conn})
	waitRouteIdle(t, rt, r.Name, 2)
	stop()

	srv.append(t, "INBOX", mail(3, "invoice 3")) // the new filter does not take it
	srv.append(t, "INBOX", mail(4, "order 4"))
	r.Filter = &schemas.RouteFilter{Subject: "order"}
	runIMAPWorker(t, rt, engine.RouteSpec{Route: r, Connection: conn})
	st := waitRouteIdle(t, rt, r.Name, 4)
	var got []string
	for _, ev := range busEvents(t, n, 1, r.Name) {
		got = append(got, ev.MessageId)
	}
	if want := []string{"<c1@example.org>", "<c4@example.org>"}; !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
	if st.Filtered != 2 {
		t.Errorf("filtered %d, want 2 (messages 2 and 3)", st.Filtered)
	}
}
