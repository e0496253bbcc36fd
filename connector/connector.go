package connector

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/ews"
	"github.com/mailbus/mailbus/connector/imap"
	"github.com/mailbus/mailbus/connector/supervisor"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/control"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/mailbus/mailbus/connector/connlog"
	"github.com/mailbus/mailbus/connector/console"
	"github.com/mailbus/mailbus/connector/metrics"
	"github.com/mailbus/mailbus/connector/retry"
	"github.com/mailbus/mailbus/connector/secrets"
	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/schemas"
)

// drainTimeout bounds the drain of the NATS connection at shutdown.
const drainTimeout = 10 * time.Second

// Connector is one mailbus replica: NATS (or an embedded server), storage, the control
// service and the route supervisor. Make it with New, run it with Run, stop it by ending
// Run's context or with Close.
type Connector struct {
	cfg       Config
	logger    *slog.Logger
	names     bus.Names
	version   string
	factories map[string]engine.WorkerFactory
	sealer    *secrets.Sealer
	roots     *x509.CertPool

	life    context.Context // ended by Close
	kill    context.CancelFunc
	started atomic.Bool
	done    chan struct{} // closed when Run returns
	ready   chan struct{} // closed when commands are served and definitions applied

	mu       sync.Mutex
	srv      *server.Server
	nc       *nats.Conn
	httpAddr string
}

// Option changes how New builds a Connector.
type Option func(*Connector)

// WithWorkers replaces the worker factories, keyed by connection type. The default is
// imap.NewWorker for imap and ews.NewWorker for exchange connections; a type without a
// factory parks its routes in state error. Tests plug small real workers in here.
func WithWorkers(f map[string]engine.WorkerFactory) Option {
	return func(c *Connector) { c.factories = f }
}

// WithTLSRootCAs makes workers verify mail server certificates with roots instead of the
// system pool (tests with their own CA).
func WithTLSRootCAs(roots *x509.CertPool) Option {
	return func(c *Connector) { c.roots = roots }
}

// WithVersion sets the version the control service reports.
func WithVersion(v string) Option {
	return func(c *Connector) { c.version = v }
}

// New checks cfg (filling its derived defaults) and MAILBUS_SECRET_KEY. It connects to
// nothing: Run does.
func New(cfg Config, logger *slog.Logger, opts ...Option) (*Connector, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	s, err := secrets.NewSealer(cfg.SecretKey, cfg.fence())
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Connector{
		cfg:     cfg,
		logger:  logger.With("instance", cfg.Instance),
		names:   bus.Names{Prefix: cfg.SubjectPrefix},
		version: "dev",
		factories: map[string]engine.WorkerFactory{
			schemas.TypeIMAP:     imap.NewWorker,
			schemas.TypeExchange: ews.NewWorker,
		},
		sealer: s,
		done:   make(chan struct{}),
		ready:  make(chan struct{}),
	}
	c.life, c.kill = context.WithCancel(context.Background())
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Run connects (or starts the embedded NATS server), creates the streams and buckets,
// serves the control commands and runs the routes until ctx ends or Close is called. Then
// it stops taking commands, stops the routes, drains NATS and shuts the embedded server
// down, in that order. It returns nil after a requested stop. Run may be called once.
func (c *Connector) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return errors.New("connector: Run called twice")
	}
	defer close(c.done)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.life, cancel)()
	log := c.logger

	if !c.sealer.Enabled() {
		log.Warn("MAILBUS_SECRET_KEY is not set: connection passwords are stored in KV unencrypted")
	}

	connCfg := c.cfg.natsConn()
	var extra []nats.Option
	if c.cfg.NATSURL == "" {
		srv, err := bus.StartEmbedded(c.cfg.EmbeddedListen, c.cfg.DataDir)
		if err != nil {
			return err
		}
		// Deferred first, so it runs last: after the routes stopped and NATS drained.
		defer func() {
			srv.Shutdown()
			srv.WaitForShutdown()
			log.Info("embedded nats server stopped")
		}()
		c.mu.Lock()
		c.srv = srv
		c.mu.Unlock()
		log.Info("embedded nats server started", "url", srv.ClientURL(), "dataDir", c.cfg.DataDir)
		// In process, its writes queued (bus.InProcess): over loopback TCP every byte
		// published was copied into the kernel and out again, and the plain in-process pipe
		// made publishing wait for the server's reader. The URL still names the server
		// (logs, status); other clients reach it there.
		connCfg.URL = srv.ClientURL()
		extra = append(extra, nats.InProcessServer(bus.InProcess{Server: srv}))
	}
	// After a reconnect the supervisor watches the definitions again at once: the watch of
	// a restarted server would otherwise only notice after missing its heartbeats.
	resync := make(chan struct{}, 1)
	reconnected := func() {
		select {
		case resync <- struct{}{}:
		default:
		}
	}
	nc, closed, err := bus.Connect(ctx, connCfg, log, reconnected, extra...)
	if err != nil {
		return err
	}
	defer func() {
		if err := nc.Drain(); err != nil {
			log.Warn("nats drain", "err", err)
		}
		select {
		case <-closed:
		case <-time.After(drainTimeout):
			nc.Close()
		}
	}()
	c.mu.Lock()
	c.nc = nc
	c.mu.Unlock()

	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	storage, err := c.ensureStorage(ctx, js)
	if err != nil {
		return err
	}
	pubs, err := bus.NewPublishers(nc, bus.DefaultPublishWindow)
	if err != nil {
		return err
	}
	reg := NewRegistry()
	met := metrics.New(reg)
	metrics.RegisterNATS(reg, nc)
	pubs.Measure(met)
	st := store.New(storage.Config, c.sealer)
	if c.cfg.Definitions != "" {
		if err := c.applyDefinitions(ctx, st); err != nil {
			return err
		}
	}
	rt := &engine.Runtime{
		Names:          c.names,
		NC:             nc,
		JS:             js,
		Storage:        storage,
		Logger:         c.logger,
		Instance:       c.cfg.Instance,
		MaxInlineBytes: c.cfg.MaxInlineBytes,
		Status:         engine.NewStatusBoard(),
		Publishers:     pubs,
		TLSRootCAs:     c.roots,
		ConnLog:        connlog.New(js, c.names, c.logger),
		Tokens:         st,
		Sessions:       engine.NewSessionSlots(engine.OpenFileLimit()),
		Metrics:        met,
		Probes:         engine.NewProbeKeys(c.cfg.SecretKey, storage.State),
	}
	if files, sessions, reserved := rt.Sessions.Budget(); sessions > 0 {
		c.logger.Info("mail server sessions bounded by the open files limit", "fileLimit", files, "sessions", sessions, "reserved", reserved)
	}
	ls := supervisor.NewLeases(js, storage.Leases, c.cfg.Instance, rt.Status)
	sup := supervisor.New(supervisor.Config{
		Runtime: rt, Definitions: storage.Config, Sealer: c.sealer, Factories: c.factories,
		Resync: resync, Leases: ls,
	})

	// The routes get their own context: at shutdown they stop only once the control
	// service no longer takes commands.
	routesCtx, stopRoutes := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRoutes()
	g, gctx := errgroup.WithContext(routesCtx)
	g.Go(func() error { return sup.Run(gctx) })

	svc, err := control.Start(routesCtx, nc, control.Config{
		Names: c.names, Version: c.version, Instance: c.cfg.Instance,
		Store: st, Sealer: c.sealer, JS: js, State: storage.State,
		Check: connectionCheck(rt.Probes), Status: supervisor.Statuses{Board: rt.Status, Leases: ls},
		Logger: c.logger.With("component", "control"),
	})
	if err != nil {
		stopRoutes()
		g.Wait()
		return err
	}
	stopControl := func() {
		if err := svc.Stop(); err != nil {
			log.Warn("control service stop", "err", err)
		}
	}

	if c.cfg.HTTPAddr != "" {
		reg.MustRegister(metrics.NewRouteCollector(func() []metrics.RouteGauge {
			var l []metrics.RouteGauge
			for _, st := range rt.Status.All() {
				l = append(l, metrics.RouteGauge{Route: st.Route, Pending: st.Pending, Owned: ls.Holding(st.Route)})
			}
			return l
		}))
		hs, err := NewHealthServer(c.cfg.HTTPAddr, c.Ready, reg)
		if err != nil {
			stopControl()
			stopRoutes()
			g.Wait()
			return err
		}
		if c.cfg.AdminToken != "" {
			ui, err := console.New(console.Options{
				Token: c.cfg.AdminToken, NC: nc, Prefix: c.names.Prefix,
				Logger: c.logger.With("component", "console"),
			})
			if err != nil {
				stopControl()
				stopRoutes()
				g.Wait()
				return err
			}
			hs.Handle("/ui/", ui)
		}
		// The health server answers until the very end, so /readyz reports the shutdown.
		hctx, stopHealth := context.WithCancel(context.WithoutCancel(ctx))
		defer stopHealth()
		go hs.Run(hctx)
		c.mu.Lock()
		c.httpAddr = hs.Addr()
		c.mu.Unlock()
		log.Info("http listening", "addr", hs.Addr(), "console", c.cfg.AdminToken != "")
	}

	select {
	case <-sup.Ready():
		close(c.ready)
		log.Info("mailbus ready", "subjects", c.names.ControlPrefix()+".>", "version", c.version)
	case <-ctx.Done():
	case <-gctx.Done():
	}

	select {
	case <-ctx.Done():
	case <-gctx.Done():
	}
	log.Info("mailbus stopping")
	stopControl()
	stopRoutes()
	err = g.Wait()
	// The last entries of the stopped routes are still on their way to MAIL_LOG.
	flushCtx, cancelFlush := context.WithTimeout(context.WithoutCancel(ctx), drainTimeout)
	defer cancelFlush()
	if ferr := rt.ConnLog.Flush(flushCtx); ferr != nil {
		log.Warn("connection log not flushed", "err", ferr)
	}
	return err
}

// ensureStorage creates the streams and buckets, retrying while JetStream is not there yet
// (a cluster electing its meta leader, a server still starting).
func (c *Connector) ensureStorage(ctx context.Context, js jetstream.JetStream) (*bus.Storage, error) {
	for attempt := 0; ; attempt++ {
		s, err := bus.OpenStorage(ctx, js, c.names, c.cfg.Storage())
		if err == nil {
			return s, nil
		}
		if errors.Is(err, bus.ErrStorageCheck) {
			return nil, err
		}
		c.logger.Warn("jetstream storage not ready; retrying", "err", err)
		if !retry.Sleep(ctx, supervisor.RestartDelay(min(attempt, 3))) {
			return nil, fmt.Errorf("storage: %w", ctx.Err())
		}
	}
}

// applyDefinitions applies the file of MAILBUS_DEFINITIONS, retrying while the storage
// does not answer. A file that cannot be read or is refused stops the start.
func (c *Connector) applyDefinitions(ctx context.Context, st *store.Store) error {
	path := c.cfg.Definitions
	defs, err := store.ReadDefinitions(path)
	if err != nil {
		return fmt.Errorf("MAILBUS_DEFINITIONS: %w", err)
	}
	req := &schemas.ApplyRequest{Connections: defs.Connections, Routes: defs.Routes}
	for attempt := 0; ; attempt++ {
		changes, err := st.Apply(ctx, req)
		var refused *schemas.Error
		switch {
		case err == nil:
			counts := map[string]int{}
			for _, ch := range changes {
				counts[ch.Action]++
			}
			c.logger.Info("definitions applied", "file", path, "created", counts[schemas.ActionCreate],
				"updated", counts[schemas.ActionUpdate], "unchanged", counts[schemas.ActionUnchanged])
			return nil
		case errors.As(err, &refused):
			return fmt.Errorf("MAILBUS_DEFINITIONS: %s: %w", path, err)
		}
		c.logger.Warn("definitions not applied yet; retrying", "file", path, "err", err)
		if !retry.Sleep(ctx, supervisor.RestartDelay(min(attempt, 3))) {
			return fmt.Errorf("MAILBUS_DEFINITIONS: %w", ctx.Err())
		}
	}
}

// Close stops a running Connector and waits for Run to return.
func (c *Connector) Close() {
	c.kill()
	if c.started.Load() {
		<-c.done
	}
}

// WaitReady waits until the Connector serves commands and has applied the stored
// definitions, or until ctx ends or Run returns.
func (c *Connector) WaitReady(ctx context.Context) error {
	select {
	case <-c.ready:
		return nil
	case <-c.done:
		return errors.New("connector stopped before it was ready")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ready reports why the Connector cannot serve, or nil: for /readyz.
func (c *Connector) Ready() error {
	select {
	case <-c.ready:
	default:
		return errors.New("starting")
	}
	select {
	case <-c.done:
		return errors.New("stopped")
	default:
	}
	c.mu.Lock()
	nc := c.nc
	c.mu.Unlock()
	if nc == nil || !nc.IsConnected() {
		return errors.New("nats not connected")
	}
	return nil
}

// HTTPAddr is the address the HTTP server (health, metrics, console) listens on, once Run
// started it; empty before or without one.
func (c *Connector) HTTPAddr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.httpAddr
}

// ClientURL is the client URL of the embedded NATS server, "" when connected to
// MAILBUS_NATS_URL or before Run started it.
func (c *Connector) ClientURL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.srv == nil {
		return ""
	}
	return c.srv.ClientURL()
}
