package edge

import (
	"testing"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// TestCodecOptions checks body_compression reaches the Codec: the dictionary only when
// asked for, since drains before it cannot read it.
func TestCodecOptions(t *testing.T) {
	for _, tt := range []struct {
		key  string
		want envelope.Compression
	}{
		{"", envelope.CompressionZstd},
		{", body_compression: zstd", envelope.CompressionZstd},
		{", body_compression: zstd_dictionary", envelope.CompressionZstdDict},
	} {
		cfg, err := config.Parse([]byte("poller_stream: {cluster_id: c, urls: 'nats://127.0.0.1:4222'" + tt.key + "}\n"))
		if err != nil {
			t.Fatal(err)
		}
		opts, err := CodecOptions(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c, err := envelope.NewCodec(opts...)
		if err != nil {
			t.Fatal(err)
		}
		// A body that compresses: the recorded compression is then the setting's.
		msg, err := c.Encode(&envelope.Envelope{Body: fixture.Read(t, fixture.NodeExporter)})
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := zstdDictionary(t, msg); (got == envelope.DictionaryID) != (tt.want == envelope.CompressionZstdDict) {
			t.Errorf("%q: zstd frame names dictionary %d, want compression %v", tt.key, got, tt.want)
		}
	}
}
