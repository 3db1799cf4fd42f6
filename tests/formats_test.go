package tests

import (
	"context"
	"fmt"
	"math"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/promtest"
)

// formatsTarget is a target instrumented as a Prometheus 3 user instruments one: a
// native histogram with classic buckets beside it, a classic histogram, a summary, a counter with an exemplar, and a gauge with a UTF-8
// name. Its values do not change, so every scrape of it is the same.
func formatsTarget(t *testing.T) *httptest.Server {
	t.Helper()
	reg := prometheus.NewRegistry()
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "latency_seconds", Help: "Latency.",
		Buckets: prometheus.DefBuckets, NativeHistogramBucketFactor: 1.1, NativeHistogramMaxBucketNumber: 160})
	size := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "request_size_bytes", Help: "Request sizes.",
		Buckets: prometheus.ExponentialBuckets(100, 4, 6)})
	rpc := prometheus.NewSummary(prometheus.SummaryOpts{Name: "rpc_duration_seconds", Help: "RPC latency.",
		Objectives: map[float64]float64{0.5: 0.05, 0.9: 0.01, 0.99: 0.001}})
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "requests_total", Help: "Requests."}, []string{"code"})
	temp := prometheus.NewGauge(prometheus.GaugeOpts{Name: "room.temperature", Help: "A UTF-8 name."})
	reg.MustRegister(latency, size, rpc, requests, temp)
	for i := range 1000 {
		v := float64(i%97)*0.0031 + float64(i%7)*0.2
		latency.Observe(v)
		rpc.Observe(v)
		size.Observe(float64(i * 37 % 50000))
	}
	requests.WithLabelValues("200").(prometheus.ExemplarAdder).AddWithExemplar(41, prometheus.Labels{"trace_id": "abc123"})
	requests.WithLabelValues("500").Add(3)
	temp.Set(21.5)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	t.Cleanup(srv.Close)
	return srv
}

// TestFormatsFidelity: for each scrape protocol, a Prometheus 3 scraping a target
// directly and the same Prometheus receiving that target through scrape-once, the
// stream and the drain (remote-write 2.0, and scraping the drain's expose endpoint
// with PrometheusProto first) hold the same series with the same values, native
// histograms included, and answer the same PromQL.
func TestFormatsFidelity(t *testing.T) {
	target := formatsTarget(t)
	host := strings.TrimPrefix(target.URL, "http://")
	// Each case is a job scraped alike directly and through the drain. latency is how
	// latency_seconds is stored: native, classic, both, or with custom buckets.
	const native, classic, both, custom = "native", "classic", "both", "custom"
	protocols := []struct{ name, job, extra, latency string }{
		{"PrometheusProto", "proto", "scrape_native_histograms: true", native},
		{"PrometheusProto", "proto-classic", "scrape_native_histograms: false", classic},
		{"PrometheusProto", "proto-both", "{scrape_native_histograms: true, always_scrape_classic_histograms: true}", both},
		{"OpenMetricsText1.0.0", "om1", "scrape_native_histograms: true", classic},
		{"PrometheusText1.0.0", "text1", "scrape_native_histograms: true", classic},
		{"PrometheusText0.0.4", "text0", "scrape_native_histograms: true", classic},
		// Classic histograms stored as native histograms with custom buckets, alone
		// and beside their classic series.
		{"PrometheusText0.0.4", "nhcb", "convert_classic_histograms_to_nhcb: true", custom},
		{"PrometheusText0.0.4", "nhcb-both", "{convert_classic_histograms_to_nhcb: true, always_scrape_classic_histograms: true}", custom},
	}

	natsAddr, exposeAddr, mon := freeAddr(t), freeAddr(t), freeAddr(t)
	var direct, edgeJobs strings.Builder
	for _, p := range protocols {
		extra := strings.NewReplacer("{", "", "}", "", ", ", "\n    ").Replace(p.extra)
		fmt.Fprintf(&direct, `- job_name: direct-%s
  scrape_protocols: [%s]
  static_configs: [{targets: [%q]}]
  %s
`, p.job, p.name, host, strings.ReplaceAll(extra, "\n    ", "\n  "))
		fmt.Fprintf(&edgeJobs, `  edge-%s:
    scrape_protocols: [%s]
    targets: [{name: %s, url: '%s/metrics'}]
    %s
`, p.job, p.name, host, target.URL, extra)
	}
	// The drain's expose endpoint, scraped twice: in protobuf for native histograms
	// (Prometheus asks it without an escaping, so names are escaped, as from any
	// exporter), in OpenMetrics with UTF-8 names allowed.
	fmt.Fprintf(&direct, `- job_name: expose-proto
  scrape_protocols: [PrometheusProto]
  scrape_native_histograms: true
  static_configs: [{targets: [%[1]q]}]
- job_name: expose-proto-both
  scrape_protocols: [PrometheusProto]
  scrape_native_histograms: true
  always_scrape_classic_histograms: true
  static_configs: [{targets: [%[1]q]}]
- job_name: expose-om
  scrape_protocols: [OpenMetricsText1.0.0]
  static_configs: [{targets: [%[1]q]}]
`, exposeAddr)
	prom := promtest.Start(t, promtest.Options{Binary: promtest.Prometheus3, RemoteWriteV2: true, ScrapeConfigs: direct.String()})
	d := startDrain(t, writeConfig(t, centralConfig(natsAddr, exposeAddr, mon, fmt.Sprintf(`remote_write:
  - url: %s
    protobuf_message: io.prometheus.write.v2.Request
`, prom.RemoteWriteURL()))), mon)
	edge := writeConfig(t, edgeConfig("nats://"+natsAddr, "central", edgeJobs.String()))
	if r := runBin(t, "scrape-once", "-c", edge); r.code != 0 {
		t.Fatalf("scrape-once: exit %d\n%s", r.code, r.stderr)
	}
	defer func() {
		if t.Failed() {
			t.Logf("drain log:\n%s", d.logs())
		}
	}()

	for _, p := range protocols {
		t.Run(p.job, func(t *testing.T) {
			directSel := fmt.Sprintf(`{job="direct-%s",__name__!~"up|scrape_.+"}`, p.job)
			written := fmt.Sprintf(`{job="edge-%s",__name__!~"streams_scrape_.+"}`, p.job)
			exposeJob := "expose-om"
			switch p.latency {
			case native:
				exposeJob = "expose-proto"
			case both:
				exposeJob = "expose-proto-both"
			}
			exposed := fmt.Sprintf(`{job=%q,exported_job="edge-%s",__name__!~"up|scrape_.+|streams_scrape_.+"}`, exposeJob, p.job)
			want := samplesOf(t, prom, directSel)
			for deadline := time.Now().Add(30 * time.Second); len(want) < 10 && time.Now().Before(deadline); {
				time.Sleep(500 * time.Millisecond)
				want = samplesOf(t, prom, directSel)
			}
			if len(want) < 10 {
				t.Fatalf("the direct scrape holds only %d series: %v", len(want), want)
			}
			vias := []struct{ name, sel string }{{"remote write", written}, {"expose", exposed}}
			if p.latency == custom {
				// The expositions have no field for custom bounds: the endpoint serves
				// the classic histogram, for the scraping Prometheus to convert.
				vias = vias[:1]
			}
			for _, via := range vias {
				got := samplesOf(t, prom, via.sel)
				// Wait until every series has come: remote write and the expose scrape
				// lag the direct scrape by a scrape or a request.
				deadline := time.Now().Add(30 * time.Second)
				for len(got) < len(want) && time.Now().Before(deadline) {
					time.Sleep(500 * time.Millisecond)
					got = samplesOf(t, prom, via.sel)
				}
				if diff := diffSamples(want, got); diff != "" {
					t.Errorf("%s through %s differs from the direct scrape:\n%s", p.name, via.name, diff)
				}
			}
			// The same PromQL answers: the native histogram where the format carries
			// it, the classic ones, the summary, count by name.
			queries := []string{
				`histogram_quantile(0.9, sum by (le) (request_size_bytes_bucket{%s}))`,
				`sum(rpc_duration_seconds{quantile="0.9",%s})`,
				`sum(requests_total{%s})`,
				`count({%s,__name__!~"up|scrape_.+|streams_scrape_.+"})`,
			}
			nativeQ := []string{`histogram_quantile(0.9, latency_seconds{%s})`, `histogram_count(latency_seconds{%s})`, `histogram_sum(latency_seconds{%s})`}
			classicQ := []string{`histogram_quantile(0.9, sum by (le) (latency_seconds_bucket{%s}))`, `sum(latency_seconds_count{%s})`}
			switch p.latency {
			case native:
				queries = append(queries, nativeQ...)
			case both:
				queries = append(append(queries, nativeQ...), classicQ...)
			case classic:
				queries = append(queries, classicQ...)
			case custom:
				queries = append([]string{`histogram_quantile(0.9, request_size_bytes{%s})`, `histogram_count(request_size_bytes{%s})`,
					`histogram_quantile(0.9, latency_seconds{%s})`, `sum(requests_total{%s})`}, `count({%s,__name__!~"up|scrape_.+|streams_scrape_.+"})`)
				if p.job == "nhcb-both" {
					queries = append(queries, `histogram_quantile(0.9, sum by (le) (request_size_bytes_bucket{%s}))`)
				}
			}
			for _, q := range queries {
				dq := strings.ReplaceAll(q, "%s", fmt.Sprintf(`job="direct-%s"`, p.job))
				wq := strings.ReplaceAll(q, "%s", fmt.Sprintf(`job="edge-%s"`, p.job))
				dv, wv := scalarOf(t, prom, dq), scalarOf(t, prom, wq)
				if math.IsNaN(dv) {
					t.Errorf("%s: NaN from the direct scrape: the query compares nothing", dq)
				} else if dv != wv {
					t.Errorf("%s: direct %v, through the drain %v", q, dv, wv)
				}
			}
		})
	}
	// count by (__name__) of each path is the same, UTF-8 name included.
	names := func(sel string) string {
		v, err := prom.Query(context.Background(), fmt.Sprintf(`count by (__name__) (%s)`, sel), time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, x := range v {
			s = append(s, fmt.Sprintf("%s %v", x.Metric[model.MetricNameLabel], x.Value))
		}
		sort.Strings(s)
		return strings.Join(s, "\n")
	}
	for _, p := range protocols {
		if a, b := names(fmt.Sprintf(`{job="direct-%s",__name__!~"up|scrape_.+"}`, p.job)),
			names(fmt.Sprintf(`{job="edge-%s",__name__!~"streams_scrape_.+"}`, p.job)); a != b {
			t.Errorf("%s: count by (__name__): direct\n%s\nthrough the drain\n%s", p.name, a, b)
		}
	}
	// client_golang serves UTF-8 names as they are in OpenMetrics when asked to
	// (escaping=allow-utf-8, as scrape-once asks); not in text 1.0.0, which it does
	// not offer.
	if !strings.Contains(names(`{job="edge-om1"}`), "room.temperature 1") {
		t.Errorf("the UTF-8 name did not arrive as it is through OpenMetrics:\n%s", names(`{job="edge-om1"}`))
	}
}

// samplesOf returns the samples selector matches, keyed by their labels without job,
// instance and the exported_ labels a scrape of the drain adds: the series' identity
// at the target.
func samplesOf(t *testing.T, prom *promtest.Server, selector string) map[string]string {
	t.Helper()
	v, err := prom.Query(context.Background(), selector, time.Time{})
	if err != nil {
		t.Fatalf("%s: %v", selector, err)
	}
	out := map[string]string{}
	for _, s := range v {
		ls := model.LabelSet{}
		for k, val := range s.Metric {
			switch {
			case k == "job" || k == "instance" || strings.HasPrefix(string(k), "exported_"):
			default:
				ls[k] = val
			}
		}
		if s.Histogram != nil {
			out[ls.String()] = s.Histogram.String()
		} else {
			out[ls.String()] = s.Value.String()
		}
	}
	return out
}

func diffSamples(want, got map[string]string) string {
	var d []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			d = append(d, "missing "+k)
		} else if g != w {
			d = append(d, fmt.Sprintf("%s: want %s, got %s", k, w, g))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			d = append(d, "extra "+k)
		}
	}
	sort.Strings(d)
	return strings.Join(d, "\n")
}

func scalarOf(t *testing.T, prom *promtest.Server, q string) float64 {
	t.Helper()
	v, err := prom.Query(context.Background(), q, time.Time{})
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if len(v) != 1 {
		t.Fatalf("%s: %d samples, want 1: %v", q, len(v), v)
	}
	return float64(v[0].Value)
}
