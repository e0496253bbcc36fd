package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/mailbus/mailbus/schemas"
)

// OAuth2 providers whose token URL and scopes are filled in when a connection leaves them out.
const (
	ProviderGoogle    = "google"
	ProviderMicrosoft = "microsoft"
)

// Provider presets.
const (
	googleTokenURL = "https://oauth2.googleapis.com/token"
	googleScope    = "https://mail.google.com/"
	// microsoftTokenURL takes the tenant (directory id or domain).
	microsoftTokenURL = "https://login.microsoftonline.com/%s/oauth2/v2.0/token"
	// A delegated (user) token for IMAP, and one for EWS; offline_access makes the refresh
	// answer carry the next refresh token.
	microsoftUserScope    = "https://outlook.office365.com/IMAP.AccessAsUser.All"
	microsoftEWSUserScope = "https://outlook.office365.com/EWS.AccessAsUser.All"
	// An application token (client credentials) names the resource, not a permission.
	microsoftAppScope = "https://outlook.office365.com/.default"
)

// The grants a connection's oauth2 settings select.
const (
	grantStatic  = "static"             // accessToken only: used until the server refuses it
	grantRefresh = "refresh_token"      // refreshToken (from an authorization code flow done elsewhere)
	grantClient  = "client_credentials" // clientId + clientSecret (Microsoft 365 application access)
)

// SASL mechanisms, in order of preference: OAUTHBEARER is the standard one (RFC 7628) and
// Gmail offers it; XOAUTH2 is what Microsoft 365 offers.
const (
	mechOAuthBearer = "OAUTHBEARER"
	mechXOAuth2     = "XOAUTH2"
)

// errTokenRenew ends an IMAP session whose access token is about to expire; the worker
// reconnects at once, which is not a failure.
var errTokenRenew = errors.New("the access token is about to expire")

// tokenTimeout bounds one request to the token endpoint.
const tokenTimeout = 15 * time.Second

// rotateWait is how long a refresh refused for a rotated refresh token waits for the new
// one to be stored (see awaitNewRefresh).
const rotateWait = 2 * time.Second

// renewMargin is how long before its expiry a token counts as used up: a fifth of its
// lifetime, at most maxRenewMargin. Tokens are renewed, and sessions reconnected, then.
const maxRenewMargin = 5 * time.Minute

// tenantRule is a Microsoft directory id, domain, or common/organizations.
var tenantRule = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]{0,99}$`)

// oauthErrorRule is what an OAuth error code looks like (RFC 6749 5.2); anything else a
// token endpoint says is not repeated.
var oauthErrorRule = regexp.MustCompile(`^[a-z_]{1,64}$`)

// validateOAuth2 checks the shape of a connection's oauth2 object and fills the token URL of
// a provider. What depends on the secrets (kept from the stored definition by a put) is
// checked by checkOAuth2Secrets.
func validateOAuth2(o *schemas.OAuth2) *schemas.Error {
	if o == nil {
		return errInvalid("oauth2", "an oauth2 object is required for auth oauth2")
	}
	if o.Provider != "" {
		if e := oneOf("oauth2.provider", o.Provider, ProviderGoogle, ProviderMicrosoft); e != nil {
			return e
		}
	}
	if o.Tenant != "" {
		if o.Provider != ProviderMicrosoft {
			return errInvalid("oauth2.tenant", "oauth2.tenant is only used with provider microsoft")
		}
		if !tenantRule.MatchString(o.Tenant) {
			return errInvalid("oauth2.tenant", "oauth2.tenant %q: want a directory id or domain (letters, digits, dots, dashes)", o.Tenant)
		}
	}
	for i, s := range o.Scopes {
		if s == "" || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			field := fmt.Sprintf("oauth2.scopes[%d]", i)
			return errInvalid(field, "%s %q: want one scope, without spaces", field, s)
		}
	}
	if o.ClientSecret != "" && o.ClientID == "" {
		return errInvalid("oauth2.clientId", "oauth2.clientId is required with a clientSecret")
	}
	if o.TokenURL == "" {
		switch o.Provider {
		case ProviderGoogle:
			o.TokenURL = googleTokenURL
		case ProviderMicrosoft:
			if o.Tenant == "" {
				return errInvalid("oauth2.tenant", "oauth2.tenant is required for provider microsoft: the directory (tenant) id or domain, or organizations")
			}
			o.TokenURL = fmt.Sprintf(microsoftTokenURL, o.Tenant)
		}
	}
	if t := o.TokenURL; t != "" {
		if u, err := url.Parse(t); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return errInvalid("oauth2.tokenUrl", "oauth2.tokenUrl %q: want an http(s) URL", t)
		}
	}
	return nil
}

// checkOAuth2Secrets checks what an oauth2 connection needs once its stored secrets are
// merged in, and fills a provider's scopes (which depend on the connection's type): a token
// endpoint grant needs a tokenUrl and a clientId, and there must be something to get a
// token with.
func checkOAuth2Secrets(o *schemas.OAuth2, connType string) *schemas.Error {
	if o.ClientSecret != "" && o.ClientID == "" {
		return errInvalid("oauth2.clientId", "oauth2.clientId is required with a clientSecret")
	}
	g := oauthGrant(o)
	if g == "" {
		return errInvalid("oauth2", "oauth2 needs an accessToken, a refreshToken, or a clientSecret (client credentials)")
	}
	if g == grantStatic {
		return nil
	}
	if o.TokenURL == "" {
		return errInvalid("oauth2.tokenUrl", "oauth2.tokenUrl is required to get tokens (or set provider google or microsoft)")
	}
	if o.ClientID == "" {
		return errInvalid("oauth2.clientId", "oauth2.clientId is required to get tokens from %s", o.TokenURL)
	}
	if len(o.Scopes) == 0 {
		switch {
		case o.Provider == ProviderGoogle:
			o.Scopes = []string{googleScope}
		case o.Provider == ProviderMicrosoft && g == grantClient:
			o.Scopes = []string{microsoftAppScope}
		case o.Provider == ProviderMicrosoft && connType == schemas.TypeExchange:
			o.Scopes = []string{microsoftEWSUserScope, "offline_access"}
		case o.Provider == ProviderMicrosoft:
			o.Scopes = []string{microsoftUserScope, "offline_access"}
		}
	}
	return nil
}

// oauthGrant tells how tokens are got: a refresh token wins, then client credentials, then
// a static access token; "" when there is nothing to get one with.
func oauthGrant(o *schemas.OAuth2) string {
	switch {
	case o == nil:
		return ""
	case o.RefreshToken != "":
		return grantRefresh
	case o.ClientSecret != "" && o.ClientID != "":
		return grantClient
	case o.AccessToken != "":
		return grantStatic
	}
	return ""
}

// tokenError is a failure to get an access token, summarised: the OAuth error code and the
// HTTP status, never the endpoint's body (which may quote what was sent). field names the
// oauth2 setting to fix, empty when the fault is the endpoint's or the network's.
type tokenError struct {
	msg   string
	field string
}

func (e *tokenError) Error() string { return e.msg }

// summariseTokenError turns an error of golang.org/x/oauth2 into a tokenError, permanent
// when the endpoint refused the request itself: a revoked refresh token, a wrong client
// secret or scope. Its message never holds the response body.
func summariseTokenError(grant string, err error) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		// The transport's error names the URL and the cause (refused, timeout, DNS); the
		// library's own parse errors may quote the body, so they are not repeated.
		if strings.HasPrefix(err.Error(), "oauth2: ") {
			return &tokenError{msg: "the token endpoint's answer is not a token"}
		}
		return &tokenError{msg: "token endpoint: " + err.Error()}
	}
	status := 0
	if re.Response != nil {
		status = re.Response.StatusCode
	}
	code := re.ErrorCode
	if !oauthErrorRule.MatchString(code) {
		code = ""
	}
	what := fmt.Sprintf("HTTP %d", status)
	if code != "" {
		what = code + ", " + what
	}
	if status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout ||
		code == "temporarily_unavailable" || code == "server_error" {
		// The endpoint is in trouble, not the settings: back off and ask again.
		return &tokenError{msg: fmt.Sprintf("the token endpoint failed (%s)", what)}
	}
	var e *tokenError
	switch {
	case code == "invalid_grant" && grant == grantRefresh:
		e = &tokenError{field: "oauth2.refreshToken", msg: fmt.Sprintf("the token endpoint refused the refresh token (%s): it was revoked or has expired; put a new refreshToken", what)}
	case code == "invalid_grant":
		e = &tokenError{field: "oauth2.clientSecret", msg: fmt.Sprintf("the token endpoint refused the client credentials (%s)", what)}
	case code == "invalid_client" || code == "unauthorized_client" || status == http.StatusUnauthorized:
		e = &tokenError{field: "oauth2.clientSecret", msg: fmt.Sprintf("the token endpoint refused the client (%s): check clientId and clientSecret", what)}
	case code == "invalid_scope":
		e = &tokenError{field: "oauth2.scopes", msg: fmt.Sprintf("the token endpoint refused the scopes (%s)", what)}
	default:
		e = &tokenError{field: "oauth2", msg: fmt.Sprintf("the token endpoint refused the request (%s)", what)}
	}
	return Permanent(e)
}

// tokenSource gets the access tokens of one oauth2 connection: the static one, or from the
// token endpoint, renewed before they expire and after the server refused one. A refresh
// token the endpoint replaces is stored back in KV. Safe for concurrent use.
type tokenSource struct {
	name  string // the connection
	grant string
	err   error // the settings cannot give a token
	conf  *oauth2.Config
	cc    *clientcredentials.Config
	store *store // nil: a new refresh token is kept in memory only

	mu      sync.Mutex
	refresh string        // the refresh token in use
	tok     *oauth2.Token // the current access token; nil: none yet
	got     time.Time     // when tok was issued, for its lifetime
	fetched []string      // the last tokens this source was given, to scrub from texts
	saved   string        // what became of the last new refresh token, for the check
	unsaved bool          // refresh is newer than the stored one, which could not be written
}

// newTokenSource makes the token source of a connection whose secrets are resolved. st
// stores a refresh token the endpoint replaces; nil keeps it in memory only. Settings that
// cannot give a token make every token call fail permanently.
func newTokenSource(c *schemas.Connection, st *store) *tokenSource {
	s := &tokenSource{name: c.Name, store: st}
	o := c.OAuth2
	if o == nil {
		s.err = Permanent(errors.New("oauth2: the connection has no oauth2 settings"))
		return s
	}
	// The same checks as a put, on a copy: a worker may be handed an older definition.
	oc := *o
	oc.Scopes = append([]string(nil), o.Scopes...)
	if e := validateOAuth2(&oc); e != nil {
		s.err = Permanent(fmt.Errorf("oauth2: %s", e.Message))
		return s
	}
	if e := checkOAuth2Secrets(&oc, c.Type); e != nil {
		s.err = Permanent(fmt.Errorf("oauth2: %s", e.Message))
		return s
	}
	s.grant = oauthGrant(&oc)
	s.refresh = oc.RefreshToken
	if oc.AccessToken != "" {
		// A given access token is tried first, its expiry unknown; when refused, the token
		// endpoint (if any) gives the next one.
		s.tok = &oauth2.Token{AccessToken: oc.AccessToken}
	}
	// Credentials go in the form, not in Basic auth: Google and Microsoft accept that, and
	// the library's auto-detection would send a refresh token twice on a failure.
	switch s.grant {
	case grantRefresh:
		s.conf = &oauth2.Config{ClientID: oc.ClientID, ClientSecret: oc.ClientSecret, Scopes: oc.Scopes,
			Endpoint: oauth2.Endpoint{TokenURL: oc.TokenURL, AuthStyle: oauth2.AuthStyleInParams}}
	case grantClient:
		s.cc = &clientcredentials.Config{ClientID: oc.ClientID, ClientSecret: oc.ClientSecret, Scopes: oc.Scopes,
			TokenURL: oc.TokenURL, AuthStyle: oauth2.AuthStyleInParams}
	}
	return s
}

// renewable reports whether a refused token can be replaced by asking the token endpoint.
func (s *tokenSource) renewable() bool { return s.grant == grantRefresh || s.grant == grantClient }

// margin is how long before its expiry tok is renewed.
func (s *tokenSource) margin() time.Duration {
	if s.tok == nil || s.tok.Expiry.IsZero() {
		return 0
	}
	return min(maxRenewMargin, s.tok.Expiry.Sub(s.got)/5)
}

// renewAt is when the current token should be replaced; zero when it does not expire (as far
// as anyone said).
func (s *tokenSource) renewAt() time.Time {
	if s == nil {
		return time.Time{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok == nil || s.tok.Expiry.IsZero() || !s.renewable() {
		return time.Time{}
	}
	return s.tok.Expiry.Add(-s.margin())
}

// token returns an access token with more than its renewal margin left, asking the token
// endpoint when there is none. fresh says it was issued by this call.
func (s *tokenSource) token(ctx context.Context) (tok string, fresh bool, err error) {
	if s.err != nil {
		return "", false, s.err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok != nil && (s.tok.Expiry.IsZero() || time.Now().Before(s.tok.Expiry.Add(-s.margin()))) {
		return s.tok.AccessToken, false, nil
	}
	if !s.renewable() {
		return "", false, Permanent(&tokenError{field: "oauth2.accessToken", msg: "the access token has expired and there is no refreshToken or client secret to get another"})
	}
	if err := s.fetch(ctx); err != nil {
		return "", false, err
	}
	return s.tok.AccessToken, true, nil
}

// reject forgets tok after the server refused it, so the next token call asks for a new one.
func (s *tokenSource) reject(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok != nil && s.tok.AccessToken == tok {
		s.tok = nil
	}
}

// fetch asks the token endpoint for a new access token. Called with mu held.
func (s *tokenSource) fetch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, tokenTimeout)
	defer cancel()
	// A redirect is not followed: it would carry the secrets of the form to another host.
	ctx = context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Timeout: tokenTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }})
	var tok *oauth2.Token
	var err error
	if s.grant == grantClient {
		tok, err = s.cc.Token(ctx)
	} else {
		// Another route, replica or the operator may have replaced the refresh token
		// since this one was read: the stored one is the one to use.
		used := s.latestRefresh(ctx)
		tok, err = s.conf.TokenSource(ctx, &oauth2.Token{RefreshToken: used}).Token()
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode == "invalid_grant" {
			// Two users of one refresh token raced and the other one won: its new token
			// is in KV by now, or will be once the winner has stored it.
			if again := s.awaitNewRefresh(ctx, used); again != used {
				used = again
				tok, err = s.conf.TokenSource(ctx, &oauth2.Token{RefreshToken: used}).Token()
			}
		}
		if err == nil && tok.RefreshToken != "" && tok.RefreshToken != used {
			s.remember(tok.RefreshToken)
			s.refresh = tok.RefreshToken
			s.saved = s.save(ctx, used, tok.RefreshToken)
		}
	}
	if err != nil {
		return summariseTokenError(s.grant, err)
	}
	s.tok, s.got = tok, time.Now()
	s.remember(tok.AccessToken)
	return nil
}

// remember keeps the last few tokens issued, which may still turn up in a server's text.
func (s *tokenSource) remember(tok string) {
	s.fetched = append(s.fetched, tok)
	if len(s.fetched) > 8 {
		s.fetched = s.fetched[len(s.fetched)-8:]
	}
}

// latestRefresh returns the refresh token stored for the connection, or the one in memory
// when there is no store or it cannot be read.
func (s *tokenSource) latestRefresh(ctx context.Context) string {
	if s.store != nil && !s.unsaved {
		if rt, ok := s.store.refreshToken(ctx, s.name); ok && rt != "" {
			s.refresh = rt
		}
	}
	return s.refresh
}

// awaitNewRefresh reads the stored refresh token until it is not used, for at most
// rotateWait: the winner of a race for one refresh token stores its new one a moment
// after the endpoint refused the loser.
func (s *tokenSource) awaitNewRefresh(ctx context.Context, used string) string {
	deadline := time.Now().Add(rotateWait)
	for {
		rt := s.latestRefresh(ctx)
		if rt != used || time.Now().After(deadline) || !sleepUntil(ctx, rotateWait/20) {
			return rt
		}
	}
}

// save stores a new refresh token in place of old and says what happened, for the check's
// detail. A failure is not fatal: the token is kept in memory, used instead of the stored
// one, and saved at the next rotation.
func (s *tokenSource) save(ctx context.Context, old, new string) string {
	if s.store == nil {
		return "the endpoint issued a new refresh token, not stored (kept in memory only)"
	}
	saved, err := s.store.saveRefreshToken(ctx, s.name, old, new)
	s.unsaved = err != nil
	switch {
	case err != nil:
		return "the endpoint issued a new refresh token, which could not be stored: " + err.Error()
	case !saved:
		return "the endpoint issued a new refresh token, not stored: the stored one is not the one used"
	}
	return "the endpoint issued a new refresh token, stored"
}

// secrets lists every token this source holds or was given, to scrub from texts.
func (s *tokenSource) secrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := slices.Clone(s.fetched)
	if s.refresh != "" {
		l = append(l, s.refresh)
	}
	return l
}

// describe says where the current token came from, for the check.
func (s *tokenSource) describe() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	switch s.grant {
	case grantStatic:
		b.WriteString("the given access token (its expiry is not known)")
	default:
		b.WriteString("a new access token (grant " + s.grant + ")")
	}
	if s.tok != nil && !s.tok.Expiry.IsZero() {
		fmt.Fprintf(&b, ", valid until %s", s.tok.Expiry.UTC().Format(time.RFC3339))
	}
	if s.saved != "" {
		b.WriteString("; " + s.saved)
	}
	return b.String()
}

// oauthMechanism picks the SASL mechanism the server offers, OAUTHBEARER first.
func oauthMechanism(caps imap.CapSet) string {
	for _, m := range []string{mechOAuthBearer, mechXOAuth2} {
		if caps.Has(imap.Cap("AUTH=" + m)) {
			return m
		}
	}
	return ""
}

// oauthLogin authenticates with an access token. A refused token that was not issued just
// now (a static one, or one cached from an earlier login) is replaced once from the token
// endpoint; a refused fresh one is permanent: the grant was revoked or lacks the mail scope.
func oauthLogin(ctx context.Context, c *imapclient.Client, conn *schemas.Connection, ts *tokenSource, host string, port int) error {
	mech := oauthMechanism(c.Caps())
	if mech == "" {
		return Permanent(fmt.Errorf("login: oauth2 needs AUTH=OAUTHBEARER or AUTH=XOAUTH2, which the server does not offer (it offers %s)", authMechs(c.Caps())))
	}
	for try := 0; ; try++ {
		tok, fresh, err := ts.token(ctx)
		if err != nil {
			return fmt.Errorf("oauth2 token: %w", err)
		}
		sc := &oauthClient{mech: mech, user: conn.Username, token: tok, host: host, port: port}
		err = c.Authenticate(sc)
		if err == nil {
			return nil
		}
		var ie *imap.Error
		if !errors.As(err, &ie) {
			return fmt.Errorf("login as %q with %s: %w", conn.Username, mech, err)
		}
		why := fmt.Sprintf("login as %q with %s: the server refused the access token (%s%s)",
			conn.Username, mech, scrub(ie.Text, []string{tok}), sc.status())
		if fresh || try > 0 || !ts.renewable() {
			if fresh || try > 0 {
				why += ": a newly issued token was refused, so the grant was revoked, lacks the mail scope, or is for another user"
			}
			return Permanent(errors.New(why))
		}
		ts.reject(tok)
	}
}

// oauthClient is the SASL client of XOAUTH2 and OAUTHBEARER. A refusal comes as a JSON
// challenge, which must be answered (an empty response for XOAUTH2, %x01 for OAUTHBEARER)
// before the server sends its tagged NO; go-sasl's OAUTHBEARER client returns an error
// there instead, which leaves the command hanging.
type oauthClient struct {
	mech, user, token, host string
	port                    int
	refusal                 struct {
		Status string `json:"status"`
		Scope  string `json:"scope"`
	}
}

func (o *oauthClient) Start() (string, []byte, error) {
	if o.mech == mechXOAuth2 {
		return o.mech, []byte("user=" + o.user + "\x01auth=Bearer " + o.token + "\x01\x01"), nil
	}
	// RFC 7628 3.1: gs2 header with the authorization identity, then key=value pairs.
	ir := "n,a=" + strings.NewReplacer("=", "=3D", ",", "=2C").Replace(o.user) + "," +
		"\x01host=" + o.host + "\x01port=" + strconv.Itoa(o.port) +
		"\x01auth=Bearer " + o.token + "\x01\x01"
	return o.mech, []byte(ir), nil
}

func (o *oauthClient) Next(challenge []byte) ([]byte, error) {
	json.Unmarshal(challenge, &o.refusal) // only for the error message
	if o.mech == mechXOAuth2 {
		return []byte{}, nil
	}
	return []byte{0x01}, nil
}

// status is the server's JSON refusal, for the error message.
func (o *oauthClient) status() string {
	if o.refusal.Status == "" {
		return ""
	}
	s := "; status " + o.refusal.Status
	if o.refusal.Scope != "" {
		s += ", wants scope " + o.refusal.Scope
	}
	return s
}
