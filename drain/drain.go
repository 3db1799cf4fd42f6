// Package drain is the central half's core: it takes each message from the stream, decides
// its fate in every sink and acknowledges it only once that fate is final everywhere —
// delivered, expired past max_age, superseded, or rejected as permanently bad. Everything
// else stays unacknowledged, is retried with capped exponential backoff, and is
// redelivered by the stream after a crash.
//
// The sinks are of two kinds (package sink). A state sink wants each target's newest
// scrape: an older scrape still waiting when a newer one arrives is superseded there, and
// a late or redelivered scrape never replaces a newer one. A history sink wants every
// scrape of a target in scrape order: the drain hands it a target's scrapes oldest first,
// several at a time after a backlog, and holds the newer ones (unacknowledged, so bounded
// by the stream's in-flight limit) while an older one is retried.
//
// A message goes through these stages, one file each:
//   - admit.go: decode, the earlier system's JSON, trust, shard, expiry on arrival;
//   - parts.go: split scrapes wait there for their other parts;
//   - queue.go: each target's queue of scrapes, in start order, and the ready list;
//   - deliver.go: the workers, which decompress and parse a scrape once for all sinks
//     (it waits compressed, as it came), deliver it, retry, and acknowledge;
//   - sweep.go: targets whose scrapes stopped arriving;
//   - stream.go: readiness, and the hold on history after a restart until the stream
//     has redelivered what the previous drain left unacknowledged.
//
// A message's Handle, how to answer the server for it, travels unchanged through every
// stage.
package drain

import (
	"cmp"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prometheus-streams/prometheus-streams/drain/assemble"
	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// Options configure a Drain.
type Options struct {
	MaxAge  time.Duration
	Workers int
	// Backoff bounds the delay between retries of one delivery.
	MinBackoff, MaxBackoff time.Duration
	// SweepInterval is how often sinks are swept for targets past MaxAge.
	SweepInterval time.Duration
	// Now is the clock; time.Now by default.
	Now func() time.Time
	// ReassemblyBytes bounds the bytes held for split scrapes whose parts have not all
	// arrived (DefaultReassemblyBytes when zero); they are given up at MaxAge.
	ReassemblyBytes int64
	// MaxInflight is the most messages a stream hands the drain unacknowledged at once
	// (its max_inflight; the smallest, when they differ): when the drain holds that many
	// scrapes of one stream, it can take no more from it, and the sinks that are
	// Pressured are told so (0: unknown, never told).
	MaxInflight int
	// Streams is how many streams the drain consumes; it is ready once subscribed to
	// all (1 when zero).
	Streams int
	// Shards, when above 1, splits the targets among that many drains by a hash of job
	// and instance (ShardOf); this drain takes those of shard Shard and acknowledges the
	// others unread.
	Shards, Shard int
	// Trust, when not nil, is the publisher keys the drain accepts and what each may
	// publish; every other message is rejected. Nil accepts unsigned messages and any
	// key's, though never a signature that does not verify.
	Trust *Trust
	// StaleRetention is how long Targets still lists, as stale, a target the sweep
	// forgot for silence: the targets an operator most needs to see. Default one hour;
	// negative: not at all.
	StaleRetention time.Duration
	// MaxClockSkew is how far ahead of the drain's clock (Now) a scrape may be stamped
	// (DefaultMaxClockSkew when zero). A scrape further ahead comes from an edge whose
	// clock is wrong: it is refused, so that it neither supersedes nor hides the genuine
	// scrapes that follow, nor reaches a sink with timestamps in the future.
	MaxClockSkew time.Duration
	// HistoryBatch is how many scrapes of one target a history sink is given at once
	// (DefaultHistoryBatch when zero): after an outage a target's backlog goes in fewer,
	// fuller requests.
	HistoryBatch int
}

// DefaultReassemblyBytes is the default bound on the parts of incomplete split scrapes.
const DefaultReassemblyBytes = 256 << 20

// DefaultMaxClockSkew is the default of Options.MaxClockSkew.
const DefaultMaxClockSkew = 30 * time.Second

// DefaultHistoryBatch is the default of Options.HistoryBatch.
const DefaultHistoryBatch = 16

// Handle is how the drain answers the server for one message. Every stage passes it on
// as it is.
type Handle struct {
	Seq uint64 // the message's sequence number on its channel or stream
	Ack func() error
	// Term, when not nil, acknowledges a message the drain will never deliver (it does
	// not decode, is not trusted, or its body does not parse) so that the server never
	// redelivers it; Ack does it otherwise.
	Term func() error
	// Nak, when not nil, has the server redeliver the message after a delay (JetStream):
	// with state sinks only, a delivery that fails is then backed off by the server, not
	// held in memory. Without it (NATS Streaming), or with a history sink, the drain
	// retries in memory.
	Nak func(time.Duration) error
}

func (h Handle) term() func() error {
	if h.Term != nil {
		return h.Term
	}
	return h.Ack
}

// Message is one message from the stream, with what the drain may answer the server.
type Message struct {
	// Data is the message. The drain keeps the scrape's body in it, compressed, until
	// the message is answered: the caller must not modify it.
	Data []byte
	Handle
	// Stream names the receiver stream it came from, as in StreamState.
	Stream string
	// Subject is the subject it was published on; when Want is set (the transport's
	// subject of a target: with JetStream each target has one of its own, with NATS
	// Streaming all share the channel) it must be Want(job, instance) of the envelope,
	// else the message is rejected: a publisher may not speak for another target on its
	// subject.
	Subject string
	Want    func(job, instance string) string
}

// Drain decides every message's fate. Build it with New, run its workers with Run, and
// hand it each message with Handle.
type Drain struct {
	opts      Options
	codec     *envelope.Codec
	sinks     []sink.Sink
	sinkNames []string
	state     []int // indexes of the state sinks in sinks
	history   []int // and of the history sinks
	every     []int // of every sink
	logger    *slog.Logger
	metrics   *metrics

	subscribed atomic.Bool
	restoring  atomic.Int32 // restores under way: not ready until they are applied
	freed      atomic.Int64 // when memory was last returned to the system, in Unix ns
	holding    atomic.Bool  // holds is not empty (read without the lock by every message)
	smu        sync.Mutex
	streams    map[string]bool       // each stream's subscription, by name
	streamErr  map[string]error      // and why not
	trust      atomic.Pointer[Trust] // nil: no trust configured
	parts      *assemble.Reassembler[Handle]
	bodies     sync.Pool // *[]byte: buffers bodies are decompressed into for a parse

	mu          sync.Mutex
	targets     map[string]*target
	forgotten   map[string]*target // swept for silence, kept for Targets for StaleRetention
	ready       []*target          // targets with work and no worker
	queued      map[string]int     // deliveries in the targets' queues, by stream (with MaxInflight)
	fullStreams int                // streams whose count reached MaxInflight: the Pressured sinks know
	pressured   []sink.Pressured
	wake        chan struct{}
	holds       map[string]*hold     // streams whose history waits for redeliveries
	failures    []int                // by sink: transient failures since it last answered
	skewed      map[string]time.Time // publishers whose clock is ahead: when last logged
}

// New returns a Drain delivering to sinks.
func New(opts Options, codec *envelope.Codec, sinks []sink.Sink, logger *slog.Logger, reg prometheus.Registerer) *Drain {
	if opts.Workers <= 0 {
		opts.Workers = 8
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = max(opts.MaxAge/4, time.Second)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.StaleRetention == 0 {
		opts.StaleRetention = time.Hour
	}
	if opts.MaxClockSkew <= 0 {
		opts.MaxClockSkew = DefaultMaxClockSkew
	}
	if opts.HistoryBatch <= 0 {
		opts.HistoryBatch = DefaultHistoryBatch
	}
	d := &Drain{
		opts:      opts,
		codec:     codec,
		sinks:     sinks,
		logger:    logger,
		targets:   map[string]*target{},
		forgotten: map[string]*target{},
		wake:      make(chan struct{}, 1),
		holds:     map[string]*hold{},
		failures:  make([]int, len(sinks)),
		skewed:    map[string]time.Time{},
		queued:    map[string]int{},
	}
	d.bodies.New = func() any { return new([]byte) }
	for i, s := range sinks {
		d.every = append(d.every, i)
		d.sinkNames = append(d.sinkNames, s.Name())
		if s.Kind() == sink.History {
			d.history = append(d.history, i)
		} else {
			d.state = append(d.state, i)
		}
		if p, ok := s.(sink.Pressured); ok {
			d.pressured = append(d.pressured, p)
		}
	}
	d.metrics = newMetrics(reg, d.sinkNames)
	d.trust.Store(opts.Trust)
	d.parts = assemble.New[Handle](codec, assemble.Options{
		MaxBytes: cmp.Or(opts.ReassemblyBytes, DefaultReassemblyBytes), Timeout: opts.MaxAge, Now: opts.Now, Packed: true,
	})
	if reg != nil {
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "prometheus_streams_drain_split_scrapes_held",
				Help: "Split scrapes waiting for parts."}, func() float64 { return float64(d.parts.Stats().Scrapes) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "prometheus_streams_drain_split_bytes_held",
				Help: "Bytes of parts held for split scrapes waiting for the rest."}, func() float64 { return float64(d.parts.Stats().Bytes) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "prometheus_streams_drain_scrapes_held",
				Help: "Scrapes the drain holds unacknowledged: queued, being delivered, or waiting for a retry."}, func() float64 { return float64(d.held()) }),
			newFleetCollector(d),
		)
	}
	return d
}

// SetTrust replaces the trusted publishers (nil: trust none in particular, accept all)
// for the messages handled from now on: a configuration reload.
func (d *Drain) SetTrust(t *Trust) { d.trust.Store(t) }

// Handle takes one message from the stream: data, its sequence number on the channel, and
// the function that acknowledges it. It never blocks on a sink: it decides what it can at
// once (garbage, expired, superseded) and queues the rest for the workers.
func (d *Drain) Handle(data []byte, seq uint64, ack func() error) {
	d.HandleMessage(Message{Data: data, Handle: Handle{Seq: seq, Ack: ack}})
}

// Run runs the workers and the periodic sweep until ctx ends, then waits for the
// workers: a delivery cut short by ctx is left unacknowledged, for the stream to
// redeliver.
func (d *Drain) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range d.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.work(ctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.sweepLoop(ctx)
	}()
	wg.Wait()
}

func (d *Drain) ack(ack func() error, seq uint64) {
	if err := ack(); err != nil {
		// The stream redelivers it; its fate will be decided again then.
		d.metrics.ackErrors.Inc()
		d.logger.Debug("ack failed", "seq", seq, "err", err)
	}
}
