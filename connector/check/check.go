package check

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailbus/mailbus/connector/engine"
	imapsrc "github.com/mailbus/mailbus/connector/imap"
	"github.com/mailbus/mailbus/connector/oauth2"
	"github.com/mailbus/mailbus/connector/secrets"
	"github.com/mailbus/mailbus/schemas"
)

const (
	// checkTimeout bounds a whole check when the caller's ctx has no deadline.
	checkTimeout = 60 * time.Second
	// greetingTimeout is how long the check waits for the first line. Real servers greet at
	// once; silence almost always means a TLS port spoken to in plain text.
	greetingTimeout = 5 * time.Second
	// dialTimeout bounds the TCP connection to the server, as the routes' own dial does.
	dialTimeout = imapsrc.DialTimeout
)

// Run runs the stages of a connection check against c, whose secrets are already
// resolved, and reports each with its time: resolve, dial, tls (ssl), greeting, starttls
// (tls), login, a select of each mailbox (nil: INBOX) and, when c asks for it, a
// round-trip probe; for an exchange connection resolve, dial, tls (https), login and a
// select of each folder. It stops at the first failure. A failure is a normal reply with
// OK false, the plain-language cause in the stage and in Error; the reply never holds a
// secret. Only the first mailbox is in Reply.Mailbox; every mailbox's numbers are in the
// Detail of its select stage. Without a deadline on ctx, the check takes at most a minute.
//
// An oauth2 connection gets its token in a stage of its own, token, before login, from ts
// (nil: a new source that keeps a replaced refresh token in memory only).
//
// probeKey signs the probe's engine.ProbeHeader, so that the routes of the deployment
// whose key it is pass over the probe should they see it before it is removed; nil: the
// probe is unsigned, and routes publish it like any mail.
func Run(ctx context.Context, c schemas.Connection, mailboxes []string, ts *oauth2.Source, probeKey []byte) *schemas.Reply {
	if c.Auth == schemas.AuthOAuth2 && ts == nil {
		ts = oauth2.NewSource(&c, nil)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, checkTimeout)
		defer cancel()
	}
	if len(mailboxes) == 0 {
		mailboxes = []string{"INBOX"}
	}
	k := &checker{c: &c, reply: &schemas.Reply{OK: true}, tokens: ts, probeKey: probeKey}
	switch c.Type {
	case "", schemas.TypeIMAP:
		k.run(ctx, mailboxes)
	case schemas.TypeExchange:
		k.runExchange(ctx, mailboxes)
	default:
		k.fail("type", invalid("type", "the connection check does not know connections of type %s", c.Type))
	}
	hidden := secrets.Values(&c)
	if ts != nil {
		hidden = append(hidden, ts.Secrets()...)
	}
	scrubReply(k.reply, hidden)
	return k.reply
}

// checker runs the stages of one check and collects them in reply.
type checker struct {
	c      *schemas.Connection
	reply  *schemas.Reply
	host   string
	port   int
	tokens *oauth2.Source // oauth2 only
	// probeKey signs the probe's engine.ProbeHeader; nil: unsigned.
	probeKey []byte
}

// checkFailure is the cause of a failed stage, in words for the person who owns the
// connection, and whose fault it is: code invalid with the field to fix when the
// definition is wrong, unavailable when the server or the network is.
type checkFailure struct {
	code, field, cause string
}

func (f *checkFailure) Error() string { return f.cause }

func invalid(field, format string, args ...any) *checkFailure {
	return &checkFailure{code: schemas.CodeInvalid, field: field, cause: fmt.Sprintf(format, args...)}
}

func unavailable(format string, args ...any) *checkFailure {
	return &checkFailure{code: schemas.CodeUnavailable, cause: fmt.Sprintf(format, args...)}
}

// stage times f and records it. It returns false when f failed, so the caller stops.
func (k *checker) stage(name string, f func() (detail string, err error)) bool {
	start := time.Now()
	detail, err := f()
	s := schemas.Stage{Stage: name, OK: err == nil, MS: time.Since(start).Milliseconds(), Detail: detail}
	if err != nil {
		var cf *checkFailure
		if !errors.As(err, &cf) {
			cf = unavailable("%s failed: %v", name, err)
		}
		s.Error = cf.cause
		k.reply.Stages = append(k.reply.Stages, s)
		k.fail(name, cf)
		return false
	}
	k.reply.Stages = append(k.reply.Stages, s)
	return true
}

// fail marks the reply failed; a check with no stage yet gets one so the cause shows.
func (k *checker) fail(stage string, cf *checkFailure) {
	if len(k.reply.Stages) == 0 {
		k.reply.Stages = append(k.reply.Stages, schemas.Stage{Stage: stage, Error: cf.cause})
	}
	k.reply.OK = false
	k.reply.Error = &schemas.Error{Code: cf.code, Message: cf.cause, Field: cf.field}
}

func (k *checker) run(ctx context.Context, mailboxes []string) {
	host, portText, err := net.SplitHostPort(imapsrc.Addr(k.c))
	if err != nil || k.c.Host == "" {
		k.fail("resolve", invalid("host", "the connection has no valid host"))
		return
	}
	k.host = host
	k.port, _ = strconv.Atoi(portText)

	raw := k.connect(ctx, func(hostport string) *checkFailure {
		return invalid("port", "nothing listens on %s: check the host and the port (993 for ssl, 143 for tls or none)", hostport)
	})
	if raw == nil {
		return
	}
	// Closing the TCP connection unblocks every layer above it: TLS and imapclient alike.
	defer raw.Close()
	defer context.AfterFunc(ctx, func() { raw.Close() })()

	var conn net.Conn = raw
	if k.c.Encryption == schemas.EncryptionSSL {
		if !k.stage("tls", func() (string, error) {
			tc := tls.Client(raw, k.tlsConfig(nil))
			if err := tc.HandshakeContext(ctx); err != nil {
				return certDetail(err, nil), k.tlsFailure(ctx, err)
			}
			conn = tc
			st := tc.ConnectionState()
			return certDetail(nil, &st), nil
		}) {
			return
		}
	}

	var greeting string
	br := bufio.NewReader(conn)
	if !k.stage("greeting", func() (string, error) {
		greeting, err = k.readGreeting(ctx, conn, br, raw.RemoteAddr().String())
		return greeting, err
	}) {
		return
	}
	// imapclient reads the greeting itself: give it back the line already read.
	replay := replayConn{Conn: conn, r: io.MultiReader(strings.NewReader(greeting+"\r\n"), br)}

	var client *imapclient.Client
	if k.c.Encryption == schemas.EncryptionTLS {
		if !k.stage("starttls", func() (string, error) {
			if caps := greetingCaps(greeting); caps != nil && !caps.Has(imap.CapStartTLS) {
				return "", invalid("encryption", "the server does not offer STARTTLS on port %d: use encryption ssl (usually port 993) or none", k.port)
			}
			var state *tls.ConnectionState
			cfg := k.tlsConfig(func(cs tls.ConnectionState) error { state = &cs; return nil })
			client, err = imapclient.NewStartTLS(replay, &imapclient.Options{TLSConfig: cfg})
			if err != nil {
				var ie *imap.Error
				if errors.As(err, &ie) {
					return "", invalid("encryption", "the server refused STARTTLS (%s): use encryption ssl (usually port 993) or none", ie.Text)
				}
				return certDetail(err, nil), k.tlsFailure(ctx, err)
			}
			return certDetail(nil, state), nil
		}) {
			return
		}
	} else {
		client = imapclient.New(replay, nil)
	}
	defer client.Close()

	var caps imap.CapSet
	if !k.stage("capabilities", func() (string, error) {
		// Caps may send CAPABILITY and wait for the answer; within bounds that wait.
		imapsrc.Within(ctx, imapsrc.CommandTimeout, client, func() error { caps = client.Caps(); return nil })
		if caps == nil {
			return "", unavailable("the server did not list its capabilities")
		}
		k.reply.Capabilities = capList(caps)
		return "", nil
	}) {
		return
	}

	if k.tokens != nil && !k.stage("token", func() (string, error) { return k.token(ctx) }) {
		return
	}
	if !k.stage("login", func() (string, error) { return k.login(ctx, client, caps) }) {
		return
	}
	// Servers announce more once logged in (UIDPLUS, IDLE, MOVE): those are the ones that
	// matter to a route.
	if after := client.Caps(); after != nil {
		caps = after
		k.reply.Capabilities = capList(caps)
	}

	for _, name := range mailboxes {
		if !k.stage("select", func() (string, error) { return k.selectMailbox(ctx, client, name) }) {
			return
		}
	}

	if !k.c.ReadOnlyCheck() && len(k.c.TestRecipients) > 0 {
		k.stage("probe", func() (string, error) { return k.probe(ctx, client, caps, mailboxes[0]) })
	}
	// A polite goodbye; the check's result does not depend on it.
	_ = imapsrc.Within(ctx, time.Second, client, client.Logout().Wait)
}

func (k *checker) resolve(ctx context.Context) ([]string, error) {
	if ip := net.ParseIP(k.host); ip != nil {
		return []string{k.host}, nil
	}
	addrs, err := net.DefaultResolver.LookupHost(ctx, k.host)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return nil, invalid("host", "the name %s does not exist in DNS: check the host", k.host)
		}
		return nil, unavailable("the DNS lookup of %s failed: %v", k.host, err)
	}
	return addrs, nil
}

// connect runs the stages resolve and dial: it returns the connection to the first
// address of k.host that answers on k.port, or nil when a stage failed (the reply says
// why). refused is the failure when nothing listens on host:port.
func (k *checker) connect(ctx context.Context, refused func(hostport string) *checkFailure) net.Conn {
	var addrs []string
	var err error
	if !k.stage("resolve", func() (string, error) {
		addrs, err = k.resolve(ctx)
		return strings.Join(addrs, ", "), err
	}) {
		return nil
	}
	var raw net.Conn
	if !k.stage("dial", func() (string, error) {
		raw, err = k.dial(ctx, addrs, refused)
		if err != nil {
			return "", err
		}
		return "connected to " + raw.RemoteAddr().String(), nil
	}) {
		return nil
	}
	return raw
}

// dial connects to the first address that answers.
func (k *checker) dial(ctx context.Context, addrs []string, refused func(hostport string) *checkFailure) (net.Conn, error) {
	hostport := net.JoinHostPort(k.host, strconv.Itoa(k.port))
	d := &net.Dialer{Timeout: imapsrc.DialTimeout}
	var err error
	for _, a := range addrs {
		var conn net.Conn
		conn, err = d.DialContext(ctx, "tcp", net.JoinHostPort(a, strconv.Itoa(k.port)))
		if err == nil {
			return conn, nil
		}
	}
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return nil, refused(hostport)
	case errors.As(err, &ne) && ne.Timeout():
		return nil, unavailable("%s did not answer within %s: the host may be down or a firewall in the way", hostport, imapsrc.DialTimeout)
	}
	return nil, unavailable("could not connect to %s: %v", hostport, err)
}

func (k *checker) tlsConfig(verified func(tls.ConnectionState) error) *tls.Config {
	return &tls.Config{
		ServerName:         k.host,
		InsecureSkipVerify: k.c.TLSInsecureSkipVerify,
		MinVersion:         tls.VersionTLS12,
		VerifyConnection:   verified,
	}
}

// tlsFailure turns a failed handshake into what to do about it.
func (k *checker) tlsFailure(ctx context.Context, err error) *checkFailure {
	var (
		rec      tls.RecordHeaderError
		hostname x509.HostnameError
		bad      x509.CertificateInvalidError
		unknown  x509.UnknownAuthorityError
	)
	switch {
	case errors.As(err, &rec):
		if bytes.HasPrefix(rec.RecordHeader[:], []byte("* ")) {
			return invalid("encryption", "port %d speaks plain IMAP: use encryption tls (STARTTLS) or none", k.port)
		}
		return invalid("encryption", "port %d does not speak TLS: use encryption tls (STARTTLS) or none, or the IMAPS port (993)", k.port)
	case errors.As(err, &hostname):
		return invalid("host", "the server's certificate is for %s, not %s", strings.Join(certNames(hostname.Certificate), ", "), k.host)
	case errors.As(err, &bad) && bad.Reason == x509.Expired:
		if time.Now().Before(bad.Cert.NotBefore) {
			return unavailable("the server's certificate is not valid before %s", bad.Cert.NotBefore.UTC().Format(time.DateOnly))
		}
		return unavailable("the server's certificate expired on %s", bad.Cert.NotAfter.UTC().Format(time.DateOnly))
	case errors.As(err, &unknown):
		return unavailable("the certificate is not signed by a trusted authority (set tlsInsecureSkipVerify only for testing)")
	case ctx.Err() != nil:
		return unavailable("the TLS handshake did not finish in time")
	}
	return unavailable("the TLS handshake failed: %v", err)
}

// readGreeting reads the server's first line and recognises a TLS server spoken to in
// plain text: it says nothing (it waits for our hello) or answers with a TLS record.
func (k *checker) readGreeting(ctx context.Context, conn net.Conn, br *bufio.Reader, addr string) (string, error) {
	deadline := time.Now().Add(greetingTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetReadDeadline(deadline)
	line, err := br.ReadString('\n')
	conn.SetReadDeadline(time.Time{})
	line = strings.TrimRight(line, "\r\n")

	speaksTLS := fmt.Sprintf("port %d expects TLS from the first byte: use encryption ssl", k.port)
	if line != "" && (line[0] == 0x15 || line[0] == 0x16) {
		return "", invalid("encryption", "%s", speaksTLS)
	}
	if err != nil {
		if line == "" && k.c.Encryption != schemas.EncryptionSSL && sniffTLS(ctx, addr, k.host) {
			return "", invalid("encryption", "%s", speaksTLS)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "", unavailable("the server sent no greeting within %s: is port %d an IMAP port?", greetingTimeout, k.port)
		}
		return "", unavailable("the server closed the connection before greeting: %v", err)
	}
	switch {
	case strings.HasPrefix(line, "* OK"), strings.HasPrefix(line, "* PREAUTH"):
		return line, nil
	case strings.HasPrefix(line, "* BYE"):
		return "", unavailable("the server turned the connection away: %s", strings.TrimSpace(strings.TrimPrefix(line, "* BYE")))
	}
	return "", invalid("port", "port %d does not speak IMAP (it said %q)", k.port, truncate(line, 80))
}

// sniffTLS reports whether addr completes a TLS handshake on a fresh connection. Only
// used to explain a silent server, so the certificate does not matter.
func sniffTLS(ctx context.Context, addr, host string) bool {
	ctx, cancel := context.WithTimeout(ctx, greetingTimeout)
	defer cancel()
	d := &tls.Dialer{Config: &tls.Config{ServerName: host, InsecureSkipVerify: true}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		var alert tls.AlertError
		return errors.As(err, &alert)
	}
	conn.Close()
	return true
}

func (k *checker) login(ctx context.Context, client *imapclient.Client, caps imap.CapSet) (string, error) {
	if k.c.Auth == schemas.AuthNone || k.c.Auth == "" {
		if client.State() == imap.ConnStateNotAuthenticated {
			return "", invalid("auth", "the server wants a user name and password: set auth basic")
		}
		return "pre-authenticated by the server", nil
	}
	if k.c.Auth == schemas.AuthBasic && caps.Has(imap.CapLoginDisabled) && !caps.Has(imap.Cap("AUTH=PLAIN")) {
		return "", invalid("encryption", "the server does not accept passwords over an unencrypted connection: use encryption ssl or tls")
	}
	// The same login the route worker does, so a passing check means the route logs in too.
	err := imapsrc.Within(ctx, imapsrc.LoginTimeout, client, func() error { return imapsrc.Authenticate(ctx, client, k.c, k.tokens) })
	if err == nil {
		if k.tokens != nil {
			return "logged in as " + k.c.Username + " with " + imapsrc.OAuthMechanism(caps), nil
		}
		return "logged in as " + k.c.Username, nil
	}
	var ie *imap.Error
	var te *oauth2.TokenError
	switch {
	case errors.As(err, &te) && te.Field != "":
		return "", invalid(te.Field, "%s", te.Message())
	case errors.As(err, &te):
		return "", unavailable("%s", te.Message())
	case k.tokens != nil && imapsrc.IsPermanent(err) && !errors.Is(err, imapsrc.ErrTimeout):
		return "", invalid("oauth2", "%v", err)
	case errors.As(err, &ie):
		return "server said: " + ie.Text, invalid("password", "the server refused the user name or password")
	case errors.Is(err, imapsrc.ErrTimeout):
		return "", unavailable("the server did not answer the login within %s", imapsrc.LoginTimeout)
	case imapsrc.IsPermanent(err):
		return "", invalid("auth", "%v", err)
	}
	return "", unavailable("login failed: %v", err)
}

// token gets the access token the login will use, so that a failure of the token endpoint
// shows as such and not as a refused login.
func (k *checker) token(ctx context.Context) (string, error) {
	_, _, err := k.tokens.Token(ctx)
	var te *oauth2.TokenError
	switch {
	case err == nil:
		return k.tokens.Describe(), nil
	case errors.As(err, &te) && te.Field != "":
		return "", invalid(te.Field, "%s", te.Message())
	case errors.As(err, &te):
		return "", unavailable("%s", te.Message())
	case imapsrc.IsPermanent(err):
		return "", invalid("oauth2", "%v", err)
	}
	return "", unavailable("getting the access token failed: %v", err)
}

func (k *checker) selectMailbox(ctx context.Context, client *imapclient.Client, name string) (string, error) {
	var st *imap.StatusData
	var sel *imap.SelectData
	err := imapsrc.Within(ctx, imapsrc.CommandTimeout, client, func() (err error) {
		// EXAMINE first: it is what a route needs to work, it has no side effects, and
		// servers answer it with NONEXISTENT where their STATUS answers a bare NO.
		// STATUS of the selected mailbox is only discouraged for its cost (RFC 3501
		// 6.3.10), which one check does not mind.
		sel, err = client.Select(name, &imap.SelectOptions{ReadOnly: true}).Wait()
		if err != nil {
			return err
		}
		st, err = client.Status(name, &imap.StatusOptions{NumUnseen: true}).Wait()
		return err
	})
	if err != nil {
		var ie *imap.Error
		if errors.As(err, &ie) {
			if ie.Code == imap.ResponseCodeNonExistent || ie.Code == imap.ResponseCodeTryCreate || !k.listed(ctx, client, name) {
				return "", invalid("mailbox", "mailbox %s does not exist on the server", name)
			}
			return "", invalid("mailbox", "the server refused to open mailbox %s: %s", name, ie.Text)
		}
		return "", unavailable("opening mailbox %s failed: %v", name, err)
	}
	m := schemas.MailboxCheck{Name: name, Messages: sel.NumMessages, UidValidity: sel.UIDValidity, UidNext: uint32(sel.UIDNext)}
	if st.NumUnseen != nil {
		m.Unseen = *st.NumUnseen
	}
	if k.reply.Mailbox == nil {
		k.reply.Mailbox = &m
	}
	return fmt.Sprintf("%s: %d messages, %d unseen, uidValidity %d, uidNext %d",
		name, m.Messages, m.Unseen, m.UidValidity, m.UidNext), nil
}

// listed reports whether LIST knows the mailbox: some servers (Dovecot) refuse a missing
// mailbox with a bare NO, no NONEXISTENT code. When LIST itself fails it says yes, so
// the server's own refusal is what the user sees.
func (k *checker) listed(ctx context.Context, client *imapclient.Client, name string) bool {
	var found []*imap.ListData
	err := imapsrc.Within(ctx, imapsrc.CommandTimeout, client, func() (err error) {
		found, err = client.List("", name, nil).Collect()
		return err
	})
	return err != nil || len(found) > 0
}

// probe appends a message addressed to the test recipients, finds it by UID, fetches it
// back and removes it. Without UIDPLUS it cannot remove just that one message (a plain
// EXPUNGE would also purge others' \Deleted mail), so it does not append at all.
func (k *checker) probe(ctx context.Context, client *imapclient.Client, caps imap.CapSet, mailbox string) (string, error) {
	if !caps.Has(imap.CapUIDPlus) && !caps.Has(imap.CapIMAP4rev2) {
		return "skipped: the server has no UIDPLUS, so a probe could not be removed without touching other mail; the mailbox was left untouched", nil
	}
	var to []string
	for _, r := range k.c.TestRecipients {
		a, err := mail.ParseAddress(r)
		if err != nil {
			return "", invalid("testRecipients", "test recipient %q is not an e-mail address", r)
		}
		to = append(to, a.String())
	}
	id := rand.Text()
	msg := probeMessage(engine.ProbeValue(k.probeKey, id), id, to)

	var uid imap.UID
	err := imapsrc.Within(ctx, imapsrc.CommandTimeout, client, func() error {
		if _, err := client.Select(mailbox, nil).Wait(); err != nil {
			return fmt.Errorf("select %s: %w", mailbox, err)
		}
		// Seen, so that a route selecting unseen mail passes it by even before it looks
		// at the header.
		cmd := client.Append(mailbox, int64(len(msg)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen}})
		if _, err := cmd.Write(msg); err != nil {
			return fmt.Errorf("append: %w", err)
		}
		if err := cmd.Close(); err != nil {
			return fmt.Errorf("append: %w", err)
		}
		data, err := cmd.Wait()
		if err != nil {
			return fmt.Errorf("append: %w", err)
		}
		uid = data.UID
		if uid == 0 {
			found, err := client.UIDSearch(&imap.SearchCriteria{
				Header: []imap.SearchCriteriaHeaderField{{Key: engine.ProbeHeader, Value: id}},
			}, nil).Wait()
			if err != nil {
				return fmt.Errorf("search the probe: %w", err)
			}
			if uids := found.AllUIDs(); len(uids) == 1 {
				uid = uids[0]
			}
		}
		if uid == 0 {
			return errors.New("the appended probe could not be found")
		}
		section := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{engine.ProbeHeader}, Peek: true}
		msgs, err := client.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
		if err != nil {
			return fmt.Errorf("fetch the probe: %w", err)
		}
		if len(msgs) != 1 || !bytes.Contains(msgs[0].FindBodySection(section), []byte(id)) {
			return fmt.Errorf("fetch of UID %d did not return the probe", uid)
		}
		return nil
	})
	removed := uid != 0 && imapsrc.Within(ctx, imapsrc.CommandTimeout, client, func() error {
		uids := imap.UIDSetNum(uid)
		if err := client.Store(uids, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
			return err
		}
		return client.UIDExpunge(uids).Close()
	}) == nil
	switch {
	case err != nil:
		return "", unavailable("the round trip through %s failed: %v", mailbox, err)
	case !removed:
		return "", unavailable("the probe (UID %d, header %s: %s) was appended to %s but could not be removed: delete it by hand", uid, engine.ProbeHeader, id, mailbox)
	}
	return fmt.Sprintf("appended UID %d to %s for %s, fetched it back and removed it", uid, mailbox, strings.Join(to, ", ")), nil
}

// probeMessage is the probe of id, with value in its engine.ProbeHeader.
func probeMessage(value, id string, to []string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: mailbus <mailbus@localhost>\r\n")
	fmt.Fprintf(&b, "To: %s\r\n", strings.Join(to, ", "))
	fmt.Fprintf(&b, "Subject: mailbus connection check\r\n")
	fmt.Fprintf(&b, "Date: %s\r\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@mailbus.probe>\r\n", id)
	fmt.Fprintf(&b, "%s: %s\r\n", engine.ProbeHeader, value)
	fmt.Fprintf(&b, "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	fmt.Fprintf(&b, "This message was added by a mailbus connection check and is removed at once.\r\n")
	return []byte(b.String())
}

// greetingCaps reads the capabilities a greeting may carry ("* OK [CAPABILITY ...] ...");
// nil when it carries none.
func greetingCaps(greeting string) imap.CapSet {
	_, rest, ok := strings.Cut(greeting, "[CAPABILITY ")
	if !ok {
		return nil
	}
	list, _, _ := strings.Cut(rest, "]")
	caps := imap.CapSet{}
	for _, c := range strings.Fields(list) {
		caps[imap.Cap(strings.ToUpper(c))] = struct{}{}
	}
	return caps
}

func capList(caps imap.CapSet) []string {
	l := make([]string, 0, len(caps))
	for c := range caps {
		l = append(l, string(c))
	}
	slices.Sort(l)
	return l
}

// certDetail describes the server certificate: from the connection when it verified, or
// from the verification error when it did not.
func certDetail(err error, st *tls.ConnectionState) string {
	var certs []*x509.Certificate
	var verr *tls.CertificateVerificationError
	switch {
	case st != nil:
		certs = st.PeerCertificates
	case errors.As(err, &verr):
		certs = verr.UnverifiedCertificates
	}
	if len(certs) == 0 {
		return ""
	}
	c := certs[0]
	return fmt.Sprintf("certificate subject CN=%s, names %s, expires %s, issued by %s",
		c.Subject.CommonName, strings.Join(certNames(c), ", "), c.NotAfter.UTC().Format(time.DateOnly), c.Issuer.CommonName)
}

// certNames lists the names a certificate is valid for.
func certNames(c *x509.Certificate) []string {
	names := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	return names
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// replayConn reads from r (the greeting already read, then the rest) and writes to Conn.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c replayConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// scrubReply removes the secrets from every text of a check reply. The stages never put
// one there; this is the last line of defence against a server that echoes one back.
func scrubReply(r *schemas.Reply, hidden []string) {
	for i := range r.Stages {
		r.Stages[i].Detail = secrets.Scrub(r.Stages[i].Detail, hidden)
		r.Stages[i].Error = secrets.Scrub(r.Stages[i].Error, hidden)
	}
	if r.Error != nil {
		r.Error.Message = secrets.Scrub(r.Error.Message, hidden)
	}
}
