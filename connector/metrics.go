package connector

import (
	"github.com/prometheus/client_golang/prometheus"
)

// routeCollector exports, at scrape time, what this replica's StatusBoard and leases know
// about its routes. Reading the board when scraped keeps the workers free of metrics
// code; a route's counters start at 0 on the replica that takes it over.
type routeCollector struct {
	board  *StatusBoard
	leases *leases

	published, dead, pending, owned *prometheus.Desc
}

func newRouteCollector(board *StatusBoard, ls *leases) *routeCollector {
	route := []string{"route"}
	return &routeCollector{
		board: board, leases: ls,
		published: prometheus.NewDesc("mailbus_route_events_published_total",
			"Events published and acknowledged by JetStream, by route, since the route started on this replica.", route, nil),
		dead: prometheus.NewDesc("mailbus_route_dead_letters_total",
			"Messages sent to the dead-letter stream, by route, since the route started on this replica.", route, nil),
		pending: prometheus.NewDesc("mailbus_route_pending",
			"Messages in the mailbox beyond the route's checkpoint, as last seen.", route, nil),
		owned: prometheus.NewDesc("mailbus_route_lease_owned",
			"1 when this replica holds the route's lease and runs its worker, else 0.", route, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *routeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.published
	ch <- c.dead
	ch <- c.pending
	ch <- c.owned
}

// Collect implements prometheus.Collector.
func (c *routeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.board.all() {
		ch <- prometheus.MustNewConstMetric(c.published, prometheus.CounterValue, float64(st.Published), st.Route)
		ch <- prometheus.MustNewConstMetric(c.dead, prometheus.CounterValue, float64(st.DeadLettered), st.Route)
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(st.Pending), st.Route)
		owned := 0.0
		if c.leases.holding(st.Route) {
			owned = 1
		}
		ch <- prometheus.MustNewConstMetric(c.owned, prometheus.GaugeValue, owned, st.Route)
	}
}
