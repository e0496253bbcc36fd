package metrics_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/connector/metrics"
)

// series reads every series of reg as "name{label=value,...}" -> value, in the registry's
// (sorted) label order.
func series(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			k := mf.GetName() + "{"
			for i, l := range m.GetLabel() {
				if i > 0 {
					k += ","
				}
				k += l.GetName() + "=" + l.GetValue()
			}
			k += "}"
			out[k] = testkit.SampleValue(m)
		}
	}
	return out
}

// TestRouteMetrics: a route's counters carry its labels, a nil Metrics counts nothing, and
// Forget drops the route's series.
func TestRouteMetrics(t *testing.T) {
	var none *metrics.Metrics
	r := none.Route("r", 0) // a Runtime built without metrics
	r.Done(false)
	r.Failed(metrics.KindNATS)
	r.Idling()()
	none.Forget("r")

	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg)
	r = m.Route("support", 2)
	r.Done(false)
	r.Done(false)
	r.Done(true)
	r.Duplicate()
	r.Poll()
	r.Reconnect()
	r.Failed(metrics.KindTimeout)
	r.Fetched(time.Now())
	stop := r.Idling()
	got := series(t, reg)
	for k, want := range map[string]float64{
		"mailbus_route_events_published_total{bus=2,route=support}": 2,
		"mailbus_route_dead_letters_total{bus=2,route=support}":     1,
		"mailbus_route_duplicates_total{bus=2,route=support}":       1,
		"mailbus_route_polls_total{route=support}":                  1,
		"mailbus_route_reconnects_total{route=support}":             1,
		"mailbus_route_errors_total{kind=timeout,route=support}":    1,
		"mailbus_route_fetch_seconds{route=support}":                1,
		"mailbus_route_idle{route=support}":                         1,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], want, got)
		}
	}
	stop()
	if v := series(t, reg)["mailbus_route_idle{route=support}"]; v != 0 {
		t.Errorf("idle after the IDLE ended = %v, want 0", v)
	}
	m.Forget("support")
	if got := series(t, reg); len(got) != 0 {
		t.Errorf("series after Forget: %v, want none", got)
	}
}

// TestRouteCollector: the lease and pending gauges are read from the function at each
// scrape.
func TestRouteCollector(t *testing.T) {
	pending := int64(7)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(metrics.NewRouteCollector(func() []metrics.RouteGauge {
		return []metrics.RouteGauge{{Route: "a", Pending: pending, Owned: true}, {Route: "b"}}
	}))
	for _, p := range []int64{7, 3} {
		pending = p
		want := map[string]float64{
			"mailbus_route_pending{route=a}": float64(p), "mailbus_route_pending{route=b}": 0,
			"mailbus_route_lease_owned{route=a}": 1, "mailbus_route_lease_owned{route=b}": 0,
		}
		got := series(t, reg)
		if len(got) != len(want) {
			t.Errorf("series = %v, want %v", got, want)
		}
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				t.Errorf("%s = %v, want %v", k, g, v)
			}
		}
	}
}
