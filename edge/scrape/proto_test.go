package scrape

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/proto"
)

const protoCT = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"

func encodeProto(t *testing.T, fams []*dto.MetricFamily) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeProtoDelim).WithEscapingScheme(model.NoEscaping))
	for _, mf := range fams {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// TestProcessProto: a protobuf body is validated and published as it came; samples
// are counted as Prometheus counts what it ingests with the job's histogram settings;
// relabelling keeps native histograms whole; a label that is not UTF-8 fails the scrape.
func TestProcessProto(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "latency_seconds", Help: "Latency.",
		Buckets: []float64{0.1, 1}, NativeHistogramBucketFactor: 1.1}, []string{"path"})
	reg.MustRegister(h)
	h.WithLabelValues("/a").Observe(0.5)
	h.WithLabelValues("/b").Observe(2)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	body := encodeProto(t, fams)
	ctx := context.Background()

	for _, c := range []struct {
		h    Histograms
		want int
	}{
		{Histograms{}, 2 * 5},                                  // classic: 3 buckets, sum, count, per series
		{Histograms{Native: true}, 2},                          // one native histogram per series
		{Histograms{Native: true, AlwaysClassic: true}, 2 * 6}, // both
	} {
		out, n, err := Process(ctx, body, protoCT, Limits{Histograms: c.h}, Relabel{})
		if err != nil {
			t.Fatalf("%+v: %v", c.h, err)
		}
		if n != c.want {
			t.Errorf("%+v: %d samples, want %d", c.h, n, c.want)
		}
		if !bytes.Equal(out, body) {
			t.Errorf("%+v: the body was rewritten", c.h)
		}
	}

	out, _, err := Process(ctx, body, protoCT, Limits{Histograms: Histograms{Native: true}}, Relabel{
		Configs: relabels(t, "- {source_labels: [path], regex: /b, action: drop}"),
		Target:  labels.FromStrings("job", "j", "instance", "i"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var got dto.MetricFamily
	if err := protoUnmarshalFirst(out, &got); err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(fams[0]).(*dto.MetricFamily)
	want.Metric = want.Metric[:1]
	if !proto.Equal(&got, want) {
		t.Errorf("relabelled:\n got %v\nwant %v", &got, want)
	}

	fams[0].Metric[0].Label[0].Value = proto.String("\xff")
	if _, _, err := Process(ctx, encodeProto(t, fams), protoCT, Limits{}, Relabel{}); !errors.Is(err, ErrInvalidBody) {
		t.Errorf("a label value that is not UTF-8: %v, want ErrInvalidBody", err)
	}
}

func protoUnmarshalFirst(b []byte, mf *dto.MetricFamily) error {
	dec := expfmt.NewDecoder(bytes.NewReader(b), expfmt.NewFormat(expfmt.TypeProtoDelim))
	return dec.Decode(mf)
}

// TestProcessProtoRefusals: what the drain could not take whole fails the scrape at the
// edge, with its reason: a family with two types, an exemplar label that is not UTF-8,
// a relabelling that moves a metric into a family of another type.
func TestProcessProtoRefusals(t *testing.T) {
	gauge := func(name string, v float64) *dto.MetricFamily {
		return &dto.MetricFamily{Name: proto.String(name), Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(v)}}}}
	}
	counter := func(name string, v float64, ex *dto.Exemplar) *dto.MetricFamily {
		return &dto.MetricFamily{Name: proto.String(name), Type: dto.MetricType_COUNTER.Enum(),
			Metric: []*dto.Metric{{Counter: &dto.Counter{Value: proto.Float64(v), Exemplar: ex}}}}
	}
	badEx := &dto.Exemplar{Label: []*dto.LabelPair{{Name: proto.String("trace_id"), Value: proto.String("\xfe")}}, Value: proto.Float64(1)}
	ctx := context.Background()
	for _, c := range []struct {
		name string
		fams []*dto.MetricFamily
		rl   Relabel
		want string
	}{
		{"two types", []*dto.MetricFamily{gauge("x", 1), counter("x", 2, nil)}, Relabel{}, `family "x" is both`},
		{"exemplar not UTF-8", []*dto.MetricFamily{counter("c_total", 1, badEx)}, Relabel{}, "exemplar of"},
		{"relabelled into another type", []*dto.MetricFamily{counter("c_total", 42, nil), gauge("g", 1)},
			Relabel{Configs: relabels(t, "- {source_labels: [__name__], regex: c_total, target_label: __name__, replacement: g}")}, `family "g" would hold`},
	} {
		_, _, err := Process(ctx, encodeProto(t, c.fams), protoCT, Limits{}, c.rl)
		if !errors.Is(err, ErrInvalidBody) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrInvalidBody saying %q", c.name, err, c.want)
		}
	}
}
