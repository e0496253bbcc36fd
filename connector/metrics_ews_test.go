package connector_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/ewstest"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/connector/metrics"
	"github.com/mailbus/mailbus/schemas"
)

// gathered returns the value of the one sample of family name with exactly labels, read
// through reg as a scrape would; ok is false when there is none.
func gathered(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (v float64, ok bool) {
	t.Helper()
next:
	for _, m := range testkit.Gather(t, reg)[name].GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, l := range m.GetLabel() {
			if labels[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		if m.Counter != nil || m.Histogram != nil {
			return testkit.SampleValue(m), true
		}
	}
	return 0, false
}

// TestMetricsExchange: an Exchange route counts its events, dead letters, stored bytes,
// polls and errors, its GetItem batches are timed, and its publishes are timed on its bus.
func TestMetricsExchange(t *testing.T) {
	rt := connector.EWSRuntime(t)
	reg := prometheus.NewRegistry()
	rt.Metrics = metrics.New(reg)
	rt.Publishers.Measure(rt.Metrics)
	f := ewstest.New(t, false)
	ids := f.Add(3)
	f.BadItems[ids[1]] = "ErrorMimeContentConversionFailed"
	f.Fail500 = 1 // the first request: a temporary error, retried
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
	spec.Connection.Auth = schemas.AuthNone
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "all messages marked read", func() bool { return f.ReadCount() == 3 })
	connector.EWSWaitFor(t, "status counts", func() bool {
		st := connector.EWSRouteStatus(rt, "exch_inbox")
		return st.Published == 2 && st.DeadLettered == 1
	})

	stored := 0
	for _, m := range connector.EWSStored(t, rt, rt.Names.BusStream(1), rt.Names.BusSubject(1, "exch_inbox")) {
		stored += len(m.Data)
	}
	for _, m := range connector.EWSStored(t, rt, rt.Names.DeadStream(), rt.Names.DeadSubject("exch_inbox")) {
		stored += len(m.Data)
	}
	routeBus := map[string]string{"route": "exch_inbox", "bus": "1"}
	connector.EWSWaitFor(t, "stored bytes counted", func() bool {
		v, _ := gathered(t, reg, "mailbus_route_published_bytes_total", routeBus)
		return v == float64(stored)
	})
	for _, c := range []struct {
		name    string
		labels  map[string]string
		want    float64
		atLeast bool
	}{
		{"mailbus_route_events_published_total", routeBus, 2, false},
		{"mailbus_route_dead_letters_total", routeBus, 1, false},
		{"mailbus_route_errors_total", map[string]string{"route": "exch_inbox", "kind": "mailbox"}, 1, false},
		{"mailbus_route_polls_total", map[string]string{"route": "exch_inbox"}, 2, true},
		{"mailbus_bus_publish_seconds", map[string]string{"bus": "1"}, 3, true},
		{"mailbus_route_fetch_seconds", map[string]string{"route": "exch_inbox"}, 1, false}, // one GetItem
	} {
		v, ok := gathered(t, reg, c.name, c.labels)
		if !ok || (c.atLeast && v < c.want) || (!c.atLeast && v != c.want) {
			t.Errorf("%s%v = %g (present %v), want %g (at least: %v)", c.name, c.labels, v, ok, c.want, c.atLeast)
		}
	}
}
