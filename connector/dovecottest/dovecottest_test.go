package dovecottest_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailbus/mailbus/connector/dovecottest"
)

func message(subject string) []byte {
	return []byte(strings.ReplaceAll(fmt.Sprintf(`From: Bob <bob@example.org>
To: Alice <alice@example.com>
Subject: %s
Message-ID: <%s@dovecottest.example>
Date: Mon, 02 Jan 2006 15:04:05 +0000
Content-Type: text/plain; charset=utf-8

Hello.
`, subject, strings.ReplaceAll(subject, " ", "-")), "\n", "\r\n"))
}

func tlsConfig(s *dovecottest.Server) *tls.Config {
	return &tls.Config{RootCAs: s.CA, ServerName: "localhost"}
}

func dial(t *testing.T, s *dovecottest.Server, implicitTLS bool) *imapclient.Client {
	t.Helper()
	opts := &imapclient.Options{TLSConfig: tlsConfig(s)}
	var (
		c   *imapclient.Client
		err error
	)
	if implicitTLS {
		c, err = imapclient.DialTLS(s.TLSAddr, opts)
	} else {
		c, err = imapclient.DialStartTLS(s.Addr, opts)
	}
	if err != nil {
		t.Fatalf("Dial(implicitTLS=%v) = %v", implicitTLS, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func login(t *testing.T, s *dovecottest.Server, implicitTLS bool) *imapclient.Client {
	t.Helper()
	c := dial(t, s, implicitTLS)
	if err := c.Login("alice", "secret").Wait(); err != nil {
		t.Fatalf("Login().Wait() = %v", err)
	}
	return c
}

func selectInbox(t *testing.T, c *imapclient.Client) *imap.SelectData {
	t.Helper()
	data, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("Select(INBOX).Wait() = %v", err)
	}
	return data
}

func TestLoginAndDeliver(t *testing.T) {
	t.Parallel()
	start := time.Now()
	s := dovecottest.Start(t, nil)
	t.Logf("Start took %v", time.Since(start))

	for _, raw := range [][]byte{message("first"), message("second")} {
		name := s.Deliver(t, "alice", raw)
		if _, err := os.Stat(filepath.Join(s.Maildir("alice"), "new", name)); err != nil {
			t.Fatalf("delivered file: %v", err)
		}
	}

	for _, tc := range []struct {
		name        string
		implicitTLS bool
	}{
		{"STARTTLS", false},
		{"TLS", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := login(t, s, tc.implicitTLS)
			caps, err := c.Capability().Wait()
			if err != nil {
				t.Fatalf("Capability().Wait() = %v", err)
			}
			for _, want := range []imap.Cap{imap.CapIdle, imap.CapUIDPlus, imap.CapMove} {
				if !caps.Has(want) {
					t.Errorf("capability %s missing from %v", want, caps)
				}
			}
			data := selectInbox(t, c)
			if data.NumMessages != 2 {
				t.Errorf("INBOX has %d messages, want 2", data.NumMessages)
			}
			msgs, err := c.Fetch(imap.SeqSetNum(1, 2), &imap.FetchOptions{Flags: true, Envelope: true}).Collect()
			if err != nil {
				t.Fatalf("Fetch().Collect() = %v", err)
			}
			if len(msgs) != 2 {
				t.Fatalf("fetched %d messages, want 2", len(msgs))
			}
			for i, m := range msgs {
				for _, f := range m.Flags {
					if f == imap.FlagSeen {
						t.Errorf("message %d is \\Seen, want unseen", i+1)
					}
				}
			}
			if got := msgs[0].Envelope.Subject; got != "first" {
				t.Errorf("first subject = %q, want %q", got, "first")
			}
			if err := c.Logout().Wait(); err != nil {
				t.Fatalf("Logout().Wait() = %v", err)
			}
		})
	}
}

func TestPlainIMAPOffersSTARTTLS(t *testing.T) {
	t.Parallel()
	s := dovecottest.Start(t, nil)
	c, err := imapclient.DialInsecure(s.Addr, nil)
	if err != nil {
		t.Fatalf("DialInsecure() = %v", err)
	}
	defer c.Close()
	caps, err := c.Capability().Wait()
	if err != nil {
		t.Fatalf("Capability().Wait() = %v", err)
	}
	if !caps.Has(imap.CapStartTLS) {
		t.Errorf("capabilities %v lack STARTTLS", caps)
	}
}

func TestWrongPassword(t *testing.T) {
	t.Parallel()
	s := dovecottest.Start(t, nil)
	c := dial(t, s, true)
	err := c.Login("alice", "wrong").Wait()
	var imapErr *imap.Error
	if !errors.As(err, &imapErr) || imapErr.Code != imap.ResponseCodeAuthenticationFailed {
		t.Fatalf("Login(wrong password).Wait() = %v, want an AUTHENTICATIONFAILED error", err)
	}
	// Dovecot's auth penalty is off, so failures do not slow down later logins.
	start := time.Now()
	login(t, s, true)
	if d := time.Since(start); d > time.Second {
		t.Errorf("login after a failed one took %v", d)
	}
}

func TestUsersAndCertHosts(t *testing.T) {
	t.Parallel()
	s := dovecottest.Start(t, &dovecottest.Options{
		Users:     map[string]string{"bob": "pw1", "carol@example.com": "pw2"},
		CertHosts: []string{"imap.test", "10.1.2.3"},
	})
	for _, host := range []string{"imap.test", "localhost"} {
		cfg := &tls.Config{RootCAs: s.CA, ServerName: host}
		c, err := imapclient.DialTLS(s.TLSAddr, &imapclient.Options{TLSConfig: cfg})
		if err != nil {
			t.Fatalf("DialTLS(ServerName=%s) = %v", host, err)
		}
		if err := c.Login("carol@example.com", "pw2").Wait(); err != nil {
			t.Fatalf("Login(carol).Wait() = %v", err)
		}
		c.Close()
	}
	cfg := &tls.Config{RootCAs: s.CA, ServerName: "other.test"}
	if c, err := imapclient.DialTLS(s.TLSAddr, &imapclient.Options{TLSConfig: cfg}); err == nil {
		c.Close()
		t.Fatalf("DialTLS(ServerName=other.test) succeeded, want a certificate error")
	}
	s.Deliver(t, "bob", message("for bob"))
	c := dial(t, s, false)
	if err := c.Login("bob", "pw1").Wait(); err != nil {
		t.Fatalf("Login(bob).Wait() = %v", err)
	}
	if n := selectInbox(t, c).NumMessages; n != 1 {
		t.Errorf("bob's INBOX has %d messages, want 1", n)
	}
}

func TestExpiredCert(t *testing.T) {
	t.Parallel()
	s := dovecottest.Start(t, &dovecottest.Options{CertNotAfter: time.Now().Add(-time.Hour)})
	_, err := imapclient.DialTLS(s.TLSAddr, &imapclient.Options{TLSConfig: tlsConfig(s)})
	var invalid x509.CertificateInvalidError
	if !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
		t.Fatalf("DialTLS() = %v, want an expired certificate error", err)
	}
}

func TestStopRestartKeepsMail(t *testing.T) {
	t.Parallel()
	s := dovecottest.Start(t, nil)
	s.Deliver(t, "alice", message("kept one"))
	c := login(t, s, false)
	if n := selectInbox(t, c).NumMessages; n != 1 {
		t.Fatalf("INBOX has %d messages, want 1", n)
	}

	s.Stop()
	// A client cut off by Stop sees its connection end.
	select {
	case <-c.Closed():
	case <-time.After(5 * time.Second):
		t.Fatalf("client still connected 5s after Stop")
	}
	if c, err := imapclient.DialTLS(s.TLSAddr, nil); err == nil {
		c.Close()
		t.Fatalf("DialTLS() after Stop succeeded")
	}

	s.Deliver(t, "alice", message("kept two"))
	s.Restart(t)
	c = login(t, s, true)
	if n := selectInbox(t, c).NumMessages; n != 2 {
		t.Errorf("INBOX after restart has %d messages, want 2", n)
	}
}

// TestIMAPCapabilityWithoutMove: WithoutMove is exactly Dovecot's own list less MOVE, and
// the option makes the server announce it.
func TestIMAPCapabilityWithoutMove(t *testing.T) {
	t.Parallel()
	capsOf := func(s *dovecottest.Server) imap.CapSet {
		c := login(t, s, true)
		caps, err := c.Capability().Wait()
		if err != nil {
			t.Fatalf("Capability().Wait() = %v", err)
		}
		return caps
	}
	want := map[string]bool{}
	for _, c := range strings.Fields(dovecottest.WithoutMove) {
		want[c] = true
	}
	got := map[string]bool{}
	for c := range capsOf(dovecottest.Start(t, nil)) {
		got[string(c)] = true
	}
	if !got[string(imap.CapMove)] {
		t.Fatalf("Dovecot's own capabilities %v lack MOVE", got)
	}
	delete(got, string(imap.CapMove))
	for c := range got {
		if !want[c] {
			t.Errorf("Dovecot announces %s, which WithoutMove lacks", c)
		}
	}
	for c := range want {
		if !got[c] {
			t.Errorf("WithoutMove has %s, which Dovecot does not announce", c)
		}
	}

	caps := capsOf(dovecottest.Start(t, &dovecottest.Options{IMAPCapability: dovecottest.WithoutMove}))
	if caps.Has(imap.CapMove) || !caps.Has(imap.CapUIDPlus) {
		t.Errorf("with WithoutMove the server announces %v: want UIDPLUS and no MOVE", caps)
	}
}
