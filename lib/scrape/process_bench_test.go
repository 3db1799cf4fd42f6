package scrape

import (
	"errors"
	"io"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"

	"github.com/prometheus-streams/prometheus-streams/lib/fixture"
)

// BenchmarkProcess measures validating a node_exporter-sized body (Process, expfmt),
// beside a bare pass of Prometheus's own streaming text parser over the same bytes for
// reference, and relabelling.
func BenchmarkProcess(b *testing.B) {
	body := fixture.Replicate(b, fixture.NodeExporter, 1000)
	_, series, err := Process(body, fixture.TextContentType, Limits{}, Relabel{})
	if err != nil {
		b.Fatal(err)
	}
	report := func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportMetric(float64(series)*float64(b.N)/b.Elapsed().Seconds(), "series/s")
	}
	b.Run("validate=expfmt", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := Process(body, fixture.TextContentType, Limits{}, Relabel{}); err != nil {
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
			if _, _, err := Process(body, fixture.TextContentType, Limits{}, Relabel{Configs: rcs}); err != nil {
				b.Fatal(err)
			}
		}
		report(b)
	})
}
