package endpoint_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"

	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/sink/endpoint"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

const acceptProto = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"

// nativeRegistry is a registry with a native histogram, a counter with an exemplar
// (and, from client_golang, a created timestamp) and a family with a UTF-8 name.
func nativeRegistry(t testing.TB) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "latency_seconds", Help: "Latency.",
		NativeHistogramBucketFactor: 1.1, NativeHistogramMaxBucketNumber: 100})
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "requests_total", Help: "Requests."})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "room.temperature", Help: "A UTF-8 name."})
	reg.MustRegister(h, c, g)
	for i := range 200 {
		h.Observe(float64(i%37) * 0.013)
	}
	c.(prometheus.ExemplarAdder).AddWithExemplar(3, prometheus.Labels{"trace_id": "abc"})
	g.Set(21.5)
	return reg
}

// scrapeOfFamilies is scrapeOf for families already parsed.
func scrapeOfFamilies(t testing.TB, job, instance string, start time.Time, fams []*dto.MetricFamily) *sink.Scrape {
	t.Helper()
	env := &envelope.Envelope{Job: job, Instance: instance, Start: start, Duration: 25 * time.Millisecond,
		ContentType: string(expfmt.FmtProtoDelim)}
	tg := exposition.Target{Job: job, Instance: instance}
	exposition.Attach(fams, tg)
	for _, f := range fams {
		env.Series += len(f.GetMetric())
	}
	sc := &sink.Scrape{Envelope: env, Target: tg, Families: fams}
	sc.Health = exposition.Health(tg, exposition.Outcome{Up: true, Start: start, Duration: env.Duration, Samples: env.Series})
	return sc
}

func decodeProto(t testing.TB, body []byte) map[string]*dto.MetricFamily {
	t.Helper()
	fams := map[string]*dto.MetricFamily{}
	if err := exposition.EachDelimited(body, func(mf *dto.MetricFamily) error {
		if fams[mf.GetName()] != nil {
			t.Errorf("family %q twice", mf.GetName())
		}
		fams[mf.GetName()] = mf
		return nil
	}); err != nil {
		t.Fatalf("decode protobuf: %v", err)
	}
	return fams
}

// TestProtobuf: the protobuf format serves what the source registry exposed, native
// histograms, exemplars and created timestamps included, merged across targets, with
// names escaped unless the request allows UTF-8.
func TestProtobuf(t *testing.T) {
	for _, hot := range []bool{false, true} {
		t.Run(map[bool]string{false: "cold", true: "hot"}[hot], func(t *testing.T) {
			h := newHarness(t, endpoint.Options{Timestamps: true})
			if hot {
				h.get(t, acceptProto) // protobuf asked for: encoded at delivery from now on
			}
			ctx := context.Background()
			t0 := time.Unix(1_700_000_000, 0)
			src, err := nativeRegistry(t).Gather()
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]*dto.MetricFamily{}
			for _, mf := range src {
				want[mf.GetName()] = proto.Clone(mf).(*dto.MetricFamily)
			}
			for _, inst := range []string{"a", "b"} {
				fams, err := nativeRegistry(t).Gather()
				if err != nil {
					t.Fatal(err)
				}
				if err := h.sink.Deliver(ctx, scrapeOfFamilies(t, "j", inst, t0, fams)); err != nil {
					t.Fatal(err)
				}
			}
			// A text scrape: its protobuf is made from the text encoding, on demand when cold.
			if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "text", t0, []byte("# TYPE requests_total counter\nrequests_total 7\n"), "text/plain; version=0.0.4")); err != nil {
				t.Fatal(err)
			}

			body, ct := h.get(t, acceptProto+";escaping=allow-utf-8")
			if want := "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited; escaping=allow-utf-8"; ct != want {
				t.Errorf("Content-Type %q, want %q", ct, want)
			}
			got := decodeProto(t, body)
			hist := got["latency_seconds"]
			if hist == nil || len(hist.GetMetric()) != 2 {
				t.Fatalf("latency_seconds: %v", hist)
			}
			wh := want["latency_seconds"].GetMetric()[0].GetHistogram()
			for _, m := range hist.GetMetric() {
				gh := m.GetHistogram()
				if gh.GetSchema() != wh.GetSchema() || gh.GetSampleCount() != 200 || gh.GetSampleSum() != wh.GetSampleSum() ||
					len(gh.GetPositiveSpan()) == 0 || !proto.Equal(&dto.Histogram{PositiveSpan: gh.PositiveSpan, PositiveDelta: gh.PositiveDelta},
					&dto.Histogram{PositiveSpan: wh.PositiveSpan, PositiveDelta: wh.PositiveDelta}) {
					t.Errorf("native histogram of %s differs:\n got %v\nwant %v", label(m, "instance"), gh, wh)
				}
				if gh.GetCreatedTimestamp() == nil {
					t.Errorf("native histogram without created timestamp")
				}
				if m.GetTimestampMs() != t0.UnixMilli() {
					t.Errorf("timestamp %d, want the scrape's %d", m.GetTimestampMs(), t0.UnixMilli())
				}
			}
			if got := hist.GetHelp(); got != "Latency." {
				t.Errorf("HELP %q", got)
			}
			reqs := got["requests_total"]
			if reqs == nil || len(reqs.GetMetric()) != 3 {
				t.Fatalf("requests_total: %v", reqs)
			}
			for _, m := range reqs.GetMetric() {
				switch label(m, "instance") {
				case "text":
					if m.GetCounter().GetValue() != 7 {
						t.Errorf("text target's counter: %v", m)
					}
				default:
					c := m.GetCounter()
					if c.GetValue() != 3 || c.GetExemplar() == nil || c.GetCreatedTimestamp() == nil {
						t.Errorf("counter lost its value, exemplar or created timestamp: %v", c)
					}
				}
			}
			if got["room.temperature"] == nil {
				t.Errorf("UTF-8 name not served as is: %v", keys(got))
			}
			if got["streams_scrape_up"] == nil {
				t.Errorf("health families not served")
			}

			// OpenMetrics carries the exemplars, and no _created lines: promhttp
			// writes none unless its handler enables them.
			om, _ := h.get(t, acceptOpenMetrics)
			if !bytes.Contains(om, []byte(`# {trace_id="abc"} 3`)) || bytes.Contains(om, []byte("_created")) {
				t.Errorf("OpenMetrics: exemplar missing or _created lines written:\n%s", om)
			}

			// Without escaping=allow-utf-8, as promhttp, the names are escaped.
			body, ct = h.get(t, acceptProto)
			if want := "escaping=underscores"; !bytes.HasSuffix([]byte(ct), []byte(want)) {
				t.Errorf("Content-Type %q, want %s", ct, want)
			}
			got = decodeProto(t, body)
			if got["room.temperature"] != nil || got["room_temperature"] == nil {
				t.Errorf("UTF-8 name not escaped: %v", keys(got))
			}
			if n := len(got["latency_seconds"].GetMetric()); n != 2 {
				t.Errorf("latency_seconds: %d metrics in an escaped response", n)
			}
		})
	}
}

func keys(m map[string]*dto.MetricFamily) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// TestTextUTF8: text 1.0.0 with escaping=allow-utf-8 serves UTF-8 names quoted; a
// 0.0.4 client gets them escaped with underscores.
func TestTextUTF8(t *testing.T) {
	h := newHarness(t, endpoint.Options{})
	fams, err := nativeRegistry(t).Gather()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.sink.Deliver(context.Background(), scrapeOfFamilies(t, "j", "a", time.Unix(1_700_000_000, 0), fams)); err != nil {
		t.Fatal(err)
	}
	body, ct := h.get(t, "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2")
	if ct != "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	if !bytes.Contains(body, []byte(`{"room.temperature",instance="a",job="j"} 21.5`)) {
		t.Errorf("text 1.0.0 lacks the UTF-8 name:\n%s", body)
	}
	body, _ = h.get(t, "text/plain;version=0.0.4")
	if !bytes.Contains(body, []byte(`room_temperature{instance="a",job="j"} 21.5`)) {
		t.Errorf("text 0.0.4 lacks the escaped name:\n%s", body)
	}
	if model.IsValidLegacyMetricName("room.temperature") {
		t.Fatal("the test's name is a legacy one")
	}
}
