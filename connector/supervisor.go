package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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

// supervisor runs one worker per enabled route, following the definitions in the config
// bucket. Every replica runs one, fed by a KV watch rather than by the control requests,
// so a command handled by any replica reaches all of them.
type supervisor struct {
	rt        *Runtime
	kv        jetstream.KeyValue
	sealer    *sealer
	factories map[string]WorkerFactory
	logger    *slog.Logger
	resync    <-chan struct{} // NATS reconnected: watch again

	// Owned by the Run goroutine.
	conns   map[string]schemas.Connection
	routes  map[string]schemas.Route
	running map[string]*runner

	readyOnce sync.Once
	ready     chan struct{}
}

// runner is one route's goroutine and what it was started with.
type runner struct {
	key    string // comparable form of the effective spec
	cancel context.CancelFunc
	done   chan struct{}
}

func newSupervisor(rt *Runtime, kv jetstream.KeyValue, s *sealer, factories map[string]WorkerFactory, resync <-chan struct{}) *supervisor {
	return &supervisor{
		rt: rt, kv: kv, sealer: s, factories: factories, resync: resync,
		logger:  rt.Logger.With("component", "supervisor"),
		conns:   make(map[string]schemas.Connection),
		routes:  make(map[string]schemas.Route),
		running: make(map[string]*runner),
		ready:   make(chan struct{}),
	}
}

// Ready is closed once the definitions stored at start have been applied.
func (s *supervisor) Ready() <-chan struct{} { return s.ready }

// errResync ends a watch so that the next one reads every definition again.
var errResync = errors.New("nats reconnected")

// Run applies definitions until ctx ends, then stops every worker and returns nil. When the
// watch breaks, or NATS reconnected, it watches again and re-applies everything.
func (s *supervisor) Run(ctx context.Context) error {
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
		if !sleepUntil(ctx, restartDelay(min(attempt, 4))) {
			return nil
		}
	}
}

// watch follows the config bucket. The initial values are gathered first and applied
// together, so that definitions deleted while no watch ran are noticed too.
func (s *supervisor) watch(ctx context.Context) error {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", s.rt.Names.ConfigBucket(), err)
	}
	defer w.Stop()
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

// reconcileAll brings every known or running route in line with the definitions.
func (s *supervisor) reconcileAll(ctx context.Context) {
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
}

// reconcileConnection reconciles the routes of one connection.
func (s *supervisor) reconcileConnection(ctx context.Context, conn string) {
	for n, r := range s.routes {
		if r.Connection == conn {
			s.reconcile(ctx, n)
		}
	}
}

// reconcile starts, restarts or stops one route's worker. A running worker whose effective
// spec did not change (a new description, a put of the same values) keeps running. The
// worker's context is a child of ctx, so it ends with the supervisor.
func (s *supervisor) reconcile(ctx context.Context, name string) {
	r, ok := s.routes[name]
	if !ok {
		s.stop(name)
		s.rt.Status.Delete(name)
		return
	}
	c, hasConn := s.conns[r.Connection]
	park := func(state, why string) {
		s.stop(name)
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
	spec := RouteSpec{Route: r, Connection: c}
	key := specKey(spec)
	if cur, ok := s.running[name]; ok && cur.key == key {
		return
	}
	s.stop(name)
	ctx, cancel := context.WithCancel(ctx)
	run := &runner{key: key, cancel: cancel, done: make(chan struct{})}
	s.running[name] = run
	s.setStatus(name, schemas.StateStarting, "")
	go func() {
		defer close(run.done)
		s.runRoute(ctx, spec, factory)
	}()
}

// specKey is what decides a restart: the definitions without the fields that do not change
// what a worker does.
func specKey(spec RouteSpec) string {
	spec.Route.Description, spec.Route.Revision = "", 0
	spec.Connection.Description, spec.Connection.Revision = "", 0
	b, _ := json.Marshal(spec)
	return string(b)
}

// stop cancels a route's worker and waits for it, at most stopWait.
func (s *supervisor) stop(name string) {
	run, ok := s.running[name]
	if !ok {
		return
	}
	delete(s.running, name)
	run.cancel()
	select {
	case <-run.done:
	case <-time.After(stopWait):
		s.logger.Error("worker did not stop in time; leaving it behind", "route", name)
	}
}

// stopAll stops every worker, in parallel so shutdown takes as long as the slowest.
func (s *supervisor) stopAll() {
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

func (s *supervisor) setStatus(route, state, lastError string) {
	s.rt.Status.Update(route, func(st *schemas.RouteStatus) {
		st.State, st.Owner, st.LastError = state, s.rt.Instance, lastError
	})
}

// runRoute is the goroutine of one route: make the worker, run it, and when it fails wait
// and make a new one, until ctx ends.
func (s *supervisor) runRoute(ctx context.Context, spec RouteSpec, factory WorkerFactory) {
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
		wait, state := restartDelay(attempt), schemas.StateBackoff
		if IsPermanent(err) {
			wait, state = restartMax, schemas.StateError
		}
		attempt++
		s.setStatus(name, state, err.Error())
		log.Warn("route worker failed; restarting", "err", err, "in", wait.Round(time.Millisecond).String())
		if !sleepUntil(ctx, wait) {
			return
		}
		s.setStatus(name, schemas.StateStarting, err.Error())
	}
}

// runWorker resolves the connection's secrets, makes the worker and runs it.
func (s *supervisor) runWorker(ctx context.Context, spec RouteSpec, factory WorkerFactory) error {
	c, err := s.sealer.usable(spec.Connection)
	if err != nil {
		return Permanent(err)
	}
	spec.Connection = c
	w, err := factory(s.rt, spec)
	if err != nil {
		return fmt.Errorf("start worker: %w", err) // still permanent if it was
	}
	s.setStatus(spec.Route.Name, schemas.StateRunning, "")
	return w.Run(ctx)
}

// restartDelay is the wait before restart attempt n (0 first): restartMin doubling up to
// restartMax, then a random point in its upper half.
func restartDelay(n int) time.Duration {
	d := restartMin << min(n, 16)
	if d <= 0 || d > restartMax {
		d = restartMax
	}
	return d/2 + rand.N(d/2+1)
}

// sleepUntil waits d or until ctx ends; it reports whether the full time passed.
func sleepUntil(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
