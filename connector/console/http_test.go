package console_test

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mailbus/mailbus/connector/console"
	"github.com/mailbus/mailbus/connector/validate"
	"github.com/mailbus/mailbus/schemas"
)

var csrfInput = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// loginForm fetches the login page and returns its CSRF token (its cookie is in the jar).
func loginForm(t *testing.T, hc *http.Client, m *mailbus) string {
	t.Helper()
	resp, err := hc.Get(m.url + "/ui/login")
	if err != nil {
		t.Fatalf("GET /ui/login: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /ui/login = %s", resp.Status)
	}
	mt := csrfInput.FindSubmatch(body)
	if mt == nil {
		t.Fatalf("login page has no csrf input:\n%s", body)
	}
	return string(mt[1])
}

func postLogin(t *testing.T, hc *http.Client, m *mailbus, csrf, token string, header http.Header) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, m.url+"/ui/login",
		strings.NewReader(url.Values{"csrf": {csrf}, "token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("POST /ui/login: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestConsoleOffWithoutToken: without MAILBUS_ADMIN_TOKEN there is no console, and the
// health endpoints still answer.
func TestConsoleOffWithoutToken(t *testing.T) {
	m := startMailbus(t, "", nil)
	for _, path := range []string{"/ui/", "/ui/login", "/ui/connections", "/ui/static/console.js"} {
		resp, err := http.Get(m.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s without a token = %s, want 404", path, resp.Status)
		}
	}
	resp, err := http.Get(m.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz = %s", resp.Status)
	}
}

// TestLoginSessionCookie: the right token gives a session cookie that scripts cannot read
// and other sites do not send, Secure behind TLS; pages carry a strict CSP.
func TestLoginSessionCookie(t *testing.T) {
	m := startMailbus(t, "tok-"+t.Name(), nil)
	for _, tls := range []bool{false, true} {
		hc := client(t)
		csrf := loginForm(t, hc, m)
		h := http.Header{}
		if tls {
			h.Set("X-Forwarded-Proto", "https")
		}
		resp := postLogin(t, hc, m, csrf, m.token, h)
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("login = %s, want 303", resp.Status)
		}
		var session *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == "mailbus_session" {
				session = c
			}
		}
		if session == nil {
			t.Fatalf("no session cookie in %v", resp.Header["Set-Cookie"])
		}
		if !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Secure != tls {
			t.Errorf("session cookie (tls %v): HttpOnly %v SameSite %v Secure %v; want true Strict %v",
				tls, session.HttpOnly, session.SameSite, session.Secure, tls)
		}
		if tls {
			continue
		}
		resp, err := hc.Get(m.url + "/ui/connections")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /ui/connections after login = %s", resp.Status)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'self'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("Content-Security-Policy %q allows inline code", csp)
		}
	}
}

// TestLoginRateLimited: after the burst of wrong tokens, even the right one waits.
func TestLoginRateLimited(t *testing.T) {
	m := startMailbus(t, "tok-"+t.Name(), nil)
	hc := client(t)
	for i := range 5 {
		csrf := loginForm(t, hc, m)
		if resp := postLogin(t, hc, m, csrf, "wrong", nil); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong token #%d = %s, want 401", i+1, resp.Status)
		}
	}
	csrf := loginForm(t, hc, m)
	resp := postLogin(t, hc, m, csrf, m.token, nil)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("6th attempt = %s, want 429", resp.Status)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Errorf("429 without Retry-After")
	}
	for _, c := range resp.Cookies() {
		if c.Name == "mailbus_session" && c.MaxAge >= 0 {
			t.Fatalf("a rate-limited login set a session cookie")
		}
	}
}

// formToken is the CSRF token of the connection form of a logged-in client.
func formToken(t *testing.T, hc *http.Client, m *mailbus) string {
	t.Helper()
	resp, err := hc.Get(m.url + "/ui/connection")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(csrfInput.FindSubmatch(body)[1])
}

// TestFormPostsRefused: a form post of a logged-in client without the CSRF token, with a
// wrong one, or marked cross-site by the browser is refused and changes nothing.
func TestFormPostsRefused(t *testing.T) {
	m := startMailbus(t, "tok-"+t.Name(), nil)
	hc := loggedIn(t, m)
	token := formToken(t, hc, m)

	form := url.Values{"name": {"x1"}, "type": {"imap"}, "host": {"imap.example.com"}, "encryption": {"ssl"},
		"auth": {"none"}, "logLevel": {"errors"}}
	cases := []struct {
		name   string
		csrf   string
		header map[string]string
	}{
		{"no csrf", "", nil},
		{"wrong csrf", token + "x", nil},
		{"cross-site", token, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"}},
		{"other origin", token, map[string]string{"Origin": "http://evil.example"}},
	}
	for _, tc := range cases {
		f := url.Values{}
		for k, v := range form {
			f[k] = v
		}
		if tc.csrf != "" {
			f.Set("csrf", tc.csrf)
		}
		req, _ := http.NewRequest(http.MethodPost, m.url+"/ui/connection", strings.NewReader(f.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range tc.header {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: POST /ui/connection = %s, want 403", tc.name, resp.Status)
		}
	}
	if r := m.control(t, "connection.get", schemas.NameRequest{Name: "x1"}); r.OK {
		t.Fatalf("a refused post stored connection x1")
	}
	// The same form with the token is taken: the refusals above were for the token.
	form.Set("csrf", token)
	resp, err := hc.PostForm(m.url+"/ui/connection", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("POST with the CSRF token = %s, want 303", resp.Status)
	}
	if r := m.control(t, "connection.get", schemas.NameRequest{Name: "x1"}); !r.OK {
		t.Fatalf("connection x1 not stored: %+v", r.Error)
	}
}

// TestLanguageFromAcceptLanguage: Russian for a Russian browser, and the switch wins.
func TestLanguageFromAcceptLanguage(t *testing.T) {
	m := startMailbus(t, "tok-"+t.Name(), nil)
	page := func(hc *http.Client, lang string) string {
		req, _ := http.NewRequest(http.MethodGet, m.url+"/ui/login", nil)
		req.Header.Set("Accept-Language", lang)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	hc := client(t)
	mustContain(t, "login page for ru-RU", page(hc, "ru-RU,ru;q=0.9,en;q=0.5"), "Токен администратора")
	mustContain(t, "login page for de", page(hc, "de-DE"), "Admin token")
	resp, err := hc.Get(m.url + "/ui/login?lang=en")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("GET ?lang=en = %s, want a redirect", resp.Status)
	}
	mustContain(t, "login page for ru after switching to en", page(hc, "ru"), "Admin token")
}

// TestExchangeVersionsMatch keeps the form's Exchange versions those the control service
// accepts.
func TestExchangeVersionsMatch(t *testing.T) {
	if got := console.ExchangeVersions(); !slices.Equal(got, validate.ExchangeVersions) {
		t.Fatalf("console offers %v, control accepts %v", got, validate.ExchangeVersions)
	}
}

// TestFormSaveNewNameOverExisting: a form saved under a new name that another connection
// or route already has is refused (409, the refusal next to the name) and changes nothing;
// saved under a free name, it is stored and the list page names it.
func TestFormSaveNewNameOverExisting(t *testing.T) {
	m := startMailbus(t, "tok-"+t.Name(), nil)
	hc := loggedIn(t, m)
	token := formToken(t, hc, m)

	conn := url.Values{"csrf": {token}, "name": {"c1"}, "type": {"imap"}, "host": {"imap.example.com"},
		"encryption": {"ssl"}, "auth": {"none"}, "logLevel": {"errors"}}
	route := url.Values{"csrf": {token}, "name": {"r1"}, "connection": {"c1"}, "bus": {"0"}, "mailbox": {"INBOX"},
		"select": {"all"}, "backlog": {"unseen"}, "after": {"markRead"}}
	post := func(path string, f url.Values) (int, string, string) {
		t.Helper()
		hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		defer func() { hc.CheckRedirect = nil }()
		resp, err := hc.PostForm(m.url+path, f)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Location"), string(b)
	}
	for _, tc := range []struct {
		path, entity string
		form         url.Values
	}{{"/ui/connection", "connection", conn}, {"/ui/route", "route", route}} {
		code, loc, _ := post(tc.path, tc.form)
		if code != http.StatusSeeOther || !strings.Contains(loc, "saved="+tc.form.Get("name")) {
			t.Fatalf("save %s %s = %d to %q, want 303 to the list naming it", tc.entity, tc.form.Get("name"), code, loc)
		}
		before := m.control(t, tc.entity+".get", schemas.NameRequest{Name: tc.form.Get("name")})
		// The form of another definition renamed to the existing name.
		other := url.Values{}
		for k, v := range tc.form {
			other[k] = v
		}
		other.Set("original", "other")
		code, _, page := post(tc.path, other)
		if code != http.StatusConflict || !strings.Contains(page, "exists already") {
			t.Errorf("save %s over %s = %d, want 409 saying it exists already", tc.entity, tc.form.Get("name"), code)
		}
		after := m.control(t, tc.entity+".get", schemas.NameRequest{Name: tc.form.Get("name")})
		if !before.OK || !after.OK || revision(before) != revision(after) {
			t.Errorf("%s %s changed by the refused save: revision %d, then %d", tc.entity, tc.form.Get("name"), revision(before), revision(after))
		}
	}
}

// revision is the stored revision of the definition in a get reply.
func revision(r schemas.Reply) uint64 {
	switch {
	case r.Connection != nil:
		return r.Connection.Revision
	case r.Route != nil:
		return r.Route.Revision
	}
	return 0
}
