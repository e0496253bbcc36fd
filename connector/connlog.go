package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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
	DefaultLogLimit = 1000
	MaxLogLimit     = 10000
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

// ConnLog writes the connection logs (stream MAIL_LOG, subject <prefix>.log.<connection>)
// for the route workers. Writes are asynchronous and never hold a route up for more than a
// few milliseconds: when NATS is slow and the window of unacknowledged entries is full, an
// entry is dropped with a warning in the process log. A nil *ConnLog writes nothing.
type ConnLog struct {
	js     jetstream.JetStream
	n      Names
	logger *slog.Logger
}

// NewConnLog returns a connection log writer on js's NATS connection. It keeps its own
// window of pending acks so that log entries never compete with events for it.
func NewConnLog(js jetstream.JetStream, n Names, logger *slog.Logger) *ConnLog {
	l := &ConnLog{js: js, n: n, logger: logger}
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
// only entries of level error and state changes, off nothing. The level is read from c at
// each call, so a changed logLevel applies at once. Time defaults to now. Any of c's
// secrets found in the message or fields is replaced before the entry leaves the process.
func (l *ConnLog) Write(c *schemas.Connection, e schemas.LogEntry) {
	if l == nil || !wanted(c.LogLevel, e) {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if e.Level == "" {
		e.Level = LevelInfo
	}
	secrets := secretsOf(c)
	e.Message = scrub(e.Message, secrets)
	if e.Fields != nil {
		fields := make(map[string]any, len(e.Fields)) // the caller's map stays as it was
		for k, v := range e.Fields {
			if s, ok := v.(string); ok {
				v = scrub(s, secrets)
			}
			fields[k] = v
		}
		e.Fields = fields
	}
	data, err := json.Marshal(e)
	if err != nil {
		l.logger.Warn("connection log entry dropped", "connection", c.Name, "event", e.Event, "error", err)
		return
	}
	if _, err := l.js.PublishAsync(l.n.LogSubject(c.Name), data, jetstream.WithStallWait(logStallWait)); err != nil {
		l.logger.Warn("connection log entry dropped", "connection", c.Name, "event", e.Event, "error", err)
	}
}

// Flush waits until every entry written so far is acknowledged, or ctx ends.
func (l *ConnLog) Flush(ctx context.Context) error {
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

// Connect logs that the route connected to the server.
func (l *ConnLog) Connect(c *schemas.Connection, route, addr string) {
	l.Write(c, schemas.LogEntry{Route: route, Event: EventConnect,
		Message: fmt.Sprintf("connected to %s (encryption %s)", addr, c.Encryption),
		Fields:  map[string]any{"addr": addr}})
}

// Login logs a successful login.
func (l *ConnLog) Login(c *schemas.Connection, route string) {
	l.Write(c, schemas.LogEntry{Route: route, Event: EventLogin,
		Message: fmt.Sprintf("logged in as %s (auth %s)", c.Username, c.Auth)})
}

// Poll logs one poll of a mailbox: how many messages it found and how they ended.
func (l *ConnLog) Poll(c *schemas.Connection, route, mailbox string, found, published, deadLettered int) {
	l.Write(c, schemas.LogEntry{Route: route, Event: EventPoll,
		Message: fmt.Sprintf("%s: %d new, %d published, %d dead-lettered", mailbox, found, published, deadLettered),
		Fields:  map[string]any{"mailbox": mailbox, "found": found, "published": published, "deadLettered": deadLettered}})
}

// publishedLine is the full log's line for a published message: the event's Id and the
// mail's Message-ID, by which people look a message up.
func publishedLine(eventID, messageID string) string {
	if messageID == "" {
		return "published " + eventID
	}
	return "published " + eventID + " " + messageID
}

// Published logs one message turned into an event and acknowledged by JetStream.
func (l *ConnLog) Published(c *schemas.Connection, route string, uid uint32, messageID, subject string, size int64, eventID string, bus int) {
	l.Write(c, schemas.LogEntry{Route: route, Event: EventPublished,
		Message: fmt.Sprintf("UID %d %s %q (%d bytes) published as %s on bus %d", uid, messageID, subject, size, eventID, bus),
		Fields: map[string]any{"uid": uid, "messageId": messageID, "subject": subject, "size": size,
			"eventId": eventID, "bus": bus}})
}

// Action logs what the route did to a message in the mailbox after publishing it
// ("markRead", "delete", "move to Archive").
func (l *ConnLog) Action(c *schemas.Connection, route string, uid uint32, action string) {
	l.Write(c, schemas.LogEntry{Route: route, Event: EventAction,
		Message: fmt.Sprintf("UID %d: %s", uid, action),
		Fields:  map[string]any{"uid": uid, "action": action}})
}

// Error logs a failure during event (connect, login, poll...; empty means error).
func (l *ConnLog) Error(c *schemas.Connection, route, event string, err error) {
	if event == "" {
		event = EventError
	}
	l.Write(c, schemas.LogEntry{Level: LevelError, Route: route, Event: event, Message: err.Error()})
}

// State logs a change of the route's state (schemas.StateRunning...), with why.
func (l *ConnLog) State(c *schemas.Connection, route, state, reason string) {
	msg := state
	if reason != "" {
		msg += ": " + reason
	}
	l.Write(c, schemas.LogEntry{Route: route, Event: EventState, Message: msg,
		Fields: map[string]any{"state": state}})
}

// UIDValidity logs that a mailbox's UIDVALIDITY changed, so its UIDs start over.
func (l *ConnLog) UIDValidity(c *schemas.Connection, route, mailbox string, old, new uint32) {
	l.Write(c, schemas.LogEntry{Level: LevelWarn, Route: route, Event: EventUIDValidity,
		Message: fmt.Sprintf("%s: UIDVALIDITY changed from %d to %d, the route starts over in the new mailbox", mailbox, old, new),
		Fields:  map[string]any{"mailbox": mailbox, "old": old, "new": new}})
}

// ReadConnLog reads a connection's log for connection.log: the last req.Limit entries
// (default 1000, at most 10000) at or after req.Since, newest last, as Entries or, with
// format "text", as Text lines. A bad request is a reply with OK false; the error is for
// NATS failures. Entries are read up to the newest one when the read starts.
func ReadConnLog(ctx context.Context, js jetstream.JetStream, n Names, req schemas.LogRequest) (*schemas.Reply, error) {
	refuse := func(field, msg string) (*schemas.Reply, error) {
		return &schemas.Reply{Error: &schemas.Error{Code: schemas.CodeInvalid, Field: field, Message: msg}}, nil
	}
	switch {
	case req.Name == "" || strings.ContainsAny(req.Name, ".*> \t\r\n"):
		return refuse("name", "want the name of a connection")
	case req.Limit < 0 || req.Limit > MaxLogLimit:
		return refuse("limit", fmt.Sprintf("limit %d: want 1..%d", req.Limit, MaxLogLimit))
	case req.Format != "" && req.Format != "json" && req.Format != "text":
		return refuse("format", fmt.Sprintf("format %q: want json or text", req.Format))
	}
	limit := req.Limit
	if limit == 0 {
		limit = DefaultLogLimit
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

// secretsOf lists the connection's secrets that must never be logged or replied.
func secretsOf(c *schemas.Connection) []string {
	var s []string
	for _, f := range secretFields(c) {
		if *f != "" {
			s = append(s, *f)
		}
	}
	return s
}

// scrub replaces every secret in s.
func scrub(s string, secrets []string) string {
	for _, secret := range secrets {
		if secret == "" { // would "replace" between every two characters
			continue
		}
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	return s
}
