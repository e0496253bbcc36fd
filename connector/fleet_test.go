//go:build unix

package connector_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/schemas"
)

// fleetIMAP is go-imap's in-memory server with one user per mailbox (password secret). On
// its main address it records every login of a user who already has a live session: with
// one route per user and no connection checks, that is two replicas (or two workers)
// touching one mailbox at once. Its check address serves the same mailboxes to the test's
// own look, unrecorded.
type fleetIMAP struct {
	addr, check string
	srv         *testkit.IMAP

	mu         sync.Mutex
	live       map[string]map[*trackedConn]bool // user: logged-in connections
	logins     int
	violations []string
}

func startFleetIMAP(t *testing.T, users []string) *fleetIMAP {
	t.Helper()
	f := &fleetIMAP{live: map[string]map[*trackedConn]bool{}}
	passwords := map[string]string{}
	for _, name := range users {
		passwords[name] = "secret"
	}
	f.srv = testkit.StartIMAP(t, &testkit.IMAPOptions{
		Users: passwords,
		Session: func(c *imapserver.Conn, s imapserver.Session) imapserver.Session {
			tc, ok := c.NetConn().(*trackedConn)
			if !ok {
				return s // the check address
			}
			return &trackedSession{SessionMove: s.(imapserver.SessionMove), fleet: f, conn: tc}
		},
	})
	f.check = f.srv.Addr
	f.addr = f.srv.Listen(t, func(ln net.Listener) net.Listener { return trackedListener{ln} })
	return f
}

// login records a logged-in connection of user, and a violation if another one is live.
func (f *fleetIMAP) login(user string, c *trackedConn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logins++
	if f.live[user] == nil {
		f.live[user] = map[*trackedConn]bool{}
	}
	for other := range f.live[user] {
		if !other.ended.Load() && !peerGone(other.Conn) {
			f.violations = append(f.violations, fmt.Sprintf("%s: a session from %s logged in while one from %s was live",
				user, c.RemoteAddr(), other.RemoteAddr()))
		}
	}
	f.live[user][c] = true
}

func (f *fleetIMAP) logout(user string, c *trackedConn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.live[user], c)
}

func (f *fleetIMAP) report() (logins int, violations []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logins, append([]string(nil), f.violations...)
}

func (f *fleetIMAP) append(t *testing.T, user string, raw []byte) {
	t.Helper()
	if _, err := f.srv.User(user).Append("INBOX", bytes.NewReader(raw), &imap.AppendOptions{}); err != nil {
		t.Errorf("Append(%s) = %v", user, err)
	}
}

// trackedListener hands out trackedConns.
type trackedListener struct{ net.Listener }

func (l trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &trackedConn{Conn: c}, nil
}

// trackedConn knows when its connection ended: at the first failed read or write, or its
// close; peerGone tells sooner.
type trackedConn struct {
	net.Conn
	ended atomic.Bool
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.ended.Store(true)
	}
	return n, err
}

func (c *trackedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil {
		c.ended.Store(true)
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.ended.Store(true)
	return c.Conn.Close()
}

// peerGone reports whether the client's end of c is closed (its FIN or RST arrived),
// peeking so that nothing is taken from the server's reader. The server reads a
// closed connection only when it next looks, and a client that closed its session and
// logged in again at once may come first.
func peerGone(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	err = raw.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		gone = (err == nil && n == 0) || (err != nil && err != syscall.EAGAIN && err != syscall.EWOULDBLOCK && err != syscall.EINTR)
	})
	return gone || err != nil
}

// trackedSession reports its logins and closes to the fleet.
type trackedSession struct {
	imapserver.SessionMove
	fleet *fleetIMAP
	conn  *trackedConn
	user  string
}

func (s *trackedSession) Login(username, password string) error {
	if err := s.SessionMove.Login(username, password); err != nil {
		return err
	}
	s.user = username
	s.fleet.login(username, s.conn)
	return nil
}

func (s *trackedSession) Close() error {
	if s.user != "" {
		s.fleet.logout(s.user, s.conn)
	}
	return s.SessionMove.Close()
}

// replicaProcess is a mailbus replica run as a child process, so it can be SIGKILLed.
type replicaProcess struct {
	t        *testing.T
	url, id  string
	cmd      *exec.Cmd
	log      *svcLog
	restarts int
}

func startReplicaProcess(t *testing.T, url, id string) *replicaProcess {
	p := &replicaProcess{t: t, url: url, id: id, log: &svcLog{}}
	p.start()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *replicaProcess) start() {
	cmd := exec.Command(os.Args[0], "-test.run=^TestReplicaChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=replica", "MAILBUS_TEST_NATS_URL="+p.url, "MAILBUS_TEST_INSTANCE="+p.id)
	cmd.Stdout, cmd.Stderr = io.Discard, p.log
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start replica %s: %v", p.id, err)
	}
	p.cmd = cmd
}

// kill sends SIGKILL: no goodbye, no lease released.
func (p *replicaProcess) kill() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Kill()
	p.cmd.Wait()
	p.cmd = nil
}

// leaseOwners reads who holds each route lease.
func leaseOwners(t *testing.T, js jetstream.JetStream) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, busNames.LeasesBucket())
	if err != nil {
		t.Fatalf("KeyValue(%s) = %v", busNames.LeasesBucket(), err)
	}
	owners := map[string]string{}
	keys, err := kv.ListKeysFiltered(ctx, "route.>")
	if err != nil {
		return owners
	}
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var v struct{ Owner string }
		if json.Unmarshal(e.Value(), &v) == nil {
			owners[strings.TrimPrefix(k, "route.")] = v.Owner
		}
	}
	return owners
}

// mailboxFlags lists the \Seen state and Message-ID of every message of user's INBOX.
func mailboxFlags(t *testing.T, addr, user string) (seen, total int, msgIDs []string) {
	t.Helper()
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatalf("dial = %v", err)
	}
	defer c.Close()
	if err := c.Login(user, "secret").Wait(); err != nil {
		t.Fatalf("Login(%s).Wait() = %v", user, err)
	}
	sel, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatalf("Select().Wait() = %v", err)
	}
	if sel.NumMessages == 0 {
		return 0, 0, nil
	}
	bufs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{Flags: true, Envelope: true}).Collect()
	if err != nil {
		t.Fatalf("Fetch().Collect() = %v", err)
	}
	for _, b := range bufs {
		if hasIMAPFlag(b.Flags, imap.FlagSeen) {
			seen++
		}
		msgIDs = append(msgIDs, b.Envelope.MessageID)
	}
	return seen, len(bufs), msgIDs
}

// TestReplicasThirtyRoutes runs three replica processes on one NATS server with 30 routes
// on 30 mailboxes, appends mail all along, and SIGKILLs replicas: one restarted at once
// (it takes its own leases back), one left dead until the others took its routes over
// (lease expiry), then restarted. At the end every mailbox has exactly one event per
// message, every message is \Seen, and the IMAP server never saw two live sessions of
// one mailbox.
func TestReplicasThirtyRoutes(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	const routes = 30
	var users []string
	for i := 1; i <= routes; i++ {
		users = append(users, fmt.Sprintf("u%02d", i))
	}
	n := startBusNATS(t)
	srv := startFleetIMAP(t, users)
	url := "nats://" + n.addr
	replicas := map[string]*replicaProcess{}
	for _, id := range []string{"a", "b", "c"} {
		replicas[id] = startReplicaProcess(t, url, id)
	}
	defer func() {
		if t.Failed() {
			for id, p := range replicas {
				l := p.log.String()
				t.Logf("replica %s log (end):\n%s", id, l[max(0, len(l)-4000):])
			}
		}
	}()

	// Mail arrives all along: round robin over the mailboxes, counted per mailbox.
	var (
		sentMu sync.Mutex
		sent   = map[string]int{}
	)
	stopMail := make(chan struct{})
	var mailing sync.WaitGroup
	mailing.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stopMail:
				return
			case <-time.After(15 * time.Millisecond):
			}
			u := users[i%routes]
			sentMu.Lock()
			sent[u]++
			k := sent[u]
			sentMu.Unlock()
			srv.append(t, u, testMail(k, "X-Mailbox: "+u+"\r\n"))
		}
	})
	stopMailing := func() {
		select {
		case <-stopMail:
		default:
			close(stopMail)
		}
		mailing.Wait()
	}
	defer stopMailing()

	host, port, _ := net.SplitHostPort(srv.addr)
	waitUntil(t, 60*time.Second, "a replica serving commands", func() bool {
		m, err := n.nc.Request("mail.control.route.list", []byte(`{}`), time.Second)
		return err == nil && m.Header.Get("Nats-Service-Error-Code") == ""
	})
	for i, u := range users {
		conn, _ := json.Marshal(map[string]any{
			"name": "c" + u, "type": "imap", "host": host, "port": json.Number(port), "encryption": "none",
			"username": u, "password": "secret", "pollInterval": "2s",
		})
		route, _ := json.Marshal(map[string]any{"name": "r" + u, "connection": "c" + u, "bus": i % bus.Buses})
		for _, req := range []struct {
			subject string
			body    []byte
		}{{"mail.control.connection.put", conn}, {"mail.control.route.put", route}} {
			m, err := n.nc.Request(req.subject, req.body, 10*time.Second)
			if err != nil || m.Header.Get("Nats-Service-Error-Code") != "" {
				t.Fatalf("%s = %v %v", req.subject, m, err)
			}
		}
	}
	stored := func(u string) uint64 {
		i := int(u[1]-'0')*10 + int(u[2]-'0') - 1
		b := i % bus.Buses
		return storedCount(t, n.js, busNames.BusStream(b), busNames.BusSubject(b, "r"+u))
	}
	everyRoute := func(what string, timeout time.Duration, cond func(owners map[string]string) bool) {
		t.Helper()
		start := time.Now()
		waitUntil(t, timeout, what, func() bool { return cond(leaseOwners(t, n.js)) })
		t.Logf("%s after %s", what, time.Since(start).Round(time.Millisecond))
	}
	everyRoute("every route owned and publishing", 60*time.Second, func(owners map[string]string) bool {
		if len(owners) != routes {
			return false
		}
		for _, u := range users {
			if stored(u) == 0 {
				return false
			}
		}
		return true
	})

	// b dies and comes straight back under its own id: it takes its leases back at once.
	time.Sleep(time.Duration(rand.IntN(1000)) * time.Millisecond)
	replicas["b"].kill()
	replicas["b"].start()
	t.Log("b killed and restarted")

	// c dies and stays dead: its leases expire and a and b take its routes.
	time.Sleep(time.Duration(1000+rand.IntN(2000)) * time.Millisecond)
	replicas["c"].kill()
	killed := time.Now()
	everyRoute("every route owned by a or b", 2*bus.LeaseTTL+10*time.Second, func(owners map[string]string) bool {
		if len(owners) != routes {
			return false
		}
		for _, o := range owners {
			if o == "c" {
				return false
			}
		}
		return true
	})
	t.Logf("c's routes taken over %s after its kill", time.Since(killed).Round(time.Millisecond))
	replicas["c"].start()
	t.Log("c restarted")

	// a dies too and comes back at once, while c still waits for its share.
	time.Sleep(time.Duration(1000+rand.IntN(2000)) * time.Millisecond)
	replicas["a"].kill()
	replicas["a"].start()
	t.Log("a killed and restarted")
	time.Sleep(2 * time.Second)
	stopMailing()

	// Every message published, then every message \Seen.
	var short []string
	if !testkit.WaitFor(60*time.Second, func() bool {
		short = nil
		for _, u := range users {
			if got := stored(u); got < uint64(sent[u]) {
				short = append(short, fmt.Sprintf("%s %d/%d", u, got, sent[u]))
			}
		}
		return len(short) == 0
	}) {
		t.Fatalf("not every message stored after 60 s: %v; lease owners %v", short, leaseOwners(t, n.js))
	}
	for _, u := range users {
		waitUntil(t, 30*time.Second, "every message of "+u+" \\Seen", func() bool {
			seen, total, _ := mailboxFlags(t, srv.check, u)
			return seen == total && total == sent[u]
		})
	}
	time.Sleep(200 * time.Millisecond) // anything still in flight would show now

	total := 0
	bySubject := map[string][]*jetstream.RawStreamMsg{}
	for b := range bus.Buses {
		for subj, msgs := range streamMsgsBySubject(t, n.js, busNames.BusStream(b)) {
			bySubject[subj] = msgs
		}
	}
	for i, u := range users {
		msgs := bySubject[busNames.BusSubject(i%bus.Buses, "r"+u)]
		total += len(msgs)
		if len(msgs) != sent[u] {
			t.Errorf("%s: %d events, %d messages delivered", u, len(msgs), sent[u])
		}
		ids, byMessageID := map[string]int{}, map[string]int{}
		for _, m := range msgs {
			ids[m.Header.Get(jetstream.MsgIDHeader)]++
			var ev schemas.Event
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				t.Fatal(err)
			}
			byMessageID[strings.Trim(ev.MessageId, "<>")]++
			if ev.Route != "r"+u {
				t.Errorf("%s: event of route %s", u, ev.Route)
			}
		}
		for id, c := range ids {
			if c != 1 {
				t.Errorf("%s: Msg-Id %s stored %d times", u, id, c)
			}
		}
		_, _, inbox := mailboxFlags(t, srv.check, u)
		for _, id := range inbox {
			if c := byMessageID[strings.Trim(id, "<>")]; c != 1 {
				t.Errorf("%s: message %s has %d events", u, id, c)
			}
		}
	}
	logins, violations := srv.report()
	for _, v := range violations {
		t.Error(v)
	}
	t.Logf("%d messages in %d mailboxes, %d events, %d IMAP logins, %d concurrent-session violations",
		func() (s int) {
			for _, c := range sent {
				s += c
			}
			return s
		}(), routes, total, logins, len(violations))
	if logins < routes+10 { // each replica's kill made its routes log in again
		t.Errorf("only %d IMAP logins: the replicas were not killed while holding routes", logins)
	}
}

// TestReplicaSessionRecorder checks the recorder TestReplicasThirtyRoutes relies on: two
// live sessions of one user are a violation, one after the other (closed at once, as a
// worker closes its session before the next one) are not, and the check address is not
// recorded.
func TestReplicaSessionRecorder(t *testing.T) {
	srv := startFleetIMAP(t, []string{"u01", "u02"})
	login := func(addr, user string) *imapclient.Client {
		t.Helper()
		c, err := imapclient.DialInsecure(addr, nil)
		if err != nil {
			t.Fatalf("dial = %v", err)
		}
		if err := c.Login(user, "secret").Wait(); err != nil {
			t.Fatalf("Login(%s).Wait() = %v", user, err)
		}
		return c
	}
	for range 20 {
		login(srv.addr, "u01").Close()
	}
	a := login(srv.addr, "u01")
	b := login(srv.addr, "u02")
	c := login(srv.check, "u01")
	if logins, v := srv.report(); logins != 22 || len(v) != 0 {
		t.Fatalf("after sequential sessions: %d logins, violations %v; want 22, none", logins, v)
	}
	d := login(srv.addr, "u01")
	if _, v := srv.report(); len(v) != 1 || !strings.HasPrefix(v[0], "u01:") {
		t.Fatalf("after two live sessions of u01: violations %v, want one", v)
	}
	for _, c := range []*imapclient.Client{a, b, c, d} {
		c.Close()
	}
}
