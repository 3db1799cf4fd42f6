package envelope

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// framesFor cuts e into k parts as EncodeSplit does, whatever their size: the reference
// EncodeSplit's plan is checked against.
func framesFor(tb testing.TB, c *Codec, e *Envelope, k int) [][]byte {
	tb.Helper()
	return cutter(tb, c, e)(k)
}

// cutter compresses e's body once and returns framesFor for it.
func cutter(tb testing.TB, c *Codec, e *Envelope) func(k int) [][]byte {
	tb.Helper()
	comp, payload, buf := c.compress(e.Body)
	payload = slices.Clone(payload)
	c.release(buf)
	digest := sha256.Sum256(payload)
	return func(k int) [][]byte {
		var msgs [][]byte
		for i, off := 0, 0; i < k; i++ {
			n := len(payload) / k
			if i < len(payload)%k {
				n++
			}
			m, err := c.frame(nil, e, bodyFields{comp: comp, rawSize: len(e.Body), payload: payload[off : off+n], key: digest[:], part: i, parts: k})
			if err != nil {
				tb.Fatal(err)
			}
			msgs = append(msgs, m)
			off += n
		}
		return msgs
	}
}

// encodePart re-encodes a part as Decode returned it.
func encodePart(tb testing.TB, c *Codec, e *Envelope) []byte {
	tb.Helper()
	if err := c.check(&Envelope{Labels: e.Labels, Start: e.Start, HTTPStatus: e.HTTPStatus, Series: e.Series}); err != nil {
		tb.Fatalf("decoded part does not pass Encode's checks: %v", err)
	}
	b, err := c.frame(nil, e, bodyFields{comp: e.whole.comp, rawSize: e.whole.rawSize, payload: e.Chunk,
		key: e.whole.digest[:], part: e.Part, parts: e.Parts})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func decodeAll(tb testing.TB, c *Codec, msgs [][]byte) []*Envelope {
	tb.Helper()
	parts := make([]*Envelope, len(msgs))
	for i, m := range msgs {
		p, err := c.Decode(m)
		if err != nil {
			tb.Fatalf("Decode part %d: %v", i, err)
		}
		parts[i] = p
	}
	return parts
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

// joined is e as Join returns it.
func joined(e *Envelope) *Envelope {
	w := *e
	w.Part, w.Parts = 0, 1
	return &w
}

func maxLen(msgs [][]byte) int {
	n := 0
	for _, m := range msgs {
		n = max(n, len(m))
	}
	return n
}

func TestEncodeSplitWhole(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    *Codec
	}{
		{"zstd", newCodec(t)},
		{"none", newCodec(t, BodyCompression(CompressionNone))},
		{"signed", newCodec(t, WithSigner(testKey(t, 1)))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, e := range []*Envelope{{}, small(), scrape(t, fixture.NodeExporter)} {
				want, err := tc.c.Encode(e)
				if err != nil {
					t.Fatal(err)
				}
				for _, maxSize := range []int{len(want), len(want) + 1, 1 << 20} {
					msgs, err := tc.c.EncodeSplit(e, maxSize)
					if err != nil {
						t.Fatalf("EncodeSplit at %d: %v", maxSize, err)
					}
					if len(msgs) != 1 || !bytes.Equal(msgs[0], want) {
						t.Fatalf("EncodeSplit at %d: %d messages, want the one Encode writes", maxSize, len(msgs))
					}
				}
			}
		})
	}
}

func TestEncodeSplitRoundTrip(t *testing.T) {
	signer := testKey(t, 1)
	e := scrape(t, fixture.NodeExporter)
	for _, tc := range []struct {
		name string
		c    *Codec
	}{
		{"zstd", newCodec(t)},
		{"none", newCodec(t, BodyCompression(CompressionNone))},
		{"signed", newCodec(t, WithSigner(signer))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			whole, err := tc.c.Encode(e)
			if err != nil {
				t.Fatal(err)
			}
			for _, maxSize := range []int{len(whole) - 1, len(whole) / 2, 4096, 1500, 700} {
				msgs, err := tc.c.EncodeSplit(e, maxSize)
				if err != nil {
					t.Fatalf("EncodeSplit at %d: %v", maxSize, err)
				}
				k := len(msgs)
				if k < 2 || maxLen(msgs) > maxSize {
					t.Fatalf("EncodeSplit at %d: %d parts, largest %d bytes", maxSize, k, maxLen(msgs))
				}
				parts := decodeAll(t, tc.c, msgs)
				for i, p := range parts {
					if p.Part != i || p.Parts != k || p.Body != nil || len(p.Chunk) == 0 || p.Signer != tc.c.Signer() {
						t.Fatalf("part %d: Part %d Parts %d, Body %d bytes, Chunk %d bytes, Signer %q",
							i, p.Part, p.Parts, len(p.Body), len(p.Chunk), p.Signer)
					}
					h := *p
					h.Body, h.Part, h.Parts, h.Chunk, h.whole = e.Body, e.Part, e.Parts, nil, nil
					if d := diff(e, &h); d != "" {
						t.Fatalf("part %d header:\n%s", i, d)
					}
				}
				rand.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
				order := slices.Clone(parts)
				got, err := tc.c.Join(parts)
				if err != nil {
					t.Fatalf("Join: %v", err)
				}
				if !slices.Equal(order, parts) {
					t.Fatal("Join reordered its argument")
				}
				if d := diff(joined(e), got); d != "" {
					t.Fatalf("joined scrape:\n%s", d)
				}
				if got.Chunk != nil || got.Signer != tc.c.Signer() {
					t.Fatalf("joined scrape: Chunk %d bytes, Signer %q", len(got.Chunk), got.Signer)
				}
				// The joined scrape is whole: Encode takes it again.
				if _, err := tc.c.Encode(got); err != nil {
					t.Fatalf("Encode of the joined scrape: %v", err)
				}
			}
		})
	}
}

// TestEncodeSplitPlan checks, size by size, that every part fits and that one part
// fewer would not: the header is accounted for to the byte.
func TestEncodeSplitPlan(t *testing.T) {
	e := scrape(t, fixture.NodeExporter)
	for _, c := range []*Codec{newCodec(t), newCodec(t, WithSigner(testKey(t, 1))), newCodec(t, BodyCompression(CompressionNone))} {
		whole, err := c.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		cut := cutter(t, c, e)
		most := maxLen(cut(MaxParts))  // the least maxSize that takes MaxParts parts
		step := max(1, len(whole)/101) // a prime stride: many residues of the cut
		tight := 0
		for maxSize := len(whole) + 1; maxSize > 0; maxSize -= step {
			msgs, err := c.EncodeSplit(e, maxSize)
			if errors.Is(err, ErrTooLarge) {
				// Only where a part's header leaves no room or parts exceed MaxParts.
				if most <= maxSize {
					t.Fatalf("at %d: %v, but %d parts of at most %d bytes fit", maxSize, err, MaxParts, most)
				}
				continue
			}
			if err != nil {
				t.Fatalf("at %d: %v", maxSize, err)
			}
			k := len(msgs)
			if maxLen(msgs) > maxSize {
				t.Fatalf("at %d: a part of %d bytes", maxSize, maxLen(msgs))
			}
			if maxLen(msgs) == maxSize {
				tight++
			}
			if k == 1 {
				continue
			}
			if ref := cut(k); !slices.EqualFunc(ref, msgs, bytes.Equal) {
				t.Fatalf("at %d: EncodeSplit's %d parts are not the reference cut", maxSize, k)
			}
			if k > 2 {
				if fewer := cut(k - 1); maxLen(fewer) <= maxSize {
					t.Fatalf("at %d: %d parts, but %d of at most %d bytes fit", maxSize, k, k-1, maxLen(fewer))
				}
			}
		}
		if tight == 0 {
			t.Error("no split filled maxSize exactly: the plan leaves bytes unused")
		}
	}
}

func TestEncodeSplitErrors(t *testing.T) {
	c := newCodec(t)
	e := scrape(t, fixture.NodeExporter)
	tests := []struct {
		name    string
		e       *Envelope
		maxSize int
		want    error
	}{
		{"header does not fit", e, 200, ErrTooLarge},
		// The header of part 1 of 2, the chunk's tag, and one byte: no room for the
		// chunk's length and a byte of it.
		{"no room for a chunk", e, c.size(e, bodyFields{comp: CompressionZstd, rawSize: len(e.Body), key: make([]byte, 32), part: 1, parts: 2}) + 3, ErrTooLarge},
		{"zero", e, 0, ErrTooLarge},
		{"negative", e, -1, ErrTooLarge},
		{"no body to split", &Envelope{Job: strings.Repeat("j", 300)}, 100, ErrTooLarge},
		{"over MaxParts", &Envelope{Job: "j", Body: incompressible(1 << 20)}, 1000, ErrTooLarge},
		{"a part given", &Envelope{Part: 1, Parts: 2}, 1 << 20, ErrInvalid},
		{"invalid labels", &Envelope{Labels: []Label{{"b", ""}, {"a", ""}}}, 1 << 20, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, err := c.EncodeSplit(tt.e, tt.maxSize)
			if !errors.Is(err, tt.want) || msgs != nil {
				t.Fatalf("got %d messages, %v; want %v", len(msgs), err, tt.want)
			}
			t.Log(err)
		})
	}
	closed := newCodec(t)
	closed.Close()
	if _, err := closed.EncodeSplit(e, 1000); !errors.Is(err, ErrClosed) {
		t.Errorf("closed: %v", err)
	}
	if _, err := closed.Join(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("closed Join: %v", err)
	}
}

// TestPartsRefusedByWholeOnlyDecoders pins what keeps a part from passing for a whole
// scrape on a drain built before split scrapes: such a decoder (format version 1 up to
// commit 5d872d7) refuses any message whose part field is not 0 or whose parts field
// is above 1 with ErrUnsupported ("this build reads whole scrapes only, upgrade the
// drain"), after its signature and header checks and before touching the body. Every
// part carries parts = K >= 2, and the scrape key in field 17, which those decoders
// skip as an unknown field. (Checked by running that commit's Decode on these parts.)
func TestPartsRefusedByWholeOnlyDecoders(t *testing.T) {
	c := newCodec(t, WithSigner(testKey(t, 1)))
	msgs, err := c.EncodeSplit(scrape(t, fixture.NodeExporter), 3000)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		if m[len(magic)] != 1 {
			t.Fatalf("part %d is version %d: old drains would call it unknown, not unsupported", i, m[len(magic)])
		}
		var parts, part uint64
		var key []byte
		for f := fields(m); len(f) > 0; {
			num, typ, n := protowire.ConsumeField(f)
			if n < 0 {
				t.Fatal(protowire.ParseError(n))
			}
			_, _, tn := protowire.ConsumeTag(f)
			switch num {
			case fieldParts:
				parts, _ = protowire.ConsumeVarint(f[tn:])
			case fieldPart:
				part, _ = protowire.ConsumeVarint(f[tn:])
			case fieldScrapeKey:
				if typ != protowire.BytesType {
					t.Fatalf("scrape key of wire type %v", typ)
				}
				key, _ = protowire.ConsumeBytes(f[tn:])
			}
			f = f[n:]
		}
		if parts != uint64(len(msgs)) || parts < 2 || part != uint64(i) || len(key) != sha256.Size {
			t.Fatalf("part %d: part %d of %d, key %d bytes", i, part, parts, len(key))
		}
	}
}

func TestDecodePart(t *testing.T) {
	key := testKey(t, 1)
	sc := newCodec(t, WithSigner(key))
	c := newCodec(t)
	e := scrape(t, fixture.NodeExporter)
	msgs, err := c.EncodeSplit(e, 3000)
	if err != nil {
		t.Fatal(err)
	}
	part := decodeAll(t, c, msgs)[1]
	// rebuild re-encodes part 1 with change applied to its body fields.
	rebuild := func(change func(*bodyFields)) []byte {
		bf := bodyFields{comp: part.whole.comp, rawSize: part.whole.rawSize, payload: part.Chunk, key: part.whole.digest[:], part: 1, parts: part.Parts}
		change(&bf)
		m, err := c.frame(nil, part, bf)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	fail := func(t *testing.T, m []byte, want error) {
		t.Helper()
		if _, err := c.Decode(m); !errors.Is(err, want) {
			t.Fatalf("got %v, want %v", err, want)
		} else {
			t.Log(err)
		}
	}
	t.Run("re-encodes", func(t *testing.T) {
		if !bytes.Equal(rebuild(func(*bodyFields) {}), msgs[1]) {
			t.Fatal("a decoded part does not re-encode to its message")
		}
	})
	t.Run("not decompressed", func(t *testing.T) {
		// A chunk of garbage under a valid frame decodes: only Join looks inside.
		p, err := c.Decode(rebuild(func(bf *bodyFields) { bf.payload = bytes.Repeat([]byte{0xff}, 100) }))
		if err != nil || len(p.Chunk) != 100 {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("no chunk", func(t *testing.T) { fail(t, rebuild(func(bf *bodyFields) { bf.payload = nil }), ErrCorrupt) })
	t.Run("chunk over raw size", func(t *testing.T) {
		fail(t, rebuild(func(bf *bodyFields) { bf.rawSize = len(part.Chunk) - 1 }), ErrCorrupt)
	})
	t.Run("no key", func(t *testing.T) { fail(t, rebuild(func(bf *bodyFields) { bf.key = nil }), ErrCorrupt) })
	t.Run("short key", func(t *testing.T) { fail(t, rebuild(func(bf *bodyFields) { bf.key = bf.key[:16] }), ErrCorrupt) })
	t.Run("unknown compression", func(t *testing.T) { fail(t, rebuild(func(bf *bodyFields) { bf.comp = 9 }), ErrUnsupported) })
	t.Run("index out of range", func(t *testing.T) { fail(t, rebuild(func(bf *bodyFields) { bf.part = bf.parts }), ErrCorrupt) })
	t.Run("over MaxParts", func(t *testing.T) { fail(t, rebuild(func(bf *bodyFields) { bf.parts = MaxParts + 1 }), ErrUnsupported) })
	t.Run("raw size over the limit", func(t *testing.T) {
		lc := newCodec(t, MaxBodySize(len(e.Body)-1))
		if _, err := lc.Decode(msgs[0]); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("got %v, want ErrTooLarge", err)
		}
	})
	t.Run("signed per part", func(t *testing.T) {
		signed, err := sc.EncodeSplit(e, 3000)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range signed {
			p, err := c.Decode(m)
			if err != nil || p.Signer != publicKey(t, key) {
				t.Fatalf("part %d: %v, Signer %q", i, err, p.Signer)
			}
			// A byte of the chunk changed and the checksum recomputed: forgery.
			forged := slices.Clone(m)
			forged[len(forged)-trailerLen-sc.signer.size()-10] ^= 1
			if _, err := c.Decode(withCRC(forged)); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("forged part %d: %v, want ErrBadSignature", i, err)
			}
		}
	})
	t.Run("Target", func(t *testing.T) {
		job, instance, err := c.Target(msgs[2])
		if err != nil || job != e.Job || instance != e.Instance {
			t.Fatalf("Target = %q %q %v", job, instance, err)
		}
	})
}

func TestJoinErrors(t *testing.T) {
	c := newCodec(t)
	e := scrape(t, fixture.NodeExporter)
	split := func(e *Envelope, c *Codec) []*Envelope {
		t.Helper()
		msgs, err := c.EncodeSplit(e, 3000)
		if err != nil {
			t.Fatal(err)
		}
		return decodeAll(t, c, msgs)
	}
	parts := split(e, c)
	if len(parts) < 3 {
		t.Fatalf("%d parts, want 3 or more", len(parts))
	}
	later := *e
	later.Start = later.Start.Add(time.Minute)
	other := split(&later, c)
	signed := split(e, newCodec(t, WithSigner(testKey(t, 1))))
	uncompressed := split(e, newCodec(t, BodyCompression(CompressionNone)))
	corrupt := func() []*Envelope {
		ps := slices.Clone(parts)
		p := *ps[1]
		p.Chunk = slices.Clone(p.Chunk)
		p.Chunk[0] ^= 1
		ps[1] = &p
		return ps
	}()
	with := func(i int, p *Envelope) []*Envelope {
		ps := slices.Clone(parts)
		ps[i] = p
		return ps
	}
	tests := []struct {
		name  string
		parts []*Envelope
		want  error
	}{
		{"none", nil, ErrInvalid},
		{"nil part", with(1, nil), ErrInvalid},
		{"missing part", parts[1:], ErrInvalid},
		{"part twice", with(2, parts[1]), ErrInvalid},
		{"part of another scrape", with(1, other[1]), ErrInvalid},
		{"part of the same scrape signed", with(1, signed[1]), ErrInvalid},
		{"part of the same scrape uncompressed", with(0, uncompressed[0]), ErrInvalid},
		{"whole envelope", []*Envelope{e}, ErrInvalid},
		{"one more", append(slices.Clone(parts), parts[0]), ErrInvalid},
		{"chunk changed", corrupt, ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Join(tt.parts)
			if !errors.Is(err, tt.want) || got != nil {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			t.Log(err)
		})
	}
	t.Run("body over the limit", func(t *testing.T) {
		if _, err := newCodec(t, MaxBodySize(len(e.Body)-1)).Join(parts); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("got %v, want ErrTooLarge", err)
		}
	})
	t.Run("chunks that hash right but do not decompress", func(t *testing.T) {
		// What a buggy publisher could send: the key is of the chunks, not of a body.
		msgs := framesFor(t, newCodec(t, BodyCompression(CompressionNone)), e, 3)
		ps := decodeAll(t, c, msgs)
		for _, p := range ps {
			p.whole.comp = CompressionZstd
		}
		if _, err := c.Join(ps); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("got %v, want ErrCorrupt", err)
		}
	})
}

func TestSameScrape(t *testing.T) {
	c := newCodec(t)
	e := scrape(t, fixture.NodeExporter)
	msgs, err := c.EncodeSplit(e, 3000)
	if err != nil {
		t.Fatal(err)
	}
	parts := decodeAll(t, c, msgs)
	if err := SameScrape(parts[0], parts[1]); err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(*Envelope){
		"publisher": func(p *Envelope) { p.Publisher = "x" },
		"labels":    func(p *Envelope) { p.Labels = nil },
		"series":    func(p *Envelope) { p.Series++ },
		"start":     func(p *Envelope) { p.Start = p.Start.Add(1) },
		"parts":     func(p *Envelope) { p.Parts++ },
		"raw size":  func(p *Envelope) { p.whole = &wholeBody{comp: p.whole.comp, rawSize: 1, digest: p.whole.digest} },
		"whole":     func(p *Envelope) { p.whole = nil },
	} {
		p := *parts[1]
		change(&p)
		if err := SameScrape(parts[0], &p); err == nil {
			t.Errorf("%s changed: SameScrape says same", name)
		}
	}
}

// FuzzJoin splits a fuzzed body at a fuzzed size, shuffles the parts, may flip a byte
// of one (checksum recomputed, as a forger would), and checks that Join either fails
// with a sentinel or returns exactly the original scrape.
func FuzzJoin(f *testing.F) {
	c := newCodec(f, MaxBodySize(1<<20))
	nc := newCodec(f, BodyCompression(CompressionNone))
	f.Add(fixture.Read(f, fixture.PushGateway), uint16(900), uint64(1), uint32(0), false)
	f.Add([]byte(strings.Repeat("up 1\n", 2000)), uint16(300), uint64(2), uint32(77), true)
	f.Add(incompressible(5000), uint16(700), uint64(3), uint32(1234), true)
	f.Fuzz(func(t *testing.T, body []byte, size uint16, seed uint64, flip uint32, useNone bool) {
		cc := c
		if useNone {
			cc = nc
		}
		e := &Envelope{Job: "j", Instance: "i", Start: time.Unix(1700000000, 0), Body: body, Series: 1}
		msgs, err := cc.EncodeSplit(e, int(size))
		if err != nil {
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("EncodeSplit: %v", err)
			}
			return
		}
		if maxLen(msgs) > int(size) {
			t.Fatalf("a part of %d bytes, max %d", maxLen(msgs), size)
		}
		if len(msgs) == 1 {
			return
		}
		flipped := false
		if flip != 0 {
			m := msgs[int(flip)%len(msgs)]
			i := headerLen + int(flip/8)%(len(m)-headerLen-trailerLen)
			m[i] ^= 1 << (flip % 8)
			binary.LittleEndian.PutUint32(m[len(m)-trailerLen:], crc32c(m[:len(m)-trailerLen]))
			flipped = true
		}
		r := rand.New(rand.NewPCG(seed, seed))
		r.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
		var parts []*Envelope
		for _, m := range msgs {
			p, err := c.Decode(m)
			if err != nil {
				if !flipped || !slices.ContainsFunc(sentinels, func(s error) bool { return errors.Is(err, s) }) {
					t.Fatalf("Decode: %v", err)
				}
				continue
			}
			if p.Parts > 1 {
				parts = append(parts, p)
			}
		}
		got, err := c.Join(parts)
		if err != nil {
			if !flipped || !slices.ContainsFunc(append(sentinels, ErrInvalid), func(s error) bool { return errors.Is(err, s) }) {
				t.Fatalf("Join: %v", err)
			}
			return
		}
		if d := diff(joined(e), got); d != "" {
			t.Fatalf("joined scrape differs (flipped %t):\n%s", flipped, d)
		}
	})
}
