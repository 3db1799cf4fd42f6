package drain

import (
	"slices"
	"strings"
	"time"
)

// hold keeps the history sinks waiting after a (re)subscription to a stream that had
// messages delivered to a previous consumer and not acknowledged: the server redelivers
// those only after their ack wait, while newer messages flow at once, and a history sink
// must not be given a target's newer scrape before its older ones. The hold ends when
// every such message has come again, or at until.
type hold struct {
	upTo  uint64              // the stream's last sequence delivered before the subscription
	want  int                 // messages at or below upTo still unacknowledged then
	seen  map[uint64]struct{} // of those, the ones the drain has now
	until time.Time
}

// HoldHistory is called when the drain subscribes to stream, if messages up to sequence
// upTo were delivered before and pending of them are not acknowledged: the history sinks
// wait until the stream has redelivered them all, or for at most wait. State sinks do not
// wait. A drain without history sinks ignores it.
func (d *Drain) HoldHistory(stream string, upTo uint64, pending int, wait time.Duration) {
	if len(d.history) == 0 || pending <= 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	h := &hold{upTo: upTo, want: pending, seen: map[uint64]struct{}{}, until: d.opts.Now().Add(wait)}
	// What the drain holds of that stream is among the unacknowledged: it will not come
	// again before the drain answers for it.
	for _, t := range d.targets {
		for _, q := range t.queue {
			if q.stream == stream && q.h.Seq <= upTo {
				h.seen[q.h.Seq] = struct{}{}
			}
		}
	}
	if len(h.seen) >= h.want {
		if d.holds[stream] != nil {
			d.endHold(stream, "") // a hold of an earlier subscription: this one has all
		}
		return
	}
	d.holds[stream] = h
	d.metrics.historyHeld.Set(1)
	d.holding.Store(true)
	time.AfterFunc(wait, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.holds[stream] == h {
			d.logger.Warn("history sinks stop waiting for redeliveries", "stream", stream, "missing", h.want-len(h.seen))
			d.endHold(stream, "")
		}
	})
	d.logger.Info("history sinks wait for the stream to redeliver what the previous drain left unacknowledged",
		"stream", stream, "messages", pending, "up_to_seq", upTo, "at_most", wait)
}

// sawAtHold counts a message of stream toward its hold.
func (d *Drain) sawAtHold(stream string, seq uint64) {
	if !d.holding.Load() {
		return // no hold: every message would otherwise take the drain's lock twice
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	h := d.holds[stream]
	if h == nil || seq > h.upTo {
		return
	}
	h.seen[seq] = struct{}{}
	if len(h.seen) >= h.want {
		d.endHold(stream, "redelivered")
	}
}

// expireHolds ends the holds past their time. Called with d.mu held.
func (d *Drain) expireHolds(now time.Time) {
	for stream, h := range d.holds {
		if now.After(h.until) {
			d.logger.Warn("history sinks stop waiting for redeliveries", "stream", stream, "missing", h.want-len(h.seen))
			d.endHold(stream, "")
		}
	}
}

// endHold ends stream's hold and wakes the targets it kept waiting. Called with d.mu held.
func (d *Drain) endHold(stream, why string) {
	delete(d.holds, stream)
	if why != "" {
		d.logger.Info("history sinks go on: the stream redelivered what was unacknowledged", "stream", stream)
	}
	if len(d.holds) > 0 {
		return
	}
	d.metrics.historyHeld.Set(0)
	d.holding.Store(false)
	for _, t := range d.targets {
		d.schedule(t)
	}
}

// historyHeld reports whether the history sinks wait for redeliveries. Called with d.mu
// held.
func (d *Drain) historyHeld() bool { return len(d.holds) > 0 }

// StreamState records whether the drain is subscribed to one of its streams (named by
// stream), and why not. The drain is subscribed when it is to all Options.Streams.
func (d *Drain) StreamState(stream string, connected bool, err error) {
	d.metrics.received.WithLabelValues(stream) // visible at 0 from the first subscription
	d.smu.Lock()
	if d.streams == nil {
		d.streams = map[string]bool{}
	}
	was := d.streams[stream]
	d.streams[stream] = connected
	if d.streamErr == nil {
		d.streamErr = map[string]error{}
	}
	d.streamErr[stream] = err
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

// Status sums up the drain's subscriptions in a line, for systemd's status: every stream
// it is subscribed to, or those it is not and why.
func (d *Drain) Status() string {
	d.smu.Lock()
	defer d.smu.Unlock()
	var up, down []string
	for name, c := range d.streams {
		if c {
			up = append(up, name)
			continue
		}
		if err := d.streamErr[name]; err != nil {
			down = append(down, name+" ("+err.Error()+")")
		} else {
			down = append(down, name)
		}
	}
	slices.Sort(up)
	slices.Sort(down)
	if len(down) > 0 {
		return "not subscribed to " + strings.Join(down, ", ")
	}
	if len(up) == 0 {
		return "connecting to the stream"
	}
	return "subscribed to " + strings.Join(up, ", ")
}

// Ready reports whether the drain is subscribed and has restored what its state sinks
// held before a restart: what /healthz answers.
func (d *Drain) Ready() bool { return d.subscribed.Load() && d.restoring.Load() == 0 }
