package drain

import (
	"context"
	"time"

	"github.com/prometheus-streams/prometheus-streams/sink"
)

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
// them too; Targets lists them as stale for StaleRetention more. It also expires what
// waits past max_age. Run calls it periodically.
func (d *Drain) Sweep(ctx context.Context) {
	now := d.opts.Now()
	for _, dr := range d.parts.Expire(now) {
		d.drop(dr)
	}
	d.mu.Lock()
	d.expireHolds(now)
	for k, t := range d.targets {
		if !t.busy && !t.parked() && len(t.queue) == 0 && now.Sub(t.lastSeen) > d.opts.MaxAge {
			delete(d.targets, k)
			if d.opts.StaleRetention > 0 && !t.status.received.IsZero() {
				d.forgotten[k] = t
			}
			continue
		}
		d.schedule(t) // a scrape that passed max_age while it waited is expired by a worker
	}
	for k, t := range d.forgotten {
		if now.Sub(t.lastSeen) > d.opts.MaxAge+d.opts.StaleRetention {
			delete(d.forgotten, k)
		}
	}
	d.metrics.targets.Set(float64(len(d.targets)))
	d.mu.Unlock()
	for _, s := range d.sinks {
		if sw, ok := s.(sink.Sweeper); ok {
			if err := sw.Sweep(ctx, now, d.opts.MaxAge); err != nil && ctx.Err() == nil {
				d.logger.Warn("sweep failed", "sink", s.Name(), "err", err)
			}
		}
	}
}
