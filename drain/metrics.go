package drain

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the drain's self-metrics, declared beside what counts them.
type metrics struct {
	received       *prometheus.CounterVec
	expired        prometheus.Counter
	superseded     prometheus.Counter
	otherShard     prometheus.Counter
	parts          prometheus.Counter
	assembled      prometheus.Counter
	partsDropped   *prometheus.CounterVec
	partsRefused   *prometheus.CounterVec
	rejected       *prometheus.CounterVec
	delivered      *prometheus.CounterVec
	sinkRejected   *prometheus.CounterVec
	sinkSuperseded *prometheus.CounterVec
	retries        prometheus.Counter
	ackErrors      prometheus.Counter
	pushDuration   *prometheus.HistogramVec
	lag            prometheus.Histogram
	targets        prometheus.Gauge
	publisherLast  *prometheus.GaugeVec
	publisherSkew  *prometheus.GaugeVec
	connected      prometheus.Gauge
	historyHeld    prometheus.Gauge
	restored       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, sinks []string) *metrics {
	const ns, sub = "prometheus_streams", "drain"
	m := &metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "messages_received_total", Help: "Messages taken from each receiver stream, redeliveries included."}, []string{"stream"}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "messages_expired_total", Help: "Messages acknowledged without delivery because their scrape was older than max_age."}),
		parts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "parts_received_total", Help: "Messages that are one part of a scrape split to fit the stream server, redeliveries included."}),
		assembled: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "scrapes_assembled_total", Help: "Split scrapes whose parts all arrived and joined."}),
		partsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "split_scrapes_dropped_total", Help: "Incomplete split scrapes given up, their parts acknowledged: superseded (a newer scrape of the target), timeout (parts missing at max_age), corrupt (parts that would not join)."}, []string{"reason"}),
		partsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "parts_refused_total", Help: "Parts not taken: full (the memory for incomplete scrapes is used up; left for redelivery), too_large, mismatch (acknowledged)."}, []string{"reason"}),
		otherShard: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "messages_other_shard_total", Help: "Messages acknowledged unread: their target belongs to another shard's drain."}),
		superseded: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "messages_superseded_total", Help: "Messages acknowledged without delivery because a newer scrape of the same target arrived or was delivered."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "messages_rejected_total", Help: "Messages acknowledged as permanently bad, by reason."}, []string{"reason"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "scrapes_delivered_total", Help: "Scrapes a sink accepted."}, []string{"sink"}),
		sinkRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "scrapes_rejected_total", Help: "Scrapes a sink refused as invalid (not retried)."}, []string{"sink"}),
		sinkSuperseded: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "scrapes_superseded_total", Help: "Scrapes a sink skipped because it already held a newer scrape of the target."}, []string{"sink"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "delivery_retries_total", Help: "Deliveries retried after a sink failed transiently."}),
		ackErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "ack_errors_total", Help: "Acknowledgements that could not be sent (the stream redelivers those messages)."}),
		pushDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "sink_request_duration_seconds", Help: "Time a sink took to take one scrape, failures included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12)}, []string{"sink"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "delivery_lag_seconds", Help: "Time from a scrape's start at the edge to its delivery to a sink.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300}}),
		targets: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "targets", Help: "Targets heard from within max_age."}),
		publisherLast: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "publisher_last_message_timestamp_seconds", Help: "When the last message of each publisher (edge host) arrived."}, []string{"publisher"}),
		publisherSkew: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "publisher_clock_offset_seconds", Help: "Arrival time minus scrape end of each publisher's last message: transit time plus the edge clock's offset. max_age and lag rest on edge clocks."}, []string{"publisher"}),
		restored: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "targets_restored_total", Help: "Targets whose newest scrape the drain read again from the stream at start, for /targets and the expose endpoint."}),
		historyHeld: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "history_held", Help: "1 while the history sinks wait, after a subscription, for the stream to redeliver what a previous drain left unacknowledged."}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "stream_connected", Help: "1 while the drain is subscribed to the stream."}),
	}
	reg.MustRegister(m.parts, m.assembled, m.partsDropped, m.partsRefused)
	reg.MustRegister(m.connected, m.received, m.expired, m.superseded, m.otherShard, m.rejected, m.delivered, m.sinkRejected,
		m.sinkSuperseded, m.retries, m.ackErrors, m.pushDuration, m.lag, m.targets, m.publisherLast, m.publisherSkew, m.historyHeld, m.restored)
	// Make every series visible from the start, so alerts on rate() work at once.
	for _, r := range []string{reasonClockAhead, reasonWrongSubject, reasonInvalidUTF8, "not_an_envelope", "unknown_version", "unsupported", "too_large", "corrupt", "invalid_body",
		reasonBadSignature, reasonUnsigned, reasonUnknownKey, reasonNotAllowed} {
		m.rejected.WithLabelValues(r)
	}
	for _, s := range sinks {
		m.delivered.WithLabelValues(s)
		m.sinkRejected.WithLabelValues(s)
		m.sinkSuperseded.WithLabelValues(s)
	}
	return m
}

func (m *metrics) publisherSeen(publisher string, now time.Time, offset time.Duration) {
	m.publisherLast.WithLabelValues(publisher).Set(float64(now.UnixNano()) / 1e9)
	m.publisherSkew.WithLabelValues(publisher).Set(offset.Seconds())
}
