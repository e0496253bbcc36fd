package imap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/filter"
	"github.com/mailbus/mailbus/connector/retry"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailbus/mailbus/connector/connlog"
	"github.com/mailbus/mailbus/connector/metrics"
	"github.com/mailbus/mailbus/connector/oauth2"
	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/schemas"
)

const (
	// idleRestart re-issues IDLE before the 29 minutes after which servers may drop it.
	idleRestart = 25 * time.Minute
	// noopInterval keeps a connection without IDLE honest between long polls.
	noopInterval = 2 * time.Minute
)

// NewWorker makes the worker of a route on an IMAP connection: the engine over an
// IMAP source. It refuses a definition it cannot run (permanent errors); what depends on
// the server (capabilities, credentials, the mailbox) is found out by Run, which parks the
// route in state error when needed.
func NewWorker(rt *engine.Runtime, spec engine.RouteSpec) (engine.Worker, error) {
	r, c := spec.Route, spec.Connection
	if c.Type != schemas.TypeIMAP && c.Type != "" {
		return nil, retry.Permanent(fmt.Errorf("connection %s is of type %q, not imap", c.Name, c.Type))
	}
	if err := engine.Defaults(&r); err != nil {
		return nil, err
	}
	flt, err := filter.New(r.Filter)
	if err != nil {
		return nil, retry.Permanent(fmt.Errorf("route %s: %w", r.Name, err))
	}
	var tokens *oauth2.Source
	if c.Auth == schemas.AuthOAuth2 {
		// Its settings are checked when the first session asks for a token, so a bad one
		// parks the route with the reason rather than failing its start.
		tokens = oauth2.NewSource(&c, rt.Tokens)
	}
	e, err := engine.New(rt, r, c, engine.Options{Server: "IMAP", Noun: "message", Probes: true, Tokens: tokens})
	if err != nil {
		return nil, err
	}
	w := &imapWorker{
		e:      e,
		tokens: tokens,
		filter: flt,
		rt:     rt,
		route:  r,
		conn:   c,
		cps:    store.Checkpoints(rt.Storage.State, r.Name),
		src:    store.CheckpointSource{Connection: c.Name, Server: Addr(&c), User: c.Username, Mailbox: r.Mailbox},
		idPfx:  e.IDPrefix,
		log:    e.Logger,
		met:    e.Metrics,
		clog:   e.ConnLog,
	}
	e.SetSource(w)
	return e, nil
}

// imapWorker is the IMAP source of a route (engine.Source): a session at a time, the
// engine running cycles over it.
type imapWorker struct {
	e      *engine.Engine
	rt     *engine.Runtime
	route  schemas.Route
	conn   schemas.Connection
	cps    *store.Record[store.Checkpoint]
	src    store.CheckpointSource // what the checkpoint belongs to
	idPfx  string                 // <connection>/<mailbox>, the event Id without /<uidvalidity>/<uid>
	log    *slog.Logger
	tokens *oauth2.Source // oauth2 only
	met    *metrics.RouteMetrics
	clog   *connlog.Route
	filter *filter.Filter // nil: every message the route selects

	s        *imapSession // the session open, nil between sessions
	sessions int          // opened so far, for the reconnect count
}

func (w *imapWorker) pollInterval() time.Duration { return w.e.PollInterval() }

func (w *imapWorker) status(f func(s *schemas.RouteStatus)) { w.e.Status(f) }

// connLog writes to the process log and to the connection log (see connlog.Route). args are
// key, value pairs.
func (w *imapWorker) connLog(level slog.Level, event, msg string, args ...any) {
	w.clog.Log(level, event, msg, args...)
}

// Judge implements engine.Source: IMAP's refusals of credentials or mailbox and
// certificate errors are permanent; an answer that did not come in time is a timeout.
func (w *imapWorker) Judge(err error) engine.Verdict {
	return engine.Verdict{Permanent: IsPermanent(err), Timeout: errors.Is(err, ErrTimeout)}
}

// Close implements engine.Source: it ends the session.
func (w *imapWorker) Close() error {
	s := w.s
	if s == nil {
		return nil
	}
	w.s = nil
	if s.stop != nil {
		s.stop()
	}
	if s.next != nil && s.next.fetch != nil {
		// A FETCH sent ahead and never read: Close would wait for it forever (see quit).
		s.quit(s.next.fetch)
		s.next = nil
	}
	if s.c != nil {
		s.c.Close()
	}
	s.release()
	return nil
}

// Connect implements engine.Source: it dials and logs in, checks what the route needs of
// the server, and loads the checkpoint.
func (w *imapWorker) Connect(ctx context.Context) error {
	if w.sessions > 0 {
		w.met.Reconnect()
	}
	w.sessions++
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
	release, err := w.rt.Sessions.Take()
	if err != nil {
		return err
	}
	s := &imapSession{w: w, wake: wake, release: release}
	w.s = s
	c, err := dialIMAP(ctx, &w.conn, w.rt.TLSRootCAs, opts, w.tokens)
	if err != nil {
		return err
	}
	s.c = c
	s.stop = context.AfterFunc(ctx, func() { c.Close() })

	caps := c.Caps()
	if caps == nil {
		return errors.New("capability: no answer")
	}
	if err := w.checkCaps(caps); err != nil {
		return err
	}
	w.clog.Connected(Addr(&w.conn))
	if err := w.checkMoveTo(ctx, c); err != nil {
		return err
	}
	cp, err := w.cps.Load(ctx)
	if err != nil {
		return err
	}
	if change := w.src.ChangeFrom(cp.Source); change != "" {
		w.e.SourceChanged(change)
		cp = store.Checkpoint{}
	}
	// A checkpoint of an earlier version records no source and no PublishedTo: whatever
	// the mailbox holds may have been published (see selectMailbox).
	s.legacy = cp.Source == nil && cp.UidValidity != 0
	cp.Source = &w.src
	s.cp = cp
	s.renewAt = w.tokens.RenewAt()
	s.idle = caps.Has(imap.CapIdle) && w.conn.IdleEnabled()
	s.move = caps.Has(imap.CapMove)
	return nil
}

// Poll, ReadBatch, Raw and Wait implement engine.Source on the session open.

func (w *imapWorker) Poll(ctx context.Context, reselect bool) error { return w.s.poll(ctx, reselect) }

func (w *imapWorker) ReadBatch(ctx context.Context, b *engine.Batch) (engine.Ack, error) {
	return w.s.readBatch(ctx, b)
}

func (w *imapWorker) Raw(ctx context.Context, it *engine.Item, put func(io.Reader) error) (bool, error) {
	return w.s.raw(ctx, imap.UID(it.UID), put)
}

func (w *imapWorker) Wait(ctx context.Context) (bool, error) { return w.s.wait(ctx) }

// checkCaps refuses an after action the server cannot do safely: without UIDPLUS, an
// EXPUNGE would also remove messages someone else marked \Deleted.
func (w *imapWorker) checkCaps(caps imap.CapSet) error {
	switch w.route.After {
	case schemas.AfterDelete:
		if !caps.Has(imap.CapUIDPlus) {
			return retry.Permanent(errors.New("after delete needs the server's UIDPLUS (UID EXPUNGE), which it lacks"))
		}
	case schemas.AfterMove:
		if !caps.Has(imap.CapMove) && !caps.Has(imap.CapUIDPlus) {
			return retry.Permanent(errors.New("after move needs the server's MOVE or UIDPLUS, which it lacks"))
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
	err := Within(ctx, CommandTimeout, c, func() error {
		_, err := c.Status(w.route.MoveTo, &imap.StatusOptions{NumMessages: true}).Wait()
		return err
	})
	var ie *imap.Error
	if errors.As(err, &ie) {
		// Whatever the server's reason (missing, no right to it), no move can succeed.
		return retry.Permanent(fmt.Errorf("moveTo folder %q does not exist or cannot be opened: %w", w.route.MoveTo, err))
	}
	if err != nil {
		return fmt.Errorf("moveTo folder %q: %w", w.route.MoveTo, err)
	}
	return nil
}
