package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailbus/mailbus/schemas"
)

// syncBuffer is a bytes.Buffer the demo writes to while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runDemo runs demo with args until its output has want lines starting with prefix, and
// returns those lines.
func runDemo(t *testing.T, prefix string, want int, args ...string) []string {
	t.Helper()
	clearEnv(t)
	t.Setenv("MAILBUS_EMBEDDED_LISTEN", "127.0.0.1:-1")
	t.Setenv("MAILBUS_DATA_DIR", t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- demo(ctx, append([]string{"-every", "200ms"}, args...), &out) }()

	var lines []string
	deadline := time.After(30 * time.Second)
	for len(lines) < want {
		select {
		case err := <-done:
			t.Fatalf("demo() = %v before %d events; output:\n%s", err, want, out.String())
		case <-deadline:
			t.Fatalf("fewer than %d events in 30s; output:\n%s", want, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		lines = lines[:0]
		for l := range strings.SplitSeq(out.String(), "\n") {
			if strings.HasPrefix(l, prefix) {
				lines = append(lines, l)
			}
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo() after cancel = %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("demo did not stop in 15s after cancel")
	}
	return lines
}

func TestDemo(t *testing.T) {
	text := strings.Join(runDemo(t, "#", 7), "\n")
	for _, want := range []string{
		"From: Иван Петров <ivan@example.org>", // RFC 2047, UTF-8
		"Subject: Счёт на оплату",              // windows-1251
		"Subject: Напоминание о встрече",       // koi8-r
		"attachments: отчёт.pdf (12 KB)",
		"logo.png",
		"ticket=41",
		"+html",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output has no %q:\n%s", want, text)
		}
	}
}

func TestDemoJSON(t *testing.T) {
	lines := runDemo(t, "{", 7, "-json")
	for _, l := range lines {
		var ev schemas.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Route != "demo_inbox" || ev.Subject == "" {
			t.Errorf("line %q: event %+v (%v)", l, ev, err)
		}
	}
}

// TestDemoConsole: the demo prints the admin console's link with a random token, and that
// token logs in to a console that lists the demo's route.
func TestDemoConsole(t *testing.T) {
	clearEnv(t)
	t.Setenv("MAILBUS_EMBEDDED_LISTEN", "127.0.0.1:-1")
	t.Setenv("MAILBUS_DATA_DIR", t.TempDir())
	t.Setenv("MAILBUS_HTTP_ADDR", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- demo(ctx, []string{"-every", "1h"}, &out) }()
	defer func() { cancel(); <-done }()

	link := regexp.MustCompile(`Admin console: (http://[^/\s]+)/ui/login#token=([A-Za-z0-9_-]{20,})`)
	var m []string
	for deadline := time.Now().Add(30 * time.Second); m == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no console link in 30s:\n%s", out.String())
		}
		m = link.FindStringSubmatch(out.String())
	}
	base, token := m[1], m[2]

	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	resp, err := hc.Get(base + "/ui/login")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(page)
	if csrf == nil {
		t.Fatalf("login page has no form:\n%s", page)
	}
	resp, err = hc.PostForm(base+"/ui/login", url.Values{"csrf": {string(csrf[1])}, "token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = hc.Get(base + "/ui/routes")
	if err != nil {
		t.Fatal(err)
	}
	routes, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(routes), `id="route-demo_inbox"`) {
		t.Fatalf("GET /ui/routes with the printed token = %s:\n%.2000s", resp.Status, routes)
	}
}
