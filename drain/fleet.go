package drain

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fleetCollector exports what the drain knows of the fleet, counted from the targets'
// status when Prometheus scrapes the drain (nothing to keep in step as targets come and
// go): how many targets each publisher has in each state, by job, and which version of
// scrape-once each publisher runs.
type fleetCollector struct {
	d       *Drain
	targets *prometheus.Desc
	info    *prometheus.Desc
}

func newFleetCollector(d *Drain) *fleetCollector {
	return &fleetCollector{
		d: d,
		targets: prometheus.NewDesc("prometheus_streams_drain_fleet_targets",
			"Targets by job, publisher (edge host) and state, as on /targets: up, down (the edge's scrape failed), pending, retrying, rejected, expired, stale.",
			[]string{"job", "publisher", "state"}, nil),
		info: prometheus.NewDesc("prometheus_streams_drain_publisher_build_info",
			"1 for each publisher (edge host) and the version of scrape-once that published its newest message; version is empty for builds that do not say.",
			[]string{"publisher", "version"}, nil),
	}
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.targets
	ch <- c.info
}

type fleetKey struct{ job, publisher string }

// fleetRow is what Collect copies of one target under the drain's lock; the counting
// happens after, so that a scrape of the drain holds up its intake only for a copy.
type fleetRow struct {
	job, publisher, version string
	state                   State
	received                time.Time
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	c.d.mu.Lock()
	rows := make([]fleetRow, 0, len(c.d.targets)+len(c.d.forgotten))
	now := c.d.opts.Now()
	add := func(st *status) {
		rows = append(rows, fleetRow{st.job, st.publisher, st.version, st.state(now, c.d.opts.MaxAge), st.received})
	}
	for _, t := range c.d.targets {
		if !t.status.received.IsZero() {
			add(&t.status)
		}
	}
	for _, t := range c.d.forgotten {
		add(&t.status)
	}
	c.d.mu.Unlock()

	type count struct {
		fleetKey
		state State
	}
	counts := map[count]int{}
	newest := map[string]*fleetRow{} // by publisher: its version is that of its newest message
	for i := range rows {
		r := &rows[i]
		counts[count{fleetKey{r.job, r.publisher}, r.state}]++
		if n := newest[r.publisher]; n == nil || r.received.After(n.received) {
			newest[r.publisher] = r
		}
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.targets, prometheus.GaugeValue, float64(n), k.job, k.publisher, string(k.state))
	}
	for publisher, r := range newest {
		ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, publisher, r.version)
	}
}
