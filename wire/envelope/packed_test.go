package envelope

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// TestDecodePacked checks that a packed envelope is Decode's but for its body, which
// AppendBody gives back whole, appended to what dst held.
func TestDecodePacked(t *testing.T) {
	c, err := NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dc, err := NewCodec(BodyCompression(CompressionZstdDict))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	body := fixture.Read(t, fixture.NodeExporter)
	for _, tc := range []struct {
		name string
		body []byte
		enc  *Codec // encodes; c decodes
	}{
		{"zstd", body, c},
		{"zstd-dict", body, dc},
		{"tiny", []byte("up 1\n"), c},
		{"empty", nil, c},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := &Envelope{Job: "node", Instance: "h:9100", Start: time.Unix(1700000000, 5).UTC(), Body: tc.body, Series: 3,
				Labels: []Label{{"dc", "1"}}}
			msg, err := tc.enc.Encode(in)
			if err != nil {
				t.Fatal(err)
			}
			want, err := c.Decode(msg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.DecodePacked(msg)
			if err != nil {
				t.Fatal(err)
			}
			if got.Body != nil {
				t.Errorf("Body of a packed envelope is %d bytes, want nil", len(got.Body))
			}
			if got.BodySize() != len(tc.body) {
				t.Errorf("BodySize = %d, want %d", got.BodySize(), len(tc.body))
			}
			if len(tc.body) > 1000 && got.PackedSize() >= len(tc.body)/3 {
				t.Errorf("PackedSize = %d of a %d-byte body: not compressed", got.PackedSize(), len(tc.body))
			}
			b, err := c.AppendBody([]byte("x"), got)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, append([]byte("x"), tc.body...)) {
				t.Errorf("AppendBody gave %d bytes, want x and the %d-byte body", len(b), len(tc.body))
			}
			got.packed, want.Body = nil, nil
			if !reflect.DeepEqual(got, want) {
				t.Errorf("DecodePacked = %+v, Decode = %+v", got, want)
			}
			if _, err := c.Encode(func() *Envelope { e, _ := c.DecodePacked(msg); return e }()); len(tc.body) > 0 && !errors.Is(err, ErrInvalid) {
				t.Errorf("Encode of a packed envelope: %v, want ErrInvalid", err)
			}
		})
	}
}

// TestAppendBodyCorrupt checks that a packed body that does not decompress is found by
// AppendBody, which leaves dst as it was.
func TestAppendBodyCorrupt(t *testing.T) {
	c, err := NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg, err := c.Encode(&Envelope{Job: "j", Instance: "i", Body: fixture.Read(t, fixture.NodeExporter)})
	if err != nil {
		t.Fatal(err)
	}
	e, err := c.DecodePacked(msg)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Clone(e.packed.data)
	for i := 20; i < len(data); i += 7 {
		data[i] ^= 0x5a
	}
	e.packed.data = data
	dst, err := c.AppendBody([]byte("keep"), e)
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("AppendBody of a corrupt body: %v, want ErrCorrupt", err)
	}
	if string(dst) != "keep" {
		t.Errorf("dst after a failed AppendBody = %q, want it unchanged", dst)
	}
}

// TestJoinPacked checks that JoinPacked gives Join's scrape with its body compressed.
func TestJoinPacked(t *testing.T) {
	c, err := NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := fixture.Read(t, fixture.NodeExporter)
	msgs, err := c.EncodeSplit(&Envelope{Job: "j", Instance: "i", Body: body}, 2000)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) < 2 {
		t.Fatalf("%d parts, want several", len(msgs))
	}
	var parts []*Envelope
	for _, m := range msgs {
		p, err := c.DecodePacked(m)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, p)
	}
	e, err := c.JoinPacked(parts)
	if err != nil {
		t.Fatal(err)
	}
	if e.Body != nil || !e.Packed() || e.BodySize() != len(body) {
		t.Fatalf("JoinPacked: Body %d bytes, packed %t, BodySize %d; want nil, true, %d", len(e.Body), e.Packed(), e.BodySize(), len(body))
	}
	got, err := c.AppendBody(nil, e)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Error("JoinPacked's body differs from the scrape's")
	}
}
