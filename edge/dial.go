package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/stream"
)

// Dial returns the Dialer of the config's poller_stream: a publisher on its stream, with
// a NATS Streaming client ID unique to the run, within connect_timeout (a JetStream
// stream is created first with create_stream).
func Dial(cfg *config.Config, logger *slog.Logger) Dialer {
	return func(ctx context.Context) (stream.Publisher, error) {
		if cfg.PollerStream == nil {
			return nil, errors.New("no poller_stream configured")
		}
		t, err := stream.Open(options(cfg, logger))
		if err != nil {
			return nil, err
		}
		p, err := t.Publisher(ctx)
		if errors.Is(err, stream.ErrNoStream) {
			err = fmt.Errorf("%w (or set poller_stream.create_stream: true to let scrape-once create it)", err)
		}
		return p, err
	}
}

// options are the stream options of the run's poller_stream.
func options(cfg *config.Config, logger *slog.Logger) stream.Options {
	o := cfg.StreamOptions(cfg.PollerStream, "scrape-once "+cfg.Identity, logger)
	o.ClientID = stream.ClientID(o.ClientID, cfg.Identity)
	o.PubAckWait = pubAckWait(cfg.RunTimeout.D())
	return o
}

// pubAckWait is how long a publish waits for its ack before the run tries it again: a
// quarter of the run, so that a lost ack (a server lost, a stream leader moving) leaves
// time for more tries; at least 1s, at most the client's default.
func pubAckWait(run time.Duration) time.Duration {
	return min(max(run/4, time.Second), stream.DefaultPubAckWait)
}
