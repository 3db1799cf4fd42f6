package drain

import (
	"slices"
	"time"

	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// Indexes of target.park.
const (
	stateKind   = int(sink.State)
	historyKind = int(sink.History)
)

// target is the drain's state for one job/instance. Guarded by Drain.mu.
type target struct {
	key string
	// queue holds the target's scrapes whose fate is not yet final in every sink, oldest
	// first. A worker that delivers one marks it working; only that worker removes it.
	queue []*delivery
	busy  bool // on the ready list or with a worker
	// park holds, by sink.Kind, the target's work for that kind of sink after a
	// transient failure there, until its backoff ends or the failing sink is back: a
	// history sink that is down does not hold up the state sinks, nor the reverse.
	park [2]park
	// newest is the start of the newest scrape admitted; a state sink wants nothing older.
	newest time.Time
	// stateDone and historyDone are the start of the newest scrape whose fate is final
	// in every state sink, and in every history sink: nothing older goes there again.
	stateDone, historyDone time.Time
	lastSeen               time.Time
	status                 status
	retry                  *retry // the scrape handed back to the server with a delay, if any
	// arrived, while a history sink that follows (sink.Follower) delivers t's scrapes,
	// receives a value when a scrape of t is placed: it may join the sink's request.
	arrived chan struct{}
}

// park is a target's wait for a retry of one kind of sink.
type park struct {
	on      bool
	attempt int    // rounds that failed in a row, for the backoff
	gen     uint64 // ends with the timer of this generation only
	sinks   uint64 // the sinks whose failure parked it, by bit
}

// parked reports whether t waits for a retry of any kind of sink.
func (t *target) parked() bool { return t.park[0].on || t.park[1].on }

// unpark ends t's wait for kind. Called with d.mu held.
func (t *target) unpark(kind int) {
	t.park[kind].on = false
	t.park[kind].gen++ // its timer, if any, no longer ends anything
}

// delivery is one scrape on its way to the sinks.
type delivery struct {
	env      *envelope.Envelope
	h        Handle
	stream   string
	received time.Time
	poison   bool // terminated rather than acknowledged
	working  bool // a worker is delivering it
	// redundant: final in every sink on arrival (a redelivery of what the sinks have).
	redundant bool
	res       []sinkResult // its fate so far in each sink, in the drain's order of sinks
}

// retry is what the drain keeps of a scrape handed back to the server for a later
// attempt: which attempt comes next and which sinks already have it.
type retry struct {
	start   time.Time
	attempt int
	res     []sinkResult
}

// final reports whether the delivery's fate is final in every sink of idx.
func (dl *delivery) final(idx []int) bool {
	for _, i := range idx {
		if !dl.res[i].final() {
			return false
		}
	}
	return true
}

// settle gives fate to every sink of idx whose fate is not final yet.
func (dl *delivery) settle(idx []int, fate Fate, reason string, now time.Time) {
	for _, i := range idx {
		if r := &dl.res[i]; !r.final() {
			r.fate, r.err, r.at = fate, reason, now
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

// enqueue places a new delivery in its target's queue, acknowledges what it makes
// redundant, and wakes a worker for the target.
func (d *Drain) enqueue(key string, dl *delivery) {
	d.mu.Lock()
	t := d.target(key)
	t.lastSeen = dl.received
	if d.place(t, dl) {
		t.status.observe(dl.env, dl.h.Seq, dl.received)
		if t.arrived != nil {
			select {
			case t.arrived <- struct{}{}:
			default:
			}
		}
	}
	done := d.finished(t)
	d.schedule(t)
	d.mu.Unlock()
	d.acknowledge(done)
}

// place puts dl where it belongs in t's queue and reports whether the target's status
// should see it: whether some sink may still want it. A scrape older than what a sink has is final
// there at once (superseded); each older scrape in the queue becomes final in the state
// sinks, which want only the newest. Called with d.mu held.
func (d *Drain) place(t *target, dl *delivery) bool {
	s := dl.env.Start
	for _, q := range t.queue {
		if q.env.Start.Equal(s) {
			// A redelivery of a scrape the drain holds: adopt the newest handle, which
			// belongs to the live subscription, and acknowledge through it later.
			q.h = dl.h
			return true
		}
	}
	dl.res = make([]sinkResult, len(d.sinks))
	if r := t.retry; r != nil {
		switch {
		case r.start.Equal(s):
			// The server's redelivery of a scrape handed back: go on where it stopped.
			copy(dl.res, r.res)
			t.park[stateKind].attempt = r.attempt
			t.retry = nil
		case r.start.Before(s):
			t.retry = nil // a newer scrape makes the handed-back one redundant
		}
	}
	if s.Before(t.newest) || (!t.stateDone.IsZero() && !s.After(t.stateDone)) || (t.retry != nil && s.Before(t.retry.start)) {
		dl.settle(d.state, FateSuperseded, "", dl.received)
	}
	if !t.historyDone.IsZero() && !s.After(t.historyDone) {
		dl.settle(d.history, FateSuperseded, "", dl.received)
	}
	if s.After(t.newest) {
		t.newest = s
	}
	i, _ := slices.BinarySearchFunc(t.queue, s, func(q *delivery, s time.Time) int { return q.env.Start.Compare(s) })
	t.queue = slices.Insert(t.queue, i, dl)
	d.requeued(dl.stream, 1)
	for _, q := range t.queue[:i] {
		q.settle(d.state, FateSuperseded, "", dl.received)
	}
	dl.redundant = dl.final(d.every)
	return !dl.redundant
}

// finished takes out of t's queue the deliveries whose fate is final in every sink and
// that no worker holds, recording what the sinks now have. Called with d.mu held; the
// caller acknowledges what it returns, after unlocking.
func (d *Drain) finished(t *target) []*delivery {
	var done []*delivery
	t.queue = slices.DeleteFunc(t.queue, func(q *delivery) bool {
		if q.working || !q.final(d.every) {
			return false
		}
		done = append(done, q)
		return true
	})
	for _, q := range done {
		d.requeued(q.stream, -1)
	}
	for _, q := range done {
		s := q.env.Start
		if s.After(t.stateDone) {
			t.stateDone = s // also a rejected or expired scrape: nothing older may follow it
		}
		if s.After(t.historyDone) {
			t.historyDone = s
		}
		if !q.redundant {
			t.status.record(s, q.res)
		}
	}
	return done
}

// acknowledge answers the server for deliveries whose fate is final everywhere.
func (d *Drain) acknowledge(done []*delivery) {
	for _, q := range done {
		delivered, superseded, other := false, false, false
		for i := range q.res {
			switch q.res[i].fate {
			case FateDelivered:
				delivered = true
			case FateSuperseded:
				superseded = true
			default:
				other = true // expired or rejected: counted as such
			}
		}
		// One final fate counted per message: superseded when that is all it was.
		if superseded && !delivered && !other {
			d.metrics.superseded.Inc()
		}
		ack := q.h.Ack
		if q.poison {
			ack = q.h.term()
		}
		d.ack(ack, q.h.Seq)
	}
}

// hasWork reports whether t has something a worker can do now. Called with d.mu held.
func (d *Drain) hasWork(t *target) bool {
	if n := len(t.queue); n > 0 && !t.park[stateKind].on && !t.queue[n-1].working && !t.queue[n-1].final(d.state) {
		return true
	}
	if len(d.history) > 0 && !t.park[historyKind].on && len(d.historyWork(t)) > 0 {
		return true
	}
	now := d.opts.Now()
	for _, q := range t.queue {
		if !q.working && now.Sub(q.env.Start) > d.opts.MaxAge {
			return true // to expire
		}
	}
	return false
}

// historyWork is what the history sinks can be given of t now, oldest first: nothing
// while history is held, nothing being delivered already, and nothing newer than a split
// scrape of t still being assembled, which they must be given first. Called with d.mu
// held.
func (d *Drain) historyWork(t *target) []*delivery {
	if d.historyHeld() || len(t.queue) == 0 {
		return nil
	}
	env := t.queue[0].env
	split, assembling := d.parts.Assembling(env.Job, env.Instance)
	var out []*delivery
	for _, q := range t.queue {
		if assembling && q.env.Start.After(split) {
			break
		}
		if q.final(d.history) {
			continue
		}
		if q.working {
			return nil // a round is under way: the next one follows it
		}
		out = append(out, q)
		if len(out) == d.opts.HistoryBatch {
			break
		}
	}
	return out
}

// schedule puts t on the ready list if it has work and no worker. Called with d.mu held.
func (d *Drain) schedule(t *target) {
	if t.busy || !d.hasWork(t) {
		return
	}
	t.busy = true
	d.ready = append(d.ready, t)
	d.signal()
}

func (d *Drain) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// requeued counts n more deliveries of stream in the targets' queues (fewer when
// negative) and tells the Pressured sinks when a stream's count reaches MaxInflight,
// and when none is there any more: the drain can then take no more messages from that
// stream, or can again. Called with d.mu held.
func (d *Drain) requeued(stream string, n int) {
	if d.opts.MaxInflight <= 0 || len(d.pressured) == 0 {
		return
	}
	before := d.queued[stream]
	after := before + n
	if after == 0 {
		delete(d.queued, stream)
	} else {
		d.queued[stream] = after
	}
	wasFull := d.fullStreams > 0
	if was, is := before >= d.opts.MaxInflight, after >= d.opts.MaxInflight; was != is {
		if is {
			d.fullStreams++
		} else {
			d.fullStreams--
		}
	}
	if full := d.fullStreams > 0; full != wasFull {
		for _, p := range d.pressured {
			p.Saturated(full)
		}
	}
}

// held is how many scrapes the drain holds unacknowledged.
func (d *Drain) held() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, t := range d.targets {
		n += len(t.queue)
	}
	return n
}
