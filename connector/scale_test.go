package connector_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/nats-io/nats.go"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/client"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/schemas"
)

// The scale test puts many IMAP routes (one mailbox and user each, on one in-process
// imapmemserver) on one Connector, waits until every route sits in IDLE, then measures the
// process over an idle window. It checks what works (every route reaches IDLE, a message
// appended to a random mailbox becomes its event) and only reports memory and CPU: those
// depend on the machine. The IMAP server runs in a child process (see memIMAPUsers); the
// process measured holds the embedded NATS server too, so its figures are an upper bound
// for the routes' own.

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
		"RSS %.1f MB (%.1f MB before the routes, peak %.1f MB), Go heap %.1f MB, %d goroutines, %d open files; "+
		"append to event %s",
		n, f.toIdle.Round(time.Millisecond), f.puts.Round(time.Millisecond), f.window, f.cpu,
		f.cpuPercent(), f.rssMB, f.rssBeforeMB, f.peakMB, f.heapMB, f.goroutines, f.files, f.appendToEvent.Round(time.Millisecond))
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
	b.ReportMetric(float64(f.files), "fds")
}

type scaleFigures struct {
	puts, toIdle          time.Duration // applying the definitions; from the apply's start to all in IDLE
	window, cpu           time.Duration // the idle window and the process's CPU time in it
	rssBeforeMB           float64       // before any route
	files                 int           // open file descriptors at the end of the idle window
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

	defs := srv.definitions(n)
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
		var st schemas.RouteStatus
		if !testkit.WaitFor(2*time.Minute, func() bool {
			st = scaleStatus(tb, nc, route)
			return st.State == schemas.StateIdle
		}) {
			scaleDump(tb, nc)
			tb.Fatalf("route %s not in IDLE after %s: %+v", route, time.Since(start), st)
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
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		f.files = len(fds)
	}

	// Every route still works: new mail in a random mailbox becomes its event.
	i := rand.N(n)
	sub, err := nc.SubscribeSync(busNames.BusSubject(0, fmt.Sprintf("r%d", i)))
	if err != nil {
		tb.Fatalf("SubscribeSync() = %v", err)
	}
	defer sub.Unsubscribe()
	t1 := time.Now()
	if err := srv.Append(i); err != nil {
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
// an INBOX, in a child process (TestScaleIMAPChild): a socket is a file descriptor at both
// ends, and the two ends of 10,000 sessions in one process would take all of the 20,000 a
// process commonly may open, leaving none to the NATS server's store. The routes' process
// holds only its own ends then, as it does in production.
type memIMAPUsers struct {
	addr string
	cmd  *exec.Cmd
	in   io.Writer
	out  *bufio.Reader
}

func startMemIMAPUsers(tb testing.TB, n int) *memIMAPUsers {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestScaleIMAPChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=imap", "MAILBUS_SCALE_USERS="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start the IMAP server: %v", err)
	}
	tb.Cleanup(func() {
		in.Close() // the child ends when its stdin does
		cmd.Wait()
	})
	m := &memIMAPUsers{cmd: cmd, in: in, out: bufio.NewReader(out)}
	for {
		line, err := m.out.ReadString('\n')
		if err != nil {
			tb.Fatalf("the IMAP server did not start: %v", err)
		}
		if addr, ok := strings.CutPrefix(strings.TrimSpace(line), "imap "); ok {
			m.addr = addr
			return m
		}
	}
}

// definitions are n connections, c0 for user0 and so on, each with its route r0 and so on.
func (s *memIMAPUsers) definitions(n int) *store.Definitions {
	host, portText, _ := net.SplitHostPort(s.addr)
	port, _ := strconv.Atoi(portText)
	defs := &store.Definitions{}
	for i := range n {
		defs.Connections = append(defs.Connections, schemas.Connection{
			Name: fmt.Sprintf("c%d", i), Type: "imap", Host: host, Port: port,
			Encryption: "none", Username: fmt.Sprintf("user%d", i), Password: "secret",
		})
		defs.Routes = append(defs.Routes, schemas.Route{Name: fmt.Sprintf("r%d", i), Connection: fmt.Sprintf("c%d", i)})
	}
	return defs
}

// Append puts test mail 1 into user i's INBOX.
func (m *memIMAPUsers) Append(i int) error {
	fmt.Fprintf(m.in, "append %d\n", i)
	line, err := m.out.ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ok\n" {
		return fmt.Errorf("append: %s", strings.TrimSpace(line))
	}
	return nil
}

// TestScaleIMAPChild is the IMAP server of the scale test, run as its child: it serves
// MAILBUS_SCALE_USERS users, prints "imap <addr>", then appends mail to user i's INBOX on
// each line "append i" of its stdin, and ends with its stdin.
func TestScaleIMAPChild(t *testing.T) {
	if os.Getenv(childEnv) != "imap" {
		t.Skip("runs as the child of the scale test")
	}
	n, _ := strconv.Atoi(os.Getenv("MAILBUS_SCALE_USERS"))
	users := map[string]string{}
	for i := range n {
		users[fmt.Sprintf("user%d", i)] = "secret"
	}
	srv := testkit.StartIMAP(t, &testkit.IMAPOptions{Users: users})
	fmt.Printf("imap %s\n", srv.Addr)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var i int
		if _, err := fmt.Sscanf(sc.Text(), "append %d", &i); err != nil || i < 0 || i >= n {
			fmt.Printf("bad command %q\n", sc.Text())
			continue
		}
		if _, err := srv.User(fmt.Sprintf("user%d", i)).Append("INBOX", bytes.NewReader(testMail(1, "")), &imap.AppendOptions{}); err != nil {
			fmt.Printf("%v\n", err)
			continue
		}
		fmt.Println("ok")
	}
}

// startScaleConnector runs a whole Connector (embedded NATS with file storage) and returns
// a client connection to it.
func startScaleConnector(tb testing.TB) (*nats.Conn, func()) {
	tb.Helper()
	cfg := connector.Config{
		EmbeddedListen: "127.0.0.1:-1", DataDir: tb.TempDir(), SubjectPrefix: "mail",
		StreamReplicas: 1, DedupWindow: time.Minute, MaxInlineBytes: 1 << 18, Instance: "scale",
	}
	logger := slog.New(slog.DiscardHandler)
	if path := os.Getenv("MAILBUS_SCALE_LOG"); path != "" { // the warnings of a run, to explain it
		if out, err := os.Create(path); err == nil {
			tb.Cleanup(func() { out.Close() })
			logger = slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelWarn}))
		}
	}
	c, err := connector.New(cfg, logger)
	if err != nil {
		tb.Fatalf("connector.New() = %v", err)
	}
	stop := testkit.RunService(tb, c)
	nc, err := nats.Connect(c.ClientURL())
	if err != nil {
		tb.Fatalf("nats.Connect() = %v", err)
	}
	return nc, func() {
		nc.Close()
		stop()
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

// scaleDump writes, where MAILBUS_SCALE_DUMP names a directory, the goroutines and the
// JetStream account and state bucket figures: what a stuck scale run needs explained.
func scaleDump(tb testing.TB, nc *nats.Conn) {
	dir := os.Getenv("MAILBUS_SCALE_DUMP")
	if dir == "" {
		return
	}
	if out, err := os.Create(dir + "/goroutines.txt"); err == nil {
		pprof.Lookup("goroutine").WriteTo(out, 1)
		out.Close()
	}
	var info bytes.Buffer
	for _, subj := range []string{"$JS.API.INFO", "$JS.API.STREAM.INFO.KV_mail_state", "$JS.API.STREAM.INFO.KV_mail_leases", "$JS.API.STREAM.INFO.MAIL_LOG"} {
		if m, err := nc.Request(subj, nil, 5*time.Second); err == nil {
			fmt.Fprintf(&info, "%s\n%s\n\n", subj, m.Data)
		} else {
			fmt.Fprintf(&info, "%s: %v\n\n", subj, err)
		}
	}
	os.WriteFile(dir+"/jetstream.txt", info.Bytes(), 0o644)
}
