package connector_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/nats-io/nats.go"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/client"
	"github.com/mailbus/mailbus/schemas"
)

// The scale test puts many IMAP routes (one mailbox and user each, on one in-process
// imapmemserver) on one Connector, waits until every route sits in IDLE, then measures the
// process over an idle window. It checks what works (every route reaches IDLE, a message
// appended to a random mailbox becomes its event) and only reports memory and CPU: those
// depend on the machine. The process holds the IMAP server's sessions and the NATS server
// too, so its figures are an upper bound for the routes' own.

// scaleRoutes is how many routes the scale test runs: MAILBUS_SCALE_ROUTES, else 1,000,
// else 200 under the race detector (which allows 8,128 live goroutines; a route costs
// about five with its IMAP server session) or with -short.
func scaleRoutes() int {
	if v, err := strconv.Atoi(os.Getenv("MAILBUS_SCALE_ROUTES")); err == nil && v > 0 {
		return v
	}
	if raceEnabled || testing.Short() {
		return 200
	}
	return 1000
}

// scaleIdleWindow is how long the idle process is watched: MAILBUS_SCALE_IDLE, else 10s.
func scaleIdleWindow() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("MAILBUS_SCALE_IDLE")); err == nil && d > 0 {
		return d
	}
	return 10 * time.Second
}

func TestScaleIdleRoutes(t *testing.T) {
	n := scaleRoutes()
	f := runIdleScale(t, n, scaleIdleWindow())
	t.Logf("%d routes in IDLE after %s (apply %s); over %s idle: CPU %s (%.2f%% of one core), "+
		"RSS %.1f MB (%.1f MB before the routes, peak %.1f MB), Go heap %.1f MB, %d goroutines; "+
		"append to event %s",
		n, f.toIdle.Round(time.Millisecond), f.puts.Round(time.Millisecond), f.window, f.cpu,
		f.cpuPercent(), f.rssMB, f.rssBeforeMB, f.peakMB, f.heapMB, f.goroutines, f.appendToEvent.Round(time.Millisecond))
}

// BenchmarkScaleIdleRoutes reports the scale test's figures as metrics: MB-RSS, MB-heap and
// CPU-% (of one core, while idle). Every iteration sets everything up anew, so run it
// with -benchtime=1x.
func BenchmarkScaleIdleRoutes(b *testing.B) {
	n := scaleRoutes()
	var f scaleFigures
	for range b.N {
		f = runIdleScale(b, n, scaleIdleWindow())
	}
	b.ReportMetric(float64(n), "routes")
	b.ReportMetric(f.rssMB, "MB-RSS")
	b.ReportMetric(f.heapMB, "MB-heap")
	b.ReportMetric(f.cpuPercent(), "CPU-%")
	b.ReportMetric(f.toIdle.Seconds(), "s-to-idle")
	b.ReportMetric(f.puts.Seconds(), "s-apply")
}

type scaleFigures struct {
	puts, toIdle          time.Duration // applying the definitions; from the apply's start to all in IDLE
	window, cpu           time.Duration // the idle window and the process's CPU time in it
	rssBeforeMB           float64       // before any route, with the IMAP server's users
	rssMB, peakMB, heapMB float64       // at the end of the idle window
	goroutines            int
	appendToEvent         time.Duration
}

func (f scaleFigures) cpuPercent() float64 { return 100 * f.cpu.Seconds() / f.window.Seconds() }

func runIdleScale(tb testing.TB, n int, window time.Duration) scaleFigures {
	var f scaleFigures
	srv := startMemIMAPUsers(tb, n)
	nc, stop := startScaleConnector(tb)
	defer stop()
	runtime.GC()
	f.rssBeforeMB = procStatusMB("VmRSS")

	host, portText, _ := net.SplitHostPort(srv.addr)
	port, _ := strconv.Atoi(portText)
	defs := &connector.Definitions{}
	for i := range n {
		defs.Connections = append(defs.Connections, schemas.Connection{
			Name: fmt.Sprintf("c%d", i), Type: "imap", Host: host, Port: port,
			Encryption: "none", Username: fmt.Sprintf("user%d", i), Password: "secret",
		})
		defs.Routes = append(defs.Routes, schemas.Route{Name: fmt.Sprintf("r%d", i), Connection: fmt.Sprintf("c%d", i)})
	}
	if err := defs.Check(); err != nil {
		tb.Fatal(err)
	}
	// As mailbus apply puts them.
	start := time.Now()
	if _, err := client.New(nc, "mail").Apply(context.Background(), defs, client.ApplyOptions{}); err != nil {
		tb.Fatalf("Apply() = %v", err)
	}
	f.puts = time.Since(start)
	for i := range n {
		route := fmt.Sprintf("r%d", i)
		deadline := time.Now().Add(2 * time.Minute)
		for {
			st := scaleStatus(tb, nc, route)
			if st.State == schemas.StateIdle {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("route %s not in IDLE after %s: %+v", route, time.Since(start), st)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	f.toIdle = time.Since(start)

	// The IDLE commands of the last routes go out just after their state changed.
	time.Sleep(time.Second)
	if path := os.Getenv("MAILBUS_SCALE_PPROF"); path != "" { // where the idle CPU goes
		if out, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(out)
			defer out.Close()
			defer pprof.StopCPUProfile()
		}
	}
	cpu0, t0 := procCPU(os.Getpid()), time.Now()
	time.Sleep(window)
	f.cpu, f.window = procCPU(os.Getpid())-cpu0, time.Since(t0)
	f.rssMB, f.peakMB = procStatusMB("VmRSS"), procStatusMB("VmHWM")
	f.heapMB = float64(heapBytes()) / 1e6
	f.goroutines = runtime.NumGoroutine()

	// Every route still works: new mail in a random mailbox becomes its event.
	i := rand.N(n)
	sub, err := nc.SubscribeSync(busNames.BusSubject(0, fmt.Sprintf("r%d", i)))
	if err != nil {
		tb.Fatalf("SubscribeSync() = %v", err)
	}
	defer sub.Unsubscribe()
	t1 := time.Now()
	if _, err := srv.users[i].Append("INBOX", memLiteral{bytes.NewReader(testMail(1, ""))}, &imap.AppendOptions{}); err != nil {
		tb.Fatalf("Append() = %v", err)
	}
	msg, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		tb.Fatalf("no event from route r%d: %v", i, err)
	}
	f.appendToEvent = time.Since(t1)
	var ev schemas.Event
	if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.Subject != "test 1" || ev.Route != fmt.Sprintf("r%d", i) {
		tb.Fatalf("event = %+v (%v)", ev, err)
	}
	return f
}

// memIMAPUsers is an imapmemserver with users user0..user<n-1>, password secret, each with
// an INBOX.
type memIMAPUsers struct {
	addr  string
	users []*imapmemserver.User
}

func startMemIMAPUsers(tb testing.TB, n int) *memIMAPUsers {
	tb.Helper()
	mem := imapmemserver.New()
	m := &memIMAPUsers{}
	for i := range n {
		u := imapmemserver.NewUser(fmt.Sprintf("user%d", i), "secret")
		if err := u.Create("INBOX", nil); err != nil {
			tb.Fatalf("Create(INBOX) = %v", err)
		}
		mem.AddUser(u)
		m.users = append(m.users, u)
	}
	m.addr = serveIMAP(tb, capSet(memCaps...), func() imapserver.Session { return announceQueued(mem.NewSession()) })
	return m
}

// startScaleConnector runs a whole Connector (embedded NATS with file storage) and returns
// a client connection to it.
func startScaleConnector(tb testing.TB) (*nats.Conn, func()) {
	tb.Helper()
	cfg := connector.Config{
		EmbeddedListen: "127.0.0.1:-1", DataDir: tb.TempDir(), SubjectPrefix: "mail",
		StreamReplicas: 1, DedupWindow: time.Minute, MaxInlineBytes: 1 << 18, Instance: "scale",
	}
	c, err := connector.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatalf("connector.New() = %v", err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		c.Close()
		tb.Fatalf("WaitReady() = %v; Run() = %v", err, <-runErr)
	}
	nc, err := nats.Connect(c.ClientURL())
	if err != nil {
		tb.Fatalf("nats.Connect() = %v", err)
	}
	return nc, func() {
		nc.Close()
		c.Close()
		if err := <-runErr; err != nil {
			tb.Errorf("Run() = %v", err)
		}
	}
}

func scaleCommand(tb testing.TB, nc *nats.Conn, subject string, body any) schemas.Reply {
	tb.Helper()
	data, _ := json.Marshal(body)
	msg, err := nc.Request(subject, data, 10*time.Second)
	if err != nil {
		tb.Fatalf("Request(%s) = %v", subject, err)
	}
	var r schemas.Reply
	if err := json.Unmarshal(msg.Data, &r); err != nil || !r.OK {
		tb.Fatalf("%s: reply %s (%v), want ok", subject, msg.Data, err)
	}
	return r
}

func scaleStatus(tb testing.TB, nc *nats.Conn, route string) schemas.RouteStatus {
	tb.Helper()
	r := scaleCommand(tb, nc, "mail.control.route.status", map[string]string{"name": route})
	if r.Status == nil {
		tb.Fatalf("route.status %s: no status", route)
	}
	return *r.Status
}

// procStatusMB is a kB field of /proc/self/status in MB.
func procStatusMB(field string) float64 {
	v := strings.TrimSuffix(procStatus(os.Getpid(), field), " kB")
	kb, _ := strconv.ParseFloat(v, 64)
	return kb / 1e3
}

// heapBytes is the memory of live and not yet swept heap objects.
func heapBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
