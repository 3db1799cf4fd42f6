package exposition

import (
	"bytes"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// seriesIn counts the sample lines of a text exposition: its series.
func seriesIn(body []byte) int {
	n := 0
	for _, l := range bytes.Split(body, []byte("\n")) {
		if len(l) > 0 && l[0] != '#' {
			n++
		}
	}
	return n
}

func reportSeries(b *testing.B, series int) {
	b.ReportMetric(float64(series)*float64(b.N)/b.Elapsed().Seconds(), "series/s")
}

// BenchmarkParse measures Parse on a node_exporter capture replicated to about 1,000
// series, in the text format as captured and as client_golang would serve it in
// OpenMetrics and in Prometheus's protobuf format (the same series), beside expfmt's bare text parse for reference (the floor of the text
// path, which is expfmt plus sorting).
func BenchmarkParse(b *testing.B) {
	text := fixture.Replicate(b, fixture.NodeExporter, 1000)
	series := seriesIn(text)
	fams, err := Parse(text, fixture.TextContentType)
	if err != nil {
		b.Fatal(err)
	}
	var om, pb bytes.Buffer
	if err := Encode(&om, fams, expfmt.NewFormat(expfmt.TypeOpenMetrics)); err != nil {
		b.Fatal(err)
	}
	if err := Encode(&pb, fams, expfmt.NewFormat(expfmt.TypeProtoDelim)); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name, ct string
		body     []byte
	}{
		{"format=text", fixture.TextContentType, text},
		{"format=openmetrics", "application/openmetrics-text; version=1.0.0", om.Bytes()},
		{"format=protobuf", "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited", pb.Bytes()},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(tc.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(tc.body, tc.ct); err != nil {
					b.Fatal(err)
				}
			}
			reportSeries(b, series)
		})
	}
	b.Run("reference=expfmt", func(b *testing.B) {
		b.SetBytes(int64(len(text)))
		b.ReportAllocs()
		for b.Loop() {
			p := expfmt.NewTextParser(model.UTF8Validation)
			if _, err := p.TextToMetricFamilies(bytes.NewReader(text)); err != nil {
				b.Fatal(err)
			}
		}
		reportSeries(b, series)
	})
}

// BenchmarkAttach measures Attach on the same families. Each iteration first puts the
// parsed label slices back (a slice header per metric, no allocation), so every
// iteration labels a fresh scrape.
func BenchmarkAttach(b *testing.B) {
	text := fixture.Replicate(b, fixture.NodeExporter, 1000)
	series := seriesIn(text)
	target := Target{Job: "node", Instance: "host.example.org:9100", Labels: []Label{{"dc", "fra1"}, {"env", "prod"}, {"site", "edge-42"}}}
	for _, tc := range []struct {
		name   string
		honor  bool
		expose string // a label every metric exposes, to force the clash path
	}{
		{"honor_labels=false", false, ""},
		{"honor_labels=true", true, ""},
		{"honor_labels=false,clash=all", false, "instance"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			fams, err := Parse(text, fixture.TextContentType)
			if err != nil {
				b.Fatal(err)
			}
			var orig [][]*dto.LabelPair
			for _, mf := range fams {
				for _, m := range mf.Metric {
					if tc.expose != "" {
						m.Label = append(m.Label, pairsOf(tc.expose, "exposed")...)
						sortLabels(m.Label)
					}
					orig = append(orig, m.Label)
				}
			}
			t := target
			t.HonorLabels = tc.honor
			b.ReportAllocs()
			for b.Loop() {
				i := 0
				for _, mf := range fams {
					for _, m := range mf.Metric {
						m.Label = orig[i]
						i++
					}
				}
				Attach(fams, t)
			}
			reportSeries(b, series)
		})
	}
}
