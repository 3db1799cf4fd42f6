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
// by a bounded set of senders as soon as one is free: under load requests fill up, when
// idle a scrape goes at once. A request refused with a 4xx is sent again per target, so
// one bad scrape never takes others down with it.
package remotewrite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/prometheus-streams/prometheus-streams/lib/sink"
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

// Deliver writes a scrape: its samples and health at the scrape's time, and staleness
// markers for the series its target had and no longer has.
func (s *Sink) Deliver(ctx context.Context, sc *sink.Scrape) error {
	key := sc.Key()
	for {
		t := s.target(key)
		t.mu.Lock()
		if t.gone {
			t.mu.Unlock()
			continue
		}
		err := s.deliver(ctx, t, sc)
		t.mu.Unlock()
		return err
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

func (s *Sink) deliver(ctx context.Context, t *target, sc *sink.Scrape) error {
	start := sc.Envelope.Start
	switch {
	case start.Before(t.start):
		return sink.ErrSuperseded
	case start.Equal(t.start):
		return nil // a redelivery of what the receiver has
	}
	ts := start.UnixMilli()
	out, metas := flatten(nil, nil, sc.Families, ts)
	out, metas = flatten(out, metas, sc.Health, ts)

	// The series this scrape tracks for staleness, sorted by hash, without duplicates.
	var d xxhash.Digest
	type tracked struct {
		h uint64
		i int
	}
	cur := make([]tracked, 0, len(out))
	for i := range out {
		if !out[i].stamped {
			cur = append(cur, tracked{hashLabels(&d, out[i].labels), i})
		}
	}
	slices.SortFunc(cur, func(a, b tracked) int {
		switch {
		case a.h < b.h:
			return -1
		case a.h > b.h:
			return 1
		}
		return 0
	})
	cur = slices.CompactFunc(cur, func(a, b tracked) bool { return a.h == b.h })
	hashes := make([]uint64, len(cur))
	for i, c := range cur {
		hashes[i] = c.h
	}

	// Series of the last scrape missing from this one end now. A marker must come after
	// the series' last sample: a scrape's time only moves forward, so it does.
	gone, err := s.missing(t, hashes)
	if err != nil {
		return err
	}
	out, metas = appendStale(out, metas, gone, max(ts, t.last+1))
	if err := s.sender.write(ctx, out, metas); err != nil {
		return err
	}
	if len(gone) > 0 {
		s.stale.Add(float64(len(gone)))
	}
	sets := t.sets
	if !slices.Equal(hashes, t.hashes) {
		var buf []byte
		for _, c := range cur {
			buf = appendTracked(buf, out[c.i].labels, metas[out[c.i].meta])
		}
		sets = s.enc.EncodeAll(buf, make([]byte, 0, len(buf)/4))
	}
	s.tracked.Add(float64(len(hashes) - len(t.hashes)))
	t.start, t.last, t.hashes, t.sets = start, ts, hashes, sets
	return nil
}

// appendStale adds a staleness marker at ts for each ended series, with its type and unit.
func appendStale(out []series, metas []meta, gone []ended, ts int64) ([]series, []meta) {
	for _, e := range gone {
		out = append(out, series{labels: e.labels, t: ts, v: staleNaN, meta: int32(len(metas))})
		metas = append(metas, meta{typ: e.typ, unit: e.unit}) // no name: no 1.0 metadata
	}
	return out, metas
}

// missing returns t's tracked series whose hashes are not in now.
func (s *Sink) missing(t *target, now []uint64) ([]ended, error) {
	var idx []int
	j := 0
	for i, h := range t.hashes {
		for j < len(now) && now[j] < h {
			j++
		}
		if j == len(now) || now[j] != h {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil, nil
	}
	raw, err := s.dec.DecodeAll(t.sets, nil)
	if err != nil {
		return nil, fmt.Errorf("remote write: read the target's last series: %w", err)
	}
	out := make([]ended, 0, len(idx))
	for i, k := 0, 0; i < len(t.hashes) && k < len(idx); i++ {
		e, rest, ok := readTracked(raw)
		if !ok {
			return nil, errors.New("remote write: the target's last series are corrupt")
		}
		raw = rest
		if i == idx[k] {
			out = append(out, e)
			k++
		}
	}
	return out, nil
}

// Sweep ends the series of every target not scraped for maxAge: their staleness markers
// go out at now, and the sink forgets the target.
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
		if t.gone || t.start.IsZero() || now.Sub(t.start) <= maxAge {
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
	gone, err := s.missing(t, nil)
	if err != nil {
		return err
	}
	out, metas := appendStale(nil, nil, gone, max(now.UnixMilli(), t.last+1))
	if len(out) > 0 {
		if err := s.sender.write(ctx, out, metas); err != nil && !errors.Is(err, sink.ErrRejected) && !errors.Is(err, sink.ErrSuperseded) {
			return err // retried at the next sweep
		}
	}
	s.stale.Add(float64(len(out)))
	s.tracked.Sub(float64(len(t.hashes)))
	return nil
}
