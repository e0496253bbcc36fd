package imap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/retry"

	"github.com/Azure/go-ntlmssp"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"github.com/mailbus/mailbus/connector/oauth2"
	"github.com/mailbus/mailbus/connector/secrets"
	"github.com/mailbus/mailbus/schemas"
)

// Timeouts of the IMAP conversation. A FETCH has no overall limit (a mailbox of large mail
// takes as long as it takes); it must make progress every CommandTimeout instead.
const (
	DialTimeout    = 15 * time.Second
	LoginTimeout   = 30 * time.Second
	CommandTimeout = 60 * time.Second
)

// ErrTimeout is the cause of a command cut off by its deadline.
var ErrTimeout = errors.New("imap: no answer in time")

// Addr is the host:port of an IMAP connection, with the contract's default ports: 993
// for ssl, 143 otherwise.
func Addr(c *schemas.Connection) string {
	port := c.Port
	if port == 0 {
		port = 143
		if c.Encryption == schemas.EncryptionSSL {
			port = 993
		}
	}
	return net.JoinHostPort(c.Host, strconv.Itoa(port))
}

// DialIMAP connects to the connection's server, secures the connection as its encryption
// says and authenticates. roots verifies the server certificate (nil: the system pool).
// ctx ends the attempt early. Errors are sorted for IsPermanent and never contain the
// password. The caller owns the client and must Close it. An oauth2 connection gets its
// token afresh; a refresh token the endpoint replaces is not stored.
func DialIMAP(ctx context.Context, conn *schemas.Connection, roots *x509.CertPool, opts *imapclient.Options) (*imapclient.Client, error) {
	return dialIMAP(ctx, conn, roots, opts, nil)
}

// dialIMAP is DialIMAP with the token source of an oauth2 connection (nil: a new one).
func dialIMAP(ctx context.Context, conn *schemas.Connection, roots *x509.CertPool, opts *imapclient.Options, ts *oauth2.Source) (*imapclient.Client, error) {
	if opts == nil {
		opts = &imapclient.Options{}
	}
	addr := Addr(conn)
	d := &net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	raw = &readAheadConn{Conn: raw}
	tlsConfig := &tls.Config{
		ServerName:         conn.Host,
		RootCAs:            roots,
		InsecureSkipVerify: conn.TLSInsecureSkipVerify,
		MinVersion:         tls.VersionTLS12,
	}

	var c *imapclient.Client
	switch conn.Encryption {
	case schemas.EncryptionNone, "":
		c = imapclient.New(raw, opts)
		err = Within(ctx, LoginTimeout, raw, c.WaitGreeting)
	case schemas.EncryptionSSL:
		tc := tls.Client(raw, tlsConfig)
		hctx, cancel := context.WithTimeout(ctx, LoginTimeout)
		err = tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			raw.Close()
			return nil, tlsError(addr, err)
		}
		c = imapclient.New(tc, opts)
		err = Within(ctx, LoginTimeout, raw, c.WaitGreeting)
	case schemas.EncryptionTLS:
		o := *opts
		o.TLSConfig = tlsConfig
		err = Within(ctx, LoginTimeout, raw, func() (err error) {
			c, err = imapclient.NewStartTLS(raw, &o)
			return err
		})
		if err != nil {
			raw.Close()
			var ie *imap.Error
			if errors.As(err, &ie) {
				return nil, retry.Permanent(fmt.Errorf("%s refused STARTTLS (encryption tls needs it; use ssl or none): %w", addr, err))
			}
			return nil, tlsError(addr, err)
		}
	default:
		raw.Close()
		return nil, retry.Permanent(fmt.Errorf("unknown encryption %q", conn.Encryption))
	}
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("greeting from %s: %w", addr, err)
	}
	if err := Within(ctx, LoginTimeout, c, func() error { return Authenticate(ctx, c, conn, ts) }); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// tlsError names a TLS failure; a certificate that does not verify is permanent.
func tlsError(addr string, err error) error {
	err = fmt.Errorf("tls with %s: %w", addr, err)
	if IsPermanent(err) {
		return retry.Permanent(err)
	}
	return err
}

// Authenticate logs in as the connection's auth says, oauth2 with tokens from ts (nil: a
// new source). A refusal by the server is permanent: trying the same credentials again soon
// only risks locking the account.
func Authenticate(ctx context.Context, c *imapclient.Client, conn *schemas.Connection, ts *oauth2.Source) error {
	caps := c.Caps()
	var err error
	switch conn.Auth {
	case schemas.AuthNone, "":
		return nil
	case schemas.AuthBasic:
		switch {
		case !caps.Has(imap.CapLoginDisabled):
			err = c.Login(conn.Username, conn.Password).Wait()
		case caps.Has(imap.Cap("AUTH=PLAIN")):
			err = c.Authenticate(sasl.NewPlainClient("", conn.Username, conn.Password))
		default:
			return retry.Permanent(errors.New("login: the server disables LOGIN and offers no AUTH=PLAIN (is encryption none where the server wants TLS?)"))
		}
	case schemas.AuthWindows:
		if !caps.Has(imap.Cap("AUTH=NTLM")) {
			return retry.Permanent(fmt.Errorf("login: windows authentication needs AUTH=NTLM, which the server does not offer (it offers %s)", authMechs(caps)))
		}
		user := conn.Username
		if conn.Domain != "" {
			user = conn.Domain + `\` + conn.Username
		}
		err = c.Authenticate(&ntlmClient{user: user, password: conn.Password})
	case schemas.AuthOAuth2:
		if ts == nil {
			ts = oauth2.NewSource(conn, nil)
		}
		_, p, _ := net.SplitHostPort(Addr(conn))
		port, _ := strconv.Atoi(p)
		return oauthLogin(ctx, c, conn, ts, conn.Host, port)
	default:
		return retry.Permanent(fmt.Errorf("login: unknown auth %q", conn.Auth))
	}
	if err != nil {
		var ie *imap.Error
		if errors.As(err, &ie) {
			return retry.Permanent(fmt.Errorf("login as %q: %w", conn.Username, err))
		}
		return fmt.Errorf("login as %q: %w", conn.Username, err)
	}
	return nil
}

// authMechs lists the server's SASL mechanisms for an error message.
func authMechs(caps imap.CapSet) string {
	var l []string
	for c := range caps {
		if m, ok := strings.CutPrefix(string(c), "AUTH="); ok {
			l = append(l, m)
		}
	}
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

// ntlmClient is the SASL side of AUTHENTICATE NTLM: negotiate, then answer the challenge.
type ntlmClient struct{ user, password string }

func (n *ntlmClient) Start() (string, []byte, error) {
	msg, err := ntlmssp.NewNegotiateMessage("", "")
	return "NTLM", msg, err
}

func (n *ntlmClient) Next(challenge []byte) ([]byte, error) {
	return ntlmssp.NewAuthenticateMessage(challenge, n.user, n.password, nil)
}

// readAheadConn gives a connection's reads a large buffer while they keep filling it: a
// FETCH of large mail then costs a read system call per 64 KB rather than per 4 KB
// (imapclient's buffer), which was an eighth of the worker's CPU on a corpus of 1 GB. Once
// a read comes up short the connection has caught up with the server; it hands the buffer
// back when empty and reads straight into the caller's again, so that a thousand routes
// waiting in IDLE hold none.
//
// It also sets the read deadline lazily: imapclient sets one before every response and
// every literal, four a message, each a change of a runtime timer (3 % of mailbus's CPU
// on 20,000 small messages). The deadline asked for is set on the connection only before
// a read that reaches it, and then a second later than asked, so that the next second's
// deadlines need no change: a stalled read times out at most a second late.
type readAheadConn struct {
	net.Conn
	buf  *[]byte // from readAheadPool, nil while cold
	r, w int     // unread bytes are (*buf)[r:w]
	hot  bool    // the last read filled what it was given
	// deadline is the read deadline asked for (UnixNano, 0 for none), applied the one set
	// on Conn. The deadline is set from any goroutine, as a net.Conn's may be: imapclient's
	// reader sets it on its way out while STARTTLS's handshake reads (a race CI found).
	deadline atomic.Int64
	applied  time.Time
}

// deadlineSlack is how much later than asked a read deadline may be set.
const deadlineSlack = time.Second

func (c *readAheadConn) SetReadDeadline(t time.Time) error {
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	c.deadline.Store(ns)
	return nil
}

func (c *readAheadConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

// connRead reads from the connection, its read deadline set first if it must change:
// none where none is asked, and one between the one asked and a second later.
func (c *readAheadConn) connRead(p []byte) (int, error) {
	var d time.Time
	if ns := c.deadline.Load(); ns != 0 {
		d = time.Unix(0, ns)
	}
	if d.IsZero() != c.applied.IsZero() || d.After(c.applied) || c.applied.Sub(d) > deadlineSlack {
		if !d.IsZero() {
			d = d.Add(deadlineSlack)
		}
		if err := c.Conn.SetReadDeadline(d); err != nil {
			return 0, err
		}
		c.applied = d
	}
	return c.Conn.Read(p)
}

const readAheadSize = 64 << 10

var readAheadPool = sync.Pool{New: func() any { b := make([]byte, readAheadSize); return &b }}

func (c *readAheadConn) Read(p []byte) (int, error) {
	if c.r == c.w && c.hot && len(p) < readAheadSize {
		if c.buf == nil {
			c.buf = readAheadPool.Get().(*[]byte)
		}
		n, err := c.connRead(*c.buf)
		c.r, c.w, c.hot = 0, n, n == len(*c.buf)
		if n == 0 {
			c.release()
			return 0, err
		}
		k := c.take(p)
		return k, err
	}
	if c.r < c.w {
		return c.take(p), nil
	}
	c.release()
	n, err := c.connRead(p)
	c.hot = n > 0 && n == len(p)
	return n, err
}

// take copies buffered bytes to p; the buffer goes back to the pool once drained, unless
// the connection is still hot.
func (c *readAheadConn) take(p []byte) int {
	n := copy(p, (*c.buf)[c.r:c.w])
	c.r += n
	if c.r == c.w && !c.hot {
		c.release()
	}
	return n
}

func (c *readAheadConn) release() {
	if c.buf != nil {
		readAheadPool.Put(c.buf)
		c.buf, c.r, c.w = nil, 0, 0
	}
}

// Within runs f, an imapclient call that cannot be cancelled, and closes c when ctx ends or
// d passes first so that f returns. It then reports the timeout or the cancellation rather
// than the "use of closed connection" f saw.
func Within(ctx context.Context, d time.Duration, c io.Closer, f func() error) error {
	ctx, cancel := context.WithTimeoutCause(ctx, d, ErrTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	err := f()
	if !stop() {
		return fmt.Errorf("%w (after %s)", context.Cause(ctx), d)
	}
	return err
}

// errTokenRenew ends an IMAP session whose access token is about to expire; the worker
// reconnects at once, which is not a failure.
var errTokenRenew = engine.ErrRenew

// OAuthMechanism picks the SASL mechanism the server offers, OAUTHBEARER first.
func OAuthMechanism(caps imap.CapSet) string {
	for _, m := range []string{oauth2.MechOAuthBearer, oauth2.MechXOAuth2} {
		if caps.Has(imap.Cap("AUTH=" + m)) {
			return m
		}
	}
	return ""
}

// oauthLogin authenticates with an access token. A refused token that was not issued just
// now (a static one, or one cached from an earlier login) is replaced once from the token
// endpoint; a refused fresh one is permanent: the grant was revoked or lacks the mail scope.
func oauthLogin(ctx context.Context, c *imapclient.Client, conn *schemas.Connection, ts *oauth2.Source, host string, port int) error {
	mech := OAuthMechanism(c.Caps())
	if mech == "" {
		return retry.Permanent(fmt.Errorf("login: oauth2 needs AUTH=OAUTHBEARER or AUTH=XOAUTH2, which the server does not offer (it offers %s)", authMechs(c.Caps())))
	}
	for try := 0; ; try++ {
		tok, fresh, err := ts.Token(ctx)
		if err != nil {
			return fmt.Errorf("oauth2 token: %w", err)
		}
		sc := &oauth2.SASLClient{Mech: mech, User: conn.Username, Token: tok, Host: host, Port: port}
		err = c.Authenticate(sc)
		if err == nil {
			return nil
		}
		var ie *imap.Error
		if !errors.As(err, &ie) {
			return fmt.Errorf("login as %q with %s: %w", conn.Username, mech, err)
		}
		why := fmt.Sprintf("login as %q with %s: the server refused the access token (%s%s)",
			conn.Username, mech, secrets.Scrub(ie.Text, []string{tok}), sc.Status())
		if fresh || try > 0 || !ts.Renewable() {
			if fresh || try > 0 {
				why += ": a newly issued token was refused, so the grant was revoked, lacks the mail scope, or is for another user"
			}
			return retry.Permanent(errors.New(why))
		}
		ts.Reject(tok)
	}
}
