package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/stan.go"
)

// Defaults for zero fields of both transports' subscribe options.
const (
	DefaultAckWait    = stan.DefaultAckWait // 30s
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
)

// Msg is one delivery of a message, from either transport's consumer.
type Msg struct {
	Data        []byte
	Subject     string    // the subject (channel) it was published on
	Sequence    uint64    // the channel's (JetStream: the stream's) sequence number
	Redelivered bool      // delivered before without an ack (to this or another subscription)
	Timestamp   time.Time // when the server received it

	// Nak, when not nil, tells the server the message was not dealt with and is to
	// be redelivered, not before delay (at once for delay <= 0); unconfirmed, like
	// Ack. It is nil for NATS Streaming, which has no nak: the server redelivers a
	// message not acked after the subscription's AckWait.
	Nak func(delay time.Duration) error
	// Term, when not nil, tells the server never to redeliver the message (a poison
	// message that no retry can deal with): it stays in the stream but the durable
	// moves past it. It is nil for NATS Streaming, which has no term: Ack is the only
	// way to stop the redelivery.
	Term func() error

	ack func() error // the transport's
}

// Ack acknowledges the message. It is safe from any goroutine, at any later time, and
// more than once. A nil error means the ack was sent: neither transport confirms acks,
// and one that is lost makes the server redeliver the message after AckWait.
//
// After the subscription the message came from was lost or closed (a lost session, or
// the end of the consumer), Ack returns an error wrapping ErrClosed and sends nothing:
// the server redelivers the message to the next subscription of the durable, so the
// caller sees it again. While NATS is disconnected, Ack returns an error wrapping
// ErrUnreachable; the server redelivers the message after AckWait.
func (m *Msg) Ack() error {
	if m == nil || m.ack == nil {
		return errors.New("stream: ack of a message not delivered by Consume")
	}
	return m.ack()
}

// State is the consumer's connection state, as Consume reports it.
type State struct {
	// Connected is true while subscribed with NATS up.
	Connected bool
	// Err says why not connected (nil when Connected): it wraps ErrUnreachable
	// (connect failed, NATS disconnected, session lost; with ErrAuth too when the
	// server refused the credentials or TLS failed), ErrClientIDInUse, or ErrClosed
	// (the session or Consume ended); or it names a TLS or credentials file that could
	// not be read or used.
	Err error
}

// consumer keeps a durable subscription up across faults and hands its deliveries to
// handle: the loop both transports share (Consume, ConsumeJetStream). What differs
// between them is how a subscription is made and followed: durable and subscription.
type consumer struct {
	d       durable
	log     *slog.Logger
	handle  func(*Msg)
	state   func(State)
	changed chan struct{} // a NATS connection of ours went down or up
	backoff backoff

	mu   sync.Mutex // held while handle runs
	gen  int        // counts subscriptions; deliveries of the current one go to handle
	live bool       // the current subscription's deliveries are wanted
}

// durable is a transport's way to subscribe to a durable.
type durable interface {
	// prepare checks the options and fills in their defaults, and returns the
	// consumer's logger and backoff bounds.
	prepare() (log *slog.Logger, minBackoff, maxBackoff time.Duration, err error)
	// subscribe connects (with c.connChanged told of each NATS disconnect and
	// reconnect) and subscribes, starting its deliveries with c.begin and passing
	// each to c.deliver; on failure it calls c.retire if it began.
	subscribe(ctx context.Context, c *consumer) (subscription, error)
	// words are what the consumer logs of it.
	words() consumerWords
}

// consumerWords are the log messages of a transport's consumer.
type consumerWords struct {
	failed  string // an attempt failed, retrying
	up      string // subscribed
	upAttrs []any  // logged with up
	lost    string // the subscription was lost, subscribing again
}

// subscription is one subscription a durable made, as the consumer follows it.
type subscription interface {
	conn() *nats.Conn
	where() string // the servers, redacted, for messages
	// lost is closed once the subscription is lost; err says why then.
	lost() <-chan struct{}
	err() error
	// close ends the subscription when the consumer stops, keeping the durable.
	close()
	// abandon ends a subscription that was lost.
	abandon()
}

// consume runs a consumer of d until ctx ends: Consume and ConsumeJetStream.
func consume(ctx context.Context, d durable, handle func(*Msg), state func(State)) error {
	if handle == nil {
		return errors.New("stream: consume without a message handler")
	}
	log, minBackoff, maxBackoff, err := d.prepare()
	if err != nil {
		return err
	}
	c := &consumer{
		d:       d,
		log:     log,
		handle:  handle,
		state:   state,
		changed: make(chan struct{}, 1),
		backoff: backoff{min: minBackoff, max: maxBackoff},
	}
	c.run(ctx)
	return nil
}

func (c *consumer) run(ctx context.Context) {
	w := c.d.words()
	for {
		s, err := c.d.subscribe(ctx, c)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			wait := c.backoff.next()
			switch {
			case errors.Is(err, ErrClientIDInUse):
				c.log.Warn("NATS Streaming client ID in use by a live connection (another consumer with this client ID?); retrying",
					"err", err, "retry_in", wait.Round(time.Millisecond))
			case errors.Is(err, ErrAuth):
				c.log.Warn("NATS authentication or TLS failed; retrying",
					"reason", AuthReason(err), "err", err, "retry_in", wait.Round(time.Millisecond))
			default:
				c.log.Warn(w.failed, "err", err, "retry_in", wait.Round(time.Millisecond))
			}
			c.report(State{Err: err})
			if !sleep(ctx, wait) {
				break
			}
			continue
		}
		c.backoff.reset()
		c.log.Info(w.up, append([]any{"url", s.conn().ConnectedUrlRedacted()}, w.upAttrs...)...)
		c.report(State{Connected: true})
		if !c.serve(ctx, s) {
			break
		}
		wait := c.backoff.next()
		c.log.Warn(w.lost, "err", s.err(), "retry_in", wait.Round(time.Millisecond))
		c.report(State{Err: s.err()})
		if !sleep(ctx, wait) {
			break
		}
	}
	c.report(State{Err: fmt.Errorf("%w: consumer stopped: %w", ErrClosed, context.Cause(ctx))})
}

// serve follows s until ctx ends, when it closes s and returns false, or until s is
// lost, when it abandons s and returns true.
func (c *consumer) serve(ctx context.Context, s subscription) (lost bool) {
	connected := true
	for {
		select {
		case <-ctx.Done():
			c.retire()
			s.close()
			return false
		case <-s.lost():
			c.retire()
			s.abandon()
			return true
		case <-c.changed:
			if now := s.conn().IsConnected(); now != connected {
				connected = now
				if now {
					c.report(State{Connected: true})
				} else {
					c.report(State{Err: fmt.Errorf("%w: disconnected from NATS at %s; reconnecting", ErrUnreachable, s.where())})
				}
			}
		}
	}
}

// begin makes the next subscription the one whose deliveries go to handle, and
// returns its generation for deliver. Call it before subscribing: the first delivery
// can precede the reply.
func (c *consumer) begin() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.live = true
	return c.gen
}

// deliver passes m, of subscription generation gen, to handle, unless that
// subscription has been retired: the server then redelivers m.
func (c *consumer) deliver(gen int, m *Msg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live || c.gen != gen {
		return
	}
	c.handle(m)
}

// retire stops deliveries to handle, waiting for a running one to return.
func (c *consumer) retire() {
	c.mu.Lock()
	c.live = false
	c.mu.Unlock()
}

// connChanged runs on nats.go's callback goroutine.
func (c *consumer) connChanged() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *consumer) report(st State) {
	if c.state != nil {
		c.state(st)
	}
}

// backoffBounds fills in the default backoff bounds and checks them: both the STAN
// and the JetStream consumer take them.
func backoffBounds(lo, hi time.Duration) (time.Duration, time.Duration, error) {
	if lo < 0 || hi < 0 {
		return 0, 0, fmt.Errorf("stream: negative backoff %v..%v", lo, hi)
	}
	if lo == 0 {
		lo = DefaultMinBackoff
		if hi > 0 {
			lo = min(lo, hi)
		}
	}
	if hi == 0 {
		hi = max(DefaultMaxBackoff, lo)
	}
	if lo > hi {
		return 0, 0, fmt.Errorf("stream: MinBackoff %v above MaxBackoff %v", lo, hi)
	}
	return lo, hi, nil
}

// backoff is capped exponential backoff with jitter: the nth wait is drawn uniformly
// between half and all of min*2^n, capped at max. The zero value waits 0.
type backoff struct {
	min, max time.Duration
	cur      time.Duration // before jitter; 0: min
}

func (b *backoff) next() time.Duration {
	d := b.cur
	if d == 0 {
		d = b.min
	}
	if d >= b.max/2 {
		b.cur = b.max
	} else {
		b.cur = 2 * d
	}
	if d <= 0 {
		return 0
	}
	return d - rand.N(d/2+1)
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits d or until ctx ends, and reports whether it waited d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
