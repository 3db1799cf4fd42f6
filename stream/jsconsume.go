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
// Nak or Term it later, from any goroutine); state gets every failed attempt,
// the consumer up, NATS lost and back, the consumer lost, and a last State{Err:
// ErrClosed...}; faults (connect failures, ErrAuth, a missing stream, the consumer
// deleted) are logged, reported and retried with capped exponential backoff; a pull
// request lost or unanswered, as while the consumer's leader is elected, is made
// again within 2 s (twice pullHeartbeat). When ctx
// ends it stops pulling and closes the connection without deleting the durable (whose
// un-acked messages the server redelivers later) and returns nil; it returns an error
// only for an invalid configuration.
func ConsumeJetStream(ctx context.Context, o JetStreamSubscribeOptions, handle func(*Msg), state func(State)) error {
	return consume(ctx, &jsDurable{o}, handle, state)
}

// jsDurable is ConsumeJetStream's durable: a durable pull consumer.
type jsDurable struct{ o JetStreamSubscribeOptions }

func (d *jsDurable) prepare() (*slog.Logger, time.Duration, time.Duration, error) {
	if err := d.o.normalize(); err != nil {
		return nil, 0, 0, err
	}
	return d.o.Logger.With("stream", d.o.Stream, "durable", d.o.Durable), d.o.MinBackoff, d.o.MaxBackoff, nil
}

func (d *jsDurable) words() consumerWords {
	return consumerWords{
		failed:  "could not consume from JetStream; retrying",
		up:      "consuming from JetStream",
		upAttrs: []any{"max_ack_pending", d.o.MaxAckPending, "ack_wait", d.o.AckWait},
		lost:    "JetStream consumer lost; consuming again",
	}
}

// subscribe connects, creates or updates the consumer, and consumes from it.
func (d *jsDurable) subscribe(ctx context.Context, c *consumer) (subscription, error) {
	o := d.o
	j, err := dialJetStream(ctx, o.JetStreamOptions, c.connChanged)
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	cons, err := j.stream.CreateOrUpdateConsumer(actx, jetstream.ConsumerConfig{
		Durable:       o.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		FilterSubject: o.Subject + ".>",
		AckWait:       o.AckWait,
		MaxAckPending: o.MaxAckPending,
	})
	if err != nil {
		_ = j.Close()
		what := fmt.Sprintf("durable %q on stream %q at %s", o.Durable, o.Stream, j.where)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrConnectionClosed) {
			return nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, what, err)
		}
		return nil, fmt.Errorf("stream: %s: %w", what, err)
	}
	if info := cons.CachedInfo(); info != nil && info.NumAckPending > 0 && o.Unacknowledged != nil {
		o.Unacknowledged(info.Delivered.Stream, info.NumAckPending)
	}
	sub := &jsSubscription{j: j, log: c.log, durable: o.Durable, done: make(chan struct{})}
	gen := c.begin()
	cc, err := cons.Consume(func(m jetstream.Msg) { c.deliver(gen, jsMsg(m)) },
		jetstream.PullMaxMessages(min(o.MaxAckPending, 500)),
		jetstream.PullHeartbeat(pullHeartbeat),
		jetstream.ConsumeErrHandler(sub.onConsumeError))
	if err != nil {
		c.retire()
		_ = j.Close()
		return nil, fmt.Errorf("stream: consume durable %q on stream %q at %s: %w", o.Durable, o.Stream, j.where, err)
	}
	sub.cc = cc
	go sub.watch()
	return sub, nil
}

// jsMsg is a delivery of a JetStream consumer as a Msg.
func jsMsg(m jetstream.Msg) *Msg {
	msg := &Msg{Data: m.Data(), Subject: m.Subject()}
	if md, err := m.Metadata(); err == nil {
		msg.Sequence = md.Sequence.Stream
		msg.Redelivered = md.NumDelivered > 1
		msg.Timestamp = md.Timestamp
	}
	msg.ack = func() error { return jsAckError("ack", msg, m.Ack()) }
	msg.Nak = func(d time.Duration) error {
		if d <= 0 {
			return jsAckError("nak", msg, m.Nak())
		}
		return jsAckError("nak", msg, m.NakWithDelay(d))
	}
	msg.Term = func() error { return jsAckError("term", msg, m.Term()) }
	return msg
}

// jsSubscription is a pull consumer being consumed; it is lost when the consumer is
// deleted, its stream is gone, or the consuming stops by itself.
type jsSubscription struct {
	j       *JetStream
	cc      jetstream.ConsumeContext
	log     *slog.Logger
	durable string

	done chan struct{} // closed when lost
	once sync.Once
	why  error
}

func (t *jsSubscription) conn() *nats.Conn      { return t.j.nc }
func (t *jsSubscription) where() string         { return t.j.where }
func (t *jsSubscription) lost() <-chan struct{} { return t.done }
func (t *jsSubscription) err() error            { <-t.done; return t.why }

func (t *jsSubscription) end(err error) {
	t.once.Do(func() {
		t.why = err
		close(t.done)
	})
}

// watch ends the subscription when the consuming stops by itself (or by close).
func (t *jsSubscription) watch() {
	select {
	case <-t.cc.Closed():
		t.end(fmt.Errorf("%w: JetStream consumer %q on stream %q stopped", ErrUnreachable, t.durable, t.j.Stream()))
	case <-t.done:
	}
}

// onConsumeError runs on nats.go's goroutines; terminal errors end the subscription.
func (t *jsSubscription) onConsumeError(_ jetstream.ConsumeContext, err error) {
	switch {
	case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound),
		errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrConnectionClosed):
		t.end(fmt.Errorf("%w: JetStream consumer %q on stream %q: %w", ErrUnreachable, t.durable, t.j.Stream(), err))
	default:
		t.log.Debug("JetStream consume error", "err", err)
	}
}

func (t *jsSubscription) close() {
	t.cc.Stop()
	_ = t.j.Close()
	t.log.Info("stopped consuming from JetStream, keeping the durable consumer")
}

func (t *jsSubscription) abandon() {
	t.cc.Stop() // a no-op if it stopped by itself
	_ = t.j.Close()
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
