package drain

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus-streams/prometheus-streams/drain/assemble"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// assemble takes one part of a split scrape. Once the last part is in, it returns the
// whole scrape with one Handle that answers for all its parts' messages at once.
func (d *Drain) assemble(env *envelope.Envelope, h Handle) (*envelope.Envelope, Handle, bool) {
	d.metrics.parts.Inc()
	out, err := d.parts.Add(env, h)
	for _, dr := range out.Dropped {
		d.drop(dr)
	}
	switch {
	case errors.Is(err, assemble.ErrFull):
		// Left unacknowledged: the server redelivers it once memory has been freed.
		d.metrics.partsRefused.WithLabelValues("full").Inc()
		d.logger.Warn("split scrape part refused: reassembly memory full, left for redelivery", "job", env.Job, "instance", env.Instance, "part", env.Part, "parts", env.Parts)
		if h.Nak != nil {
			_ = h.Nak(d.opts.MaxBackoff)
		}
		return nil, Handle{}, false
	case err != nil:
		reason := "mismatch"
		if errors.Is(err, assemble.ErrTooLarge) {
			reason = "too_large"
		}
		d.metrics.partsRefused.WithLabelValues(reason).Inc()
		d.logger.Warn("split scrape part refused", "job", env.Job, "instance", env.Instance, "part", env.Part, "parts", env.Parts, "reason", reason, "err", err)
		d.ack(h.term(), h.Seq)
		return nil, Handle{}, false
	case out.Whole == nil:
		return nil, Handle{}, false // more parts to come
	}
	d.metrics.assembled.Inc()
	return out.Whole, joinHandles(out.Handles), true
}

// joinHandles is one Handle answering for all of hs; its sequence is the last part's.
func joinHandles(hs []Handle) Handle {
	all := func(f func(Handle) error) error {
		var errs error
		for _, h := range hs {
			errs = errors.Join(errs, f(h))
		}
		return errs
	}
	last := hs[len(hs)-1]
	j := Handle{
		Seq:  last.Seq,
		Ack:  func() error { return all(func(h Handle) error { return h.Ack() }) },
		Term: func() error { return all(func(h Handle) error { return h.term()() }) },
	}
	if last.Nak != nil {
		j.Nak = func(delay time.Duration) error { return all(func(h Handle) error { return h.Nak(delay) }) }
	}
	return j
}

// drop acknowledges the parts of a split scrape given up without delivery.
func (d *Drain) drop(dr assemble.Dropped[Handle]) {
	reason := "corrupt"
	switch {
	case errors.Is(dr.Err, assemble.ErrSuperseded):
		reason = "superseded"
	case errors.Is(dr.Err, assemble.ErrTimeout):
		reason = "timeout"
	}
	d.metrics.partsDropped.WithLabelValues(reason).Inc()
	level := slog.LevelWarn
	if reason == "superseded" && len(d.history) == 0 {
		level = slog.LevelDebug // only the newest scrape matters to state sinks
	}
	d.logger.Log(context.Background(), level, "split scrape given up", "job", dr.Job, "instance", dr.Instance,
		"publisher", dr.Publisher, "start", dr.Start, "parts", dr.Parts, "missing", dr.Missing, "reason", reason, "err", dr.Err)
	// The history sinks may have waited for it: its target's newer scrapes go now.
	d.mu.Lock()
	if t := d.targets[dr.Job+"/"+dr.Instance]; t != nil {
		d.schedule(t)
	}
	d.mu.Unlock()
	for _, h := range dr.Handles {
		if reason == "corrupt" {
			d.ack(h.term(), h.Seq)
		} else {
			d.ack(h.Ack, h.Seq)
		}
	}
}
