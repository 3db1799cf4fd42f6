package assemble

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// natsMaxPayload is the NATS server's default max_payload.
const natsMaxPayload = 1 << 20

var (
	bigOnce sync.Once
	bigBody []byte
)

// big is a 20 MB text exposition: the node_exporter capture replicated to 330,000
// series by fixture.Replicate, each sample's value then varied as a fleet's would be
// (Replicate copies them, which compresses 40-fold and fits one message; with the
// values varied zstd gets 12-fold, about what real expositions of that size get).
func big(tb testing.TB) []byte {
	bigOnce.Do(func() { bigBody = vary(fixture.Replicate(tb, fixture.NodeExporter, 330_000)) })
	if len(bigBody) < 20e6 {
		tb.Fatalf("exposition of %d bytes, want 20 MB", len(bigBody))
	}
	return bigBody
}

// vary gives every sample line its own value, of the magnitude and kind (integer or
// not) of the one it had, drawn from a fixed seed.
func vary(body []byte) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	out := make([]byte, 0, len(body)+len(body)/4)
	for line := range bytes.Lines(body) {
		if len(line) == 0 || line[0] == '#' {
			out = append(out, line...)
			continue
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		i := bytes.LastIndexByte(line, ' ')
		out = append(out, line[:i+1]...)
		v, err := strconv.ParseFloat(string(line[i+1:]), 64)
		switch {
		case err != nil || v == 0 || math.IsInf(v, 0) || math.IsNaN(v):
			out = append(out, line[i+1:]...)
		case v == math.Trunc(v) && math.Abs(v) < 1e15:
			out = strconv.AppendInt(out, int64(v*(0.5+r.Float64())), 10)
		default:
			out = strconv.AppendFloat(out, v*(0.5+r.Float64()), 'g', -1, 64)
		}
		out = append(out, '\n')
	}
	return out
}

func bigScrape(tb testing.TB) *envelope.Envelope {
	body := big(tb)
	return &envelope.Envelope{
		Publisher: "edge-ams-01", Site: "ams1", Job: "node", Instance: "huge:9100",
		Labels: []envelope.Label{{Name: "env", Value: "prod"}}, Start: t0, Duration: 3 * time.Second,
		HTTPStatus: 200, ContentType: fixture.TextContentType, Body: body, Series: 330_000,
	}
}

// TestLargeExposition splits a 20 MB exposition for NATS's default max payload, and
// reassembles it from shuffled parts; then loses a part, and corrupts one.
func TestLargeExposition(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	c := newCodec(t, envelope.WithSigner(kp))
	e := bigScrape(t)
	whole, err := c.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := c.EncodeSplit(e, natsMaxPayload)
	if err != nil {
		t.Fatal(err)
	}
	wire := 0
	for i, m := range msgs {
		if len(m) > natsMaxPayload {
			t.Fatalf("part %d is %d bytes, over %d", i, len(m), natsMaxPayload)
		}
		wire += len(m)
	}
	if len(msgs) < 2 {
		t.Fatalf("%d message for %d bytes compressed to %d", len(msgs), len(e.Body), len(whole))
	}
	t.Logf("%d bytes, %d series: one message would be %d bytes (%.1f-fold); %d parts of at most %d bytes, %d bytes in all (+%d, +%.4f%%)",
		len(e.Body), e.Series, len(whole), float64(len(e.Body))/float64(len(whole)), len(msgs), maxLen(msgs),
		wire, wire-len(whole), 100*float64(wire-len(whole))/float64(len(whole)))

	// At 1 MB the parts are few; at 64 KiB (a server configured small) they are many.
	for _, maxPayload := range []int{natsMaxPayload, 64 << 10} {
		t.Run("reassembled at "+strconv.Itoa(maxPayload), func(t *testing.T) {
			msgs := msgs
			if maxPayload != natsMaxPayload {
				if msgs, err = c.EncodeSplit(e, maxPayload); err != nil {
					t.Fatal(err)
				}
				t.Logf("%d parts of at most %d bytes", len(msgs), maxLen(msgs))
			}
			r := New[int](c, Options{})
			order := rand.Perm(len(msgs))
			for n, i := range order {
				if len(msgs[i]) > maxPayload {
					t.Fatalf("part %d is %d bytes, over %d", i, len(msgs[i]), maxPayload)
				}
				p, err := c.Decode(msgs[i])
				if err != nil {
					t.Fatalf("Decode part %d: %v", i, err)
				}
				if p.Part != i || p.Parts != len(msgs) || p.Body != nil || p.Signer != c.Signer() {
					t.Fatalf("part %d decoded as part %d of %d, body %d bytes, signer %q", i, p.Part, p.Parts, len(p.Body), p.Signer)
				}
				out, err := r.Add(p, i)
				if err != nil || len(out.Dropped) > 0 {
					t.Fatalf("Add part %d: %v %v", i, err, out.Dropped)
				}
				if (out.Whole != nil) != (n == len(msgs)-1) {
					t.Fatalf("after %d of %d parts: whole %t", n+1, len(msgs), out.Whole != nil)
				}
				if out.Whole == nil {
					continue
				}
				if !bytes.Equal(out.Whole.Body, e.Body) || out.Whole.Series != e.Series || out.Whole.Signer != c.Signer() {
					t.Fatal("the reassembled scrape differs from the one split")
				}
				want := make([]int, len(msgs))
				for i := range want {
					want[i] = i
				}
				if !slices.Equal(out.Handles, want) {
					t.Fatalf("handles %v, want %v", out.Handles, want)
				}
			}
			if s := r.Stats(); s != (Stats{}) {
				t.Fatalf("still held: %+v", s)
			}
		})
	}

	t.Run("part missing", func(t *testing.T) {
		clk := &clock{now: t0}
		r := New[int](c, Options{Timeout: time.Minute, Now: clk.Now})
		lost := len(msgs) - 1
		for i, m := range msgs {
			if i == lost {
				continue
			}
			p, err := c.Decode(m)
			if err != nil {
				t.Fatal(err)
			}
			if out, err := r.Add(p, i); err != nil || out.Whole != nil || len(out.Dropped) > 0 {
				t.Fatalf("Add part %d: %v %+v", i, err, out)
			}
		}
		if got := r.Expire(t0.Add(time.Minute - time.Millisecond)); len(got) != 0 {
			t.Fatalf("expired early: %+v", got)
		}
		got := r.Expire(t0.Add(time.Minute))
		if len(got) != 1 || !errors.Is(got[0].Err, ErrTimeout) || !slices.Equal(got[0].Missing, []int{lost}) ||
			len(got[0].Handles) != len(msgs)-1 {
			t.Fatalf("expired %+v", got)
		}
		t.Log(got[0].Err)
		if s := r.Stats(); s != (Stats{}) {
			t.Fatalf("still held: %+v", s)
		}
	})

	t.Run("part corrupt", func(t *testing.T) {
		bad := slices.Clone(msgs[0])
		bad[len(bad)/3] ^= 0x10
		if _, err := c.Decode(bad); !errors.Is(err, envelope.ErrCorrupt) {
			t.Fatalf("flipped bit: %v, want ErrCorrupt", err)
		}
		// Checksum recomputed, as a forger would: the signature still catches it.
		binary.LittleEndian.PutUint32(bad[len(bad)-4:], crc32.Checksum(bad[:len(bad)-4], crc32.MakeTable(crc32.Castagnoli)))
		if _, err := c.Decode(bad); !errors.Is(err, envelope.ErrBadSignature) {
			t.Fatalf("forged part: %v, want ErrBadSignature", err)
		}
		// The others decode on their own.
		for i, m := range msgs[1:] {
			if _, err := c.Decode(m); err != nil {
				t.Fatalf("part %d: %v", i+1, err)
			}
		}
	})
}

func maxLen(msgs [][]byte) int {
	n := 0
	for _, m := range msgs {
		n = max(n, len(m))
	}
	return n
}

// BenchmarkLargeExposition is the cost of splitting the 20 MB exposition and putting
// it back together, against sending it in one message (were the server to take it).
// Each iteration does both, interleaved, so that the ratios hold on a loaded machine:
// "plain" is Encode then Decode; "split" is EncodeSplit, Decode of each part, Add to a
// Reassembler and the Join the last Add makes. split/plain is their ratio, and the
// edge's and the drain's halves are reported apart (encode-split/encode,
// decode-join/decode); wire-overhead-bytes is what the parts' own headers, scrape keys
// and signatures add to the one message. Sub-benchmarks: NATS's default max payload,
// and 64 KiB.
func BenchmarkLargeExposition(b *testing.B) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		b.Fatal(err)
	}
	for _, signed := range []bool{false, true} {
		var opts []envelope.Option
		name := "unsigned"
		if signed {
			name, opts = "signed", []envelope.Option{envelope.WithSigner(kp)}
		}
		for _, maxPayload := range []int{natsMaxPayload, 64 << 10} {
			b.Run(name+"/"+strconv.Itoa(maxPayload), func(b *testing.B) {
				c := newCodec(b, opts...)
				e := bigScrape(b)
				r := New[int](c, Options{MaxBytes: 64 << 20})
				var enc, dec, encSplit, decSplit time.Duration
				var whole []byte
				var msgs [][]byte
				b.SetBytes(int64(len(e.Body)))
				for b.Loop() {
					s := time.Now()
					m, err := c.Encode(e)
					if err != nil {
						b.Fatal(err)
					}
					enc += time.Since(s)
					s = time.Now()
					if _, err := c.Decode(m); err != nil {
						b.Fatal(err)
					}
					dec += time.Since(s)
					whole = m

					s = time.Now()
					if msgs, err = c.EncodeSplit(e, maxPayload); err != nil {
						b.Fatal(err)
					}
					encSplit += time.Since(s)
					s = time.Now()
					var got *envelope.Envelope
					for i, m := range msgs {
						p, err := c.Decode(m)
						if err != nil {
							b.Fatal(err)
						}
						out, err := r.Add(p, i)
						if err != nil {
							b.Fatal(err)
						}
						got = out.Whole
					}
					decSplit += time.Since(s)
					if got == nil {
						b.Fatal("not reassembled")
					}
				}
				wire := 0
				for _, m := range msgs {
					wire += len(m)
				}
				b.ReportMetric(float64(len(msgs)), "parts")
				b.ReportMetric(float64(wire-len(whole)), "wire-overhead-bytes")
				b.ReportMetric(float64(encSplit+decSplit)/float64(enc+dec), "split/plain")
				b.ReportMetric(float64(encSplit)/float64(enc), "encode-split/encode")
				b.ReportMetric(float64(decSplit)/float64(dec), "decode-join/decode")
				b.ReportMetric(float64(enc+dec)/float64(b.N)/1e6, "plain-ms")
				b.ReportMetric(float64(encSplit+decSplit)/float64(b.N)/1e6, "split-ms")
			})
		}
	}
}
