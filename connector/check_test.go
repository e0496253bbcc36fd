package connector_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/dovecottest"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/schemas"
)

const (
	checkUser     = "bot@example.com"
	checkPassword = "pw-Geheim-4711"
)

// checkServer is an in-process IMAP server with one user whose INBOX holds three
// messages, the first one seen.
type checkServer struct {
	Addr string
	Port int
	User *imapmemserver.User
}

type checkServerOptions struct {
	cert      *tls.Certificate // nil: no TLS at all
	implicit  bool             // TLS from the first byte; otherwise STARTTLS when cert is set
	noUIDPlus bool             // an IMAP4rev1 server without UIDPLUS
}

func startCheckServer(t *testing.T, o checkServerOptions) *checkServer {
	t.Helper()
	caps := imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}}
	if o.noUIDPlus {
		caps = imap.CapSet{imap.CapIMAP4rev1: {}}
	}
	opts := &testkit.IMAPOptions{Users: map[string]string{checkUser: checkPassword}, Caps: caps}
	if o.cert != nil {
		opts.TLS = &tls.Config{Certificates: []tls.Certificate{*o.cert}}
		opts.ImplicitTLS = o.implicit
	}
	srv := testkit.StartIMAP(t, opts)
	for i := range 3 {
		msg := fmt.Sprintf("From: a@example.org\r\nSubject: m%d\r\nMessage-ID: <m%d@example.org>\r\n\r\nbody %d\r\n", i, i, i)
		var flags []imap.Flag
		if i == 0 {
			flags = []imap.Flag{imap.FlagSeen}
		}
		srv.Append(t, checkUser, "INBOX", []byte(msg), flags...)
	}
	_, port, _ := net.SplitHostPort(srv.Addr)
	p, _ := strconv.Atoi(port)
	return &checkServer{Addr: srv.Addr, Port: p, User: srv.User(checkUser)}
}

// messages is how many messages the server's INBOX holds now.
func (s *checkServer) messages(t *testing.T) uint32 {
	t.Helper()
	st, err := s.User.Status("INBOX", &imap.StatusOptions{NumMessages: true})
	if err != nil {
		t.Fatalf("Status() = %v", err)
	}
	return *st.NumMessages
}

// testCert makes a self-signed certificate for hosts, valid until notAfter.
func checkCert(t *testing.T, hosts []string, notAfter time.Time) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("GenerateKey() = %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    notAfter.Add(-365 * 24 * time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("CreateCertificate() = %v", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func checkConn(host string, port int, encryption string) schemas.Connection {
	return schemas.Connection{
		Name: "support_imap", Type: schemas.TypeIMAP, Host: host, Port: port, Encryption: encryption,
		Auth: schemas.AuthBasic, Username: checkUser, Password: checkPassword, LogLevel: schemas.LogErrors,
	}
}

// freePort is a loopback port nothing listens on.
func checkFreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func checkStageNames(r *schemas.Reply) string {
	var l []string
	for _, s := range r.Stages {
		if s.OK {
			l = append(l, s.Stage)
		} else {
			l = append(l, s.Stage+"!")
		}
	}
	return strings.Join(l, " ")
}

// assertNoSecret fails when any of the secrets is in the reply's JSON.
func assertNoCheckSecret(t *testing.T, v any, secrets ...string) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("json.Marshal() = %v", err)
	}
	for _, s := range secrets {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("secret %q in %s", s, b)
		}
	}
}

func runCheck(t *testing.T, c schemas.Connection, mailboxes []string) *schemas.Reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := connector.CheckConnection(ctx, c, mailboxes)
	b, _ := json.Marshal(r)
	t.Logf("reply: %s", b)
	assertNoCheckSecret(t, r, checkPassword, c.Password)
	return r
}

func TestCheckGood(t *testing.T) {
	t.Parallel()
	cert := checkCert(t, []string{"localhost", "127.0.0.1"}, time.Now().AddDate(1, 0, 0))
	plain := startCheckServer(t, checkServerOptions{cert: cert})
	implicit := startCheckServer(t, checkServerOptions{cert: cert, implicit: true})
	for _, tc := range []struct {
		name       string
		srv        *checkServer
		encryption string
		stages     string
	}{
		{"none", plain, schemas.EncryptionNone, "resolve dial greeting capabilities login select"},
		{"ssl", implicit, schemas.EncryptionSSL, "resolve dial tls greeting capabilities login select"},
		{"tls", plain, schemas.EncryptionTLS, "resolve dial greeting starttls capabilities login select"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := checkConn("127.0.0.1", tc.srv.Port, tc.encryption)
			// The certificate is self-signed: trusting it is what the unknown-authority
			// case below is about.
			c.TLSInsecureSkipVerify = true
			r := runCheck(t, c, nil)
			if !r.OK || r.Error != nil {
				t.Fatalf("OK = %v, Error = %v, want a passing check", r.OK, r.Error)
			}
			if got := checkStageNames(r); got != tc.stages {
				t.Errorf("stages = %q, want %q", got, tc.stages)
			}
			want := schemas.MailboxCheck{Name: "INBOX", Messages: 3, Unseen: 2, UidValidity: r.Mailbox.UidValidity, UidNext: 4}
			if r.Mailbox == nil || *r.Mailbox != want || want.UidValidity == 0 {
				t.Errorf("Mailbox = %+v, want %+v with a uidValidity", r.Mailbox, want)
			}
			if !strings.Contains(strings.Join(r.Capabilities, " "), "IMAP4rev1") {
				t.Errorf("Capabilities = %v, want IMAP4rev1 among them", r.Capabilities)
			}
			for _, s := range r.Stages {
				if (s.Stage == "tls" || s.Stage == "starttls") && !strings.Contains(s.Detail, "CN=localhost") {
					t.Errorf("%s Detail = %q, want the certificate subject", s.Stage, s.Detail)
				}
			}
		})
	}
}

func TestCheckFailures(t *testing.T) {
	t.Parallel()
	good := checkCert(t, []string{"localhost", "127.0.0.1"}, time.Now().AddDate(1, 0, 0))
	expired := checkCert(t, []string{"localhost", "127.0.0.1"}, time.Date(2025, 1, 2, 12, 0, 0, 0, time.UTC))
	otherHost := checkCert(t, []string{"mail.example.net"}, time.Now().AddDate(1, 0, 0))

	plain := startCheckServer(t, checkServerOptions{cert: good})
	noTLS := startCheckServer(t, checkServerOptions{})
	implicit := startCheckServer(t, checkServerOptions{cert: good, implicit: true})
	expiredSrv := startCheckServer(t, checkServerOptions{cert: expired, implicit: true})
	otherHostSrv := startCheckServer(t, checkServerOptions{cert: otherHost, implicit: true})
	closed := checkFreePort(t)

	for _, tc := range []struct {
		name      string
		conn      schemas.Connection
		mailboxes []string
		stage     string // the failing stage
		field     string
		message   string
	}{
		{
			name: "wrong password",
			conn: func() schemas.Connection {
				c := checkConn("127.0.0.1", plain.Port, "none")
				c.Password = "wrong-Geheim-0000"
				return c
			}(),
			stage: "login", field: "password", message: "the server refused the user name or password",
		},
		{
			name:  "wrong port",
			conn:  checkConn("127.0.0.1", closed, "none"),
			stage: "dial", field: "port", message: "nothing listens on 127.0.0.1:" + strconv.Itoa(closed),
		},
		{
			name:  "plain port with ssl",
			conn:  checkConn("127.0.0.1", plain.Port, "ssl"),
			stage: "tls", field: "encryption",
			message: fmt.Sprintf("port %d speaks plain IMAP: use encryption tls (STARTTLS) or none", plain.Port),
		},
		{
			name:  "TLS port with none",
			conn:  checkConn("127.0.0.1", implicit.Port, "none"),
			stage: "greeting", field: "encryption",
			message: fmt.Sprintf("port %d expects TLS from the first byte: use encryption ssl", implicit.Port),
		},
		{
			name:  "TLS port with tls",
			conn:  checkConn("127.0.0.1", implicit.Port, "tls"),
			stage: "greeting", field: "encryption",
			message: fmt.Sprintf("port %d expects TLS from the first byte: use encryption ssl", implicit.Port),
		},
		{
			name:  "no STARTTLS",
			conn:  checkConn("127.0.0.1", noTLS.Port, "tls"),
			stage: "starttls", field: "encryption",
			message: fmt.Sprintf("the server does not offer STARTTLS on port %d", noTLS.Port),
		},
		{
			name:  "expired certificate",
			conn:  checkConn("127.0.0.1", expiredSrv.Port, "ssl"),
			stage: "tls", message: "the server's certificate expired on 2025-01-02",
		},
		{
			name:  "wrong-host certificate",
			conn:  checkConn("localhost", otherHostSrv.Port, "ssl"),
			stage: "tls", field: "host", message: "the server's certificate is for mail.example.net, not localhost",
		},
		{
			name:  "untrusted certificate",
			conn:  checkConn("127.0.0.1", implicit.Port, "ssl"),
			stage: "tls", message: "the certificate is not signed by a trusted authority (set tlsInsecureSkipVerify only for testing)",
		},
		{
			name:      "unknown mailbox",
			conn:      checkConn("127.0.0.1", plain.Port, "none"),
			mailboxes: []string{"INBOX", "Tickets"},
			stage:     "select", field: "mailbox", message: "mailbox Tickets does not exist on the server",
		},
		{
			name:  "no such host",
			conn:  checkConn("imap.invalid", 993, "ssl"),
			stage: "resolve", field: "host", message: "the name imap.invalid does not exist in DNS",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runCheck(t, tc.conn, tc.mailboxes)
			if r.OK || r.Error == nil {
				t.Fatalf("OK = %v, Error = %v, want a failed check", r.OK, r.Error)
			}
			last := r.Stages[len(r.Stages)-1]
			if last.Stage != tc.stage || last.OK || !strings.HasPrefix(last.Error, tc.message) {
				t.Errorf("last stage = %+v, want %s failing with %q", last, tc.stage, tc.message)
			}
			if r.Error.Message != last.Error || r.Error.Field != tc.field {
				t.Errorf("Error = %+v, want message %q and field %q", r.Error, last.Error, tc.field)
			}
			for _, s := range r.Stages[:len(r.Stages)-1] {
				if !s.OK {
					t.Errorf("stage %s failed before the last", s.Stage)
				}
			}
		})
	}
}

func TestCheckProbe(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		noUIDPlus bool
		detail    string
	}{
		{"uidplus", false, "fetched it back and removed it"},
		{"no uidplus", true, "skipped: the server has no UIDPLUS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := startCheckServer(t, checkServerOptions{noUIDPlus: tc.noUIDPlus})
			c := checkConn("127.0.0.1", srv.Port, "none")
			sending := false
			c.VerifyWithoutSending = &sending
			c.TestRecipients = []string{"ops@example.com", "Support <support@example.com>"}
			before := srv.messages(t)
			r := runCheck(t, c, nil)
			if !r.OK {
				t.Fatalf("OK = false, Error = %v", r.Error)
			}
			last := r.Stages[len(r.Stages)-1]
			if last.Stage != "probe" || !strings.Contains(last.Detail, tc.detail) {
				t.Errorf("last stage = %+v, want probe with %q", last, tc.detail)
			}
			if after := srv.messages(t); after != before {
				t.Errorf("INBOX holds %d messages after the probe, want %d as before", after, before)
			}
		})
	}
}

// TestCheckProbeReadOnly makes sure the default (verifyWithoutSending unset) never appends.
func TestCheckProbeReadOnly(t *testing.T) {
	t.Parallel()
	srv := startCheckServer(t, checkServerOptions{})
	c := checkConn("127.0.0.1", srv.Port, "none")
	c.TestRecipients = []string{"ops@example.com"}
	r := runCheck(t, c, nil)
	if !r.OK || strings.Contains(checkStageNames(r), "probe") {
		t.Fatalf("stages = %q, OK = %v, want a passing check without probe", checkStageNames(r), r.OK)
	}
}

func TestCheckDovecot(t *testing.T) {
	srv := dovecottest.Start(t, &dovecottest.Options{Users: map[string]string{checkUser: checkPassword}})
	for i := range 3 {
		srv.Deliver(t, checkUser, fmt.Appendf(nil, "From: a@example.org\r\nSubject: m%d\r\n\r\nbody\r\n", i))
	}
	port := func(addr string) int {
		_, p, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(p)
		return n
	}
	plainPort, tlsPort := port(srv.Addr), port(srv.TLSAddr)

	t.Run("good", func(t *testing.T) {
		for _, tc := range []struct {
			enc  string
			port int
		}{{"none", plainPort}, {"tls", plainPort}, {"ssl", tlsPort}} {
			c := checkConn("127.0.0.1", tc.port, tc.enc)
			c.TLSInsecureSkipVerify = true
			r := runCheck(t, c, nil)
			if !r.OK {
				t.Fatalf("%s: OK = false, Error = %v", tc.enc, r.Error)
			}
			if r.Mailbox == nil || r.Mailbox.Messages != 3 || r.Mailbox.Unseen != 3 {
				t.Errorf("%s: Mailbox = %+v, want 3 messages, 3 unseen", tc.enc, r.Mailbox)
			}
		}
	})
	for _, tc := range []struct {
		name    string
		conn    schemas.Connection
		mailbox string
		message string
	}{
		{"wrong password", func() schemas.Connection {
			c := checkConn("127.0.0.1", plainPort, "none")
			c.Password = "wrong-Geheim-0000"
			return c
		}(), "", "the server refused the user name or password"},
		{"plain port with ssl", checkConn("127.0.0.1", plainPort, "ssl"), "", fmt.Sprintf("port %d speaks plain IMAP", plainPort)},
		{"TLS port with none", checkConn("127.0.0.1", tlsPort, "none"), "", fmt.Sprintf("port %d expects TLS from the first byte", tlsPort)},
		{"untrusted certificate", checkConn("127.0.0.1", tlsPort, "ssl"), "", "the certificate is not signed by a trusted authority"},
		{"unknown mailbox", checkConn("127.0.0.1", plainPort, "none"), "Tickets", "mailbox Tickets does not exist on the server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var boxes []string
			if tc.mailbox != "" {
				boxes = []string{tc.mailbox}
			}
			r := runCheck(t, tc.conn, boxes)
			if r.OK || r.Error == nil || !strings.HasPrefix(r.Error.Message, tc.message) {
				t.Errorf("OK = %v, Error = %+v, want %q", r.OK, r.Error, tc.message)
			}
		})
	}
	t.Run("probe", func(t *testing.T) {
		c := checkConn("127.0.0.1", plainPort, "none")
		sending := false
		c.VerifyWithoutSending = &sending
		c.TestRecipients = []string{"ops@example.com"}
		r := runCheck(t, c, nil)
		if !r.OK || !strings.Contains(r.Stages[len(r.Stages)-1].Detail, "removed it") {
			t.Fatalf("OK = %v, stages = %+v, want a probe that removed its message", r.OK, r.Stages)
		}
		// A second, read-only check counts the mailbox: as before the probe.
		r = runCheck(t, checkConn("127.0.0.1", plainPort, "none"), nil)
		if r.Mailbox == nil || r.Mailbox.Messages != 3 {
			t.Errorf("Mailbox = %+v after the probe, want 3 messages", r.Mailbox)
		}
	})
	t.Run("expired certificate", func(t *testing.T) {
		old := dovecottest.Start(t, &dovecottest.Options{CertNotAfter: time.Date(2025, 1, 2, 12, 0, 0, 0, time.UTC)})
		r := runCheck(t, checkConn("127.0.0.1", port(old.TLSAddr), "ssl"), nil)
		if r.OK || r.Error == nil || r.Error.Message != "the server's certificate expired on 2025-01-02" {
			t.Errorf("OK = %v, Error = %+v, want the expiry", r.OK, r.Error)
		}
	})
}
