package console_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mailbus/mailbus/schemas"
)

// loggedIn returns an HTTP client with a console session.
func loggedIn(b testing.TB, m *mailbus) *http.Client {
	b.Helper()
	hc := client(b)
	resp, err := hc.Get(m.url + "/ui/login")
	if err != nil {
		b.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	csrf := csrfInput.FindSubmatch(page)
	if csrf == nil {
		b.Fatalf("no login form")
	}
	resp, err = hc.PostForm(m.url+"/ui/login", map[string][]string{"csrf": {string(csrf[1])}, "token": {m.token}})
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		b.Fatalf("login = %s", resp.Status)
	}
	return hc
}

// define puts one connection and n routes on it, disabled: the page shows them all the
// same, without n mailboxes to serve.
func define(b testing.TB, m *mailbus, n int) {
	b.Helper()
	if r := m.control(b, "connection.put", schemas.Connection{Name: "bench", Type: "imap", Host: "127.0.0.1",
		Port: 1, Encryption: "none", Auth: "basic", Username: "u", Password: "p", LogLevel: "errors"}); !r.OK {
		b.Fatalf("connection.put: %+v", r.Error)
	}
	for i := range n {
		r := m.control(b, "route.put", schemas.Route{Name: fmt.Sprintf("route_%04d", i), Connection: "bench",
			Bus: i % 4, Mailbox: "INBOX", Disabled: true, Description: "Route for receiving letters"})
		if !r.OK {
			b.Fatalf("route.put: %+v", r.Error)
		}
	}
}

func fetch(b testing.TB, hc *http.Client, url string) int {
	resp, err := hc.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s = %s", url, resp.Status)
	}
	return len(body)
}

// BenchmarkPageWeight reports the bytes of each page (one connection, one route) and of
// the two static files every page loads; ns/op is serving the routes page.
func BenchmarkPageWeight(b *testing.B) {
	m := startMailbus(b, "tok-bench", nil)
	define(b, m, 1)
	hc := loggedIn(b, m)
	pages := []struct{ name, path string }{
		{"connections", "/ui/connections"},
		{"connection_form", "/ui/connection?name=bench"},
		{"routes", "/ui/routes"},
		{"route_form", "/ui/route?name=route_0000"},
		{"events", "/ui/events"},
		{"css", "/ui/static/console.css"},
		{"js", "/ui/static/console.js"},
	}
	sizes := make([]int, len(pages))
	for i, p := range pages {
		sizes[i] = fetch(b, hc, m.url+p.path)
	}
	for b.Loop() {
		fetch(b, hc, m.url+"/ui/routes")
	}
	// After the loop: b.Loop resets the timer, and with it the metrics reported so far.
	for i, p := range pages {
		b.ReportMetric(float64(sizes[i]), "B/"+p.name)
	}
}

// BenchmarkRoutesPage1000 loads the routes page with 1,000 routes in headless Chromium and
// reports its bytes, the server's time to the last byte and the browser's first contentful
// paint, from the page's own Navigation and Paint Timing entries.
func BenchmarkRoutesPage1000(b *testing.B) {
	m := startMailbus(b, "tok-bench", nil)
	define(b, m, 1000)
	ctx := newBrowser(b)
	login(b, ctx, m, m.token)
	type timing struct {
		Bytes       float64 `json:"bytes"`
		ResponseEnd float64 `json:"responseEnd"`
		DOMReady    float64 `json:"domReady"`
		FCP         float64 `json:"fcp"`
	}
	var sum timing
	n := 0
	for b.Loop() {
		run(b, ctx, "load the routes page", chromedp.Navigate(m.url+"/ui/routes"),
			chromedp.WaitVisible(chromedp.CSS("#route-route_0999")))
		var tm timing
		for deadline := time.Now().Add(10 * time.Second); tm.FCP == 0 && time.Now().Before(deadline); {
			tm = get(b, ctx, "timing", chromedp.Evaluate[timing](`(() => {
				const nav = performance.getEntriesByType('navigation')[0];
				const fcp = performance.getEntriesByName('first-contentful-paint')[0];
				return {bytes: nav.decodedBodySize, responseEnd: nav.responseEnd - nav.requestStart,
					domReady: nav.domContentLoadedEventEnd - nav.startTime, fcp: fcp ? fcp.startTime : 0};
			})()`))
		}
		sum.Bytes, sum.ResponseEnd, sum.DOMReady, sum.FCP = tm.Bytes, sum.ResponseEnd+tm.ResponseEnd, sum.DOMReady+tm.DOMReady, sum.FCP+tm.FCP
		n++
	}
	b.ReportMetric(sum.Bytes, "B/page")
	b.ReportMetric(sum.ResponseEnd/float64(n), "ms-response")
	b.ReportMetric(sum.DOMReady/float64(n), "ms-domready")
	b.ReportMetric(sum.FCP/float64(n), "ms-first-paint")
}
