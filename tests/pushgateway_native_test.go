package tests

import (
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/pgwtest"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/promtest"
	"github.com/prometheus-streams/prometheus-streams/sink/pushgateway"
)

// TestPushGatewayNativeHistogramsToPrometheus3: a native histogram pushed by the sink
// to Push Gateway 1.5.1 reaches a Prometheus 3 scraping the gateway with
// PrometheusProto first whole: the same PromQL answers as from the target directly.
func TestPushGatewayNativeHistogramsToPrometheus3(t *testing.T) {
	src := prometheus.NewRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "latency_seconds", Help: "Latency.",
		NativeHistogramBucketFactor: 1.1, NativeHistogramMaxBucketNumber: 160})
	src.MustRegister(h)
	for i := range 1000 {
		h.Observe(float64(i%89)*0.0029 + float64(i%5)*0.3)
	}
	target := httptest.NewServer(promhttp.HandlerFor(src, promhttp.HandlerOpts{}))
	defer target.Close()

	pgw := pgwtest.Start(t, pgwtest.WithoutConsistencyCheck())
	c, err := pushgateway.New(pushgateway.Options{URL: pgw.URL()})
	if err != nil {
		t.Fatal(err)
	}
	sk := pushgateway.NewSink(c, "", slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	deliverGathered(t, sk, src, 1)

	host := func(u string) string { return strings.TrimPrefix(u, "http://") }
	prom := promtest.Start(t, promtest.Options{Binary: promtest.Prometheus3, ScrapeConfigs: fmt.Sprintf(`
- job_name: direct
  scrape_protocols: [PrometheusProto, PrometheusText0.0.4]
  scrape_native_histograms: true
  static_configs: [{targets: [%q]}]
- job_name: pushgateway
  honor_labels: true
  scrape_protocols: [PrometheusProto, PrometheusText0.0.4]
  scrape_native_histograms: true
  static_configs: [{targets: [%q]}]
`, host(target.URL), pgw.Addr())})

	for _, q := range []string{"histogram_count(%s)", "histogram_sum(%s)", "histogram_quantile(0.9, %s)"} {
		direct := prom.WaitForSeries(t, fmt.Sprintf(q, `latency_seconds{job="direct"}`), 1)
		pushed := prom.WaitForSeries(t, fmt.Sprintf(q, `latency_seconds{job="src"}`), 1)
		if direct[0].Value != pushed[0].Value {
			t.Errorf("%s: direct %v, through the gateway %v", q, direct[0].Value, pushed[0].Value)
		}
	}
}
