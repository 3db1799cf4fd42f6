package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/stan.go"
)

// Defaults for zero SubscribeOptions fields.
const (
	DefaultMaxInflight  = stan.DefaultMaxInflight // 1024
	DefaultAckWait      = stan.DefaultAckWait     // 30s
	DefaultPingInterval = 5 * time.Second
	DefaultPingMaxOut   = 3
	DefaultMinBackoff   = 100 * time.Millisecond
	DefaultMaxBackoff   = 30 * time.Second
)

// Msg is one delivery of a message.
type Msg struct {
	Data        []byte
	Subject     string    // the subject (channel) it was published on
	Sequence    uint64    // the channel's (JetStream: the stream's) sequence number
	Redelivered bool      // delivered before without an ack (to this or another subscription)
	Timestamp   time.Time // when the server received it

	raw *stan.Msg
	s   *STAN // the session of the subscription it came from

	jsm jetstream.Msg // set instead of raw for a ConsumeJetStream delivery
}

// Ack acknowledges the message. It is safe from any goroutine, at any later time, and
// more than once. A nil error means the ack was sent: NATS Streaming does not confirm
// acks, and one that is lost makes the server redeliver the message after AckWait.
//
// After the subscription the message came from was lost or closed (a lost session, or
// the end of Consume), Ack returns an error wrapping ErrClosed and sends nothing: the
// server redelivers the message to the next subscription of the durable, so the caller
// sees it again. While NATS is disconnected, Ack returns an error wrapping
// ErrUnreachable; the server redelivers the message after AckWait.
func (m *Msg) Ack() error {
	if m != nil && m.jsm != nil {
		return jsAckError("ack", m, m.jsm.Ack())
	}
	if m == nil || m.raw == nil {
		return errors.New("stream: ack of a message not delivered by Consume")
	}
	return m.s.ack(m.raw)
}

// NakWithDelay tells the server the message was not dealt with and is to be
// redelivered, not before d (at once for d <= 0). For a JetStream message (from
// ConsumeJetStream) it sends a nak, unconfirmed like Ack.
//
// NATS Streaming has no nak: for a message from Consume this sends nothing and
// returns nil, and the server redelivers the message after the subscription's AckWait,
// whatever d.
func (m *Msg) NakWithDelay(d time.Duration) error {
	if m != nil && m.jsm != nil {
		if d <= 0 {
			return jsAckError("nak", m, m.jsm.Nak())
		}
		return jsAckError("nak", m, m.jsm.NakWithDelay(d))
	}
	if m == nil || m.raw == nil {
		return errors.New("stream: nak of a message not delivered by Consume")
	}
	return nil
}

// Term tells the server never to redeliver the message (a poison message that no
// retry can deal with). For a JetStream message it sends a term: the message stays in
// the stream but the durable moves past it.
//
// NATS Streaming has no term: for a message from Consume, Term acks the message (the
// only way to stop its redelivery), with Ack's result.
func (m *Msg) Term() error {
	if m != nil && m.jsm != nil {
		return jsAckError("term", m, m.jsm.Term())
	}
	return m.Ack()
}

// ack acknowledges m, received on this session.
func (s *STAN) ack(m *stan.Msg) error {
	select {
	case <-s.done:
		return fmt.Errorf("stream: ack %q #%d: %w", m.Subject, m.Sequence, s.Err())
	default:
	}
	err := m.Ack()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, stan.ErrBadConnection), errors.Is(err, stan.ErrBadSubscription),
		errors.Is(err, stan.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionClosed):
		return fmt.Errorf("stream: ack %q #%d: %w", m.Subject, m.Sequence, s.closedError(err))
	case errors.Is(err, nats.ErrReconnectBufExceeded):
		return fmt.Errorf("%w: ack %q #%d while disconnected from %s: %w", ErrUnreachable, m.Subject, m.Sequence, s.where, err)
	default:
		return fmt.Errorf("stream: ack %q #%d: %w", m.Subject, m.Sequence, err)
	}
}

// SubscribeOptions configures Consume. Zero fields take the defaults noted.
type SubscribeOptions struct {
	// STANOptions says where and as whom to connect. PubAckWait and
	// MaxPubAcksInflight do not matter here. ClientID must be the same on every run
	// of a consumer: a durable subscription outside a queue group belongs to the
	// client ID and the durable name together. It must also be unique among live
	// connections, so each member of a queue group has its own.
	STANOptions
	// Subject is the channel to consume; required, no wildcards.
	Subject string
	// DurableName names the durable subscription, whose position the server keeps
	// across connections; required, no ':'.
	DurableName string
	// QueueGroup, if set, makes the subscription a durable queue group: the
	// consumers with the same QueueGroup and DurableName share the channel's
	// messages, each message going to one of them (again to another if it is not
	// acked in time, or if its consumer leaves without acking it).
	QueueGroup string
	// MaxInflight is how many delivered messages may await their ack before the
	// server waits for one (default DefaultMaxInflight).
	MaxInflight int
	// AckWait is how long the server waits for an ack before redelivering a message;
	// whole seconds, at least 1s (default DefaultAckWait).
	AckWait time.Duration
	// PingInterval and PingMaxOut: the client pings the server every PingInterval
	// (whole seconds, at least 1s) and gives the session up as lost after PingMaxOut
	// pings (at least 2) without an answer, so a lost server is noticed within about
	// PingInterval*(PingMaxOut+1) (defaults DefaultPingInterval, DefaultPingMaxOut).
	PingInterval time.Duration
	PingMaxOut   int
	// MinBackoff and MaxBackoff bound the wait before another attempt after a
	// failed connect or a lost session: it starts at MinBackoff and doubles to at
	// most MaxBackoff, each wait drawn between half and all of it (defaults
	// DefaultMinBackoff, DefaultMaxBackoff).
	MinBackoff, MaxBackoff time.Duration
}

func (o *SubscribeOptions) normalize() error {
	if err := o.STANOptions.normalize(); err != nil {
		return err
	}
	if err := validChannel(o.Subject); err != nil {
		return err
	}
	switch {
	case o.DurableName == "":
		return errors.New("stream: no durable name")
	case strings.Contains(o.DurableName, ":"):
		return fmt.Errorf("stream: invalid durable name %q: ':' not allowed", o.DurableName)
	case o.MaxInflight < 0 || o.MaxInflight > math.MaxInt32:
		return fmt.Errorf("stream: invalid MaxInflight %d", o.MaxInflight)
	case o.AckWait < 0 || o.AckWait > 0 && o.AckWait < time.Second || o.AckWait/time.Second > math.MaxInt32:
		return fmt.Errorf("stream: invalid AckWait %v: whole seconds, at least 1s", o.AckWait)
	case o.PingInterval < 0 || o.PingInterval > 0 && o.PingInterval < time.Second || o.PingInterval/time.Second > math.MaxInt32:
		return fmt.Errorf("stream: invalid PingInterval %v: whole seconds, at least 1s", o.PingInterval)
	case o.PingMaxOut < 0 || o.PingMaxOut == 1 || o.PingMaxOut > math.MaxInt32:
		return fmt.Errorf("stream: invalid PingMaxOut %d: at least 2", o.PingMaxOut)
	}
	if o.MaxInflight == 0 {
		o.MaxInflight = DefaultMaxInflight
	}
	if o.AckWait == 0 {
		o.AckWait = DefaultAckWait
	}
	if o.PingInterval == 0 {
		o.PingInterval = DefaultPingInterval
	}
	if o.PingMaxOut == 0 {
		o.PingMaxOut = DefaultPingMaxOut
	}
	var err error
	o.MinBackoff, o.MaxBackoff, err = backoffBounds(o.MinBackoff, o.MaxBackoff)
	return err
}

// validChannel checks a NATS Streaming channel name: dot-separated non-empty tokens,
// no wildcards, no '/' (the file store maps channels to directories), no white space.
func validChannel(subject string) error {
	bad := func(why string) error { return fmt.Errorf("stream: invalid subject %q: %s", subject, why) }
	if subject == "" {
		return errors.New("stream: no subject")
	}
	for tok := range strings.SplitSeq(subject, ".") {
		switch {
		case tok == "":
			return bad("empty token")
		case strings.ContainsAny(tok, "*>"):
			return bad("wildcards not allowed")
		case strings.Contains(tok, "/"):
			return bad("'/' not allowed")
		case strings.ContainsFunc(tok, unicode.IsSpace):
			return bad("white space not allowed")
		}
	}
	return nil
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

// Consume connects, subscribes durably with manual acks, and calls handle for each
// delivery until ctx ends. A new durable starts at the beginning of the channel (all
// messages it still holds); an existing one resumes after the last message it acked,
// the unacked ones first, redelivered.
//
// handle is called from one goroutine at a time, never after Consume returns; it must
// return promptly (hand the Msg to workers, who may Ack it later from any goroutine),
// as Consume waits for a running handle before it resubscribes or returns. A handle
// that cannot pass a message on (say its workers stopped with ctx) may drop it without
// an ack: the server redelivers it.
//
// state, if not nil, is called from Consume's goroutine, never concurrently, on each
// event: every failed attempt, the subscription made, NATS lost and back, the session
// lost, and a last State{Err: ErrClosed...} before Consume returns. It must not block.
// The session normally survives a NATS reconnect, also across a restart of a server
// with a persistent store, so Connected is reported again on reconnect; a server that
// restarted without its store has forgotten the client, which the next ping reveals
// (the session is then reported lost and Consume subscribes again).
//
// A failed connect or subscribe and a lost session (the server no longer answering
// pings, or no longer knowing the client after a restart without its store) are
// logged, reported through state and retried with capped exponential backoff: Consume
// does not return for a transient fault. A client ID in use by another live connection
// counts as one; a holder that is gone (killed process, lost host) does not hold it: the
// server pings the holder when the ID connects again, and replaces it when it does not
// answer within half a second. So are a refusal by the server (ErrAuth: credentials or
// TLS; logged with its reason) and an unreadable TLS or credentials file: each attempt
// reads the files of o.Security again, so fixing them (or the server) is enough.
//
// When ctx ends, Consume closes the connection without unsubscribing, so the durable
// keeps its position and the server redelivers the messages not acked, and returns
// nil; the close takes at most ConnectTimeout (plus a subscribe under way). Consume
// returns an error only for an invalid configuration.
func Consume(ctx context.Context, o SubscribeOptions, handle func(*Msg), state func(State)) error {
	if handle == nil {
		return errors.New("stream: Consume without a message handler")
	}
	if err := o.normalize(); err != nil {
		return err
	}
	log := o.Logger.With("client_id", o.ClientID, "subject", o.Subject, "durable", o.DurableName)
	if o.QueueGroup != "" {
		log = log.With("queue_group", o.QueueGroup)
	}
	c := &consumer{
		o:       o,
		log:     log,
		handle:  handle,
		state:   state,
		changed: make(chan struct{}, 1),
		backoff: backoff{min: o.MinBackoff, max: o.MaxBackoff},
	}
	c.run(ctx)
	return nil
}

// consumer is one Consume call.
type consumer struct {
	o       SubscribeOptions
	log     *slog.Logger
	handle  func(*Msg)
	state   func(State)
	changed chan struct{} // a NATS connection of ours went down or up
	backoff backoff

	mu  sync.Mutex // held while handle runs
	cur *STAN      // the session whose deliveries go to handle; nil: none
}

func (c *consumer) run(ctx context.Context) {
	for {
		s, err := c.subscribe(ctx)
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
				c.log.Warn("could not subscribe to NATS Streaming; retrying", "err", err, "retry_in", wait.Round(time.Millisecond))
			}
			c.report(State{Err: err})
			if !sleep(ctx, wait) {
				break
			}
			continue
		}
		c.backoff.reset()
		c.log.Info("subscribed to NATS Streaming", "url", s.nc.ConnectedUrlRedacted(),
			"max_inflight", c.o.MaxInflight, "ack_wait", c.o.AckWait)
		c.report(State{Connected: true})
		if !c.serve(ctx, s) {
			break
		}
		wait := c.backoff.next()
		c.log.Warn("subscription lost with the session; resubscribing", "err", s.Err(), "retry_in", wait.Round(time.Millisecond))
		c.report(State{Err: s.Err()})
		if !sleep(ctx, wait) {
			break
		}
	}
	c.report(State{Err: fmt.Errorf("%w: consumer stopped: %w", ErrClosed, context.Cause(ctx))})
}

// subscribe connects and subscribes; deliveries go to handle from then on.
func (c *consumer) subscribe(ctx context.Context) (*STAN, error) {
	s, err := dialWith(ctx, c.o.STANOptions, dialHooks{
		stanOpts:     []stan.Option{stan.Pings(int(c.o.PingInterval/time.Second), c.o.PingMaxOut)},
		onConnChange: c.connChanged,
	})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.cur = s // before subscribing: the first delivery can precede the reply
	c.mu.Unlock()
	opts := []stan.SubscriptionOption{
		stan.DurableName(c.o.DurableName),
		stan.DeliverAllAvailable(), // for a new durable; an existing one resumes
		stan.SetManualAckMode(),
		stan.MaxInflight(c.o.MaxInflight),
		stan.AckWait(c.o.AckWait),
	}
	cb := func(m *stan.Msg) { c.deliver(s, m) }
	if c.o.QueueGroup != "" {
		_, err = s.sc.QueueSubscribe(c.o.Subject, c.o.QueueGroup, cb, opts...)
	} else {
		_, err = s.sc.Subscribe(c.o.Subject, cb, opts...)
	}
	if err == nil {
		return s, nil
	}
	c.retire()
	_ = s.Close()
	what := fmt.Sprintf("subscribe to %q as durable %q on cluster %q at %s", c.o.Subject, c.o.DurableName, c.o.ClusterID, s.where)
	switch {
	case errors.Is(err, stan.ErrSubReqTimeout):
		return nil, fmt.Errorf("%w: %s: no answer: %w", ErrUnreachable, what, err)
	case errors.Is(err, stan.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionClosed):
		return nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, what, s.closedError(err))
	default:
		return nil, fmt.Errorf("stream: %s: %w", what, err)
	}
}

// serve follows session s until ctx ends, when it closes s and returns false, or until
// s is lost, when it abandons s and returns true.
func (c *consumer) serve(ctx context.Context, s *STAN) (lost bool) {
	connected := true
	for {
		select {
		case <-ctx.Done():
			c.retire()
			if err := s.Close(); err != nil {
				c.log.Warn("closed the NATS Streaming session; the server may not have released the client ID", "err", err)
			} else {
				c.log.Info("closed the NATS Streaming session, keeping the durable subscription")
			}
			return false
		case <-s.Done():
			c.retire()
			s.abandon()
			return true
		case <-c.changed:
			if now := s.nc.IsConnected(); now != connected {
				connected = now
				if now {
					c.report(State{Connected: true})
				} else {
					c.report(State{Err: fmt.Errorf("%w: disconnected from NATS at %s; reconnecting", ErrUnreachable, s.where)})
				}
			}
		}
	}
}

// deliver passes a message of session s to handle, unless s has been retired.
func (c *consumer) deliver(s *STAN, m *stan.Msg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != s {
		return // the session ended: the server redelivers the message
	}
	c.handle(&Msg{
		Data:        m.Data,
		Subject:     m.Subject,
		Sequence:    m.Sequence,
		Redelivered: m.Redelivered,
		Timestamp:   time.Unix(0, m.Timestamp),
		raw:         m,
		s:           s,
	})
}

// retire stops deliveries to handle, waiting for a running one to return.
func (c *consumer) retire() {
	c.mu.Lock()
	c.cur = nil
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

// backoff is capped exponential backoff with jitter: the nth wait is drawn uniformly
// between half and all of min*2^n, capped at max. The zero value waits 0.
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
