package drain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// errEarlier is the fate a history sink's scrape waits with while an earlier scrape of
// its target is retried: it is not tried before that one is in.
var errEarlier = errors.New("waiting for an earlier scrape of the target")

func (d *Drain) work(ctx context.Context) {
	for {
		t := d.next(ctx)
		if t == nil {
			return
		}
		for d.step(ctx, t) {
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// next waits for a target with work.
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

// round is what one step of a worker delivers for a target: the newest scrape to the
// state sinks that do not have it, and the oldest scrapes (up to HistoryBatch) to the
// history sinks that do not have them. Which sinks want which scrape is decided under
// the drain's lock when the round starts; a history sink that follows (sink.Follower)
// adds to history, under the lock, the scrapes that arrive while its request waits.
// failed collects, by bit, the sinks that failed transiently in this round.
type round struct {
	state      *delivery
	stateSinks []int // the state sinks that want it
	history    []*delivery
	// historyFor[k] is what the history sink d.history[k] wants of history, in order.
	historyFor [][]*delivery
	failed     uint64
}

// step does one round of work for t, which the calling worker holds, and reports whether
// there is more to do at once. When it returns false the worker has let t go: it is
// idle, parked until a retry, or (ctx ended) left to the stream's redelivery.
func (d *Drain) step(ctx context.Context, t *target) bool {
	now := d.opts.Now()
	d.mu.Lock()
	var expired []*delivery
	for _, q := range t.queue {
		if !q.working && now.Sub(q.env.Start) > d.opts.MaxAge && !q.final(d.every) {
			q.settle(d.every, FateExpired, "", now)
			expired = append(expired, q)
		}
	}
	var r round
	if n := len(t.queue); n > 0 && !t.park[stateKind].on && !t.queue[n-1].working && !t.queue[n-1].final(d.state) {
		r.state = t.queue[n-1]
		r.state.working = true
		for _, i := range d.state {
			if !r.state.res[i].final() {
				r.stateSinks = append(r.stateSinks, i)
			}
		}
	}
	if len(d.history) > 0 && !t.park[historyKind].on {
		r.history = d.historyWork(t)
	}
	if len(r.history) > 0 {
		r.historyFor = make([][]*delivery, len(d.history))
		for k, i := range d.history {
			for _, q := range r.history {
				if !q.res[i].final() {
					r.historyFor[k] = append(r.historyFor[k], q)
				}
			}
		}
	}
	for _, q := range r.history {
		q.working = true
	}
	d.mu.Unlock()
	for _, q := range expired {
		d.metrics.expired.Inc()
		d.logger.Warn("scrape expired before delivery", "job", q.env.Job, "instance", q.env.Instance, "age", now.Sub(q.env.Start).Round(time.Millisecond))
	}

	ok := d.deliver(ctx, t, &r)
	d.returnMemory(&r)
	d.mu.Lock()
	d.release(t, &r)
	if !ok {
		// ctx ended: leave what was being delivered unacknowledged.
		t.busy = false
		d.mu.Unlock()
		return false
	}
	done := d.finished(t)
	for kind, idx := range [2][]int{stateKind: d.state, historyKind: d.history} {
		tried := (kind == stateKind && r.state != nil) || (kind == historyKind && len(r.history) > 0)
		failed := r.failed & mask(idx)
		switch {
		case !tried:
		case failed == 0:
			t.park[kind].attempt = 0
		default:
			if d.retryLater(ctx, t, kind, failed, &r, done) {
				return false // handed back to the server, and t let go
			}
		}
	}
	more := d.hasWork(t)
	if !more {
		t.busy = false
	}
	d.mu.Unlock()
	d.acknowledge(done)
	return more
}

// largeBody is the size of a scrape after whose delivery the drain returns the memory
// its parse took to the system at once, rather than keeping it for the next large one:
// a 20 MB exposition takes hundreds of megabytes parsed.
const largeBody = 8 << 20

// returnMemory returns the memory of a round that parsed a large scrape to the system,
// at most every 10 seconds.
func (d *Drain) returnMemory(r *round) {
	large := r.state != nil && r.state.env.BodySize() >= largeBody
	for _, q := range r.history {
		large = large || q.env.BodySize() >= largeBody
	}
	if !large {
		return
	}
	now := time.Now().UnixNano()
	if last := d.freed.Load(); now-last < int64(10*time.Second) || !d.freed.CompareAndSwap(last, now) {
		return
	}
	go debug.FreeOSMemory() // once the round's parse is garbage: after this return
}

// mask is the bits of the sinks idx.
func mask(idx []int) uint64 {
	var m uint64
	for _, i := range idx {
		m |= 1 << uint(i)
	}
	return m
}

// retryLater parks t's work for kind after failed (sinks, by bit) failed in round r, or,
// with state sinks only and a server that can redeliver later (JetStream), hands the
// scrape back to the server: it then acknowledges done, lets t go, and returns true,
// with d.mu released. Called with d.mu held.
func (d *Drain) retryLater(ctx context.Context, t *target, kind int, failed uint64, r *round, done []*delivery) bool {
	p := &t.park[kind]
	d.metrics.retries.Inc()
	p.attempt++
	delay := d.backoff(p.attempt - 1)
	q := r.state
	if kind == historyKind {
		q = r.history[0]
	}
	level := slog.LevelDebug
	if p.attempt == 1 || p.attempt%10 == 0 {
		level = slog.LevelWarn // the first failure and every tenth: enough to see an outage
	}
	d.logger.Log(ctx, level, "delivery failed, will retry", "job", q.env.Job, "instance", q.env.Instance,
		"attempt", p.attempt, "retry_in", delay.Round(time.Millisecond), "err", retryErrors(q.res, d.sinkNames))
	if len(d.history) == 0 && q.h.Nak != nil && len(t.queue) == 1 && t.queue[0] == q {
		// State sinks only: the server holds the scrape until the retry, not memory.
		t.retry = &retry{start: q.env.Start, attempt: p.attempt, res: append([]sinkResult(nil), q.res...)}
		d.requeued(q.stream, -1) // the queue holds q alone
		t.queue = t.queue[:0]
		p.attempt = 0
		nak, seq := q.h.Nak, q.h.Seq
		t.busy = false
		d.mu.Unlock()
		d.acknowledge(done)
		if err := nak(delay); err != nil {
			// The server redelivers it after AckWait instead.
			d.metrics.ackErrors.Inc()
			d.logger.Debug("nak failed", "seq", seq, "err", err)
		}
		return true
	}
	p.on, p.sinks = true, failed
	p.gen++
	gen := p.gen
	time.AfterFunc(delay, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if t.park[kind].on && t.park[kind].gen == gen {
			t.unpark(kind)
			d.schedule(t)
		}
	})
	return false
}

// release marks r's deliveries as no longer held by a worker, recording their fates in
// the target's status. Called with d.mu held.
func (d *Drain) release(t *target, r *round) {
	for _, q := range append(r.history, r.state) {
		if q != nil {
			q.working = false
			t.status.record(q.env.Start, q.res)
		}
	}
}

// deliver runs one round for t: it parses each scrape once for all sinks and hands it to
// the sinks that still want it; a history sink that follows also gets the scrapes of t
// that arrive while its request waits to be sent. It returns false when ctx ended first.
func (d *Drain) deliver(ctx context.Context, t *target, r *round) bool {
	parsed := make(map[*delivery]*sink.Scrape, len(r.history)+1)
	scrape := func(q *delivery) *sink.Scrape {
		if s, ok := parsed[q]; ok {
			return s
		}
		s, err := d.prepare(q)
		if err != nil {
			reason := "invalid_body"
			if errors.Is(err, envelope.ErrCorrupt) {
				reason = "corrupt" // a compressed body that does not decompress, as on arrival
			}
			d.metrics.rejected.WithLabelValues(reason).Inc()
			d.logger.Warn("message rejected", "job", q.env.Job, "instance", q.env.Instance, "publisher", q.env.Publisher, "reason", reason, "err", err)
			d.mu.Lock()
			q.poison = true // never to be redelivered
			q.settle(d.every, FateRejected, "invalid body: "+errorText(err), d.opts.Now())
			d.mu.Unlock()
		}
		parsed[q] = s
		return s
	}
	if q := r.state; q != nil && len(r.stateSinks) > 0 {
		if s := scrape(q); s != nil {
			for _, i := range r.stateSinks {
				d.mu.Lock()
				gone := q.res[i].final() // superseded while the round went on
				d.mu.Unlock()
				if gone {
					continue
				}
				err := d.deliverOne(ctx, i, s)
				if ctx.Err() != nil {
					return false
				}
				if d.result(i, q, err) {
					r.failed |= 1 << uint(i)
				}
			}
		}
	}
	if len(r.history) == 0 {
		return true
	}
	for k, i := range d.history {
		var qs []*delivery
		var ss []*sink.Scrape
		d.mu.Lock()
		want := r.historyFor[k] // grown by what an earlier history sink followed
		d.mu.Unlock()
		for _, q := range want {
			if s := scrape(q); s != nil {
				qs, ss = append(qs, q), append(ss, s)
			}
		}
		if len(ss) == 0 {
			continue
		}
		errs := make([]error, len(ss))
		if f, ok := d.sinks[i].(sink.Follower); ok {
			l := &later{d: d, t: t, r: r, k: k, scrape: scrape, arrived: make(chan struct{}, 1)}
			d.mu.Lock()
			l.last = r.history[len(r.history)-1].env.Start
			t.arrived = l.arrived
			d.mu.Unlock()
			l.arrived <- struct{}{} // what came since the round began
			start := time.Now()
			errs = f.DeliverFollowing(ctx, ss, l)
			d.metrics.pushDuration.WithLabelValues(d.sinkNames[i]).Observe(time.Since(start).Seconds())
			d.mu.Lock()
			t.arrived = nil
			d.mu.Unlock()
			qs = append(qs, l.given...)
			if n := len(errs); n != len(qs) {
				// Not what the contract says: take no fate from it, and try again.
				errs = make([]error, len(qs))
				for j := range errs {
					errs[j] = fmt.Errorf("sink %s returned %d fates for %d scrapes", d.sinkNames[i], n, len(qs))
				}
			}
		} else if b, ok := d.sinks[i].(sink.Batcher); ok && len(ss) > 1 {
			start := time.Now()
			b.DeliverBatch(ctx, ss, errs)
			d.metrics.pushDuration.WithLabelValues(d.sinkNames[i]).Observe(time.Since(start).Seconds())
		} else {
			for j, s := range ss {
				errs[j] = d.deliverOne(ctx, i, s)
				if sink.Retryable(errs[j]) {
					for j++; j < len(ss); j++ {
						errs[j] = errEarlier
					}
					break
				}
			}
		}
		if ctx.Err() != nil {
			return false
		}
		for j, q := range qs {
			if d.result(i, q, errs[j]) {
				r.failed |= 1 << uint(i)
			}
		}
	}
	return true
}

// later hands the history sink d.history[k], while it delivers round r of t, the
// scrapes of t that arrived since r began (sink.Later).
type later struct {
	d       *Drain
	t       *target
	r       *round
	k       int
	scrape  func(*delivery) *sink.Scrape // deliver's: parses once per round
	arrived chan struct{}
	last    time.Time   // the start of the newest scrape of t in the round
	given   []*delivery // what Next handed over, in order
}

func (l *later) Arrived() <-chan struct{} { return l.arrived }

// Next takes into the round the scrapes of t after the round's newest, in order, that
// the sink does not have, as historyWork would give them: none while history is held,
// none past a split scrape still being assembled, and no more than HistoryBatch in a
// round.
func (l *later) Next() []*sink.Scrape {
	d, t, r := l.d, l.t, l.r
	i := d.history[l.k]
	var qs []*delivery
	d.mu.Lock()
	if !d.historyHeld() && len(t.queue) > 0 {
		env := t.queue[0].env
		split, assembling := d.parts.Assembling(env.Job, env.Instance)
		for _, q := range t.queue {
			s := q.env.Start
			if !s.After(l.last) || q.final(d.history) {
				continue
			}
			if (assembling && s.After(split)) || q.working || len(r.history) >= d.opts.HistoryBatch {
				break
			}
			l.last = s
			q.working = true
			r.history = append(r.history, q)
			for k := l.k + 1; k < len(d.history); k++ {
				if !q.res[d.history[k]].final() {
					r.historyFor[k] = append(r.historyFor[k], q)
				}
			}
			if !q.res[i].final() {
				qs = append(qs, q)
			}
		}
	}
	d.mu.Unlock()
	var out []*sink.Scrape
	for _, q := range qs {
		if s := l.scrape(q); s != nil {
			out = append(out, s)
			l.given = append(l.given, q)
		}
	}
	return out
}

func (d *Drain) deliverOne(ctx context.Context, i int, s *sink.Scrape) error {
	start := time.Now()
	err := d.sinks[i].Deliver(ctx, s)
	d.metrics.pushDuration.WithLabelValues(d.sinkNames[i]).Observe(time.Since(start).Seconds())
	return err
}

// result records what sink i made of q, and reports whether it failed transiently.
func (d *Drain) result(i int, q *delivery, err error) bool {
	now := d.opts.Now()
	name := d.sinkNames[i]
	d.mu.Lock()
	defer d.mu.Unlock()
	r := &q.res[i]
	if r.final() && (sink.Retryable(err) || errors.Is(err, errEarlier)) {
		return false // made final meanwhile: superseded by a newer scrape for a state sink
	}
	switch {
	case err == nil:
		r.fate, r.err = FateDelivered, ""
		d.metrics.delivered.WithLabelValues(name).Inc()
		d.metrics.lag.Observe(now.Sub(q.env.Start).Seconds())
		d.recovered(i)
	case errors.Is(err, sink.ErrSuperseded):
		r.fate, r.err = FateSuperseded, ""
		d.metrics.sinkSuperseded.WithLabelValues(name).Inc()
		d.recovered(i)
	case errors.Is(err, sink.ErrRejected):
		r.fate, r.err = FateRejected, errorText(err)
		d.metrics.sinkRejected.WithLabelValues(name).Inc()
		d.logger.Warn("sink rejected scrape", "sink", name, "job", q.env.Job, "instance", q.env.Instance, "publisher", q.env.Publisher, "start", q.env.Start, "err", err)
		d.recovered(i)
	case errors.Is(err, errEarlier):
		r.fate, r.err = FateRetrying, err.Error()
		return false // not tried: no attempt, no time
	default:
		r.fate, r.err = FateRetrying, errorText(err)
		d.failures[i]++
		r.at = now
		r.attempts++
		return true
	}
	r.at = now
	r.attempts++
	return false
}

// recovered records that sink i answered. After an outage (two failures or more, of
// any targets, since its last answer) the targets waiting to retry it go at once, not at
// the end of their backoff; a target that fails alone, while the sink answers others,
// keeps its backoff. Called with d.mu held.
func (d *Drain) recovered(i int) {
	outage := d.failures[i] >= 2
	d.failures[i] = 0
	if !outage {
		return
	}
	bit := uint64(1) << uint(i)
	for _, t := range d.targets {
		for kind := range t.park {
			if p := &t.park[kind]; p.on && p.sinks&bit != 0 {
				t.unpark(kind)
				d.schedule(t)
			}
		}
	}
}

// retryErrors is the errors of the sinks that failed transiently, for the log.
func retryErrors(res []sinkResult, names []string) error {
	var errs []error
	for i := range res {
		if res[i].fate == FateRetrying && res[i].err != errEarlier.Error() {
			errs = append(errs, fmt.Errorf("%s: %s", names[i], res[i].err))
		}
	}
	return errors.Join(errs...)
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

// textual reports whether contentType is one of the text formats (an empty one means
// the text format).
func textual(contentType string) bool {
	return contentType == "" || strings.HasPrefix(contentType, exposition.TextType+";") || contentType == exposition.TextType ||
		strings.HasPrefix(contentType, exposition.OpenMetricsType+";") || contentType == exposition.OpenMetricsType
}

// maxPooledBody bounds the buffers kept for decompressing bodies, so that one huge
// scrape does not pin its buffer for the life of the drain.
const maxPooledBody = 4 << 20

// prepare decompresses, parses and labels a scrape once for all sinks.
func (d *Drain) prepare(q *delivery) (*sink.Scrape, error) {
	env := q.env
	labels := make([]exposition.Label, len(env.Labels))
	for i, l := range env.Labels {
		labels[i] = exposition.Label{Name: l.Name, Value: l.Value}
	}
	s := &sink.Scrape{
		Envelope: env,
		Target:   exposition.Target{Job: env.Job, Instance: env.Instance, Labels: labels, HonorLabels: env.HonorLabels},
	}
	up := env.Error == ""
	if up {
		// Decompressed into a buffer the workers share: the families Parse returns
		// hold no reference to the body.
		buf := d.bodies.Get().(*[]byte)
		body, err := d.codec.AppendBody((*buf)[:0], env)
		if err != nil {
			d.bodies.Put(buf)
			return nil, fmt.Errorf("decompress body: %w", err)
		}
		fams, err := exposition.ParseScrape(body, env.ContentType,
			exposition.Histograms(env.Histograms))
		// A text body in valid UTF-8 yields only valid UTF-8: the parsers cut it at
		// ASCII bytes and undo ASCII escapes. One pass over it is much cheaper than
		// checking each string of the families. Not so a binary format, whose strings
		// may be invalid in a body that happens to be valid.
		check := err == nil && (!textual(env.ContentType) || !utf8.Valid(body))
		if cap(body) <= maxPooledBody {
			*buf = body
			d.bodies.Put(buf)
		}
		if err != nil {
			return nil, fmt.Errorf("parse body: %w", err)
		}
		if check {
			if err := exposition.Valid(fams); err != nil {
				return nil, fmt.Errorf("body: %w", err) // one bad byte would spoil every endpoint serving it
			}
		}
		exposition.Attach(fams, s.Target)
		s.Families = fams
	}
	s.Health = exposition.Health(s.Target, exposition.Outcome{Up: up, Start: env.Start, Duration: env.Duration, Samples: env.Series})
	return s, nil
}
