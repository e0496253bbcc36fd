package console_test

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/schemas"
)

// mailbus is one running replica with the console on.
type mailbus struct {
	c     *connector.Connector
	url   string // http://127.0.0.1:port
	nc    *nats.Conn
	token string
}

// startMailbus runs a Connector on an embedded NATS server with its HTTP server on a free
// port and the console on (when token is not empty); roots trust a test mail server.
func startMailbus(t testing.TB, token string, roots *x509.CertPool) *mailbus {
	t.Helper()
	return startMailbusWith(t, token, roots, nil)
}

// startMailbusWith is startMailbus with the configuration changed by edit first.
func startMailbusWith(t testing.TB, token string, roots *x509.CertPool, edit func(*connector.Config)) *mailbus {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	cfg := connector.Config{
		EmbeddedListen: "127.0.0.1:-1",
		DataDir:        t.TempDir(),
		SubjectPrefix:  "mail",
		StreamReplicas: 1,
		DedupWindow:    time.Minute,
		MaxInlineBytes: 1 << 18,
		SecretKey:      base64.StdEncoding.EncodeToString(key),
		HTTPAddr:       "127.0.0.1:0",
		AdminToken:     token,
		Instance:       "console-test",
	}
	if edit != nil {
		edit(&cfg)
	}
	var opts []connector.Option
	if roots != nil {
		opts = append(opts, connector.WithTLSRootCAs(roots))
	}
	c, err := connector.New(cfg, nil, opts...)
	if err != nil {
		t.Fatalf("connector.New() = %v", err)
	}
	testkit.RunService(t, c)
	nc, err := nats.Connect(cmp.Or(cfg.NATSURL, c.ClientURL()))
	if err != nil {
		t.Fatalf("nats.Connect() = %v", err)
	}
	t.Cleanup(nc.Close)
	return &mailbus{c: c, url: "http://" + c.HTTPAddr(), nc: nc, token: token}
}

// control sends a control request as the CLI would.
func (m *mailbus) control(t testing.TB, subject string, req any) schemas.Reply {
	t.Helper()
	data, _ := json.Marshal(req)
	msg, err := m.nc.Request("mail.control."+subject, data, 30*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	var r schemas.Reply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		t.Fatalf("reply of %s: %v", subject, err)
	}
	return r
}

// client is an HTTP client with a cookie jar that does not follow redirects.
func client(t testing.TB) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// chromiumPath finds headless Chromium. Without one the browser tests skip, except in CI
// (CI=true), where a missing browser is a failure: .ci/run installs it.
func chromiumPath(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true but no chromium on PATH: .ci/install-chromium.sh installs it")
	}
	t.Skip("browser tests need headless Chromium (Debian: apt-get install chromium, or .ci/install-chromium.sh); skipped")
	return ""
}

// newBrowser starts headless Chromium for the test. Its tab's actions time out with the
// test's budget.
func newBrowser(t testing.TB) context.Context {
	t.Helper()
	path := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // the tests run as root in containers
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.Flag("accept-lang", "en-US,en"),
		chromedp.WindowSize(1280, 860),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() { cancelTime(); cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// run runs browser steps or fails the test with what was being done.
func run(t testing.TB, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// get runs one browser action that returns a value.
func get[T any](t testing.TB, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// html is the page as the browser has it now.
func html(t testing.TB, ctx context.Context) string {
	t.Helper()
	return get(t, ctx, "read the page", chromedp.Evaluate[string]("document.documentElement.outerHTML"))
}

// login logs the browser in through the form.
func login(t testing.TB, ctx context.Context, m *mailbus, token string) {
	t.Helper()
	run(t, ctx, "log in",
		chromedp.Navigate(m.url+"/ui/login"),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#login button[type=submit]")),
		// The next page: the list, or the login form again with its error.
		waitFor(`location.pathname !== '/ui/login' || document.getElementById('login-error') !== null`),
	)
}

// jsString quotes s for a JavaScript expression.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// setValue sets an input's or select's value as a person would leave it.
func setValue(sel, value string) chromedp.Action[chromedp.Void] {
	return chromedp.SetValue(chromedp.CSS(sel), value)
}

// pageURL is a console URL with a query.
func pageURL(m *mailbus, path string, q url.Values) string {
	if len(q) == 0 {
		return m.url + path
	}
	return m.url + path + "?" + q.Encode()
}

func mustContain(t testing.TB, what, s, want string) {
	t.Helper()
	if !strings.Contains(s, want) {
		t.Fatalf("%s does not contain %q:\n%s", what, want, clip(s))
	}
}

func clip(s string) string {
	if len(s) > 3000 {
		return s[:3000] + fmt.Sprintf("... (%d bytes)", len(s))
	}
	return s
}

// waitFor waits until a JavaScript condition holds in the page. It evaluates the condition
// again and again rather than polling inside the page, since a navigation (a form post)
// destroys the page's context under a poll.
//
// A JavaScript condition does not tell chromedp that the page it tracks was
// replaced. After a navigation started by a click or a key, waitFor for the new page
// complete and then one of chromedp's own waits on it, before any action that finds a node:
// a Click right after waitFor alone could use the old page's node ids ("Could not find node
// with given id", once in some twenty runs).
func waitFor(cond string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		deadline := time.Now().Add(90 * time.Second)
		var last error
		for time.Now().Before(deadline) {
			ok, err := chromedp.Evaluate[bool]("!!("+cond+")")(ctx, t)
			if err == nil && ok {
				return chromedp.Void{}, nil
			}
			last = err
			select {
			case <-ctx.Done():
				return chromedp.Void{}, ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
		return chromedp.Void{}, fmt.Errorf("waited 90s for %s (last error %v)", cond, last)
	}
}
