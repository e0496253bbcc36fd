package connector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/schemas"
)

// replicaConfig is a test replica connected to the NATS server at url.
func replicaConfig(t *testing.T, url, instance string) connector.Config {
	cfg := svcConfig(t)
	cfg.NATSURL, cfg.Instance = url, instance
	return cfg
}

// runningOn lists, per route, the recorders running it.
func runningOn(routes []string, recs map[string]*recorder) map[string][]string {
	on := make(map[string][]string)
	for _, r := range routes {
		for id, rec := range recs {
			if _, ok := rec.spec(r); ok {
				on[r] = append(on[r], id)
			}
		}
	}
	return on
}

// runningSplit reports whether every route runs on exactly one recorder, as many on each
// as want says.
func runningSplit(routes []string, recs map[string]*recorder, want map[string]int) bool {
	count := map[string]int{}
	on := runningOn(routes, recs)
	for _, r := range routes {
		if len(on[r]) != 1 {
			return false
		}
		count[on[r][0]]++
	}
	return maps.Equal(count, want)
}

// TestReplicasShareRoutes runs two replicas on one NATS server: each route runs on exactly
// one, they split the routes evenly, route.status names the owner whichever replica
// answers, and a clean shutdown hands the routes over at once.
func TestReplicasShareRoutes(t *testing.T) {
	n := startBusNATS(t)
	url := "nats://" + n.addr
	recs := map[string]*recorder{"a": newRecorder(), "b": newRecorder()}
	cfgA := replicaConfig(t, url, "a")
	cfgA.HTTPAddr = "127.0.0.1:0"
	a := startService(t, cfgA, recs["a"], nil)
	b := startService(t, replicaConfig(t, url, "b"), recs["b"], nil)
	routes := []string{"r1", "r2", "r3", "r4"}

	// No route may ever run on both replicas: sampled all through the test.
	var twice atomic.Value
	stopSampling := make(chan struct{})
	var sampling sync.WaitGroup
	sampling.Go(func() {
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(2 * time.Millisecond):
			}
			for r, on := range runningOn(routes, recs) {
				if len(on) > 1 {
					twice.Store(fmt.Sprintf("route %s runs on %v", r, on))
				}
			}
		}
	})
	defer func() {
		close(stopSampling)
		sampling.Wait()
		if v := twice.Load(); v != nil {
			t.Error(v)
		}
	}()

	a.ok("mail.control.connection.put", imapConnection("c1"))
	for _, r := range routes {
		a.ok("mail.control.route.put", inboxRoute(r, "c1"))
	}
	// A route not taken at once (the other replica held its share) is taken by the retry
	// tick, so the split settles within one retry.
	waitUntil(t, bus.LeaseTTL, "every route running on one replica, 2 each", func() bool {
		return runningSplit(routes, recs, map[string]int{"a": 2, "b": 2})
	})
	on := runningOn(routes, recs)
	for _, r := range routes {
		for _, s := range []*testService{a, b} {
			// A remote status is as fresh as the owner's last lease write.
			s.waitStatus(r, time.Second, func(st schemas.RouteStatus) bool {
				return st.Owner == on[r][0] && st.State == schemas.StateRunning
			})
		}
	}

	// a's metrics show the leases it holds, parsed with the Prometheus text parser.
	var want, got []string
	for _, r := range routes {
		if on[r][0] == "a" {
			want = append(want, r+"=1")
		}
	}
	for _, m := range testkit.Scrape(t, httpAddr(t, a.log))["mailbus_route_lease_owned"].GetMetric() {
		got = append(got, fmt.Sprintf("%s=%g", m.GetLabel()[0].GetValue(), m.GetGauge().GetValue()))
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("mailbus_route_lease_owned of a = %v, want %v", got, want)
	}

	// A clean shutdown releases b's leases; a takes them at once.
	closed := time.Now()
	b.c.Close()
	waitUntil(t, time.Second, "every route running on a", func() bool {
		on := runningOn(routes, recs)
		for _, r := range routes {
			if len(on[r]) != 1 || on[r][0] != "a" {
				return false
			}
		}
		return true
	})
	t.Logf("handover after a clean shutdown took %s", time.Since(closed).Round(time.Millisecond))
	for _, r := range routes {
		if st := a.status(r); st.Owner != "a" {
			t.Errorf("route.status %s after the handover: owner %q, want a", r, st.Owner)
		}
	}
}

// httpAddr finds the address the replica's HTTP server listens on in its log.
func httpAddr(t *testing.T, log *svcLog) string {
	t.Helper()
	for line := range strings.Lines(log.String()) {
		var e struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "http listening" {
			return e.Addr
		}
	}
	t.Fatalf("no http listening in the log:\n%s", log)
	return ""
}

// TestReplicaChild is the replica process of TestReplicaFailoverSIGKILL and
// TestReplicasThirtyRoutes; it runs only there.
func TestReplicaChild(t *testing.T) {
	if os.Getenv(childEnv) != "replica" {
		t.Skip("runs as the child of TestReplicaFailoverSIGKILL")
	}
	id := os.Getenv("MAILBUS_TEST_INSTANCE")
	if id == "" {
		id = "child"
	}
	cfg := replicaConfig(t, os.Getenv("MAILBUS_TEST_NATS_URL"), id)
	c, err := connector.New(cfg, imapTestLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	c.Run(context.Background()) // until killed
}

// TestReplicaFailoverSIGKILL kills the replica running an IMAP route mid-ingest, without a
// goodbye: the other replica takes the route over within 2×LeaseTTL and continues from the
// checkpoint, with no message lost and none published twice.
func TestReplicaFailoverSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	const initial, more = 1200, 60
	n := startBusNATS(t)
	srv := startMemIMAPMail(t, initial, bigMail)
	url := "nats://" + n.addr
	cmd := exec.Command(os.Args[0], "-test.run=^TestReplicaChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=replica", "MAILBUS_TEST_NATS_URL="+url)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	// Define the route through the child's control service, once it answers.
	host, port, _ := net.SplitHostPort(srv.addr)
	conn, _ := json.Marshal(map[string]any{
		"name": "mem", "type": "imap", "host": host, "port": json.Number(port), "encryption": "none",
		"username": "alice", "password": "secret", "pollInterval": "1s",
	})
	route := "failover"
	waitUntil(t, 30*time.Second, "child replica serving commands", func() bool {
		m, err := n.nc.Request("mail.control.connection.put", conn, time.Second)
		return err == nil && m.Header.Get("Nats-Service-Error-Code") == ""
	})
	rdef, _ := json.Marshal(map[string]any{"name": route, "connection": "mem", "bus": 1})
	if m, err := n.nc.Request("mail.control.route.put", rdef, 5*time.Second); err != nil || m.Header.Get("Nats-Service-Error-Code") != "" {
		t.Fatalf("route.put = %v %v", m, err)
	}
	stream, subject := busNames.BusStream(1), busNames.BusSubject(1, route)
	waitUntil(t, 30*time.Second, "child publishing", func() bool { return storedCount(t, n.js, stream, subject) > 0 })

	// The in-process replica joins: one route for two replicas, so it stays with the child.
	log := &svcLog{}
	p := runService(t, replicaConfig(t, url, "parent"), log)
	if st := p.status(route); st.Owner != "child" {
		t.Fatalf("route.status before the kill = %+v, want owner child", st)
	}
	done := trickle(t, srv, initial+1, more, 30*time.Millisecond)

	time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	cmd.Wait()
	killed := time.Now()
	atKill := storedCount(t, n.js, stream, subject)
	t.Logf("killed the child with %d events stored", atKill)
	waitUntil(t, 2*bus.LeaseTTL, "the route publishing again on the parent", func() bool {
		return p.status(route).Owner == "parent" && storedCount(t, n.js, stream, subject) > atKill
	})
	t.Logf("failover took %s", time.Since(killed).Round(time.Millisecond))
	done()
	verifyExact(t, n, srv, route, initial+more, 120*time.Second)
	if t.Failed() {
		t.Logf("parent log:\n%s", tail(log.String()))
	}
}
