package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/schemas"
)

// Route ownership. Each enabled route runs on one replica: the one holding its lease, the
// key route.<name> in the leases bucket. Leases live by the bucket's MaxAge (LeaseTTL), not
// by per-key TTLs: nats.go v1.55 drops a per-key TTL on Update, while every write to a key,
// Update included, restarts its age under MaxAge. So a lease is taken with Create (fails
// when someone holds it), kept alive with Update over the revision last written (fails
// when it expired or someone else took it), and released with a Delete over that
// revision. The revision is the fencing token: a holder whose Update fails stops its
// worker before the next poll, and the checkpoint's own compare-and-set keeps a late
// worker from moving the route back.
const (
	// leaseRenew is how often a holder renews its leases and its instance key.
	leaseRenew = LeaseTTL / 3
	// leaseRetry is how often a replica tries to take free routes (and sheds routes above
	// its share). Freed routes are noticed at once through a watch of the bucket.
	leaseRetry = LeaseTTL / 2
	// leaseGrace is how long a holder keeps a route while renewals fail without an answer
	// (NATS unreachable): well inside LeaseTTL, so it stops before another can take over.
	leaseGrace = LeaseTTL / 2
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
	rev uint64
}

// leases takes, renews and releases route leases and the heartbeat of one replica.
type leases struct {
	kv       jetstream.KeyValue
	instance string
	status   *StatusBoard

	mu   sync.Mutex
	held map[string]bool // routes whose worker runs here under a lease, for the metrics
}

func newLeases(kv jetstream.KeyValue, instance string, status *StatusBoard) *leases {
	return &leases{kv: kv, instance: instance, status: status, held: make(map[string]bool)}
}

// hold records whether a route runs here under its lease.
func (l *leases) hold(route string, held bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if held {
		l.held[route] = true
	} else {
		delete(l.held, route)
	}
}

// holding reports whether a route runs here under its lease.
func (l *leases) holding(route string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held[route]
}

func (l *leases) value(route string) []byte {
	v := leaseValue{Owner: l.instance}
	if st, ok := l.status.Get(route); ok {
		v.Status = &st
	}
	b, _ := json.Marshal(v)
	return b
}

// acquire takes a route's lease. It reports false without an error when another replica
// holds it. A lease this instance still holds from before (a restart under the same id)
// is taken over at once.
func (l *leases) acquire(ctx context.Context, route string) (*lease, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, leaseOpTimeout)
	defer cancel()
	key := RouteKey(route)
	rev, err := l.kv.Create(ctx, key, l.value(route))
	if err == nil {
		return &lease{key: key, rev: rev}, true, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, false, fmt.Errorf("take lease %s: %w", key, err)
	}
	e, err := l.kv.Get(ctx, key)
	if err != nil {
		return nil, false, nil // gone meanwhile: the next try takes it
	}
	var v leaseValue
	if json.Unmarshal(e.Value(), &v) != nil || v.Owner != l.instance {
		return nil, false, nil
	}
	rev, err = l.kv.Update(ctx, key, l.value(route), e.Revision())
	if err != nil {
		return nil, false, nil
	}
	return &lease{key: key, rev: rev}, true, nil
}

// renew writes the lease again over its revision, restarting its age. A refused write is
// checked once more: a renewal whose acknowledgement was lost (a timeout while the server
// restarted) did move the revision, and the lease, still this instance's, is kept.
func (l *leases) renew(ctx context.Context, route string, ls *lease) error {
	ctx, cancel := context.WithTimeout(ctx, leaseOpTimeout)
	defer cancel()
	rev, err := l.kv.Update(ctx, ls.key, l.value(route), ls.rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		if e, gerr := l.kv.Get(ctx, ls.key); gerr == nil && e.Revision() > ls.rev {
			var v leaseValue
			if json.Unmarshal(e.Value(), &v) == nil && v.Owner == l.instance {
				rev, err = l.kv.Update(ctx, ls.key, l.value(route), e.Revision())
			}
		}
	}
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", ls.key, err)
	}
	ls.rev = rev
	return nil
}

// release deletes the lease if it is still ours, so another replica takes the route at
// once. It runs at shutdown too, so it does not take the caller's context.
func (l *leases) release(ls *lease) error {
	ctx, cancel := context.WithTimeout(context.Background(), leaseOpTimeout)
	defer cancel()
	if err := l.kv.Delete(ctx, ls.key, jetstream.LastRevision(ls.rev)); err != nil {
		return fmt.Errorf("release lease %s: %w", ls.key, err)
	}
	return nil
}

// heartbeat writes this replica's instance key.
func (l *leases) heartbeat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, leaseOpTimeout)
	defer cancel()
	_, err := l.kv.Put(ctx, instanceKey(l.instance), []byte(`{}`))
	return err
}

// goodbye deletes this replica's instance key.
func (l *leases) goodbye() error {
	ctx, cancel := context.WithTimeout(context.Background(), leaseOpTimeout)
	defer cancel()
	return l.kv.Delete(ctx, instanceKey(l.instance))
}

// replicas counts the live replicas (at least 1: this one).
func (l *leases) replicas(ctx context.Context) int {
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
func (l *leases) owner(ctx context.Context, route string) (leaseValue, bool) {
	e, err := l.kv.Get(ctx, RouteKey(route))
	if err != nil {
		return leaseValue{}, false
	}
	var v leaseValue
	if json.Unmarshal(e.Value(), &v) != nil || v.Owner == "" {
		return leaseValue{}, false
	}
	return v, true
}
