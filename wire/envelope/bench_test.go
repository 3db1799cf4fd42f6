package envelope

import (
	"testing"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
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

// signedScrape is the node_exporter scrape, a Codec that signs it and one that does
// not, its signed message, and the fields as Decode parses them (where the signature is).
func signedScrape(b *testing.B) (signing, plain *Codec, e *Envelope, msg []byte, w *wireFields) {
	e = scrape(b, fixture.NodeExporter)
	signing = newCodec(b, WithSigner(testKey(b, 1)))
	plain = newCodec(b)
	msg, err := signing.Encode(e)
	if err != nil {
		b.Fatal(err)
	}
	w = new(wireFields)
	if _, err := parseFields(msg[headerLen:len(msg)-trailerLen], w, nil); err != nil {
		b.Fatal(err)
	}
	return signing, plain, e, msg, w
}

// perOp is the loop's time per op, in ns.
func perOp(b *testing.B) float64 { return float64(b.Elapsed().Nanoseconds()) / float64(b.N) }

// ratio reports cost/base as a metric, when base was measured in this run.
func ratio(b *testing.B, cost, base float64, unit string) {
	if base > 0 {
		b.ReportMetric(cost/base, unit)
	}
}

// baseline runs f as sub-benchmark name and returns its time per op: the unsigned
// Encode or Decode the signing costs are reported against, measured in the same run
// on the same machine.
func baseline(b *testing.B, name string, bytes int, f func() error) float64 {
	var ns float64
	b.Run(name, func(b *testing.B) {
		b.SetBytes(int64(bytes))
		b.ReportAllocs()
		for b.Loop() {
			if err := f(); err != nil {
				b.Fatal(err)
			}
		}
		ns = perOp(b)
	})
	return ns
}

// BenchmarkSign is what signing adds to scrape-once's Encode of the node_exporter
// scrape. "encode" is the unsigned zstd Encode (as BenchmarkEncode/zstd), "ed25519" the
// signature alone over the bytes Encode signs (header and fields, ~10 KB), and
// "encode-signed" a whole signed Encode; sign/encode and signed/encode are their
// ratios to "encode".
func BenchmarkSign(b *testing.B) {
	signing, plain, e, msg, w := signedScrape(b)
	enc := baseline(b, "encode", len(e.Body), func() error { _, err := plain.Encode(e); return err })
	signed := msg[:headerLen+w.sigAt]
	b.Run("ed25519", func(b *testing.B) {
		b.SetBytes(int64(len(signed)))
		b.ReportAllocs()
		for b.Loop() {
			sign(signing.signer.priv, signed)
		}
		ratio(b, perOp(b), enc, "sign/encode")
	})
	b.Run("encode-signed", func(b *testing.B) {
		b.SetBytes(int64(len(e.Body)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := signing.Encode(e); err != nil {
				b.Fatal(err)
			}
		}
		ratio(b, perOp(b), enc, "signed/encode")
		b.ReportMetric(float64(len(msg)), "wire-bytes")
	})
}

// BenchmarkVerify is what verifying adds to the drain's Decode of the node_exporter
// scrape. "encode" and "decode" are the unsigned zstd Encode and Decode, "ed25519" the
// check Decode makes (the signer's key decoded, the signature verified over the
// message as received), "decode-signed" a whole signed Decode; the ratios are to
// "encode" and "decode".
func BenchmarkVerify(b *testing.B) {
	signing, plain, e, msg, w := signedScrape(b)
	enc := baseline(b, "encode", len(e.Body), func() error { _, err := plain.Encode(e); return err })
	unsigned, err := plain.Encode(e)
	if err != nil {
		b.Fatal(err)
	}
	dec := baseline(b, "decode", len(e.Body), func() error { _, err := plain.Decode(unsigned); return err })
	b.Run("ed25519", func(b *testing.B) {
		b.SetBytes(int64(headerLen + w.sigAt))
		b.ReportAllocs()
		for b.Loop() {
			if err := w.verify(msg); err != nil {
				b.Fatal(err)
			}
		}
		ratio(b, perOp(b), enc, "verify/encode")
		ratio(b, perOp(b), dec, "verify/decode")
	})
	b.Run("decode-signed", func(b *testing.B) {
		b.SetBytes(int64(len(e.Body)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := signing.Decode(msg); err != nil {
				b.Fatal(err)
			}
		}
		ratio(b, perOp(b), dec, "signed/decode")
	})
}
