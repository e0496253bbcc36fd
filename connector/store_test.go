package connector_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/schemas"
)

// TestConcurrentPuts runs two replicas on one server and has two clients put the same route
// (and the same connection, without its password) 20 times each at once: every put must
// succeed and be stored, and the kept password must survive.
func TestConcurrentPuts(t *testing.T) {
	s1 := startService(t, svcConfig(t), nil, nil)
	cfg2 := svcConfig(t)
	cfg2.NATSURL, cfg2.Instance = s1.c.ClientURL(), "test2"
	s2 := startService(t, cfg2, nil, nil)

	s1.ok("mail.control.connection.put", imapConnection("c1"))
	first := s1.ok("mail.control.route.put", inboxRoute("r1", "c1")).Route.Revision

	ctx := context.Background()
	w, err := s1.kv.WatchFiltered(ctx, []string{"route.r1", "connection.c1"}, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	defer w.Stop()

	const n = 20
	var wg sync.WaitGroup
	errs := make(chan string, 4*n)
	for _, s := range []*testService{s1, s2} {
		wg.Go(func() {
			for i := range n {
				r, msg := s.request("mail.control.route.put", map[string]any{
					"name": "r1", "connection": "c1", "description": fmt.Sprintf("%s-%d", s.cfg.Instance, i),
				})
				if !r.OK {
					errs <- string(msg.Data)
				}
			}
		})
		wg.Go(func() {
			for i := range n {
				c := imapConnection("c1")
				delete(c, "password")
				c["description"] = fmt.Sprintf("%s-%d", s.cfg.Instance, i)
				r, msg := s.request("mail.control.connection.put", c)
				if !r.OK || !r.Connection.PasswordSet {
					errs <- string(msg.Data)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("concurrent put: %s", e)
	}

	counts := map[string]int{}
	// Generous: under the race detector with the other packages' tests running, the
	// watch's deliveries can lag well behind the puts' replies.
	timeout := time.After(30 * time.Second)
	for counts["route.r1"]+counts["connection.c1"] < 4*n {
		select {
		case e := <-w.Updates():
			if e != nil {
				counts[e.Key()]++
			}
		case <-timeout:
			t.Fatalf("stored updates %v, want %d of each", counts, 2*n)
		}
	}
	if counts["route.r1"] != 2*n || counts["connection.c1"] != 2*n {
		t.Errorf("stored updates %v, want %d of each", counts, 2*n)
	}

	r := s1.ok("mail.control.route.get", map[string]string{"name": "r1"}).Route
	if r.Description != "test-19" && r.Description != "test2-19" {
		t.Errorf("final description %q, want one of the last puts", r.Description)
	}
	if !strings.Contains(string(s1.raw("connection.c1")), "s3cret-c1") {
		t.Error("the kept password was lost")
	}

	// A put that names a revision it read before the others wrote is refused.
	s1.fail("mail.control.route.put", map[string]any{"name": "r1", "connection": "c1", "revision": first}, "conflict", "revision")
	s1.ok("mail.control.route.put", map[string]any{"name": "r1", "connection": "c1", "revision": r.Revision})
}

func TestDefinitionsSurviveRestart(t *testing.T) {
	cfg := svcConfig(t)
	s := startService(t, cfg, nil, nil)
	s.ok("mail.control.connection.put", imapConnection("c1"))
	want := s.ok("mail.control.route.put", inboxRoute("r1", "c1")).Route
	s.rec.expect(t, "start r1", reactWithin)
	s.c.Close()
	s.rec.expect(t, "stop r1", reactWithin)

	// Same data directory: the embedded server starts again on the same store.
	s = startService(t, cfg, nil, nil)
	s.rec.expect(t, "start r1", reactWithin)
	got := s.ok("mail.control.route.get", map[string]string{"name": "r1"}).Route
	if got.Revision != want.Revision || got.Connection != "c1" {
		t.Errorf("route after restart = %+v, want %+v", got, want)
	}
	if c := s.ok("mail.control.connection.get", map[string]string{"name": "c1"}).Connection; !c.PasswordSet {
		t.Errorf("connection after restart = %+v", c)
	}
	if spec, _ := s.rec.spec("r1"); spec.Connection.Password != "s3cret-c1" {
		t.Errorf("worker password after restart = %q", spec.Connection.Password)
	}
}

// TestNATSServerRestart restarts the NATS server under a running replica: it reconnects,
// serves commands again and follows definition changes.
func TestNATSServerRestart(t *testing.T) {
	dir := t.TempDir()
	srv, err := bus.StartEmbedded("127.0.0.1:-1", dir)
	if err != nil {
		t.Fatalf("StartEmbedded() = %v", err)
	}
	t.Cleanup(func() { srv.Shutdown() })
	addr := srv.Addr().(*net.TCPAddr)

	cfg := svcConfig(t)
	cfg.NATSURL = srv.ClientURL()
	s := startService(t, cfg, nil, nil)
	s.ok("mail.control.connection.put", imapConnection("c1"))
	s.ok("mail.control.route.put", inboxRoute("r1", "c1"))
	s.rec.expect(t, "start r1", reactWithin)

	srv.Shutdown()
	srv.WaitForShutdown()
	srv, err = bus.StartEmbedded(fmt.Sprintf("127.0.0.1:%d", addr.Port), dir)
	if err != nil {
		t.Fatalf("StartEmbedded() again = %v", err)
	}

	// Commands are served again once both clients are back.
	if !testkit.WaitFor(20*time.Second, func() bool {
		var msg *nats.Msg
		msg, err = s.nc.Request("mail.control.route.get", []byte(`{"name":"r1"}`), time.Second)
		return err == nil && strings.Contains(string(msg.Data), `"ok":true`)
	}) {
		t.Fatalf("no answer after the server restart: %v", err)
	}
	s.ok("mail.control.route.put", inboxRoute("r2", "c1"))
	s.rec.expect(t, "start r2", reactWithin)
	s.waitStatus("r2", reactWithin, func(st schemas.RouteStatus) bool { return st.State == schemas.StateRunning })
	// r1 kept running through the restart: its spec did not change.
	s.rec.quiet(t, 300*time.Millisecond)
}
