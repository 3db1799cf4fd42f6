package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/stan.go"
)

// Defaults for zero SubscribeOptions fields (and DefaultAckWait, DefaultMinBackoff,
// DefaultMaxBackoff).
const (
	DefaultMaxInflight  = stan.DefaultMaxInflight // 1024
	DefaultPingInterval = 5 * time.Second
	DefaultPingMaxOut   = 3
)

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
	return consume(ctx, &stanDurable{o}, handle, state)
}

// stanDurable is Consume's durable: a NATS Streaming durable subscription, or durable
// queue group.
type stanDurable struct{ o SubscribeOptions }

func (d *stanDurable) prepare() (*slog.Logger, time.Duration, time.Duration, error) {
	o := &d.o
	if err := o.normalize(); err != nil {
		return nil, 0, 0, err
	}
	log := o.Logger.With("client_id", o.ClientID, "subject", o.Subject, "durable", o.DurableName)
	if o.QueueGroup != "" {
		log = log.With("queue_group", o.QueueGroup)
	}
	return log, o.MinBackoff, o.MaxBackoff, nil
}

func (d *stanDurable) words() consumerWords {
	return consumerWords{
		failed:  "could not subscribe to NATS Streaming; retrying",
		up:      "subscribed to NATS Streaming",
		upAttrs: []any{"max_inflight", d.o.MaxInflight, "ack_wait", d.o.AckWait},
		lost:    "subscription lost with the session; resubscribing",
	}
}

// subscribe opens a session and subscribes on it.
func (d *stanDurable) subscribe(ctx context.Context, c *consumer) (subscription, error) {
	o := d.o
	s, err := dialWith(ctx, o.STANOptions, dialHooks{
		stanOpts:     []stan.Option{stan.Pings(int(o.PingInterval/time.Second), o.PingMaxOut)},
		onConnChange: c.connChanged,
	})
	if err != nil {
		return nil, err
	}
	gen := c.begin()
	opts := []stan.SubscriptionOption{
		stan.DurableName(o.DurableName),
		stan.DeliverAllAvailable(), // for a new durable; an existing one resumes
		stan.SetManualAckMode(),
		stan.MaxInflight(o.MaxInflight),
		stan.AckWait(o.AckWait),
	}
	cb := func(m *stan.Msg) {
		c.deliver(gen, &Msg{
			Data:        m.Data,
			Subject:     m.Subject,
			Sequence:    m.Sequence,
			Redelivered: m.Redelivered,
			Timestamp:   time.Unix(0, m.Timestamp),
			ack:         func() error { return s.ack(m) },
		})
	}
	if o.QueueGroup != "" {
		_, err = s.sc.QueueSubscribe(o.Subject, o.QueueGroup, cb, opts...)
	} else {
		_, err = s.sc.Subscribe(o.Subject, cb, opts...)
	}
	if err == nil {
		return stanSubscription{s, c.log}, nil
	}
	c.retire()
	_ = s.Close()
	what := fmt.Sprintf("subscribe to %q as durable %q on cluster %q at %s", o.Subject, o.DurableName, o.ClusterID, s.where)
	switch {
	case errors.Is(err, stan.ErrSubReqTimeout):
		return nil, fmt.Errorf("%w: %s: no answer: %w", ErrUnreachable, what, err)
	case errors.Is(err, stan.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionClosed):
		return nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, what, s.closedError(err))
	default:
		return nil, fmt.Errorf("stream: %s: %w", what, err)
	}
}

// stanSubscription follows the session a subscription lives in: it is lost with it.
type stanSubscription struct {
	s   *STAN
	log *slog.Logger
}

func (t stanSubscription) conn() *nats.Conn      { return t.s.nc }
func (t stanSubscription) where() string         { return t.s.where }
func (t stanSubscription) lost() <-chan struct{} { return t.s.Done() }
func (t stanSubscription) err() error            { return t.s.Err() }
func (t stanSubscription) abandon()              { t.s.abandon() }

func (t stanSubscription) close() {
	if err := t.s.Close(); err != nil {
		t.log.Warn("closed the NATS Streaming session; the server may not have released the client ID", "err", err)
	} else {
		t.log.Info("closed the NATS Streaming session, keeping the durable subscription")
	}
}
