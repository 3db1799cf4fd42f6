package envelope

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// testKey is a user key pair from a fixed seed, so fuzz seeds are reproducible.
func testKey(tb testing.TB, n byte) nkeys.KeyPair {
	tb.Helper()
	kp, err := nkeys.FromRawSeed(nkeys.PrefixByteUser, bytes.Repeat([]byte{n}, 32))
	if err != nil {
		tb.Fatal(err)
	}
	return kp
}

func publicKey(tb testing.TB, kp nkeys.KeyPair) string {
	tb.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		tb.Fatal(err)
	}
	return pub
}

// small is a scrape with every field set and a short body, for tests that go through
// every byte of a message.
func small() *Envelope {
	return &Envelope{
		Publisher: "edge-01", Site: "ams1", Job: "node", Instance: "host:9100",
		Labels: []Label{{"env", "prod"}, {"team", "infra"}}, HonorLabels: true,
		Start: time.Unix(1700000000, 5), Duration: time.Second, HTTPStatus: 200,
		ContentType: "text/plain; version=0.0.4", Body: []byte("# TYPE up gauge\nup 1\n"), Series: 1, Parts: 1,
	}
}

// withCRC returns b with its checksum recomputed, as a forger would.
func withCRC(b []byte) []byte {
	b = slices.Clone(b)
	binary.LittleEndian.PutUint32(b[len(b)-trailerLen:], crc32.Checksum(b[:len(b)-trailerLen], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

// signedMessage frames raw fields and signs them with s, as Encode would had it
// written those fields: the fuzzer's way past the signature.
func signedMessage(s *signer, f []byte) []byte {
	b := append([]byte(magic), Version, 0, 0, 0, 0)
	b = append(b, f...)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)+s.size()+trailerLen))
	b = s.appendSignature(b, 0)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
}

// splitFields returns the fields of f, each with its tag.
func splitFields(tb testing.TB, f []byte) [][]byte {
	tb.Helper()
	var out [][]byte
	for len(f) > 0 {
		_, _, n := protowire.ConsumeField(f)
		if n < 0 {
			tb.Fatal(protowire.ParseError(n))
		}
		out = append(out, f[:n])
		f = f[n:]
	}
	return out
}

// replaceField returns f with every occurrence of field num replaced by with, in place
// (nil removes it).
func replaceField(tb testing.TB, f []byte, num protowire.Number, with []byte) []byte {
	tb.Helper()
	var out []byte
	found := false
	for _, p := range splitFields(tb, f) {
		if n, _, _ := protowire.ConsumeTag(p); n == num {
			if !found {
				out = append(out, with...)
			}
			found = true
			continue
		}
		out = append(out, p...)
	}
	if !found {
		tb.Fatalf("no field %d", num)
	}
	return out
}

func TestSignRoundTrip(t *testing.T) {
	kp := testKey(t, 1)
	pub := publicKey(t, kp)
	dec := newCodec(t) // verifying needs no key
	for _, comp := range []Compression{CompressionZstd, CompressionNone} {
		c := newCodec(t, WithSigner(kp), BodyCompression(comp))
		if c.Signer() != pub {
			t.Fatalf("Signer() = %q, want %q", c.Signer(), pub)
		}
		for _, e := range []*Envelope{{}, small(), scrape(t, fixture.NodeExporter), {Error: "connection refused", Job: "j"}} {
			b, err := c.Encode(e)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != cap(b) || int(binary.LittleEndian.Uint32(b[4:])) != len(b) {
				t.Errorf("len %d, cap %d, header %d: size computation is off", len(b), cap(b), binary.LittleEndian.Uint32(b[4:]))
			}
			got, err := dec.Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if d := diff(e, got); d != "" {
				t.Fatal(d)
			}
			if got.Signer != pub {
				t.Fatalf("Signer %q, want %q", got.Signer, pub)
			}
			again, _ := c.Encode(e)
			if !bytes.Equal(b, again) {
				t.Error("signed encoding is not deterministic")
			}
			a, err := c.Append([]byte("prefix"), e)
			if err != nil || !bytes.Equal(a[len("prefix"):], b) {
				t.Errorf("Append after a prefix: %v, or a different message", err)
			}
			// Encode ignores Signer: a decoded envelope re-encodes under the codec's key.
			got.Signer = "UNOT-A-KEY"
			if b2, err := c.Encode(got); err != nil || !bytes.Equal(b2, b) {
				t.Errorf("re-encoding a decoded envelope: %v, or a different message", err)
			}
		}
	}
	// The signature is the last field, protoc --decode_raw style: 99 then 100.
	b, _ := newCodec(t, WithSigner(kp)).Encode(small())
	parts := splitFields(t, fields(b))
	last, _, _ := protowire.ConsumeTag(parts[len(parts)-1])
	prev, _, _ := protowire.ConsumeTag(parts[len(parts)-2])
	if prev != fieldSigner || last != fieldSignature {
		t.Errorf("the message ends with fields %d, %d; want signer, signature", prev, last)
	}
}

func TestUnsignedHasNoSigner(t *testing.T) {
	c := newCodec(t)
	if c.Signer() != "" {
		t.Errorf("Signer() = %q without WithSigner", c.Signer())
	}
	e, err := c.Decode(valid(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if e.Signer != "" {
		t.Errorf("unsigned message decoded with Signer %q", e.Signer)
	}
}

func TestWithSignerInvalid(t *testing.T) {
	pubOnly, err := nkeys.FromPublicKey(publicKey(t, testKey(t, 1)))
	if err != nil {
		t.Fatal(err)
	}
	account, _ := nkeys.CreateAccount()
	curve, _ := nkeys.CreateCurveKeys()
	for name, kp := range map[string]nkeys.KeyPair{"nil": nil, "public key only": pubOnly, "account key": account, "curve key": curve} {
		if _, err := NewCodec(WithSigner(kp)); err == nil {
			t.Errorf("%s: WithSigner accepted it", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// TestSignedBitFlips flips every bit of a signed message. As received, the CRC catches
// each flip; with the CRC recomputed, as a forger would, the signature (or the frame
// or field checks) must: no flip may decode.
func TestSignedBitFlips(t *testing.T) {
	c := newCodec(t, WithSigner(testKey(t, 1)))
	orig, err := c.Encode(small())
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for i := range len(orig) - trailerLen {
		for bit := range 8 {
			b := slices.Clone(orig)
			b[i] ^= 1 << bit
			if _, err := c.Decode(b); err == nil {
				t.Fatalf("bit %d of byte %d flipped: decoded", bit, i)
			}
			_, err := c.Decode(withCRC(b))
			if err == nil {
				t.Fatalf("bit %d of byte %d flipped, CRC recomputed: decoded", bit, i)
			}
			if !slices.ContainsFunc(sentinels, func(s error) bool { return errors.Is(err, s) }) {
				t.Fatalf("bit %d of byte %d: error wraps no sentinel: %v", bit, i, err)
			}
			if errors.Is(err, ErrBadSignature) {
				bad++
			}
		}
	}
	// The fields, the signer and the signature are most of the message; flips there
	// that still parse are for the signature to catch.
	if bad < (len(orig)-headerLen-trailerLen)*4 {
		t.Errorf("only %d of %d flips were caught by the signature", bad, 8*(len(orig)-trailerLen))
	}
}

// TestSignedForgery changes one field of a real signed message at a time and
// recomputes the CRC, as an attacker on the stream would: the signature catches each.
func TestSignedForgery(t *testing.T) {
	kp := testKey(t, 1)
	c := newCodec(t, WithSigner(kp))
	orig, err := c.Encode(scrape(t, fixture.NodeExporter))
	if err != nil {
		t.Fatal(err)
	}
	base := fields(orig)
	forge := func(t *testing.T, f []byte) {
		t.Helper()
		_, err := c.Decode(message(f)) // message: right length and CRC
		if !errors.Is(err, ErrBadSignature) {
			t.Fatalf("got %v, want ErrBadSignature", err)
		}
		var se *SignatureError
		if !errors.As(err, &se) || se.Signer != publicKey(t, kp) {
			t.Fatalf("error %#v does not name the claimed signer", err)
		}
		t.Log(err)
	}
	if _, err := c.Decode(message(base)); err != nil {
		t.Fatalf("the untouched fields reframed: %v", err)
	}
	str := func(num protowire.Number, v string) []byte { return bytesField(num, []byte(v)) }
	tests := []struct {
		name string
		f    []byte
	}{
		{"job", replaceField(t, base, fieldJob, str(fieldJob, "nodf"))},
		{"instance", replaceField(t, base, fieldInstance, str(fieldInstance, "evil:9100"))},
		{"publisher", replaceField(t, base, fieldPublisher, str(fieldPublisher, "edge-fra-01.example.net"))},
		{"site", replaceField(t, base, fieldSite, nil)},
		{"label value", replaceField(t, base, fieldLabel, bytesField(fieldLabel, slices.Concat(str(labelName, "env"), str(labelValue, "dev"))))},
		{"label removed", replaceField(t, base, fieldLabel, nil)},
		{"honor_labels", replaceField(t, base, fieldHonorLabels, nil)},
		{"start", replaceField(t, base, fieldStartSec, varintField(fieldStartSec, protowire.EncodeZigZag(time.Now().Unix())))},
		{"duration", replaceField(t, base, fieldDuration, varintField(fieldDuration, 1))},
		{"error", slices.Concat(str(fieldError, "forged failure"), base)},
		{"http status", replaceField(t, base, fieldHTTPStatus, varintField(fieldHTTPStatus, 500))},
		{"content type", replaceField(t, base, fieldContentType, str(fieldContentType, "application/openmetrics-text"))},
		{"series", replaceField(t, base, fieldSeries, varintField(fieldSeries, 1))},
		{"unknown field added", slices.Concat(varintField(40, 1), base)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { forge(t, tt.f) })
	}
	t.Run("body byte", func(t *testing.T) {
		f := slices.Clone(base)
		off := bodyOffset(t, f)
		for _, i := range []int{0, 1, 100, 5000} {
			f[off+i] ^= 0x01
			forge(t, f)
			f[off+i] ^= 0x01
		}
	})
	t.Run("header length", func(t *testing.T) {
		// The header is signed too: a forger cannot even change the framing.
		b := slices.Clone(orig)
		b = append(b[:len(b)-trailerLen], 0, 0, 0, 0, 0)
		binary.LittleEndian.PutUint32(b[4:], uint32(len(b)))
		_, err := c.Decode(withCRC(b))
		if err == nil {
			t.Fatal("decoded")
		}
	})
}

// bodyOffset is where the body's bytes start in fields f.
func bodyOffset(tb testing.TB, f []byte) int {
	tb.Helper()
	off := 0
	for _, p := range splitFields(tb, f) {
		if num, _, n := protowire.ConsumeTag(p); num == fieldBody {
			_, m := protowire.ConsumeVarint(p[n:])
			return off + n + m
		}
		off += len(p)
	}
	tb.Fatal("no body")
	return 0
}

// TestSignatureOtherKey: a message signed by one key that names another as its signer
// (an attacker who holds a key of their own but wants the drain to trust the message as
// another's) fails, as does a genuine signature moved onto another message.
func TestSignatureOtherKey(t *testing.T) {
	victim, attacker := testKey(t, 1), testKey(t, 2)
	c := newCodec(t)
	// Signed by the attacker, claiming the victim's key.
	forged, err := newCodec(t, WithSigner(attacker)).Encode(small())
	if err != nil {
		t.Fatal(err)
	}
	f := replaceField(t, fields(forged), fieldSigner, bytesField(fieldSigner, []byte(publicKey(t, victim))))
	_, err = c.Decode(message(f))
	if !errors.Is(err, ErrBadSignature) {
		t.Fatalf("attacker's signature under the victim's key: got %v, want ErrBadSignature", err)
	}
	var se *SignatureError
	if !errors.As(err, &se) || se.Signer != publicKey(t, victim) || se.Job != "node" || se.Instance != "host:9100" {
		t.Errorf("SignatureError %+v does not carry the claims", se)
	}
	// The attacker's own, unchanged, verifies: trusting the key is the drain's business.
	if e, err := c.Decode(forged); err != nil || e.Signer != publicKey(t, attacker) {
		t.Fatalf("the attacker's genuine message: %v", err)
	}

	// The victim's genuine signature, taken from another message of theirs.
	vc := newCodec(t, WithSigner(victim))
	genuine, _ := vc.Encode(small())
	other := small()
	other.Job = "other"
	moved, _ := vc.Encode(other)
	sigOf := func(b []byte) []byte {
		parts := splitFields(t, fields(b))
		return parts[len(parts)-1]
	}
	f = replaceField(t, fields(moved), fieldSignature, sigOf(genuine))
	if _, err := c.Decode(message(f)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("a signature moved from another message: got %v, want ErrBadSignature", err)
	}
}

// TestSignatureFields: the rules for the signer and signature fields themselves.
func TestSignatureFields(t *testing.T) {
	kp := testKey(t, 1)
	c := newCodec(t)
	signed, err := newCodec(t, WithSigner(kp)).Encode(small())
	if err != nil {
		t.Fatal(err)
	}
	base := fields(signed)
	parts := splitFields(t, base)
	sigField, signerField := parts[len(parts)-1], parts[len(parts)-2]
	unsigned := slices.Concat(parts[:len(parts)-2]...)
	account, _ := nkeys.CreateAccount()
	accountPub := publicKey(t, account)
	sigValue := func() []byte {
		v, _ := protowire.ConsumeBytes(sigField[2:])
		return v
	}()
	fail := func(t *testing.T, f []byte, sentinel error) {
		t.Helper()
		_, err := c.Decode(message(f))
		if !errors.Is(err, sentinel) {
			t.Fatalf("got %v, want %v", err, sentinel)
		}
		t.Log(err)
	}
	t.Run("both stripped decodes as unsigned", func(t *testing.T) {
		// Which is why a drain that trusts keys must refuse unsigned messages.
		e, err := c.Decode(message(unsigned))
		if err != nil || e.Signer != "" {
			t.Fatalf("got %v, Signer %q", err, e.Signer)
		}
	})
	t.Run("signature stripped", func(t *testing.T) {
		fail(t, slices.Concat(unsigned, signerField), ErrBadSignature)
	})
	t.Run("signer stripped", func(t *testing.T) {
		fail(t, slices.Concat(unsigned, sigField), ErrBadSignature)
	})
	t.Run("empty signer", func(t *testing.T) {
		fail(t, slices.Concat(unsigned, bytesField(fieldSigner, nil), sigField), ErrBadSignature)
	})
	t.Run("field after the signature", func(t *testing.T) {
		fail(t, slices.Concat(base, varintField(40, 1)), ErrBadSignature)
		fail(t, slices.Concat(base, bytesField(fieldJob, []byte("other"))), ErrBadSignature)
		fail(t, slices.Concat(base, sigField), ErrBadSignature)
	})
	t.Run("signer twice", func(t *testing.T) {
		fail(t, slices.Concat(signerField, base), ErrCorrupt)
	})
	t.Run("signature of the wrong size", func(t *testing.T) {
		fail(t, slices.Concat(unsigned, signerField, bytesField(fieldSignature, sigValue[:63])), ErrBadSignature)
		fail(t, slices.Concat(unsigned, signerField, bytesField(fieldSignature, append(slices.Clone(sigValue), 0))), ErrBadSignature)
		fail(t, slices.Concat(unsigned, signerField, bytesField(fieldSignature, nil)), ErrBadSignature)
	})
	t.Run("signature of the wrong wire type", func(t *testing.T) {
		fail(t, slices.Concat(unsigned, signerField, varintField(fieldSignature, 1)), ErrCorrupt)
	})
	t.Run("signer not a user key", func(t *testing.T) {
		for _, s := range []string{accountPub, "U" + strings.Repeat("A", 55), "not a key", strings.Repeat("U", 1000)} {
			fail(t, slices.Concat(unsigned, bytesField(fieldSigner, []byte(s)), sigField), ErrBadSignature)
		}
	})
	t.Run("claims are cut short", func(t *testing.T) {
		_, err := c.Decode(message(slices.Concat(unsigned, bytesField(fieldSigner, bytes.Repeat([]byte("U"), 1000)), sigField)))
		var se *SignatureError
		if !errors.As(err, &se) || len(se.Signer) != 128 {
			t.Fatalf("got %v", err)
		}
	})
}

// FuzzDecodeSigned is FuzzDecode for signed messages: Decode never panics, every
// error wraps a sentinel, and no signature verifies unless one of the two test keys
// made it. Each input is tried as a whole message, as fields with a valid frame, and as
// fields behind a valid frame and a valid signature by the first key, so the fuzzer
// reaches what follows verification: a message decoded from those must name that key
// and re-encode to an equal envelope under it.
func FuzzDecodeSigned(f *testing.F) {
	key, other := testKey(f, 1), testKey(f, 2)
	keyPub, otherPub := publicKey(f, key), publicKey(f, other)
	sc := newCodec(f, WithSigner(key), MaxBodySize(1<<20))
	oc := newCodec(f, WithSigner(other), BodyCompression(CompressionNone))
	dc := newCodec(f, MaxBodySize(1<<20))
	for _, e := range []*Envelope{
		{},
		small(),
		{Job: "node", Labels: []Label{{"a", "b"}}, Start: time.Unix(1, 2), Error: "boom", HTTPStatus: 500},
		scrape(f, fixture.PushGateway),
	} {
		for _, cc := range []*Codec{sc, oc} {
			b, err := cc.Encode(e)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
			f.Add(fields(b))
			f.Add(withCRC(append(slices.Clone(b[:len(b)/2]), b[len(b)/2:]...)))
			forged := slices.Clone(fields(b))
			forged[0] ^= 1
			f.Add(forged)
			if msgs, err := cc.EncodeSplit(e, len(b)/2); err == nil && len(msgs) > 1 {
				f.Add(msgs[1])
				f.Add(fields(msgs[0]))
			}
		}
	}
	f.Add(bytesField(fieldSigner, []byte(keyPub)))
	f.Add(slices.Concat(bytesField(fieldSigner, []byte(keyPub)), bytesField(fieldSignature, make([]byte, 64))))

	f.Fuzz(func(t *testing.T, in []byte) {
		check := func(m []byte, signedByKey bool) {
			e, err := dc.Decode(m)
			if err != nil {
				if !slices.ContainsFunc(sentinels, func(s error) bool { return errors.Is(err, s) }) {
					t.Fatalf("error wraps no sentinel: %v", err)
				}
				return
			}
			switch {
			case signedByKey && e.Signer != keyPub && e.Signer != "":
				// "" is right when the fuzzed fields end in a field whose length
				// swallows the signer and signature: the message is then unsigned.
				t.Fatalf("signed by %s, decoded with Signer %q", keyPub, e.Signer)
			case e.Signer != "" && e.Signer != keyPub && e.Signer != otherPub:
				t.Fatalf("a signature verified for %q, a key no one here holds", e.Signer)
			}
			var b []byte
			if e.Parts > 1 {
				b = encodePart(t, sc, e)
			} else if b, err = sc.Encode(e); err != nil {
				t.Fatalf("decoded envelope does not re-encode: %v", err)
			}
			e2, err := dc.Decode(b)
			if err != nil {
				t.Fatalf("re-encoded envelope does not decode: %v", err)
			}
			if d := diff(e, e2); d != "" {
				t.Fatalf("re-encoding changed the envelope:\n%s", d)
			}
			if e2.Signer != keyPub {
				t.Fatalf("re-encoded envelope has Signer %q", e2.Signer)
			}
		}
		check(in, false)
		check(message(in), false)
		check(signedMessage(sc.signer, in), true)
	})
}
