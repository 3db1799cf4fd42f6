package exposition

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// protoRegistry is a registry with a native histogram that has classic buckets too (as
// client_golang exposes one), a counter with an exemplar and created timestamp, and a
// gauge with a UTF-8 name and labels out of order.
func protoRegistry(t *testing.T) ([]byte, []*dto.MetricFamily) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "latency_seconds", Help: "Latency.",
		Buckets: []float64{0.1, 1}, NativeHistogramBucketFactor: 1.1})
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "requests_total", Help: "Requests."})
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "room.temperature", Help: "UTF-8."}, []string{"z", "a"})
	reg.MustRegister(h, c, g)
	for _, v := range []float64{0.05, 0.5, 0.7} {
		h.Observe(v)
	}
	// A classic bucket's exemplar, stamped as client_golang stamps them.
	h.(prometheus.ExemplarObserver).ObserveWithExemplar(3, prometheus.Labels{"trace_id": "t2"})
	c.(prometheus.ExemplarAdder).AddWithExemplar(2, prometheus.Labels{"trace_id": "t1"})
	g.WithLabelValues("1", "2").Set(21.5)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeProtoDelim).WithEscapingScheme(model.NoEscaping))
	for _, mf := range fams {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes(), fams
}

// TestParseProto: a protobuf body comes back as the families the target gathered
// (labels sorted, as in the other formats), native histograms, exemplars and created
// timestamps included; the histogram settings keep what Prometheus with them ingests.
func TestParseProto(t *testing.T) {
	body, want := protoRegistry(t)
	const ct = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
	got, err := Parse(body, ct)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d families, want %d", len(got), len(want))
	}
	for i := range want {
		sortLabels(want[i].Metric[0].Label)
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("family %d:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
	if ex := got[1].Metric[0].GetCounter().GetExemplar(); ex == nil || got[1].Metric[0].GetCounter().GetCreatedTimestamp() == nil {
		t.Errorf("the counter lost its exemplar or created timestamp: %v", got[1])
	}

	hist := func(h Histograms) *dto.Histogram {
		fams, err := ParseScrape(body, ct, h)
		if err != nil {
			t.Fatal(err)
		}
		return fams[0].Metric[0].GetHistogram()
	}
	if h := hist(Histograms{}); len(h.GetBucket()) < 2 || IsNative(h) || h.GetSampleCount() != 4 {
		t.Errorf("without native histograms: want the classic buckets only, got %v", h)
	}
	if h := hist(Histograms{Native: true}); len(h.GetBucket()) != 0 || !IsNative(h) || len(h.GetExemplars()) != 1 {
		t.Errorf("native histograms: want the native parts only, and the dropped bucket's exemplar, got %v", h)
	}
	if h := hist(Histograms{Native: true, AlwaysClassic: true}); len(h.GetBucket()) < 2 || !IsNative(h) {
		t.Errorf("native and always classic: want both, got %v", h)
	}
	if h := hist(Histograms{ConvertToNHCB: true}); h.GetSchema() != customBucketsSchema || len(h.GetBucket()) < 2 {
		t.Errorf("converted to custom buckets: want schema -53 over the classic buckets, got %v", h)
	}
	if h := hist(Histograms{Native: true, ConvertToNHCB: true}); h.GetSchema() == customBucketsSchema {
		t.Errorf("a native histogram is not converted: %v", h)
	}
	text, err := ParseScrape([]byte("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n"), "text/plain; version=0.0.4", Histograms{ConvertToNHCB: true})
	if err != nil || text[0].Metric[0].GetHistogram().GetSchema() != customBucketsSchema {
		t.Errorf("a text classic histogram converted: %v, %v", text, err)
	}
	if _, err := Parse([]byte{0x05, 0x0a}, ct); err == nil {
		t.Error("a truncated protobuf body parsed")
	}
}

// TestParseProtoHostileLength: a message that declares a length beyond the body is
// refused without allocating what it declares.
func TestParseProtoHostileLength(t *testing.T) {
	body := []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x0a} // declares 4 GiB
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := Parse(body, "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"); err == nil {
		t.Fatal("parsed")
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Errorf("allocated %d bytes for a 6-byte body", grew)
	}
}

// TestTakeHistogramExemplars: a native histogram without exemplars of its own takes the
// timestamped exemplars of the classic buckets it drops; dropping the native parts
// drops its exemplars.
func TestTakeHistogramExemplars(t *testing.T) {
	stamped := &dto.Exemplar{Value: proto.Float64(0.5), Timestamp: timestamppb.Now()}
	unstamped := &dto.Exemplar{Value: proto.Float64(0.05)}
	h := func() *dto.Histogram {
		return &dto.Histogram{
			Schema: proto.Int32(0), ZeroThreshold: proto.Float64(1e-9),
			PositiveSpan: []*dto.BucketSpan{{Offset: proto.Int32(0), Length: proto.Uint32(1)}}, PositiveDelta: []int64{2},
			Bucket: []*dto.Bucket{{UpperBound: proto.Float64(0.1), CumulativeCount: proto.Uint64(1), Exemplar: unstamped},
				{UpperBound: proto.Float64(1), CumulativeCount: proto.Uint64(2), Exemplar: stamped}},
		}
	}
	native := h()
	takeHistogram(native, Histograms{Native: true})
	if len(native.Bucket) != 0 || len(native.Exemplars) != 1 || native.Exemplars[0] != stamped {
		t.Errorf("native only: %v", native)
	}
	classic := h()
	classic.Exemplars = []*dto.Exemplar{stamped}
	takeHistogram(classic, Histograms{})
	if len(classic.Bucket) != 2 || len(classic.Exemplars) != 0 || IsNative(classic) {
		t.Errorf("classic only: %v", classic)
	}
}

// TestParseProtoSplitFamily: a family split over two messages is one family; a name
// with two types is invalid; a family without metrics is left out.
func TestParseProtoSplitFamily(t *testing.T) {
	const ct = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
	g := func(typ dto.MetricType, v float64) *dto.MetricFamily {
		return &dto.MetricFamily{Name: proto.String("m"), Type: typ.Enum(),
			Metric: []*dto.Metric{{Label: []*dto.LabelPair{{Name: proto.String("v"), Value: proto.String(fmt.Sprint(v))}}, Gauge: &dto.Gauge{Value: proto.Float64(v)}}}}
	}
	empty := &dto.MetricFamily{Name: proto.String("e"), Type: dto.MetricType_GAUGE.Enum()}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeProtoDelim))
	for _, mf := range []*dto.MetricFamily{g(dto.MetricType_GAUGE, 1), empty, g(dto.MetricType_GAUGE, 2)} {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	fams, err := Parse(b.Bytes(), ct)
	if err != nil || len(fams) != 1 || len(fams[0].Metric) != 2 {
		t.Errorf("split family: %v, %v", fams, err)
	}
	b.Reset()
	for _, mf := range []*dto.MetricFamily{g(dto.MetricType_GAUGE, 1), g(dto.MetricType_UNTYPED, 2)} {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Parse(b.Bytes(), ct); !errors.Is(err, ErrInvalid) {
		t.Errorf("a name with two types: %v, want ErrInvalid", err)
	}
}

// TestIsNativeAsPrometheus: a float zero count alone does not make a histogram native,
// as in Prometheus's protobuf parser: its classic buckets stay.
func TestIsNativeAsPrometheus(t *testing.T) {
	h := &dto.Histogram{ZeroCountFloat: proto.Float64(1),
		Bucket: []*dto.Bucket{{UpperBound: proto.Float64(1), CumulativeCount: proto.Uint64(1)}}}
	takeHistogram(h, Histograms{Native: true})
	if len(h.Bucket) != 1 {
		t.Errorf("classic buckets dropped: %v", h)
	}
}
