package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"log"
	"log/slog"
	"maps"
	"mime"
	"net"
	"net/mail"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/nats-io/nats.go"
	"golang.org/x/text/encoding/charmap"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/client"
	"github.com/mailbus/mailbus/schemas"
)

// demo runs the connector on an embedded NATS server, feeds it from an in-process IMAP
// server that receives a new sample message every few seconds, and prints each event until
// ctx ends. args are the arguments after "demo".
func demo(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print each event as raw JSON (the rest goes to stderr)")
	every := fs.Duration("every", 5*time.Second, "deliver a new sample message this often")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if *every <= 0 {
		return usageError{errors.New("demo: -every must be positive")}
	}
	info := stdout // the banner; with -json stdout carries events only, for jq
	if *asJSON {
		info = os.Stderr
	}

	cfg, err := demoConfig()
	if err != nil {
		return err
	}
	if cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "mailbus-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.DataDir = dir
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := connector.New(cfg, logger, connector.WithVersion(buildVersion()))
	if err != nil {
		return err
	}

	mem, imapAddr, stopIMAP, err := startDemoIMAP()
	if err != nil {
		return err
	}
	defer stopIMAP()
	for i := range len(samples) {
		if err := deliver(mem, i); err != nil {
			return err
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(ctx) }()
	defer func() { cancel(); <-runErr }() // stops routes, drains, shuts NATS down
	if err := c.WaitReady(ctx); err != nil {
		cancel()
		rerr := <-runErr
		runErr <- rerr // for the deferred wait
		return cmp.Or(rerr, context.Cause(ctx))
	}
	url := c.ClientURL()
	nc, err := nats.Connect(url, nats.Name("mailbus demo"))
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer nc.Close()
	events := make(chan *nats.Msg, 64)
	if _, err := nc.ChanSubscribe("mail.bus.>", events); err != nil {
		return fmt.Errorf("demo: subscribe: %w", err)
	}
	if err := demoDefine(ctx, nc, imapAddr); err != nil {
		return err
	}

	fmt.Fprintf(info, `mailbus demo: NATS at %s, IMAP at %s (demo/demo), a new message every %s.
Admin console: %s
Try in another terminal:
  nats -s %[1]s sub 'mail.bus.>'
  nats -s %[1]s req mail.control.route.list '{"status":true}'
  nats -s %[1]s req mail.control.connection.log '{"name":"demo_imap","format":"text"}'
  nats -s %[1]s micro ls
Ctrl-C stops.

`, url, imapAddr, *every, consoleURL(c.HTTPAddr(), cfg.AdminToken))

	tick := time.NewTicker(*every)
	defer tick.Stop()
	next, seen := len(samples), 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-runErr:
			runErr <- err
			return err
		case <-tick.C:
			if err := deliver(mem, next); err != nil {
				return err
			}
			next++
		case m := <-events:
			seen++
			if *asJSON {
				fmt.Fprintf(stdout, "%s\n", m.Data)
				continue
			}
			var ev schemas.Event
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				fmt.Fprintf(stdout, "#%d  %s: not an event: %v\n", seen, m.Subject, err)
				continue
			}
			fmt.Fprintln(stdout, formatEvent(seen, &ev))
		}
	}
}

// demoConfig is the MAILBUS_* environment with what the demo needs on top: an embedded
// server (on a free port when the usual one is taken), the admin console on loopback
// (127.0.0.1:8080, or a free port when that is taken) with a random token unless
// MAILBUS_ADMIN_TOKEN is set, and an empty DataDir for a temporary one.
func demoConfig() (connector.Config, error) {
	cfg, err := loadConfig()
	if err != nil {
		return cfg, err
	}
	cfg.NATSURL = ""
	if os.Getenv("MAILBUS_HTTP_ADDR") == "" {
		cfg.HTTPAddr = "127.0.0.1:8080"
		if ln, err := net.Listen("tcp", cfg.HTTPAddr); err != nil {
			cfg.HTTPAddr = "127.0.0.1:0"
		} else {
			ln.Close()
		}
	}
	if cfg.AdminToken == "" {
		token := make([]byte, 18)
		rand.Read(token)
		cfg.AdminToken = base64.RawURLEncoding.EncodeToString(token)
	}
	if os.Getenv("MAILBUS_DATA_DIR") == "" {
		cfg.DataDir = ""
		if cfg.SecretKey == "" {
			// The store lives only as long as the process, so a throwaway key is enough,
			// and it keeps the unencrypted-password warning off the screen.
			key := make([]byte, 32)
			rand.Read(key)
			cfg.SecretKey = base64.StdEncoding.EncodeToString(key)
		}
	}
	if ln, err := net.Listen("tcp", cfg.EmbeddedListen); err != nil {
		cfg.EmbeddedListen = "127.0.0.1:-1"
	} else {
		ln.Close()
	}
	return cfg, nil
}

// consoleURL is the console's login link with the token in the fragment, which the
// browser never sends: the page's script fills the form with it and logs in.
func consoleURL(addr, token string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || addr == "" {
		return "(no HTTP server)"
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/ui/login#token=" + token
}

// startDemoIMAP serves an in-memory mailbox, user demo/demo, on a free local port.
func startDemoIMAP() (*imapmemserver.User, string, func(), error) {
	mem := imapmemserver.New()
	user := imapmemserver.NewUser("demo", "demo")
	if err := user.Create("INBOX", nil); err != nil {
		return nil, "", nil, fmt.Errorf("demo imap: %w", err)
	}
	mem.AddUser(user)
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		InsecureAuth: true,
		Caps: imap.CapSet{
			imap.CapIMAP4rev1: {}, imap.CapIdle: {}, imap.CapUIDPlus: {}, imap.CapMove: {},
		},
		Logger: log.New(io.Discard, "", 0), // it reports every connection the worker closes
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, fmt.Errorf("demo imap: %w", err)
	}
	go srv.Serve(ln)
	return user, ln.Addr().String(), func() { srv.Close() }, nil
}

// demoDefine puts the connection and the route through the control plane, as an operator
// would with the nats CLI.
func demoDefine(ctx context.Context, nc *nats.Conn, imapAddr string) error {
	host, portText, _ := net.SplitHostPort(imapAddr)
	port, _ := strconv.Atoi(portText)
	conn := schemas.Connection{
		Name: "demo_imap", Type: schemas.TypeIMAP, Description: "in-process demo mailbox",
		Host: host, Port: port, Encryption: "none",
		Auth: schemas.AuthBasic, Username: "demo", Password: "demo",
		LogLevel: schemas.LogFull,
	}
	route := schemas.Route{
		Name: "demo_inbox", Connection: "demo_imap", Bus: 0, Mailbox: "INBOX",
		Description: "every new message of the demo INBOX",
		Headers:     []string{"X-Ticket-Id", "X-Mailer"},
		Attributes:  []schemas.AttributeRule{{Name: "ticket", From: "header:X-Ticket-Id"}},
	}
	c := client.New(nc, "mail")
	if _, err := c.Do(ctx, "connection", "put", conn, 10*time.Second); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if _, err := c.Do(ctx, "route", "put", route, 10*time.Second); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}

// formatEvent is one line per event, e.g.
//
//	#3  bus 0  demo_inbox  From: Иван Петров <ivan@example.org>  Subject: Заявка #42  attachments: отчёт.pdf (12 KB)  ticket=42
func formatEvent(n int, ev *schemas.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#%d  bus %d  %s", n, ev.Bus, ev.Route)
	if ev.From != nil {
		if ev.From.Name != "" {
			fmt.Fprintf(&b, "  From: %s <%s>", ev.From.Name, ev.From.Address)
		} else {
			fmt.Fprintf(&b, "  From: %s", ev.From.Address)
		}
	}
	fmt.Fprintf(&b, "  Subject: %s", ev.Subject)
	if len(ev.Attachments) > 0 {
		var names []string
		for _, a := range ev.Attachments {
			s := fmt.Sprintf("%s (%s", a.Name, size(a.Size))
			if a.Inline {
				s += ", inline"
			}
			names = append(names, s+")")
		}
		b.WriteString("  attachments: " + strings.Join(names, ", "))
	}
	if ev.HtmlBody != "" {
		b.WriteString("  +html")
	}
	for _, k := range slices.Sorted(maps.Keys(ev.Attributes)) {
		fmt.Fprintf(&b, "  %s=%s", k, ev.Attributes[k])
	}
	if len(ev.Warnings) > 0 {
		fmt.Fprintf(&b, "  warnings: %s", strings.Join(ev.Warnings, "; "))
	}
	return b.String()
}

func size(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%d KB", (n+512)/1024)
}

// deliver appends sample n (cycling through samples) to the INBOX.
func deliver(user *imapmemserver.User, n int) error {
	raw := samples[n%len(samples)](n + 1)
	head := fmt.Sprintf("Message-ID: <demo-%d-%d@mailbus.example>\r\nDate: %s\r\nMIME-Version: 1.0\r\n",
		n+1, time.Now().UnixNano(), time.Now().Format(time.RFC1123Z))
	r := bytes.NewReader(append([]byte(head), raw...))
	if _, err := user.Append("INBOX", r, &imap.AppendOptions{}); err != nil {
		return fmt.Errorf("demo: append: %w", err)
	}
	return nil
}

// samples make varied messages (without Message-ID, Date and MIME-Version, which deliver
// adds); the argument is the running number of the message.
var samples = []func(n int) string{
	// Russian, UTF-8, quoted-printable, with a ticket number in a custom header.
	func(n int) string {
		return addr("From", "Иван Петров", "ivan@example.org") + addr("To", "Служба поддержки", "support@example.org") +
			"Subject: " + mime.QEncoding.Encode("utf-8", fmt.Sprintf("Заявка #%d: не печатает принтер", 40+n)) + "\r\n" +
			fmt.Sprintf("X-Ticket-Id: %d\r\n", 40+n) +
			"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			b64("Добрый день!\n\nПринтер на третьем этаже снова не печатает.\n\nИван\n")
	},
	// English, multipart/alternative with HTML.
	func(n int) string {
		return addr("From", "Alice Smith", "alice@example.com") + addr("To", "Team", "team@example.com") +
			fmt.Sprintf("Subject: Weekly report, week %d\r\n", n) +
			"X-Mailer: mailbus-demo\r\n" +
			"Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n" +
			"--alt\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nAll green this week. Details inside.\r\n" +
			"--alt\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n" +
			"<html><body><h1>All green</h1><p>Details <b>inside</b>.</p></body></html>\r\n" +
			"--alt--\r\n"
	},
	// windows-1251, 8bit body, RFC 2047 B-encoded name and subject in that charset.
	func(n int) string {
		return "From: " + mime.BEncoding.Encode("windows-1251", cp1251("Ольга Смирнова")) + " <olga@example.ru>\r\n" +
			addr("To", "Бухгалтерия", "buh@example.org") +
			"Subject: " + mime.BEncoding.Encode("windows-1251", cp1251(fmt.Sprintf("Счёт на оплату № %d", 100+n))) + "\r\n" +
			"Content-Type: text/plain; charset=windows-1251\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
			cp1251("Здравствуйте! Счёт во вложении не поместился, пришлю отдельно.\r\n")
	},
	// A PDF-ish attachment with a Russian file name (RFC 2231).
	func(n int) string {
		pdf := "%PDF-1.4\n" + strings.Repeat("% mailbus demo report line\n", 450) + "%%EOF\n"
		return addr("From", "Мария Иванова", "maria@example.org") + addr("To", "Ivan Petrov", "ivan@example.org") +
			"Subject: " + mime.QEncoding.Encode("utf-8", "Отчёт за квартал") + "\r\n" +
			"Content-Type: multipart/mixed; boundary=\"mix\"\r\n\r\n" +
			"--mix\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			b64("Отчёт во вложении.\n") +
			"--mix\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n" +
			"Content-Disposition: " + mime.FormatMediaType("attachment", map[string]string{"filename": "отчёт.pdf"}) + "\r\n\r\n" +
			b64(pdf) + "--mix--\r\n"
	},
	// HTML with an inline image (multipart/related).
	func(n int) string {
		return addr("From", "Design Team", "design@example.net") + addr("To", "Everyone", "all@example.net") +
			"Subject: Our new logo\r\n" +
			"Content-Type: multipart/related; boundary=\"rel\"; type=\"text/html\"\r\n\r\n" +
			"--rel\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" +
			"<html><body><p>Here it is:</p><img src=\"cid:logo@demo\"></body></html>\r\n" +
			"--rel\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n" +
			"Content-ID: <logo@demo>\r\nContent-Disposition: inline; filename=\"logo.png\"\r\n\r\n" +
			b64(string(logoPNG())) + "--rel--\r\n"
	},
	// koi8-r, quoted-printable, with a ticket number.
	func(n int) string {
		return "From: " + mime.QEncoding.Encode("koi8-r", koi8r("Пётр Сидоров")) + " <petr@example.ru>\r\n" +
			addr("To", "Служба поддержки", "support@example.org") +
			"Subject: " + mime.QEncoding.Encode("koi8-r", koi8r("Напоминание о встрече")) + "\r\n" +
			fmt.Sprintf("X-Ticket-Id: %d\r\n", 40+n) +
			"Content-Type: text/plain; charset=koi8-r\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
			koi8r("Встреча завтра в 10:00, переговорная «Байкал».\r\n")
	},
}

func addr(field, name, address string) string {
	return field + ": " + (&mail.Address{Name: name, Address: address}).String() + "\r\n"
}

func b64(s string) string {
	enc := base64.StdEncoding.EncodeToString([]byte(s))
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	return b.String() + enc + "\r\n"
}

func cp1251(s string) string {
	out, _ := charmap.Windows1251.NewEncoder().String(s)
	return out
}

func koi8r(s string) string {
	out, _ := charmap.KOI8R.NewEncoder().String(s)
	return out
}

// logoPNG is a small picture: a blue square with a white diagonal.
func logoPNG() []byte {
	img := image.NewRGBA(image.Rect(0, 0, 32, 32))
	for y := range 32 {
		for x := range 32 {
			c := color.RGBA{0x1f, 0x6f, 0xd0, 0xff}
			if x == y || x == y+1 {
				c = color.RGBA{0xff, 0xff, 0xff, 0xff}
			}
			img.Set(x, y, c)
		}
	}
	var buf bytes.Buffer
	png.Encode(&buf, img)
	return buf.Bytes()
}
