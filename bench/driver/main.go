// Command driver drives a running mailbus (cmd/mailbus) for the benchmarks in bench/, only
// through what a user has: control commands over NATS, the bus stream and the mailbox.
//
//	driver ingest -nats URL -imap HOST:PORT [-encryption ssl -ca ca.pem] -user U -pass P
//	driver idle   -nats URL (-imap HOST:PORT ... | -mem) [-count 500 -gap 50ms] [-floor]
//
// ingest puts a connection, then a route with after=markRead, and reports the time from
// the route put until the route's first cycle is done: every message of the mailbox is an
// event stored in the bus stream and \Seen in the mailbox (mailbus marks a message read
// only after JetStream acknowledged its event). Both are checked after the time is taken:
// the stream's count, and the mailbox's STATUS, which is the observer's cost, not mailbus's.
//
// idle puts a route that waits in IMAP IDLE, then APPENDs messages one at a time and
// reports the delay from each APPEND's completion to its event on the bus subject. With
// -mem the IMAP server is go-imap's in-memory one, in this process, so the delay is
// mailbus's own, without Dovecot's notification delay.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/client"
	"github.com/mailbus/mailbus/schemas"
)

// pollEvery is how often the driver looks at the stream and the mailbox while it waits:
// the resolution of the ingest figure, and cheap enough not to load either side.
const pollEvery = 20 * time.Millisecond

// pollFinal is how often the driver asks for the route's status near the end of an ingest.
const pollFinal = 2 * time.Millisecond

type options struct {
	natsURL    string
	imapAddr   string
	encryption string
	caFile     string
	user, pass string
	route      string
	bus        int
	includeRaw bool
	timeout    time.Duration

	// idle only
	mem   bool
	floor bool
	count int
	gap   time.Duration
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("driver: ")
	if len(os.Args) < 2 {
		log.Fatal("usage: driver ingest|idle [flags]")
	}
	mode := os.Args[1]
	var o options
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	fs.StringVar(&o.natsURL, "nats", "nats://127.0.0.1:4222", "NATS server of the mailbus under test")
	fs.StringVar(&o.imapAddr, "imap", "", "IMAP server host:port")
	fs.StringVar(&o.encryption, "encryption", "ssl", "ssl or none")
	fs.StringVar(&o.caFile, "ca", "", "PEM CA of the IMAP server, for the driver's own IMAP checks")
	fs.StringVar(&o.user, "user", "alice", "IMAP user")
	fs.StringVar(&o.pass, "pass", "secret", "IMAP password")
	fs.StringVar(&o.route, "route", "bench", "route (and connection) name")
	fs.BoolVar(&o.includeRaw, "include-raw", false, "ingest: the route stores each raw message too (includeRaw)")
	fs.IntVar(&o.bus, "bus", 0, "data bus of the route")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up after this long")
	fs.BoolVar(&o.mem, "mem", false, "idle: run go-imap's in-memory IMAP server in this process")
	fs.BoolVar(&o.floor, "floor", false, "idle: no mailbus; time the server's own IDLE announcement (EXISTS) to a bare client")
	fs.IntVar(&o.count, "count", 500, "idle: messages to append")
	fs.DurationVar(&o.gap, "gap", 50*time.Millisecond, "idle: pause after each event before the next APPEND")
	fs.Parse(os.Args[2:])

	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	var err error
	switch mode {
	case "ingest":
		err = ingest(ctx, o)
	case "idle":
		err = idle(ctx, o)
	default:
		err = fmt.Errorf("unknown mode %q (want ingest or idle)", mode)
	}
	if err != nil {
		log.Fatal(err)
	}
}

func ingest(ctx context.Context, o options) error {
	c, err := dialIMAP(o, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := mailboxStatus(c)
	if err != nil {
		return err
	}
	if st.messages == 0 || st.unseen != st.messages {
		return fmt.Errorf("INBOX has %d messages, %d unseen: want all unseen (reset the flags first)", st.messages, st.unseen)
	}
	nc, js, err := connectNATS(ctx, o.natsURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := putConnection(ctx, nc, o); err != nil {
		return err
	}
	stream, err := js.Stream(ctx, fmt.Sprintf("MAIL_BUS_%d", o.bus))
	if err != nil {
		return fmt.Errorf("bus stream: %w", err)
	}

	start := time.Now()
	if err := putRoute(ctx, nc, o); err != nil {
		return err
	}
	// The time ends when the route reports its first cycle done (lastSuccessAt): every
	// event acknowledged and the STOREs of the last batch answered, so the mail is \Seen.
	// The status is asked every pollEvery, and every pollFinal once nine tenths of the
	// events are published, so the figure is late by at most pollFinal, as the raw pipe's
	// (which ends at its last ack) is not at all. The stream and the mailbox are checked
	// afterwards, outside the time: a STATUS costs Dovecot a scan of the maildir (0.3 s
	// on 20,000 messages), the observer's cost, which the raw pipe's figure does not
	// carry either.
	progress := time.NewTicker(10 * time.Second)
	defer progress.Stop()
	for {
		rs, err := routeState(nc, o.route)
		if err == nil && rs.LastSuccessAt != nil {
			break
		}
		wait := pollEvery
		if err == nil && rs.Published*10 >= uint64(st.messages)*9 {
			wait = pollFinal
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("first cycle not done after %s; route status: %s", time.Since(start), routeStatus(nc, o.route))
		case <-progress.C:
			log.Printf("route status after %s: %s", time.Since(start).Round(time.Second), routeStatus(nc, o.route))
		case <-time.After(wait):
		}
	}
	elapsed := time.Since(start)
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("bus stream: %w", err)
	}
	if info.State.Msgs != uint64(st.messages) {
		return fmt.Errorf("the route's first cycle is done, yet the stream holds %d events of %d; route status: %s", info.State.Msgs, st.messages, routeStatus(nc, o.route))
	}
	s, err := mailboxStatus(c)
	if err != nil {
		return err
	}
	if s.unseen != 0 {
		return fmt.Errorf("the route's first cycle is done, yet %d messages are unseen; route status: %s", s.unseen, routeStatus(nc, o.route))
	}
	fmt.Printf("mailbus: %d messages: cycle done (all events stored, all \\Seen) after %.3fs, stream and STATUS checked after %.3fs\n",
		st.messages, elapsed.Seconds(), time.Since(start).Seconds())
	fmt.Printf("elapsed_s=%.3f\n", elapsed.Seconds())
	return nil
}

func idle(ctx context.Context, o options) error {
	if o.mem {
		addr, stop, err := startMemIMAP(o.user, o.pass)
		if err != nil {
			return err
		}
		defer stop()
		o.imapAddr, o.encryption = addr, "none"
	}
	c, err := dialIMAP(o, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	var next func(i int, messageID string) (time.Time, error)
	if o.floor {
		next, err = watchIdle(c, o)
	} else {
		next, err = watchBus(ctx, o)
	}
	if err != nil {
		return err
	}

	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	delays := make([]time.Duration, 0, o.count)
	for i := range o.count {
		id := fmt.Sprintf("idle-%s-%d@bench.example", run, i)
		raw := idleMessage(id, i)
		a := c.Append("INBOX", int64(len(raw)), nil)
		if _, err := a.Write(raw); err != nil {
			return fmt.Errorf("append %d: %w", i, err)
		}
		if err := a.Close(); err != nil {
			return fmt.Errorf("append %d: %w", i, err)
		}
		if _, err := a.Wait(); err != nil {
			return fmt.Errorf("append %d: %w", i, err)
		}
		appended := time.Now()
		at, err := next(i, id)
		if err != nil {
			return err
		}
		delays = append(delays, at.Sub(appended))
		time.Sleep(o.gap)
	}
	slices.Sort(delays)
	ms := func(q float64) string {
		d := delays[min(len(delays)-1, int(q*float64(len(delays))))]
		return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000)
	}
	server := "dovecot"
	if o.mem {
		server = "imapmemserver"
	}
	if o.floor {
		server += ", bare IDLE client (no mailbus): APPEND to EXISTS"
	}
	fmt.Printf("idle %s: %d appends, APPEND done to event received (ms): median %s, p90 %s, p99 %s, max %s\n",
		server, len(delays), ms(0.5), ms(0.9), ms(0.99), ms(1))
	fmt.Printf("| %s | %d | %s | %s | %s | %s |\n", server, len(delays), ms(0.5), ms(0.9), ms(0.99), ms(1))
	return nil
}

// watchBus puts mailbus's route and returns a function that waits for the event of the
// i-th appended message on the bus subject. Events are matched by Message-ID, so one that
// arrives late is never taken for the next message's.
func watchBus(ctx context.Context, o options) (func(int, string) (time.Time, error), error) {
	type arrival struct {
		messageID string
		at        time.Time
	}
	arrivals := make(chan arrival, 1024)
	nc, _, err := connectNATS(ctx, o.natsURL)
	if err != nil {
		return nil, err
	}
	// The connection lives until the process exits.
	_, err = nc.Subscribe(fmt.Sprintf("mail.bus.%d.%s", o.bus, o.route), func(m *nats.Msg) {
		at := time.Now()
		var ev struct{ MessageId string }
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			log.Printf("event: %v", err)
			return
		}
		arrivals <- arrival{strings.Trim(ev.MessageId, "<>"), at}
	})
	if err != nil {
		return nil, err
	}
	if err := putConnection(ctx, nc, o); err != nil {
		return nil, err
	}
	if err := putRoute(ctx, nc, o); err != nil {
		return nil, err
	}
	if err := waitIdle(ctx, nc, o.route); err != nil {
		return nil, err
	}
	return func(i int, messageID string) (time.Time, error) {
		for {
			select {
			case ar := <-arrivals:
				if ar.messageID == messageID {
					return ar.at, nil
				}
			case <-time.After(30 * time.Second):
				return time.Time{}, fmt.Errorf("no event for append %d within 30s; route status: %s", i, routeStatus(nc, o.route))
			case <-ctx.Done():
				return time.Time{}, ctx.Err()
			}
		}
	}, nil
}

// watchIdle is the floor of the IDLE figure: a bare go-imap client of its own sits in
// IDLE on INBOX, and the returned function waits until the server announced the i-th
// appended message (EXISTS). What mailbus adds to that is its own delay.
func watchIdle(appender *imapclient.Client, o options) (func(int, string) (time.Time, error), error) {
	type exists struct {
		n  uint32
		at time.Time
	}
	announced := make(chan exists, 1024)
	c, err := dialIMAP(o, &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				announced <- exists{*d.NumMessages, time.Now()}
			}
		},
	})
	if err != nil {
		return nil, err
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		return nil, fmt.Errorf("select INBOX: %w", err)
	}
	if _, err := c.Idle(); err != nil {
		return nil, fmt.Errorf("idle: %w", err)
	}
	base := sel.NumMessages
	time.Sleep(500 * time.Millisecond) // IDLE reaches the server before the first APPEND
	return func(i int, _ string) (time.Time, error) {
		for {
			select {
			case e := <-announced:
				if e.n >= base+uint32(i)+1 {
					return e.at, nil
				}
			case <-time.After(30 * time.Second):
				return time.Time{}, fmt.Errorf("no EXISTS for append %d within 30s", i)
			}
		}
	}, nil
}

func idleMessage(messageID string, i int) []byte {
	return []byte(strings.ReplaceAll(fmt.Sprintf(`From: Bench <bench@example.org>
To: Support <support@example.com>
Subject: idle %d
Message-ID: <%s>
Date: %s
Content-Type: text/plain; charset=utf-8

Latency probe %d.
`, i, messageID, time.Now().Format(time.RFC1123Z), i), "\n", "\r\n"))
}

// connectNATS connects to the NATS server, waiting for it while mailbus starts.
func connectNATS(ctx context.Context, url string) (*nats.Conn, jetstream.JetStream, error) {
	for {
		nc, err := nats.Connect(url, nats.Name("mailbus-bench-driver"))
		if err == nil {
			js, err := jetstream.New(nc)
			return nc, js, err
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("connect %s: %w", url, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func putConnection(ctx context.Context, nc *nats.Conn, o options) error {
	host, portText, err := net.SplitHostPort(o.imapAddr)
	if err != nil {
		return fmt.Errorf("-imap %q: %w", o.imapAddr, err)
	}
	port, _ := strconv.Atoi(portText)
	// pollInterval is the safety net only: IDLE (and the first cycle at start) does the work.
	return command(ctx, nc, "connection.put", map[string]any{
		"name": o.route, "type": "imap", "host": host, "port": port, "encryption": o.encryption,
		"auth": "basic", "username": o.user, "password": o.pass, "idle": true, "pollInterval": "1h",
	})
}

func putRoute(ctx context.Context, nc *nats.Conn, o options) error {
	return command(ctx, nc, "route.put", map[string]any{
		"name": o.route, "connection": o.route, "bus": o.bus, "mailbox": "INBOX",
		"select": "unseen", "after": "markRead", "includeRaw": o.includeRaw,
	})
}

// command sends a control command, retrying while the control service is not up yet.
func command(ctx context.Context, nc *nats.Conn, op string, body any) error {
	entity, op, _ := strings.Cut(op, ".")
	for {
		_, err := client.New(nc, "mail").Do(ctx, entity, op, body, 5*time.Second)
		if !errors.Is(err, client.ErrNoService) || ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// routeStatus is the route's status as text, for error messages.
func routeStatus(nc *nats.Conn, route string) string {
	msg, err := nc.Request("mail.control.route.status", fmt.Appendf(nil, `{"name":%q}`, route), 5*time.Second)
	if err != nil {
		return err.Error()
	}
	return string(msg.Data)
}

// routeState is the route's status, as the control service reports it.
func routeState(nc *nats.Conn, route string) (*schemas.RouteStatus, error) {
	msg, err := nc.Request("mail.control.route.status", fmt.Appendf(nil, `{"name":%q}`, route), 5*time.Second)
	if err != nil {
		return nil, err
	}
	var r schemas.Reply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		return nil, err
	}
	if r.Status == nil {
		return nil, fmt.Errorf("route %s: no status in %s", route, msg.Data)
	}
	return r.Status, nil
}

// waitIdle waits until the route's worker has finished its first cycle and waits for mail.
func waitIdle(ctx context.Context, nc *nats.Conn, route string) error {
	for {
		if st, err := routeState(nc, route); err == nil && st.State == schemas.StateIdle {
			// The worker reports idle just before it sends IDLE; give the command
			// time to reach the server so the first APPEND is not a special case.
			time.Sleep(500 * time.Millisecond)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("route %s never idle: %s", route, routeStatus(nc, route))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// dialIMAP connects and logs in; unilateral (nil: none) receives what the server announces.
func dialIMAP(o options, unilateral *imapclient.UnilateralDataHandler) (*imapclient.Client, error) {
	var (
		c   *imapclient.Client
		err error
	)
	opts := &imapclient.Options{UnilateralDataHandler: unilateral}
	switch o.encryption {
	case "none":
		c, err = imapclient.DialInsecure(o.imapAddr, opts)
	case "ssl":
		opts.TLSConfig = &tls.Config{}
		if o.caFile != "" {
			pem, err := os.ReadFile(o.caFile)
			if err != nil {
				return nil, err
			}
			opts.TLSConfig.RootCAs = x509.NewCertPool()
			opts.TLSConfig.RootCAs.AppendCertsFromPEM(pem)
		}
		c, err = imapclient.DialTLS(o.imapAddr, opts)
	default:
		return nil, fmt.Errorf("encryption %q: want ssl or none", o.encryption)
	}
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", o.imapAddr, err)
	}
	if err := c.Login(o.user, o.pass).Wait(); err != nil {
		c.Close()
		return nil, fmt.Errorf("login: %w", err)
	}
	return c, nil
}

type inboxStatus struct{ messages, unseen uint32 }

func mailboxStatus(c *imapclient.Client) (inboxStatus, error) {
	d, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true, NumUnseen: true}).Wait()
	if err != nil {
		return inboxStatus{}, fmt.Errorf("status INBOX: %w", err)
	}
	return inboxStatus{*d.NumMessages, *d.NumUnseen}, nil
}

// startMemIMAP serves go-imap's in-memory server on a free loopback port, with one user
// and an INBOX, and the capabilities mailbus uses on a modern server.
func startMemIMAP(user, pass string) (addr string, stop func(), err error) {
	mem := imapmemserver.New()
	u := imapmemserver.NewUser(user, pass)
	if err := u.Create("INBOX", nil); err != nil {
		return "", nil, err
	}
	mem.AddUser(u)
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		InsecureAuth: true,
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapUIDPlus: {}, imap.CapMove: {}},
		Logger:       log.New(io.Discard, "", 0),
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }, nil
}
