//go:build unix

package connector_test

import (
	"context"
	"io"
	"maps"
	"net"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/dovecottest"
	"github.com/mailbus/mailbus/connector/engine"
	imapsrc "github.com/mailbus/mailbus/connector/imap"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/schemas"
)

// runtimeCatcher is the IMAP worker factory, keeping the Runtime the Connector gives its
// workers, so that a test can read the route status on the replica itself while NATS,
// and with it route.status, is down.
type runtimeCatcher struct {
	mu sync.Mutex
	rt *engine.Runtime
}

func (c *runtimeCatcher) factory(rt *engine.Runtime, spec engine.RouteSpec) (engine.Worker, error) {
	c.mu.Lock()
	c.rt = rt
	c.mu.Unlock()
	return imapsrc.NewWorker(rt, spec)
}

func (c *runtimeCatcher) status(route string) (schemas.RouteStatus, bool) {
	c.mu.Lock()
	rt := c.rt
	c.mu.Unlock()
	if rt == nil {
		return schemas.RouteStatus{}, false
	}
	return rt.Status.Get(route)
}

// plainOutage reports whether a status error names an outage in plain words, without the
// socket's own words.
func plainOutage(lastError string) bool {
	for _, raw := range []string{"tcp", "use of closed", "EOF", "nats:"} {
		if strings.Contains(lastError, raw) {
			return false
		}
	}
	return strings.HasPrefix(lastError, "the NATS server is unreachable") ||
		strings.HasPrefix(lastError, "the IMAP server closed the connection") ||
		strings.HasPrefix(lastError, "the IMAP server is unreachable")
}

// eventIDs reads the ce-id header of every event on subject (an ordered consumer, headers
// only: 20,000 GetMsg round trips would take longer than the ingest) and returns the count
// of each.
func eventIDs(t *testing.T, js jetstream.JetStream, stream, subject string) (total int, ids map[string]int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	want := int(storedCount(t, js, stream, subject))
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject}, HeadersOnly: true,
	})
	if err != nil {
		t.Fatalf("OrderedConsumer() = %v", err)
	}
	ids = map[string]int{}
	for total < want {
		batch, err := c.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatalf("Fetch() = %v", err)
		}
		n := 0
		for m := range batch.Messages() {
			ids[m.Headers().Get("ce-id")]++
			total++
			n++
		}
		if n == 0 {
			t.Fatalf("read %d of %d events: no more come", total, want)
		}
	}
	return total, ids
}

// problems are the warnings and errors of a JSON log.
func problems(log string) string {
	var b strings.Builder
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// dumpGoroutines writes every goroutine's stack to the test log: the trace of a stall.
func dumpGoroutines(t *testing.T) {
	var b strings.Builder
	pprof.Lookup("goroutine").WriteTo(&b, 1)
	t.Logf("goroutines:\n%s", b.String())
}

// killMail is a message of about 1 KB for the NATS kill tests.
func killMail(i int) []byte {
	pad := "X-Pad: " + strings.Repeat("p", 64) + "\r\n"
	return append(testMail(i, pad), strings.Repeat("line of body text for padding\r\n", 24)...)
}

// TestIMAPFaultNATSKill kills the NATS server with SIGKILL twice while a replica reads
// 20,000 messages from go-imap's in-memory server, and starts it again on its store
// (see natsKill).
func TestIMAPFaultNATSKill(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	srv := startMemIMAP(t, memCaps...)
	for i := 1; i <= natsKillMail; i++ {
		srv.append(t, "INBOX", killMail(i))
	}
	natsKill(t, imapConn(srv.addr, schemas.EncryptionNone), dialPlain(srv.addr))
}

// TestIMAPFaultNATSKillDovecot is TestIMAPFaultNATSKill against Dovecot
// (MAILBUS_TEST_DOVECOT=1), over STARTTLS.
func TestIMAPFaultNATSKillDovecot(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	srv := dovecottest.Start(t, nil)
	for i := 1; i <= natsKillMail; i++ {
		srv.Deliver(t, "alice", killMail(i))
	}
	natsKill(t, imapConn(srv.Addr, schemas.EncryptionTLS), dovecotTLS(srv), connector.WithTLSRootCAs(srv.CA))
}

// natsKillMail is how many messages the NATS kill tests read.
const natsKillMail = 20000

// natsKill runs a replica (a whole Connector on a NATS server process) with a route on
// conn, whose INBOX holds natsKillMail messages, and kills the NATS server with SIGKILL
// twice while the route reads them, starting it again on its store: once for a moment,
// once for longer than the replica's heartbeat grace (its workers stop and are taken
// back). While NATS is down the route's status says so in plain words; once it is back,
// the route makes progress again within a few seconds; at the end every message has
// exactly one event and is marked read.
func natsKill(t *testing.T, conn schemas.Connection, dial func() (*imapclient.Client, error), opts ...connector.Option) {
	const total = natsKillMail
	n := connector.StartNATSProcess(t)
	cfg := svcConfig(t)
	cfg.NATSURL = n.URL()
	cfg.DedupWindow = 10 * time.Minute
	catch := &runtimeCatcher{}
	opts = append(opts, connector.WithWorkers(map[string]engine.WorkerFactory{schemas.TypeIMAP: catch.factory}))
	svc := runService(t, cfg, nil, opts...)
	route := imapRoute("natskill", schemas.SelectUnseen, schemas.AfterMarkRead)
	route.MoveTo = ""
	svc.ok("mail.control.connection.put", conn)
	svc.ok("mail.control.route.put", route)

	stream, subject := busNames.BusStream(route.Bus), busNames.BusSubject(route.Bus, route.Name)
	stored := func() uint64 { return storedCount(t, svc.js, stream, subject) }
	// waitStored waits for want events; a stall ends the test with its trace.
	waitStored := func(want uint64, within time.Duration) {
		t.Helper()
		if !testkit.WaitFor(within, func() bool { return stored() >= want }) {
			st, _ := catch.status(route.Name)
			dumpGoroutines(t)
			t.Fatalf("%d of %d events after %s (status %+v); log:\n%s", stored(), want, within, st, problems(svc.log.String()))
		}
	}
	for i, fault := range []struct {
		at   uint64
		down time.Duration
	}{
		{at: 3000, down: time.Second},
		{at: 9000, down: 7 * time.Second}, // beyond leaseGrace: the workers stop
	} {
		waitStored(fault.at, 3*time.Minute)
		n.Kill()
		killed := time.Now()
		// While it is down the route says so, in plain words, to the end.
		time.Sleep(fault.down)
		st, _ := catch.status(route.Name)
		seen := st.LastError
		if !plainOutage(seen) {
			t.Errorf("kill %d: status after %s without NATS = %+v, want lastError in plain words", i+1, time.Since(killed).Round(time.Millisecond), st)
		}
		n.Start()
		back := time.Now()
		base := stored()
		// Within a few seconds of NATS being back, mail flows again: the client reconnects
		// (reconnectWait plus jitter: up to 3 s), the heartbeat is acknowledged, the batch
		// cut short is published again. A correctness bound, not a speed measure: the
		// stall this guards against lasted minutes.
		deadline := back.Add(15 * time.Second)
		for stored() < base+100 {
			if time.Now().After(deadline) {
				st, _ := catch.status(route.Name)
				dumpGoroutines(t)
				t.Fatalf("kill %d: no progress in 15s after NATS was back (%d events stored; status %+v); log:\n%s", i+1, stored(), st, problems(svc.log.String()))
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("kill %d at %d events, down %s: status said %q; progress %.1fs after NATS was back",
			i+1, base, fault.down, seen, time.Since(back).Seconds())
	}

	waitStored(total, 5*time.Minute)
	svc.waitStatus(route.Name, 2*time.Minute, func(st schemas.RouteStatus) bool {
		return st.State == schemas.StateIdle && st.LastUid == total
	})
	got, ids := eventIDs(t, svc.js, stream, subject)
	if got != total || len(ids) != total {
		t.Errorf("%d events, %d distinct, want %d of each", got, len(ids), total)
	}
	for id, c := range ids {
		uid, err := strconv.Atoi(id[strings.LastIndex(id, "/")+1:])
		if c != 1 || err != nil || uid < 1 || uid > total {
			t.Errorf("event %s: %d times", id, c)
		}
	}
	unseen := 0
	for _, m := range listMailbox(t, dial, "INBOX") {
		if !hasIMAPFlag(m.flags, imap.FlagSeen) {
			unseen++
		}
	}
	if unseen != 0 {
		t.Errorf("%d messages not marked read", unseen)
	}
}

// switchProxy forwards TCP connections to target. down closes them all and stops
// listening, as a server that goes away; up listens on the same address again.
type switchProxy struct {
	t      *testing.T
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

func startSwitchProxy(t *testing.T, target string) *switchProxy {
	p := &switchProxy{t: t, addr: "127.0.0.1:0", target: target, conns: map[net.Conn]bool{}}
	p.up()
	t.Cleanup(p.down)
	return p
}

func (p *switchProxy) up() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("net.Listen(%s) = %v", p.addr, err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
}

func (p *switchProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *switchProxy) serve(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil { // went down meanwhile
		p.mu.Unlock()
		client.Close()
		server.Close()
		return
	}
	p.conns[client], p.conns[server] = true, true
	p.mu.Unlock()
	go func() { io.Copy(server, client); server.Close() }()
	io.Copy(client, server)
	client.Close()
}

// TestIMAPStatusServerDown takes the IMAP server away from an idle route and brings it
// back: while it is away, the route's status says so in plain words, not in the socket's
// ("use of closed network connection"); once it is back, the route takes the new mail and
// its error clears.
func TestIMAPStatusServerDown(t *testing.T) {
	n := startBusNATS(t)
	srv := startMemIMAPMail(t, 3, smallMail)
	proxy := startSwitchProxy(t, srv.addr)
	rt := newIMAPRuntime(t, n)
	route := imapRoute("imapdown", schemas.SelectUnseen, schemas.AfterMarkRead)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(proxy.addr, schemas.EncryptionNone)})
	waitRouteIdle(t, rt, route.Name, 3)

	proxy.down()
	seen := map[string]bool{}
	for start := time.Now(); time.Since(start) < 4*time.Second; time.Sleep(5 * time.Millisecond) {
		if st, _ := rt.Status.Get(route.Name); st.LastError != "" {
			seen[st.LastError] = true
		}
	}
	if len(seen) == 0 {
		t.Errorf("no lastError while the IMAP server was away")
	}
	for e := range seen {
		if !plainOutage(e) {
			t.Errorf("lastError while the IMAP server was away = %q, want plain words", e)
		}
	}
	t.Logf("lastError while the IMAP server was away: %q", slices.Sorted(maps.Keys(seen)))

	proxy.up()
	for i := 4; i <= 5; i++ {
		srv.append(t, "INBOX", testMail(i, ""))
	}
	if st := waitRouteIdle(t, rt, route.Name, 5); st.LastError != "" || st.Published != 5 {
		t.Errorf("status once the server is back = %+v, want 5 published and no error", st)
	}
}
