package edge

import (
	"fmt"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// CodecOptions returns the envelope options poller_stream asks for: its
// body_compression. The caller adds its own (a signer).
func CodecOptions(cfg *config.Config) ([]envelope.Option, error) {
	if cfg.PollerStream == nil {
		return nil, nil
	}
	switch c := cfg.PollerStream.BodyCompression; c {
	case "", config.BodyCompressionZstd:
		return []envelope.Option{envelope.BodyCompression(envelope.CompressionZstd)}, nil
	case config.BodyCompressionZstdDictionary:
		return []envelope.Option{envelope.BodyCompression(envelope.CompressionZstdDict)}, nil
	default:
		return nil, fmt.Errorf("poller_stream.body_compression: unknown %q", c)
	}
}
