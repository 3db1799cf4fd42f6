package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// legacy builds a message as the earlier system published it.
func legacy(t *testing.T, job, instance string, ts int64, body []byte) []byte {
	t.Helper()
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	_, _ = zw.Write(body)
	_ = zw.Close()
	b, err := json.Marshal(legacyMessage{Job: job, Instance: instance, Time: ts, Publisher: "old-edge", Scrape: z.Bytes()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeLegacy(t *testing.T) {
	c, err := NewCodec(MaxBodySize(1 << 20))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := fixture.Read(t, fixture.NodeExporter)
	msg := legacy(t, "node", "host1:9100", 1700000000, body)
	// The earlier system's messages are refused by Decode, with a reason that says what
	// they look like, and read by DecodeLegacy.
	if _, err := c.Decode(msg); !errors.Is(err, ErrNotEnvelope) {
		t.Fatalf("Decode of a legacy message: %v", err)
	}
	e, err := c.DecodeLegacy(msg)
	if err != nil {
		t.Fatal(err)
	}
	if e.Job != "node" || e.Instance != "host1:9100" || e.Publisher != "old-edge" || !e.Start.Equal(time.Unix(1700000000, 0)) ||
		!bytes.Equal(e.Body, body) || e.Series != 507 || e.ContentType != LegacyContentType || e.Error != "" {
		t.Errorf("decoded %+v", e)
	}

	for name, tc := range map[string]struct {
		msg  []byte
		want error
	}{
		"garbage":      {[]byte("garbage"), ErrNotEnvelope},
		"other json":   {[]byte(`{"hello":"world"}`), ErrNotEnvelope},
		"no time":      {[]byte(`{"job":"j","instance":"i","Scrape":""}`), ErrNotEnvelope},
		"bad gzip":     {[]byte(`{"job":"j","instance":"i","time":1700000000,"Scrape":"H4sI"}`), ErrCorrupt},
		"not base64":   {[]byte(`{"job":"j","instance":"i","time":1700000000,"Scrape":"!!"}`), ErrNotEnvelope},
		"too large":    {legacy(t, "j", "i", 1700000000, bytes.Repeat([]byte("a 1\n"), 1<<19)), ErrTooLarge},
		"empty object": {[]byte(`{}`), ErrNotEnvelope},
	} {
		if _, err := c.DecodeLegacy(tc.msg); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

// TestLegacyBomb: a legacy message whose gzip stream inflates a thousandfold is read
// only to MaxLegacyBodySize, whatever the codec's own limit, and refused as too large.
func TestLegacyBomb(t *testing.T) {
	c, err := NewCodec() // the drain's: 256 MiB for envelopes
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bomb := legacy(t, "j", "i", 1700000000, make([]byte, MaxLegacyBodySize+1<<20))
	if len(bomb) > 256<<10 {
		t.Fatalf("the bomb is %d bytes", len(bomb))
	}
	if _, err := c.DecodeLegacy(bomb); !errors.Is(err, ErrTooLarge) {
		t.Errorf("DecodeLegacy of a bomb: %v, want ErrTooLarge", err)
	}
}
