package engine

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/connlog"
	"github.com/mailbus/mailbus/connector/metrics"
	"github.com/mailbus/mailbus/connector/oauth2"
	"github.com/mailbus/mailbus/mapping"
	"github.com/mailbus/mailbus/schemas"
)

// Worker runs one route until ctx ends. Run returns nil when ctx is cancelled; any other
// return makes the supervisor start a new worker after a backoff. A worker handles its own
// temporary failures (reconnects) and reports what it does through Runtime.Status.
type Worker interface {
	Run(ctx context.Context) error
}

// RouteSpec is what a worker starts with: the route and its connection, with the
// connection's secrets decrypted and resolved (passwordFrom read).
type RouteSpec struct {
	Route      schemas.Route
	Connection schemas.Connection
}

// WorkerFactory makes the worker of a route; the supervisor picks one by connection type.
type WorkerFactory func(rt *Runtime, spec RouteSpec) (Worker, error)

// Runtime is what every worker shares: NATS, storage, names and settings.
type Runtime struct {
	Names          bus.Names
	NC             *nats.Conn
	JS             jetstream.JetStream
	Storage        *bus.Storage
	Logger         *slog.Logger
	Instance       string
	MaxInlineBytes int64
	Status         *StatusBoard
	// Publishers are the per-bus publishing pipelines (NewPublishers), shared by all routes.
	Publishers *bus.Publishers
	// TLSRootCAs verifies IMAP server certificates; nil means the system pool. Tests set it
	// to their server's CA.
	TLSRootCAs *x509.CertPool
	// ConnLog writes the connection logs; nil writes none.
	ConnLog *connlog.Log
	// Metrics counts for /metrics; nil counts nothing.
	Metrics *metrics.Metrics

	// Tokens stores the refresh token an OAuth2 token endpoint replaces; nil (a Runtime made
	// outside a Connector) keeps it in memory only.
	Tokens oauth2.RefreshStore
	// Map maps a message; nil is mapping.MapMessage. Tests replace it to make the mapping
	// panic.
	Map func(io.Reader, *mapping.Options) (*mapping.Result, error)
	// Probes signs and checks the connection check's probe (see ProbeKeys); nil: a key
	// kept in the state bucket.
	Probes    *ProbeKeys
	probeOnce sync.Once
	// Sessions bounds the mail server sessions open at once (see SessionSlots); nil: no bound.
	Sessions *SessionSlots
}

// Log is the runtime's process log, slog's default without one.
func (rt *Runtime) Log() *slog.Logger {
	if rt.Logger == nil {
		return slog.Default()
	}
	return rt.Logger
}

// StatusBoard holds the status of the routes this replica runs, for route.status.
type StatusBoard struct {
	mu      sync.Mutex
	routes  map[string]*schemas.RouteStatus
	watches map[string]chan struct{} // see watch
}

// NewStatusBoard returns an empty board.
func NewStatusBoard() *StatusBoard {
	return &StatusBoard{routes: make(map[string]*schemas.RouteStatus), watches: make(map[string]chan struct{})}
}

// Update changes a route's status under the board's lock, creating it when absent.
func (b *StatusBoard) Update(route string, f func(s *schemas.RouteStatus)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.routes[route]
	if !ok {
		s = &schemas.RouteStatus{Route: route}
		b.routes[route] = s
	}
	f(s)
	select {
	case b.watches[route] <- struct{}{}:
	default: // a wake-up is pending already (or nobody watches: a nil channel)
	}
}

// Watch returns a channel that receives after the route's status changed (several
// changes may come as one), and the function that ends the watch. One watcher per route:
// the supervisor, which writes the status into the route's lease. A notification instead
// of a poll keeps a thousand idle routes from waking up at all.
func (b *StatusBoard) Watch(route string) (<-chan struct{}, func()) {
	c := make(chan struct{}, 1)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.watches[route] = c
	return c, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.watches[route] == c {
			delete(b.watches, route)
		}
	}
}

// Get returns a copy of a route's status.
func (b *StatusBoard) Get(route string) (schemas.RouteStatus, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.routes[route]
	if !ok {
		return schemas.RouteStatus{}, false
	}
	return *s, true
}

// Delete forgets a route.
func (b *StatusBoard) Delete(route string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.routes, route)
}

// All returns a copy of every route's status.
func (b *StatusBoard) All() []schemas.RouteStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]schemas.RouteStatus, 0, len(b.routes))
	for _, s := range b.routes {
		out = append(out, *s)
	}
	return out
}
