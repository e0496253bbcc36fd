package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mailbus/mailbus/schemas"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Base is the path the console is served under.
const Base = "/ui/"

// csp allows nothing but the console's own files: no inline script or style, no frames,
// forms that post only to the console.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Options configures a Console.
type Options struct {
	// Token is the login token (MAILBUS_ADMIN_TOKEN). Required.
	Token string
	// NC carries the control requests and reads the bus streams.
	NC *nats.Conn
	// Prefix is MAILBUS_SUBJECT_PREFIX ("mail" when empty).
	Prefix string
	// Logger gets refused logins and failed requests; nil discards.
	Logger *slog.Logger
	// RequestTimeout bounds one control request; zero means 60s (a connection check
	// against a slow server takes long).
	RequestTimeout time.Duration
	// LivePeriod is how often the live views ask for fresh status; zero means 1s.
	LivePeriod time.Duration
	// LoginRate and LoginBurst limit login attempts per client address: zero means one
	// every 12s with a burst of 5.
	LoginRate  time.Duration
	LoginBurst int
}

// Console is the admin console's http.Handler, to be mounted at Base.
type Console struct {
	opts   Options
	nc     *nats.Conn
	prefix string
	log    *slog.Logger
	auth   *auth
	pages  map[string]*pageSet
	mux    *http.ServeMux
	static http.Handler

	mu     sync.Mutex
	checks map[string]checkSummary // last check run from this console, by connection
}

// checkSummary is the outcome of the last check of a connection, for the list.
type checkSummary struct {
	At      time.Time
	OK      bool
	Message string
}

// New makes a Console. It starts nothing: requests are served as they come.
func New(o Options) (*Console, error) {
	if o.Token == "" {
		return nil, errors.New("console: no admin token")
	}
	if o.NC == nil {
		return nil, errors.New("console: no NATS connection")
	}
	if o.Prefix == "" {
		o.Prefix = "mail"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 60 * time.Second
	}
	if o.LivePeriod <= 0 {
		o.LivePeriod = time.Second
	}
	if o.LoginRate <= 0 {
		o.LoginRate = 12 * time.Second
	}
	if o.LoginBurst <= 0 {
		o.LoginBurst = 5
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	c := &Console{
		opts: o, nc: o.NC, prefix: o.Prefix, log: o.Logger,
		auth:   newAuth(o.Token, o.LoginRate, o.LoginBurst),
		pages:  pages,
		static: http.StripPrefix(Base+"static/", http.FileServerFS(sub)),
		checks: map[string]checkSummary{},
	}
	c.routes()
	return c, nil
}

func (c *Console) routes() {
	m := http.NewServeMux()
	c.mux = m
	m.Handle("GET /ui/static/", c.static)
	m.HandleFunc("GET /ui/login", c.loginPage)
	m.HandleFunc("POST /ui/login", c.login)
	m.HandleFunc("GET /ui/{$}", c.authed(func(w http.ResponseWriter, r *http.Request, s *session) {
		http.Redirect(w, r, Base+"connections", http.StatusSeeOther)
	}))
	m.HandleFunc("POST /ui/logout", c.authedPost(c.logout))

	connections, liveConnections := rowsHandlers(c, "connections", "conn.title", c.connectionRows)
	routes, liveRoutes := rowsHandlers(c, "routes", "route.title", c.routeRows)
	m.HandleFunc("GET /ui/connections", c.authed(connections))
	m.HandleFunc("GET /ui/connection", c.authed(c.connectionForm))
	m.HandleFunc("POST /ui/connection", c.authedPost(c.connectionSave))
	m.HandleFunc("POST /ui/connection/check", c.authedPost(c.connectionCheck))
	m.HandleFunc("POST /ui/connection/delete", c.authedPost(c.connectionDelete))
	m.HandleFunc("GET /ui/connection/log", c.authed(c.connectionLog))

	m.HandleFunc("GET /ui/routes", c.authed(routes))
	m.HandleFunc("GET /ui/route", c.authed(c.routeForm))
	m.HandleFunc("POST /ui/route", c.authedPost(c.routeSave))
	m.HandleFunc("POST /ui/route/delete", c.authedPost(c.routeDelete))

	m.HandleFunc("GET /ui/events", c.authed(c.eventsPage))
	m.HandleFunc("GET /ui/event", c.authed(c.eventJSON))

	m.HandleFunc("GET /ui/live/connections", c.authed(liveConnections))
	m.HandleFunc("GET /ui/live/routes", c.authed(liveRoutes))
	m.HandleFunc("GET /ui/live/events", c.authed(c.liveEvents))
}

// ServeHTTP sets the security headers, refuses cross-origin unsafe requests, applies a
// ?lang= switch and serves the page.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	if err := crossOrigin.Check(r); err != nil {
		c.log.Warn("console: cross-origin request refused", "path", r.URL.Path, "origin", r.Header.Get("Origin"))
		c.fail(w, r, http.StatusForbidden, msgKey("err.crossOrigin"))
		return
	}
	if l := r.URL.Query().Get("lang"); l != "" && r.Method == http.MethodGet {
		if lang, ok := supported(l); ok {
			http.SetCookie(w, &http.Cookie{
				Name: langCookie, Value: lang, Path: Base, MaxAge: 365 * 24 * 3600,
				HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r),
			})
			q := r.URL.Query()
			q.Del("lang")
			u := *r.URL
			u.RawQuery = q.Encode()
			http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
			return
		}
	}
	c.mux.ServeHTTP(w, r)
}

// crossOrigin refuses unsafe requests a browser marks as coming from another origin
// (Sec-Fetch-Site, else Origin against Host). Same-site is refused too: another port of
// the same host is another origin.
var crossOrigin = http.NewCrossOriginProtection()

// secure says whether the client reached the console over TLS, directly or through a
// proxy that terminates it.
func secure(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}

// msgKey is a message catalogue key, translated when the page is rendered.
type msgKey string

// fail renders an error page with status.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, status int, key msgKey, args ...any) {
	lang := langOf(r)
	c.render(w, r, status, "error", &errorPage{
		base:    base{Lang: lang, Title: tr(lang, "err.title"), Here: Base + "connections"},
		Message: fmt.Sprintf(tr(lang, string(key)), args...),
	})
}

type errorPage struct {
	base
	Message string
}

// request sends one control request and decodes its reply. A refusal is returned as a
// *schemas.Error (with the reply); a transport failure as another error.
// listPage is how many definitions the console asks for in one page of a list.
const listPage = 1000

// list reads a whole list page by page, as connector/client does for the CLI (the console
// cannot import it: connector, which client imports, mounts the console). Asked for in one
// piece, a list larger than a NATS message is refused.
func (c *Console) list(ctx context.Context, entity string, status bool) (*schemas.Reply, error) {
	req := schemas.ListRequest{Status: status, Limit: listPage}
	all := &schemas.Reply{OK: true}
	for {
		r, err := c.request(ctx, entity, "list", req)
		if err != nil {
			return nil, err
		}
		all.Connections = append(all.Connections, r.Connections...)
		all.Routes = append(all.Routes, r.Routes...)
		all.Statuses = append(all.Statuses, r.Statuses...)
		if r.Next == "" || r.Next <= req.After {
			return all, nil
		}
		req.After = r.Next
	}
}

func (c *Console) request(ctx context.Context, entity, op string, body any) (*schemas.Reply, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	subject := c.prefix + ".control." + entity + "." + op
	msg, err := c.nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", subject, err)
	}
	var reply schemas.Reply
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return nil, fmt.Errorf("%s: reply: %w", subject, err)
	}
	if !reply.OK && reply.Error != nil && op != "test" {
		return &reply, reply.Error
	}
	return &reply, nil
}
