// Package metrics holds what the workers and publishers of one replica count, for
// /metrics (Prometheus).
package metrics

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are what the workers and publishers of one replica count, for /metrics. Labels
// are few and bounded: route (the routes this replica ran), bus (0..3) and kind (a fixed
// set). A nil *Metrics counts nothing, so a Runtime built without one works.
//
// Counters live as long as the process: a route that moved to another replica keeps its
// last values here, and starts from 0 there (Prometheus' rate and increase take that).
// A deleted route's series are dropped.
type Metrics struct {
	published, dead, bytes *prometheus.CounterVec // route, bus
	duplicates             *prometheus.CounterVec // route, bus
	polls, reconnects      *prometheus.CounterVec // route
	errors                 *prometheus.CounterVec // route, kind
	idle                   *prometheus.GaugeVec   // route
	fetch                  *prometheus.HistogramVec
	publish                *prometheus.HistogramVec
}

// Error kinds of mailbus_route_errors_total.
const (
	KindPermanent = "permanent" // bad credentials, mailbox or definition: the route is parked
	KindTimeout   = "timeout"   // the mail server did not answer in time
	KindNATS      = "nats"      // publishing or storing a checkpoint failed
	KindMailbox   = "mailbox"   // anything else on the way to the mail server: network, BYE, protocol
)

// New makes the replica's metrics and registers them with reg.
func New(reg prometheus.Registerer) *Metrics {
	routeBus := []string{"route", "bus"}
	route := []string{"route"}
	counter := func(name, help string, labels []string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	m := &Metrics{
		published: counter("mailbus_route_events_published_total",
			"Events published and acknowledged by JetStream.", routeBus),
		duplicates: counter("mailbus_route_duplicates_total",
			"Events (and dead letters) published again that JetStream dropped as duplicates of a stored Nats-Msg-Id; not counted as published.", routeBus),
		dead: counter("mailbus_route_dead_letters_total",
			"Messages that could not become events, published to the dead-letter stream and acknowledged.", routeBus),
		bytes: counter("mailbus_route_published_bytes_total",
			"Bytes of events and dead letters JetStream stored (duplicates it dropped not counted).", routeBus),
		polls: counter("mailbus_route_polls_total",
			"Cycles over the mailbox: a search for new mail and its publishing.", route),
		reconnects: counter("mailbus_route_reconnects_total",
			"Mail server sessions started again after one failed.", route),
		errors: counter("mailbus_route_errors_total",
			"Failed sessions or cycles, by kind: permanent, timeout, nats, mailbox.", []string{"route", "kind"}),
		idle: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mailbus_route_idle",
			Help: "1 while the route's IMAP session waits in IDLE for new mail, else 0.",
		}, route),
		fetch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mailbus_route_fetch_seconds",
			Help: "Duration of one batch fetch, mapped and published on the way: an IMAP FETCH (about 16 MB of mail, 256 to 2,048 messages) or an EWS GetItem (50 items).",
			// 5 ms to about 80 s.
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 15),
		}, route),
		publish: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mailbus_bus_publish_seconds",
			Help: "Time from publishing an event or dead letter to JetStream's acknowledgement, by bus.",
			// 0.5 ms to about 16 s.
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"bus"}),
	}
	reg.MustRegister(m.published, m.duplicates, m.dead, m.bytes, m.polls, m.reconnects, m.errors, m.idle, m.fetch, m.publish)
	return m
}

// Route returns the metrics of one route, with its labels bound once; nil on a nil m.
func (m *Metrics) Route(name string, bus int) *RouteMetrics {
	if m == nil {
		return nil
	}
	b := strconv.Itoa(bus)
	return &RouteMetrics{
		published:  m.published.WithLabelValues(name, b),
		duplicates: m.duplicates.WithLabelValues(name, b),
		dead:       m.dead.WithLabelValues(name, b),
		polls:      m.polls.WithLabelValues(name),
		reconnects: m.reconnects.WithLabelValues(name),
		errors:     m.errors.MustCurryWith(prometheus.Labels{"route": name}),
		idle:       m.idle.WithLabelValues(name),
		fetch:      m.fetch.WithLabelValues(name),
	}
}

// Forget drops the series of a deleted route, so that they do not stay until the
// process ends.
func (m *Metrics) Forget(route string) {
	if m == nil {
		return
	}
	for _, v := range []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{m.published, m.duplicates, m.dead, m.bytes, m.polls, m.reconnects, m.errors, m.idle, m.fetch} {
		v.DeletePartialMatch(prometheus.Labels{"route": route})
	}
}

// Stored counts a publish JetStream acknowledged: its latency on bus, and its bytes for
// the route named by the subject's last token (mail.bus.<bus>.<route>, mail.dead.<route>).
func (m *Metrics) Stored(bus int, msg *nats.Msg, ack *jetstream.PubAck, took time.Duration) {
	if m == nil {
		return
	}
	b := strconv.Itoa(bus)
	m.publish.WithLabelValues(b).Observe(took.Seconds())
	if !ack.Duplicate {
		route := msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]
		m.bytes.WithLabelValues(route, b).Add(float64(len(msg.Data)))
	}
}

// RouteMetrics are one route's metrics; the workers call its methods, each a no-op on nil.
type RouteMetrics struct {
	published, dead, polls, reconnects prometheus.Counter
	duplicates                         prometheus.Counter
	errors                             *prometheus.CounterVec
	idle                               prometheus.Gauge
	fetch                              prometheus.Observer
}

// Done counts a message whose event (or, with dead, dead letter) was acknowledged.
func (r *RouteMetrics) Done(dead bool) {
	switch {
	case r == nil:
	case dead:
		r.dead.Inc()
	default:
		r.published.Inc()
	}
}

// Duplicate counts an event (or dead letter) the stream dropped as a duplicate.
func (r *RouteMetrics) Duplicate() {
	if r != nil {
		r.duplicates.Inc()
	}
}

// Poll counts a cycle over the mailbox.
func (r *RouteMetrics) Poll() {
	if r != nil {
		r.polls.Inc()
	}
}

// Reconnect counts a session started again after one failed.
func (r *RouteMetrics) Reconnect() {
	if r != nil {
		r.reconnects.Inc()
	}
}

// Failed counts a failed session or cycle of the given kind (KindPermanent, ...).
func (r *RouteMetrics) Failed(kind string) {
	if r != nil {
		r.errors.WithLabelValues(kind).Inc()
	}
}

// Idling sets the IDLE gauge to 1 and returns the function that sets it back to 0.
func (r *RouteMetrics) Idling() func() {
	if r == nil {
		return func() {}
	}
	r.idle.Set(1)
	return func() { r.idle.Set(0) }
}

// Fetched observes the duration of a FETCH batch that started at start.
func (r *RouteMetrics) Fetched(start time.Time) {
	if r != nil {
		r.fetch.Observe(time.Since(start).Seconds())
	}
}

// RegisterNATS adds the state of the replica's NATS connection, read when scraped.
func RegisterNATS(reg prometheus.Registerer, nc *nats.Conn) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mailbus_nats_connected",
			Help: "1 while the replica's NATS connection is connected, else 0.",
		}, func() float64 {
			if nc.IsConnected() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "mailbus_nats_reconnects_total",
			Help: "Reconnects of the replica's NATS connection.",
		}, func() float64 { return float64(nc.Stats().Reconnects) }),
	)
}

// RouteGauge is what a replica knows about one route's state when scraped.
type RouteGauge struct {
	Route   string
	Pending int64 // messages beyond the checkpoint not yet published, as last seen
	Owned   bool  // this replica holds the route's lease and runs its worker
}

// routeCollector exports, at scrape time, what this replica's status board and leases know
// about its routes: the state, not counts, so reading it when scraped is enough.
type routeCollector struct {
	routes func() []RouteGauge

	pending, owned *prometheus.Desc
}

// NewRouteCollector makes the collector of mailbus_route_pending and
// mailbus_route_lease_owned, which calls routes at every scrape.
func NewRouteCollector(routes func() []RouteGauge) prometheus.Collector {
	route := []string{"route"}
	return &routeCollector{
		routes: routes,
		pending: prometheus.NewDesc("mailbus_route_pending",
			"Messages the route selected beyond its checkpoint and has not yet published, as last seen; 0 after a complete cycle.", route, nil),
		owned: prometheus.NewDesc("mailbus_route_lease_owned",
			"1 when this replica holds the route's lease and runs its worker, else 0.", route, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *routeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.owned
}

// Collect implements prometheus.Collector.
func (c *routeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.routes() {
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(st.Pending), st.Route)
		owned := 0.0
		if st.Owned {
			owned = 1
		}
		ch <- prometheus.MustNewConstMetric(c.owned, prometheus.GaugeValue, owned, st.Route)
	}
}
