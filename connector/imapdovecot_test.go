package connector_test

import (
	"crypto/tls"
	"slices"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailbus/mailbus/connector/dovecottest"
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/schemas"
)

// The core cycle against a real Dovecot (MAILBUS_TEST_DOVECOT=1): both kinds of TLS with
// certificate verification, markRead and move, and IDLE delivery.

func dovecotTLS(srv *dovecottest.Server) func() (*imapclient.Client, error) {
	return func() (*imapclient.Client, error) {
		return imapclient.DialTLS(srv.TLSAddr, &imapclient.Options{TLSConfig: &tls.Config{RootCAs: srv.CA}})
	}
}

func TestIMAPDovecot(t *testing.T) {
	for _, tc := range []struct {
		encryption, after string
	}{
		{schemas.EncryptionSSL, schemas.AfterMarkRead},
		{schemas.EncryptionTLS, schemas.AfterMarkRead},
		{schemas.EncryptionSSL, schemas.AfterMove},
		{schemas.EncryptionTLS, schemas.AfterMove},
	} {
		t.Run(tc.encryption+"/"+tc.after, func(t *testing.T) {
			srv := dovecottest.Start(t, nil)
			n := startBusNATS(t)
			if tc.after == schemas.AfterMove {
				c := loginAlice(t, dovecotTLS(srv))
				if err := c.Create("Archive", nil).Wait(); err != nil {
					t.Fatalf("Create().Wait() = %v", err)
				}
				c.Close()
			}
			for i := 1; i <= 3; i++ {
				srv.Deliver(t, "alice", testMail(i, ""))
			}
			rt := newIMAPRuntime(t, n)
			rt.TLSRootCAs = srv.CA
			addr := srv.Addr
			if tc.encryption == schemas.EncryptionSSL {
				addr = srv.TLSAddr
			}
			route := imapRoute("dovecot", schemas.SelectUnseen, tc.after)
			runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(addr, tc.encryption)})
			waitRouteIdle(t, rt, route.Name, 3)

			// IDLE: the next message arrives without a poll (the poll is an hour away).
			time.Sleep(200 * time.Millisecond)
			start := time.Now()
			srv.Deliver(t, "alice", testMail(4, ""))
			waitUntil(t, 10*time.Second, "event of the delivered message", func() bool {
				return storedCount(t, n.js, busNames.BusStream(1), busNames.BusSubject(1, route.Name)) == 4
			})
			t.Logf("deliver to event: %s", time.Since(start))
			waitRouteIdle(t, rt, route.Name, 4)

			subjects := subjectsOf(busEvents(t, n, 1, route.Name))
			if want := []string{"test 1", "test 2", "test 3", "test 4"}; !slices.Equal(subjects, want) {
				t.Errorf("events %q, want %q", subjects, want)
			}
			inbox := listMailbox(t, dovecotTLS(srv), "INBOX")
			switch tc.after {
			case schemas.AfterMarkRead:
				if len(inbox) != 4 {
					t.Fatalf("INBOX has %d messages", len(inbox))
				}
				for _, m := range inbox {
					if !hasIMAPFlag(m.flags, imap.FlagSeen) {
						t.Errorf("UID %d not \\Seen", m.uid)
					}
				}
			case schemas.AfterMove:
				archive := listMailbox(t, dovecotTLS(srv), "Archive")
				if len(inbox) != 0 || len(archive) != 4 {
					t.Errorf("INBOX %d messages, Archive %d; want 0, 4", len(inbox), len(archive))
				}
			}
		})
	}
}

// TestIMAPDovecotCertificate: a certificate the route cannot verify parks it in error.
func TestIMAPDovecotCertificate(t *testing.T) {
	srv := dovecottest.Start(t, nil)
	n := startBusNATS(t)
	rt := newIMAPRuntime(t, n) // no TLSRootCAs: the system pool does not know the test CA
	route := imapRoute("badcert", schemas.SelectUnseen, schemas.AfterMarkRead)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.TLSAddr, schemas.EncryptionSSL)})
	var st schemas.RouteStatus
	waitUntil(t, 10*time.Second, "state error", func() bool {
		st, _ = rt.Status.Get(route.Name)
		return st.State == schemas.StateError
	})
	t.Logf("lastError: %s", st.LastError)
	if want := "certificate"; !containsFold(st.LastError, want) {
		t.Errorf("lastError %q, want it to mention %q", st.LastError, want)
	}
}
