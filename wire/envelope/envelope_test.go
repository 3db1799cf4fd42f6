package envelope

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// sentinels are the errors every Decode failure must wrap one of.
var sentinels = []error{ErrNotEnvelope, ErrUnknownVersion, ErrTruncated, ErrCorrupt, ErrTooLarge, ErrUnsupported, ErrBadSignature}

func newCodec(tb testing.TB, opts ...Option) *Codec {
	tb.Helper()
	c, err := NewCodec(opts...)
	if err != nil {
		tb.Fatalf("NewCodec: %v", err)
	}
	tb.Cleanup(c.Close)
	return c
}

// diff describes how two envelopes differ, or returns "" when they are equal: Start
// by instant, Body and Labels with nil equal to empty.
func diff(want, got *Envelope) string {
	var d []string
	cmp := func(name string, w, g any) {
		if w != g {
			d = append(d, fmt.Sprintf("%s: want %#v, got %#v", name, w, g))
		}
	}
	cmp("Publisher", want.Publisher, got.Publisher)
	cmp("Site", want.Site, got.Site)
	cmp("Job", want.Job, got.Job)
	cmp("Instance", want.Instance, got.Instance)
	if !slices.Equal(want.Labels, got.Labels) {
		d = append(d, fmt.Sprintf("Labels: want %q, got %q", want.Labels, got.Labels))
	}
	cmp("HonorLabels", want.HonorLabels, got.HonorLabels)
	if !want.Start.Equal(got.Start) {
		d = append(d, fmt.Sprintf("Start: want %v, got %v", want.Start, got.Start))
	}
	cmp("Duration", want.Duration, got.Duration)
	cmp("Error", want.Error, got.Error)
	cmp("HTTPStatus", want.HTTPStatus, got.HTTPStatus)
	cmp("ContentType", want.ContentType, got.ContentType)
	if !bytes.Equal(want.Body, got.Body) {
		d = append(d, fmt.Sprintf("Body: want %d bytes, got %d bytes (different)", len(want.Body), len(got.Body)))
	}
	cmp("Series", want.Series, got.Series)
	cmp("PublisherVersion", want.PublisherVersion, got.PublisherVersion)
	cmp("Histograms", want.Histograms, got.Histograms)
	cmp("Part", want.Part, got.Part)
	cmp("Parts", want.Parts, got.Parts)
	if !bytes.Equal(want.Chunk, got.Chunk) {
		d = append(d, fmt.Sprintf("Chunk: want %d bytes, got %d bytes (different)", len(want.Chunk), len(got.Chunk)))
	}
	if (want.whole == nil) != (got.whole == nil) || want.whole != nil && *want.whole != *got.whole {
		d = append(d, fmt.Sprintf("whole body: want %+v, got %+v", want.whole, got.whole))
	}
	return strings.Join(d, "\n")
}

// countSeries counts the sample lines of a text exposition: non-empty, non-comment.
func countSeries(body []byte) int {
	n := 0
	for line := range bytes.Lines(body) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' {
			n++
		}
	}
	return n
}

// scrape is a successful scrape of a real capture, with every field set.
func scrape(tb testing.TB, capture string) *Envelope {
	tb.Helper()
	body := fixture.Read(tb, capture)
	return &Envelope{
		Publisher:   "edge-ams-01.example.net",
		Site:        "ams1",
		Job:         "node",
		Instance:    "localhost:9100",
		Labels:      []Label{{"env", "prod"}, {"rack", "r12"}, {"team", "infra"}},
		HonorLabels: true,
		Start:       time.Date(2024, 3, 5, 10, 15, 30, 123456789, time.UTC),
		Duration:    42*time.Millisecond + 17*time.Nanosecond,
		HTTPStatus:  200,
		ContentType: fixture.TextContentType,
		Body:        body,
		Series:      countSeries(body),
		Parts:       1,

		PublisherVersion: "1.4.0~git12.gabc1234",
		Histograms:       Histograms{Native: true},
	}
}

func TestRoundTrip(t *testing.T) {
	small := []byte("# TYPE up gauge\nup 1\n")
	tests := []struct {
		name string
		e    Envelope
	}{
		{"zero", Envelope{}},
		{"all fields", Envelope{
			Publisher:   "edge-01",
			Site:        "dc-west",
			Job:         "node",
			Instance:    "10.0.0.1:9100",
			Labels:      []Label{{"a", "1"}, {"b", ""}, {"c", "3"}},
			HonorLabels: true,
			Start:       time.Unix(1700000000, 1).UTC(),
			Duration:    1500 * time.Millisecond,
			HTTPStatus:  200,
			ContentType: fixture.TextContentType,
			Body:        bytes.Repeat([]byte("node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 123.45\n"), 100),
			Series:      100,
			Part:        0,
			Parts:       1,

			PublisherVersion: "0.0.0~git59.gdd802b3",
			Histograms:       Histograms{Native: true, AlwaysClassic: true, ConvertToNHCB: true},
		}},
		{"empty body", Envelope{
			Job: "node", Instance: "h:9100", Start: time.Unix(1700000000, 0),
			HTTPStatus: 200, ContentType: fixture.TextContentType, Body: []byte{},
		}},
		{"small body stored raw", Envelope{Job: "node", Body: small, Series: 1}},
		{"failed scrape, no response", Envelope{
			Publisher: "edge-01", Job: "node", Instance: "10.0.0.9:9100", Start: time.Unix(1700000000, 5),
			Duration: 10 * time.Second, Error: `Get "http://10.0.0.9:9100/metrics": dial tcp 10.0.0.9:9100: connect: connection refused`,
		}},
		{"failed scrape, HTTP 503", Envelope{
			Job: "node", Instance: "h:9100", Error: "server returned HTTP status 503 Service Unavailable",
			HTTPStatus: 503, ContentType: "text/html", Body: []byte("<html>down for maintenance</html>"),
		}},
		{"UTF-8 labels", Envelope{
			Job: "ノード", Instance: "Zürich:9100",
			Labels: []Label{{"city", "Zürich"}, {"emoji", "🔥📈"}, {"région", "Île-de-France"}, {"東京", "渋谷区"}},
		}},
		{"nanosecond start, non-UTC zone", Envelope{Start: time.Date(2024, 2, 29, 23, 59, 59, 999999999, time.FixedZone("CET", 3600))}},
		{"Unix epoch start", Envelope{Start: time.Unix(0, 0)}},
		{"pre-epoch start", Envelope{Start: time.Date(1901, 12, 13, 20, 45, 52, 7, time.UTC)}},
		{"first instant of year 1", Envelope{Start: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC)}},
		{"last instant of year 9999", Envelope{Start: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)}},
		{"extreme numbers", Envelope{Duration: math.MinInt64, HTTPStatus: 999, Series: math.MaxInt}},
		{"max duration", Envelope{Duration: math.MaxInt64}},
		{"binary body", Envelope{ContentType: "application/vnd.google.protobuf", Body: []byte{0, 1, 2, 0xff, 0xfe, 0, 0, 0}}},
	}
	for _, comp := range []Compression{CompressionZstd, CompressionNone} {
		c := newCodec(t, BodyCompression(comp))
		for _, tt := range tests {
			t.Run(comp.String()+"/"+tt.name, func(t *testing.T) {
				b, err := c.Encode(&tt.e)
				if err != nil {
					t.Fatalf("Encode: %v", err)
				}
				got, err := c.Decode(b)
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if d := diff(&tt.e, got); d != "" {
					t.Fatalf("round trip changed the envelope:\n%s", d)
				}
				if got.Start.Location() != time.UTC {
					t.Errorf("decoded Start is in %v, want UTC", got.Start.Location())
				}
				if tt.e.Start.IsZero() != got.Start.IsZero() {
					t.Errorf("Start.IsZero: want %t, got %t", tt.e.Start.IsZero(), got.Start.IsZero())
				}
				if len(tt.e.Body) == 0 && got.Body != nil {
					t.Errorf("empty body decoded as %#v, want nil", got.Body)
				}
			})
		}
	}
}

// TestRoundTripCaptures round-trips every real capture, and checks the zstd one is
// actually compressed (and uses the raw form when it is not asked to compress).
func TestRoundTripCaptures(t *testing.T) {
	zc, nc := newCodec(t), newCodec(t, BodyCompression(CompressionNone))
	for _, capture := range []string{fixture.NodeExporter, fixture.Prometheus, fixture.PushGateway} {
		t.Run(capture, func(t *testing.T) {
			e := scrape(t, capture)
			for _, c := range []*Codec{zc, nc} {
				b, err := c.Encode(e)
				if err != nil {
					t.Fatalf("Encode (%v): %v", c.compression, err)
				}
				got, err := c.Decode(b)
				if err != nil {
					t.Fatalf("Decode (%v): %v", c.compression, err)
				}
				if d := diff(e, got); d != "" {
					t.Fatalf("round trip (%v) changed the envelope:\n%s", c.compression, d)
				}
				t.Logf("%v: %d bytes raw, %d bytes on the wire (ratio %.2f), %d series",
					c.compression, len(e.Body), len(b), float64(len(e.Body))/float64(len(b)), got.Series)
				switch c.compression {
				case CompressionZstd:
					if len(b) > len(e.Body)/3 {
						t.Errorf("zstd message is %d bytes for a %d-byte body: not compressed?", len(b), len(e.Body))
					}
				case CompressionNone:
					if len(b) < len(e.Body) {
						t.Errorf("uncompressed message is %d bytes for a %d-byte body", len(b), len(e.Body))
					}
				}
			}
		})
	}
	if got := scrape(t, fixture.NodeExporter).Series; got != 507 {
		t.Errorf("node_exporter capture has %d series, tests/testdata/README.md says 507", got)
	}
}

// compressionOf returns the compression a message records for its body.
func compressionOf(tb testing.TB, b []byte) Compression {
	tb.Helper()
	for f := fields(b); len(f) > 0; {
		num, _, n := protowire.ConsumeField(f)
		if n < 0 {
			tb.Fatal(protowire.ParseError(n))
		}
		if num == fieldCompression {
			v, _ := protowire.ConsumeVarint(f[protowire.SizeTag(num):])
			return Compression(v)
		}
		f = f[n:]
	}
	return CompressionNone
}

func TestCompressionRecorded(t *testing.T) {
	c := newCodec(t)
	for _, tt := range []struct {
		name string
		body []byte
		want Compression
	}{
		{"capture", fixture.Read(t, fixture.NodeExporter), CompressionZstd},
		{"tiny body", []byte("up 1\n"), CompressionNone},
		{"incompressible body", incompressible(4096), CompressionNone},
		{"empty body", nil, CompressionNone},
	} {
		b, err := c.Encode(&Envelope{Body: tt.body})
		if err != nil {
			t.Fatal(err)
		}
		if got := compressionOf(t, b); got != tt.want {
			t.Errorf("%s: body sent as %v, want %v", tt.name, got, tt.want)
		}
	}
}

// incompressible returns n bytes that no compressor shrinks.
func incompressible(n int) []byte {
	b := make([]byte, n)
	x := uint64(0x9e3779b97f4a7c15)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// TestDecodeAcrossSettings checks a drain reads whatever compression the edge chose.
func TestDecodeAcrossSettings(t *testing.T) {
	e := scrape(t, fixture.NodeExporter)
	zc, nc := newCodec(t), newCodec(t, BodyCompression(CompressionNone))
	for _, pair := range [][2]*Codec{{zc, nc}, {nc, zc}} {
		b, err := pair[0].Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pair[1].Decode(b)
		if err != nil {
			t.Fatalf("%v-encoded, decoded by a %v codec: %v", pair[0].compression, pair[1].compression, err)
		}
		if d := diff(e, got); d != "" {
			t.Fatal(d)
		}
	}
}

func TestEncodeDeterministic(t *testing.T) {
	c := newCodec(t)
	e := scrape(t, fixture.NodeExporter)
	a, err := c.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("two encodings of the same envelope differ")
	}
}

// TestEncodeExactSize checks sizeFields agrees with appendFields: Encode allocates the
// message once, at its exact size, and Append keeps what dst held.
func TestEncodeExactSize(t *testing.T) {
	c := newCodec(t)
	for _, e := range []*Envelope{
		{},
		scrape(t, fixture.NodeExporter),
		{Start: time.Unix(0, 0), Labels: []Label{{"x", strings.Repeat("v", 300)}}, Duration: -1, Series: 1 << 40},
	} {
		b, err := c.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != cap(b) {
			t.Errorf("Encode returned len %d, cap %d: size computation is off", len(b), cap(b))
		}
		if got := binary.LittleEndian.Uint32(b[4:]); int(got) != len(b) {
			t.Errorf("header declares %d bytes, message is %d", got, len(b))
		}
		prefix := []byte("prefix")
		a, err := c.Append(slices.Clone(prefix), e)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a[:len(prefix)], prefix) || !bytes.Equal(a[len(prefix):], b) {
			t.Error("Append did not append the same message after dst")
		}
	}
}

func TestEncodeInvalid(t *testing.T) {
	c := newCodec(t, MaxBodySize(1024))
	tests := []struct {
		name string
		e    Envelope
		want error
	}{
		{"unsorted labels", Envelope{Labels: []Label{{"b", "1"}, {"a", "2"}}}, ErrInvalid},
		{"duplicate label", Envelope{Labels: []Label{{"a", "1"}, {"a", "2"}}}, ErrInvalid},
		{"empty label name", Envelope{Labels: []Label{{"", "1"}}}, ErrInvalid},
		{"negative HTTP status", Envelope{HTTPStatus: -1}, ErrInvalid},
		{"HTTP status 1000", Envelope{HTTPStatus: 1000}, ErrInvalid},
		{"HTTP status 99", Envelope{HTTPStatus: 99}, ErrInvalid},
		{"negative series", Envelope{Series: -1}, ErrInvalid},
		{"start in year 10000", Envelope{Start: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, ErrInvalid},
		{"start in year 0", Envelope{Start: time.Date(0, 12, 31, 23, 59, 59, 0, time.UTC)}, ErrInvalid},
		{"split scrape part", Envelope{Part: 1, Parts: 2}, ErrInvalid},
		{"split scrape parts", Envelope{Parts: 2}, ErrInvalid},
		{"negative parts", Envelope{Parts: -1}, ErrInvalid},
		{"body over MaxBodySize", Envelope{Body: make([]byte, 1025)}, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte("keep")
			b, err := c.Append(dst, &tt.e)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Append: got error %v, want %v", err, tt.want)
			}
			if string(b) != "keep" {
				t.Errorf("Append changed dst on error: %q", b)
			}
			t.Log(err)
		})
	}
}

// valid returns a real encoded envelope: the node_exporter scrape, zstd-compressed.
func valid(tb testing.TB, c *Codec) []byte {
	tb.Helper()
	b, err := c.Encode(scrape(tb, fixture.NodeExporter))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestDecodeNotEnvelope(t *testing.T) {
	c := newCodec(t)
	gz := []byte{0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff}
	tests := []struct {
		name, in, mention string
	}{
		{"empty", "", "empty"},
		{"garbage", "\x00\x01\x02garbage bytes that are long enough", "magic"},
		{"gzip", string(gz), "magic"},
		{"text exposition", "# HELP up whether the target is up\n", "magic"},
		{"JSON", `{"job":"node","instance":"localhost:9100","body":"..."}`, "JSON"},
		{"JSON after whitespace", " \n\t{\"job\":\"node\"}", "JSON"},
		{"magic prefix only", "PS", ""}, // a prefix of the magic is a truncated envelope
		{"magic lookalike", "PSX\x01\x00\x00\x00\x00", "magic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Decode([]byte(tt.in))
			if tt.mention == "" {
				if !errors.Is(err, ErrTruncated) {
					t.Fatalf("got %v, want ErrTruncated", err)
				}
				return
			}
			if !errors.Is(err, ErrNotEnvelope) {
				t.Fatalf("got %v, want ErrNotEnvelope", err)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("error %q does not mention %q", err, tt.mention)
			}
			t.Log(err)
		})
	}
}

func TestDecodeUnknownVersion(t *testing.T) {
	c := newCodec(t)
	for _, v := range []byte{0, 2, 255} {
		b := valid(t, c)
		b[3] = v
		_, err := c.Decode(b)
		if !errors.Is(err, ErrUnknownVersion) {
			t.Fatalf("version %d: got %v, want ErrUnknownVersion", v, err)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("version %d", v)) {
			t.Errorf("version %d: error %q does not name the version", v, err)
		}
		// Even a bare header is enough to tell the version.
		if _, err := c.Decode(b[:4]); !errors.Is(err, ErrUnknownVersion) {
			t.Errorf("version %d, 4 bytes: got %v, want ErrUnknownVersion", v, err)
		}
	}
}

// TestDecodeTruncated cuts a real message at every length short of its own.
func TestDecodeTruncated(t *testing.T) {
	c := newCodec(t)
	b := valid(t, c)
	for n := range len(b) {
		_, err := c.Decode(b[:n])
		want := ErrTruncated
		if n == 0 {
			want = ErrNotEnvelope
		}
		if !errors.Is(err, want) {
			t.Fatalf("truncated to %d of %d bytes: got %v, want %v", n, len(b), err, want)
		}
	}
}

func TestDecodeTrailingBytes(t *testing.T) {
	c := newCodec(t)
	b := append(valid(t, c), 0)
	if _, err := c.Decode(b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt", err)
	}
}

// TestDecodeBitFlips flips every bit of a real message, one at a time.
func TestDecodeBitFlips(t *testing.T) {
	c := newCodec(t)
	b := valid(t, c)
	for i := range len(b) {
		for bit := range 8 {
			b[i] ^= 1 << bit
			_, err := c.Decode(b)
			b[i] ^= 1 << bit
			var want []error
			switch {
			case i < 3:
				want = []error{ErrNotEnvelope}
			case i == 3:
				want = []error{ErrUnknownVersion}
			case i < headerLen: // the length: the message looks too short or too long
				want = []error{ErrTruncated, ErrCorrupt}
			default:
				want = []error{ErrCorrupt}
			}
			if !slices.ContainsFunc(want, func(w error) bool { return errors.Is(err, w) }) {
				t.Fatalf("bit %d of byte %d of %d flipped: got %v, want one of %v", bit, i, len(b), err, want)
			}
		}
	}
}

// message builds a message around raw fields, with a correct header and checksum, so
// tests can reach the field parser with content no Codec writes.
func message(fields []byte) []byte {
	b := append([]byte(magic), Version, 0, 0, 0, 0)
	b = append(b, fields...)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)+trailerLen))
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
}

// fields returns the fields of an encoded message.
func fields(b []byte) []byte { return b[headerLen : len(b)-trailerLen] }

func tag(b []byte, num protowire.Number, typ protowire.Type) []byte {
	return protowire.AppendTag(b, num, typ)
}

func varintField(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(tag(nil, num, protowire.VarintType), v)
}

func bytesField(num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(tag(nil, num, protowire.BytesType), v)
}

func zstdFrame(tb testing.TB, raw []byte, opts ...zstd.EOption) []byte {
	tb.Helper()
	enc, err := zstd.NewWriter(nil, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(raw, nil)
}

func zstdStream(tb testing.TB, raw []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := enc.Write(raw); err != nil {
		tb.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func TestDecodeTooLarge(t *testing.T) {
	e := scrape(t, fixture.NodeExporter)
	b, err := newCodec(t).Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	// A drain with a smaller limit than the edge: the declared size is enough.
	c := newCodec(t, MaxBodySize(len(e.Body)-1))
	if _, err := c.Decode(b); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("body of %d bytes, limit %d: got %v, want ErrTooLarge", len(e.Body), len(e.Body)-1, err)
	}
	if _, err := newCodec(t, MaxBodySize(len(e.Body))).Decode(b); err != nil {
		t.Fatalf("body exactly at the limit: %v", err)
	}

	// A decompression bomb: 64 MiB of zeros in a few KB, honestly declared.
	const bomb = 64 << 20
	z := zstdFrame(t, make([]byte, bomb))
	t.Logf("bomb: %d bytes of zstd decompress to %d", len(z), bomb)
	for _, comp := range []uint64{uint64(CompressionZstd), uint64(CompressionNone), 99} {
		m := message(slices.Concat(varintField(fieldCompression, comp), varintField(fieldRawSize, bomb), bytesField(fieldBody, z)))
		allocated := allocatedBy(func() {
			if _, err := newCodec(t, MaxBodySize(1<<20)).Decode(m); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("compression %d, declared %d bytes, limit 1 MiB: got %v, want ErrTooLarge", comp, bomb, err)
			}
		})
		if allocated > bomb/4 {
			t.Errorf("rejecting the bomb allocated %d bytes", allocated)
		}
	}
}

// allocatedBy returns roughly how many bytes f allocated.
func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestDecodeLyingSizes checks the decompressor is bounded by the declared raw size
// even when the compressed body says otherwise, and that a declared size the body does
// not back is refused before it is allocated.
func TestDecodeLyingSizes(t *testing.T) {
	c := newCodec(t)
	small := []byte(strings.Repeat("up 1\n", 300))
	big := make([]byte, 32<<20)
	tests := []struct {
		name string
		raw  uint64
		body []byte
	}{
		{"frame larger than declared", uint64(len(small)), zstdFrame(t, big)},
		{"frame smaller than declared", 200 << 20, zstdFrame(t, small)},
		{"frame without content size", uint64(len(small)), zstdStream(t, big)},
		{"second frame after the declared size", uint64(len(small)), slices.Concat(zstdFrame(t, small), zstdFrame(t, big))},
		{"skippable frame", 100, []byte{0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4}},
		{"not zstd at all", 100, []byte("this is not a zstd frame, honest")},
		{"zstd with a dictionary", uint64(len(small)), zstdDictFrame(t, small)},
		{"compressed body declared empty", 0, zstdFrame(t, small)},
		{"empty body declared non-empty", 10, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := message(slices.Concat(
				varintField(fieldCompression, uint64(CompressionZstd)),
				varintField(fieldRawSize, tt.raw),
				bytesField(fieldBody, tt.body)))
			var err error
			allocated := allocatedBy(func() { _, err = c.Decode(m) })
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("got %v, want ErrCorrupt or ErrUnsupported", err)
			}
			if allocated > 4<<20 {
				t.Errorf("rejecting it allocated %d bytes", allocated)
			}
			t.Log(err)
		})
	}
	// Uncompressed bodies must match their declared size too.
	m := message(slices.Concat(varintField(fieldRawSize, 5), bytesField(fieldBody, []byte("1234"))))
	if _, err := c.Decode(m); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("4-byte raw body declared as 5: got %v, want ErrCorrupt", err)
	}
}

func zstdDictFrame(tb testing.TB, raw []byte) []byte {
	tb.Helper()
	return zstdFrame(tb, raw, zstd.WithEncoderDictRaw(1234, bytes.Repeat([]byte("up 1\n"), 20)))
}

// TestDecodeFields feeds the field parser content with a valid frame around it.
func TestDecodeFields(t *testing.T) {
	c := newCodec(t)
	base := fields(valid(t, c))
	want := scrape(t, fixture.NodeExporter)
	ok := func(t *testing.T, f []byte) {
		t.Helper()
		got, err := c.Decode(message(f))
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if d := diff(want, got); d != "" {
			t.Fatal(d)
		}
	}
	// replace returns base with field num replaced by field.
	replace := func(num protowire.Number, field []byte) []byte {
		return slices.Concat(field, withoutField(t, base, num))
	}
	fail := func(t *testing.T, f []byte, sentinel error) {
		t.Helper()
		_, err := c.Decode(message(f))
		if !errors.Is(err, sentinel) {
			t.Fatalf("got %v, want %v", err, sentinel)
		}
		t.Log(err)
	}
	t.Run("unknown fields are skipped", func(t *testing.T) {
		ok(t, slices.Concat(
			varintField(40, 7),
			base,
			bytesField(fieldScrapeKey, []byte("scrape-123")),
			protowire.AppendFixed32(tag(nil, 41, protowire.Fixed32Type), 1),
			protowire.AppendFixed64(tag(nil, 42, protowire.Fixed64Type), 2),
			varintField(40, 8), // unknown fields may repeat
		))
	})
	t.Run("unknown fields inside a label are skipped", func(t *testing.T) {
		w := *want
		w.Labels = []Label{{"a", "b"}}
		label := slices.Concat(bytesField(labelName, []byte("a")), varintField(9, 1), bytesField(labelValue, []byte("b")))
		got, err := c.Decode(message(replace(fieldLabel, bytesField(fieldLabel, label))))
		if err != nil {
			t.Fatal(err)
		}
		if d := diff(&w, got); d != "" {
			t.Fatal(d)
		}
	})
	t.Run("any field order", func(t *testing.T) {
		var parts [][]byte
		for f := base; len(f) > 0; {
			_, _, n := protowire.ConsumeField(f)
			parts = append(parts, f[:n])
			f = f[n:]
		}
		// Reversed, except the labels, which must stay sorted.
		slices.Reverse(parts)
		var labels [][]byte
		var rest [][]byte
		for _, p := range parts {
			if num, _, _ := protowire.ConsumeTag(p); num == fieldLabel {
				labels = append(labels, p)
			} else {
				rest = append(rest, p)
			}
		}
		slices.Reverse(labels)
		ok(t, slices.Concat(append(rest, labels...)...))
	})
	t.Run("duplicate field", func(t *testing.T) {
		fail(t, slices.Concat(base, bytesField(fieldJob, []byte("other"))), ErrCorrupt)
	})
	t.Run("duplicate label field", func(t *testing.T) {
		label := slices.Concat(bytesField(labelName, []byte("a")), bytesField(labelName, []byte("b")))
		fail(t, slices.Concat(base, bytesField(fieldLabel, label)), ErrCorrupt)
	})
	t.Run("labels out of order", func(t *testing.T) {
		label := bytesField(labelName, []byte("aaa"))
		fail(t, slices.Concat(base, bytesField(fieldLabel, label)), ErrCorrupt)
	})
	t.Run("label without name", func(t *testing.T) {
		fail(t, replace(fieldLabel, bytesField(fieldLabel, bytesField(labelValue, []byte("v")))), ErrCorrupt)
	})
	t.Run("wrong wire type", func(t *testing.T) {
		fail(t, replace(fieldJob, varintField(fieldJob, 1)), ErrCorrupt)
		fail(t, replace(fieldSeries, bytesField(fieldSeries, []byte("1"))), ErrCorrupt)
	})
	t.Run("group", func(t *testing.T) {
		fail(t, slices.Concat(base, tag(nil, 50, protowire.StartGroupType), tag(nil, 50, protowire.EndGroupType)), ErrCorrupt)
	})
	t.Run("reserved wire type", func(t *testing.T) {
		fail(t, slices.Concat(base, protowire.AppendVarint(nil, 50<<3|6)), ErrCorrupt)
	})
	t.Run("field number 0", func(t *testing.T) {
		fail(t, slices.Concat(base, []byte{0x00, 0x01}), ErrCorrupt)
	})
	t.Run("truncated field", func(t *testing.T) {
		fail(t, base[:len(base)-1], ErrCorrupt)
	})
	t.Run("varint overflow", func(t *testing.T) {
		fail(t, slices.Concat(base, tag(nil, 50, protowire.VarintType), bytes.Repeat([]byte{0xff}, 11)), ErrCorrupt)
	})
	t.Run("HTTP status out of range", func(t *testing.T) {
		fail(t, replace(fieldHTTPStatus, varintField(fieldHTTPStatus, 1000)), ErrCorrupt)
		fail(t, replace(fieldHTTPStatus, varintField(fieldHTTPStatus, 99)), ErrCorrupt)
	})
	t.Run("series out of range", func(t *testing.T) {
		fail(t, replace(fieldSeries, varintField(fieldSeries, math.MaxUint64)), ErrCorrupt)
	})
	t.Run("start nanoseconds out of range", func(t *testing.T) {
		fail(t, replace(fieldStartNanos, varintField(fieldStartNanos, 1e9)), ErrCorrupt)
	})
	t.Run("start seconds out of range", func(t *testing.T) {
		fail(t, replace(fieldStartSec, varintField(fieldStartSec, protowire.EncodeZigZag(maxStartUnix+1))), ErrCorrupt)
	})
	t.Run("unknown compression", func(t *testing.T) {
		fail(t, replace(fieldCompression, varintField(fieldCompression, 7)), ErrUnsupported)
		// Values that truncate to a known one must not pass for it.
		fail(t, replace(fieldCompression, varintField(fieldCompression, 256+uint64(CompressionZstd))), ErrUnsupported)
	})
	t.Run("split scrape", func(t *testing.T) {
		// A whole body with part fields: no scrape key, and more body than a chunk may be.
		fail(t, replace(fieldParts, slices.Concat(varintField(fieldParts, 3), varintField(fieldPart, 1))), ErrCorrupt)
		fail(t, replace(fieldParts, slices.Concat(varintField(fieldParts, MaxParts+1), varintField(fieldPart, 1))), ErrUnsupported)
		fail(t, replace(fieldParts, slices.Concat(varintField(fieldParts, 3), varintField(fieldPart, 3))), ErrCorrupt)
		fail(t, replace(fieldParts, varintField(fieldPart, 1)), ErrCorrupt)
	})
}

// withoutField returns f without any occurrence of field num.
func withoutField(tb testing.TB, f []byte, num protowire.Number) []byte {
	tb.Helper()
	var out []byte
	for len(f) > 0 {
		n2, _, n := protowire.ConsumeField(f)
		if n < 0 {
			tb.Fatal(protowire.ParseError(n))
		}
		if n2 != num {
			out = append(out, f[:n]...)
		}
		f = f[n:]
	}
	return out
}

func TestDecodeDoesNotRetainInput(t *testing.T) {
	c := newCodec(t, BodyCompression(CompressionNone))
	b := valid(t, c)
	e, err := c.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(e.Body)
	clear(b)
	if !bytes.Equal(e.Body, want) {
		t.Fatal("decoded body changed when the message buffer was reused")
	}
}

func TestEncodeNil(t *testing.T) {
	if _, err := newCodec(t).Encode(nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Encode(nil): got %v, want ErrInvalid", err)
	}
}

func TestClose(t *testing.T) {
	c, err := NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	b := valid(t, c)
	c.Close()
	c.Close()
	if _, err := c.Encode(&Envelope{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Encode after Close: got %v, want ErrClosed", err)
	}
	if _, err := c.Decode(b); !errors.Is(err, ErrClosed) {
		t.Errorf("Decode after Close: got %v, want ErrClosed", err)
	}
}

func TestOptions(t *testing.T) {
	for _, opt := range []Option{MaxBodySize(0), MaxBodySize(-1), MaxBodySize(maxMaxBodySize + 1), BodyCompression(9)} {
		if _, err := NewCodec(opt); err == nil {
			t.Error("NewCodec accepted an invalid option")
		}
	}
}

// TestConcurrent runs Encode and Decode from many goroutines (meaningful under -race).
func TestConcurrent(t *testing.T) {
	c := newCodec(t)
	envs := []*Envelope{scrape(t, fixture.NodeExporter), scrape(t, fixture.Prometheus), scrape(t, fixture.PushGateway)}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				e := envs[(g+i)%len(envs)]
				b, err := c.Encode(e)
				if err != nil {
					t.Error(err)
					return
				}
				got, err := c.Decode(b)
				if err != nil {
					t.Error(err)
					return
				}
				if d := diff(e, got); d != "" {
					t.Error(d)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestStartRange(t *testing.T) {
	if got := time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).Unix(); got != minStartUnix {
		t.Errorf("minStartUnix is %d, want %d", minStartUnix, got)
	}
	if got := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC).Unix(); got != maxStartUnix {
		t.Errorf("maxStartUnix is %d, want %d", maxStartUnix, got)
	}
}

func TestCompressionString(t *testing.T) {
	for c, want := range map[Compression]string{CompressionNone: "none", CompressionZstd: "zstd", 7: "compression(7)"} {
		if got := c.String(); got != want {
			t.Errorf("Compression(%d).String() = %q, want %q", c, got, want)
		}
	}
}

// FuzzDecode checks Decode never panics, that every error wraps a sentinel, and that
// whatever decodes re-encodes (a part as a part) to an envelope that decodes the same.
// The seeds include the parts of split scrapes. Each input is
// tried twice: as a whole message, and as the fields of a message with a correct
// header and checksum, since random bytes almost never pass the checksum and the
// field parser is where the fuzzer should spend its time.
func FuzzDecode(f *testing.F) {
	c := newCodec(f, MaxBodySize(1<<20))
	nc := newCodec(f, BodyCompression(CompressionNone))
	dc := newCodec(f, BodyCompression(CompressionZstdDict))
	for _, e := range []*Envelope{
		{},
		{Job: "node", Labels: []Label{{"a", "b"}}, Start: time.Unix(1, 2), Error: "boom", HTTPStatus: 500},
		{Job: "j", Body: []byte(strings.Repeat("up 1\n", 100)), Series: 100},
		scrape(f, fixture.PushGateway),
	} {
		for _, cc := range []*Codec{c, nc, dc} {
			b, err := cc.Encode(e)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
			f.Add(fields(b))
			if msgs, err := cc.EncodeSplit(e, len(b)/2); err == nil && len(msgs) > 1 {
				f.Add(msgs[0])
				f.Add(fields(msgs[len(msgs)-1]))
			}
		}
	}
	f.Add([]byte{})
	f.Add([]byte("PSE"))
	f.Add([]byte("PSE\x02"))
	f.Add([]byte(`{"job":"node"}`))
	f.Add([]byte("\x00\xff garbage \x7f"))
	f.Add(slices.Concat(
		varintField(fieldCompression, 1),
		varintField(fieldRawSize, 5),
		bytesField(fieldBody, []byte{0x28, 0xb5, 0x2f, 0xfd, 0x20, 5, 0x29, 0, 0})))

	f.Fuzz(func(t *testing.T, in []byte) {
		check := func(m []byte) {
			e, err := c.Decode(m)
			if err != nil {
				if !slices.ContainsFunc(sentinels, func(s error) bool { return errors.Is(err, s) }) {
					t.Fatalf("error wraps no sentinel: %v", err)
				}
				return
			}
			var b []byte
			if e.Parts > 1 {
				if e.Body != nil || len(e.Chunk) == 0 || e.Part >= e.Parts || e.Parts > MaxParts {
					t.Fatalf("part %d of %d with Body %d bytes, Chunk %d bytes", e.Part, e.Parts, len(e.Body), len(e.Chunk))
				}
				b = encodePart(t, c, e)
			} else if b, err = c.Encode(e); err != nil {
				t.Fatalf("decoded envelope does not re-encode: %v", err)
			}
			e2, err := c.Decode(b)
			if err != nil {
				t.Fatalf("re-encoded envelope does not decode: %v", err)
			}
			if d := diff(e, e2); d != "" {
				t.Fatalf("re-encoding changed the envelope:\n%s", d)
			}
		}
		check(in)
		check(message(in))
	})
}

func TestTarget(t *testing.T) {
	c, err := NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := c.Encode(&Envelope{Job: "node", Instance: "host:9100", Start: time.Unix(1700000000, 0), Body: []byte("up 1\n"), ContentType: "text/plain; version=0.0.4"})
	if err != nil {
		t.Fatal(err)
	}
	job, instance, err := c.Target(b)
	if err != nil || job != "node" || instance != "host:9100" {
		t.Errorf("Target = %q %q %v", job, instance, err)
	}
	b[len(b)/2] ^= 0xff
	if _, _, err := c.Target(b); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Target of a corrupt message = %v, want ErrCorrupt", err)
	}
	if _, _, err := c.Target([]byte(`{"job":"x"}`)); !errors.Is(err, ErrNotEnvelope) {
		t.Errorf("Target of JSON = %v, want ErrNotEnvelope", err)
	}
}
