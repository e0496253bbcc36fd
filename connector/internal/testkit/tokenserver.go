package testkit

import (
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"
)

// TokenServer is an OAuth2 token endpoint (RFC 6749) for the tests of IMAP and Exchange
// routes: refresh_token and
// client_credentials grants, tokens that expire after ttl, refresh tokens that it may
// rotate (the old one then stops working) and that it can revoke. Its error descriptions
// quote the refresh token they refuse, so a test can tell whether mailbus repeats them.
type TokenServer struct {
	srv                    *httptest.Server
	ClientID, ClientSecret string

	mu      sync.Mutex
	ttl     time.Duration
	rotate  bool
	refresh map[string]bool      // refresh tokens that work
	access  map[string]time.Time // access token -> expiry
	issued  []string             // every token handed out
	grants  map[string]int       // successful requests per grant type
	used    []string             // refresh tokens presented, in order
	scopes  []string             // the scope parameter of each request
}

// StartTokenServer starts a token endpoint whose access tokens live ttl, which replaces a
// refresh token at each use when rotate is set; it stops when t ends.
func StartTokenServer(t testing.TB, ttl time.Duration, rotate bool) *TokenServer {
	t.Helper()
	ts := &TokenServer{
		ClientID: "mailbus-app", ClientSecret: "cs-" + rand.Text(), ttl: ttl, rotate: rotate,
		refresh: map[string]bool{}, access: map[string]time.Time{}, grants: map[string]int{},
	}
	ts.srv = httptest.NewServer(http.HandlerFunc(ts.serve))
	t.Cleanup(ts.srv.Close)
	return ts
}

// URL is the token URL a connection names.
func (ts *TokenServer) URL() string { return ts.srv.URL + "/token" }

// NewRefresh makes a refresh token that works.
func (ts *TokenServer) NewRefresh() string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	rt := "rt-" + rand.Text()
	ts.refresh[rt] = true
	ts.issued = append(ts.issued, rt)
	return rt
}

// NewAccess makes an access token that works for d.
func (ts *TokenServer) NewAccess(d time.Duration) string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	at := "at-" + rand.Text()
	ts.access[at] = time.Now().Add(d)
	ts.issued = append(ts.issued, at)
	return at
}

// Revoke makes every refresh and access token stop working.
func (ts *TokenServer) Revoke() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	clear(ts.refresh)
	clear(ts.access)
}

// Valid reports whether an access token works now.
func (ts *TokenServer) Valid(at string) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	exp, ok := ts.access[at]
	return ok && time.Now().Before(exp)
}

// Expiry is when the access token at stops working.
func (ts *TokenServer) Expiry(at string) time.Time {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.access[at]
}

// Count is how many requests of grant (refresh_token, client_credentials) succeeded.
func (ts *TokenServer) Count(grant string) int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.grants[grant]
}

// Secrets is every token handed out, and the client secret.
func (ts *TokenServer) Secrets() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string{ts.ClientSecret}, ts.issued...)
}

// WorkingRefresh lists the refresh tokens that work now.
func (ts *TokenServer) WorkingRefresh() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var l []string
	for rt, ok := range ts.refresh {
		if ok {
			l = append(l, rt)
		}
	}
	return l
}

// Used lists the refresh tokens presented, in order.
func (ts *TokenServer) Used() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.used)
}

// Scopes lists the scope parameter of each request.
func (ts *TokenServer) Scopes() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.scopes)
}

func (ts *TokenServer) serve(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, code, desc string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
	}
	if r.Method != http.MethodPost || r.ParseForm() != nil {
		fail(http.StatusBadRequest, "invalid_request", "POST a form")
		return
	}
	f := r.PostForm
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.scopes = append(ts.scopes, f.Get("scope"))
	if f.Get("client_id") != ts.ClientID || f.Get("client_secret") != ts.ClientSecret {
		fail(http.StatusUnauthorized, "invalid_client", "unknown client "+f.Get("client_id")+" with secret "+f.Get("client_secret"))
		return
	}
	resp := map[string]any{"token_type": "Bearer", "expires_in": int(ts.ttl / time.Second)}
	switch g := f.Get("grant_type"); g {
	case "refresh_token":
		rt := f.Get("refresh_token")
		ts.used = append(ts.used, rt)
		if !ts.refresh[rt] {
			fail(http.StatusBadRequest, "invalid_grant", "Token has been expired or revoked: "+rt)
			return
		}
		if ts.rotate {
			delete(ts.refresh, rt)
			next := "rt-" + rand.Text()
			ts.refresh[next] = true
			ts.issued = append(ts.issued, next)
			resp["refresh_token"] = next
		}
		ts.grants[g]++
	case "client_credentials":
		ts.grants[g]++
	default:
		fail(http.StatusBadRequest, "unsupported_grant_type", g)
		return
	}
	at := "at-" + rand.Text()
	ts.access[at] = time.Now().Add(ts.ttl)
	ts.issued = append(ts.issued, at)
	resp["access_token"] = at
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}
