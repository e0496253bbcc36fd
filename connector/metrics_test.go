package connector_test

import (
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/schemas"
)

// TestMetricsIMAP ingests mail through the whole Connector, with one cut IMAP connection,
// one dead letter and one route whose password is wrong, then reads /metrics over HTTP with
// the Prometheus text parser and checks each value against what happened.
func TestMetricsIMAP(t *testing.T) {
	srv := startMemIMAP(t, memCaps...)
	const initial = 150 // about 630 KB: more than the proxy lets through before its cut
	for i := 1; i <= initial; i++ {
		srv.append(t, "INBOX", bigMail(i))
	}
	srv.append(t, "INBOX", []byte("this is not a mail message at all\r\nno header here\r\n"))
	proxy := startCutProxy(t, srv.addr, 1)

	cfg := svcConfig(t)
	cfg.HTTPAddr = "127.0.0.1:0"
	log := &svcLog{}
	s := runService(t, cfg, log)
	addr := httpAddr(t, log)
	conn := func(name, addr, password string) map[string]any {
		host, port, _ := net.SplitHostPort(addr)
		return map[string]any{
			"name": name, "type": "imap", "host": host, "port": json.Number(port), "encryption": "none",
			"username": "alice", "password": password, "pollInterval": "1h",
		}
	}
	s.ok("mail.control.connection.put", conn("mem", proxy.ln.Addr().String(), "secret"))
	s.ok("mail.control.connection.put", conn("wrong", srv.addr, "not-the-password"))
	s.ok("mail.control.route.put", map[string]any{"name": "metered", "connection": "mem", "bus": 2})
	s.ok("mail.control.route.put", map[string]any{"name": "refused", "connection": "wrong", "bus": 3})

	s.waitStatus("metered", 60*time.Second, func(st schemas.RouteStatus) bool {
		return st.Published == initial && st.DeadLettered == 1 && st.State == schemas.StateIdle
	})
	// New mail while the route waits in IDLE: announced and published without a poll.
	idle := func() bool {
		v, _ := testkit.MetricValue(testkit.Scrape(t, addr), "mailbus_route_idle", "route=metered")
		return v == 1
	}
	waitUntil(t, 10*time.Second, "mailbus_route_idle 1", idle)
	srv.append(t, "INBOX", bigMail(initial+1))
	s.waitStatus("metered", 10*time.Second, func(st schemas.RouteStatus) bool { return st.Published == initial+1 })
	waitUntil(t, 10*time.Second, "mailbus_route_idle 1 again", idle)
	s.waitStatus("refused", 10*time.Second, func(st schemas.RouteStatus) bool { return st.State == schemas.StateError })

	// Stored bytes are counted by the acknowledgement handler, which may run just after
	// the worker saw the acknowledgement: wait for them to add up.
	events := storedMsgs(t, s.js, busNames.BusStream(2), busNames.BusSubject(2, "metered"))
	dead := storedMsgs(t, s.js, busNames.DeadStream(), busNames.DeadSubject("metered"))
	if len(events) != initial+1 || len(dead) != 1 {
		t.Fatalf("%d events and %d dead letters stored, want %d and 1", len(events), len(dead), initial+1)
	}
	wantBytes := len(dead[0].Data)
	for _, m := range events {
		wantBytes += len(m.Data)
	}
	var mfs map[string]*dto.MetricFamily
	waitUntil(t, 5*time.Second, fmt.Sprintf("mailbus_route_published_bytes_total %d", wantBytes), func() bool {
		mfs = testkit.Scrape(t, addr)
		v, _ := testkit.MetricValue(mfs, "mailbus_route_published_bytes_total", "route=metered", "bus=2")
		return v == float64(wantBytes)
	})

	exact := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"mailbus_route_events_published_total", []string{"route=metered", "bus=2"}, initial + 1},
		{"mailbus_route_dead_letters_total", []string{"route=metered", "bus=2"}, 1},
		{"mailbus_route_reconnects_total", []string{"route=metered"}, 1},             // after the cut
		{"mailbus_route_errors_total", []string{"route=metered", "kind=mailbox"}, 1}, // the cut
		{"mailbus_route_errors_total", []string{"route=metered"}, 1},                 // and no other
		{"mailbus_route_idle", []string{"route=metered"}, 1},
		{"mailbus_route_pending", []string{"route=metered"}, 0},
		{"mailbus_route_lease_owned", []string{"route=metered"}, 1},
		{"mailbus_route_errors_total", []string{"route=refused", "kind=permanent"}, 1},
		{"mailbus_route_reconnects_total", []string{"route=refused"}, 0},
		{"mailbus_route_events_published_total", []string{"route=refused", "bus=3"}, 0},
		{"mailbus_nats_connected", nil, 1},
		{"mailbus_nats_reconnects_total", nil, 0},
	}
	for _, c := range exact {
		if v, ok := testkit.MetricValue(mfs, c.name, c.labels...); !ok || v != c.want {
			t.Errorf("%s%v = %g (present %v), want %g", c.name, c.labels, v, ok, c.want)
		}
	}
	atLeast := []struct {
		name   string
		labels []string
		min    float64
	}{
		{"mailbus_route_polls_total", []string{"route=metered"}, 3}, // first session, after the cut, the IDLE news
		{"mailbus_route_fetch_seconds", []string{"route=metered"}, 2},
		// Every stored event and dead letter was acknowledged at least once.
		{"mailbus_bus_publish_seconds", []string{"bus=2"}, initial + 2},
	}
	for _, c := range atLeast {
		if v, ok := testkit.MetricValue(mfs, c.name, c.labels...); !ok || v < c.min {
			t.Errorf("%s%v = %g (present %v), want at least %g", c.name, c.labels, v, ok, c.min)
		}
	}
	// A deleted route's series go.
	s.ok("mail.control.route.delete", map[string]any{"name": "refused"})
	waitUntil(t, 10*time.Second, "no series of the deleted route", func() bool {
		_, ok := testkit.MetricValue(testkit.Scrape(t, addr), "mailbus_route_errors_total", "route=refused")
		return !ok
	})
	if _, ok := testkit.MetricValue(testkit.Scrape(t, addr), "mailbus_route_events_published_total", "route=metered"); !ok {
		t.Error("the series of the other route went too")
	}
	if proxy.cut.Load() != 1 {
		t.Errorf("the proxy cut %d connections, want 1", proxy.cut.Load())
	}
	if t.Failed() {
		l := log.String()
		t.Logf("log (end):\n%s", l[max(0, len(l)-8000):])
	}
}
