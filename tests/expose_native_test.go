package tests

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/promtest"
	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/sink/endpoint"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// TestExposeNativeHistogramsToPrometheus3: a Prometheus 3 scraping the expose endpoint
// with PrometheusProto first gets the native histograms a target exposed, and answers
// the same PromQL as when it scrapes the target directly; with the text format 1.0.0
// it gets UTF-8 names as they are, with 0.0.4 escaped.
func TestExposeNativeHistogramsToPrometheus3(t *testing.T) {
	src := prometheus.NewRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "latency_seconds", Help: "Latency.",
		NativeHistogramBucketFactor: 1.1, NativeHistogramMaxBucketNumber: 160})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "room.temperature", Help: "A UTF-8 name."})
	src.MustRegister(h, g)
	for i := range 1000 {
		h.Observe(float64(i%97)*0.0031 + float64(i%7)*0.2)
	}
	g.Set(21.5)
	target := httptest.NewServer(promhttp.HandlerFor(src, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	defer target.Close()

	sk := endpoint.New(endpoint.Options{Timestamps: true}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	srv := httptest.NewServer(sk.Handler())
	defer srv.Close()
	deliverGathered(t, sk, src, 2)

	host := func(u string) string { return strings.TrimPrefix(u, "http://") }
	prom := promtest.Start(t, promtest.Options{Binary: promtest.Prometheus3, ScrapeConfigs: fmt.Sprintf(`
- job_name: direct
  scrape_protocols: [PrometheusProto, OpenMetricsText1.0.0, PrometheusText0.0.4]
  scrape_native_histograms: true
  static_configs: [{targets: [%q]}]
- job_name: expose-proto
  honor_labels: true
  scrape_protocols: [PrometheusProto, OpenMetricsText1.0.0, PrometheusText0.0.4]
  scrape_native_histograms: true
  static_configs: [{targets: [%[2]q], labels: {via: proto}}]
- job_name: expose-text1
  honor_labels: true
  scrape_protocols: [PrometheusText1.0.0]
  static_configs: [{targets: [%[2]q], labels: {via: text1}}]
- job_name: expose-text0
  honor_labels: true
  scrape_protocols: [PrometheusText0.0.4]
  static_configs: [{targets: [%[2]q], labels: {via: text0}}]
`, host(target.URL), host(srv.URL))})

	for _, q := range []string{"histogram_count(%s)", "histogram_sum(%s)", "histogram_quantile(0.9, %s)", "histogram_quantile(0.5, %s)"} {
		direct := prom.WaitForSeries(t, fmt.Sprintf(q, `latency_seconds{job="direct"}`), 1)
		exposed := prom.WaitForSeries(t, fmt.Sprintf(q, `latency_seconds{job="src",via="proto"}`), 1)
		if direct[0].Value != exposed[0].Value {
			t.Errorf("%s: direct %v, through the expose endpoint %v", q, direct[0].Value, exposed[0].Value)
		}
	}
	if v := prom.WaitForSeries(t, `histogram_count(latency_seconds{via="proto"})`, 1); v[0].Value != 1000 {
		t.Errorf("histogram_count = %v, want 1000", v[0].Value)
	}

	// UTF-8 names: as they are in text 1.0.0, escaped in 0.0.4 and (as promhttp,
	// since Prometheus asks for no escaping there) in protobuf.
	for _, c := range []struct{ selector, name string }{
		{`{"room.temperature",via="text1"}`, "room.temperature"},
		{`{__name__="room_temperature",via="text0"}`, "room_temperature"},
		{`{__name__="room_temperature",via="proto"}`, "room_temperature"},
	} {
		v := prom.WaitForSeries(t, c.selector, 1)
		if got := string(v[0].Metric[model.MetricNameLabel]); got != c.name || v[0].Value != 21.5 {
			t.Errorf("%s: %v", c.selector, v)
		}
	}
}

// deliverGathered hands sk what src gathers now, as the scrape of target src/x with
// samples samples, the way the drain hands a sink a parsed scrape.
func deliverGathered(t *testing.T, sk sink.Sink, src prometheus.Gatherer, samples int) {
	t.Helper()
	fams, err := src.Gather()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	tg := exposition.Target{Job: "src", Instance: "x"}
	exposition.Attach(fams, tg)
	sc := &sink.Scrape{Envelope: &envelope.Envelope{Job: "src", Instance: "x", Start: start}, Target: tg, Families: fams,
		Health: exposition.Health(tg, exposition.Outcome{Up: true, Start: start, Duration: time.Millisecond, Samples: samples})}
	if err := sk.Deliver(context.Background(), sc); err != nil {
		t.Fatal(err)
	}
}
