package connector_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"

	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/schemas"
)

// oauthIMAP is go-imap's in-memory server that lets alice in only with XOAUTH2 or
// OAUTHBEARER and an access token the token server issued. Like Microsoft 365, it counts a
// command of a session whose token has expired as a fault.
type oauthIMAP struct {
	memIMAP
	tokens *testkit.TokenServer
	mechs  []string

	mu      sync.Mutex
	logins  map[string]int // accepted logins per mechanism
	refused int
	expired int // commands in a session whose token had expired
}

func startOAuthIMAP(t *testing.T, tokens *testkit.TokenServer, mechs ...string) *oauthIMAP {
	t.Helper()
	user := imapmemserver.NewUser("alice", "unused-"+rand.Text())
	if err := user.Create("INBOX", nil); err != nil {
		t.Fatalf("Create(INBOX) = %v", err)
	}
	s := &oauthIMAP{memIMAP: memIMAP{user: user}, tokens: tokens, mechs: mechs, logins: map[string]int{}}
	caps := imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapUIDPlus: {}, imap.CapMove: {}}
	s.addr = serveIMAP(t, caps, func() imapserver.Session {
		return &oauthSession{UserSession: imapmemserver.NewUserSession(user), srv: s}
	})
	return s
}

func (s *oauthIMAP) stats() (logins map[string]int, refused, expired int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := map[string]int{}
	for k, v := range s.logins {
		l[k] = v
	}
	return l, s.refused, s.expired
}

// oauthSession is alice's session once a bearer token let her in.
type oauthSession struct {
	*imapmemserver.UserSession
	srv   *oauthIMAP
	token string
}

// Login refuses passwords: this server takes tokens only.
func (s *oauthSession) Login(string, string) error { return imapserver.ErrAuthFailed }

func (s *oauthSession) AuthenticateMechanisms() []string { return s.srv.mechs }

func (s *oauthSession) Authenticate(mech string) (sasl.Server, error) {
	if !slices.Contains(s.srv.mechs, mech) {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Text: "mechanism not offered"}
	}
	return &bearerServer{mech: mech, check: func(user, token string) bool {
		s.srv.mu.Lock()
		defer s.srv.mu.Unlock()
		if user != "alice" || !s.srv.tokens.Valid(token) {
			s.srv.refused++
			return false
		}
		s.srv.logins[mech]++
		s.token = token
		return true
	}}, nil
}

// live counts a command made after the session's token expired.
func (s *oauthSession) live() {
	if s.token != "" && time.Now().After(s.srv.tokens.Expiry(s.token)) {
		s.srv.mu.Lock()
		s.srv.expired++
		s.srv.mu.Unlock()
	}
}

func (s *oauthSession) Select(name string, o *imap.SelectOptions) (*imap.SelectData, error) {
	s.live()
	return s.UserSession.Select(name, o)
}

func (s *oauthSession) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	s.live()
	return s.UserSession.Poll(w, allowExpunge)
}

func (s *oauthSession) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	s.live()
	err := s.UserSession.Idle(w, stop)
	s.live()
	return err
}

// bearerServer is the server side of XOAUTH2 and OAUTHBEARER: a refusal is a JSON
// challenge, and only the client's dummy answer to it (empty for XOAUTH2, %x01 for
// OAUTHBEARER) gets the tagged NO.
type bearerServer struct {
	mech    string
	check   func(user, token string) bool
	refused bool
}

func (b *bearerServer) Next(resp []byte) ([]byte, bool, error) {
	if b.refused {
		if (b.mech == "XOAUTH2" && len(resp) != 0) || (b.mech == "OAUTHBEARER" && !bytes.Equal(resp, []byte{1})) {
			return nil, true, &imap.Error{Type: imap.StatusResponseTypeBad, Text: fmt.Sprintf("bad answer %q to the error challenge", resp)}
		}
		return nil, true, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthenticationFailed, Text: "invalid credentials"}
	}
	user, token, ok := parseBearer(b.mech, resp)
	if ok && b.check(user, token) {
		return nil, true, nil
	}
	b.refused = true
	return []byte(`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`), false, nil
}

// parseBearer reads the user and token of an initial response.
func parseBearer(mech string, resp []byte) (user, token string, ok bool) {
	s := string(resp)
	if mech == "OAUTHBEARER" {
		gs2, rest, found := strings.Cut(s, ",")
		authz, kv, found2 := strings.Cut(rest, ",")
		if !found || !found2 || gs2 != "n" || !strings.HasPrefix(authz, "a=") ||
			!strings.Contains(kv, "\x01host=127.0.0.1\x01") || !strings.Contains(kv, "\x01port=") {
			return "", "", false
		}
		user, s = strings.TrimPrefix(authz, "a="), kv
	}
	if !strings.HasSuffix(s, "\x01\x01") {
		return "", "", false
	}
	for _, f := range strings.Split(strings.TrimSuffix(s, "\x01\x01"), "\x01") {
		switch k, v, _ := strings.Cut(f, "="); k {
		case "user":
			user = v
		case "auth":
			token, ok = strings.CutPrefix(v, "Bearer ")
		}
	}
	return user, token, ok && user != ""
}

// oauthConn is a connection definition for srv with the given oauth2 object.
func oauthConn(srv *oauthIMAP, oauth map[string]any) map[string]any {
	host, port, _ := net.SplitHostPort(srv.addr)
	return map[string]any{
		"name": "oauth", "type": "imap", "host": host, "port": json.Number(port), "encryption": "none",
		"auth": "oauth2", "username": "alice", "oauth2": oauth, "logLevel": "full",
	}
}

// refreshSettings is an oauth2 object of the refresh_token grant at ts.
func refreshSettings(ts *testkit.TokenServer, rt string) map[string]any {
	return map[string]any{"tokenUrl": ts.URL(), "clientId": ts.ClientID, "clientSecret": ts.ClientSecret, "refreshToken": rt}
}

// assertNoSecrets greps everything a person or a subscriber can see (the process log, the
// connection log, the replies of get, list and status, the events) for every token the
// token server issued and the client secret.
func assertNoSecrets(t *testing.T, s *testService, ts *testkit.TokenServer, route string) {
	t.Helper()
	var seen []string
	seen = append(seen, s.log.String())
	_, msg := s.request("mail.control.connection.log", map[string]any{"name": "oauth", "format": "text"})
	seen = append(seen, string(msg.Data))
	_, msg = s.request("mail.control.connection.log", map[string]any{"name": "oauth"})
	seen = append(seen, string(msg.Data))
	_, msg = s.request("mail.control.connection.get", map[string]string{"name": "oauth"})
	seen = append(seen, string(msg.Data))
	_, msg = s.request("mail.control.connection.list", map[string]string{})
	seen = append(seen, string(msg.Data))
	_, msg = s.request("mail.control.route.status", map[string]string{"name": route})
	seen = append(seen, string(msg.Data))
	for _, m := range storedMsgs(t, s.js, "MAIL_BUS_0", "mail.bus.0."+route) {
		seen = append(seen, string(m.Data))
	}
	waitUntil(t, 5*time.Second, "a connection log entry of the route", func() bool {
		_, msg := s.request("mail.control.connection.log", map[string]any{"name": "oauth", "format": "text"})
		seen[1] = string(msg.Data)
		return strings.Contains(seen[1], "route="+route)
	})
	for _, sec := range ts.Secrets() {
		for _, text := range seen {
			if strings.Contains(text, sec) {
				t.Errorf("secret %s leaked: %s", sec, text)
			}
		}
	}
}

// waitEvents waits until route has published n events.
func waitEvents(t *testing.T, s *testService, route string, n uint64) {
	t.Helper()
	s.waitStatus(route, 20*time.Second, func(st schemas.RouteStatus) bool { return st.Published >= n })
}

// TestOAuthRefreshBeforeExpiry: with tokens that live 5 s, the route renews its token and
// reconnects before each one expires (1 s before: a fifth of the lifetime, room enough on a
// busy machine), so the server never refuses a token nor sees a command on an expired one,
// and mail keeps flowing (XOAUTH2, the only mechanism offered).
func TestOAuthRefreshBeforeExpiry(t *testing.T) {
	ts := testkit.StartTokenServer(t, 5*time.Second, false)
	srv := startOAuthIMAP(t, ts, "XOAUTH2")
	s := runService(t, svcConfig(t), nil)
	srv.append(t, "INBOX", testMail(1, ""))
	s.ok("mail.control.connection.put", oauthConn(srv, refreshSettings(ts, ts.NewRefresh())))
	s.ok("mail.control.route.put", map[string]any{"name": "o_refresh", "connection": "oauth"})
	waitEvents(t, s, "o_refresh", 1)
	for i := 2; i <= 6; i++ {
		time.Sleep(3 * time.Second)
		srv.append(t, "INBOX", testMail(i, ""))
		waitEvents(t, s, "o_refresh", uint64(i))
	}
	logins, refused, expired := srv.stats()
	if refreshes := ts.Count("refresh_token"); refreshes < 3 || logins["XOAUTH2"] < 3 || refused != 0 || expired != 0 {
		t.Fatalf("refreshes %d, logins %v, refused %d, commands on expired tokens %d; want >= 3, >= 3 XOAUTH2, 0, 0\nlog:\n%s",
			refreshes, logins, refused, expired, s.log)
	}
	if st := s.status("o_refresh"); st.LastError != "" || st.Published != 6 {
		t.Errorf("status = %+v, want 6 published and no error", st)
	}
	assertNoSecrets(t, s, ts, "o_refresh")
}

// TestOAuthRotatedRefreshToken: the token endpoint replaces the refresh token at each
// refresh and the old one stops working. The route stores each new one, sealed, in KV; the
// check by name then works with what is stored (so it is the newest), and a refresh token
// an operator puts meanwhile is the one used next. Both mechanisms are offered: OAUTHBEARER
// is used.
func TestOAuthRotatedRefreshToken(t *testing.T) {
	// 4 s tokens: renewed 0.8 s before expiry, room enough on a busy machine for none to be
	// refused.
	ts := testkit.StartTokenServer(t, 4*time.Second, true)
	srv := startOAuthIMAP(t, ts, "XOAUTH2", "OAUTHBEARER")
	key := make([]byte, 32)
	rand.Read(key)
	cfg := svcConfig(t)
	cfg.SecretKey = base64.StdEncoding.EncodeToString(key)
	s := runService(t, cfg, nil)
	first := ts.NewRefresh()
	s.ok("mail.control.connection.put", oauthConn(srv, refreshSettings(ts, first)))
	putRaw := s.raw("connection.oauth")
	srv.append(t, "INBOX", testMail(1, ""))
	s.ok("mail.control.route.put", map[string]any{"name": "o_rotate", "connection": "oauth"})
	waitEvents(t, s, "o_rotate", 1)
	waitUntil(t, 20*time.Second, "three refreshes", func() bool { return ts.Count("refresh_token") >= 3 })

	// The stored token is sealed, is not any token in clear, and is the one that works.
	waitUntil(t, 5*time.Second, "the stored refresh token to change", func() bool {
		return !bytes.Equal(s.raw("connection.oauth"), putRaw)
	})
	raw := s.raw("connection.oauth")
	var stored schemas.Connection
	if err := json.Unmarshal(raw, &stored); err != nil || stored.OAuth2 == nil || !strings.HasPrefix(stored.OAuth2.RefreshToken, "enc:v1:") {
		t.Fatalf("stored connection = %s (%v), want a sealed refresh token", raw, err)
	}
	for _, sec := range ts.Secrets() {
		if bytes.Contains(raw, []byte(sec)) {
			t.Fatalf("KV holds token %s in clear: %s", sec, raw)
		}
	}
	if w := ts.WorkingRefresh(); len(w) != 1 || slices.Contains(w, first) {
		t.Fatalf("working refresh tokens = %v, want one new one", w)
	}
	r, msg := s.request("mail.control.connection.test", map[string]string{"name": "oauth"})
	if !r.OK || checkStageNames(&r) != "resolve dial greeting capabilities token login select" {
		t.Fatalf("connection.test = %s", msg.Data)
	}
	if d := r.Stages[4].Detail; !strings.Contains(d, "grant refresh_token") || !strings.Contains(d, "new refresh token, stored") {
		t.Errorf("token stage detail = %q", d)
	}
	if d := r.Stages[5].Detail; !strings.Contains(d, "OAUTHBEARER") {
		t.Errorf("login stage detail = %q, want OAUTHBEARER", d)
	}

	// A draft with a refresh token of its own is checked with it; its replacement is not
	// stored over the connection's.
	r, msg = s.request("mail.control.connection.test", oauthConn(srv, refreshSettings(ts, ts.NewRefresh())))
	if !r.OK || len(r.Stages) < 5 || !strings.Contains(r.Stages[4].Detail, "not stored") {
		t.Fatalf("connection.test of a draft = %s", msg.Data)
	}

	// An operator puts another refresh token: the next refresh uses it, whatever the route
	// had in memory, and it is not overwritten by an older one.
	mine := ts.NewRefresh()
	s.ok("mail.control.connection.put", oauthConn(srv, map[string]any{"tokenUrl": ts.URL(), "clientId": ts.ClientID, "refreshToken": mine}))
	waitUntil(t, 10*time.Second, "the operator's refresh token to be used", func() bool {
		return slices.Contains(ts.Used(), mine)
	})
	srv.append(t, "INBOX", testMail(2, ""))
	waitEvents(t, s, "o_rotate", 2)
	logins, refused, _ := srv.stats()
	if logins["OAUTHBEARER"] < 2 || logins["XOAUTH2"] != 0 || refused != 0 {
		t.Errorf("logins %v, refused %d: want OAUTHBEARER only, none refused", logins, refused)
	}
	used := ts.Used()
	for i, rt := range used {
		if slices.Contains(used[i+1:], rt) {
			t.Errorf("refresh token %d was presented again after it was replaced", i)
		}
	}
	assertNoSecrets(t, s, ts, "o_rotate")
}

// TestOAuthRevokedRefreshToken: once the endpoint answers invalid_grant, the route parks in
// state error saying so, without the token or the endpoint's description (which quotes
// it); the check fails at its token stage naming oauth2.refreshToken.
func TestOAuthRevokedRefreshToken(t *testing.T) {
	ts := testkit.StartTokenServer(t, 2*time.Second, false)
	srv := startOAuthIMAP(t, ts, "XOAUTH2")
	s := runService(t, svcConfig(t), nil)
	srv.append(t, "INBOX", testMail(1, ""))
	s.ok("mail.control.connection.put", oauthConn(srv, refreshSettings(ts, ts.NewRefresh())))
	s.ok("mail.control.route.put", map[string]any{"name": "o_revoked", "connection": "oauth"})
	waitEvents(t, s, "o_revoked", 1)
	ts.Revoke()
	st := s.waitStatus("o_revoked", 10*time.Second, func(st schemas.RouteStatus) bool { return st.State == schemas.StateError })
	if !strings.Contains(st.LastError, "invalid_grant") || !strings.Contains(st.LastError, "refresh token") ||
		strings.Contains(st.LastError, "expired or revoked:") {
		t.Errorf("lastError = %q, want the invalid_grant summary only", st.LastError)
	}
	r, msg := s.request("mail.control.connection.test", map[string]string{"name": "oauth"})
	if r.OK || r.Error == nil || r.Error.Field != "oauth2.refreshToken" || !strings.HasSuffix(checkStageNames(&r), "capabilities token!") {
		t.Errorf("connection.test = %s, want a failed token stage naming oauth2.refreshToken", msg.Data)
	}
	// The operator puts a new refresh token: the parked route takes it now, not at its
	// next retry minutes later.
	srv.append(t, "INBOX", testMail(2, ""))
	s.ok("mail.control.connection.put", oauthConn(srv, refreshSettings(ts, ts.NewRefresh())))
	waitEvents(t, s, "o_revoked", 2)
	assertNoSecrets(t, s, ts, "o_revoked")
}

// TestOAuthFreshTokenRefused: a token issued just now that the server refuses (here: it is
// alice's, the connection says bob) parks the route; retrying cannot help.
func TestOAuthFreshTokenRefused(t *testing.T) {
	ts := testkit.StartTokenServer(t, time.Hour, false)
	srv := startOAuthIMAP(t, ts, "OAUTHBEARER")
	s := runService(t, svcConfig(t), nil)
	c := oauthConn(srv, refreshSettings(ts, ts.NewRefresh()))
	c["username"] = "bob"
	s.ok("mail.control.connection.put", c)
	s.ok("mail.control.route.put", map[string]any{"name": "o_bob", "connection": "oauth"})
	st := s.waitStatus("o_bob", 10*time.Second, func(st schemas.RouteStatus) bool { return st.State == schemas.StateError })
	if !strings.Contains(st.LastError, "newly issued token was refused") || !strings.Contains(st.LastError, "status 401") {
		t.Errorf("lastError = %q", st.LastError)
	}
	if _, refused, _ := srv.stats(); refused != 1 {
		t.Errorf("the server refused %d logins, want 1 (no retry of a fresh token)", refused)
	}
	assertNoSecrets(t, s, ts, "o_bob")
}

// TestOAuthRefreshAfterRefusedToken: a given access token the server refuses is replaced
// once from the token endpoint, on the same connection, and the route runs.
func TestOAuthRefreshAfterRefusedToken(t *testing.T) {
	ts := testkit.StartTokenServer(t, time.Hour, false)
	srv := startOAuthIMAP(t, ts, "XOAUTH2")
	s := runService(t, svcConfig(t), nil)
	srv.append(t, "INBOX", testMail(1, ""))
	o := refreshSettings(ts, ts.NewRefresh())
	o["accessToken"] = ts.NewAccess(-time.Minute) // issued, but already expired
	s.ok("mail.control.connection.put", oauthConn(srv, o))
	s.ok("mail.control.route.put", map[string]any{"name": "o_retry", "connection": "oauth"})
	waitEvents(t, s, "o_retry", 1)
	logins, refused, _ := srv.stats()
	if refused != 1 || logins["XOAUTH2"] != 1 || ts.Count("refresh_token") != 1 {
		t.Errorf("refused %d, logins %v, refreshes %d; want 1, 1, 1", refused, logins, ts.Count("refresh_token"))
	}
	if st := s.status("o_retry"); st.LastError != "" {
		t.Errorf("status = %+v, want no error", st)
	}
	assertNoSecrets(t, s, ts, "o_retry")
}

// TestOAuthStaticAccessToken: an access token alone is used as it is; when the server
// refuses it there is nothing to renew it with, and the route parks saying so.
func TestOAuthStaticAccessToken(t *testing.T) {
	ts := testkit.StartTokenServer(t, time.Hour, false)
	srv := startOAuthIMAP(t, ts, "OAUTHBEARER")
	s := runService(t, svcConfig(t), nil)
	srv.append(t, "INBOX", testMail(1, ""))
	s.ok("mail.control.connection.put", oauthConn(srv, map[string]any{"accessToken": ts.NewAccess(time.Hour)}))
	s.ok("mail.control.route.put", map[string]any{"name": "o_static", "connection": "oauth"})
	waitEvents(t, s, "o_static", 1)
	if n := ts.Count("refresh_token") + ts.Count("client_credentials"); n != 0 {
		t.Errorf("%d token requests for a static token", n)
	}
	r := s.ok("mail.control.connection.test", map[string]string{"name": "oauth"})
	if checkStageNames(&r) != "resolve dial greeting capabilities token login select" || !strings.Contains(r.Stages[4].Detail, "the given access token") {
		t.Errorf("connection.test stages = %+v", r.Stages)
	}
	assertNoSecrets(t, s, ts, "o_static")

	ts.Revoke()
	s.ok("mail.control.route.put", map[string]any{"name": "o_static", "connection": "oauth", "disabled": true})
	s.waitStatus("o_static", 10*time.Second, func(st schemas.RouteStatus) bool { return st.State == schemas.StateDisabled })
	s.ok("mail.control.route.put", map[string]any{"name": "o_static", "connection": "oauth"})
	st := s.waitStatus("o_static", 10*time.Second, func(st schemas.RouteStatus) bool { return st.State == schemas.StateError })
	if !strings.Contains(st.LastError, "refused the access token") {
		t.Errorf("lastError = %q", st.LastError)
	}
	assertNoSecrets(t, s, ts, "o_static")
}

// TestOAuthClientCredentials: Microsoft 365 application access. The scope is the preset's
// .default, and the client secret goes to the endpoint only.
func TestOAuthClientCredentials(t *testing.T) {
	ts := testkit.StartTokenServer(t, time.Hour, false)
	srv := startOAuthIMAP(t, ts, "XOAUTH2")
	s := runService(t, svcConfig(t), nil)
	srv.append(t, "INBOX", testMail(1, ""))
	r := s.ok("mail.control.connection.put", oauthConn(srv, map[string]any{
		"provider": "microsoft", "tenant": "contoso.onmicrosoft.com", "tokenUrl": ts.URL(),
		"clientId": ts.ClientID, "clientSecret": ts.ClientSecret,
	}))
	if o := r.Connection.OAuth2; o == nil || !o.ClientSecretSet || o.TokenURL != ts.URL() ||
		!slices.Equal(o.Scopes, []string{"https://outlook.office365.com/.default"}) {
		t.Fatalf("put reply oauth2 = %+v", r.Connection.OAuth2)
	}
	s.ok("mail.control.route.put", map[string]any{"name": "o_app", "connection": "oauth"})
	waitEvents(t, s, "o_app", 1)
	scopes := ts.Scopes()
	if ts.Count("client_credentials") != 1 || ts.Count("refresh_token") != 0 || scopes[0] != "https://outlook.office365.com/.default" {
		t.Errorf("client_credentials %d, refresh %d, scopes %q", ts.Count("client_credentials"), ts.Count("refresh_token"), scopes)
	}
	assertNoSecrets(t, s, ts, "o_app")

	// A wrong secret fails the check at its token stage, naming the field to fix.
	c := oauthConn(srv, map[string]any{"provider": "microsoft", "tenant": "contoso.onmicrosoft.com", "tokenUrl": ts.URL(),
		"clientId": ts.ClientID, "clientSecret": "wrong-secret-" + rand.Text()})
	r, msg := s.request("mail.control.connection.test", c)
	if r.OK || r.Error == nil || r.Error.Field != "oauth2.clientSecret" || !strings.Contains(r.Error.Message, "invalid_client") ||
		strings.Contains(string(msg.Data), "wrong-secret-") {
		t.Errorf("connection.test with a wrong client secret = %s", msg.Data)
	}
}

// TestOAuthPresets: provider google and microsoft fill the token URL and the scopes the
// grant needs when they are left out, and keep them when given.
func TestOAuthPresets(t *testing.T) {
	s := runService(t, svcConfig(t), nil)
	for _, tc := range []struct {
		name   string
		oauth  map[string]any
		url    string
		scopes []string
	}{
		{"google", map[string]any{"provider": "google", "clientId": "id", "clientSecret": "cs", "refreshToken": "rt"},
			"https://oauth2.googleapis.com/token", []string{"https://mail.google.com/"}},
		{"microsoft user", map[string]any{"provider": "microsoft", "tenant": "organizations", "clientId": "id", "refreshToken": "rt"},
			"https://login.microsoftonline.com/organizations/oauth2/v2.0/token",
			[]string{"https://outlook.office365.com/IMAP.AccessAsUser.All", "offline_access"}},
		{"microsoft app", map[string]any{"provider": "microsoft", "tenant": "contoso.com", "clientId": "id", "clientSecret": "cs"},
			"https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token", []string{"https://outlook.office365.com/.default"}},
		{"given", map[string]any{"provider": "google", "tokenUrl": "https://idp.example.com/t", "scopes": []string{"a", "b"}, "clientId": "id", "refreshToken": "rt"},
			"https://idp.example.com/t", []string{"a", "b"}},
		{"static", map[string]any{"provider": "google", "accessToken": "at"}, "https://oauth2.googleapis.com/token", nil},
	} {
		c := imapConnection("p")
		delete(c, "password")
		c["auth"], c["oauth2"] = "oauth2", tc.oauth
		r := s.ok("mail.control.connection.put", c)
		if o := r.Connection.OAuth2; o == nil || o.TokenURL != tc.url || !slices.Equal(o.Scopes, tc.scopes) {
			t.Errorf("%s: oauth2 = %+v, want tokenUrl %s and scopes %q", tc.name, r.Connection.OAuth2, tc.url, tc.scopes)
		}
		s.ok("mail.control.connection.delete", map[string]string{"name": "p"})
	}
}

// TestOAuthValidation: a malformed oauth2 object is refused naming the field, and changes
// nothing.
func TestOAuthValidation(t *testing.T) {
	s := runService(t, svcConfig(t), nil)
	good := imapConnection("v")
	delete(good, "password")
	good["auth"], good["oauth2"] = "oauth2", map[string]any{"provider": "google", "clientId": "id", "refreshToken": "rt"}
	s.ok("mail.control.connection.put", good)
	before := s.snapshot()
	for _, tc := range []struct {
		name  string
		oauth map[string]any
		field string
	}{
		{"unknown provider", map[string]any{"provider": "yahoo", "accessToken": "t"}, "oauth2.provider"},
		{"microsoft without tenant", map[string]any{"provider": "microsoft", "clientId": "id", "refreshToken": "rt"}, "oauth2.tenant"},
		{"tenant with a slash", map[string]any{"provider": "microsoft", "tenant": "a/b", "clientId": "id", "refreshToken": "rt"}, "oauth2.tenant"},
		{"tenant without microsoft", map[string]any{"provider": "google", "tenant": "x", "accessToken": "t"}, "oauth2.tenant"},
		{"empty scope", map[string]any{"provider": "google", "scopes": []string{"a", ""}, "accessToken": "t"}, "oauth2.scopes[1]"},
		{"scope with a space", map[string]any{"provider": "google", "scopes": []string{"a b"}, "accessToken": "t"}, "oauth2.scopes[0]"},
		{"token url without scheme", map[string]any{"tokenUrl": "idp.example.com/token", "accessToken": "t"}, "oauth2.tokenUrl"},
		{"refresh without token url", map[string]any{"clientId": "id", "refreshToken": "rt"}, "oauth2.tokenUrl"},
		{"refresh without client id", map[string]any{"provider": "google", "refreshToken": "rt"}, "oauth2.clientId"},
		{"client secret without client id", map[string]any{"provider": "google", "clientSecret": "cs"}, "oauth2.clientId"},
		{"nothing to get a token with", map[string]any{"provider": "google", "clientId": "id"}, "oauth2"},
		{"wrong type", map[string]any{"scopes": "https://mail.google.com/"}, "oauth2.scopes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := imapConnection("v")
			delete(c, "password")
			if tc.field == "oauth2" {
				c["name"] = "v2" // the refresh token stored under v would be kept
			}
			c["auth"], c["oauth2"] = "oauth2", tc.oauth
			s.fail("mail.control.connection.put", c, "invalid", tc.field)
			if after := s.snapshot(); after != before {
				t.Errorf("a refused put changed the bucket: %s, was %s", after, before)
			}
		})
	}
}
