package supervisor_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/connector/retry"
	"github.com/mailbus/mailbus/connector/secrets"
	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/connector/supervisor"
	"github.com/mailbus/mailbus/schemas"
)

// The tests here run the supervisor on its own, on an embedded NATS server with JetStream,
// with a worker factory that records what it starts. A whole replica (connector.New) with
// several replicas sharing routes is tested in package connector.

// workers is a worker factory that records the workers it made and fails a route's worker
// with the error in fail.
type workers struct {
	mu      sync.Mutex
	running map[string]bool
	fail    map[string]error
}

func (w *workers) factory(_ *engine.Runtime, spec engine.RouteSpec) (engine.Worker, error) {
	return worker{w, spec.Route.Name}, nil
}

type worker struct {
	w    *workers
	name string
}

func (k worker) Run(ctx context.Context) error {
	k.w.mu.Lock()
	err := k.w.fail[k.name]
	if err == nil {
		k.w.running[k.name] = true
	}
	k.w.mu.Unlock()
	if err != nil {
		return err
	}
	<-ctx.Done()
	k.w.mu.Lock()
	delete(k.w.running, k.name)
	k.w.mu.Unlock()
	return nil
}

func (w *workers) isRunning(name string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.running[name]
}

// replica is one supervisor and what it works with.
type replica struct {
	rt     *engine.Runtime
	leases *supervisor.Leases
	done   chan error
	stop   context.CancelFunc
}

func startReplica(t *testing.T, n *testkit.NATS, instance string, w *workers) *replica {
	t.Helper()
	rt := &engine.Runtime{Names: n.Names, NC: n.NC, JS: n.JS, Storage: n.Storage, Instance: instance,
		Status: engine.NewStatusBoard(), Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
	ls := supervisor.NewLeases(n.JS, n.Storage.Leases, instance, rt.Status)
	sup := supervisor.New(supervisor.Config{
		Runtime: rt, Definitions: n.Storage.Config, Sealer: &secrets.Sealer{},
		Factories: map[string]engine.WorkerFactory{schemas.TypeIMAP: w.factory},
		Leases:    ls,
	})
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{rt: rt, leases: ls, done: make(chan error, 1), stop: cancel}
	go func() { r.done <- sup.Run(ctx) }()
	t.Cleanup(func() { r.shutdown(t) })
	select {
	case <-sup.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("the supervisor did not read the definitions")
	}
	return r
}

func (r *replica) shutdown(t *testing.T) {
	t.Helper()
	r.stop()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
		r.done <- nil
	case <-time.After(20 * time.Second):
		t.Fatal("Run() did not return after its context ended")
	}
}

// waitStatus waits until the route's status on r says state.
func (r *replica) waitStatus(t *testing.T, route, state string) schemas.RouteStatus {
	t.Helper()
	var st schemas.RouteStatus
	if !testkit.WaitFor(10*time.Second, func() bool { st, _ = r.rt.Status.Get(route); return st.State == state }) {
		t.Fatalf("route %s is %q (%s), want %q", route, st.State, st.LastError, state)
	}
	return st
}

// elsewhere reads route statuses as the control service of replica b does, which runs no
// route itself.
func elsewhere(n *testkit.NATS) supervisor.Statuses {
	board := engine.NewStatusBoard()
	return supervisor.Statuses{Board: board, Leases: supervisor.NewLeases(n.JS, n.Storage.Leases, "b", board)}
}

// leaseOwner is the owner named in a route's lease; "" without one.
func leaseOwner(s supervisor.Statuses, route string) string {
	st, _ := s.Remote(context.Background(), route)
	return st.Owner
}

// storeWithConnection starts the storage and puts IMAP connection c in the store.
func storeWithConnection(t *testing.T) (*testkit.NATS, *store.Store) {
	t.Helper()
	n := testkit.StartStorage(t)
	defs := store.New(n.Storage.Config, &secrets.Sealer{})
	if _, err := defs.PutConnection(context.Background(), schemas.Connection{Name: "c", Type: schemas.TypeIMAP, Host: "imap.example.com", Username: "bot", Password: "pw"}); err != nil {
		t.Fatalf("PutConnection() = %v", err)
	}
	return n, defs
}

// TestSupervisorRunsRoutes: the supervisor runs the worker of a route put in the store
// under the route's lease, reports it running here and, through the lease, to the other
// replicas; it stops the worker when the route is disabled, and at shutdown releases the
// lease and its heartbeat.
func TestSupervisorRunsRoutes(t *testing.T) {
	n, defs := storeWithConnection(t)
	ctx := context.Background()
	w := &workers{running: map[string]bool{}, fail: map[string]error{}}
	a := startReplica(t, n, "a", w)

	if _, err := defs.PutRoute(ctx, schemas.Route{Name: "r", Connection: "c"}); err != nil {
		t.Fatalf("PutRoute() = %v", err)
	}
	st := a.waitStatus(t, "r", schemas.StateRunning)
	if st.Owner != "a" || !w.isRunning("r") || !a.leases.Holding("r") {
		t.Fatalf("route r: status %+v, worker running %v, lease held %v", st, w.isRunning("r"), a.leases.Holding("r"))
	}
	// Another replica's control service sees the status a wrote into the lease.
	other := elsewhere(n)
	if owner := leaseOwner(other, "r"); owner != "a" {
		t.Fatalf("lease of r names %q, want a", owner)
	}
	var seen schemas.RouteStatus
	if !testkit.WaitFor(10*time.Second, func() bool {
		seen, _ = other.Remote(ctx, "r")
		return seen.Owner == "a" && seen.State == schemas.StateRunning
	}) {
		t.Fatalf("the lease of r shows %+v to another replica, want running on a", seen)
	}

	r, err := defs.GetRoute(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	r.Disabled = true
	if _, err := defs.PutRoute(ctx, r); err != nil {
		t.Fatalf("PutRoute(disabled) = %v", err)
	}
	a.waitStatus(t, "r", schemas.StateDisabled)
	if w.isRunning("r") {
		t.Fatal("the worker of a disabled route still runs")
	}

	r.Disabled = false
	r.Revision = 0
	if _, err := defs.PutRoute(ctx, r); err != nil {
		t.Fatalf("PutRoute(enabled) = %v", err)
	}
	a.waitStatus(t, "r", schemas.StateRunning)
	a.shutdown(t)
	if w.isRunning("r") {
		t.Fatal("the worker still runs after the supervisor returned")
	}
	if owner := leaseOwner(other, "r"); owner != "" {
		t.Fatalf("lease of r names %q after a clean shutdown, want it released", owner)
	}
	if _, err := n.Storage.Leases.Get(ctx, "instance.a"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("instance key of a after a clean shutdown: %v, want it gone", err)
	}
}

// TestSupervisorPermanentFailure: a worker failure retrying soon cannot fix (marked
// permanent, or a certificate that does not verify) parks the route in state error with
// the failure; any other is retried soon (backoff).
func TestSupervisorPermanentFailure(t *testing.T) {
	n, defs := storeWithConnection(t)
	ctx := context.Background()
	w := &workers{running: map[string]bool{}, fail: map[string]error{
		"refused": fmt.Errorf("dial: %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}),
		"flaky":   errors.New("connection reset"),
		"marked":  retry.Permanent(errors.New("bad mailbox")),
	}}
	a := startReplica(t, n, "a", w)
	for i, name := range []string{"refused", "flaky", "marked"} {
		if _, err := defs.PutRoute(ctx, schemas.Route{Name: name, Connection: "c", Mailbox: "m" + string(rune('a'+i))}); err != nil {
			t.Fatalf("PutRoute(%s) = %v", name, err)
		}
	}
	if st := a.waitStatus(t, "refused", schemas.StateError); !strings.HasPrefix(st.LastError, "dial: tls: failed to verify certificate: x509: ") {
		t.Errorf("route refused: lastError %q", st.LastError)
	}
	a.waitStatus(t, "marked", schemas.StateError)
	if st := a.waitStatus(t, "flaky", schemas.StateBackoff); st.LastError != "connection reset" {
		t.Errorf("route flaky: lastError %q", st.LastError)
	}
}
