package envelope

import (
	"bytes"
	"io"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// bodyCodec is one candidate body compression, wrapped so every candidate is driven
// the same way: compress appends to dst, decompress appends to dst, and per-call
// state (writers, readers, encoders) is built once and reused, as a Codec would.
type bodyCodec struct {
	name       string
	compress   func(dst, src []byte) []byte
	decompress func(dst, src []byte) ([]byte, error)
}

func bodyCodecs(tb testing.TB) []bodyCodec {
	tb.Helper()
	codecs := []bodyCodec{{
		name:       "none",
		compress:   func(dst, src []byte) []byte { return append(dst, src...) },
		decompress: func(dst, src []byte) ([]byte, error) { return append(dst, src...), nil },
	}}
	for _, g := range []struct {
		name  string
		level int
	}{{"gzip-default", gzip.DefaultCompression}, {"gzip-bestspeed", gzip.BestSpeed}} {
		w, err := gzip.NewWriterLevel(io.Discard, g.level)
		if err != nil {
			tb.Fatal(err)
		}
		var r gzip.Reader
		codecs = append(codecs, bodyCodec{
			name: g.name,
			compress: func(dst, src []byte) []byte {
				buf := bytes.NewBuffer(dst)
				w.Reset(buf)
				_, _ = w.Write(src)
				_ = w.Close()
				return buf.Bytes()
			},
			decompress: func(dst, src []byte) ([]byte, error) {
				if err := r.Reset(bytes.NewReader(src)); err != nil {
					return nil, err
				}
				buf := bytes.NewBuffer(dst)
				_, err := buf.ReadFrom(&r)
				return buf.Bytes(), err
			},
		})
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(dec.Close)
	for _, z := range []struct {
		name  string
		level zstd.EncoderLevel
	}{
		{"zstd-fastest", zstd.SpeedFastest},
		{"zstd-default", zstd.SpeedDefault},
		{"zstd-better", zstd.SpeedBetterCompression},
	} {
		// Same settings as the Codec: no zstd frame checksum (the envelope's CRC-32C
		// covers the compressed bytes).
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(z.level), zstd.WithEncoderCRC(false))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = enc.Close() })
		codecs = append(codecs, bodyCodec{
			name:       z.name,
			compress:   func(dst, src []byte) []byte { return enc.EncodeAll(src, dst) },
			decompress: func(dst, src []byte) ([]byte, error) { return dec.DecodeAll(src, dst) },
		})
	}
	codecs = append(codecs,
		bodyCodec{name: "s2", compress: s2.Encode, decompress: s2.Decode},
		bodyCodec{name: "s2-better", compress: s2.EncodeBetter, decompress: s2.Decode},
		bodyCodec{name: "snappy", compress: s2.EncodeSnappy, decompress: s2.Decode},
	)
	return codecs
}

// BenchmarkCompression measures the candidate body compressions on real captures; its
// figures are the ones quoted in the package doc. "ratio" is raw/compressed, and MB/s
// is of raw (uncompressed) bytes in both directions.
func BenchmarkCompression(b *testing.B) {
	bodies := []struct {
		name string
		body []byte
	}{
		{"node_exporter", fixture.Read(b, fixture.NodeExporter)},
		{"prometheus", fixture.Read(b, fixture.Prometheus)},
		{"pushgateway", fixture.Read(b, fixture.PushGateway)},
		{"node_exporter_10k", fixture.Replicate(b, fixture.NodeExporter, 10000)},
	}
	for _, body := range bodies {
		for _, c := range bodyCodecs(b) {
			compressed := c.compress(nil, body.body)
			ratio := float64(len(body.body)) / float64(len(compressed))
			out, err := c.decompress(nil, compressed)
			if err != nil || !bytes.Equal(out, body.body) {
				b.Fatalf("%s: round trip failed: %v", c.name, err)
			}
			b.Run(body.name+"/"+c.name+"/compress", func(b *testing.B) {
				b.SetBytes(int64(len(body.body)))
				b.ReportAllocs()
				dst := make([]byte, 0, 2*len(body.body))
				for b.Loop() {
					dst = c.compress(dst[:0], body.body)
				}
				b.ReportMetric(ratio, "ratio")
			})
			b.Run(body.name+"/"+c.name+"/decompress", func(b *testing.B) {
				b.SetBytes(int64(len(body.body)))
				b.ReportAllocs()
				dst := make([]byte, 0, 2*len(body.body))
				for b.Loop() {
					dst, err = c.decompress(dst[:0], compressed)
					if err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(ratio, "ratio")
			})
		}
	}
}

// BenchmarkDictionary measures the exposition dictionary on every capture: for each of
// zstd and zstd with the dictionary (all of it, or only its last 32 or 64 KiB, where
// build.go puts the most common families), at SpeedDefault, SpeedFastest and
// SpeedBetterCompression, "size/raw" is compressed÷raw, "warm" the Encode of a reused
// encoder and "cold" that of a fresh one (NewWriter, EncodeAll, Close: what a one-shot
// scrape-once pays), and "x-zstd" each one's ns/op over plain zstd at SpeedDefault
// measured in the same run.
// None of the captures is in the dictionary's corpus.
func BenchmarkDictionary(b *testing.B) {
	type variant struct {
		name  string
		level zstd.EncoderLevel
		dict  []byte
	}
	var variants []variant
	for _, l := range []struct {
		name  string
		level zstd.EncoderLevel
	}{{"default", zstd.SpeedDefault}, {"fastest", zstd.SpeedFastest}, {"better", zstd.SpeedBetterCompression}} {
		variants = append(variants,
			variant{"zstd-" + l.name, l.level, nil},
			variant{"dict32k-" + l.name, l.level, dictionary[max(0, len(dictionary)-32<<10):]},
			variant{"dict64k-" + l.name, l.level, dictionary[max(0, len(dictionary)-64<<10):]},
			variant{"dict112k-" + l.name, l.level, dictionary},
		)
	}
	for _, capture := range []string{fixture.NodeExporter, fixture.Prometheus, fixture.PushGateway} {
		body := fixture.Read(b, capture)
		base := map[string]float64{}
		for _, v := range variants {
			opts := []zstd.EOption{zstd.WithEncoderLevel(v.level), zstd.WithEncoderCRC(false), zstd.WithSingleSegment(true)}
			if v.dict != nil {
				opts = append(opts, zstd.WithEncoderDictRaw(DictionaryID, v.dict))
			}
			enc, err := zstd.NewWriter(nil, opts...)
			if err != nil {
				b.Fatal(err)
			}
			compressed := enc.EncodeAll(body, nil)
			size := float64(len(compressed)) / float64(len(body))
			for _, mode := range []string{"warm", "cold"} {
				b.Run(capture+"/"+v.name+"/"+mode, func(b *testing.B) {
					b.SetBytes(int64(len(body)))
					dst := make([]byte, 0, len(body))
					for b.Loop() {
						if mode == "warm" {
							dst = enc.EncodeAll(body, dst[:0])
							continue
						}
						cold, err := zstd.NewWriter(nil, opts...)
						if err != nil {
							b.Fatal(err)
						}
						dst = cold.EncodeAll(body, dst[:0])
						_ = cold.Close()
					}
					if v.name == "zstd-default" {
						base[mode] = perOp(b)
					}
					ratio(b, perOp(b), base[mode], "x-zstd")
					b.ReportMetric(size, "size/raw")
				})
			}
			_ = enc.Close()
		}
	}
}
