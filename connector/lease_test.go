package connector_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/schemas"
)

// leaseEntry reads a key of the leases bucket; ok is false when it does not exist.
func leaseEntry(t *testing.T, n *busNATS, key string) (jetstream.KeyValueEntry, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := n.st.Leases.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false
	}
	if err != nil {
		t.Fatalf("Get(%s) = %v", key, err)
	}
	return e, true
}

// TestLeaseQuietWhileIdle: a replica holding a route whose status does not change writes
// only its heartbeat, not the route's lease, however long it runs.
func TestLeaseQuietWhileIdle(t *testing.T) {
	n := startBusNATS(t)
	a := startService(t, replicaConfig(t, "nats://"+n.addr, "a"), nil, nil)
	a.ok("mail.control.connection.put", imapConnection("c1"))
	a.ok("mail.control.route.put", inboxRoute("r1", "c1"))
	a.rec.expect(t, "start r1", 5*time.Second)
	a.waitStatus("r1", 5*time.Second, func(st schemas.RouteStatus) bool { return st.State == schemas.StateRunning })
	time.Sleep(time.Second) // the running state reaches the lease
	route, ok := leaseEntry(t, n, "route.r1")
	if !ok {
		t.Fatal("no lease for r1")
	}
	beat, ok := leaseEntry(t, n, "instance.a")
	if !ok {
		t.Fatal("no instance key for a")
	}

	time.Sleep(bus.LeaseTTL) // three heartbeats
	if e, ok := leaseEntry(t, n, "route.r1"); !ok || e.Revision() != route.Revision() {
		t.Errorf("lease of r1 rewritten while idle: revision %d, then %v", route.Revision(), e)
	}
	if e, ok := leaseEntry(t, n, "instance.a"); !ok || e.Revision() <= beat.Revision() {
		t.Errorf("instance key of a not renewed: revision %d, then %v", beat.Revision(), e)
	}
	if _, ok := a.rec.spec("r1"); !ok {
		t.Error("r1 stopped running")
	}
}

// TestLeaseOfGoneReplica: a lease whose owner's heartbeat lives is left alone; once the
// heartbeat key expires (the owner was killed), another replica takes the route.
func TestLeaseOfGoneReplica(t *testing.T) {
	n := startBusNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A ghost replica: its lease of r1 and a heartbeat with a 3 s TTL, never renewed.
	if _, err := n.st.Leases.Create(ctx, "route.r1", []byte(`{"owner":"ghost"}`)); err != nil {
		t.Fatalf("Create(route.r1) = %v", err)
	}
	if _, err := n.js.Publish(ctx, "$KV."+busNames.LeasesBucket()+".instance.ghost", []byte(`{}`), jetstream.WithMsgTTL(3*time.Second)); err != nil {
		t.Fatalf("publish the ghost's heartbeat = %v", err)
	}
	a := startService(t, replicaConfig(t, "nats://"+n.addr, "a"), nil, nil)
	a.ok("mail.control.connection.put", imapConnection("c1"))
	a.ok("mail.control.route.put", inboxRoute("r1", "c1"))
	a.ok("mail.control.route.put", inboxRoute("r2", "c1"))
	a.rec.expect(t, "start r2", 5*time.Second) // a free route is taken at once

	for {
		_, alive := leaseEntry(t, n, "instance.ghost")
		if _, ok := a.rec.spec("r1"); ok && alive {
			t.Fatal("r1 taken while its owner's heartbeat lives")
		}
		if !alive {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	gone := time.Now()
	a.rec.expect(t, "start r1", bus.LeaseTTL)
	t.Logf("r1 taken %s after its owner's heartbeat expired", time.Since(gone).Round(time.Millisecond))
	if e, ok := leaseEntry(t, n, "route.r1"); !ok || !bytes.Contains(e.Value(), []byte(`"owner":"a"`)) {
		t.Errorf("lease of r1 = %v, want owner a", e)
	}

	// Deleting a route whose lease names a replica that is gone leaves no lease behind (a
	// disabled route, which no replica takes over).
	if _, err := n.st.Leases.Put(ctx, "route.r3", []byte(`{"owner":"ghost"}`)); err != nil {
		t.Fatalf("Put(route.r3) = %v", err)
	}
	r3 := inboxRoute("r3", "c1")
	r3["disabled"] = true
	a.ok("mail.control.route.put", r3)
	a.ok("mail.control.route.delete", map[string]string{"name": "r3"})
	waitUntil(t, 5*time.Second, "the lease of deleted r3 gone", func() bool {
		_, ok := leaseEntry(t, n, "route.r3")
		return !ok
	})
	a.rec.quiet(t, 100*time.Millisecond) // r3 never ran
}

// TestLeaseLapseStopsRoutes: a replica cut off from NATS stops its routes once its
// heartbeat has gone unacknowledged for a while, before its instance key can expire and
// another replica take them; when NATS is back it takes them again.
func TestLeaseLapseStopsRoutes(t *testing.T) {
	n := startBusNATS(t)
	a := startService(t, replicaConfig(t, "nats://"+n.addr, "a"), nil, nil)
	a.ok("mail.control.connection.put", imapConnection("c1"))
	a.ok("mail.control.route.put", inboxRoute("r1", "c1"))
	a.rec.expect(t, "start r1", 5*time.Second)

	down := time.Now()
	back := make(chan time.Time, 1)
	go func() {
		n.restart(t, 2*bus.LeaseTTL/3+2*time.Second)
		back <- time.Now()
	}()
	a.rec.expect(t, "stop r1", bus.LeaseTTL)
	stopped := time.Now()
	select {
	case <-back:
		t.Fatal("r1 stopped only after NATS came back")
	default:
	}
	t.Logf("r1 stopped %s after NATS went down", stopped.Sub(down).Round(time.Millisecond))
	up := <-back
	a.rec.expect(t, "start r1", 2*bus.LeaseTTL)
	t.Logf("r1 running again %s after NATS came back", time.Since(up).Round(time.Millisecond))
}

// TestLeasesBucketOldLayout: a leases bucket of the earlier layout (keys aged out by the
// bucket's MaxAge, instance keys without a TTL of their own) is made anew, so that no
// stale instance key lives forever once the bucket has no MaxAge.
func TestLeasesBucketOldLayout(t *testing.T) {
	n := startBusNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.js.DeleteKeyValue(ctx, busNames.LeasesBucket()); err != nil {
		t.Fatalf("DeleteKeyValue = %v", err)
	}
	old, err := n.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: busNames.LeasesBucket(), TTL: bus.LeaseTTL})
	if err != nil {
		t.Fatalf("CreateKeyValue(old layout) = %v", err)
	}
	if _, err := old.Put(ctx, "instance.old", []byte(`{}`)); err != nil {
		t.Fatalf("Put = %v", err)
	}
	st, err := bus.EnsureStorage(ctx, n.js, busNames, 1, time.Minute)
	if err != nil {
		t.Fatalf("EnsureStorage() = %v", err)
	}
	status, err := st.Leases.Status(ctx)
	if err != nil {
		t.Fatalf("Status() = %v", err)
	}
	if status.TTL() != 0 || status.LimitMarkerTTL() != bus.LeaseTTL {
		t.Errorf("leases bucket TTL %s, limit marker TTL %s; want 0 and %s", status.TTL(), status.LimitMarkerTTL(), bus.LeaseTTL)
	}
	if _, err := st.Leases.Get(ctx, "instance.old"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("Get(instance.old) = %v, want not found", err)
	}
	// Made once: a second start keeps the bucket and its keys.
	if _, err := st.Leases.Put(ctx, "instance.new", []byte(`{}`)); err != nil {
		t.Fatalf("Put = %v", err)
	}
	if _, err := bus.EnsureStorage(ctx, n.js, busNames, 1, time.Minute); err != nil {
		t.Fatalf("EnsureStorage() again = %v", err)
	}
	if _, err := st.Leases.Get(ctx, "instance.new"); err != nil {
		t.Errorf("Get(instance.new) after a second start = %v", err)
	}
}

// TestLeaseRestartSmallerShare: a replica restarted under its id finds more leases in its
// name than its share; it takes back its share and releases the rest at once, which the
// other replica then takes (it would not take a lease whose owner lives).
func TestLeaseRestartSmallerShare(t *testing.T) {
	n := startBusNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	routes := []string{"r1", "r2", "r3", "r4"}
	// a's leases from before its restart, and its heartbeat, still alive.
	for _, r := range routes {
		if _, err := n.st.Leases.Create(ctx, "route."+r, []byte(`{"owner":"a"}`)); err != nil {
			t.Fatalf("Create(route.%s) = %v", r, err)
		}
	}
	if _, err := n.js.Publish(ctx, "$KV."+busNames.LeasesBucket()+".instance.a", []byte(`{}`), jetstream.WithMsgTTL(time.Minute)); err != nil {
		t.Fatalf("publish a's heartbeat = %v", err)
	}
	recs := map[string]*recorder{"a": newRecorder(), "b": newRecorder()}
	b := startService(t, replicaConfig(t, "nats://"+n.addr, "b"), recs["b"], nil)
	b.ok("mail.control.connection.put", imapConnection("c1"))
	for _, r := range routes {
		b.ok("mail.control.route.put", inboxRoute(r, "c1"))
	}
	recs["b"].quiet(t, time.Second) // every lease is a's, and a lives

	startService(t, replicaConfig(t, "nats://"+n.addr, "a"), recs["a"], nil)
	waitUntil(t, bus.LeaseTTL, "every route running on one replica, 2 each", func() bool {
		return runningSplit(routes, recs, map[string]int{"a": 2, "b": 2})
	})
}
