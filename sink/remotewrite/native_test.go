package remotewrite

import (
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	remote "github.com/prometheus/client_golang/exp/api/remote"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// loopback is a remote-write receiver that keeps what it is sent, decoded: each series
// in 1.0's shape (2.0's symbols resolved), with its start timestamps by labels.
type loopback struct {
	mu     sync.Mutex
	series []prompb.TimeSeries
	st     map[string][]int64 // 2.0: start timestamps of the samples and histograms
}

func (l *loopback) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(r.Body)
	if err == nil {
		raw, err = snappy.Decode(nil, raw)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !strings.Contains(r.Header.Get("Content-Type"), "io.prometheus.write.v2.Request") {
		var req prompb.WriteRequest
		if err := req.Unmarshal(raw); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		l.series = append(l.series, req.Timeseries...)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	var req writev2.Request
	if err := req.Unmarshal(raw); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if l.st == nil {
		l.st = map[string][]int64{}
	}
	label := func(refs []uint32) []prompb.Label {
		var ls []prompb.Label
		for i := 0; i+1 < len(refs); i += 2 {
			ls = append(ls, prompb.Label{Name: req.Symbols[refs[i]], Value: req.Symbols[refs[i+1]]})
		}
		return ls
	}
	var samples, hists int
	for _, ts := range req.Timeseries {
		out := prompb.TimeSeries{Labels: label(ts.LabelsRefs)}
		key := render(out.Labels)
		for _, s := range ts.Samples {
			out.Samples = append(out.Samples, prompb.Sample{Value: s.Value, Timestamp: s.Timestamp})
			l.st[key] = append(l.st[key], s.StartTimestamp)
		}
		for _, h := range ts.Histograms {
			if h.IsFloatHistogram() {
				out.Histograms = append(out.Histograms, prompb.FromFloatHistogram(h.Timestamp, h.ToFloatHistogram()))
			} else {
				out.Histograms = append(out.Histograms, prompb.FromIntHistogram(h.Timestamp, h.ToIntHistogram()))
			}
			l.st[key] = append(l.st[key], h.StartTimestamp)
		}
		for _, e := range ts.Exemplars {
			out.Exemplars = append(out.Exemplars, prompb.Exemplar{Labels: label(e.LabelsRefs), Value: e.Value, Timestamp: e.Timestamp})
		}
		samples += len(ts.Samples)
		hists += len(ts.Histograms)
		l.series = append(l.series, out)
	}
	w.Header().Set("X-Prometheus-Remote-Write-Samples-Written", strconv.Itoa(samples))
	w.Header().Set("X-Prometheus-Remote-Write-Histograms-Written", strconv.Itoa(hists))
	w.Header().Set("X-Prometheus-Remote-Write-Exemplars-Written", "0")
	w.WriteHeader(http.StatusNoContent)
}

// take returns what the receiver holds by series, and forgets it.
func (l *loopback) take() (map[string]prompb.TimeSeries, map[string][]int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]prompb.TimeSeries{}
	for _, ts := range l.series {
		k := render(ts.Labels)
		prev := out[k]
		prev.Labels = ts.Labels
		prev.Samples = append(prev.Samples, ts.Samples...)
		prev.Histograms = append(prev.Histograms, ts.Histograms...)
		prev.Exemplars = append(prev.Exemplars, ts.Exemplars...)
		out[k] = prev
	}
	st := l.st
	l.series, l.st = nil, nil
	return out, st
}

// richFamilies is a scrape with everything a family can hold: a counter with an exemplar
// and a created timestamp, native histograms (integer, float, custom buckets) and a
// classic one with a bucket exemplar.
func richFamilies(created time.Time, withNative bool) []*dto.MetricFamily {
	ct := timestamppb.New(created)
	ex := func(v float64, trace string) *dto.Exemplar {
		return &dto.Exemplar{
			Label: []*dto.LabelPair{{Name: proto.String("trace_id"), Value: proto.String(trace)}},
			Value: proto.Float64(v), Timestamp: timestamppb.New(created.Add(time.Second)),
		}
	}
	counter := dto.MetricType_COUNTER
	hist := dto.MetricType_HISTOGRAM
	fams := []*dto.MetricFamily{
		{Name: proto.String("c_total"), Type: &counter, Metric: []*dto.Metric{{
			Counter: &dto.Counter{Value: proto.Float64(7), Exemplar: ex(1, "abc"), CreatedTimestamp: ct},
		}}},
		{Name: proto.String("k"), Type: &hist, Metric: []*dto.Metric{{
			Histogram: &dto.Histogram{
				SampleCount: proto.Uint64(3), SampleSum: proto.Float64(2.5), CreatedTimestamp: ct,
				Bucket: []*dto.Bucket{
					{UpperBound: proto.Float64(1), CumulativeCount: proto.Uint64(2), Exemplar: ex(0.5, "kk")},
					{UpperBound: proto.Float64(2), CumulativeCount: proto.Uint64(3)},
				},
			},
		}}},
	}
	if !withNative {
		return fams
	}
	return append(fams,
		&dto.MetricFamily{Name: proto.String("h"), Type: &hist, Metric: []*dto.Metric{{
			Histogram: &dto.Histogram{
				SampleCount: proto.Uint64(5), SampleSum: proto.Float64(9.5), CreatedTimestamp: ct,
				Schema: proto.Int32(0), ZeroThreshold: proto.Float64(1e-128), ZeroCount: proto.Uint64(1),
				PositiveSpan:  []*dto.BucketSpan{{Offset: proto.Int32(0), Length: proto.Uint32(2)}},
				PositiveDelta: []int64{1, 2}, // 1, 3
				Exemplars:     []*dto.Exemplar{ex(1.5, "hh")},
			},
		}}},
		&dto.MetricFamily{Name: proto.String("hf"), Type: &hist, Metric: []*dto.Metric{{
			Histogram: &dto.Histogram{
				SampleCountFloat: proto.Float64(2.5), SampleSum: proto.Float64(4), Schema: proto.Int32(1),
				ZeroThreshold: proto.Float64(1e-128), ZeroCountFloat: proto.Float64(0.5),
				NegativeSpan:  []*dto.BucketSpan{{Offset: proto.Int32(1), Length: proto.Uint32(1)}},
				NegativeCount: []float64{2},
			},
		}}},
		&dto.MetricFamily{Name: proto.String("hc"), Type: &hist, Metric: []*dto.Metric{{
			Histogram: &dto.Histogram{
				SampleCount: proto.Uint64(4), SampleSum: proto.Float64(5), Schema: proto.Int32(histogram.CustomBucketsSchema),
				Bucket: []*dto.Bucket{
					{UpperBound: proto.Float64(1), CumulativeCount: proto.Uint64(1)},
					{UpperBound: proto.Float64(2), CumulativeCount: proto.Uint64(3), Exemplar: ex(1.5, "cc")},
					{UpperBound: proto.Float64(math.Inf(1)), CumulativeCount: proto.Uint64(4)},
				},
			},
		}}},
	)
}

func richScrape(start, created time.Time, withNative bool) *sink.Scrape {
	tg := exposition.Target{Job: "j", Instance: "i"}
	fams := richFamilies(created, withNative)
	exposition.Attach(fams, tg)
	env := &envelope.Envelope{Job: "j", Instance: "i", Start: start, Duration: 20 * time.Millisecond}
	return &sink.Scrape{Envelope: env, Target: tg, Families: fams,
		Health: exposition.Health(tg, exposition.Outcome{Up: true, Start: start, Duration: env.Duration, Samples: len(fams)})}
}

const lbl = `{instance="i",job="j"}`

// TestNativeHistogramsV2: remote-write 2.0 carries native histograms (integer, float and
// custom buckets) as histograms, created timestamps as the samples' start timestamps,
// and the exemplars of counters and buckets, each on its series; a native histogram
// that disappears ends with a stale histogram of its kind.
func TestNativeHistogramsV2(t *testing.T) {
	rcv := &loopback{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	snk := newSink(t, srv.URL, remote.WriteV2MessageType)
	start := time.UnixMilli(1_700_000_000_000)
	created := start.Add(-time.Hour)
	deliver(t, snk, richScrape(start, created, true))
	got, st := rcv.take()

	h := got[`h`+lbl]
	if len(h.Histograms) != 1 || len(h.Samples) != 0 {
		t.Fatalf("h: %+v, want one histogram", h)
	}
	ih := h.Histograms[0].ToIntHistogram()
	want := &histogram.Histogram{Count: 5, Sum: 9.5, ZeroThreshold: 1e-128, ZeroCount: 1,
		PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{1, 2}}
	if !ih.Equals(want) || h.Histograms[0].Timestamp != start.UnixMilli() {
		t.Errorf("h = %v at %d, want %v at %d", ih, h.Histograms[0].Timestamp, want, start.UnixMilli())
	}
	if len(h.Exemplars) != 1 || h.Exemplars[0].Value != 1.5 || render(h.Exemplars[0].Labels) != `{trace_id="hh"}` ||
		h.Exemplars[0].Timestamp != created.Add(time.Second).UnixMilli() {
		t.Errorf("h's exemplars: %+v", h.Exemplars)
	}
	if s := st[`h`+lbl]; !slices.Equal(s, []int64{created.UnixMilli()}) {
		t.Errorf("h's start timestamps: %v, want %d", s, created.UnixMilli())
	}
	if _, ok := got[`h_count`+lbl]; ok {
		t.Error("a native-only histogram has classic series")
	}

	hf := got[`hf`+lbl]
	if len(hf.Histograms) != 1 || !hf.Histograms[0].IsFloatHistogram() {
		t.Fatalf("hf: %+v, want one float histogram", hf)
	}
	if fh := hf.Histograms[0].ToFloatHistogram(); fh.Count != 2.5 || fh.Schema != 1 || !slices.Equal(fh.NegativeBuckets, []float64{2}) {
		t.Errorf("hf = %v", fh)
	}

	hc := got[`hc`+lbl]
	if len(hc.Histograms) != 1 {
		t.Fatalf("hc: %+v, want one histogram with custom buckets", hc)
	}
	ch := hc.Histograms[0].ToIntHistogram()
	if ch.Schema != histogram.CustomBucketsSchema || !slices.Equal(ch.CustomValues, []float64{1, 2}) || ch.Count != 4 || ch.Sum != 5 {
		t.Errorf("hc = %v (custom values %v)", ch, ch.CustomValues)
	}
	if len(hc.Exemplars) != 1 || render(hc.Exemplars[0].Labels) != `{trace_id="cc"}` {
		t.Errorf("hc's exemplars (from its buckets): %+v", hc.Exemplars)
	}

	c := got[`c_total`+lbl]
	if len(c.Samples) != 1 || c.Samples[0].Value != 7 || len(c.Exemplars) != 1 || c.Exemplars[0].Value != 1 {
		t.Errorf("c_total: %+v", c)
	}
	if s := st[`c_total`+lbl]; !slices.Equal(s, []int64{created.UnixMilli()}) {
		t.Errorf("c_total's start timestamps: %v", s)
	}
	if b := got[`k_bucket{instance="i",job="j",le="1.0"}`]; len(b.Exemplars) != 1 || b.Exemplars[0].Value != 0.5 {
		t.Errorf("k_bucket{le=1.0}'s exemplars: %+v", b.Exemplars)
	}

	// The native histograms disappear: each ends with a stale histogram of its kind.
	deliver(t, snk, richScrape(start.Add(time.Minute), created, false))
	got, _ = rcv.take()
	for name, float := range map[string]bool{"h": false, "hf": true, "hc": false} {
		s := got[name+lbl]
		if len(s.Histograms) != 1 || len(s.Samples) != 0 {
			t.Errorf("%s: %+v, want a stale histogram", name, s)
			continue
		}
		m := s.Histograms[0]
		if m.IsFloatHistogram() != float || !value.IsStaleNaN(m.Sum) || m.Timestamp != start.Add(time.Minute).UnixMilli() {
			t.Errorf("%s's marker: float %v sum %x at %d", name, m.IsFloatHistogram(), math.Float64bits(m.Sum), m.Timestamp)
		}
	}
}

// TestNativeHistogramsV1: remote-write 1.0 carries native histograms as 1.0 histograms
// and exemplars as Prometheus does, no start timestamps, and a histogram with custom
// buckets, which 1.0 cannot carry, as its classic series.
func TestNativeHistogramsV1(t *testing.T) {
	rcv := &loopback{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	snk := newSink(t, srv.URL, remote.WriteV1MessageType)
	start := time.UnixMilli(1_700_000_000_000)
	deliver(t, snk, richScrape(start, start.Add(-time.Hour), true))
	got, _ := rcv.take()

	if h := got[`h`+lbl]; len(h.Histograms) != 1 || h.Histograms[0].ToIntHistogram().Count != 5 || len(h.Exemplars) != 1 {
		t.Errorf("h: %+v, want a histogram and its exemplar", h)
	}
	if hf := got[`hf`+lbl]; len(hf.Histograms) != 1 || !hf.Histograms[0].IsFloatHistogram() {
		t.Errorf("hf: %+v, want a float histogram", hf)
	}
	if _, ok := got[`hc`+lbl]; ok {
		t.Error("hc written as a native histogram in 1.0")
	}
	for le, want := range map[string]float64{"1.0": 1, "2.0": 3, "+Inf": 4} {
		b := got[`hc_bucket{instance="i",job="j",le="`+le+`"}`]
		if len(b.Samples) != 1 || b.Samples[0].Value != want {
			t.Errorf("hc_bucket{le=%q}: %+v, want %v", le, b.Samples, want)
		}
		if le == "2.0" && (len(b.Exemplars) != 1 || b.Exemplars[0].Value != 1.5) {
			t.Errorf("hc_bucket{le=2.0}'s exemplars: %+v", b.Exemplars)
		}
	}
	if s := got[`hc_count`+lbl]; len(s.Samples) != 1 || s.Samples[0].Value != 4 {
		t.Errorf("hc_count: %+v", s.Samples)
	}
	if c := got[`c_total`+lbl]; len(c.Exemplars) != 1 || render(c.Exemplars[0].Labels) != `{trace_id="abc"}` {
		t.Errorf("c_total's exemplars: %+v", c.Exemplars)
	}
}

// TestExemplarsOnce: a target shows its recent exemplars at every scrape; each is
// written once, with the first scrape that shows it.
func TestExemplarsOnce(t *testing.T) {
	rcv := &loopback{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	snk := newSink(t, srv.URL, remote.WriteV2MessageType)
	start := time.UnixMilli(1_700_000_000_000)
	// The exemplars are a second newer than created: after the first scrape's time
	// when created is more than a second before it.
	deliver(t, snk, richScrape(start, start.Add(-2*time.Second), true))
	got, _ := rcv.take()
	if n := len(got[`c_total`+lbl].Exemplars); n != 1 {
		t.Fatalf("first scrape: %d exemplars of c_total, want 1", n)
	}
	deliver(t, snk, richScrape(start.Add(time.Minute), start.Add(-2*time.Second), true))
	got, _ = rcv.take()
	for k, s := range got {
		if len(s.Exemplars) > 0 {
			t.Errorf("%s: exemplars written again: %+v", k, s.Exemplars)
		}
	}
	deliver(t, snk, richScrape(start.Add(2*time.Minute), start.Add(time.Minute+time.Second), true))
	got, _ = rcv.take()
	if n := len(got[`c_total`+lbl].Exemplars); n != 1 {
		t.Errorf("a new exemplar: %d written, want 1", n)
	}
}

func TestOnlyExemplarsRefused(t *testing.T) {
	for msg, want := range map[string]bool{
		"remote write x: server returned HTTP status 400 Bad Request: out of order exemplar for series {a=\"b\"}":                                        true,
		"remote write x: server returned HTTP status 400 Bad Request: out of order exemplar for series {a=\"b\"}\nout of order exemplar for series {}\n": true,
		"remote write x: server returned HTTP status 400 Bad Request: out of order exemplar for series {}\nout of order sample for series {}":            false,
		"remote write x: server returned HTTP status 400 Bad Request: out of order sample":                                                               false,
		"": false,
	} {
		if got := onlyExemplarsRefused(msg); got != want {
			t.Errorf("%q: %v, want %v", msg, got, want)
		}
	}
}

// TestInvalidNativeHistogram: a native histogram whose spans and buckets disagree, which
// a receiver would refuse with the whole request, is not written as one: its count and
// sum remain, as classic series.
func TestInvalidNativeHistogram(t *testing.T) {
	hist := dto.MetricType_HISTOGRAM
	fams := []*dto.MetricFamily{{Name: proto.String("bad"), Type: &hist, Metric: []*dto.Metric{{
		Histogram: &dto.Histogram{
			SampleCount: proto.Uint64(3), SampleSum: proto.Float64(1), Schema: proto.Int32(0),
			PositiveSpan:  []*dto.BucketSpan{{Offset: proto.Int32(0), Length: proto.Uint32(2)}},
			PositiveDelta: []int64{3}, // one bucket for a span of two
		},
	}}}}
	out, _ := flatten(nil, nil, fams, 1, 0, true, false)
	names := map[string]bool{}
	for _, s := range out {
		if s.h != nil || s.fh != nil {
			t.Errorf("%s written as a native histogram", render(s.labels))
		}
		names[render(s.labels)] = true
	}
	if !names["bad_count"] || !names["bad_sum"] {
		t.Errorf("series written: %v, want bad_count and bad_sum", names)
	}
}
