// Package remotewrite is the drain's remote-write sink: it sends every scrape to a
// Prometheus remote-write receiver (Prometheus, Mimir, Thanos Receive, VictoriaMetrics),
// in remote-write 1.0 (prometheus.WriteRequest) or 2.0 (io.prometheus.write.v2.Request).
//
// Samples keep their scrape's time (or the target's own timestamp), and the sink keeps
// what Prometheus's scrape loop keeps to end series: each target's last series set. A
// series that disappears from a target, and every series of a target whose scrape fails
// or whose scrapes stop arriving for max_age, gets a staleness marker, so queries stop
// showing it at once rather than after the 5-minute lookback.
//
// Scrapes of different targets share requests (up to max_samples_per_send samples), sent
// by a bounded set of senders, as Prometheus's shards send: when a request is full or
// batch_send_deadline has passed since its first scrape came. While a target's request
// waits so, the target's next scrapes join it (sink.Follower), and each learns its fate
// from that request's answer. A request refused with a 4xx is sent again per target, and
// a target's scrapes in it one by one, so one bad scrape never takes others down with it.
// While the receiver fails, one request goes at a time with a growing backoff (pace).
package remotewrite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	remote "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"

	"github.com/prometheus-streams/prometheus-streams/sink"
)

// Sink is one remote-write endpoint.
type Sink struct {
	name   string
	sender *sender
	logger *slog.Logger
	now    func() time.Time

	enc *zstd.Encoder
	dec *zstd.Decoder

	mu      sync.Mutex
	targets map[string]*target

	tracked prometheus.Gauge
	stale   prometheus.Counter
}

// target is what the sink remembers of one target: enough to end its series.
type target struct {
	mu   sync.Mutex
	gone bool // swept: a new scrape makes a new target

	start time.Time // the newest scrape the receiver has
	last  int64     // its timestamp in milliseconds
	// tried is when the drain last handed the sink a scrape of the target, taken or not:
	// while it keeps trying (a receiver outage), the target has not stopped.
	tried time.Time
	// hashes are the label-set hashes of its series that end with a staleness marker,
	// sorted; sets holds their label sets in the same order, compressed. A new scrape
	// with the same series keeps both as they are.
	hashes []uint64
	sets   []byte
}

// New returns a sink writing to the endpoint o describes; Close stops it.
func New(o Options, logger *slog.Logger, reg prometheus.Registerer) (*Sink, error) {
	logger = logger.With("sink", "remote_write", "remote", o.Name)
	snd, err := newSender(o, logger, reg)
	if err != nil {
		return nil, err
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		snd.close()
		return nil, fmt.Errorf("remote write: %w", err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		snd.close()
		return nil, fmt.Errorf("remote write: %w", err)
	}
	s := &Sink{
		name: o.Name, sender: snd, logger: logger, now: o.Now,
		enc: enc, dec: dec,
		targets: map[string]*target{},
		tracked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "prometheus_streams_remote_write_series_tracked", ConstLabels: prometheus.Labels{"remote": o.Name},
			Help: "Series whose end the sink will mark stale: the targets' last series sets.",
		}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "prometheus_streams_remote_write_stale_markers_total", ConstLabels: prometheus.Labels{"remote": o.Name},
			Help: "Staleness markers sent: series that disappeared from a target, or whose target failed or expired.",
		}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.tracked, s.stale} {
			if err := reg.Register(c); err != nil {
				s.Close()
				return nil, fmt.Errorf("remote write %s: register metrics: %w", o.Name, err)
			}
		}
	}
	return s, nil
}

// Name identifies the sink in the drain's metrics and logs.
func (s *Sink) Name() string { return "remote_write:" + s.name }

// Close stops the senders; scrapes waiting for them fail, to be redelivered.
func (s *Sink) Close() {
	s.sender.close()
	s.enc.Close()
	s.dec.Close()
}

// Kind: the receiver holds every scrape, as history.
func (s *Sink) Kind() sink.Kind { return sink.History }

// Saturated implements sink.Pressured: while the drain holds all it may take from its
// streams, a request waiting to fill goes at once rather than wait for
// batch_send_deadline, since nothing more can join it until some request is answered.
func (s *Sink) Saturated(on bool) {
	s.sender.saturated.Store(on)
	if on {
		s.sender.flushAll()
	}
}

// Deliver writes a scrape: its samples and health at the scrape's time, and staleness
// markers for the series its target had and no longer has.
func (s *Sink) Deliver(ctx context.Context, sc *sink.Scrape) error {
	var errs [1]error
	s.DeliverBatch(ctx, []*sink.Scrape{sc}, errs[:])
	return errs[0]
}

// DeliverBatch writes several scrapes of one target, oldest first, in one request when
// they fit: the backlog of a target after an outage of the receiver. Each sample keeps
// its scrape's time, and a series that disappears between two of the scrapes is marked
// stale at the later one, as Prometheus's scrape loop would have marked it. A batch the
// receiver refuses for good is written again scrape by scrape, so that one bad scrape
// fails alone.
func (s *Sink) DeliverBatch(ctx context.Context, scs []*sink.Scrape, errs []error) {
	copy(errs, s.DeliverFollowing(ctx, scs, nil))
}

// DeliverFollowing is DeliverBatch that, while the request carrying the scrapes waits to
// be sent (batch_send_deadline), also puts the target's scrapes that arrive meanwhile
// into it (sink.Follower): one request carries them all, and each gets its fate when
// that request is answered.
func (s *Sink) DeliverFollowing(ctx context.Context, scs []*sink.Scrape, later sink.Later) []error {
	if len(scs) == 0 {
		return nil
	}
	key := scs[0].Key()
	for {
		t := s.target(key)
		t.mu.Lock()
		if t.gone {
			t.mu.Unlock()
			continue
		}
		t.tried = s.now()
		errs := s.follow(ctx, t, scs, later)
		t.mu.Unlock()
		return errs
	}
}

func (s *Sink) target(key string) *target {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.targets[key]
	if t == nil {
		t = &target{}
		s.targets[key] = t
	}
	return t
}

// tracking is a target's series set as the scrapes of a batch move it on: the series to
// end with a marker when they disappear.
type tracking struct {
	start  time.Time
	last   int64
	hashes []uint64 // sorted
	sets   []byte   // the label sets, compressed, as in target; nil once ended is set
	ended  []ended  // the label sets, in the order of hashes, when known uncompressed
}

// request is what writing some scrapes of a target after what the receiver has of it
// takes: their samples and markers, and the tracking after them.
type request struct {
	cur   tracking
	out   []series
	metas []meta
	in    []int // the scrapes in it, by index
	stale int   // markers in it
}

// add puts scs[from:] (all of t, after those before from) into r, or sets their errs
// when they need no writing: a redelivery, a scrape older than the receiver's newest, or
// one beyond sample_age_limit. On an error it leaves r as it was.
func (s *Sink) add(r *request, scs []*sink.Scrape, errs []error, from int) error {
	cur, out, metas, in, stale := r.cur, r.out, r.metas, r.in, r.stale
	for i := from; i < len(scs); i++ {
		start := scs[i].Envelope.Start
		switch {
		case start.Before(cur.start):
			errs[i] = sink.ErrSuperseded
			continue
		case start.Equal(cur.start):
			errs[i] = nil // a redelivery of what the receiver has
			continue
		case s.sender.o.SampleAgeLimit > 0 && s.now().Sub(start) > s.sender.o.SampleAgeLimit:
			s.sender.rejected.WithLabelValues("too_old").Inc()
			errs[i] = fmt.Errorf("%w: remote write %s: older than sample_age_limit %s", sink.ErrRejected, s.name, s.sender.o.SampleAgeLimit)
			continue
		}
		// Appended in place: on an error r still has its length, and what was appended
		// past it is not r's.
		o, m, next, gone, err := s.next(out, metas, &cur, scs[i])
		if err != nil {
			return err
		}
		out, metas = o, m
		cur, stale = next, stale+gone
		in = append(in, i)
	}
	r.cur, r.out, r.metas, r.in, r.stale = cur, out, metas, in, stale
	return nil
}

// follow writes scs (all of t) in one request and returns their fates; with later, the
// scrapes of t that later hands over while the request waits to be sent join it, and
// their fates follow. Called with t.mu held.
func (s *Sink) follow(ctx context.Context, t *target, scs []*sink.Scrape, later sink.Later) []error {
	errs := make([]error, len(scs))
	r := request{cur: tracking{start: t.start, last: t.last, hashes: t.hashes, sets: t.sets}}
	if err := s.add(&r, scs, errs, 0); err != nil {
		return fill(errs, err)
	}
	if len(r.in) == 0 {
		return errs
	}
	e, err := s.sender.enqueue(ctx, r.out, r.metas)
	if err != nil {
		return fill(errs, err)
	}
	var arrived <-chan struct{}
	if later != nil {
		arrived = later.Arrived()
	}
	for {
		select {
		case err = <-e.done:
		case <-ctx.Done():
			return fill(errs, ctx.Err()) // the request goes on; a retry of the scrapes is harmless
		case <-arrived:
			stop := false
			open := e.join(func(ss []series, ms []meta) ([]series, []meta) {
				if len(ss) >= s.sender.o.MaxSamplesPerSend {
					stop = true // full: the next scrapes go in the next request
					return ss, ms
				}
				more := later.Next()
				if len(more) == 0 {
					return ss, ms
				}
				from := len(scs)
				scs, errs = append(scs, more...), append(errs, make([]error, len(more))...)
				r.out, r.metas = ss, ms
				if err := s.add(&r, scs, errs, from); err != nil {
					fill(errs[from:], err) // retryable, and nothing later may be written before them
					stop = true
				}
				return r.out, r.metas
			})
			if !open || stop {
				arrived = nil // what comes now waits for the next call
			}
			continue
		}
		break
	}
	s.settle(ctx, t, &r, scs, errs, err)
	return errs
}

// fill sets every error of errs to err, and returns errs.
func fill(errs []error, err error) []error {
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// deliver writes scs (all of t) in one request and sets errs, without following: for
// the scrapes of a refused request written again one by one. Called with t.mu held.
func (s *Sink) deliver(ctx context.Context, t *target, scs []*sink.Scrape, errs []error) {
	r := request{cur: tracking{start: t.start, last: t.last, hashes: t.hashes, sets: t.sets}}
	if err := s.add(&r, scs, errs, 0); err != nil {
		fill(errs, err)
		return
	}
	if len(r.in) == 0 {
		return
	}
	s.settle(ctx, t, &r, scs, errs, s.sender.write(ctx, r.out, r.metas))
}

// settle records the answer err to request r of scs (all of t): the receiver now holds
// them, or, when it refused a request of several scrapes for good, they are written
// again one by one in order, so that a bad scrape fails alone and each other scrape's
// markers come from the scrape the receiver has before it. Called with t.mu held.
func (s *Sink) settle(ctx context.Context, t *target, r *request, scs []*sink.Scrape, errs []error, err error) {
	if err != nil && len(r.in) > 1 && !sink.Retryable(err) {
		for k, i := range r.in {
			s.deliver(ctx, t, scs[i:i+1], errs[i:i+1])
			if sink.Retryable(errs[i]) {
				for _, j := range r.in[k+1:] {
					errs[j] = errs[i]
				}
				return
			}
		}
		return
	}
	for _, i := range r.in {
		errs[i] = err
	}
	if err != nil {
		return
	}
	cur := r.cur
	if r.stale > 0 {
		s.stale.Add(float64(r.stale))
	}
	if cur.sets == nil {
		buf := make([]byte, 0, trackedBytes*len(cur.ended))
		var prev []prompb.Label
		for _, e := range cur.ended {
			buf = appendTracked(buf, prev, e.labels, meta{typ: e.typ, unit: e.unit}, e.kind)
			prev = e.labels
		}
		cur.sets = s.enc.EncodeAll(buf, make([]byte, 0, len(buf)/4))
	}
	s.tracked.Add(float64(len(cur.hashes) - len(t.hashes)))
	t.start, t.last, t.hashes, t.sets = cur.start, cur.last, cur.hashes, cur.sets
}

// next appends to out and metas what writing sc after cur takes: its samples and health
// at the scrape's time, and markers for cur's series that sc lacks; it returns them with
// the tracking after sc and the number of markers.
func (s *Sink) next(out []series, metas []meta, cur *tracking, sc *sink.Scrape) ([]series, []meta, tracking, int, error) {
	ts := sc.Envelope.Start.UnixMilli()
	nhcb := s.sender.o.Message == remote.WriteV2MessageType
	keep := sc.Envelope.Histograms.AlwaysClassic
	from := len(out)
	// Room for as many series as the target had last time, and its health.
	out = slices.Grow(out, len(cur.hashes)+8)
	out, metas = flatten(out, metas, sc.Families, ts, cur.last, nhcb, keep)
	out, metas = flatten(out, metas, sc.Health, ts, cur.last, nhcb, keep)

	// The series this scrape tracks for staleness, by the hash of their labels: in the
	// order of the exposition, and sorted without duplicates.
	var buf []byte
	type tracked struct {
		h uint64
		i int
	}
	exp := make([]tracked, 0, len(out)-from)
	for i := from; i < len(out); i++ {
		if !out[i].stamped {
			exp = append(exp, tracked{hashLabels(&buf, out[i].labels), i})
		}
	}
	hashes := make([]uint64, len(exp))
	for k, e := range exp {
		hashes[k] = e.h
	}
	slices.Sort(hashes)
	hashes = slices.Compact(hashes)

	// Series of the last scrape missing from this one end now. A marker must come after
	// the series' last sample: a scrape's time only moves forward, so it does.
	gone, err := s.missing(cur, hashes)
	if err != nil {
		return nil, nil, tracking{}, 0, err
	}
	out, metas = appendStale(out, metas, gone, max(ts, cur.last+1))
	next := tracking{start: sc.Envelope.Start, last: ts, hashes: hashes}
	if slices.Equal(hashes, cur.hashes) {
		next.sets, next.ended = cur.sets, cur.ended
	} else {
		// In the order of the exposition, which appendTracked encodes best; a series
		// the scrape has twice once.
		var seen map[uint64]bool
		if len(hashes) < len(exp) {
			seen = make(map[uint64]bool, len(hashes))
		}
		next.ended = make([]ended, 0, len(hashes))
		for _, e := range exp {
			if seen != nil {
				if seen[e.h] {
					continue
				}
				seen[e.h] = true
			}
			ser := &out[e.i]
			m := metas[ser.meta]
			next.ended = append(next.ended, ended{labels: ser.labels, typ: m.typ, unit: m.unit, kind: ser.kind()})
		}
	}
	return out, metas, next, len(gone), nil
}

// appendStale adds a staleness marker at ts for each ended series, with its type and
// unit. A native histogram's marker is a histogram of the same kind with StaleNaN as its
// sum, as Prometheus's TSDB stores it and its remote write sends it.
func appendStale(out []series, metas []meta, gone []ended, ts int64) ([]series, []meta) {
	for _, e := range gone {
		s := series{labels: e.labels, t: ts, v: staleNaN, meta: int32(len(metas))}
		switch e.kind {
		case kindHistogram:
			s.h = &histogram.Histogram{Sum: staleNaN}
		case kindFloatHistogram:
			s.fh = &histogram.FloatHistogram{Sum: staleNaN}
		}
		out = append(out, s)
		metas = append(metas, meta{typ: e.typ, unit: e.unit}) // no name: no 1.0 metadata
	}
	return out, metas
}

// missing returns the tracked series of cur whose hashes are not in now.
func (s *Sink) missing(cur *tracking, now []uint64) ([]ended, error) {
	var gone []uint64 // sorted, as cur.hashes
	j := 0
	for _, h := range cur.hashes {
		for j < len(now) && now[j] < h {
			j++
		}
		if j == len(now) || now[j] != h {
			gone = append(gone, h)
		}
	}
	if len(gone) == 0 {
		return nil, nil
	}
	// The sets are in the order of the exposition, not of the hashes: each one's hash
	// says whether it is gone.
	var buf []byte
	isGone := func(ls []prompb.Label) bool {
		_, found := slices.BinarySearch(gone, hashLabels(&buf, ls))
		return found
	}
	out := make([]ended, 0, len(gone))
	if cur.ended != nil {
		for _, e := range cur.ended {
			if isGone(e.labels) {
				out = append(out, e)
			}
		}
		return out, nil
	}
	raw, err := s.dec.DecodeAll(cur.sets, nil)
	if err != nil {
		return nil, fmt.Errorf("remote write: read the target's last series: %w", err)
	}
	var prev []prompb.Label
	for range cur.hashes {
		e, rest, ok := readTracked(raw, prev)
		if !ok {
			return nil, errors.New("remote write: the target's last series are corrupt")
		}
		raw, prev = rest, e.labels
		if isGone(e.labels) {
			out = append(out, e)
		}
	}
	return out, nil
}

// trackedBytes is about what appendTracked writes of a series: room enough, most times,
// for a target's sets in one allocation.
const trackedBytes = 40

// Sweep ends the series of every target not scraped for maxAge, and not handed a
// scrape for as long: their staleness markers go out at now, and the sink forgets the
// target.
func (s *Sink) Sweep(ctx context.Context, now time.Time, maxAge time.Duration) error {
	s.mu.Lock()
	var old []*target
	var keys []string
	for k, t := range s.targets {
		old = append(old, t)
		keys = append(keys, k)
	}
	s.mu.Unlock()
	var errs []error
	for i, t := range old {
		if !t.mu.TryLock() {
			continue // being delivered to: not stale
		}
		// A target stops when its newest scrape is older than maxAge and the drain has
		// not tried to hand it a newer one for as long: after an outage of the receiver
		// the drain still holds newer scrapes, which markers at now would hide.
		if t.gone || t.start.IsZero() || now.Sub(t.start) <= maxAge || now.Sub(t.tried) <= maxAge {
			t.mu.Unlock()
			continue
		}
		if err := s.expire(ctx, t, now); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", keys[i], err))
			t.mu.Unlock()
			continue
		}
		t.gone = true
		s.mu.Lock()
		if s.targets[keys[i]] == t {
			delete(s.targets, keys[i])
		}
		s.mu.Unlock()
		t.mu.Unlock()
		s.logger.Info("target expired: its series are marked stale", "target", keys[i], "series", len(t.hashes), "last_scrape", t.start)
	}
	return errors.Join(errs...)
}

// expire sends a staleness marker for every tracked series of t.
func (s *Sink) expire(ctx context.Context, t *target, now time.Time) error {
	gone, err := s.missing(&tracking{hashes: t.hashes, sets: t.sets}, nil)
	if err != nil {
		return err
	}
	out, metas := appendStale(nil, nil, gone, max(now.UnixMilli(), t.last+1))
	if len(out) > 0 {
		if err := s.sender.write(ctx, out, metas); sink.Retryable(err) {
			return err // retried at the next sweep
		}
	}
	s.stale.Add(float64(len(out)))
	s.tracked.Sub(float64(len(t.hashes)))
	return nil
}
