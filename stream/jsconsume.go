package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults for zero JetStreamSubscribeOptions fields.
const DefaultMaxAckPending = 1024

// pullHeartbeat is the idle heartbeat asked for with each pull request. nats.go makes
// a pull again when two are missed, and only then: after a pull that no server
// answered (no responders: the consumer's leader being elected, as when the server
// leading it died, or just created and not yet known to the server this connection
// is on) or that was lost with a server. With nats.go's default, half the 30 s
// expiry, the consumer would stall 30 s.
const pullHeartbeat = time.Second

// JetStreamSubscribeOptions configures ConsumeJetStream. Zero fields take the defaults
// noted.
type JetStreamSubscribeOptions struct {
	// JetStreamOptions says where to connect, which stream to read and, by Subject,
	// which of its subjects (Subject+".>"). With Create the stream is created if
	// missing. PubAckWait and MaxPubAcksPending do not matter here.
	JetStreamOptions
	// Durable names the durable pull consumer, whose position the server keeps;
	// required, no '.', '*', '>' or white space. Consumers with the same Durable
	// share the messages (each to one of them).
	Durable string
	// MaxAckPending is how many delivered messages may await their ack before the
	// server waits for one (default DefaultMaxAckPending).
	MaxAckPending int
	// AckWait is how long the server waits for an ack before redelivering a message
	// (default DefaultAckWait).
	AckWait time.Duration
	// MinBackoff and MaxBackoff bound the wait before another attempt after a failed
	// connect or a lost consumer, as for Consume (defaults DefaultMinBackoff,
	// DefaultMaxBackoff).
	MinBackoff, MaxBackoff time.Duration
	// Unacknowledged, when not nil, is told at each subscription, before the first
	// message, how many messages up to stream sequence upTo were delivered before and
	// are not acknowledged: the server redelivers those only once their AckWait has
	// passed, while newer messages come at once.
	Unacknowledged func(upTo uint64, n int)
}

func (o *JetStreamSubscribeOptions) normalize() error {
	if err := o.JetStreamOptions.normalize(); err != nil {
		return err
	}
	switch {
	case o.Durable == "":
		return errors.New("stream: no durable name")
	case strings.ContainsAny(o.Durable, ".*>/\\") || strings.ContainsFunc(o.Durable, isSpace):
		return fmt.Errorf("stream: invalid durable name %q", o.Durable)
	case o.MaxAckPending < 0:
		return fmt.Errorf("stream: invalid MaxAckPending %d", o.MaxAckPending)
	case o.AckWait < 0:
		return fmt.Errorf("stream: invalid AckWait %v", o.AckWait)
	}
	if o.MaxAckPending == 0 {
		o.MaxAckPending = DefaultMaxAckPending
	}
	if o.AckWait == 0 {
		o.AckWait = DefaultAckWait
	}
	var err error
	o.MinBackoff, o.MaxBackoff, err = backoffBounds(o.MinBackoff, o.MaxBackoff)
	return err
}

// ConsumeJetStream is Consume for JetStream: it connects, creates or updates the
// durable pull consumer o.Durable on o.Stream (explicit acks, filter o.Subject+".>",
// delivering from the start of the stream when new, AckWait, MaxAckPending), and
// calls handle for each delivery, in stream order, until ctx ends. The contract is
// Consume's: handle is called from one goroutine at a time, never after
// ConsumeJetStream returns, and must return promptly, handing the Msg on (Ack,
// NakWithDelay or Term it later, from any goroutine); state gets every failed attempt,
// the consumer up, NATS lost and back, the consumer lost, and a last State{Err:
// ErrClosed...}; faults (connect failures, ErrAuth, a missing stream, the consumer
// deleted) are logged, reported and retried with capped exponential backoff; a pull
// request lost or unanswered, as while the consumer's leader is elected, is made
// again within 2 s (twice pullHeartbeat). When ctx
// ends it stops pulling and closes the connection without deleting the durable (whose
// un-acked messages the server redelivers later) and returns nil; it returns an error
// only for an invalid configuration.
func ConsumeJetStream(ctx context.Context, o JetStreamSubscribeOptions, handle func(*Msg), state func(State)) error {
	if handle == nil {
		return errors.New("stream: ConsumeJetStream without a message handler")
	}
	if err := o.normalize(); err != nil {
		return err
	}
	c := &jsConsumer{
		o:       o,
		log:     o.Logger.With("stream", o.Stream, "durable", o.Durable),
		handle:  handle,
		state:   state,
		changed: make(chan struct{}, 1),
		lost:    make(chan error, 1),
		backoff: backoff{min: o.MinBackoff, max: o.MaxBackoff},
	}
	c.run(ctx)
	return nil
}

type jsConsumer struct {
	o       JetStreamSubscribeOptions
	log     *slog.Logger
	handle  func(*Msg)
	state   func(State)
	changed chan struct{}
	lost    chan error // the consumer is gone (deleted, stream gone)
	backoff backoff

	mu   sync.Mutex // held while handle runs
	gen  int        // counts subscriptions; deliveries of the current one go to handle
	live bool       // the current subscription's deliveries are wanted
}

func (c *jsConsumer) run(ctx context.Context) {
	for {
		j, cc, err := c.subscribe(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			wait := c.backoff.next()
			if errors.Is(err, ErrAuth) {
				c.log.Warn("NATS authentication or TLS failed; retrying", "reason", AuthReason(err), "err", err, "retry_in", wait.Round(time.Millisecond))
			} else {
				c.log.Warn("could not consume from JetStream; retrying", "err", err, "retry_in", wait.Round(time.Millisecond))
			}
			c.report(State{Err: err})
			if !sleep(ctx, wait) {
				break
			}
			continue
		}
		c.backoff.reset()
		c.log.Info("consuming from JetStream", "url", j.nc.ConnectedUrlRedacted(),
			"max_ack_pending", c.o.MaxAckPending, "ack_wait", c.o.AckWait)
		c.report(State{Connected: true})
		lostErr := c.serve(ctx, j, cc)
		if lostErr == nil {
			break
		}
		wait := c.backoff.next()
		c.log.Warn("JetStream consumer lost; consuming again", "err", lostErr, "retry_in", wait.Round(time.Millisecond))
		c.report(State{Err: lostErr})
		if !sleep(ctx, wait) {
			break
		}
	}
	c.report(State{Err: fmt.Errorf("%w: consumer stopped: %w", ErrClosed, context.Cause(ctx))})
}

func (c *jsConsumer) subscribe(ctx context.Context) (*JetStream, jetstream.ConsumeContext, error) {
	j, err := dialJetStream(ctx, c.o.JetStreamOptions, c.connChanged)
	if err != nil {
		return nil, nil, err
	}
	actx, cancel := context.WithTimeout(ctx, c.o.ConnectTimeout)
	defer cancel()
	cons, err := j.stream.CreateOrUpdateConsumer(actx, jetstream.ConsumerConfig{
		Durable:       c.o.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		FilterSubject: c.o.Subject + ".>",
		AckWait:       c.o.AckWait,
		MaxAckPending: c.o.MaxAckPending,
	})
	if err != nil {
		_ = j.Close()
		what := fmt.Sprintf("durable %q on stream %q at %s", c.o.Durable, c.o.Stream, j.where)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrConnectionClosed) {
			return nil, nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, what, err)
		}
		return nil, nil, fmt.Errorf("stream: %s: %w", what, err)
	}
	if info := cons.CachedInfo(); info != nil && info.NumAckPending > 0 && c.o.Unacknowledged != nil {
		c.o.Unacknowledged(info.Delivered.Stream, info.NumAckPending)
	}
	// Drain a stale loss of a previous consumer.
	select {
	case <-c.lost:
	default:
	}
	c.mu.Lock()
	c.gen++
	gen := c.gen
	c.live = true
	c.mu.Unlock()
	cc, err := cons.Consume(func(m jetstream.Msg) { c.deliver(gen, m) },
		jetstream.PullMaxMessages(min(c.o.MaxAckPending, 500)),
		jetstream.PullHeartbeat(pullHeartbeat),
		jetstream.ConsumeErrHandler(c.onConsumeError))
	if err != nil {
		c.retire()
		_ = j.Close()
		return nil, nil, fmt.Errorf("stream: consume durable %q on stream %q at %s: %w", c.o.Durable, c.o.Stream, j.where, err)
	}
	return j, cc, nil
}

// serve follows the consumer until ctx ends (returns nil) or it is lost (returns why).
func (c *jsConsumer) serve(ctx context.Context, j *JetStream, cc jetstream.ConsumeContext) error {
	connected := true
	for {
		select {
		case <-ctx.Done():
			c.retire()
			cc.Stop()
			_ = j.Close()
			c.log.Info("stopped consuming from JetStream, keeping the durable consumer")
			return nil
		case err := <-c.lost:
			c.retire()
			cc.Stop()
			_ = j.Close()
			return fmt.Errorf("%w: JetStream consumer %q on stream %q: %w", ErrUnreachable, c.o.Durable, c.o.Stream, err)
		case <-cc.Closed():
			c.retire()
			_ = j.Close()
			return fmt.Errorf("%w: JetStream consumer %q on stream %q stopped", ErrUnreachable, c.o.Durable, c.o.Stream)
		case <-c.changed:
			if now := j.nc.IsConnected(); now != connected {
				connected = now
				if now {
					c.report(State{Connected: true})
				} else {
					c.report(State{Err: fmt.Errorf("%w: disconnected from NATS at %s; reconnecting", ErrUnreachable, j.where)})
				}
			}
		}
	}
}

// onConsumeError runs on nats.go's goroutines; terminal errors end the consumer.
func (c *jsConsumer) onConsumeError(_ jetstream.ConsumeContext, err error) {
	switch {
	case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound),
		errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrConnectionClosed):
		select {
		case c.lost <- err:
		default:
		}
	default:
		c.log.Debug("JetStream consume error", "err", err)
	}
}

func (c *jsConsumer) deliver(gen int, m jetstream.Msg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live || c.gen != gen {
		return // retired: the server redelivers it after AckWait
	}
	msg := &Msg{Data: m.Data(), Subject: m.Subject(), jsm: m}
	if md, err := m.Metadata(); err == nil {
		msg.Sequence = md.Sequence.Stream
		msg.Redelivered = md.NumDelivered > 1
		msg.Timestamp = md.Timestamp
	}
	c.handle(msg)
}

func (c *jsConsumer) retire() {
	c.mu.Lock()
	c.live = false
	c.mu.Unlock()
}

func (c *jsConsumer) connChanged() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *jsConsumer) report(st State) {
	if c.state != nil {
		c.state(st)
	}
}

// jsAckError wraps the error of an ack, nak or term of a JetStream message.
func jsAckError(what string, m *Msg, err error) error {
	switch {
	case err == nil, errors.Is(err, jetstream.ErrMsgAlreadyAckd): // acked (or nakked, termed) before
		return nil
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, jetstream.ErrMsgNotBound):
		return fmt.Errorf("stream: %s %q #%d: %w: %w", what, m.Subject, m.Sequence, ErrClosed, err)
	case errors.Is(err, nats.ErrReconnectBufExceeded):
		return fmt.Errorf("%w: %s %q #%d while disconnected: %w", ErrUnreachable, what, m.Subject, m.Sequence, err)
	default:
		return fmt.Errorf("stream: %s %q #%d: %w", what, m.Subject, m.Sequence, err)
	}
}
