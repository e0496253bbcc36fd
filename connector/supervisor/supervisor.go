package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/engine"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/retry"
	"github.com/mailbus/mailbus/connector/secrets"
	"github.com/mailbus/mailbus/schemas"
)

// Worker restart backoff: doubling from restartMin up to restartMax, with jitter so that
// routes failing together do not retry together. A worker that ran longer than restartMax
// starts over from restartMin.
const (
	restartMin = time.Second
	restartMax = time.Minute
	// stopWait is how long the supervisor waits for a stopped worker before it gives up
	// on it and moves on (logging it), so one stuck worker cannot hold up every route.
	stopWait = 10 * time.Second
)

// Config is what a supervisor works with.
type Config struct {
	Runtime *engine.Runtime
	// Definitions is the config bucket it follows.
	Definitions jetstream.KeyValue
	// Sealer opens the connections' secrets for their workers.
	Sealer *secrets.Sealer
	// Factories make the workers, by connection type (imap, exchange).
	Factories map[string]engine.WorkerFactory
	// Resync is sent to when NATS reconnected: the definitions are read again.
	Resync <-chan struct{}
	Leases *Leases
}

// Supervisor runs one worker per enabled route, following the definitions in the config
// bucket. Every replica runs one, fed by a KV watch rather than by the control requests,
// so a command handled by any replica reaches all of them.
type Supervisor struct {
	rt        *engine.Runtime
	kv        jetstream.KeyValue
	sealer    *secrets.Sealer
	factories map[string]engine.WorkerFactory
	logger    *slog.Logger
	resync    <-chan struct{} // NATS reconnected: watch again
	leases    *Leases
	poke      chan struct{} // a runner lost its lease
	regained  chan struct{} // the heartbeat is acknowledged again after failures

	// Owned by the Run goroutine.
	conns   map[string]schemas.Connection
	routes  map[string]schemas.Route
	want    map[string]wantedRoute // routes that should run somewhere
	running map[string]*runner
	// leased is every route lease, and live every replica with an instance key, as the
	// watch of the leases bucket last showed them; leasesRead: it has shown them all.
	leased     map[string]leaseSeen
	live       map[string]bool
	leasesRead bool

	readyOnce sync.Once
	ready     chan struct{}
}

// runner is one route's goroutine and what it was started with.
type runner struct {
	key    string // comparable form of the effective spec
	token  string // the oauth2 refresh token it started with (left out of key)
	cancel context.CancelFunc
	done   chan struct{}
	lease  *lease
	// keep: the route restarts here with a new spec, so the lease is not released.
	keep atomic.Bool
	// lost is set before done closes when the lease was lost.
	lost atomic.Bool
	// taken is closed when the leases watch shows that another replica took the lease.
	taken     chan struct{}
	takenOnce sync.Once
}

// revoke tells the runner that its lease is no longer its own.
func (r *runner) revoke() { r.takenOnce.Do(func() { close(r.taken) }) }

// leaseSeen is a route lease as the leases watch showed it.
type leaseSeen struct {
	owner string
	rev   uint64
}

// wantedRoute is a route that passed every check and should run on the replica holding its lease.
type wantedRoute struct {
	spec    engine.RouteSpec
	factory engine.WorkerFactory
	key     string
}

// New returns the supervisor of cfg; Run starts it.
func New(cfg Config) *Supervisor {
	return &Supervisor{
		rt: cfg.Runtime, kv: cfg.Definitions, sealer: cfg.Sealer, factories: cfg.Factories,
		resync: cfg.Resync, leases: cfg.Leases,
		poke:     make(chan struct{}, 1),
		regained: make(chan struct{}, 1),
		logger:   cfg.Runtime.Logger.With("component", "supervisor"),
		conns:    make(map[string]schemas.Connection),
		routes:   make(map[string]schemas.Route),
		want:     make(map[string]wantedRoute),
		running:  make(map[string]*runner),
		leased:   make(map[string]leaseSeen),
		live:     make(map[string]bool),
		ready:    make(chan struct{}),
	}
}

// Ready is closed once the definitions stored at start have been applied.
func (s *Supervisor) Ready() <-chan struct{} { return s.ready }

// errResync ends a watch so that the next one reads every definition again.
var errResync = errors.New("nats reconnected")

// Run applies definitions until ctx ends, then stops every worker and returns nil. When the
// watch breaks, or NATS reconnected, it watches again and re-applies everything.
func (s *Supervisor) Run(ctx context.Context) error {
	// Deferred in this order so that the routes stop and release their leases before the
	// instance key goes: the others then count this replica out and take them at once.
	defer s.heartbeat(ctx)()
	defer s.stopAll()
	for attempt := 0; ; attempt++ {
		err := s.watch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errResync) {
			s.logger.Info("nats reconnected; reading definitions again")
			attempt = -1
			continue
		}
		s.logger.Warn("definitions watch broke; watching again", "err", err)
		if !retry.Sleep(ctx, RestartDelay(min(attempt, 4))) {
			return nil
		}
	}
}

// watch follows the config bucket. The initial values are gathered first and applied
// together, so that definitions deleted while no watch ran are noticed too.
func (s *Supervisor) watch(ctx context.Context) error {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", s.rt.Names.ConfigBucket(), err)
	}
	defer w.Stop()
	// Leases freed by others (a clean shutdown, a shed route) and replicas gone (a
	// goodbye, an instance key expired) are noticed at once.
	lw, err := s.leases.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", s.rt.Names.LeasesBucket(), err)
	}
	defer lw.Stop()
	// The watch shows every key again, and not those gone meanwhile.
	clear(s.leased)
	clear(s.live)
	s.leasesRead = false
	tick := time.NewTicker(leaseRetry)
	defer tick.Stop()
	initial := true
	conns, routes := make(map[string]schemas.Connection), make(map[string]schemas.Route)
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.resync:
			return errResync
		case <-tick.C:
			if !initial {
				s.balance(ctx)
			}
			continue
		case <-s.poke:
			s.sweep()
			continue
		case <-s.regained:
			if !initial {
				s.balance(ctx)
			}
			continue
		case le, ok := <-lw.Updates():
			if !ok {
				return errors.New("leases watcher stopped")
			}
			if le == nil {
				// Every lease is read: those held from before and not taken back can go.
				s.leasesRead = true
				if !initial {
					s.balance(ctx)
				}
				continue
			}
			switch kind, name, _ := strings.Cut(le.Key(), "."); kind {
			case "route":
				s.seeLease(name, le)
			case "instance":
				if le.Operation() == jetstream.KeyValuePut {
					s.live[name] = true
				} else {
					delete(s.live, name)
				}
			}
			// A freed lease, or a replica gone (a larger share for the others).
			if !initial && le.Operation() != jetstream.KeyValuePut {
				s.balance(ctx)
			}
			continue
		case e, ok = <-w.Updates():
		}
		if !ok {
			return errors.New("watcher stopped")
		}
		if e == nil {
			initial = false
			s.conns, s.routes = conns, routes
			s.reconcileAll(ctx)
			s.readyOnce.Do(func() { close(s.ready) })
			continue
		}
		kind, name, _ := strings.Cut(e.Key(), ".")
		deleted := e.Operation() != jetstream.KeyValuePut
		switch kind {
		case "connection":
			var c schemas.Connection
			if !deleted && json.Unmarshal(e.Value(), &c) != nil {
				s.logger.Error("unreadable definition ignored", "key", e.Key())
				continue
			}
			if deleted {
				delete(conns, name)
			} else {
				conns[name] = c
			}
			if !initial {
				s.reconcileConnection(ctx, name)
			}
		case "route":
			var r schemas.Route
			if !deleted && json.Unmarshal(e.Value(), &r) != nil {
				s.logger.Error("unreadable definition ignored", "key", e.Key())
				continue
			}
			if deleted {
				delete(routes, name)
			} else {
				routes[name] = r
			}
			if !initial {
				s.reconcile(ctx, name)
			}
		}
	}
}

// seeLease records a route lease shown by the watch, and stops a route running here whose
// lease another replica took or removed. Revisions up to the one the runner last wrote
// are its own (or older).
func (s *Supervisor) seeLease(name string, e jetstream.KeyValueEntry) {
	var v leaseValue
	if e.Operation() != jetstream.KeyValuePut {
		delete(s.leased, name)
	} else {
		_ = json.Unmarshal(e.Value(), &v) // an unreadable lease has no owner
		s.leased[name] = leaseSeen{owner: v.Owner, rev: e.Revision()}
	}
	run, ok := s.running[name]
	if !ok || e.Revision() <= run.lease.rev.Load() || v.Owner == s.rt.Instance {
		return // not running here, or a write of this runner's seen before it stored the revision
	}
	s.logger.Warn("route lease taken by another replica; stopping its worker", "route", name)
	run.revoke()
}

// releaseStale releases the leases that name this replica but that no worker of it runs
// under: held by this instance before a restart and not taken back (its share is smaller
// now), or not released when their worker stopped. The others count this replica alive,
// so nobody else would take those routes.
func (s *Supervisor) releaseStale() {
	for name, l := range s.leased {
		if l.owner != s.rt.Instance || s.running[name] != nil {
			continue
		}
		err := s.leases.release(newLease(bus.RouteKey(name), l.rev))
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // released or taken meanwhile; the watch has not shown it yet
		}
		if err != nil {
			s.logger.Warn("route lease not released", "route", name, "err", err)
			continue
		}
		s.logger.Info("route lease released: held from before, not run here", "route", name)
	}
}

// reconcileAll brings every known or running route in line with the definitions.
func (s *Supervisor) reconcileAll(ctx context.Context) {
	names := make(map[string]bool)
	for n := range s.routes {
		names[n] = true
	}
	for n := range s.running {
		names[n] = true
	}
	for n := range names {
		s.reconcile(ctx, n)
	}
	// Routes reconciled early saw a smaller share; take up to the full one now.
	s.balance(ctx)
}

// reconcileConnection reconciles the routes of one connection.
func (s *Supervisor) reconcileConnection(ctx context.Context, conn string) {
	for n, r := range s.routes {
		if r.Connection == conn {
			s.reconcile(ctx, n)
		}
	}
}

// reconcile starts, restarts or stops one route's worker. A running worker whose effective
// spec did not change (a new description, a put of the same values) keeps running. The
// worker's context is a child of ctx, so it ends with the supervisor.
func (s *Supervisor) reconcile(ctx context.Context, name string) {
	r, ok := s.routes[name]
	if !ok {
		delete(s.want, name)
		s.stop(name, false)
		s.leases.forget(ctx, name)
		s.rt.Status.Delete(name)
		s.rt.Metrics.Forget(name)
		return
	}
	c, hasConn := s.conns[r.Connection]
	park := func(state, why string) {
		delete(s.want, name)
		s.stop(name, false)
		s.setStatus(name, state, why)
	}
	switch {
	case r.Disabled:
		park(schemas.StateDisabled, "")
		return
	case !hasConn:
		park(schemas.StateError, fmt.Sprintf("connection %s does not exist", r.Connection))
		return
	case c.Disabled:
		park(schemas.StateDisabled, fmt.Sprintf("connection %s is disabled", r.Connection))
		return
	}
	factory, ok := s.factories[c.Type]
	if !ok {
		park(schemas.StateError, fmt.Sprintf("%s connections are not built yet", c.Type))
		return
	}
	spec := engine.RouteSpec{Route: r, Connection: c}
	key := specKey(spec)
	s.want[name] = wantedRoute{spec: spec, factory: factory, key: key}
	cur, ok := s.running[name]
	if ok && cur.key == key && !s.newTokenForParked(name, cur, spec) {
		return
	}
	if ok {
		// A new spec: the worker restarts here, under the lease it holds.
		if ls := s.stop(name, true); ls != nil {
			s.start(ctx, name, ls)
			return
		}
	}
	s.acquire(ctx, name, s.share(ctx))
}

// share is how many routes this replica may own: the wanted routes spread evenly over the
// live replicas, rounded up.
func (s *Supervisor) share(ctx context.Context) int {
	var n int
	if s.leasesRead {
		n = len(s.live)
		if !s.live[s.rt.Instance] {
			n++ // this one, before its first heartbeat shows
		}
	} else {
		n = s.leases.replicas(ctx) // the watch has not shown every instance key yet
	}
	return (len(s.want) + n - 1) / n
}

// acquire starts a wanted route here if this replica is within its share and takes the
// route's lease. A route held elsewhere is forgotten on the local board.
func (s *Supervisor) acquire(ctx context.Context, name string, share int) {
	if _, ok := s.running[name]; ok {
		return
	}
	if !s.leases.beating() {
		return // nothing is taken without a heartbeat; a stopped route's status says why
	}
	if len(s.running) >= share {
		s.rt.Status.Delete(name) // what it said when parked here is no longer true
		return
	}
	ls, ok, err := s.leases.acquire(ctx, name)
	if err != nil {
		s.logger.Warn("route lease not taken", "route", name, "err", err)
	}
	if !ok {
		s.rt.Status.Delete(name)
		return
	}
	s.logger.Info("route lease taken", "route", name, "revision", ls.rev.Load())
	s.start(ctx, name, ls)
}

// balance forgets runners that lost their lease, sheds a route when this replica holds
// more than its share (one per call, so that replicas joining together settle without
// flapping), tries to take the free wanted routes, and then releases the leases in this
// replica's name that it did not take back.
func (s *Supervisor) balance(ctx context.Context) {
	s.sweep()
	defer s.releaseStale()
	share := s.share(ctx)
	if len(s.running) > share {
		names := slices.Sorted(maps.Keys(s.running))
		name := names[len(names)-1]
		s.logger.Info("route handed over: more routes here than this replica's share", "route", name, "share", share)
		s.stop(name, false)
		s.rt.Status.Delete(name)
		return
	}
	for _, name := range slices.Sorted(maps.Keys(s.want)) {
		s.acquire(ctx, name, share)
	}
}

// sweep forgets the runners that ended on their own: they lost their lease.
func (s *Supervisor) sweep() {
	for name, run := range s.running {
		select {
		case <-run.done:
			delete(s.running, name)
		default:
		}
	}
}

// start runs a wanted route's worker under ls. The worker's context is a child of ctx, so
// it ends with the supervisor.
func (s *Supervisor) start(ctx context.Context, name string, ls *lease) {
	w := s.want[name]
	ctx, cancel := context.WithCancel(ctx)
	run := &runner{key: w.key, token: refreshToken(w.spec), cancel: cancel, done: make(chan struct{}), lease: ls, taken: make(chan struct{})}
	s.running[name] = run
	s.setStatus(name, schemas.StateStarting, "")
	go func() {
		defer close(run.done)
		s.runOwned(ctx, run, w.spec, w.factory)
	}()
}

// runOwned runs a route's worker under its lease, and writes the route's status into the
// lease when it changed. The worker is stopped at once when the lease is lost: a status
// write refused (another replica took it), the leases watch showing it taken, or this
// replica's heartbeat lapsed (its instance key, and the lease with it, may expire). A
// stopped runner releases its lease after its worker stopped, unless it is kept.
func (s *Supervisor) runOwned(ctx context.Context, run *runner, spec engine.RouteSpec, factory engine.WorkerFactory) {
	name := spec.Route.Name
	s.leases.hold(name, true)
	defer s.leases.hold(name, false)
	lapsed := s.leases.lapsed()
	wctx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	workerDone := make(chan struct{})
	go func() {
		defer close(workerDone)
		s.runRoute(wctx, spec, factory)
	}()
	// A change of state is written soon, at most once per stateCheck (a route in IDLE goes
	// running and back to idle for every new message); other changes (the counters) at
	// most every leaseRenew. A route with nothing new writes nothing and wakes up for
	// nothing: no timer runs while nothing is due.
	changed, unwatch := s.rt.Status.Watch(name)
	defer unwatch()
	state := func() string { st, _ := s.rt.Status.Get(name); return st.State }
	var written []byte
	writtenState, lastWrite := "", time.Time{}
	due := time.NewTimer(0) // the first write: this runner's own status
	defer due.Stop()
	var dueAt time.Time // zero: no write is due
	schedule := func(gap time.Duration) {
		at := lastWrite.Add(gap)
		if now := time.Now(); at.Before(now) {
			at = now
		}
		if dueAt.IsZero() || at.Before(dueAt) {
			dueAt = at
			due.Reset(time.Until(at))
		}
	}
	dueAt = time.Now()
	lost, lapse := false, false
own:
	for {
		select {
		case <-ctx.Done():
			break own
		case <-run.taken:
			lost = true
			break own
		case <-lapsed:
			s.logger.Warn("instance heartbeat lapsed; stopping the route's worker", "route", name)
			lost, lapse = true, true
			break own
		case <-changed:
			if state() != writtenState {
				schedule(stateCheck)
			} else {
				schedule(leaseRenew)
			}
			continue
		case <-due.C:
			dueAt = time.Time{}
		}
		cur, v := state(), s.leases.value(name)
		if bytes.Equal(v, written) {
			continue
		}
		err := s.leases.write(ctx, name, run.lease, v)
		if err == nil {
			written, writtenState, lastWrite = v, cur, time.Now()
			continue
		}
		if ctx.Err() != nil {
			break own
		}
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
			s.logger.Warn("route lease lost; stopping its worker", "route", name, "err", err)
			lost = true
			break own
		}
		s.logger.Warn("route status not written to its lease; retrying", "route", name, "err", err)
		lastWrite = time.Now()
		schedule(leaseRenew)
	}
	stopWorker()
	<-workerDone
	switch {
	case lost:
		run.lost.Store(true)
		if lapse {
			// Until NATS is back nobody can take the route over: its status says why it
			// stopped. The next balance takes it back or forgets it (acquire).
			s.setStatus(name, schemas.StateBackoff, bus.NATSUnreachable)
		} else {
			s.rt.Status.Delete(name)
		}
		select {
		case s.poke <- struct{}{}:
		default:
		}
	case !run.keep.Load():
		if err := s.leases.release(run.lease); err != nil {
			s.logger.Warn("route lease not released; retried at the next balance", "route", name, "err", err)
		}
	}
}

// heartbeat writes this replica's instance key now and every leaseRenew until ctx ends.
// The returned function waits for that and removes the key.
func (s *Supervisor) heartbeat(ctx context.Context) func() {
	// The first is written before any route is taken: a replica takes none without it.
	failing, next := false, leaseRenew
	if err := s.leases.heartbeat(ctx); err != nil {
		s.logger.Warn("instance heartbeat not acknowledged; retrying", "err", err)
		failing, next = true, heartbeatRetry
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if !retry.Sleep(ctx, next) {
				return
			}
			err := s.leases.heartbeat(ctx)
			switch {
			case err == nil:
				next = leaseRenew
				if failing {
					// The routes stopped by the lapse are taken back now, not at the next retry.
					failing = false
					s.logger.Info("instance heartbeat acknowledged again")
					select {
					case s.regained <- struct{}{}:
					default:
					}
				}
			case ctx.Err() == nil:
				// Retried soon: the routes stop if it stays unacknowledged for leaseGrace.
				next = heartbeatRetry
				if !failing {
					failing = true
					s.logger.Warn("instance heartbeat not acknowledged; retrying", "err", err)
				}
			}
		}
	}()
	return func() {
		<-done
		if err := s.leases.goodbye(); err != nil {
			s.logger.Warn("instance key not deleted; it expires by itself", "err", err)
		}
	}
}

// specKey is what decides a restart: the definitions without the fields that do not change
// what a worker does. An oauth2 refresh token is left out too: workers store the one the
// token endpoint replaces, and read the stored one before each refresh, so a restart on it
// would only make every worker on the connection refresh (and rotate) again, in a loop.
func specKey(spec engine.RouteSpec) string {
	spec.Route.Description, spec.Route.Revision = "", 0
	spec.Connection.Description, spec.Connection.Revision = "", 0
	if o := spec.Connection.OAuth2; o != nil {
		oc := *o
		oc.RefreshToken = ""
		spec.Connection.OAuth2 = &oc
	}
	b, _ := json.Marshal(spec)
	return string(b)
}

// newTokenForParked reports whether a route parked in state error was given another oauth2
// refresh token (an operator replacing a revoked one): it restarts at once rather than at
// its next slow retry. A running route is left alone, since its own worker stores the
// tokens the endpoint rotates.
func (s *Supervisor) newTokenForParked(name string, cur *runner, spec engine.RouteSpec) bool {
	st, _ := s.rt.Status.Get(name)
	return st.State == schemas.StateError && refreshToken(spec) != cur.token
}

func refreshToken(spec engine.RouteSpec) string {
	if o := spec.Connection.OAuth2; o != nil {
		return o.RefreshToken
	}
	return ""
}

// stop cancels a route's worker and waits for it, at most stopWait. With keep, the lease
// is not released but returned, if still held, for the route's next worker here.
func (s *Supervisor) stop(name string, keep bool) *lease {
	run, ok := s.running[name]
	if !ok {
		return nil
	}
	delete(s.running, name)
	run.keep.Store(keep)
	run.cancel()
	select {
	case <-run.done:
	case <-time.After(stopWait):
		s.logger.Error("worker did not stop in time; leaving it behind", "route", name)
		return nil
	}
	if !keep || run.lost.Load() {
		return nil
	}
	return run.lease
}

// stopAll stops every worker, in parallel so shutdown takes as long as the slowest.
func (s *Supervisor) stopAll() {
	var wg sync.WaitGroup
	for name, run := range s.running {
		run.cancel()
		wg.Go(func() {
			select {
			case <-run.done:
			case <-time.After(stopWait):
				s.logger.Error("worker did not stop in time; leaving it behind", "route", name)
			}
		})
	}
	wg.Wait()
	clear(s.running)
}

func (s *Supervisor) setStatus(route, state, lastError string) {
	s.rt.Status.Update(route, func(st *schemas.RouteStatus) {
		st.State, st.Owner, st.LastError = state, s.rt.Instance, lastError
	})
}

// runRoute is the goroutine of one route: make the worker, run it, and when it fails wait
// and make a new one, until ctx ends.
func (s *Supervisor) runRoute(ctx context.Context, spec engine.RouteSpec, factory engine.WorkerFactory) {
	name := spec.Route.Name
	log := s.logger.With("route", name, "connection", spec.Connection.Name)
	for attempt := 0; ; {
		started := time.Now()
		err := s.runWorker(ctx, spec, factory)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("worker returned without an error before it was stopped")
		}
		if time.Since(started) > restartMax {
			attempt = 0
		}
		// A failure retrying soon cannot fix (a missing passwordFrom variable, a definition
		// the factory refuses) parks the route in state error and retries slowly.
		wait, state := RestartDelay(attempt), schemas.StateBackoff
		if retry.IsPermanent(err) {
			wait, state = restartMax, schemas.StateError
		}
		attempt++
		s.setStatus(name, state, err.Error())
		log.Warn("route worker failed; restarting", "err", err, "in", wait.Round(time.Millisecond).String())
		if !retry.Sleep(ctx, wait) {
			return
		}
		s.setStatus(name, schemas.StateStarting, err.Error())
	}
}

// runWorker resolves the connection's secrets, makes the worker and runs it.
func (s *Supervisor) runWorker(ctx context.Context, spec engine.RouteSpec, factory engine.WorkerFactory) error {
	c, err := s.sealer.Usable(spec.Connection)
	if err != nil {
		return retry.Permanent(err)
	}
	spec.Connection = c
	w, err := factory(s.rt, spec)
	if err != nil {
		return fmt.Errorf("start worker: %w", err) // still permanent if it was
	}
	s.setStatus(spec.Route.Name, schemas.StateRunning, "")
	return w.Run(ctx)
}

// RestartDelay is the wait before restart attempt n (0 first): restartMin doubling up to
// restartMax, then a random point in its upper half.
func RestartDelay(n int) time.Duration {
	d := restartMin << min(n, 16)
	if d <= 0 || d > restartMax {
		d = restartMax
	}
	return d/2 + rand.N(d/2+1)
}
