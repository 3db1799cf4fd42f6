package envelope

import (
	"testing"

	"github.com/prometheus-streams/prometheus-streams/lib/fixture"
)

// reportSeries reports the series per second a benchmark loop got through.
func reportSeries(b *testing.B, series int) {
	b.ReportMetric(float64(series)*float64(b.N)/b.Elapsed().Seconds(), "series/s")
}

// BenchmarkEncode is scrape-once's cost per target scrape: the node_exporter capture,
// framed and compressed. MB/s is of the raw body.
func BenchmarkEncode(b *testing.B) {
	e := scrape(b, fixture.NodeExporter)
	for _, comp := range []Compression{CompressionZstd, CompressionNone} {
		b.Run(comp.String(), func(b *testing.B) {
			c := newCodec(b, BodyCompression(comp))
			msg, err := c.Encode(e) // warm the encoder's tables and the scratch pool
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(e.Body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Encode(e); err != nil {
					b.Fatal(err)
				}
			}
			reportSeries(b, e.Series)
			b.ReportMetric(float64(len(msg)), "wire-bytes")
		})
	}
}

// BenchmarkDecode is the drain's cost per message, on one core.
func BenchmarkDecode(b *testing.B) {
	e := scrape(b, fixture.NodeExporter)
	for _, comp := range []Compression{CompressionZstd, CompressionNone} {
		b.Run(comp.String(), func(b *testing.B) {
			c := newCodec(b, BodyCompression(comp))
			msg, err := c.Encode(e)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(e.Body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Decode(msg); err != nil {
					b.Fatal(err)
				}
			}
			reportSeries(b, e.Series)
		})
	}
}

// BenchmarkDecodeParallel is the drain decoding a fleet's messages on all cores with
// one shared Codec.
func BenchmarkDecodeParallel(b *testing.B) {
	e := scrape(b, fixture.NodeExporter)
	c := newCodec(b)
	msg, err := c.Encode(e)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(e.Body)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Decode(msg); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportSeries(b, e.Series)
}

// BenchmarkColdEncode is what a one-shot scrape-once pays for its first message:
// NewCodec, one Encode (which builds the compressor's tables) and Close.
func BenchmarkColdEncode(b *testing.B) {
	e := scrape(b, fixture.NodeExporter)
	b.ReportAllocs()
	for b.Loop() {
		c, err := NewCodec()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Encode(e); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
