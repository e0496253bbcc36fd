package connector_test

import (
	"strings"
	"sync/atomic"
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

// The IMAP source sends a batch's STORE \Seen behind the next batch's FETCH without waiting
// for its answer, and that FETCH before the route reads it (connector/imap, apply). These
// tests hold the guarantees on that path: a refused STORE loses no mark and publishes
// nothing twice, and a route stopped anywhere in a cycle stops at once.

// pipelineMails is enough small mail for several batches (the first FETCH asks for 256).
const pipelineMails = 700

// failingStore refuses the first refusals STOREs.
type failingStore struct {
	imapserver.SessionIMAP4rev2
	refusals *atomic.Int32
}

func (s failingStore) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error {
	if s.refusals.Add(-1) >= 0 {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Text: "the index is locked, try again later"}
	}
	return s.SessionIMAP4rev2.Store(w, numSet, flags, options)
}

// TestIMAPPipelinedMarkReadRefused: the first batch's STORE, sent behind the second
// batch's FETCH, is refused. Its answer comes while the second batch is acknowledged; the
// cycle fails there with the first batch's UIDs still in the checkpoint's journal, the next
// session marks them, and every mail ends up read with its event stored once. Nothing is
// published again: the checkpoint moved past the second batch all the same (it did not,
// and the second batch was published again, 444 duplicates, stored twice once the
// duplicate window is over).
func TestIMAPPipelinedMarkReadRefused(t *testing.T) {
	n := startBusNATS(t)
	var refusals atomic.Int32
	refusals.Store(1)
	srv := newMemIMAP(testkit.StartIMAP(t, &testkit.IMAPOptions{
		Session: func(_ *imapserver.Conn, s imapserver.Session) imapserver.Session {
			return failingStore{s.(imapserver.SessionIMAP4rev2), &refusals}
		},
	}))
	for i := 1; i <= pipelineMails; i++ {
		srv.append(t, "INBOX", smallMail(i))
	}
	rt := newIMAPRuntime(t, n)
	route := imapRoute("pipelined_refused", "", schemas.AfterMarkRead)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})

	var sawRefusal bool
	waitUntil(t, 60*time.Second, "every mail read", func() bool {
		st, _ := rt.Status.Get(route.Name)
		sawRefusal = sawRefusal || strings.Contains(st.LastError, "index is locked")
		return st.State == schemas.StateIdle && countSeen(t, srv) == pipelineMails
	})
	if refusals.Load() >= 0 {
		t.Fatal("the STORE was never refused")
	}
	if !sawRefusal {
		t.Error("the route's status never told of the refused STORE")
	}
	if got := storedCount(t, n.js, busNames.BusStream(1), busNames.BusSubject(1, route.Name)); got != pipelineMails {
		t.Errorf("%d events stored for %d mails", got, pipelineMails)
	}
	if st, _ := rt.Status.Get(route.Name); st.Published != pipelineMails || st.Duplicates != 0 {
		t.Errorf("status published %d, duplicates %d; want %d, 0", st.Published, st.Duplicates, pipelineMails)
	}
}

// loudStore answers every STORE with the messages' flags, as if .SILENT was not asked for.
type loudStore struct{ imapserver.SessionIMAP4rev2 }

func (s loudStore) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error {
	loud := *flags
	loud.Silent = false
	return s.SessionIMAP4rev2.Store(w, numSet, &loud, options)
}

// TestIMAPStoreAnsweredLoudly: the server answers the pipelined STORE with a FETCH response
// for each message (256 of them), and the second batch holds a message the mapping keeps
// only part of, whose raw copy is fetched again before that batch is acknowledged. The
// STORE's answer is read as it comes: left unread, it filled imapclient's queue, its
// reader waited for good, the FETCH of the raw copy never got its answer, and the route
// hung where no stop could end it.
func TestIMAPStoreAnsweredLoudly(t *testing.T) {
	n := startBusNATS(t)
	srv := newMemIMAP(testkit.StartIMAP(t, &testkit.IMAPOptions{
		Session: func(_ *imapserver.Conn, s imapserver.Session) imapserver.Session {
			return loudStore{s.(imapserver.SessionIMAP4rev2)}
		},
	}))
	for i := 1; i <= pipelineMails; i++ {
		raw := smallMail(i)
		if i == 400 {
			raw = truncatedNested
		}
		srv.append(t, "INBOX", raw)
	}
	rt := newIMAPRuntime(t, n)
	route := imapRoute("store_loud", "", schemas.AfterMarkRead)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	waitRouteIdle(t, rt, route.Name, pipelineMails)
	if got := storedCount(t, n.js, busNames.BusStream(1), busNames.BusSubject(1, route.Name)); got != pipelineMails {
		t.Errorf("%d events stored for %d mails", got, pipelineMails)
	}
	if seen := countSeen(t, srv); seen != pipelineMails {
		t.Errorf("%d of %d mails read", seen, pipelineMails)
	}
}

// TestIMAPStopMidCycle stops the route again and again while it works through a mailbox of
// several batches, with a FETCH sent ahead and a STORE unanswered most of the time. Every
// stop must end the worker at once (imapclient's Close waits for a FETCH left unread), and
// in the end every mail is read and its event stored once.
func TestIMAPStopMidCycle(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAPMail(t, 3*pipelineMails, smallMail)
	rt := newIMAPRuntime(t, n)
	route := imapRoute("stop_mid_cycle", "", schemas.AfterMarkRead)
	spec := engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)}
	for i := range 12 {
		stop := runIMAPWorker(t, rt, spec)
		time.Sleep(time.Duration(20+15*i) * time.Millisecond)
		start := time.Now()
		stop() // fails the test after 10 s
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("stop %d took %s", i, d)
		}
	}
	runIMAPWorker(t, rt, spec)
	waitUntil(t, 60*time.Second, "every mail read", func() bool {
		return countSeen(t, srv) == 3*pipelineMails
	})
	if got := storedCount(t, n.js, busNames.BusStream(1), busNames.BusSubject(1, route.Name)); got != 3*pipelineMails {
		t.Errorf("%d events stored for %d mails", got, 3*pipelineMails)
	}
}

// TestIMAPMultiBatchAfterActions runs every after action over a mailbox of several
// batches, on the in-memory server and on Dovecot. Delete and move wait for each command's
// answer, so they must run before the next batch's FETCH is sent: behind it, their answer
// would come only once that FETCH was read, and the route waited for it until the command
// timeout.
func TestIMAPMultiBatchAfterActions(t *testing.T) {
	for _, after := range []string{schemas.AfterMarkRead, schemas.AfterMove, schemas.AfterDelete} {
		t.Run("mem/"+after, func(t *testing.T) {
			srv := newMemIMAP(testkit.StartIMAP(t, &testkit.IMAPOptions{Mailboxes: []string{"INBOX", "Archive"}}))
			for i := 1; i <= pipelineMails; i++ {
				srv.append(t, "INBOX", smallMail(i))
			}
			runMultiBatch(t, srv.addr, schemas.EncryptionNone, nil, dialPlain(srv.addr), after)
		})
		t.Run("dovecot/"+after, func(t *testing.T) {
			srv := dovecottest.Start(t, nil)
			c := loginAlice(t, dovecotTLS(srv))
			if err := c.Create("Archive", nil).Wait(); err != nil {
				t.Fatalf("Create().Wait() = %v", err)
			}
			c.Close()
			for i := 1; i <= pipelineMails; i++ {
				srv.Deliver(t, "alice", smallMail(i))
			}
			runMultiBatch(t, srv.Addr, schemas.EncryptionTLS, srv, dovecotTLS(srv), after)
		})
	}
}

// runMultiBatch runs a route with after on the INBOX of pipelineMails mails at addr, and
// checks that each is stored once and acted upon.
func runMultiBatch(t *testing.T, addr, encryption string, dovecot *dovecottest.Server, dial func() (*imapclient.Client, error), after string) {
	n := startBusNATS(t)
	rt := newIMAPRuntime(t, n)
	if dovecot != nil {
		rt.TLSRootCAs = dovecot.CA
	}
	route := imapRoute("multi_batch", "", after)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(addr, encryption)})
	waitRouteIdle(t, rt, route.Name, pipelineMails)
	if got := storedCount(t, n.js, busNames.BusStream(1), busNames.BusSubject(1, route.Name)); got != pipelineMails {
		t.Errorf("%d events stored for %d mails", got, pipelineMails)
	}
	inbox := listMailbox(t, dial, "INBOX")
	switch after {
	case schemas.AfterMarkRead:
		seen := 0
		for _, m := range inbox {
			if hasIMAPFlag(m.flags, imap.FlagSeen) {
				seen++
			}
		}
		if len(inbox) != pipelineMails || seen != pipelineMails {
			t.Errorf("INBOX: %d messages, %d read; want %d, all read", len(inbox), seen, pipelineMails)
		}
	case schemas.AfterMove:
		if archive := listMailbox(t, dial, "Archive"); len(inbox) != 0 || len(archive) != pipelineMails {
			t.Errorf("INBOX %d messages, Archive %d; want 0, %d", len(inbox), len(archive), pipelineMails)
		}
	case schemas.AfterDelete:
		if len(inbox) != 0 {
			t.Errorf("INBOX still holds %d messages", len(inbox))
		}
	}
}

// countSeen is how many messages of the INBOX are \Seen.
func countSeen(t testing.TB, srv *memIMAP) int {
	t.Helper()
	seen := 0
	for _, m := range listMailbox(t, dialPlain(srv.addr), "INBOX") {
		if hasIMAPFlag(m.flags, imap.FlagSeen) {
			seen++
		}
	}
	return seen
}
