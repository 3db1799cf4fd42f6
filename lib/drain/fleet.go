package drain

import (
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
			"1 for each publisher (edge host) and the version of scrape-once that published its targets' newest scrapes; version is empty for builds that do not say.",
			[]string{"publisher", "version"}, nil),
	}
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.targets
	ch <- c.info
}

type fleetKey struct{ job, publisher string }

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[fleetKey]map[State]int{}
	versions := map[[2]string]struct{}{}
	c.d.mu.Lock()
	now := c.d.opts.Now()
	add := func(st *status) {
		k := fleetKey{st.job, st.publisher}
		byState := counts[k]
		if byState == nil {
			byState = map[State]int{}
			counts[k] = byState
		}
		byState[st.state(now, c.d.opts.MaxAge)]++
		versions[[2]string{st.publisher, st.version}] = struct{}{}
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

	for k, byState := range counts {
		for state, n := range byState {
			ch <- prometheus.MustNewConstMetric(c.targets, prometheus.GaugeValue, float64(n), k.job, k.publisher, string(state))
		}
	}
	for pv := range versions {
		ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, pv[0], pv[1])
	}
}
