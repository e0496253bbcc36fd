package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/mailbus/mailbus/connector/dovecottest"
	"github.com/mailbus/mailbus/schemas"
)

// password is the mailbox password: distinctive, so finding it anywhere is a leak.
const password = "Pw-7f3kQ9-never-shown"

func testMessage(i int) []byte {
	head := fmt.Sprintf("From: Ivan Petrov <ivan@example.org>\r\nTo: alice@localhost\r\n"+
		"Subject: Console test %d\r\nMessage-ID: <console-test-%d@example.org>\r\n"+
		"Date: %s\r\nMIME-Version: 1.0\r\n", i, i, time.Now().UTC().Format(time.RFC1123Z))
	if i != 1 {
		return []byte(head + fmt.Sprintf("Content-Type: text/plain; charset=utf-8\r\n\r\nBody %d.\r\n", i))
	}
	// The first has an attachment, for the events page's column.
	return []byte(head + "Content-Type: multipart/mixed; boundary=b1\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBody 1.\r\n" +
		"--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.pdf\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n")
}

// screenshots is where the console's screenshots go: docs/ with MAILBUS_UPDATE_DOCS=1
// (make them again after a change of the pages), else a temporary directory.
func screenshots(t *testing.T) string {
	if os.Getenv("MAILBUS_UPDATE_DOCS") == "1" {
		return filepath.Join("..", "..", "docs")
	}
	return t.TempDir()
}

// TestConsoleBrowserDovecot drives the console in headless Chromium against a real Dovecot:
// a refused port shown next to its input, a connection created and checked stage by
// stage, a route whose published count climbs live to the messages loaded, the log
// downloaded with a Message-ID in it, the events of the bus, Russian, refusals of a wrong
// token, a form without its CSRF token and a cross-site post, and the password nowhere.
func TestConsoleBrowserDovecot(t *testing.T) {
	srv := dovecottest.Start(t, &dovecottest.Options{Users: map[string]string{"alice": password}})
	const loaded = 5
	for i := 1; i <= loaded; i++ {
		srv.Deliver(t, "alice", testMessage(i))
	}
	m := startMailbus(t, "tok-"+t.Name(), srv.CA)
	ctx := newBrowser(t)
	var seen []string // every page and download the browser got, searched for the password
	snap := func() { seen = append(seen, html(t, ctx)) }

	login(t, ctx, m, m.token)
	if h := get(t, ctx, "heading", chromedp.Text(chromedp.CSS("h1"))); h != "Connections" {
		t.Fatalf("after login the page is %q, want Connections", h)
	}
	snap()

	// Plain IMAP: the connection check trusts the system's roots only, not the test CA.
	host, plainPort, _ := net.SplitHostPort(srv.Addr)
	run(t, ctx, "fill the connection form",
		chromedp.Navigate(m.url+"/ui/connection"),
		setValue("#f-name", "dove"),
		setValue("#f-description", "Dovecot in the test"),
		setValue("#f-logLevel", "full"),
		setValue("#f-host", host),
		setValue("#f-encryption", "none"),
		setValue("#f-auth", "basic"),
		setValue("#f-username", "alice"),
		setValue("#f-pollInterval", "5s"),
	)
	run(t, ctx, "save the connection",
		setValue("#f-port", plainPort),
		chromedp.SendKeys(chromedp.CSS("#f-password"), password),
		chromedp.Click(chromedp.CSS("#save")),
		chromedp.WaitVisible(chromedp.CSS("#conn-dove")),
	)
	snap()
	if r := m.control(t, "connection.get", schemas.NameRequest{Name: "dove"}); !r.OK || !r.Connection.PasswordSet || r.Connection.Port == 0 {
		t.Fatalf("stored connection: %+v %+v", r.Connection, r.Error)
	}

	// Check connection: every stage with its time; then a wrong password, in plain words.
	run(t, ctx, "check the saved connection",
		chromedp.Navigate(m.url+"/ui/connection?name=dove"),
		chromedp.Click(chromedp.CSS("#check")),
		chromedp.WaitVisible(chromedp.CSS("#check-outcome")),
	)
	mustContain(t, "check summary", get(t, ctx, "summary", chromedp.Text(chromedp.CSS("#check-summary"))), "Connection works")
	stages := get(t, ctx, "stages", chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll('#check-outcome tr.stage')).map(r => r.dataset.stage + ' ' + r.className + ' ' + r.cells[2].textContent)`))
	if len(stages) < 3 {
		t.Fatalf("check shows stages %v, want dial, tls, login and more", stages)
	}
	for _, s := range stages {
		if !strings.Contains(s, " ok ") || !strings.HasSuffix(s, " ms") {
			t.Errorf("stage %q: want ok with a time in ms", s)
		}
	}
	snap()
	formShot := get(t, ctx, "screenshot of the form", chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(screenshots(t), "console-connection.png"), formShot, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, ctx, "check with a wrong password",
		chromedp.SendKeys(chromedp.CSS("#f-password"), "wrong-password"),
		chromedp.Click(chromedp.CSS("#check")),
		chromedp.WaitVisible(chromedp.CSS("#check-outcome.failed")),
	)
	failed := get(t, ctx, "failed stage", chromedp.Text(chromedp.CSS("#check-outcome tr.stage.failed")))
	if !strings.Contains(failed, "login") || !strings.Contains(failed, "✗") {
		t.Fatalf("failed check shows %q, want the login stage with its error", failed)
	}
	snap()

	// A route: its published count climbs to the messages loaded, without a reload.
	run(t, ctx, "create the route",
		chromedp.Navigate(m.url+"/ui/route"),
		setValue("#f-connection", "dove"),
		setValue("#f-name", "inbox_route"),
		setValue("#f-description", "Route for receiving letters"),
		setValue("#f-bus", "1"),
		setValue("#f-mailbox", "INBOX"),
		setValue("#f-select", "all"),
		setValue("#f-backlog", "all"),
		setValue("#f-after", "markRead"),
		chromedp.Click(chromedp.CSS("#save")),
		chromedp.WaitVisible(chromedp.CSS("#route-inbox_route")),
		chromedp.Evaluate[chromedp.Void]("window.__sameDocument = true"),
	)
	published := func(route string, want int) {
		t.Helper()
		expr := fmt.Sprintf(`(() => { const c = document.querySelector('#route-%s [data-published]'); return c && c.dataset.published === '%d'; })()`, route, want)
		if err := chromedp.Do(ctx, waitFor(expr)); err != nil {
			st := m.control(t, "route.status", schemas.NameRequest{Name: route})
			t.Fatalf("published of %s never showed %d: %v (status %+v)", route, want, err, st.Status)
		}
		if same := get(t, ctx, "same document", chromedp.Evaluate[bool]("window.__sameDocument === true")); !same {
			t.Fatal("the routes page reloaded")
		}
	}
	published("inbox_route", loaded)
	if r := m.control(t, "route.get", schemas.NameRequest{Name: "inbox_route"}); r.Route == nil ||
		r.Route.Bus != 1 || r.Route.Select != "all" || r.Route.Backlog != "all" || r.Route.Description != "Route for receiving letters" {
		t.Fatalf("stored route = %+v", r.Route)
	}
	snap()

	// A route put elsewhere (as with the CLI) appears without a reload.
	if r := m.control(t, "route.put", schemas.Route{Name: "cli_route", Connection: "dove", Mailbox: "Archive",
		Disabled: true, After: schemas.AfterNone}); !r.OK {
		t.Fatalf("route.put: %+v", r.Error)
	}
	run(t, ctx, "see the route put over NATS", chromedp.WaitVisible(chromedp.CSS("#route-cli_route")))
	if same := get(t, ctx, "same document", chromedp.Evaluate[bool]("window.__sameDocument === true")); !same {
		t.Fatal("the routes page reloaded")
	}
	dir := screenshots(t)
	shot(t, ctx, m.url+"/ui/routes", "#route-inbox_route", filepath.Join(dir, "console-routes.png"))
	shot(t, ctx, m.url+"/ui/connections", "#conn-dove", filepath.Join(dir, "console-connections.png"))
	mustContain(t, "the connection's row", get(t, ctx, "row", chromedp.Text(chromedp.CSS("#conn-dove"))), "✗")
	snap()

	// Download log: a text file with the Message-IDs of the mail taken.
	downloads := t.TempDir()
	progress := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
	run(t, ctx, "download the log",
		chromedp.Navigate(m.url+"/ui/connection?name=dove"),
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
				Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: downloads, EventsEnabled: new(true)})
			return err
		}),
		chromedp.Click(chromedp.CSS("#download-log")),
	)
	var logText string
	for ev, err := range progress {
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			t.Fatal("download canceled")
		}
		if ev.State != browser.DownloadProgressStateCompleted {
			continue
		}
		b, err := os.ReadFile(filepath.Join(downloads, ev.GUID))
		if err != nil {
			t.Fatalf("downloaded log: %v", err)
		}
		logText = string(b)
		break
	}
	mustContain(t, "downloaded log", logText, "<console-test-3@example.org>")
	seen = append(seen, logText)
	// from/to narrow it: nothing before 2000, nothing after 2100.
	for _, q := range []string{"to=2000-01-01T00:00", "from=2100-01-01T00:00"} {
		got := get(t, ctx, "log "+q, chromedp.Evaluate[string](
			`fetch('/ui/connection/log?name=dove&`+q+`').then(r => r.text())`, chromedp.EvalAwaitPromise))
		if strings.TrimSpace(got) != "" {
			t.Errorf("log with %s has entries:\n%s", q, got)
		}
	}

	// Events of bus 1: the mail taken, a JSON link each, and new mail as it arrives.
	run(t, ctx, "open the events", chromedp.Navigate(m.url+"/ui/events?bus=1"),
		chromedp.WaitVisible(chromedp.CSS("#live-events tr")),
		chromedp.Evaluate[chromedp.Void]("window.__sameDocument = true"))
	if n := get(t, ctx, "rows", chromedp.Evaluate[int]("document.querySelectorAll('#live-events tr[id]').length")); n != loaded {
		t.Fatalf("events page shows %d events, want %d", n, loaded)
	}
	evText := get(t, ctx, "events", chromedp.Text(chromedp.CSS("#live-events")))
	mustContain(t, "events", evText, "Ivan Petrov <ivan@example.org>")
	mustContain(t, "events", evText, "отчёт.pdf")
	evJSON := get(t, ctx, "event JSON", chromedp.Evaluate[string](
		`fetch(document.querySelector('#live-events a').href).then(r => r.text())`, chromedp.EvalAwaitPromise))
	var ev schemas.Event
	if err := json.Unmarshal([]byte(evJSON), &ev); err != nil || !strings.HasPrefix(ev.MessageId, "<console-test-") {
		t.Fatalf("the JSON link gave %v: %.300s", err, evJSON)
	}
	seen = append(seen, evJSON, html(t, ctx))
	srv.Deliver(t, "alice", testMessage(loaded+1))
	if err := chromedp.Do(ctx, waitFor(
		fmt.Sprintf(`document.querySelectorAll('#live-events tr[id]').length === %d && window.__sameDocument === true`, loaded+1))); err != nil {
		t.Fatalf("the new event did not appear live: %v", err)
	}
	mustContain(t, "newest event", get(t, ctx, "first row", chromedp.Text(chromedp.CSS("#live-events tr"))), fmt.Sprintf("Console test %d", loaded+1))

	for i, s := range seen {
		if strings.Contains(s, password) || strings.Contains(s, "wrong-password") {
			t.Errorf("page or download #%d contains the password:\n%s", i, clip(s))
		}
	}
	if len(seen) < 8 {
		t.Fatalf("only %d pages searched", len(seen))
	}
}

// shot saves a viewport screenshot of a page once sel is on it.
func shot(t *testing.T, ctx context.Context, url, sel, path string) {
	t.Helper()
	run(t, ctx, "open "+url, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(sel)))
	png := get(t, ctx, "screenshot", chromedp.Screenshot(chromedp.CSS("body")))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestConsoleBrowserForms drives the console in headless Chromium without a mail server: a
// wrong token, a port the control service refuses shown next to its input, a check that
// fails at its first stage in plain words, Russian, and refusals of a form without its
// CSRF token and of a cross-site post; every input labelled, the password nowhere.
func TestConsoleBrowserForms(t *testing.T) {
	m := startMailbus(t, "tok-"+t.Name(), nil)
	ctx := newBrowser(t)
	var seen []string
	snap := func() {
		t.Helper()
		seen = append(seen, html(t, ctx))
		unlabelled := get(t, ctx, "inputs without a label", chromedp.Evaluate[[]string](`Array.from(
			document.querySelectorAll('input:not([type=hidden]), select, textarea')).filter(
			e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.name || e.id)`))
		if len(unlabelled) > 0 {
			t.Errorf("%s: inputs without a label: %v", get(t, ctx, "location", chromedp.Location()), unlabelled)
		}
	}

	// A wrong token: the login page again, with the error, and no way in. Typed and sent
	// with the keyboard alone: the field has the focus, Enter submits.
	run(t, ctx, "log in with a wrong token",
		chromedp.Navigate(m.url+"/ui/login"),
		waitFor(`document.activeElement && document.activeElement.id === 'token'`),
		chromedp.KeyEvent("not-the-token"+kb.Enter),
		waitFor(`document.getElementById('login-error') !== null && document.readyState === 'complete'`),
		chromedp.WaitVisible(chromedp.CSS("#login-error")), // chromedp's own wait on the new page: see waitFor
	)
	mustContain(t, "login with a wrong token", get(t, ctx, "error", chromedp.Text(chromedp.CSS("#login-error"))), "Wrong token")
	run(t, ctx, "open the connections without a session", chromedp.Navigate(m.url+"/ui/connections"))
	if loc := get(t, ctx, "location", chromedp.Location()); !strings.HasSuffix(loc, "/ui/login") {
		t.Fatalf("without a session /ui/connections went to %s, want the login page", loc)
	}

	login(t, ctx, m, m.token)
	snap()

	// A port the control service refuses: its message next to the port input.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, closedPort, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close() // nothing listens there: the check fails at dial
	run(t, ctx, "fill the connection form",
		chromedp.Navigate(m.url+"/ui/connection"),
		setValue("#f-name", "unreach"),
		setValue("#f-description", "Nobody listens"),
		setValue("#f-host", "127.0.0.1"),
		setValue("#f-port", "70000"),
		setValue("#f-encryption", "none"),
		setValue("#f-auth", "basic"),
		setValue("#f-username", "alice"),
		chromedp.SendKeys(chromedp.CSS("#f-password"), password),
		chromedp.Click(chromedp.CSS("#save")),
		chromedp.WaitVisible(chromedp.CSS("#err-port")),
	)
	mustContain(t, "the error next to port", get(t, ctx, "port error", chromedp.Text(chromedp.CSS("#err-port"))), "port 70000: want 1..65535")
	if next := get(t, ctx, "where the error is", chromedp.Evaluate[string](
		`document.getElementById('f-port').parentElement.querySelector('.field-error').id`)); next != "err-port" {
		t.Fatalf("the port error is not in the port's field: %q", next)
	}
	if inv := get(t, ctx, "aria-invalid", chromedp.Evaluate[string](`document.getElementById('f-port').getAttribute('aria-invalid')`)); inv != "true" {
		t.Errorf("the refused port input is not marked invalid")
	}
	if r := m.control(t, "connection.get", schemas.NameRequest{Name: "unreach"}); r.OK {
		t.Fatal("a refused form stored the connection")
	}
	snap()
	run(t, ctx, "correct the port and save with Enter",
		setValue("#f-port", closedPort),
		chromedp.SendKeys(chromedp.CSS("#f-password"), password+kb.Enter),
		chromedp.WaitVisible(chromedp.CSS("#conn-unreach")),
	)
	snap()

	// Check connection: the failed stage, its time and what went wrong, in plain words.
	run(t, ctx, "check a connection nobody answers",
		chromedp.Navigate(m.url+"/ui/connection?name=unreach"),
		chromedp.Click(chromedp.CSS("#check")),
		chromedp.WaitVisible(chromedp.CSS("#check-outcome.failed")),
	)
	failed := get(t, ctx, "failed stage", chromedp.Text(chromedp.CSS("#check-outcome tr.stage.failed")))
	if !strings.Contains(failed, "dial") || !strings.Contains(failed, "nothing listens") || !strings.HasSuffix(strings.TrimSpace(failed), "ms") {
		t.Fatalf("failed check shows %q, want the dial stage, its error and its time", failed)
	}
	snap()
	// With no password typed the saved connection is checked; the page says so when the
	// form holds other settings.
	if n := get(t, ctx, "note", chromedp.Evaluate[int]("document.querySelectorAll('#check-note').length")); n != 0 {
		t.Fatalf("a check of an unchanged form has a note")
	}
	run(t, ctx, "check after a change",
		setValue("#f-description", "changed, not saved"),
		chromedp.Click(chromedp.CSS("#check")),
		chromedp.WaitVisible(chromedp.CSS("#check-note")),
	)
	mustContain(t, "note", get(t, ctx, "note", chromedp.Text(chromedp.CSS("#check-note"))), "saved connection was checked")

	// Russian: the product page's words.
	run(t, ctx, "switch to Russian",
		chromedp.Navigate(m.url+"/ui/connection?name=unreach"),
		chromedp.Click(chromedp.CSS("#lang-ru")),
		waitFor(`document.documentElement.lang === 'ru' && document.getElementById('f-host') !== null && document.readyState === 'complete'`),
		chromedp.WaitVisible(chromedp.CSS("#f-host")), // chromedp's own wait on the new page: see waitFor
	)
	for sel, want := range map[string]string{
		"label[for=f-host]":                 "Адрес почтового сервера",
		"label[for=f-verifyWithoutSending]": "Проверять соединение без отправки сообщения",
		"label[for=f-pollInterval]":         "Интервал опроса",
		"#check":                            "Проверить соединение",
		"#download-log":                     "Скачать журнал",
		"#save":                             "Сохранить",
	} {
		if got := get(t, ctx, sel, chromedp.Text(chromedp.CSS(sel))); got != want {
			t.Errorf("%s in Russian = %q, want %q", sel, got, want)
		}
	}
	if got := get(t, ctx, "html lang", chromedp.Evaluate[string]("document.documentElement.lang")); got != "ru" {
		t.Errorf("<html lang> = %q, want ru", got)
	}
	snap()
	run(t, ctx, "switch back", chromedp.Click(chromedp.CSS("#lang-en")),
		waitFor(`document.documentElement.lang === 'en' && document.getElementById('f-host') !== null && document.readyState === 'complete'`),
		chromedp.WaitVisible(chromedp.CSS("#f-host"))) // chromedp's own wait on the new page: see waitFor

	// The password field says one is set and shows nothing.
	if v := get(t, ctx, "password value", chromedp.Value(chromedp.CSS("#f-password"))); v != "" {
		t.Fatalf("the password input holds %q", v)
	}
	if set := get(t, ctx, "password state", chromedp.Evaluate[string]("document.getElementById('hint-password').dataset.set")); set != "true" {
		t.Fatalf("the form does not say a password is set")
	}

	// A form without its CSRF token is refused and changes nothing.
	run(t, ctx, "post the form without its CSRF token",
		setValue("#f-description", "changed by a forged form"),
		chromedp.Evaluate[chromedp.Void]("document.querySelector('#connection-form input[name=csrf]').remove()"),
		chromedp.Click(chromedp.CSS("#save")),
		chromedp.WaitVisible(chromedp.CSS("#error-message")),
	)
	mustContain(t, "refusal", get(t, ctx, "refusal", chromedp.Text(chromedp.CSS("#error-message"))), "security token")
	if r := m.control(t, "connection.get", schemas.NameRequest{Name: "unreach"}); r.Connection.Description != "Nobody listens" {
		t.Fatalf("a form without CSRF token changed the description to %q", r.Connection.Description)
	}

	// A cross-site post: another site's page that submits a form to the console.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><form id="f" method="post" action="%s/ui/connection">
<input name="name" value="evil"><input name="type" value="imap"><input name="host" value="evil.example">
<input name="encryption" value="ssl"><input name="auth" value="none"><input name="logLevel" value="off">
<input name="csrf" value="guess"></form><script>document.getElementById('f').submit()</script>`, m.url)
	}))
	defer evil.Close()
	_, evilPort, _ := net.SplitHostPort(evil.Listener.Addr().String())
	run(t, ctx, "visit the other site",
		chromedp.Navigate("http://localhost:"+evilPort+"/"),
		chromedp.WaitVisible(chromedp.CSS("#error-message")),
	)
	mustContain(t, "cross-site refusal", get(t, ctx, "refusal", chromedp.Text(chromedp.CSS("#error-message"))), "Cross-origin request refused")
	if r := m.control(t, "connection.get", schemas.NameRequest{Name: "evil"}); r.OK {
		t.Fatal("the cross-site post stored a connection")
	}
	// The route form too: a refusal next to the field it names, nothing stored.
	run(t, ctx, "save a route that moves to no folder",
		chromedp.Navigate(m.url+"/ui/route"),
		setValue("#f-connection", "unreach"),
		setValue("#f-name", "no_folder"),
		setValue("#f-after", "move"),
		chromedp.Click(chromedp.CSS("#save")),
		chromedp.WaitVisible(chromedp.CSS("#err-moveTo")),
	)
	mustContain(t, "the error next to moveTo", get(t, ctx, "moveTo error", chromedp.Text(chromedp.CSS("#err-moveTo"))), "moveTo is required")
	if r := m.control(t, "route.get", schemas.NameRequest{Name: "no_folder"}); r.OK {
		t.Fatal("a refused route form stored the route")
	}
	snap()

	// Every other page, for its labels (and the password).
	for _, path := range []string{"/ui/connections", "/ui/routes", "/ui/route", "/ui/events?bus=2"} {
		run(t, ctx, "open "+path, chromedp.Navigate(m.url+path), chromedp.WaitVisible(chromedp.CSS("h1")))
		snap()
	}
	for i, s := range seen {
		if strings.Contains(s, password) {
			t.Errorf("page #%d contains the password:\n%s", i, clip(s))
		}
	}
}
