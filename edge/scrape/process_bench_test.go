package scrape

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// BenchmarkProcess measures validating a node_exporter-sized body (Process), beside a
// bare pass of Prometheus's own streaming text parser over the same bytes for reference
// (what validation adds to it), and relabelling.
func BenchmarkProcess(b *testing.B) {
	body := fixture.Replicate(b, fixture.NodeExporter, 1000)
	_, series, err := Process(context.Background(), body, fixture.TextContentType, Limits{}, Relabel{})
	if err != nil {
		b.Fatal(err)
	}
	report := func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportMetric(float64(series)*float64(b.N)/b.Elapsed().Seconds(), "series/s")
	}
	b.Run("validate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := Process(context.Background(), body, fixture.TextContentType, Limits{}, Relabel{}); err != nil {
				b.Fatal(err)
			}
		}
		report(b)
	})
	b.Run("validate-protobuf", func(b *testing.B) {
		// The same series as client_golang serves them in its protobuf format.
		pb := protoOf(b, body)
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := Process(context.Background(), pb, protoCT, Limits{}, Relabel{}); err != nil {
				b.Fatal(err)
			}
		}
		report(b)
	})
	b.Run("reference=textparse-scan", func(b *testing.B) {
		b.ReportAllocs()
		var lset labels.Labels
		for b.Loop() {
			p := textparse.NewPromParser(body, labels.NewSymbolTable(), false)
			for {
				e, err := p.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
				if e == textparse.EntrySeries {
					p.Labels(&lset)
				}
			}
		}
		report(b)
	})
	b.Run("relabel+validate", func(b *testing.B) {
		rcs := relabels(b, "- {source_labels: [__name__], regex: 'node_cpu_.*', action: drop}")
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := Process(context.Background(), body, fixture.TextContentType, Limits{}, Relabel{Configs: rcs}); err != nil {
				b.Fatal(err)
			}
		}
		report(b)
	})
}

// BenchmarkProcessWide measures one series of 30,000 labels (319 KB), which expfmt took
// tens of seconds to read (quadratic in a series' labels).
func BenchmarkProcessWide(b *testing.B) {
	body := manyLabels(30000)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, _, err := Process(context.Background(), body, fixture.TextContentType, Limits{}, Relabel{}); err != nil {
			b.Fatal(err)
		}
	}
}

// protoOf is a text body's families in Prometheus's protobuf format.
func protoOf(b *testing.B, text []byte) []byte {
	b.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		b.Fatal(err)
	}
	var out bytes.Buffer
	enc := expfmt.NewEncoder(&out, expfmt.NewFormat(expfmt.TypeProtoDelim))
	for _, mf := range fams {
		if err := enc.Encode(mf); err != nil {
			b.Fatal(err)
		}
	}
	return out.Bytes()
}
