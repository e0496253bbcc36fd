package connector

import (
	"context"
	"errors"
	"net"
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
	kindPermanent = "permanent" // bad credentials, mailbox or definition: the route is parked
	kindTimeout   = "timeout"   // the mail server did not answer in time
	kindNATS      = "nats"      // publishing or storing a checkpoint failed
	kindMailbox   = "mailbox"   // anything else on the way to the mail server: network, BYE, protocol
)

// NewMetrics makes the replica's metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	routeBus := []string{"route", "bus"}
	route := []string{"route"}
	m := &Metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailbus_route_events_published_total",
			Help: "Events published and acknowledged by JetStream.",
		}, routeBus),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailbus_route_duplicates_total",
			Help: "Events (and dead letters) published again that JetStream dropped as duplicates of a stored Nats-Msg-Id; not counted as published.",
		}, routeBus),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailbus_route_dead_letters_total",
			Help: "Messages that could not become events, published to the dead-letter stream and acknowledged.",
		}, routeBus),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailbus_route_published_bytes_total",
			Help: "Bytes of events and dead letters JetStream stored (duplicates it dropped not counted).",
		}, routeBus),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailbus_route_polls_total",
			Help: "Cycles over the mailbox: a search for new mail and its publishing.",
		}, route),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailbus_route_reconnects_total",
			Help: "Mail server sessions started again after one failed.",
		}, route),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailbus_route_errors_total",
			Help: "Failed sessions or cycles, by kind: permanent, timeout, nats, mailbox.",
		}, []string{"route", "kind"}),
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

// route returns the metrics of one route, with its labels bound once.
func (m *Metrics) route(name string, bus int) *routeMetrics {
	if m == nil {
		return nil
	}
	b := strconv.Itoa(bus)
	return &routeMetrics{
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

// forget drops the series of a deleted route, so that they do not stay until the
// process ends.
func (m *Metrics) forget(route string) {
	if m == nil {
		return
	}
	for _, v := range []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{m.published, m.duplicates, m.dead, m.bytes, m.polls, m.reconnects, m.errors, m.idle, m.fetch} {
		v.DeletePartialMatch(prometheus.Labels{"route": route})
	}
}

// stored counts a publish JetStream acknowledged: its latency on bus, and its bytes for
// the route named by the subject's last token (mail.bus.<bus>.<route>, mail.dead.<route>).
func (m *Metrics) stored(bus int, msg *nats.Msg, ack *jetstream.PubAck, took time.Duration) {
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

// routeMetrics are one route's metrics; the workers call its methods, each a no-op on nil.
type routeMetrics struct {
	published, dead, polls, reconnects prometheus.Counter
	duplicates                         prometheus.Counter
	errors                             *prometheus.CounterVec
	idle                               prometheus.Gauge
	fetch                              prometheus.Observer
}

// done counts a message whose event (or, with dead, dead letter) was acknowledged.
func (r *routeMetrics) done(dead bool) {
	switch {
	case r == nil:
	case dead:
		r.dead.Inc()
	default:
		r.published.Inc()
	}
}

// duplicate counts an event (or dead letter) the stream dropped as a duplicate.
func (r *routeMetrics) duplicate() {
	if r != nil {
		r.duplicates.Inc()
	}
}

// poll counts a cycle over the mailbox.
func (r *routeMetrics) poll() {
	if r != nil {
		r.polls.Inc()
	}
}

// reconnect counts a session started again after one failed.
func (r *routeMetrics) reconnect() {
	if r != nil {
		r.reconnects.Inc()
	}
}

// failed counts a failed session or cycle by its kind; permanent is the worker's own
// verdict (the Exchange worker knows more permanent errors than IsPermanent).
func (r *routeMetrics) failed(err error, permanent bool) {
	if r != nil && err != nil {
		r.errors.WithLabelValues(errorKind(err, permanent)).Inc()
	}
}

// idling sets the IDLE gauge to 1 and returns the function that sets it back to 0.
func (r *routeMetrics) idling() func() {
	if r == nil {
		return func() {}
	}
	r.idle.Set(1)
	return func() { r.idle.Set(0) }
}

// fetched observes the duration of a FETCH batch that started at start.
func (r *routeMetrics) fetched(start time.Time) {
	if r != nil {
		r.fetch.Observe(time.Since(start).Seconds())
	}
}

// errorKind sorts an error into one of the few kinds of mailbus_route_errors_total.
func errorKind(err error, permanent bool) string {
	var apiErr *jetstream.APIError
	var netErr net.Error
	switch {
	case permanent || IsPermanent(err):
		return kindPermanent
	case errors.As(err, &apiErr), errors.Is(err, jetstream.ErrAsyncPublishTimeout),
		errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrNoResponders):
		return kindNATS
	case errors.Is(err, errIMAPTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return kindTimeout
	}
	return kindMailbox
}

// registerNATS adds the state of the replica's NATS connection, read when scraped.
func registerNATS(reg prometheus.Registerer, nc *nats.Conn) {
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

// routeCollector exports, at scrape time, what this replica's StatusBoard and leases know
// about its routes: the state, not counts, so reading it when scraped is enough.
type routeCollector struct {
	board  *StatusBoard
	leases *leases

	pending, owned *prometheus.Desc
}

func newRouteCollector(board *StatusBoard, ls *leases) *routeCollector {
	route := []string{"route"}
	return &routeCollector{
		board: board, leases: ls,
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
	for _, st := range c.board.all() {
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(st.Pending), st.Route)
		owned := 0.0
		if c.leases.holding(st.Route) {
			owned = 1
		}
		ch <- prometheus.MustNewConstMetric(c.owned, prometheus.GaugeValue, owned, st.Route)
	}
}
