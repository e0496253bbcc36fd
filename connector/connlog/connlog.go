// Package connlog writes and reads the connection logs (stream MAIL_LOG, subject
// <prefix>.log.<connection>): what the route workers say they do, per connection, at the
// connection's logLevel, scrubbed of its secrets.
package connlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/secrets"
	"github.com/mailbus/mailbus/schemas"
)

// Events of a connection log entry.
const (
	EventConnect     = "connect"
	EventLogin       = "login"
	EventPoll        = "poll"
	EventPublished   = "published"
	EventAction      = "action"
	EventError       = "error"
	EventState       = "state"
	EventUIDValidity = "uidvalidity"
)

// Levels of a connection log entry.
const (
	LevelInfo  = "info"
	LevelWarn  = "warn"
	LevelError = "error"
)

// Bounds of a connection log read.
const (
	DefaultLimit = 1000
	MaxLimit     = 10000
)

const (
	// logMaxPending is how many entries may wait for their JetStream ack; past it entries
	// are dropped rather than the route slowed down.
	logMaxPending = 1024
	// logStallWait is the longest a Write waits for room in that window.
	logStallWait = 10 * time.Millisecond
	// logAckTimeout is how long an entry waits for its ack before it counts as lost.
	logAckTimeout = 30 * time.Second
)

// Log writes the connection logs (stream MAIL_LOG, subject <prefix>.log.<connection>)
// for the route workers. Writes are asynchronous and never hold a route up for more than a
// few milliseconds: when NATS is slow and the window of unacknowledged entries is full, an
// entry is dropped with a warning in the process log. A nil *Log writes nothing.
type Log struct {
	js     jetstream.JetStream
	n      Names
	logger *slog.Logger
}

// Names are the NATS names of the connection logs (bus.Names has them).
type Names interface {
	LogSubject(connection string) string
	LogStream() string
}

// New returns a connection log writer on js's NATS connection. It keeps its own
// window of pending acks so that log entries never compete with events for it.
func New(js jetstream.JetStream, n Names, logger *slog.Logger) *Log {
	l := &Log{js: js, n: n, logger: logger}
	own, err := jetstream.New(js.Conn(),
		jetstream.WithPublishAsyncMaxPending(logMaxPending),
		// An ack that never comes must not hold a place in the window for ever.
		jetstream.WithPublishAsyncTimeout(logAckTimeout),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			logger.Warn("connection log entry lost", "subject", m.Subject, "error", err)
		}))
	if err == nil {
		l.js = own
	}
	return l
}

// Write logs e for connection c if c's logLevel wants it: full writes everything, errors
// only failures and state changes, off nothing. The level is read from c at each call.
// Time defaults to now. Any of c's secrets found in the message or fields is replaced
// before the entry leaves the process.
func (l *Log) Write(c *schemas.Connection, e schemas.LogEntry) {
	if l == nil || !wanted(c.LogLevel, e) {
		return
	}
	l.publish(c.Name, scrubEntry(e, secrets.Values(c)))
}

// publish sends e, already filtered and scrubbed, to the log of connection name.
func (l *Log) publish(name string, e schemas.LogEntry) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if e.Level == "" {
		e.Level = LevelInfo
	}
	data, err := json.Marshal(e)
	if err != nil {
		l.logger.Warn("connection log entry dropped", "connection", name, "event", e.Event, "error", err)
		return
	}
	if _, err := l.js.PublishAsync(l.n.LogSubject(name), data, jetstream.WithStallWait(logStallWait)); err != nil {
		l.logger.Warn("connection log entry dropped", "connection", name, "event", e.Event, "error", err)
	}
}

// scrubEntry replaces every secret in e's message and string fields; the caller's fields
// map stays as it was.
func scrubEntry(e schemas.LogEntry, hidden []string) schemas.LogEntry {
	e.Message = secrets.Scrub(e.Message, hidden)
	if e.Fields != nil {
		fields := make(map[string]any, len(e.Fields))
		for k, v := range e.Fields {
			if s, ok := v.(string); ok {
				v = secrets.Scrub(s, hidden)
			}
			fields[k] = v
		}
		e.Fields = fields
	}
	return e
}

// Flush waits until every entry written so far is acknowledged, or ctx ends.
func (l *Log) Flush(ctx context.Context) error {
	if l == nil {
		return nil
	}
	select {
	case <-l.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush connection log: %w", ctx.Err())
	}
}

// wanted reports whether a connection with log level level keeps e. At errors, a failure
// is an entry of level error or event error (a dead letter is logged as a warning, but it
// is a failure all the same). An unknown or empty level behaves as errors: the contract's
// default and the safe middle.
func wanted(level string, e schemas.LogEntry) bool {
	switch level {
	case schemas.LogFull:
		return true
	case schemas.LogOff:
		return false
	}
	return e.Level == LevelError || e.Event == EventError || e.Event == EventState || e.Event == EventUIDValidity
}

// Route is the log of one route, the single path by which the IMAP and the Exchange
// workers say what they do: each entry goes to the process log (at its slog level) and,
// when the connection's logLevel wants it, to the connection log. Both copies are scrubbed
// of the connection's secrets and of the tokens its token source was given. A
// Route also counts the messages of the poll in progress for its poll entry, so it is
// for the worker's goroutine only. A nil Log writes the process log only.
type Route struct {
	l      *Log
	c      *schemas.Connection // the worker's copy
	route  string
	proc   *slog.Logger
	tokens TokenSecrets // oauth2 only; nil: none

	up                     bool // connect and login were logged since the start or the last failure
	found, published, dead int  // of the poll in progress
	refused                int  // action failures since the last action entry
}

// TokenSecrets lists the tokens a connection's token source holds or was given
// (*oauth2.Source does).
type TokenSecrets interface {
	Secrets() []string
}

// NewRoute makes the log of route over connection c (the worker's copy, read at each
// entry); proc is the process log; tokens, nil unless oauth2, are scrubbed as c's secrets.
func NewRoute(l *Log, c *schemas.Connection, route string, proc *slog.Logger, tokens TokenSecrets) *Route {
	return &Route{l: l, c: c, route: route, proc: proc, tokens: tokens}
}

// Note is what the connection log says of one message. It is taken when the message
// is mapped and written once JetStream acknowledged its event; it holds a few short
// strings, never the event.
type Note struct {
	UID       uint32 // IMAP
	Item      string // EWS ItemId
	MessageID string
	Subject   string
	Size      int64
	EventID   string
	Bus       int
	Moved     []string // what fitPayload moved to the object store, from the event's warnings
}

// maxNoteSubject bounds the subject a log entry repeats: a subject may be any length.
const maxNoteSubject = 500

// NoteOf takes the note of ev (its Id, Bus and Uid set); item is the EWS ItemId, "" for
// IMAP. The strings are copied, so that the note holds on to nothing of the mapping's.
func NoteOf(ev *schemas.Event, item string) Note {
	n := Note{UID: ev.Uid, Item: item, MessageID: strings.Clone(ev.MessageId),
		Subject: strings.Clone(truncateUTF8(ev.Subject, maxNoteSubject)), Size: ev.Size, EventID: ev.Id, Bus: ev.Bus}
	for _, w := range ev.Warnings {
		if strings.Contains(w, "NATS max payload") {
			n.Moved = append(n.Moved, w)
		}
	}
	return n
}

// ref names the message in the mailbox: "UID 42" or "item AAMk...".
func (n Note) ref() string {
	if n.Item != "" {
		return "item " + n.Item
	}
	return fmt.Sprintf("UID %d", n.UID)
}

// refArg is ref as a key, value pair: uid or itemId.
func (n Note) refArg() (string, any) {
	if n.Item != "" {
		return "itemId", n.Item
	}
	return "uid", n.UID
}

// args are the note of a published message as key, value pairs.
func (n Note) args() []any {
	key, val := n.refArg()
	return []any{key, val, "messageId", n.MessageID, "subject", n.Subject, "size", n.Size, "eventId", n.EventID, "bus", n.Bus}
}

// wants reports whether an entry of level and event would be written anywhere, so that
// one that would not costs nothing to build.
func (r *Route) wants(level slog.Level, event string) bool {
	return r.proc.Enabled(context.Background(), level) ||
		(r.l != nil && wanted(r.c.LogLevel, schemas.LogEntry{Level: logLevelOf(level), Event: event}))
}

func logLevelOf(level slog.Level) string {
	switch {
	case level >= slog.LevelError:
		return LevelError
	case level >= slog.LevelWarn:
		return LevelWarn
	}
	return LevelInfo
}

// Log writes one entry: msg, and args as key, value pairs (its fields).
func (r *Route) Log(level slog.Level, event, msg string, args ...any) {
	if !r.wants(level, event) {
		return
	}
	var hidden []string
	if r.c != nil {
		hidden = secrets.Values(r.c)
	}
	if r.tokens != nil {
		hidden = append(hidden, r.tokens.Secrets()...)
	}
	msg = secrets.Scrub(msg, hidden)
	args = slices.Clone(args)
	for i := 1; i < len(args); i += 2 {
		if s, ok := args[i].(string); ok {
			args[i] = secrets.Scrub(s, hidden)
		}
	}
	r.proc.Log(context.Background(), level, msg, append([]any{"event", event}, args...)...)
	e := schemas.LogEntry{Level: logLevelOf(level), Route: r.route, Event: event, Message: msg}
	if r.l == nil || !wanted(r.c.LogLevel, e) {
		return
	}
	if len(args) > 1 {
		e.Fields = make(map[string]any, len(args)/2)
		for i := 0; i+1 < len(args); i += 2 {
			e.Fields[fmt.Sprint(args[i])] = args[i+1]
		}
	}
	r.l.publish(r.c.Name, e)
}

// Connected logs a new connection to addr and its login: IMAP calls it for each session.
func (r *Route) Connected(addr string) {
	r.up = true
	r.Log(slog.LevelDebug, EventConnect, fmt.Sprintf("connected to %s (encryption %s)", addr, r.c.Encryption),
		"addr", addr, "encryption", r.c.Encryption)
	if r.c.Auth == schemas.AuthNone {
		r.Log(slog.LevelDebug, EventLogin, "no login (auth none)", "auth", r.c.Auth)
		return
	}
	user := r.c.Username
	if r.c.Domain != "" { // Exchange: DOMAIN\user, as the server is given it
		user = r.c.Domain + `\` + user
	}
	r.Log(slog.LevelDebug, EventLogin, fmt.Sprintf("logged in as %s (auth %s)", user, r.c.Auth),
		"username", user, "auth", r.c.Auth)
}

// Reached is Connected for a source without sessions (EWS, where each request carries
// the credentials): the first request the server accepted since the start or the last
// failure logs the connect and the login.
func (r *Route) Reached(addr string) {
	if !r.up {
		r.Connected(addr)
	}
}

// Listed counts messages the poll in progress is about to take.
func (r *Route) Listed(n int) { r.found += n }

// Polled logs the poll that just ended well: how many messages it found and how they
// ended. The counts start again from zero.
func (r *Route) Polled(mailbox string) {
	found, published, dead := r.found, r.published, r.dead
	r.found, r.published, r.dead = 0, 0, 0
	r.Log(slog.LevelDebug, EventPoll,
		fmt.Sprintf("%s: %d found, %d published, %d dead-lettered", mailbox, found, published, dead),
		"mailbox", mailbox, "found", found, "published", published, "deadLettered", dead)
}

// Published logs a message whose event JetStream acknowledged, after a warning for
// each part moved out of its event to fit the NATS max payload.
func (r *Route) Published(n Note) {
	r.published++
	key, val := n.refArg()
	for _, m := range n.Moved {
		r.Log(slog.LevelWarn, EventPublished, fmt.Sprintf("%s: %s", n.ref(), m), key, val, "eventId", n.EventID)
	}
	if !r.wants(slog.LevelDebug, EventPublished) {
		return
	}
	r.Log(slog.LevelDebug, EventPublished,
		fmt.Sprintf("%s %s %q (%d bytes) published as %s on bus %d", n.ref(), n.MessageID, n.Subject, n.Size, n.EventID, n.Bus),
		n.args()...)
}

// DeadLettered logs a message that cannot become an event (its note holds only the
// UID or item and the event Id) and why.
func (r *Route) DeadLettered(n Note, why error) {
	r.dead++
	key, val := n.refArg()
	r.Log(slog.LevelWarn, EventError, fmt.Sprintf("%s cannot become an event, dead-lettered as %s: %v", n.ref(), n.EventID, why),
		key, val, "eventId", n.EventID, "error", why.Error())
}

// Acted logs the after action run on n messages of the mailbox, less those ActionFailed
// logged since the last call; which names them ("UIDs 1:5"), or is empty.
func (r *Route) Acted(after, moveTo string, n int, which string) {
	n -= r.refused
	r.refused = 0
	if after == schemas.AfterNone {
		return
	}
	action := after
	if after == schemas.AfterMove {
		action = "move to " + moveTo
	}
	msg := fmt.Sprintf("%s: %d messages", action, n)
	if which != "" {
		msg += " (" + which + ")"
	}
	r.Log(slog.LevelDebug, EventAction, msg, "action", after, "moveTo", moveTo, "count", n, "messages", which)
}

// ActionFailed logs an after action the server refused for one message, which stays in
// the mailbox to be published again (and deduplicated).
func (r *Route) ActionFailed(after string, n Note, err error) {
	r.refused++
	key, val := n.refArg()
	r.Log(slog.LevelError, EventAction, fmt.Sprintf("%s %s (%s): %v", after, n.ref(), n.EventID, err),
		key, val, "eventId", n.EventID, "action", after, "error", err.Error())
}

// Failed logs that the route's session or cycle failed and what happens next: state
// backoff (retry after wait) or error (the route is parked, the failure is permanent).
func (r *Route) Failed(state string, wait time.Duration, err error) {
	r.up = false
	r.found, r.published, r.dead, r.refused = 0, 0, 0, 0
	wait = wait.Round(time.Millisecond)
	level, msg := slog.LevelWarn, fmt.Sprintf("retry in %s: %v", wait, err)
	if state == schemas.StateError {
		level, msg = slog.LevelError, fmt.Sprintf("route parked, retry in %s: %v", wait, err)
	}
	r.Log(level, EventState, msg, "state", state, "retryIn", wait.String(), "error", err.Error())
}

// truncateUTF8 cuts s to at most n bytes at a character boundary, marking the cut.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// Read reads a connection's log for connection.log: the last req.Limit entries
// (default 1000, at most 10000) at or after req.Since, newest last, as Entries or, with
// format "text", as Text lines. A bad request is a reply with OK false; the error is for
// NATS failures. Entries are read up to the newest one when the read starts.
func Read(ctx context.Context, js jetstream.JetStream, n Names, req schemas.LogRequest) (*schemas.Reply, error) {
	refuse := func(field, msg string) (*schemas.Reply, error) {
		return &schemas.Reply{Error: &schemas.Error{Code: schemas.CodeInvalid, Field: field, Message: msg}}, nil
	}
	switch {
	case req.Name == "" || strings.ContainsAny(req.Name, ".*> \t\r\n"):
		return refuse("name", "want the name of a connection")
	case req.Limit < 0 || req.Limit > MaxLimit:
		return refuse("limit", fmt.Sprintf("limit %d: want 1..%d", req.Limit, MaxLimit))
	case req.Format != "" && req.Format != "json" && req.Format != "text":
		return refuse("format", fmt.Sprintf("format %q: want json or text", req.Format))
	}
	limit := req.Limit
	if limit == 0 {
		limit = DefaultLimit
	}
	entries, err := readLog(ctx, js, n, req.Name, req.Since, limit)
	if err != nil {
		return nil, err
	}
	reply := &schemas.Reply{OK: true}
	if req.Format == "text" {
		var b strings.Builder
		for _, e := range entries {
			b.WriteString(logLine(e))
			b.WriteByte('\n')
		}
		reply.Text = b.String()
	} else {
		reply.Entries = entries
	}
	return reply, nil
}

// readLog scans the connection's subject with an ordered consumer and keeps the last limit
// entries in a ring.
func readLog(ctx context.Context, js jetstream.JetStream, n Names, name string, since *time.Time, limit int) ([]schemas.LogEntry, error) {
	subject := n.LogSubject(name)
	stream, err := js.Stream(ctx, n.LogStream())
	if err != nil {
		return nil, fmt.Errorf("log stream: %w", err)
	}
	// The newest entry marks where the read stops, and tells at once when there is none.
	last, err := stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("last log entry of %s: %w", name, err)
	}
	if since != nil && last.Time.Before(*since) {
		return nil, nil
	}
	// The consumer is gone soon after the read instead of lingering the default 5 minutes.
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, InactiveThreshold: 10 * time.Second}
	if since != nil {
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = since
	}
	cons, err := js.OrderedConsumer(ctx, n.LogStream(), cfg)
	if err != nil {
		return nil, fmt.Errorf("log consumer: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("log consumer: %w", err)
	}
	defer it.Stop()

	ring := make([]schemas.LogEntry, 0, min(limit, 256))
	next := 0 // where the next entry goes once the ring is full
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("read log of %s: %w", name, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("read log of %s: %w", name, err)
		}
		var e schemas.LogEntry
		if json.Unmarshal(msg.Data(), &e) == nil {
			if len(ring) < limit {
				ring = append(ring, e)
			} else {
				ring[next] = e
				next = (next + 1) % limit
			}
		}
		if meta.Sequence.Stream >= last.Sequence {
			break
		}
	}
	return append(ring[next:], ring[:next]...), nil
}

// logLine is an entry as one plain line: "2026-11-25T19:00:00Z error route=x poll: message".
func logLine(e schemas.LogEntry) string {
	var b strings.Builder
	b.WriteString(e.Time.UTC().Format(time.RFC3339))
	b.WriteByte(' ')
	b.WriteString(e.Level)
	if e.Route != "" {
		b.WriteString(" route=")
		b.WriteString(e.Route)
	}
	b.WriteByte(' ')
	b.WriteString(e.Event)
	b.WriteString(": ")
	// One entry, one line, whatever a subject or a server's error text holds.
	b.WriteString(strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(e.Message))
	return b.String()
}
