package drain

import (
	"context"
	"errors"
	"sync"

	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// Restore rebuilds, at start, what a restarted drain's memory held: each target's newest
// scrape younger than max_age, read again from the stream, for /targets and for the state
// sinks that keep their state in the drain's memory (sink.Volatile: the expose endpoint).
// Without it they would be empty until each target's next scrape, and a Prometheus
// scraping the drain would see every target vanish at each restart. Nothing goes to the
// other sinks, which still hold what they held: the durable consumer redelivers to them
// what was not acknowledged.
//
// Add takes the stream's messages in any order; Apply delivers. The drain is not ready
// (Ready) from NewRestore until Apply returns.
type Restore struct {
	d      *Drain
	mu     sync.Mutex
	newest map[string]*envelope.Envelope
	read   int
}

// NewRestore starts a restore: the drain is not ready until Apply.
func (d *Drain) NewRestore() *Restore {
	d.restoring.Add(1)
	return &Restore{d: d, newest: map[string]*envelope.Envelope{}}
}

// Add reads one message of the stream, keeping it if it is its target's newest scrape so
// far that the drain would take: decoded, trusted, of this shard, neither older than
// max_age nor stamped in the future. Parts of split scrapes are left to the consumer.
func (r *Restore) Add(data []byte) {
	d := r.d
	now := d.opts.Now()
	env, err := d.codec.DecodePacked(data)
	if errors.Is(err, envelope.ErrNotEnvelope) && len(data) > 0 && data[0] == '{' {
		env, err = d.codec.DecodeLegacy(data)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.read++
	switch {
	case err != nil, env.Parts > 1:
		return
	case d.opts.Shards > 1 && ShardOf(env.Job, env.Instance, d.opts.Shards) != d.opts.Shard:
		return
	case now.Sub(env.Start) > d.opts.MaxAge, env.Start.Sub(now) > d.opts.MaxClockSkew:
		return
	}
	if reason, _ := d.trust.Load().Check(env); reason != "" {
		return
	}
	key := env.Job + "/" + env.Instance
	if old := r.newest[key]; old == nil || env.Start.After(old.Start) {
		r.newest[key] = env
	}
}

// Apply hands each target's newest scrape to the volatile state sinks, records it on
// the target's status, and makes the drain ready. It returns how many targets it
// restored and how many messages it read.
func (r *Restore) Apply(ctx context.Context) (targets, read int) {
	d := r.d
	defer d.restoring.Add(-1)
	var volatile []int
	for _, i := range d.state {
		if _, ok := d.sinks[i].(sink.Volatile); ok {
			volatile = append(volatile, i)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, env := range r.newest {
		if ctx.Err() != nil {
			break
		}
		q := &delivery{env: env}
		s, err := d.prepare(q)
		if err != nil {
			continue // the consumer rejects it, with its reason
		}
		res := make([]sinkResult, len(d.sinks))
		now := d.opts.Now()
		for i := range res {
			res[i] = sinkResult{fate: FateDelivered, err: "restored at start from the stream: not delivered again", at: now}
		}
		// Held as a worker holds it: a sink is never given two scrapes of a target at
		// once. A target a worker holds already has a scrape at least as new.
		d.mu.Lock()
		t := d.target(env.Job + "/" + env.Instance)
		if t.busy {
			d.mu.Unlock()
			continue
		}
		t.busy = true
		d.mu.Unlock()
		for _, i := range volatile {
			err := d.sinks[i].Deliver(ctx, s)
			res[i] = sinkResult{fate: FateDelivered, at: now, attempts: 1}
			if err != nil && !errors.Is(err, sink.ErrSuperseded) {
				res[i] = sinkResult{fate: FateRejected, err: errorText(err), at: now, attempts: 1}
			}
		}
		d.mu.Lock()
		if now.After(t.lastSeen) {
			t.lastSeen = now
		}
		t.status.observe(env, 0, now)
		t.status.record(env.Start, res)
		t.busy = false
		d.schedule(t)
		d.mu.Unlock()
		targets++
	}
	d.metrics.restored.Add(float64(targets))
	return targets, r.read
}
