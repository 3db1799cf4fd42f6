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

// Dial returns the Dialer of the config's poller_stream: a NATS Streaming session with
// a client ID unique to the run, or a JetStream connection bound to the stream (created
// first with create_stream), each within connect_timeout.
func Dial(cfg *config.Config, logger *slog.Logger) Dialer {
	ps := cfg.PollerStream
	return func(ctx context.Context) (Conn, error) {
		if ps == nil {
			return nil, errors.New("no poller_stream configured")
		}
		ctx, cancel := context.WithTimeout(ctx, ps.ConnectTimeout.D())
		defer cancel()
		name := stream.ClientID(ps.ClientID, cfg.Identity)
		if !ps.IsJetStream() {
			s, err := stream.DialSTAN(ctx, stream.STANOptions{
				URLs:      ps.URLs,
				ClusterID: ps.ClusterID,
				ClientID:  name,
				Name:      "scrape-once " + cfg.Identity,
				Security:  ps.Security(),
				Logger:    logger,
			})
			if err != nil {
				return nil, err
			}
			return stanConn{s}, nil
		}
		j, err := stream.DialJetStream(ctx, jetStreamOptions(cfg, ps, name, logger))
		if errors.Is(err, stream.ErrNoStream) {
			err = fmt.Errorf("%w (or set poller_stream.create_stream: true to let scrape-once create it)", err)
		}
		if err != nil {
			return nil, err
		}
		warnStream(cfg, j.StreamConfig().Duplicates, j.StreamConfig().MaxAge, logger)
		return j, nil
	}
}

// jetStreamOptions are the options of a connection to the JetStream stream of s, which
// is created with create_stream: subjects <topic>.>, file storage, max_age, a
// duplicate window of cfg.DuplicateWindow, and its replicas.
func jetStreamOptions(cfg *config.Config, s *config.Stream, name string, logger *slog.Logger) stream.JetStreamOptions {
	o := cfg.JetStreamOptions(s, name, logger)
	o.PubAckWait = pubAckWait(cfg.RunTimeout.D())
	return o
}

// pubAckWait is how long a JetStream publish waits for its ack before the run tries it
// again: a quarter of the run, so that a lost ack (a server lost, a stream leader
// moving) leaves time for more tries; at least 1s, at most the client's default.
func pubAckWait(run time.Duration) time.Duration {
	return min(max(run/4, time.Second), stream.DefaultPubAckWait)
}

// warnStream logs what an existing stream weakens: a duplicate window shorter than a
// run, in which a retried publish may be stored twice, and a max age shorter than
// max_age, which drops scrapes the drain would still serve.
func warnStream(cfg *config.Config, duplicates, maxAge time.Duration, logger *slog.Logger) {
	if duplicates < cfg.RunTimeout.D() {
		logger.Warn("the JetStream stream's duplicate window is shorter than a run: a retried publish may be stored twice",
			"stream", cfg.PollerStream.StreamName, "duplicate_window", duplicates, "run_timeout", cfg.RunTimeout)
	}
	if maxAge > 0 && maxAge < cfg.MaxAge.D() {
		logger.Warn("the JetStream stream drops messages younger than max_age",
			"stream", cfg.PollerStream.StreamName, "stream_max_age", maxAge, "max_age", cfg.MaxAge)
	}
}

// stanConn is a STAN session as a Conn: NATS Streaming has no message IDs.
type stanConn struct{ *stream.STAN }

func (c stanConn) PublishAsyncMsg(subject string, data []byte, _ string, done func(error)) error {
	return c.PublishAsync(subject, data, done)
}
