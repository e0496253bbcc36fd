package ews

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	ntlmssp "github.com/Azure/go-ntlmssp"

	"github.com/mailbus/mailbus/connector/oauth2"
	"github.com/mailbus/mailbus/connector/retry"
	"github.com/mailbus/mailbus/schemas"
)

// DefaultPath is where Exchange serves EWS when exchangeUrl names only a host.
const DefaultPath = "/EWS/Exchange.asmx"

// versions are the RequestServerVersion values EWS knows, oldest first.
var versions = []string{
	"Exchange2007_SP1", "Exchange2010", "Exchange2010_SP1", "Exchange2010_SP2",
	"Exchange2013", "Exchange2013_SP1",
}

// ServerVersion is the RequestServerVersion sent for a connection's exchangeVersion.
// Exchange 2016 and 2019 have no value of their own: they speak the Exchange2013_SP1 schema.
// An empty version means the newest.
func ServerVersion(v string) (string, error) {
	switch v {
	case "", "Exchange2016", "Exchange2019":
		return "Exchange2013_SP1", nil
	}
	if !slices.Contains(versions, v) {
		return "", fmt.Errorf("exchangeVersion %q is not one of Exchange2007_SP1 .. Exchange2019", v)
	}
	return v, nil
}

// Endpoint is the EWS URL of a connection: exchangeUrl is a host with an optional path,
// encryption none means http and anything else https.
func Endpoint(c *schemas.Connection) (string, error) {
	raw := strings.TrimSpace(c.ExchangeURL)
	if strings.Contains(raw, "://") {
		return "", fmt.Errorf("exchangeUrl %q: give the host and path without http:// or https://", raw)
	}
	scheme := "https"
	if c.Encryption == schemas.EncryptionNone {
		scheme = "http"
	}
	u, err := url.Parse(scheme + "://" + raw)
	if err != nil || u.Host == "" || u.User != nil {
		return "", fmt.Errorf("exchangeUrl %q: want a host with an optional path, such as mail.example.com/EWS/Exchange.asmx", raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = DefaultPath
	}
	return u.String(), nil
}

// Client speaks EWS SOAP to one Exchange endpoint. It is safe for one goroutine at a time:
// NTLM authenticates the TCP connection, so requests share a single kept-alive connection.
type Client struct {
	url      string
	version  string
	auth     string
	user     string
	password string
	tokens   *oauth2.Source // auth oauth2
	// impersonate is the mailbox an application token acts for (ExchangeImpersonation and
	// X-AnchorMailbox, as Exchange Online wants with app-only access); "" for a user's token.
	impersonate string
	tr          *http.Transport
	http        *http.Client
	// Accepted, when set, is called after each request the server answered with 200: it
	// took the credentials (the connection log's connect and login of a route). Set it
	// before the first request.
	Accepted func()
}

// NewClient makes the client of an exchange connection. rootCAs, when not nil, replaces
// the system roots (tests use it for their own CA); tokens gives the bearer tokens of an
// oauth2 connection.
func NewClient(c *schemas.Connection, rootCAs *x509.CertPool, tokens *oauth2.Source) (*Client, error) {
	endpoint, err := Endpoint(c)
	if err != nil {
		return nil, err
	}
	version, err := ServerVersion(c.ExchangeVersion)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: rootCAs, InsecureSkipVerify: c.TLSInsecureSkipVerify, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		IdleConnTimeout:       90 * time.Second,
		// NTLM authenticates the TCP connection, not the request: stay on HTTP/1.1 (an empty
		// TLSNextProto turns HTTP/2 off) and on one kept-alive connection.
		ForceAttemptHTTP2:   false,
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
		MaxConnsPerHost:     1,
		MaxIdleConnsPerHost: 1,
	}
	cl := &Client{url: endpoint, version: version, auth: c.Auth, tr: tr}
	cl.user = c.Username
	if c.Domain != "" {
		cl.user = c.Domain + `\` + c.Username
	}
	cl.password = c.Password
	var rt http.RoundTripper = tr
	switch c.Auth {
	case "", schemas.AuthNone, schemas.AuthBasic:
	case schemas.AuthWindows:
		// The negotiator turns the basic credentials of each request into the NTLM
		// handshake, and never sends them as Basic (AllowBasicAuth is false).
		rt = ntlmssp.Negotiator{RoundTripper: tr}
	case schemas.AuthOAuth2:
		if tokens == nil {
			return nil, errors.New("auth oauth2 needs a token source")
		}
		cl.tokens = tokens
		if tokens.Grant() == oauth2.GrantClient {
			cl.impersonate = c.Username
		}
	default:
		return nil, fmt.Errorf("auth %q is not supported for exchange connections: use none, basic, windows or oauth2", c.Auth)
	}
	// Redirects would resend the SOAP request elsewhere; Exchange answers in place.
	cl.http = &http.Client{Transport: rt, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	return cl, nil
}

// Close drops the kept-alive connection.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// URL is the endpoint the client speaks to, as Endpoint made it.
func (c *Client) URL() string { return c.url }

// Version is the RequestServerVersion the client sends.
func (c *Client) Version() string { return c.version }

// SuppressReadReceipts exists from Exchange2013_SP1 on; older servers refuse the attribute.
func (c *Client) canSuppressReadReceipts() bool {
	return slices.Index(versions, c.version) >= slices.Index(versions, "Exchange2013_SP1")
}

// ErrAuth is a 401 from the server. It is permanent: retrying with the same password
// could lock the account.
var ErrAuth = errors.New("the server refused the user name or password")

// HTTPError is an HTTP status other than 200 that came without a SOAP fault.
type HTTPError struct {
	Code       int
	Status     string
	Location   string // of a redirect
	RetryAfter time.Duration
}

func (e *HTTPError) Error() string {
	if e.Location != "" {
		// Typically a login page in front of Outlook on the web: EWS is elsewhere.
		return "the server answered " + e.Status + ", to " + e.Location + ": EWS is not at this URL"
	}
	return "the server answered " + e.Status
}

// Error is an error EWS reported, as a SOAP fault or in a response message.
type Error struct {
	Code    string // the ResponseCode, such as ErrorServerBusy
	Message string
	// BackOff is how long the server asked to wait (BackOffMilliseconds) before trying again.
	BackOff time.Duration
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// permanentCodes are the EWS errors that retrying will not cure: the definition or the
// account must change first.
var permanentCodes = []string{
	"ErrorAccessDenied", "ErrorFolderNotFound", "ErrorNonExistentMailbox",
	"ErrorInvalidServerVersion", "ErrorSchemaValidation", "ErrorInvalidRequest",
	"ErrorInvalidSyncStateData", "ErrorAccountDisabled", "ErrorImpersonateUserDenied",
	"ErrorInvalidIdMalformed",
}

// IsPermanent reports whether err will not go away by retrying: bad credentials, a wrong
// URL, a missing folder.
func IsPermanent(err error) bool {
	if errors.Is(err, ErrAuth) {
		return true
	}
	var he *HTTPError
	if errors.As(err, &he) {
		return he.Code >= 300 && he.Code < 500 && he.Code != http.StatusRequestTimeout && he.Code != http.StatusTooManyRequests
	}
	var ee *Error
	return errors.As(err, &ee) && slices.Contains(permanentCodes, ee.Code)
}

// BackOff is how long the server asked to wait, or 0 when it did not.
func BackOff(err error) time.Duration {
	var ee *Error
	if errors.As(err, &ee) {
		return ee.BackOff
	}
	var he *HTTPError
	if errors.As(err, &he) {
		return he.RetryAfter
	}
	return 0
}

const (
	// maxReply caps the replies read whole (all but GetItem, which is streamed).
	maxReply = 32 << 20
	// callTimeout bounds a request whose reply is read whole.
	callTimeout = 2 * time.Minute
	// stallTimeout is how long a streamed GetItem reply may go without a byte: the whole
	// reply may take long for large mail, but not stall.
	stallTimeout = 2 * time.Minute
)

// do sends one SOAP request and returns the body of a 200 reply, which the caller must
// close. Other replies become errors: 401 ErrAuth, a SOAP fault an *Error, the rest an
// *HTTPError. With oauth2, a refused token that was not issued just now is replaced
// once from the token endpoint; a refused fresh one is permanent.
func (c *Client) do(ctx context.Context, op string, body any) (io.ReadCloser, error) {
	env := soapEnvelope{SOAP: nsSOAP, Types: nsTypes, Messages: nsMessages}
	env.Header.Version.Version = c.version
	if c.impersonate != "" {
		env.Header.Impersonation = &impersonation{SMTP: c.impersonate}
	}
	env.Body.Op = body
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	if err := xml.NewEncoder(&buf).Encode(env); err != nil {
		return nil, fmt.Errorf("ews %s: encode request: %w", op, err)
	}
	for try := 0; ; try++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(buf.Bytes()))
		if err != nil {
			return nil, fmt.Errorf("ews %s: %w", op, err)
		}
		req.Header.Set("Content-Type", "text/xml; charset=utf-8")
		req.Header.Set("Accept", "text/xml")
		var tok string
		var fresh bool
		switch c.auth {
		case schemas.AuthBasic, schemas.AuthWindows:
			req.SetBasicAuth(c.user, c.password)
		case schemas.AuthOAuth2:
			if tok, fresh, err = c.tokens.Token(ctx); err != nil {
				return nil, fmt.Errorf("ews %s: oauth2 token: %w", op, err)
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			if c.impersonate != "" {
				req.Header.Set("X-AnchorMailbox", c.impersonate)
			}
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, fmt.Errorf("ews %s: %w", op, err)
		}
		if resp.StatusCode == http.StatusOK {
			if c.Accepted != nil {
				c.Accepted()
			}
			return resp.Body, nil
		}
		err = c.failure(op, resp)
		if c.auth != schemas.AuthOAuth2 || !errors.Is(err, ErrAuth) {
			return nil, err
		}
		if fresh || try > 0 || !c.tokens.Renewable() {
			why := "the server refused the access token"
			if fresh || try > 0 {
				why += " just issued: the grant was revoked, lacks the EWS scope, or has no access to the mailbox"
			}
			return nil, retry.Permanent(fmt.Errorf("ews %s: %s", op, why))
		}
		c.tokens.Reject(tok)
	}
}

// failure turns a reply other than 200 into its error, and closes it.
func (c *Client) failure(op string, resp *http.Response) error {
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		if c.auth == schemas.AuthNone || c.auth == "" {
			return fmt.Errorf("ews %s: %w: it asks for credentials and the connection has auth none", op, ErrAuth)
		}
		return fmt.Errorf("ews %s: %w", op, ErrAuth)
	}
	// EWS sends its faults, ErrorServerBusy among them, with status 500.
	var fault soapReply[struct{}]
	if xml.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&fault) == nil && fault.Body.Fault != nil {
		return fmt.Errorf("ews %s: %w", op, fault.Body.Fault.err())
	}
	he := &HTTPError{Code: resp.StatusCode, Status: resp.Status, Location: resp.Header.Get("Location")}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		he.RetryAfter = time.Duration(s) * time.Second
	}
	return fmt.Errorf("ews %s: %w", op, he)
}

// call sends one SOAP request and decodes the reply's body element into out.
func call[T any](ctx context.Context, c *Client, op string, body any, out *T) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	rc, err := c.do(ctx, op, body)
	if err != nil {
		return err
	}
	defer rc.Close()
	var env soapReply[T]
	if err := xml.NewDecoder(io.LimitReader(rc, maxReply)).Decode(&env); err != nil {
		return fmt.Errorf("ews %s: read reply: %w", op, err)
	}
	if env.Body.Fault != nil {
		return fmt.Errorf("ews %s: %w", op, env.Body.Fault.err())
	}
	*out = env.Body.Reply
	return nil
}
