package connector_test

import (
	"fmt"
	"mime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/ewstest"
	"github.com/mailbus/mailbus/schemas"
)

// ewsFilterMail is one message of the shared Exchange mailbox and the routes it must reach.
type ewsFilterMail struct {
	from, to, subject, extra string
	routes                   []string
}

func (m ewsFilterMail) raw(n int) []byte {
	return []byte(fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <e%d@example.org>\r\n%s"+
		"Content-Type: text/plain; charset=utf-8\r\n\r\nbody of message %d\r\n", m.from, m.to, ewsSubject(m.subject), n, m.extra, n))
}

// ewsSubject encodes a subject in UTF-8 words, unless it is encoded already.
func ewsSubject(s string) string {
	if strings.HasPrefix(s, "=?") {
		return s
	}
	return mime.BEncoding.Encode("UTF-8", s)
}

// TestExchangeFilterTwoRoutes runs two routes with different filters on one Exchange
// mailbox. invoices (select unseen, after markRead) reads FindItem: its restriction carries
// IsRead=false and the subject (non-ASCII), and mailbus checks the sender on the headers.
// support (select all, after none) reads SyncFolderItems, which takes no restriction: its
// whole filter is checked on the headers. (Both cannot mark read: a route that lists unread
// mail only would miss what the other matched and marked read first.) Every message reaches
// exactly the routes whose filter it matches, mail matching none stays unread, and the MIME
// content of mail passed over is never fetched.
func TestExchangeFilterTwoRoutes(t *testing.T) {
	f := ewstest.New(t, false)
	mails := []ewsFilterMail{
		{"Billing <billing@billing.example>", "accounts@example.com", "Счёт №1", "", []string{"invoices"}},
		{"customer@example.net", "Support <support@example.com>", "Help please", "X-Priority-Tag: High\r\n", []string{"support"}},
		{"billing@billing.example", "support@example.com", "Ваш СЧЁТ №3", "X-Priority-Tag: HIGH\r\n", []string{"invoices", "support"}},
		{"billing@billing.example", "accounts@example.com", "Newsletter", "", nil},                      // from, not subject
		{"someone@example.net", "support@example.com", "Счёт от поставщика", "", nil},                   // subject, not from
		{"customer@example.net", "support@example.com", "Low priority", "X-Priority-Tag: low\r\n", nil}, // tag, not high
		{"BILLING@Billing.Example", "accounts@example.com", "счёт №7", "", []string{"invoices"}},
		{"billing@billing.example", "accounts@example.com", "=?KOI8-R?B?896j1CAxMCAoS09JOC1SKQ==?=", "", []string{"invoices"}}, // another charset
	}
	var raws [][]byte
	for i, m := range mails {
		raws = append(raws, m.raw(i+1))
	}
	ids := f.AddMail(raws...)
	rt := connector.EWSRuntime(t)

	inv := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
	inv.Route.Name = "invoices"
	inv.Route.Filter = &schemas.RouteFilter{From: "@billing.example", Subject: "счёт"}
	sup := connector.EWSSpec(f, schemas.SelectAll, schemas.AfterNone)
	sup.Route.Name = "support"
	sup.Route.Filter = &schemas.RouteFilter{To: "support@", Headers: []schemas.FilterHeader{{Name: "x-priority-tag", Contains: "high"}}}
	connector.RunEWSWorker(t, rt, inv)
	connector.RunEWSWorker(t, rt, sup)

	want := func(route string) []string {
		var out []string
		for i, m := range mails {
			if slices.Contains(m.routes, route) {
				out = append(out, fmt.Sprintf("<e%d@example.org>", i+1))
			}
		}
		return out
	}
	for _, route := range []string{"invoices", "support"} {
		connector.EWSWaitFor(t, "the events of "+route, func() bool { return len(connector.EWSEvents(t, rt, route, 1)) >= len(want(route)) })
	}
	// Some more cycles (polls every 100 ms): nothing more comes, nothing is counted twice.
	polls := f.CountOps("FindItem")
	connector.EWSWaitFor(t, "three more polls", func() bool { return f.CountOps("FindItem") >= polls+3 })
	for _, route := range []string{"invoices", "support"} {
		var got []string
		for _, ev := range connector.EWSEvents(t, rt, route, 1) {
			got = append(got, ev.MessageId)
		}
		if !slices.Equal(got, want(route)) {
			t.Errorf("route %s: events %q, want %q", route, got, want(route))
		}
	}
	// invoices counts what mailbus passed over (the subject matched, the sender did not:
	// message 5), not what the server's restriction left out; support counts every miss.
	if st := connector.EWSRouteStatus(rt, "invoices"); st.Filtered != 1 {
		t.Errorf("invoices: filtered %d, want 1", st.Filtered)
	}
	if st, want := connector.EWSRouteStatus(rt, "support"), len(mails)-len(want("support")); st.Filtered != uint64(want) {
		t.Errorf("support: filtered %d, want %d", st.Filtered, want)
	}

	f.Lock()
	defer f.Unlock()
	wantRestriction := "And(IsEqualTo(message:IsRead,false),Contains(item:Subject,счёт))"
	if len(f.Restrictions) == 0 || f.Restrictions[0] != wantRestriction {
		t.Errorf("FindItem restrictions %q, want %q", f.Restrictions, wantRestriction)
	}
	for i, m := range mails {
		it := f.Item(ids[i])
		if it.Read != slices.Contains(m.routes, "invoices") {
			t.Errorf("message %d (routes %v): read %t", i+1, m.routes, it.Read)
		}
		if slices.Contains(f.MIMEGets, ids[i]) != (len(m.routes) > 0) {
			t.Errorf("message %d (routes %v): MIME fetched %t", i+1, m.routes, len(m.routes) == 0)
		}
	}
	// The headers of the item invoices passed over were read once, not at every poll.
	n := 0
	for _, id := range f.HeaderGets {
		if id == ids[4] {
			n++
		}
	}
	if n != 2 { // once by each route
		t.Errorf("headers of message 5 read %d times, want 2", n)
	}
}

// TestExchangeFilterDatesAndSizes: since, before, minSize and maxSize, bounds as the
// contract says, both where the server applies them (FindItem restriction) and where
// mailbus does (SyncFolderItems routes check the headers, size and reception time).
func TestExchangeFilterDatesAndSizes(t *testing.T) {
	day := func(d, h int) time.Time { return time.Date(2026, 11, d, h, 0, 0, 0, time.UTC) }
	mails := []struct {
		at     time.Time
		pad    int
		wanted bool
	}{
		{day(9, 23), 0, false},     // the day before since
		{day(10, 0), 0, true},      // since is inclusive
		{day(19, 23), 0, true},     // the last day before before
		{day(20, 0), 0, false},     // before is exclusive
		{day(15, 12), 5000, false}, // over maxSize
		{day(15, 12), 1000, true},
	}
	for _, mode := range []struct{ sel, after string }{
		{schemas.SelectUnseen, schemas.AfterMarkRead}, // FindItem
		{schemas.SelectAll, schemas.AfterNone},        // SyncFolderItems
	} {
		t.Run(mode.sel+"_"+mode.after, func(t *testing.T) {
			f := ewstest.New(t, false)
			var raws [][]byte
			for i, m := range mails {
				raws = append(raws, append(ewstest.MIME(i+1), strings.Repeat("x", m.pad)...))
			}
			ids := f.AddMail(raws...)
			sizes := make([]int, len(raws))
			for i := range mails {
				f.Item(ids[i]).Received = mails[i].at
				sizes[i] = len(raws[i])
			}
			rt := connector.EWSRuntime(t)
			spec := connector.EWSSpec(f, mode.sel, mode.after)
			spec.Route.Filter = &schemas.RouteFilter{Since: "2026-11-10", Before: "2026-11-20",
				MinSize: int64(slices.Min(sizes)), MaxSize: int64(sizes[5])}
			connector.RunEWSWorker(t, rt, spec)
			var want []string
			for i, m := range mails {
				if m.wanted {
					want = append(want, fmt.Sprintf("message %d", i+1))
				}
			}
			connector.EWSWaitFor(t, "the events", func() bool { return len(connector.EWSEvents(t, rt, spec.Route.Name, 1)) >= len(want) })
			polls := len(f.Listings())
			connector.EWSWaitFor(t, "two more polls", func() bool { return len(f.Listings()) >= polls+2 })
			got := subjectsOf(connector.EWSEvents(t, rt, spec.Route.Name, 1))
			if !slices.Equal(got, want) {
				t.Errorf("events %q, want %q", got, want)
			}
		})
	}
}
