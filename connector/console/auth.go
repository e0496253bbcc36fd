package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

const (
	sessionCookie = "mailbus_session"
	loginCookie   = "mailbus_login"
	langCookie    = "mailbus_lang"
	// sessionTTL is how long a login lasts.
	sessionTTL = 12 * time.Hour
	// maxLimiters bounds the per-address limiters kept; past it they start afresh, which
	// at worst gives an attacker with that many addresses one more burst each.
	maxLimiters = 10000
)

// auth checks the token, signs sessions and limits login attempts.
//
// A session is stateless: expiry and a random id, signed with a key derived from the
// token, so every replica with the same token accepts it and a new token ends every
// session. Its CSRF token is a MAC of its id. Logout is remembered here until the session
// would have expired.
type auth struct {
	tokenSum [sha256.Size]byte
	key      []byte
	every    rate.Limit
	burst    int

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	revoked  map[string]time.Time
}

// session is a valid login.
type session struct {
	ID   string
	CSRF string
}

func newAuth(token string, every time.Duration, burst int) *auth {
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte("mailbus console session key v1"))
	return &auth{
		tokenSum: sha256.Sum256([]byte(token)),
		key:      mac.Sum(nil),
		every:    rate.Every(every),
		burst:    burst,
		limiters: map[string]*rate.Limiter{},
		revoked:  map[string]time.Time{},
	}
}

// tokenOK compares in constant time; hashing first hides the token's length too.
func (a *auth) tokenOK(given string) bool {
	sum := sha256.Sum256([]byte(given))
	return subtle.ConstantTimeCompare(sum[:], a.tokenSum[:]) == 1
}

// allow takes one login attempt of the client at addr from its budget.
func (a *auth) allow(addr string, now time.Time) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.limiters[host]
	if !ok {
		if len(a.limiters) >= maxLimiters {
			clear(a.limiters)
		}
		l = rate.NewLimiter(a.every, a.burst)
		a.limiters[host] = l
	}
	return l.AllowN(now, 1)
}

func (a *auth) mac(parts ...[]byte) []byte {
	m := hmac.New(sha256.New, a.key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

var b64 = base64.RawURLEncoding

// newSession returns the cookie value of a new session.
func (a *auth) newSession(now time.Time) string {
	var payload [8 + 16]byte
	binary.BigEndian.PutUint64(payload[:8], uint64(now.Add(sessionTTL).Unix()))
	rand.Read(payload[8:])
	return b64.EncodeToString(payload[:]) + "." + b64.EncodeToString(a.mac([]byte("session"), payload[:]))
}

// check returns the session of a cookie value, or nil when it is forged, expired or
// logged out.
func (a *auth) check(value string, now time.Time) *session {
	p, m, ok := strings.Cut(value, ".")
	if !ok {
		return nil
	}
	payload, err1 := b64.DecodeString(p)
	sum, err2 := b64.DecodeString(m)
	if err1 != nil || err2 != nil || len(payload) != 24 {
		return nil
	}
	if !hmac.Equal(sum, a.mac([]byte("session"), payload)) {
		return nil
	}
	if now.Unix() >= int64(binary.BigEndian.Uint64(payload[:8])) {
		return nil
	}
	id := b64.EncodeToString(payload[8:])
	a.mu.Lock()
	_, gone := a.revoked[id]
	a.mu.Unlock()
	if gone {
		return nil
	}
	return &session{ID: id, CSRF: b64.EncodeToString(a.mac([]byte("csrf"), payload[8:]))}
}

// revoke ends a session on this replica.
func (a *auth) revoke(s *session, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, until := range a.revoked {
		if now.After(until) {
			delete(a.revoked, id)
		}
	}
	a.revoked[s.ID] = now.Add(sessionTTL)
}

// csrfOK compares a form's token with the session's.
func csrfOK(s *session, given string) bool {
	return given != "" && subtle.ConstantTimeCompare([]byte(given), []byte(s.CSRF)) == 1
}

type sessionHandler func(http.ResponseWriter, *http.Request, *session)

// authed serves h to a logged-in client; others go to the login page (or get 401 for
// the event streams and downloads a script asked for).
func (c *Console) authed(h sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := c.session(r)
		if s == nil {
			if strings.HasPrefix(r.URL.Path, Base+"live/") || r.Header.Get("X-Console-Fragment") != "" {
				http.Error(w, "login required", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, Base+"login", http.StatusSeeOther)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		h(w, r, s)
	}
}

// authedPost is authed for a form post: it also wants the session's CSRF token.
func (c *Console) authedPost(h sessionHandler) http.HandlerFunc {
	return c.authed(func(w http.ResponseWriter, r *http.Request, s *session) {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		if err := r.ParseForm(); err != nil {
			c.fail(w, r, http.StatusBadRequest, "err.badForm")
			return
		}
		if !csrfOK(s, r.PostForm.Get("csrf")) {
			c.log.Warn("console: form without a valid CSRF token refused", "path", r.URL.Path)
			c.fail(w, r, http.StatusForbidden, "err.csrf")
			return
		}
		h(w, r, s)
	})
}

func (c *Console) session(r *http.Request) *session {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	return c.auth.check(ck.Value, time.Now())
}

type loginPage struct {
	base
	Form  string
	Error string
}

// loginPage shows the token form. Its CSRF token is a random value also set as a cookie
// (double submit), since there is no session yet.
func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if c.session(r) != nil {
		http.Redirect(w, r, Base+"connections", http.StatusSeeOther)
		return
	}
	c.renderLogin(w, r, http.StatusOK, "")
}

func (c *Console) renderLogin(w http.ResponseWriter, r *http.Request, status int, errKey string) {
	var raw [16]byte
	rand.Read(raw[:])
	v := b64.EncodeToString(raw[:])
	http.SetCookie(w, &http.Cookie{
		Name: loginCookie, Value: v, Path: Base + "login", MaxAge: 3600,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r),
	})
	lang := langOf(r)
	p := &loginPage{base: base{Lang: lang, Title: tr(lang, "login.title"), Here: Base + "login"}, Form: v}
	if errKey != "" {
		p.Error = tr(lang, errKey)
	}
	w.Header().Set("Cache-Control", "no-store")
	c.render(w, r, status, "login", p)
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	if !c.auth.allow(r.RemoteAddr, now) {
		c.log.Warn("console: login rate limit", "remote", r.RemoteAddr)
		w.Header().Set("Retry-After", "60")
		c.renderLogin(w, r, http.StatusTooManyRequests, "login.tooMany")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		c.renderLogin(w, r, http.StatusBadRequest, "err.badForm")
		return
	}
	ck, err := r.Cookie(loginCookie)
	if err != nil || ck.Value == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(r.PostForm.Get("csrf"))) != 1 {
		c.log.Warn("console: login without a valid CSRF token refused", "remote", r.RemoteAddr)
		c.renderLogin(w, r, http.StatusForbidden, "err.csrf")
		return
	}
	if !c.auth.tokenOK(r.PostForm.Get("token")) {
		c.log.Warn("console: wrong admin token", "remote", r.RemoteAddr)
		c.renderLogin(w, r, http.StatusUnauthorized, "login.wrong")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: c.auth.newSession(now), Path: Base, MaxAge: int(sessionTTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r),
	})
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Path: Base + "login", MaxAge: -1})
	http.Redirect(w, r, Base+"connections", http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, s *session) {
	c.auth.revoke(s, time.Now())
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Path: Base, MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r)})
	http.Redirect(w, r, Base+"login", http.StatusSeeOther)
}
