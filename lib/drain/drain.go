// Package drain is the central half's core: it takes each message from the stream, decides
// its fate and acknowledges it only once that fate is final — delivered to every sink,
// expired past max_age, superseded by a newer scrape of the same target, or rejected as
// permanently bad. Everything else stays unacknowledged, is retried with capped
// exponential backoff, and is redelivered by the stream after a crash.
//
// Per target, only the newest scrape matters: a sink replaces a target's state with each
// scrape, so an older scrape still waiting when a newer one arrives is superseded and
// acknowledged, and a late or redelivered scrape never replaces a newer one.
package drain

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/prometheus-streams/prometheus-streams/lib/assemble"
	"github.com/prometheus-streams/prometheus-streams/lib/envelope"
	"github.com/prometheus-streams/prometheus-streams/lib/exposition"
)

// Sink delivers a target's scrapes somewhere: a Push Gateway, an exposition endpoint,
// a remote-write receiver.
//
// Deliver is called for one target at a time (never concurrently for the same target)
// and for a target's scrapes in increasing start order; different targets are delivered
// concurrently. It must not modify the Scrape. It returns nil once the sink holds the
// scrape, an error wrapping ErrRejected when it never will (the message is then
// acknowledged), or ErrSuperseded when it already holds a newer scrape of the target;
// any other error is retried.
type Sink interface {
	Name() string
	Deliver(ctx context.Context, s *Scrape) error
}

// Sweeper is a Sink that also removes the targets whose scrapes stopped arriving. The
// drain calls Sweep periodically; now minus maxAge is the cut-off.
type Sweeper interface {
	Sweep(ctx context.Context, now time.Time, maxAge time.Duration) error
}

// Final fates a Sink reports.
var (
	ErrRejected   = errors.New("rejected")
	ErrSuperseded = errors.New("superseded by a newer scrape")
)

// Scrape is one target's scrape as the sinks receive it. Sinks share it: read only.
type Scrape struct {
	Envelope *envelope.Envelope
	Target   exposition.Target
	// Families is the target's exposition, labelled with job, instance and the static
	// labels; nil when the scrape failed.
	Families []*dto.MetricFamily
	// Health is the streams_scrape_* families of this scrape.
	Health []*dto.MetricFamily
}

// Key is the target's identity: job and instance.
func (s *Scrape) Key() string { return s.Envelope.Job + "/" + s.Envelope.Instance }

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
}

// DefaultReassemblyBytes is the default bound on the parts of incomplete split scrapes.
const DefaultReassemblyBytes = 256 << 20

// part is what the drain keeps of one part of a split scrape until the scrape's fate is
// final: how to answer the server for its message.
type part struct {
	seq  uint64
	ack  func() error
	term func() error
	nak  func(time.Duration) error
}

// Drain decides every message's fate. Build it with New, run its workers with Run, and
// hand it each message with Handle.
type Drain struct {
	opts      Options
	codec     *envelope.Codec
	sinks     []Sink
	sinkNames []string
	logger    *slog.Logger
	metrics   *metrics

	subscribed atomic.Bool
	smu        sync.Mutex
	streams    map[string]bool       // each stream's subscription, by name
	trust      atomic.Pointer[Trust] // nil: no trust configured
	parts      *assemble.Reassembler[part]

	mu        sync.Mutex
	targets   map[string]*target
	forgotten map[string]*target // swept for silence, kept for Targets for StaleRetention
	ready     []*target          // targets with a pending scrape and no worker
	wake      chan struct{}
}

// target is the drain's state for one job/instance.
type target struct {
	key      string
	pending  *delivery // newest scrape not yet taken by a worker
	inflight *delivery // the scrape a worker is delivering
	busy     bool      // a worker holds the target (queued or delivering)
	// delivered is the start of the newest scrape every sink has, or whose fate was final.
	delivered time.Time
	lastSeen  time.Time
	status    status
	retry     *retry // the scrape handed back to the server with a delay, if any
}

// delivery is one message on its way.
type delivery struct {
	env      *envelope.Envelope
	seq      uint64
	ack      func() error
	term     func() error
	nak      func(time.Duration) error
	received time.Time
	poison   bool // terminated rather than acknowledged
}

// Message is one message from the stream, with what the drain may answer the server.
type Message struct {
	Data []byte
	Seq  uint64 // its sequence number on the channel or stream
	Ack  func() error
	// Term, when not nil, acknowledges a message the drain will never deliver (it does
	// not decode, is not trusted, or its body does not parse) so that the server never
	// redelivers it; Ack does it otherwise.
	Term func() error
	// Nak, when not nil, has the server redeliver the message after a delay (JetStream):
	// a delivery that fails is then backed off by the server, not held in memory.
	// Without it (NATS Streaming) the drain retries in memory.
	Nak func(time.Duration) error
}

// retry is what the drain keeps of a scrape handed back to the server for a later
// attempt: which attempt comes next and which sinks already have it.
type retry struct {
	start   time.Time
	attempt int
	res     []sinkResult
}

// New returns a Drain delivering to sinks.
func New(opts Options, codec *envelope.Codec, sinks []Sink, logger *slog.Logger, reg prometheus.Registerer) *Drain {
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
	names := make([]string, len(sinks))
	for i, s := range sinks {
		names[i] = s.Name()
	}
	d := &Drain{
		opts:      opts,
		codec:     codec,
		sinks:     sinks,
		sinkNames: names,
		logger:    logger,
		metrics:   newMetrics(reg, names),
		targets:   map[string]*target{},
		forgotten: map[string]*target{},
		wake:      make(chan struct{}, 1),
	}
	d.trust.Store(opts.Trust)
	d.parts = assemble.New[part](codec, assemble.Options{
		MaxBytes: cmp.Or(opts.ReassemblyBytes, DefaultReassemblyBytes), Timeout: opts.MaxAge, Now: opts.Now,
	})
	if reg != nil {
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "prometheus_streams_drain_split_scrapes_held",
				Help: "Split scrapes waiting for parts."}, func() float64 { return float64(d.parts.Stats().Scrapes) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "prometheus_streams_drain_split_bytes_held",
				Help: "Bytes of parts held for split scrapes waiting for the rest."}, func() float64 { return float64(d.parts.Stats().Bytes) }),
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
	d.HandleMessage(Message{Data: data, Seq: seq, Ack: ack})
}

// HandleMessage is Handle for a message that may also be terminated or handed back to
// the server with a delay.
func (d *Drain) HandleMessage(m Message) {
	data, seq, ack := m.Data, m.Seq, m.Ack
	term := m.Term
	if term == nil {
		term = ack
	}
	now := d.opts.Now()
	d.metrics.received.Inc()
	if d.opts.Shards > 1 {
		// Another shard's target: skipped from its header, neither verified nor
		// decompressed. What does not parse goes on, to be rejected with its reason.
		if job, instance, err := d.codec.Target(data); err == nil && ShardOf(job, instance, d.opts.Shards) != d.opts.Shard {
			d.metrics.otherShard.Inc()
			d.ack(ack, seq)
			return
		}
	}
	env, err := d.codec.Decode(data)
	if errors.Is(err, envelope.ErrNotEnvelope) && len(data) > 0 && data[0] == '{' {
		// The earlier system's JSON: read it too, so the central side can move first.
		env, err = d.codec.DecodeLegacy(data)
	}
	if err != nil {
		reason := decodeReason(err)
		d.metrics.rejected.WithLabelValues(reason).Inc()
		attrs := []any{"seq", seq, "reason", reason, "bytes", len(data)}
		var se *envelope.SignatureError
		if errors.As(err, &se) {
			// What the message claims, unverified: who a forgery pretends to be.
			attrs = append(attrs, "key", se.Signer, "job", se.Job, "instance", se.Instance, "publisher", se.Publisher)
		}
		d.logger.Warn("message rejected", append(attrs, "err", err)...)
		d.ack(term, seq)
		return
	}
	// Trust comes before anything else looks at the message: an untrusted message
	// touches no state and no per-publisher metric.
	if reason, why := d.trust.Load().Check(env); reason != "" {
		d.metrics.rejected.WithLabelValues(reason).Inc()
		d.logger.Warn("message rejected", "seq", seq, "reason", reason, "key", env.Signer,
			"job", env.Job, "instance", env.Instance, "publisher", env.Publisher, "err", why)
		d.ack(term, seq)
		return
	}
	if d.opts.Shards > 1 && ShardOf(env.Job, env.Instance, d.opts.Shards) != d.opts.Shard {
		d.metrics.otherShard.Inc() // the earlier system's JSON, read in full to find its target
		d.ack(ack, seq)
		return
	}
	end := env.Start.Add(env.Duration)
	d.metrics.publisherSeen(env.Publisher, now, now.Sub(end))
	key := env.Job + "/" + env.Instance
	if age := now.Sub(env.Start); age > d.opts.MaxAge {
		d.metrics.expired.Inc()
		d.logger.Debug("message expired", "job", env.Job, "instance", env.Instance, "age", age)
		// Recorded, so that a target whose every message arrives late (an edge clock
		// behind, a backlog) shows as such rather than not at all.
		d.mu.Lock()
		t := d.target(key)
		t.lastSeen = now
		t.status.expired(env, seq, now)
		d.mu.Unlock()
		d.ack(ack, seq)
		return
	}
	nak := m.Nak
	if env.Parts > 1 {
		var whole bool
		if env, seq, ack, term, nak, whole = d.assemble(env, part{seq, ack, term, nak}); !whole {
			return
		}
	} else if dr, ok := d.parts.Supersede(env.Job, env.Instance, env.Start); ok {
		d.drop(dr) // a newer scrape arrived whole: the split one will not be needed
	}
	dl := &delivery{env: env, seq: seq, ack: ack, term: term, nak: nak, received: now}

	d.mu.Lock()
	t := d.target(key)
	t.lastSeen = now
	superseded := d.place(t, dl)
	if superseded != dl {
		t.status.observe(env, seq, now)
	}
	if t.pending != nil && !t.busy {
		t.busy = true
		d.ready = append(d.ready, t)
		d.signal()
	}
	d.mu.Unlock()

	if superseded != nil {
		d.metrics.superseded.Inc()
		d.ack(superseded.ack, superseded.seq)
	}
}

// assemble takes one part of a split scrape. Once the last part is in, it returns the
// whole scrape and handles that answer for all its parts' messages at once.
func (d *Drain) assemble(env *envelope.Envelope, p part) (*envelope.Envelope, uint64, func() error, func() error, func(time.Duration) error, bool) {
	d.metrics.parts.Inc()
	out, err := d.parts.Add(env, p)
	for _, dr := range out.Dropped {
		d.drop(dr)
	}
	switch {
	case errors.Is(err, assemble.ErrFull):
		// Left unacknowledged: the server redelivers it once memory has been freed.
		d.metrics.partsRefused.WithLabelValues("full").Inc()
		d.logger.Warn("split scrape part refused: reassembly memory full, left for redelivery", "job", env.Job, "instance", env.Instance, "part", env.Part, "parts", env.Parts)
		if p.nak != nil {
			_ = p.nak(d.opts.MaxBackoff)
		}
		return nil, 0, nil, nil, nil, false
	case err != nil:
		reason := "mismatch"
		if errors.Is(err, assemble.ErrTooLarge) {
			reason = "too_large"
		}
		d.metrics.partsRefused.WithLabelValues(reason).Inc()
		d.logger.Warn("split scrape part refused", "job", env.Job, "instance", env.Instance, "part", env.Part, "parts", env.Parts, "reason", reason, "err", err)
		d.ack(p.term, p.seq)
		return nil, 0, nil, nil, nil, false
	case out.Whole == nil:
		return nil, 0, nil, nil, nil, false // more parts to come
	}
	d.metrics.assembled.Inc()
	hs := out.Handles
	all := func(f func(part) error) error {
		var errs error
		for _, h := range hs {
			errs = errors.Join(errs, f(h))
		}
		return errs
	}
	ack := func() error { return all(func(h part) error { return h.ack() }) }
	term := func() error { return all(func(h part) error { return h.term() }) }
	var nak func(time.Duration) error
	if p.nak != nil {
		nak = func(delay time.Duration) error { return all(func(h part) error { return h.nak(delay) }) }
	}
	return out.Whole, hs[len(hs)-1].seq, ack, term, nak, true
}

// drop acknowledges the parts of a split scrape given up without delivery.
func (d *Drain) drop(dr assemble.Dropped[part]) {
	reason := "corrupt"
	switch {
	case errors.Is(dr.Err, assemble.ErrSuperseded):
		reason = "superseded"
	case errors.Is(dr.Err, assemble.ErrTimeout):
		reason = "timeout"
	}
	d.metrics.partsDropped.WithLabelValues(reason).Inc()
	level := slog.LevelWarn
	if reason == "superseded" {
		level = slog.LevelDebug
	}
	d.logger.Log(context.Background(), level, "split scrape given up", "job", dr.Job, "instance", dr.Instance,
		"publisher", dr.Publisher, "start", dr.Start, "parts", dr.Parts, "missing", dr.Missing, "reason", reason, "err", dr.Err)
	for _, h := range dr.Handles {
		if reason == "corrupt" {
			d.ack(h.term, h.seq)
		} else {
			d.ack(h.ack, h.seq)
		}
	}
}

// target returns the target of key, made if new. Called with d.mu held.
func (d *Drain) target(key string) *target {
	t := d.targets[key]
	if t != nil {
		return t
	}
	t = &target{key: key}
	if old := d.forgotten[key]; old != nil {
		// Back after a silence: keep what the page showed, the sinks' last successes.
		t.status = old.status
		delete(d.forgotten, key)
	} else {
		t.status.sinks = make([]sinkState, len(d.sinks))
	}
	d.targets[key] = t
	d.metrics.targets.Set(float64(len(d.targets)))
	return t
}

// place puts dl where it belongs in t and returns the delivery it made redundant, to be
// acknowledged, if any. Called with d.mu held.
func (d *Drain) place(t *target, dl *delivery) (superseded *delivery) {
	s := dl.env.Start
	switch {
	case !s.After(t.delivered) && !t.delivered.IsZero():
		return dl // older than, or the same as, what the sinks have
	case t.inflight != nil && s.Equal(t.inflight.env.Start):
		// A redelivery of the scrape a worker is delivering: adopt the newest handle,
		// which belongs to the live subscription, and acknowledge through it later.
		t.inflight.ack, t.inflight.term, t.inflight.nak, t.inflight.seq = dl.ack, dl.term, dl.nak, dl.seq
		return nil
	case t.inflight != nil && s.Before(t.inflight.env.Start):
		return dl
	case t.retry != nil && s.Before(t.retry.start):
		return dl // a newer scrape is handed back to the server, to come again
	case t.pending == nil:
		t.pending = dl
		return nil
	case s.Equal(t.pending.env.Start):
		t.pending.ack, t.pending.term, t.pending.nak, t.pending.seq = dl.ack, dl.term, dl.nak, dl.seq
		return nil
	case s.Before(t.pending.env.Start):
		return dl
	default:
		old := t.pending
		t.pending = dl
		return old
	}
}

func (d *Drain) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *Drain) ack(ack func() error, seq uint64) {
	if err := ack(); err != nil {
		// The stream redelivers it; its fate will be decided again then.
		d.metrics.ackErrors.Inc()
		d.logger.Debug("ack failed", "seq", seq, "err", err)
	}
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

func (d *Drain) work(ctx context.Context) {
	for {
		t := d.next(ctx)
		if t == nil {
			return
		}
		for {
			d.mu.Lock()
			dl := t.pending
			t.pending, t.inflight = nil, dl
			if dl == nil {
				t.busy = false
				d.mu.Unlock()
				break
			}
			d.mu.Unlock()
			if !d.deliver(ctx, t, dl) {
				return // ctx ended: leave it unacknowledged
			}
		}
	}
}

// next waits for a target with a pending scrape.
func (d *Drain) next(ctx context.Context) *target {
	for {
		d.mu.Lock()
		if len(d.ready) > 0 {
			t := d.ready[0]
			d.ready[0] = nil
			d.ready = d.ready[1:]
			if len(d.ready) > 0 {
				d.signal() // another worker can take the next one
			}
			d.mu.Unlock()
			return t
		}
		d.mu.Unlock()
		select {
		case <-d.wake:
		case <-ctx.Done():
			return nil
		}
	}
}

// deliver takes dl to every sink, retrying what can be retried, and acknowledges it once
// its fate is final. It returns false when ctx ended first.
func (d *Drain) deliver(ctx context.Context, t *target, dl *delivery) bool {
	var buf [4]sinkResult // on the stack for up to four sinks: no allocation per message
	res := buf[:]
	if len(d.sinks) > len(buf) {
		res = make([]sinkResult, len(d.sinks))
	}
	res = res[:len(d.sinks)]
	s, err := d.prepare(dl.env)
	if err != nil {
		d.metrics.rejected.WithLabelValues("invalid_body").Inc()
		d.logger.Warn("message rejected", "job", dl.env.Job, "instance", dl.env.Instance, "publisher", dl.env.Publisher, "reason", "invalid_body", "err", err)
		d.mu.Lock()
		dl.poison = true // never to be redelivered
		d.mu.Unlock()
		d.finish(t, dl, false, settle(res, FateRejected, "invalid body: "+errorText(err), d.opts.Now()))
		return true
	}
	first := 0
	d.mu.Lock()
	if r := t.retry; r != nil && r.start.Equal(dl.env.Start) {
		// The server's redelivery of a scrape handed back: go on where it stopped.
		first = r.attempt
		copy(res, r.res)
	}
	t.retry = nil
	d.mu.Unlock()
	for attempt := first; ; attempt++ {
		if age := d.opts.Now().Sub(dl.env.Start); age > d.opts.MaxAge {
			d.metrics.expired.Inc()
			d.logger.Warn("scrape expired before delivery", "job", dl.env.Job, "instance", dl.env.Instance, "age", age.Round(time.Millisecond))
			d.finish(t, dl, false, settle(res, FateExpired, "", d.opts.Now()))
			return true
		}
		if d.newer(t, dl) {
			// The target's status already shows the newer scrape: nothing to record.
			d.metrics.superseded.Inc()
			d.finish(t, dl, false, res)
			return true
		}
		var retry error
		for i, sink := range d.sinks {
			r := &res[i]
			if r.fate != "" && r.fate != FateRetrying {
				continue
			}
			start := time.Now()
			err := sink.Deliver(ctx, s)
			d.metrics.pushDuration.WithLabelValues(sink.Name()).Observe(time.Since(start).Seconds())
			now := d.opts.Now()
			switch {
			case err == nil:
				r.fate, r.err = FateDelivered, ""
				d.metrics.delivered.WithLabelValues(sink.Name()).Inc()
				d.metrics.lag.Observe(now.Sub(dl.env.Start).Seconds())
			case errors.Is(err, ErrSuperseded):
				r.fate, r.err = FateSuperseded, ""
				d.metrics.sinkSuperseded.WithLabelValues(sink.Name()).Inc()
			case errors.Is(err, ErrRejected):
				r.fate, r.err = FateRejected, errorText(err)
				d.metrics.sinkRejected.WithLabelValues(sink.Name()).Inc()
				d.logger.Warn("sink rejected scrape", "sink", sink.Name(), "job", dl.env.Job, "instance", dl.env.Instance, "publisher", dl.env.Publisher, "err", err)
			case ctx.Err() != nil:
				return false
			default:
				r.fate, r.err = FateRetrying, errorText(err)
				retry = errors.Join(retry, err)
			}
			r.at = now
			r.attempts++
		}
		if retry == nil {
			d.finish(t, dl, true, res)
			return true
		}
		d.metrics.retries.Inc()
		d.mu.Lock()
		t.status.record(dl.env.Start, res)
		d.mu.Unlock()
		delay := d.backoff(attempt)
		level := slog.LevelDebug
		if attempt == 0 || attempt%10 == 9 {
			level = slog.LevelWarn // the first failure and every tenth: enough to see an outage
		}
		d.logger.Log(ctx, level, "delivery failed, will retry", "job", dl.env.Job, "instance", dl.env.Instance, "attempt", attempt+1, "retry_in", delay.Round(time.Millisecond), "err", retry)
		d.mu.Lock()
		canNak := dl.nak != nil // a redelivery's handle may replace dl's: read under the lock
		d.mu.Unlock()
		if canNak {
			d.handBack(t, dl, attempt+1, res, delay)
			return true
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return false
		}
	}
}

// settle gives fate to every sink whose fate is not final yet.
func settle(res []sinkResult, fate Fate, reason string, now time.Time) []sinkResult {
	for i := range res {
		if r := &res[i]; r.fate == "" || r.fate == FateRetrying {
			r.fate, r.err, r.at = fate, reason, now
		}
	}
	return res
}

// newer reports whether a newer scrape of t arrived while dl was being delivered.
func (d *Drain) newer(t *target, dl *delivery) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return t.pending != nil && t.pending.env.Start.After(dl.env.Start)
}

// finish acknowledges dl, whose fate is final, and records what the sinks now have and
// what became of dl in each.
func (d *Drain) finish(t *target, dl *delivery, delivered bool, res []sinkResult) {
	d.mu.Lock()
	if delivered || dl.env.Start.After(t.delivered) {
		// Also a rejected or expired scrape: nothing older may follow it.
		t.delivered = dl.env.Start
	}
	t.inflight = nil
	t.status.record(dl.env.Start, res)
	ack, seq := dl.ack, dl.seq
	if dl.poison {
		ack = dl.term
	}
	d.mu.Unlock()
	d.ack(ack, seq)
}

// handBack has the server redeliver dl after delay, remembering which sinks have it
// and which attempt comes next, and frees the worker.
func (d *Drain) handBack(t *target, dl *delivery, attempt int, res []sinkResult, delay time.Duration) {
	d.mu.Lock()
	t.retry = &retry{start: dl.env.Start, attempt: attempt, res: append([]sinkResult(nil), res...)}
	t.inflight = nil
	nak, seq := dl.nak, dl.seq
	d.mu.Unlock()
	if err := nak(delay); err != nil {
		// The server redelivers it after AckWait instead.
		d.metrics.ackErrors.Inc()
		d.logger.Debug("nak failed", "seq", seq, "err", err)
	}
}

// backoff is the delay before retry attempt+1: exponential, capped, with jitter so that
// many targets waiting on one gateway do not retry in step.
func (d *Drain) backoff(attempt int) time.Duration {
	delay := d.opts.MinBackoff << min(attempt, 20)
	if delay > d.opts.MaxBackoff || delay <= 0 {
		delay = d.opts.MaxBackoff
	}
	return delay/2 + rand.N(delay/2+1)
}

// prepare parses and labels the scrape once for all sinks.
func (d *Drain) prepare(env *envelope.Envelope) (*Scrape, error) {
	labels := make([]exposition.Label, len(env.Labels))
	for i, l := range env.Labels {
		labels[i] = exposition.Label{Name: l.Name, Value: l.Value}
	}
	s := &Scrape{
		Envelope: env,
		Target:   exposition.Target{Job: env.Job, Instance: env.Instance, Labels: labels, HonorLabels: env.HonorLabels},
	}
	up := env.Error == ""
	if up {
		fams, err := exposition.Parse(env.Body, env.ContentType)
		if err != nil {
			return nil, fmt.Errorf("parse body: %w", err)
		}
		exposition.Attach(fams, s.Target)
		s.Families = fams
	}
	s.Health = exposition.Health(s.Target, exposition.Outcome{Up: up, Start: env.Start, Duration: env.Duration, Samples: env.Series})
	return s, nil
}

func (d *Drain) sweepLoop(ctx context.Context) {
	tick := time.NewTicker(d.opts.SweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		d.Sweep(ctx)
	}
}

// Sweep forgets targets not heard from for max_age and asks every Sweeper sink to remove
// them too; Targets lists them as stale for StaleRetention more. Run calls it
// periodically.
func (d *Drain) Sweep(ctx context.Context) {
	now := d.opts.Now()
	for _, dr := range d.parts.Expire(now) {
		d.drop(dr)
	}
	d.mu.Lock()
	for k, t := range d.targets {
		if !t.busy && now.Sub(t.lastSeen) > d.opts.MaxAge {
			delete(d.targets, k)
			if d.opts.StaleRetention > 0 && !t.status.received.IsZero() {
				d.forgotten[k] = t
			}
		}
	}
	for k, t := range d.forgotten {
		if now.Sub(t.lastSeen) > d.opts.MaxAge+d.opts.StaleRetention {
			delete(d.forgotten, k)
		}
	}
	d.metrics.targets.Set(float64(len(d.targets)))
	d.mu.Unlock()
	for _, s := range d.sinks {
		if sw, ok := s.(Sweeper); ok {
			if err := sw.Sweep(ctx, now, d.opts.MaxAge); err != nil && ctx.Err() == nil {
				d.logger.Warn("sweep failed", "sink", s.Name(), "err", err)
			}
		}
	}
}

// StreamState records whether the drain is subscribed to one of its streams (named by
// stream), and why not. The drain is subscribed when it is to all Options.Streams.
func (d *Drain) StreamState(stream string, connected bool, err error) {
	d.smu.Lock()
	if d.streams == nil {
		d.streams = map[string]bool{}
	}
	was := d.streams[stream]
	d.streams[stream] = connected
	all := len(d.streams) >= max(d.opts.Streams, 1)
	for _, c := range d.streams {
		all = all && c
	}
	d.subscribed.Store(all)
	d.smu.Unlock()
	if all {
		d.metrics.connected.Set(1)
	} else {
		d.metrics.connected.Set(0)
	}
	switch {
	case connected && !was:
		d.logger.Info("subscribed to the stream", "stream", stream)
	case !connected:
		d.logger.Warn("not subscribed to the stream", "stream", stream, "err", err)
	}
}

// Ready reports whether the drain is subscribed: what /healthz answers.
func (d *Drain) Ready() bool { return d.subscribed.Load() }

// ShardOf is the shard, of shards, that a target belongs to: a hash of its job and
// instance, stable across releases and hosts, so every drain of a shard set agrees.
func ShardOf(job, instance string, shards int) int {
	if shards <= 1 {
		return 0
	}
	var d xxhash.Digest
	_, _ = d.WriteString(job)
	_, _ = d.Write([]byte{0xff})
	_, _ = d.WriteString(instance)
	return int(d.Sum64() % uint64(shards))
}

// decodeReason names why an envelope could not be decoded, for the rejected counter.
func decodeReason(err error) string {
	switch {
	case errors.Is(err, envelope.ErrUnknownVersion):
		return "unknown_version"
	case errors.Is(err, envelope.ErrUnsupported):
		return "unsupported"
	case errors.Is(err, envelope.ErrTooLarge):
		return "too_large"
	case errors.Is(err, envelope.ErrNotEnvelope):
		return "not_an_envelope"
	case errors.Is(err, envelope.ErrBadSignature):
		return reasonBadSignature
	default:
		return "corrupt"
	}
}
