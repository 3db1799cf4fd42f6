package pushgateway_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/pgwtest"
	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/sink/pushgateway"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// scrapeOfRegistry builds what the drain hands a sink for a scrape of reg.
func scrapeOfRegistry(t *testing.T, instance string, start time.Time, reg *prometheus.Registry) *sink.Scrape {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	tg := exposition.Target{Job: "j", Instance: instance}
	exposition.Attach(fams, tg)
	return &sink.Scrape{
		Envelope: &envelope.Envelope{Job: "j", Instance: instance, Start: start},
		Target:   tg,
		Families: fams,
		Health:   exposition.Health(tg, exposition.Outcome{Up: true, Start: start, Duration: time.Millisecond, Samples: 1}),
	}
}

// scrapeProto fetches the gateway's /metrics in the delimited protobuf format.
func scrapeProto(t *testing.T, pgw *pgwtest.Server) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, pgw.URL()+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, "encoding=delimited") {
		t.Fatalf("Content-Type %q", ct)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	fams := map[string]*dto.MetricFamily{}
	if err := exposition.EachDelimited(body, func(mf *dto.MetricFamily) error {
		fams[mf.GetName()] = mf
		return nil
	}); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return fams
}

// TestSinkNativeHistograms: Push Gateway 1.5.1 takes native histograms, exemplars and
// created timestamps in a protobuf push and keeps them: its protobuf /metrics serves
// them whole, its text /metrics the histogram's count, sum and +Inf bucket. Its
// consistency check takes them, and so does the sink's, with the gateway's check on
// and off.
func TestSinkNativeHistograms(t *testing.T) {
	for _, check := range []bool{true, false} {
		t.Run(map[bool]string{true: "checked", false: "unchecked"}[check], func(t *testing.T) {
			var opts []pgwtest.Option
			if !check {
				opts = append(opts, pgwtest.WithoutConsistencyCheck())
			}
			pgw := pgwtest.Start(t, opts...)
			s := newSink(t, pgw.URL())
			src := prometheus.NewRegistry()
			h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "latency_seconds", Help: "Latency.", NativeHistogramBucketFactor: 1.1})
			c := prometheus.NewCounter(prometheus.CounterOpts{Name: "requests_total", Help: "Requests."})
			src.MustRegister(h, c)
			for i := range 100 {
				h.Observe(float64(i%17) * 0.01)
			}
			c.(prometheus.ExemplarAdder).AddWithExemplar(4, prometheus.Labels{"trace_id": "abc"})

			now := time.Now().Truncate(time.Millisecond)
			for _, inst := range []string{"a", "b"} {
				if err := s.Deliver(context.Background(), scrapeOfRegistry(t, inst, now, src)); err != nil {
					t.Fatal(err)
				}
			}
			want, err := src.Gather()
			if err != nil {
				t.Fatal(err)
			}
			wh := want[0].GetMetric()[0].GetHistogram()
			if want[0].GetName() != "latency_seconds" || wh.GetSchema() == 0 && len(wh.GetPositiveSpan()) == 0 {
				t.Fatalf("the source has no native histogram: %v", want[0])
			}

			got := scrapeProto(t, pgw)
			hs := got["latency_seconds"].GetMetric()
			if len(hs) != 2 {
				t.Fatalf("latency_seconds: %v", got["latency_seconds"])
			}
			for _, m := range hs {
				gh := m.GetHistogram()
				if gh.GetSchema() != wh.GetSchema() || gh.GetSampleCount() != 100 || gh.GetSampleSum() != wh.GetSampleSum() ||
					!proto.Equal(&dto.Histogram{PositiveSpan: gh.PositiveSpan, PositiveDelta: gh.PositiveDelta, ZeroCount: gh.ZeroCount},
						&dto.Histogram{PositiveSpan: wh.PositiveSpan, PositiveDelta: wh.PositiveDelta, ZeroCount: wh.ZeroCount}) {
					t.Errorf("native histogram differs:\n got %v\nwant %v", gh, wh)
				}
				if gh.GetCreatedTimestamp() == nil {
					t.Error("created timestamp lost")
				}
			}
			for _, m := range got["requests_total"].GetMetric() {
				if m.GetCounter().GetExemplar() == nil || m.GetCounter().GetCreatedTimestamp() == nil {
					t.Errorf("counter lost its exemplar or created timestamp: %v", m)
				}
			}

			// The text format: count, sum and the +Inf bucket only.
			text := pgw.Scrape(t)["latency_seconds"]
			if n := len(text.GetMetric()); n != 2 {
				t.Fatalf("text: latency_seconds has %d metrics", n)
			}
			th := text.GetMetric()[0].GetHistogram()
			if th.GetSampleCount() != 100 || len(th.GetBucket()) != 1 {
				t.Errorf("text: %v", th)
			}

			// The next scrape replaces the group, native histogram and all.
			h.Observe(0.5)
			if err := s.Deliver(context.Background(), scrapeOfRegistry(t, "a", now.Add(time.Second), src)); err != nil {
				t.Fatal(err)
			}
			for _, m := range scrapeProto(t, pgw)["latency_seconds"].GetMetric() {
				if n := m.GetHistogram().GetSampleCount(); n != 100 && n != 101 {
					t.Errorf("count %d", n)
				}
			}
		})
	}
}

// TestSinkDropsWhatEscapingBreaks: a family whose UTF-8 name escapes to another
// family's name, or whose label names escape alike, is left out of the push, counted
// and logged once per target; the rest of the target's families are pushed.
func TestSinkDropsWhatEscapingBreaks(t *testing.T) {
	pgw := pgwtest.Start(t)
	c, err := pushgateway.New(pushgateway.Options{URL: pgw.URL()})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	s := pushgateway.NewSink(c, "", slog.New(slog.NewTextHandler(&logs, nil)), reg)
	body := "# TYPE a_b gauge\na_b 1\n" +
		"# TYPE \"a.b\" gauge\n{\"a.b\"} 2\n" +
		"# TYPE labels gauge\nlabels{\"x.y\"=\"1\",x_y=\"2\"} 3\n" +
		"# TYPE \"c.d\" gauge\n{\"c.d\"} 4\n"
	now := time.Now().Truncate(time.Millisecond)
	for i := range 2 {
		if err := s.Deliver(context.Background(), scrape(t, "a", now.Add(time.Duration(i)*time.Second), body)); err != nil {
			t.Fatal(err)
		}
	}
	if v, ok := value(t, pgw, "a_b", "a"); !ok || v != 1 {
		t.Errorf("a_b = %v %v, want the family whose name needs no escaping", v, ok)
	}
	if v, ok := value(t, pgw, "c_d", "a"); !ok || v != 4 {
		t.Errorf("c_d = %v %v: the rest of the scrape must be pushed", v, ok)
	}
	if _, ok := value(t, pgw, "labels", "a"); ok {
		t.Error("the family with colliding label names was pushed")
	}
	for reason, want := range map[string]float64{pushgateway.DropEscapedNameCollision: 2, pushgateway.DropEscapedLabelCollision: 2} {
		got, err := testutil.GatherAndCount(reg, "prometheus_streams_drain_pushgateway_families_dropped_total")
		if err != nil || got != 2 {
			t.Fatalf("series %d: %v", got, err)
		}
		var v float64
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() != "prometheus_streams_drain_pushgateway_families_dropped_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == reason {
					v = m.GetCounter().GetValue()
				}
			}
		}
		if v != want {
			t.Errorf("dropped{reason=%q} = %v, want %v", reason, v, want)
		}
	}
	if n := strings.Count(logs.String(), "left out of the push"); n != 2 {
		t.Errorf("%d log lines, want one per family and target:\n%s", n, logs.String())
	}
}
