package remotewrite

import (
	"context"
	"math"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	remote "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/promtest"
	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// nativeRegistry is a target's registry with a native histogram, a second one observing
// only what the first observes after mark (its increase), and a counter with exemplars.
type nativeRegistry struct {
	reg          *prometheus.Registry
	lat, latDiff prometheus.Histogram
	c            prometheus.Counter
	marked       bool
}

func newNativeRegistry() *nativeRegistry {
	r := &nativeRegistry{reg: prometheus.NewRegistry()}
	opts := func(name string) prometheus.HistogramOpts {
		return prometheus.HistogramOpts{Name: name, Help: "Latency.", NativeHistogramBucketFactor: 1.1, NativeHistogramMaxExemplars: 4}
	}
	r.lat = prometheus.NewHistogram(opts("lat_seconds"))
	r.latDiff = prometheus.NewHistogram(opts("lat_diff_seconds"))
	r.c = prometheus.NewCounter(prometheus.CounterOpts{Name: "req_total", Help: "Requests."})
	r.reg.MustRegister(r.lat, r.latDiff, r.c)
	return r
}

func (r *nativeRegistry) observe(vs ...float64) {
	for i, v := range vs {
		r.lat.(prometheus.ExemplarObserver).ObserveWithExemplar(v, prometheus.Labels{"trace_id": "t" + string(rune('a'+i%26))})
		if r.marked {
			r.latDiff.Observe(v)
		}
		r.c.(prometheus.ExemplarAdder).AddWithExemplar(1, prometheus.Labels{"trace_id": "c"})
	}
}

// gather is what the drain would hand the sink for a scrape of the registry by job
// "rw" at start: the families, their created timestamps set to created.
func (r *nativeRegistry) gather(t *testing.T, start, created time.Time, extra ...*dto.MetricFamily) *sink.Scrape {
	t.Helper()
	fams, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range fams {
		for _, m := range mf.Metric {
			if c := m.GetCounter(); c != nil {
				c.CreatedTimestamp = timestamppb.New(created)
			}
			if h := m.GetHistogram(); h != nil {
				h.CreatedTimestamp = timestamppb.New(created)
			}
		}
	}
	fams = append(fams, extra...)
	tg := exposition.Target{Job: "rw", Instance: "i"}
	exposition.Attach(fams, tg)
	env := &envelope.Envelope{Job: "rw", Instance: "i", Start: start, Duration: 10 * time.Millisecond}
	return &sink.Scrape{Envelope: env, Target: tg, Families: fams,
		Health: exposition.Health(tg, exposition.Outcome{Up: true, Start: start, Duration: env.Duration, Samples: len(fams)})}
}

func scalar(t *testing.T, prom *promtest.Server, q string, at time.Time) float64 {
	t.Helper()
	v, err := prom.Query(context.Background(), q, at)
	if err != nil {
		t.Fatal(err)
	}
	if len(v) != 1 {
		t.Fatalf("%s: %d series, want 1: %v", q, len(v), v)
	}
	return float64(v[0].Value)
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

// TestNativeHistogramsIntoPrometheus3: native histograms written in remote-write 2.0
// answer PromQL as Prometheus 3 scraping the same registry over protobuf answers it
// (count, sum, quantile; the quantile of their rate as that of what was observed in
// between), histograms with float counts and custom buckets answer what their families
// say, exemplars are there to query, created timestamps become Prometheus's zero
// samples, and a native histogram that disappears is stale at once.
func TestNativeHistogramsIntoPrometheus3(t *testing.T) {
	r := newNativeRegistry()
	target := httptest.NewServer(promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{}))
	defer target.Close()
	prom := promtest.Start(t, promtest.Options{
		Binary: promtest.Prometheus3, RemoteWriteV2: true,
		Features: []string{"exemplar-storage", "created-timestamp-zero-ingestion"},
		ScrapeConfigs: `- job_name: direct
  scrape_protocols: [PrometheusProto, OpenMetricsText1.0.0, PrometheusText0.0.4]
  scrape_native_histograms: true
  static_configs: [{targets: ['` + strings.TrimPrefix(target.URL, "http://") + `'], labels: {instance: i}}]
`,
	})
	snk := newSink(t, prom.RemoteWriteURL(), remote.WriteV2MessageType)

	// Scrapes at their real times (the second a second later, in the receiver's near
	// future), so that the exemplars of each are newer than the scrape before.
	r.observe(0.01, 0.02, 0.05, 0.1, 0.1, 0.3)
	t1 := time.Now()
	created := t1.Add(-5 * time.Minute)
	deliver(t, snk, r.gather(t, t1, created))
	r.marked = true
	r.observe(0.2, 0.4, 0.4, 0.8, 1.5, 2, 3, 0.05)
	t2 := t1.Add(time.Second)
	extra := richFamilies(created, true)[3:] // hf, hc: float counts, custom buckets
	deliver(t, snk, r.gather(t, t2, created, extra...))

	// The direct scrape of the same registry, once it has everything.
	prom.WaitFor(t, `histogram_count(lat_seconds{job="direct"})`, func(v model.Vector) bool { return len(v) == 1 && v[0].Value == 14 })
	at := t2.Add(time.Second)
	for _, q := range []string{
		`histogram_count(lat_seconds{job="%s"})`,
		`histogram_sum(lat_seconds{job="%s"})`,
		`histogram_quantile(0.9, lat_seconds{job="%s"})`,
		`histogram_quantile(0.5, lat_seconds{job="%s"})`,
	} {
		rw := scalar(t, prom, strings.ReplaceAll(q, "%s", "rw"), at)
		direct := scalar(t, prom, strings.ReplaceAll(q, "%s", "direct"), at)
		if !near(rw, direct) {
			t.Errorf("%s: written %v, scraped %v", q, rw, direct)
		}
	}
	for _, phi := range []string{"0.5", "0.9"} {
		rate := scalar(t, prom, `histogram_quantile(`+phi+`, rate(lat_seconds{job="rw"}[1m]))`, at)
		diff := scalar(t, prom, `histogram_quantile(`+phi+`, lat_diff_seconds{job="direct"})`, at)
		if !near(rate, diff) {
			t.Errorf("quantile %s of the written rate: %v, of what was observed in between: %v", phi, rate, diff)
		}
	}
	for q, want := range map[string]float64{
		`histogram_count(hf{job="rw"})`:             2.5,
		`histogram_sum(hf{job="rw"})`:               4,
		`histogram_count(hc{job="rw"})`:             4,
		`histogram_sum(hc{job="rw"})`:               5,
		`histogram_quantile(0.5, hc{job="rw"})`:     1.5, // rank 2 of 4, halfway into (1, 2]
		`req_total{job="rw"}`:                       14,
		`count_over_time(req_total{job="rw"}[10m])`: 3, // the zero at its created timestamp, and two scrapes
		`min_over_time(req_total{job="rw"}[10m])`:   0,
	} {
		if got := scalar(t, prom, q, at); !near(got, want) {
			t.Errorf("%s = %v, want %v", q, got, want)
		}
	}
	// The zero sample at the created timestamp, and nothing else before the scrapes.
	before := created.Add(time.Second)
	if got := scalar(t, prom, `count_over_time(req_total{job="rw"}[1m])`, before); got != 1 {
		t.Errorf("%v samples up to the created timestamp, want its zero", got)
	}
	if got := scalar(t, prom, `timestamp(req_total{job="rw"})`, before); !near(got, float64(created.UnixMilli())/1000) {
		t.Errorf("zero sample at %v, want the created timestamp %v", got, float64(created.UnixMilli())/1000)
	}

	ctx := context.Background()
	for _, sel := range []string{`lat_seconds{job="rw"}`, `req_total{job="rw"}`} {
		ex, err := prom.Exemplars(ctx, sel, t1.Add(-time.Hour), at.Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if len(ex) != 1 || len(ex[0].Exemplars) == 0 || ex[0].Exemplars[0].Labels["trace_id"] == "" {
			t.Errorf("exemplars of %s: %+v", sel, ex)
		}
	}

	// The native histograms go: stale at once.
	deliver(t, snk, scrapeOf(t, "rw", "i", at.Add(time.Second)))
	for _, sel := range []string{`lat_seconds{job="rw"}`, `hf{job="rw"}`, `hc{job="rw"}`} {
		if v, err := prom.Query(ctx, sel, at.Add(2*time.Second)); err != nil || len(v) != 0 {
			t.Errorf("%s after it went: %v (%v), want nothing", sel, v, err)
		}
	}
}

// TestNativeHistogramsIntoPrometheus2: Debian's Prometheus 2.42 with native histograms
// enabled takes them in remote-write 1.0, with their exemplars; custom buckets, which
// it does not know, arrive as classic series.
func TestNativeHistogramsIntoPrometheus2(t *testing.T) {
	prom := promtest.Start(t, promtest.Options{Binary: promtest.Prometheus2, Features: []string{"native-histograms", "exemplar-storage"}})
	snk := newSink(t, prom.RemoteWriteURL(), remote.WriteV1MessageType)
	r := newNativeRegistry()
	r.observe(0.01, 0.02, 0.05, 0.1, 0.1, 0.3, 2)
	now := time.Now()
	deliver(t, snk, r.gather(t, now.Add(-time.Second), now.Add(-time.Minute), richFamilies(now, true)[4:]...))
	for q, want := range map[string]float64{
		`histogram_count(lat_seconds{job="rw"})`:                     7,
		`histogram_sum(lat_seconds{job="rw"})`:                       2.58,
		`hc_bucket{job="rw",le="2.0"} or hc_bucket{job="rw",le="2"}`: 3,
		`hc_count{job="rw"}`:                                         4,
	} {
		if got := scalar(t, prom, q, now); !near(got, want) {
			t.Errorf("%s = %v, want %v", q, got, want)
		}
	}
	for _, sel := range []string{`lat_seconds{job="rw"}`, `req_total{job="rw"}`} {
		ex, err := prom.Exemplars(context.Background(), sel, now.Add(-time.Hour), now.Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if len(ex) != 1 || len(ex[0].Exemplars) == 0 {
			t.Errorf("exemplars of %s: %+v", sel, ex)
		}
	}
}

// scrapeOf is a scrape of job/instance at start with no families: only its health.
func scrapeOf(t *testing.T, job, instance string, start time.Time) *sink.Scrape {
	t.Helper()
	tg := exposition.Target{Job: job, Instance: instance}
	env := &envelope.Envelope{Job: job, Instance: instance, Start: start, Duration: 10 * time.Millisecond}
	return &sink.Scrape{Envelope: env, Target: tg,
		Health: exposition.Health(tg, exposition.Outcome{Up: true, Start: start, Duration: env.Duration})}
}

func formatUnix(t time.Time) string { return model.TimeFromUnixNano(t.UnixNano()).String() }
