package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/schemas"
)

// Route ownership. Each enabled route runs on one replica: the one holding its lease, the
// key route.<name> in the leases bucket, whose value names its owner. A lease holds for as
// long as its owner lives, and an owner lives while its heartbeat key instance.<id> does:
// that key is written every leaseRenew with a per-message TTL of bus.LeaseTTL, and the server
// removes it, leaving a marker the others watch, when the writes stop. So an idle replica
// writes one key per leaseRenew however many routes it holds; route keys are written only
// when taken, released, or when the route's status changed.
//
// A lease is taken with Create when free, or with Update over the revision read when its
// owner is gone (or is this replica, restarted under the same id); it is released with a
// Purge over the revision last written. The revision is the fencing token: a holder stops
// its worker when its status write over that revision is refused, when the leases watch
// shows the key taken or removed by another, or when its own heartbeat has not been
// acknowledged for leaseGrace, before its instance key can expire and others take over.
// The checkpoint's own compare-and-set keeps a late worker from moving the route back.
const (
	// leaseRenew is how often a replica writes its instance key, and how often at most a
	// holder writes a route's status into its lease when only its counters changed.
	leaseRenew = bus.LeaseTTL / 3
	// leaseRetry is how often a replica tries to take free routes (and sheds routes above
	// its share). Freed routes and replicas gone are noticed at once through a watch of
	// the bucket.
	leaseRetry = bus.LeaseTTL / 2
	// heartbeatRetry is how soon a heartbeat that was not acknowledged is sent again.
	heartbeatRetry = 500 * time.Millisecond
	// leaseGrace is how long a holder keeps its routes while its heartbeats fail without
	// an answer (NATS unreachable): well inside bus.LeaseTTL, so it stops before another can
	// take over.
	leaseGrace = bus.LeaseTTL / 2
	// stateCheck is how often at most a holder writes a change of its route's state into
	// the lease, for route.status on the other replicas.
	stateCheck = 250 * time.Millisecond
	// leaseOpTimeout bounds one lease operation.
	leaseOpTimeout = 2 * time.Second
)

// leaseValue is what a lease key holds: its owner, and the route's status as the owner last
// saw it, so that route.status answered by any replica can show it.
type leaseValue struct {
	Owner  string               `json:"owner"`
	Status *schemas.RouteStatus `json:"status,omitempty"`
}

// instanceKey is a replica's heartbeat key in the leases bucket; the live keys count the
// replicas routes are spread over.
func instanceKey(instance string) string { return "instance." + instance }

// lease is a held route lease.
type lease struct {
	key string
	// rev is the revision last written: set by the runner, read by the supervisor's watch.
	rev atomic.Uint64
}

func newLease(key string, rev uint64) *lease {
	ls := &lease{key: key}
	ls.rev.Store(rev)
	return ls
}

// Leases takes, writes and releases route leases and the heartbeat of one replica.
type Leases struct {
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	instance string
	status   *engine.StatusBoard

	mu    sync.Mutex
	held  map[string]bool // routes whose worker runs here under a lease, for the metrics
	beat  time.Time       // when the last heartbeat was acknowledged
	lapse chan struct{}   // closed when the heartbeat lapsed; see lapsed
	timer *time.Timer     // closes lapse leaseGrace after the last acknowledged heartbeat
}

// NewLeases returns the leases of replica instance in the leases bucket kv; status is the
// replica's board, whose statuses its leases carry to the others.
func NewLeases(js jetstream.JetStream, kv jetstream.KeyValue, instance string, status *engine.StatusBoard) *Leases {
	return &Leases{js: js, kv: kv, instance: instance, status: status, held: make(map[string]bool), lapse: make(chan struct{})}
}

// hold records whether a route runs here under its lease.
func (l *Leases) hold(route string, held bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if held {
		l.held[route] = true
	} else {
		delete(l.held, route)
	}
}

// Holding reports whether a route runs here under its lease.
func (l *Leases) Holding(route string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held[route]
}

func (l *Leases) value(route string) []byte {
	v := leaseValue{Owner: l.instance}
	if st, ok := l.status.Get(route); ok {
		v.Status = &st
	}
	b, _ := json.Marshal(v)
	return b
}

// acquire takes a route's lease: a free one, one whose owner is gone, or one this instance
// still holds from before (a restart under the same id). It reports false without an
// error when a live replica holds it, and while this replica's own heartbeat is not
// acknowledged (the others may count it out).
func (l *Leases) acquire(ctx context.Context, route string) (*lease, bool, error) {
	if !l.beating() {
		return nil, false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, leaseOpTimeout)
	defer cancel()
	key := bus.RouteKey(route)
	e, err := l.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		rev, err := l.kv.Create(ctx, key, l.value(route))
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil, false, nil // taken meanwhile
		}
		if err != nil {
			return nil, false, fmt.Errorf("take lease %s: %w", key, err)
		}
		return newLease(key, rev), true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read lease %s: %w", key, err)
	}
	var v leaseValue
	_ = json.Unmarshal(e.Value(), &v) // an unreadable lease has no live owner
	if v.Owner != l.instance {
		alive, err := l.alive(ctx, v.Owner)
		if err != nil || alive {
			return nil, false, err
		}
	}
	rev, err := l.kv.Update(ctx, key, l.value(route), e.Revision())
	if err != nil {
		return nil, false, nil // taken meanwhile
	}
	return newLease(key, rev), true, nil
}

// alive reports whether a replica's instance key exists.
func (l *Leases) alive(ctx context.Context, instance string) (bool, error) {
	if instance == "" {
		return false, nil
	}
	_, err := l.kv.Get(ctx, instanceKey(instance))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	default:
		return false, fmt.Errorf("read %s: %w", instanceKey(instance), err)
	}
}

// write stores the route's status in its lease over the revision last written. A refused
// write is checked once more: a write whose acknowledgement was lost (a timeout while the
// server restarted) did move the revision, and the lease, still this instance's, is kept.
func (l *Leases) write(ctx context.Context, route string, ls *lease, value []byte) error {
	ctx, cancel := context.WithTimeout(ctx, leaseOpTimeout)
	defer cancel()
	rev, err := l.kv.Update(ctx, ls.key, value, ls.rev.Load())
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		if e, gerr := l.kv.Get(ctx, ls.key); gerr == nil && e.Revision() > ls.rev.Load() {
			var v leaseValue
			if json.Unmarshal(e.Value(), &v) == nil && v.Owner == l.instance {
				rev, err = l.kv.Update(ctx, ls.key, value, e.Revision())
			}
		}
	}
	if err != nil {
		return fmt.Errorf("write lease %s: %w", ls.key, err)
	}
	ls.rev.Store(rev)
	return nil
}

// release removes the lease if it is still ours, so another replica takes the route at
// once. It runs at shutdown too, so it does not take the caller's context.
func (l *Leases) release(ls *lease) error {
	ctx, cancel := context.WithTimeout(context.Background(), leaseOpTimeout)
	defer cancel()
	if err := l.purge(ctx, ls.key, ls.rev.Load()); err != nil {
		return fmt.Errorf("release lease %s: %w", ls.key, err)
	}
	return nil
}

// forget removes the lease of a deleted route left by a replica that is gone, so that
// the bucket keeps no lease of a route nobody will run.
func (l *Leases) forget(ctx context.Context, route string) {
	ctx, cancel := context.WithTimeout(ctx, leaseOpTimeout)
	defer cancel()
	e, err := l.kv.Get(ctx, bus.RouteKey(route))
	if err != nil {
		return
	}
	var v leaseValue
	_ = json.Unmarshal(e.Value(), &v)
	if alive, err := l.alive(ctx, v.Owner); err == nil && !alive {
		_ = l.purge(ctx, e.Key(), e.Revision()) // refused: someone took it meanwhile
	}
}

// purge removes a key over its revision (0: whatever it holds). The purge marker itself
// goes after bus.LeaseTTL, so the bucket does not keep one per route or replica ever seen.
// A purge refused because the key moved on reports ErrKeyRevisionMismatch, as an Update does.
func (l *Leases) purge(ctx context.Context, key string, rev uint64) error {
	err := l.kv.Purge(ctx, key, jetstream.LastRevision(rev), jetstream.PurgeTTL(bus.LeaseTTL))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return fmt.Errorf("%w: %w", err, jetstream.ErrKeyRevisionMismatch)
	}
	return err
}

// heartbeat writes this replica's instance key, with a TTL of bus.LeaseTTL. The KV API sets a
// per-key TTL only on Create, so the key is published to directly; every write replaces
// the last (the bucket keeps one value per key) and so restarts the TTL.
func (l *Leases) heartbeat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, leaseOpTimeout)
	defer cancel()
	subject := "$KV." + l.kv.Bucket() + "." + instanceKey(l.instance)
	if _, err := l.js.Publish(ctx, subject, []byte(`{}`), jetstream.WithMsgTTL(bus.LeaseTTL)); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.beat = time.Now()
	if l.timer == nil {
		l.timer = time.AfterFunc(leaseGrace, l.checkLapse)
	} else {
		l.timer.Reset(leaseGrace)
	}
	select {
	case <-l.lapse:
		l.lapse = make(chan struct{}) // for the routes taken from now on
	default:
	}
	return nil
}

// lapsed returns a channel closed once this replica's heartbeat goes unacknowledged for
// leaseGrace, before its instance key can expire: the routes running here stop then.
func (l *Leases) lapsed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lapse
}

// checkLapse closes the lapsed channel if the heartbeat has lapsed (its timer may fire
// just as a heartbeat is acknowledged).
func (l *Leases) checkLapse() {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.lapse:
	default:
		if time.Since(l.beat) >= leaseGrace {
			close(l.lapse)
		}
	}
}

// beating reports whether this replica's heartbeat was acknowledged within leaseGrace:
// if not, its instance key may be about to expire, and its routes with it.
func (l *Leases) beating() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.beat.IsZero() && time.Since(l.beat) < leaseGrace
}

// goodbye removes this replica's instance key.
func (l *Leases) goodbye() error {
	ctx, cancel := context.WithTimeout(context.Background(), leaseOpTimeout)
	defer cancel()
	return l.purge(ctx, instanceKey(l.instance), 0)
}

// replicas counts the live replicas (at least 1: this one).
func (l *Leases) replicas(ctx context.Context) int {
	ctx, cancel := context.WithTimeout(ctx, leaseOpTimeout)
	defer cancel()
	keys, err := l.kv.ListKeysFiltered(ctx, "instance.>")
	if err != nil {
		return 1
	}
	n, self := 0, false
	for k := range keys.Keys() {
		n++
		self = self || k == instanceKey(l.instance)
	}
	if !self {
		n++
	}
	return n
}

// owner reads who holds a route's lease, and the status it last wrote.
func (l *Leases) owner(ctx context.Context, route string) (leaseValue, bool) {
	e, err := l.kv.Get(ctx, bus.RouteKey(route))
	if err != nil {
		return leaseValue{}, false
	}
	var v leaseValue
	if json.Unmarshal(e.Value(), &v) != nil || v.Owner == "" {
		return leaseValue{}, false
	}
	return v, true
}

// Statuses reads route statuses for the control service (control.StatusReader): this
// replica's board, then the leases of the others.
type Statuses struct {
	Board  *engine.StatusBoard
	Leases *Leases // nil: no other replica is asked (a Runtime made outside a Connector)
}

// Local is the status of the route's worker on this replica.
func (s Statuses) Local(route string) (schemas.RouteStatus, bool) { return s.Board.Get(route) }

// Remote is the status the replica holding the route's lease last wrote into it, with
// that replica as owner; a lease without a status yet says starting.
func (s Statuses) Remote(ctx context.Context, route string) (schemas.RouteStatus, bool) {
	if s.Leases == nil {
		return schemas.RouteStatus{}, false
	}
	v, ok := s.Leases.owner(ctx, route)
	if !ok {
		return schemas.RouteStatus{}, false
	}
	st := schemas.RouteStatus{State: schemas.StateStarting}
	if v.Status != nil {
		st = *v.Status
	}
	st.Route, st.Owner = route, v.Owner
	return st, true
}
