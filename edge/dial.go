package edge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus-streams/prometheus-streams/stream"
)

// Dial returns the Dialer of stream s for a run of o: a publisher on its stream, with a
// NATS Streaming client ID unique to the run, within s.ConnectTimeout (a JetStream
// stream is created first with s.Create). Each publish waits for its ack a share of
// o.RunTimeout before it is tried again.
func Dial(s stream.Options, o Options) Dialer {
	return func(ctx context.Context) (stream.Publisher, error) {
		t, err := stream.Open(publisherOptions(s, o))
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

// publisherOptions are s as a run of o publishes on it.
func publisherOptions(s stream.Options, o Options) stream.Options {
	s.ClientID = stream.ClientID(s.ClientID, o.Identity)
	s.PubAckWait = pubAckWait(o.RunTimeout)
	return s
}

// pubAckWait is how long a publish waits for its ack before the run tries it again: a
// quarter of the run, so that a lost ack (a server lost, a stream leader moving) leaves
// time for more tries; at least 1s, at most the client's default.
func pubAckWait(run time.Duration) time.Duration {
	return min(max(run/4, time.Second), stream.DefaultPubAckWait)
}
