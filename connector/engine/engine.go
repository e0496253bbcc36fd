package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/connlog"
	"github.com/mailbus/mailbus/connector/metrics"
	"github.com/mailbus/mailbus/connector/retry"
	"github.com/mailbus/mailbus/connector/validate"
	"github.com/mailbus/mailbus/schemas"
)

// Retry pacing. A temporary failure backs off exponentially with jitter (retry.Backoff);
// a permanent one waits at least PermanentRetry (or five polls) before trying again,
// since the definition or the server has to change first.
const PermanentRetry = 5 * time.Minute

// ErrRenew ends a session whose access token is about to expire: the engine connects
// again at once, with a new token, without counting a failure.
var ErrRenew = errors.New("the access token is about to expire")

// Options are what differs between the kinds of source in how the engine runs a route.
type Options struct {
	// Server names the kind of mail server in the route's status: "IMAP", "Exchange".
	Server string
	// Noun names a message of the mailbox in texts: "message", "item".
	Noun string
	// Probes: messages carrying the connection check's signed probe (ProbeHeader) are
	// passed over, not published.
	Probes bool
	// Tokens, for oauth2 connections, are scrubbed from the connection log.
	Tokens connlog.TokenSecrets
}

// Engine runs one route over any source: it maps each message, publishes its event,
// waits for the acknowledgements in order and publishes again what failed, hands the
// acknowledged messages to the source to act upon, dead-letters what cannot become an
// event, keeps the route's status, metrics and connection log, and retries failures with
// backoff. The rule that the mailbox is touched only after JetStream acknowledged lives
// here: a source's Ack is given only the messages done.
type Engine struct {
	RT    *Runtime
	Route schemas.Route
	Conn  schemas.Connection
	// IDPrefix is <connection>/<mailbox>, the event Id without the message's own part.
	IDPrefix string
	Logger   *slog.Logger
	Metrics  *metrics.RouteMetrics
	ConnLog  *connlog.Route

	src     Source
	opts    Options
	pub     *bus.BusPublisher
	subject string
	source  string // ce-source
	// foreign holds the Msg-Ids of events the stream held already though this route never
	// published them (see Batch.awaitAcks), until one of them is stored after all.
	foreign  map[string]bool
	probeKey []byte // with Options.Probes, loaded when a session starts
}

// New makes the engine of a route whose defaults are filled in (Defaults) on the
// connection c. Its source is set with SetSource before Run.
func New(rt *Runtime, r schemas.Route, c schemas.Connection, opts Options) (*Engine, error) {
	pub := rt.Publishers.Bus(r.Bus)
	if pub == nil {
		return nil, fmt.Errorf("route %s: no publisher for bus %d (Runtime.Publishers not set?)", r.Name, r.Bus)
	}
	e := &Engine{
		RT: rt, Route: r, Conn: c, opts: opts, pub: pub,
		IDPrefix: c.Name + "/" + r.Mailbox,
		subject:  rt.Names.BusSubject(r.Bus, r.Name),
		foreign:  make(map[string]bool),
		Logger:   rt.Log().With("route", r.Name, "connection", c.Name),
		Metrics:  rt.Metrics.Route(r.Name, r.Bus),
	}
	e.source = "mailbus/" + e.IDPrefix
	e.ConnLog = connlog.NewRoute(rt.ConnLog, &e.Conn, r.Name, e.Logger, opts.Tokens)
	return e, nil
}

// SetSource sets the source the engine reads.
func (e *Engine) SetSource(src Source) { e.src = src }

// Defaults fills in the defaults of a route (select all, backlog unseen, after markRead,
// mailbox INBOX) and refuses, as a permanent error, what no source can run.
func Defaults(r *schemas.Route) error {
	switch r.Select {
	case "":
		r.Select = schemas.SelectAll
	case schemas.SelectUnseen, schemas.SelectAll:
	default:
		return retry.Permanent(fmt.Errorf("route %s: unknown select %q", r.Name, r.Select))
	}
	switch r.Backlog {
	case "":
		r.Backlog = schemas.BacklogUnseen
	case schemas.BacklogUnseen, schemas.BacklogAll, schemas.BacklogNone:
	default:
		return retry.Permanent(fmt.Errorf("route %s: unknown backlog %q", r.Name, r.Backlog))
	}
	switch r.After {
	case "":
		r.After = schemas.AfterMarkRead
	case schemas.AfterMarkRead, schemas.AfterNone, schemas.AfterDelete:
	case schemas.AfterMove:
		if r.MoveTo == "" {
			return retry.Permanent(fmt.Errorf("route %s: after move needs moveTo", r.Name))
		}
	default:
		return retry.Permanent(fmt.Errorf("route %s: unknown after %q", r.Name, r.After))
	}
	if r.Mailbox == "" {
		r.Mailbox = "INBOX"
	}
	return nil
}

// PollInterval is the connection's poll interval, validate.DefaultPollInterval when it
// names none.
func (e *Engine) PollInterval() time.Duration {
	if d := time.Duration(e.Conn.PollInterval); d > 0 {
		return d
	}
	return validate.DefaultPollInterval
}

// Status changes the route's status.
func (e *Engine) Status(f func(s *schemas.RouteStatus)) {
	if e.RT.Status != nil {
		e.RT.Status.Update(e.Route.Name, f)
	}
}

// Log writes to the process log and to the connection log (see connlog.Route). args are
// key, value pairs.
func (e *Engine) Log(level slog.Level, event, msg string, args ...any) {
	e.ConnLog.Log(level, event, msg, args...)
}

// SourceChanged logs that the route's checkpoint was reset because what it belongs to
// changed (change says how: another server, user or mailbox).
func (e *Engine) SourceChanged(change string) {
	e.Log(slog.LevelWarn, connlog.EventState, fmt.Sprintf(
		"checkpoint reset: the route's source changed (%s); backlog %s decides what of the mail in the mailbox is published",
		change, e.Route.Backlog))
}

// Run implements Worker. It returns only when ctx ends: failures are retried here, with
// the route's state telling what happens.
func (e *Engine) Run(ctx context.Context) error {
	e.Status(func(s *schemas.RouteStatus) {
		s.State, s.Owner, s.LastError = schemas.StateStarting, e.RT.Instance, ""
	})
	defer e.Status(func(s *schemas.RouteStatus) { s.State = schemas.StateStopped })
	attempt := 0
	for {
		err := e.session(ctx, &attempt)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrRenew) {
			e.Log(slog.LevelDebug, connlog.EventLogin, "the access token is about to expire: reconnecting with a new one")
			continue
		}
		v := e.src.Judge(err)
		countFailure(e.Metrics, err, v)
		state, wait := schemas.StateBackoff, v.Wait
		switch {
		case v.Permanent:
			state, wait = schemas.StateError, max(PermanentRetry, 5*e.PollInterval())
		case wait == 0:
			// The server's own figure wins (ErrorServerBusy says how long it wants).
			wait = retry.Backoff(attempt)
			attempt++
		}
		e.ConnLog.Failed(state, wait, err)
		text := statusError(err, e.opts.Server, v, bus.Up(e.RT.NC))
		e.Status(func(s *schemas.RouteStatus) { s.State, s.LastError = state, text })
		if !retry.Sleep(ctx, wait) {
			return nil
		}
	}
}

// session connects, then runs cycles until an error or ctx ends. attempt is reset once a
// cycle succeeded, so that the next failure starts its backoff afresh.
func (e *Engine) session(ctx context.Context, attempt *int) error {
	if e.opts.Probes {
		key, err := e.RT.ProbeKeys().Get(ctx)
		if err != nil {
			return err
		}
		e.probeKey = key
	}
	if err := e.src.Connect(ctx); err != nil {
		e.src.Close()
		return err
	}
	defer e.src.Close()
	reselect := true
	for {
		if err := e.cycle(ctx, reselect); err != nil {
			return err
		}
		*attempt = 0
		var err error
		if reselect, err = e.src.Wait(ctx); err != nil {
			return err
		}
	}
}

// cycle runs once over the mailbox: every message the route selects above the checkpoint
// is published, acknowledged, acted upon and checkpointed, batch by batch.
func (e *Engine) cycle(ctx context.Context, reselect bool) error {
	now := time.Now().UTC()
	e.Status(func(st *schemas.RouteStatus) { st.State, st.LastPollAt = schemas.StateRunning, &now })
	e.Metrics.Poll()
	if err := e.src.Poll(ctx, reselect); err != nil {
		return err
	}
	for {
		b := &Batch{e: e}
		ack, err := e.src.ReadBatch(ctx, b)
		if err == nil && ack != nil {
			err = b.finish(ctx, ack)
		}
		if err != nil {
			b.sendReady(ctx)
			b.dropObjects(ctx)
			b.tallyStored()
			return err
		}
		if ack == nil {
			break
		}
	}
	end := time.Now().UTC()
	e.Status(func(st *schemas.RouteStatus) { st.Pending, st.LastSuccessAt, st.LastError = 0, &end, "" })
	e.Logger.Debug("cycle done", "took", end.Sub(now), "reselect", reselect)
	e.ConnLog.Polled(e.Route.Mailbox)
	return nil
}

// AwaitNATS returns once the NATS connection is up (see bus.AwaitNATS), the route's
// status telling of the outage meanwhile.
func (e *Engine) AwaitNATS(ctx context.Context) error {
	return bus.AwaitNATS(ctx, e.RT.NC, e.Status)
}
