package envelope

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// TestRoundTripDictionary round-trips every capture with the dictionary, checks it is
// recorded and smaller than plain zstd, and that a Codec set to plain zstd (a drain's
// default) reads it too.
func TestRoundTripDictionary(t *testing.T) {
	dc, zc := newCodec(t, BodyCompression(CompressionZstdDict)), newCodec(t)
	for _, capture := range []string{fixture.NodeExporter, fixture.Prometheus, fixture.PushGateway} {
		t.Run(capture, func(t *testing.T) {
			e := scrape(t, capture)
			b, err := dc.Encode(e)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if got := compressionOf(t, b); got != CompressionZstdDict {
				t.Fatalf("body sent as %v, want %v", got, CompressionZstdDict)
			}
			plain, err := zc.Encode(e)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if len(b) >= len(plain) {
				t.Errorf("with the dictionary %d bytes, without %d", len(b), len(plain))
			}
			t.Logf("%d bytes raw: zstd %d, zstd-dict %d", len(e.Body), len(plain), len(b))
			for _, c := range []*Codec{dc, zc} {
				got, err := c.Decode(b)
				if err != nil {
					t.Fatalf("Decode (%v): %v", c.compression, err)
				}
				if d := diff(e, got); d != "" {
					t.Fatalf("round trip (%v) changed the envelope:\n%s", c.compression, d)
				}
			}
		})
	}
}

// TestDictionarySplit splits a scrape compressed with the dictionary and joins it back.
func TestDictionarySplit(t *testing.T) {
	c := newCodec(t, BodyCompression(CompressionZstdDict))
	e := &Envelope{Job: "node", Instance: "a:9100", Body: fixture.Replicate(t, fixture.NodeExporter, 50)}
	msgs, err := c.EncodeSplit(e, 4<<10)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) < 2 {
		t.Fatalf("%d messages, want a split", len(msgs))
	}
	parts := decodeAll(t, c, msgs)
	got, err := newCodec(t).Join(parts)
	if err != nil {
		t.Fatalf("Join: %v", err)
	}
	if d := diff(joined(e), got); d != "" {
		t.Fatalf("split round trip changed the envelope:\n%s", d)
	}
}

// TestDictionaryMismatch checks the frame's dictionary ID against the compression
// field: an unknown ID is unsupported and named, a known one under the wrong
// compression is corrupt.
func TestDictionaryMismatch(t *testing.T) {
	c := newCodec(t)
	body := []byte(strings.Repeat("node_load1 0.5\n", 100))
	ours := zstdFrame(t, body, zstd.WithEncoderDictRaw(DictionaryID, dictionary))
	for _, tt := range []struct {
		name  string
		comp  Compression
		frame []byte
		want  error
		text  string
	}{
		{"unknown dictionary", CompressionZstdDict, zstdDictFrame(t, body), ErrUnsupported, "zstd dictionary 1234 is unknown"},
		{"unknown dictionary as plain zstd", CompressionZstd, zstdDictFrame(t, body), ErrUnsupported, "zstd dictionary 1234 is unknown"},
		{"no dictionary as zstd-dict", CompressionZstdDict, zstdFrame(t, body), ErrCorrupt, "names dictionary 0"},
		{"dictionary as plain zstd", CompressionZstd, ours, ErrCorrupt, "compression says zstd"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := message(slices.Concat(
				varintField(fieldCompression, uint64(tt.comp)),
				varintField(fieldRawSize, uint64(len(body))),
				bytesField(fieldBody, tt.frame)))
			_, err := c.Decode(m)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("got %v, want %v saying %q", err, tt.want, tt.text)
			}
		})
	}
	m := message(slices.Concat(
		varintField(fieldCompression, uint64(CompressionZstdDict)),
		varintField(fieldRawSize, uint64(len(body))),
		bytesField(fieldBody, ours)))
	got, err := c.Decode(m)
	if err != nil || string(got.Body) != string(body) {
		t.Fatalf("hand-made zstd-dict message: %v", err)
	}
}

// TestUnknownCompression is what a drain built before a compression says of it: the
// drains before CompressionZstdDict said the same of it, through the same path.
func TestUnknownCompression(t *testing.T) {
	c := newCodec(t)
	body := []byte(strings.Repeat("up 1\n", 100))
	m := message(slices.Concat(
		varintField(fieldCompression, 3),
		varintField(fieldRawSize, uint64(len(body))),
		bytesField(fieldBody, zstdFrame(t, body))))
	_, err := c.Decode(m)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "body compression 3") ||
		!strings.Contains(err.Error(), "upgrade the drain") {
		t.Fatalf("got %v, want ErrUnsupported naming compression 3", err)
	}
	t.Log(err)
}

func TestDictionaryEmbedded(t *testing.T) {
	if len(dictionary) < 8 || len(dictionary) > 128<<10 {
		t.Fatalf("embedded dictionary is %d bytes", len(dictionary))
	}
	if s := CompressionZstdDict.String(); s != "zstd-dict" {
		t.Errorf("String: %q", s)
	}
}
