package endpoint

import "github.com/prometheus/client_golang/prometheus"

// metrics are the sink's self-metrics.
type metrics struct {
	targets   prometheus.Gauge
	series    prometheus.Gauge
	bytes     prometheus.Gauge
	conflicts prometheus.Counter
	expired   prometheus.Counter
	serve     *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "prometheus_streams", "drain_expose"
	m := &metrics{
		targets: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "targets", Help: "Targets whose latest scrape the exposition holds (those past max_age included until the next sweep)."}),
		series: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "series", Help: "Sample lines the exposition holds, all targets."}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "encoded_bytes", Help: "Bytes of encoded samples the exposition holds, text, OpenMetrics and protobuf."}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "conflicts_total", Help: "Families left out of a delivered scrape because another target serves the name with another type, or the name is a scrape-health family's."}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "targets_expired_total", Help: "Targets forgotten because their last scrape was older than max_age."}),
		serve: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "request_duration_seconds", Help: "Time to serve one scrape of the exposition, by format.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12)}, []string{"format"}),
	}
	reg.MustRegister(m.targets, m.series, m.bytes, m.conflicts, m.expired, m.serve)
	return m
}
