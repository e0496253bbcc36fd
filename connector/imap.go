package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mailbus/mailbus/connector/bus"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailbus/mailbus/connector/connlog"
	"github.com/mailbus/mailbus/connector/filter"
	"github.com/mailbus/mailbus/connector/metrics"
	"github.com/mailbus/mailbus/connector/oauth2"
	"github.com/mailbus/mailbus/connector/retry"
	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/connector/validate"
	"github.com/mailbus/mailbus/schemas"
)

// Retry pacing. A temporary failure backs off exponentially with jitter (retry.Backoff);
// a permanent one waits at least permanentRetry (or five polls) before trying
// again, since the definition or the server has to change first.
const (
	permanentRetry = 5 * time.Minute
	// idleRestart re-issues IDLE before the 29 minutes after which servers may drop it.
	idleRestart = 25 * time.Minute
	// noopInterval keeps a connection without IDLE honest between long polls.
	noopInterval = 2 * time.Minute
)

// NewIMAPWorker makes the worker of a route on an IMAP connection. It refuses a definition
// it cannot run (permanent errors); what depends on the server (capabilities, credentials,
// the mailbox) is found out by Run, which parks the route in state error when needed.
func NewIMAPWorker(rt *Runtime, spec RouteSpec) (Worker, error) {
	r, c := spec.Route, spec.Connection
	if c.Type != schemas.TypeIMAP && c.Type != "" {
		return nil, Permanent(fmt.Errorf("connection %s is of type %q, not imap", c.Name, c.Type))
	}
	switch r.Select {
	case "":
		r.Select = schemas.SelectAll
	case schemas.SelectUnseen, schemas.SelectAll:
	default:
		return nil, Permanent(fmt.Errorf("route %s: unknown select %q", r.Name, r.Select))
	}
	switch r.Backlog {
	case "":
		r.Backlog = schemas.BacklogUnseen
	case schemas.BacklogUnseen, schemas.BacklogAll, schemas.BacklogNone:
	default:
		return nil, Permanent(fmt.Errorf("route %s: unknown backlog %q", r.Name, r.Backlog))
	}
	switch r.After {
	case "":
		r.After = schemas.AfterMarkRead
	case schemas.AfterMarkRead, schemas.AfterNone, schemas.AfterDelete:
	case schemas.AfterMove:
		if r.MoveTo == "" {
			return nil, Permanent(fmt.Errorf("route %s: after move needs moveTo", r.Name))
		}
	default:
		return nil, Permanent(fmt.Errorf("route %s: unknown after %q", r.Name, r.After))
	}
	if r.Mailbox == "" {
		r.Mailbox = "INBOX"
	}
	flt, err := filter.New(r.Filter)
	if err != nil {
		return nil, Permanent(fmt.Errorf("route %s: %w", r.Name, err))
	}
	pub := rt.Publishers.Bus(r.Bus)
	if pub == nil {
		return nil, fmt.Errorf("route %s: no publisher for bus %d (Runtime.Publishers not set?)", r.Name, r.Bus)
	}
	eventPrefix := c.Name + "/" + r.Mailbox
	var tokens *oauth2.Source
	if c.Auth == schemas.AuthOAuth2 {
		// Its settings are checked when the first session asks for a token, so a bad one
		// parks the route with the reason rather than failing its start.
		tokens = newTokenSource(&c, rt.defs)
	}
	w := &imapWorker{
		tokens:  tokens,
		filter:  flt,
		rt:      rt,
		route:   r,
		conn:    c,
		pub:     pub,
		cps:     store.Checkpoints(rt.Storage.State, r.Name),
		src:     store.CheckpointSource{Connection: c.Name, Server: IMAPAddr(&c), User: c.Username, Mailbox: r.Mailbox},
		foreign: make(map[string]bool),
		subject: rt.Names.BusSubject(r.Bus, r.Name),
		source:  "mailbus/" + eventPrefix,
		idPfx:   eventPrefix,
		log:     rt.logger().With("route", r.Name, "connection", c.Name),
		met:     rt.Metrics.Route(r.Name, r.Bus),
	}
	w.clog = connlog.NewRoute(rt.ConnLog, &w.conn, r.Name, w.log, tokens)
	return w, nil
}

// imapWorker runs one route: sessions (connect, cycle, wait, cycle...) until ctx ends,
// with backoff between failed sessions.
type imapWorker struct {
	rt    *Runtime
	route schemas.Route
	conn  schemas.Connection
	pub   *bus.BusPublisher
	cps   *store.Record[store.Checkpoint]
	src   store.CheckpointSource // what the checkpoint belongs to
	// foreign holds the Msg-Ids of events the stream held already though this route never
	// published them (see awaitAcks), until one of them is stored after all.
	foreign map[string]bool
	subject string
	source  string // ce-source
	idPfx   string // <connection>/<mailbox>, the event Id without /<uidvalidity>/<uid>
	log     *slog.Logger
	tokens  *oauth2.Source // oauth2 only
	met     *metrics.RouteMetrics
	clog    *connlog.Route
	filter  *filter.Filter // nil: every message the route selects
}

func (rt *Runtime) logger() *slog.Logger {
	if rt.Logger == nil {
		return slog.Default()
	}
	return rt.Logger
}

// Run implements Worker. It returns only when ctx ends: failures are retried here, with
// the route's state telling what happens.
func (w *imapWorker) Run(ctx context.Context) error {
	w.status(func(s *schemas.RouteStatus) {
		s.State, s.Owner, s.LastError = schemas.StateStarting, w.rt.Instance, ""
	})
	defer w.status(func(s *schemas.RouteStatus) { s.State = schemas.StateStopped })
	attempt := 0
	for n := 0; ; n++ {
		if n > 0 {
			w.met.Reconnect()
		}
		err := w.session(ctx, &attempt)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errTokenRenew) {
			w.connLog(slog.LevelDebug, connlog.EventLogin, "the access token is about to expire: reconnecting with a new one")
			continue
		}
		countFailure(w.met, err, false)
		var wait time.Duration
		state := schemas.StateBackoff
		if IsPermanent(err) {
			state = schemas.StateError
			wait = max(permanentRetry, 5*w.pollInterval())
			w.clog.Failed(state, wait, err)
		} else {
			wait = retry.Backoff(attempt)
			attempt++
			w.clog.Failed(state, wait, err)
		}
		text := statusError(err, "IMAP", bus.Up(w.rt.NC))
		w.status(func(s *schemas.RouteStatus) { s.State, s.LastError = state, text })
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (w *imapWorker) pollInterval() time.Duration {
	if d := time.Duration(w.conn.PollInterval); d > 0 {
		return d
	}
	return validate.DefaultPollInterval
}

func (w *imapWorker) status(f func(s *schemas.RouteStatus)) {
	if w.rt.Status != nil {
		w.rt.Status.Update(w.route.Name, f)
	}
}

// connLog writes to the process log and to the connection log (see connlog.Route). args are
// key, value pairs.
func (w *imapWorker) connLog(level slog.Level, event, msg string, args ...any) {
	w.clog.Log(level, event, msg, args...)
}

// session connects, then runs cycles until an error or ctx ends. attempt is reset once a
// cycle succeeded, so that the next failure starts its backoff afresh.
func (w *imapWorker) session(ctx context.Context, attempt *int) error {
	wake := make(chan struct{}, 1)
	opts := &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil { // EXISTS: new mail, most likely
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		},
	}}
	release, err := w.rt.sessions.take()
	if err != nil {
		return err
	}
	defer release()
	c, err := dialIMAP(ctx, &w.conn, w.rt.TLSRootCAs, opts, w.tokens)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	caps := c.Caps()
	if caps == nil {
		return errors.New("capability: no answer")
	}
	if err := w.checkCaps(caps); err != nil {
		return err
	}
	w.clog.Connected(IMAPAddr(&w.conn))
	if err := w.checkMoveTo(ctx, c); err != nil {
		return err
	}
	cp, err := w.cps.Load(ctx)
	if err != nil {
		return err
	}
	if change := w.src.ChangeFrom(cp.Source); change != "" {
		w.connLog(slog.LevelWarn, connlog.EventState, fmt.Sprintf(
			"checkpoint reset: the route's source changed (%s); backlog %s decides what of the mail in the mailbox is published",
			change, w.route.Backlog))
		cp = store.Checkpoint{}
	}
	// A checkpoint of an earlier version records no source and no PublishedTo: whatever
	// the mailbox holds may have been published (see selectMailbox).
	legacy := cp.Source == nil && cp.UidValidity != 0
	cp.Source = &w.src
	probeKey, err := w.rt.probeKeys().get(ctx)
	if err != nil {
		return err
	}
	s := &imapSession{
		w: w, c: c, cp: cp, wake: wake, probeKey: probeKey, legacy: legacy,
		renewAt: w.tokens.RenewAt(),
		idle:    caps.Has(imap.CapIdle) && w.conn.IdleEnabled(),
		move:    caps.Has(imap.CapMove),
	}
	reselect := true
	for {
		if err := s.cycle(ctx, reselect); err != nil {
			return err
		}
		*attempt = 0
		if reselect, err = s.wait(ctx); err != nil {
			return err
		}
	}
}

// checkCaps refuses an after action the server cannot do safely: without UIDPLUS, an
// EXPUNGE would also remove messages someone else marked \Deleted.
func (w *imapWorker) checkCaps(caps imap.CapSet) error {
	switch w.route.After {
	case schemas.AfterDelete:
		if !caps.Has(imap.CapUIDPlus) {
			return Permanent(errors.New("after delete needs the server's UIDPLUS (UID EXPUNGE), which it lacks"))
		}
	case schemas.AfterMove:
		if !caps.Has(imap.CapMove) && !caps.Has(imap.CapUIDPlus) {
			return Permanent(errors.New("after move needs the server's MOVE or UIDPLUS, which it lacks"))
		}
	}
	return nil
}

// checkMoveTo makes sure, before anything is published, that the folder of after move
// exists: a route that would publish and then fail to move every message is parked in
// state error instead, its status naming the folder.
func (w *imapWorker) checkMoveTo(ctx context.Context, c *imapclient.Client) error {
	if w.route.After != schemas.AfterMove {
		return nil
	}
	err := within(ctx, imapCommandTimeout, c, func() error {
		_, err := c.Status(w.route.MoveTo, &imap.StatusOptions{NumMessages: true}).Wait()
		return err
	})
	var ie *imap.Error
	if errors.As(err, &ie) {
		// Whatever the server's reason (missing, no right to it), no move can succeed.
		return Permanent(fmt.Errorf("moveTo folder %q does not exist or cannot be opened: %w", w.route.MoveTo, err))
	}
	if err != nil {
		return fmt.Errorf("moveTo folder %q: %w", w.route.MoveTo, err)
	}
	return nil
}
