package stream

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// The transports a stream can use: the values of Options.Transport.
const (
	TransportSTAN      = "stan" // NATS Streaming; also the empty string
	TransportJetStream = "jetstream"
)

// Options says where a stream is and how to reach it, whatever its transport. A field
// that only one transport uses says so; the other ignores it. Zero fields take the
// defaults of STANOptions, JetStreamOptions and their subscribe options.
type Options struct {
	// Transport is TransportSTAN (or "") or TransportJetStream.
	Transport string
	// URLs of the NATS servers; at least one. Credentials in a URL are used but never
	// shown in errors or logs.
	URLs []string
	// Topic is the NATS Streaming channel, or the JetStream subject prefix: the stream
	// captures Topic+".>" and each target has a subject of its own under it (Subject).
	Topic string
	// Name is the NATS connection name shown in monitoring.
	Name string
	// ConnectTimeout bounds each connection attempt and request, as STANOptions and
	// JetStreamOptions say, and Transport.Publisher's whole connect.
	ConnectTimeout time.Duration
	// Security: TLS and authentication to NATS (none by default).
	Security Security
	// Logger receives connection and consumer events; nil: discard.
	Logger *slog.Logger

	// ClusterID is the NATS Streaming cluster ID (NATS Streaming only).
	ClusterID string
	// ClientID is the NATS Streaming client ID (NATS Streaming only): the same on
	// every run of a consumer, and unique among live connections; a publisher makes one
	// unique to its run with ClientID.
	ClientID string
	// LastSeq, when not nil, tells the sequence of the newest message of a NATS
	// Streaming channel (0: none) without a subscription, as Embedded.LastSeq does for
	// the embedded server's: Replay then ends as soon as it has that message (NATS
	// Streaming only).
	LastSeq func(channel string) (uint64, error)

	// Stream is the JetStream stream's name (JetStream only).
	Stream string
	// Create, Replicas, MaxAge and DuplicateWindow: the stream is created if missing,
	// as JetStreamOptions says (JetStream only). A Publisher warns when an existing
	// stream keeps messages less than MaxAge.
	Create          bool
	Replicas        int
	MaxAge          time.Duration
	DuplicateWindow time.Duration
	// PubAckWait is how long a publish waits for its ack before a Publisher tries it
	// again (JetStream only: NATS Streaming publishes wait DefaultPubAckWait, and are
	// not tried again).
	PubAckWait time.Duration
}

// ConsumeOptions says how Transport.Consume consumes. Zero fields take the defaults
// noted.
type ConsumeOptions struct {
	// Durable names the durable (NATS Streaming: the durable subscription, whose
	// position the server keeps for the client ID and durable name together;
	// JetStream: the durable pull consumer, whose position the server keeps for the
	// name, and whose consumers share its messages). Required.
	Durable string
	// QueueGroup, if set, makes the subscription a durable queue group (NATS Streaming
	// only), as SubscribeOptions says.
	QueueGroup string
	// MaxInflight is how many delivered messages may await their ack before the server
	// waits for one (default DefaultMaxInflight, DefaultMaxAckPending).
	MaxInflight int
	// AckWait is how long the server waits for an ack before redelivering a message
	// (default DefaultAckWait).
	AckWait time.Duration
	// Unacknowledged, when not nil, is told at each subscription how many messages up
	// to stream sequence upTo a previous consumer left unacknowledged, as
	// JetStreamSubscribeOptions says (JetStream only).
	Unacknowledged func(upTo uint64, n int)
}

// Transport is a stream, over NATS Streaming or JetStream: what the edge publishes to
// and the drain consumes from and replays, whichever transport it is. Open returns
// one. Its methods are safe for concurrent use; each call that connects opens a
// connection of its own.
type Transport interface {
	// Name names the stream in metrics and logs: stan:<cluster_id>/<channel> or
	// jetstream:<stream>.
	Name() string
	// Subject is the subject a scrape of job/instance is published on: the channel
	// (NATS Streaming: one for every target), or Subject(Topic, job, instance)
	// (JetStream: one for each target). A delivery of a scrape of job/instance that
	// came on another subject was published by someone speaking for another target.
	Subject(job, instance string) string
	// Publisher connects for publishing, within ConnectTimeout or until ctx ends, and
	// returns the connection as a Publisher. ctx also bounds how long the Publisher tries
	// a publish again (see Publisher.PublishAsync): keep it until the Publisher is
	// closed. The errors are DialSTAN's and DialJetStream's.
	Publisher(ctx context.Context) (Publisher, error)
	// Consume consumes the stream through durable o.Durable with manual acks until ctx
	// ends, calling handle for each delivery and state on each change of the
	// connection, as Consume (NATS Streaming) and ConsumeJetStream (JetStream) say: a
	// new durable starts at the beginning of the stream, faults are retried with
	// backoff, and it returns an error only for an invalid configuration.
	Consume(ctx context.Context, o ConsumeOptions, handle func(*Msg), state func(State)) error
	// Replay reads the stream again from since, calling fn with each message's data,
	// through a connection of its own that acknowledges nothing and moves no durable:
	// how a restarted drain finds each target's newest scrape. NATS Streaming reads
	// every message since then up to the channel's end (ReplaySTAN); JetStream, each
	// subject's newest message younger than since (ReplayJetStream).
	Replay(ctx context.Context, since time.Time, fn func(data []byte)) error
}

// Open returns the Transport of o. It connects to nothing: each of the Transport's
// methods does, with o.
func Open(o Options) (Transport, error) {
	switch o.Transport {
	case TransportSTAN, "":
		return stanTransport{o}, nil
	case TransportJetStream:
		return jsTransport{o}, nil
	default:
		return nil, fmt.Errorf("stream: unknown transport %q: want %q or %q", o.Transport, TransportSTAN, TransportJetStream)
	}
}

// dialWithin dials with the transport's options within o's ConnectTimeout, or until
// ctx ends: a Publisher's whole connect.
func dialWithin[C, O any](ctx context.Context, o Options, dial func(context.Context, O) (C, error), with O) (C, error) {
	timeout := o.ConnectTimeout
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return dial(ctx, with)
}

// stanTransport is a NATS Streaming channel.
type stanTransport struct{ o Options }

func (t stanTransport) Name() string { return "stan:" + t.o.ClusterID + "/" + t.o.Topic }

func (t stanTransport) Subject(_, _ string) string { return t.o.Topic }

func (t stanTransport) options() STANOptions {
	return STANOptions{
		URLs: t.o.URLs, ClusterID: t.o.ClusterID, ClientID: t.o.ClientID, Name: t.o.Name,
		ConnectTimeout: t.o.ConnectTimeout, Security: t.o.Security, Logger: t.o.Logger,
	}
}

func (t stanTransport) Publisher(ctx context.Context) (Publisher, error) {
	s, err := dialWithin(ctx, t.o, DialSTAN, t.options())
	if err != nil {
		return nil, err
	}
	return &publisher{conn: s, subject: t.Subject}, nil
}

func (t stanTransport) Consume(ctx context.Context, o ConsumeOptions, handle func(*Msg), state func(State)) error {
	return Consume(ctx, SubscribeOptions{
		STANOptions: t.options(),
		Subject:     t.o.Topic,
		DurableName: o.Durable,
		QueueGroup:  o.QueueGroup,
		MaxInflight: o.MaxInflight,
		AckWait:     o.AckWait,
	}, handle, state)
}

func (t stanTransport) Replay(ctx context.Context, since time.Time, fn func(data []byte)) error {
	var last func() (uint64, error)
	if t.o.LastSeq != nil {
		last = func() (uint64, error) { return t.o.LastSeq(t.o.Topic) }
	}
	return ReplaySTAN(ctx, t.options(), t.o.Topic, since, last, fn)
}

// jsTransport is a JetStream stream.
type jsTransport struct{ o Options }

func (t jsTransport) Name() string { return "jetstream:" + t.o.Stream }

func (t jsTransport) Subject(job, instance string) string { return Subject(t.o.Topic, job, instance) }

func (t jsTransport) options() JetStreamOptions {
	return JetStreamOptions{
		URLs: t.o.URLs, Name: t.o.Name, Stream: t.o.Stream, Subject: t.o.Topic,
		Create: t.o.Create, Replicas: t.o.Replicas, MaxAge: t.o.MaxAge, DuplicateWindow: t.o.DuplicateWindow,
		ConnectTimeout: t.o.ConnectTimeout, PubAckWait: t.o.PubAckWait, Security: t.o.Security, Logger: t.o.Logger,
	}
}

// Publisher warns of what an existing stream weakens: a duplicate window shorter than
// ctx leaves for tries again, in which a publish tried again may be stored twice, and
// a max age below MaxAge, which drops messages a consumer would still want.
func (t jsTransport) Publisher(ctx context.Context) (Publisher, error) {
	j, err := dialWithin(ctx, t.o, DialJetStream, t.options())
	if err != nil {
		return nil, err
	}
	cfg := j.StreamConfig()
	if deadline, ok := ctx.Deadline(); ok && cfg.Duplicates < time.Until(deadline) {
		j.log.Warn("the JetStream stream's duplicate window is shorter than a run: a retried publish may be stored twice",
			"duplicate_window", cfg.Duplicates, "retry_for", time.Until(deadline).Round(time.Millisecond))
	}
	if cfg.MaxAge > 0 && cfg.MaxAge < t.o.MaxAge {
		j.log.Warn("the JetStream stream drops messages younger than max_age", "stream_max_age", cfg.MaxAge, "max_age", t.o.MaxAge)
	}
	return &publisher{conn: j, subject: t.Subject, ctx: ctx}, nil
}

func (t jsTransport) Consume(ctx context.Context, o ConsumeOptions, handle func(*Msg), state func(State)) error {
	return ConsumeJetStream(ctx, JetStreamSubscribeOptions{
		JetStreamOptions: t.options(),
		Durable:          o.Durable,
		MaxAckPending:    o.MaxInflight,
		AckWait:          o.AckWait,
		Unacknowledged:   o.Unacknowledged,
	}, handle, state)
}

func (t jsTransport) Replay(ctx context.Context, since time.Time, fn func(data []byte)) error {
	return ReplayJetStream(ctx, t.options(), t.o.Topic, since, fn)
}

// StreamAddCommand is the nats CLI command creating the JetStream stream of o as a
// Publisher does with Create, for operators who create streams themselves.
func (o Options) StreamAddCommand() string { return jsTransport{o}.options().StreamAddCommand() }
