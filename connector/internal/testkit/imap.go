package testkit

import (
	"bytes"
	"crypto/tls"
	"io"
	"log"
	"net"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// IMAPOptions shape the server StartIMAP runs. A nil *IMAPOptions is the zero value.
type IMAPOptions struct {
	// Users maps each user's name to its password; nil is alice/secret.
	Users map[string]string
	// Mailboxes are made for every user; nil is INBOX.
	Mailboxes []string
	// Caps is what the server offers; nil is IMAP4rev1, UIDPLUS and MOVE (IDLE comes
	// with the session).
	Caps imap.CapSet
	// Session, when set, wraps each new session of the in-memory server, already made to
	// announce queued mail (see IdleAnnouncing); c is the client's connection.
	Session func(c *imapserver.Conn, s imapserver.Session) imapserver.Session
	// TLS, when set, is offered with STARTTLS, or from the first byte with ImplicitTLS.
	TLS         *tls.Config
	ImplicitTLS bool
}

// IMAP is go-imap's in-memory server (imapmemserver) served on a free loopback port.
type IMAP struct {
	Addr  string
	srv   *imapserver.Server
	users map[string]*imapmemserver.User
}

// StartIMAP serves go-imap's in-memory server with o's users, mailboxes and capabilities
// on a free loopback port until t ends.
func StartIMAP(t testing.TB, o *IMAPOptions) *IMAP {
	t.Helper()
	if o == nil {
		o = &IMAPOptions{}
	}
	users, mailboxes, caps := o.Users, o.Mailboxes, o.Caps
	if users == nil {
		users = map[string]string{"alice": "secret"}
	}
	if mailboxes == nil {
		mailboxes = []string{"INBOX"}
	}
	if caps == nil {
		caps = imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapUIDPlus: {}, imap.CapMove: {}}
	}
	mem := imapmemserver.New()
	s := &IMAP{users: map[string]*imapmemserver.User{}}
	for name, pass := range users {
		u := imapmemserver.NewUser(name, pass)
		for _, mb := range mailboxes {
			if err := u.Create(mb, nil); err != nil {
				t.Fatalf("Create(%s) = %v", mb, err)
			}
		}
		mem.AddUser(u)
		s.users[name] = u
	}
	opts := &imapserver.Options{
		NewSession: func(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			sess := IdleAnnouncing(mem.NewSession())
			if o.Session != nil {
				sess = o.Session(c, sess)
			}
			return sess, nil, nil
		},
		InsecureAuth: true,
		Caps:         caps,
		Logger:       log.New(io.Discard, "", 0), // it reports every connection a worker closes
	}
	if o.TLS != nil && !o.ImplicitTLS {
		opts.TLSConfig = o.TLS
	}
	s.srv = imapserver.New(opts)
	t.Cleanup(func() { s.srv.Close() })
	ln := listen(t)
	if o.TLS != nil && o.ImplicitTLS {
		ln = tls.NewListener(ln, o.TLS)
	}
	s.Addr = s.Serve(ln)
	return s
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	return ln
}

// Serve serves the same server on ln as well, until the server closes, and returns ln's
// address.
func (s *IMAP) Serve(ln net.Listener) string {
	go s.srv.Serve(ln)
	return ln.Addr().String()
}

// Listen serves the same server on one more free loopback port, its listener wrapped by
// wrap, and returns the port's address.
func (s *IMAP) Listen(t testing.TB, wrap func(net.Listener) net.Listener) string {
	t.Helper()
	return s.Serve(wrap(listen(t)))
}

// User is the user of that name.
func (s *IMAP) User(name string) *imapmemserver.User { return s.users[name] }

// Append stores raw in the mailbox of user with flags, and returns its UID.
func (s *IMAP) Append(t testing.TB, user, mailbox string, raw []byte, flags ...imap.Flag) imap.UID {
	t.Helper()
	d, err := s.users[user].Append(mailbox, bytes.NewReader(raw), &imap.AppendOptions{Flags: flags})
	if err != nil {
		t.Fatalf("Append(%s) = %v", mailbox, err)
	}
	return d.UID
}

// idleAnnouncing mends one gap of go-imap v2.0.0-beta.8's in-memory server:
// SessionTracker.Idle announces only the updates queued after it registered, so mail
// appended between a client's last command and its IDLE stayed unannounced until the next
// update (TestIMAPCycle and TestIMAPIdleDelivery timed out about once in ten runs). Dovecot
// announces it. The wrapper writes what is queued as IDLE starts, and a few times more
// while the tracker registers, as Idle itself would on its next update.
type idleAnnouncing struct{ imapserver.SessionIMAP4rev2 }

// IdleAnnouncing wraps a session of go-imap's in-memory server so that IDLE announces the
// mail queued before it, as Dovecot does. StartIMAP wraps every session so.
func IdleAnnouncing(s imapserver.Session) imapserver.Session {
	return idleAnnouncing{s.(imapserver.SessionIMAP4rev2)}
}

func (s idleAnnouncing) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	done := make(chan error, 1)
	go func() { done <- s.SessionIMAP4rev2.Idle(w, stop) }()
	for _, d := range []time.Duration{0, 10 * time.Millisecond, 100 * time.Millisecond, time.Second} {
		select {
		case err := <-done:
			return err
		case <-time.After(d):
		}
		if err := s.Poll(w, true); err != nil {
			<-done
			return err
		}
	}
	return <-done
}
