package remotewrite

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// pace spaces the requests to a receiver that fails, as Prometheus's queue manager
// does: after a failure the next attempt waits min_backoff, and each further failure
// doubles the wait up to max_backoff; an answer ends it. It is shared by all the
// senders of the receiver, and while the receiver fails only one request goes at a
// time, the one holding the turn, which keeps it across its retries: so a new request
// never slips in between the retries of another to defeat the backoff, and the
// receiver sees growing intervals rather than one request per sender and scrape.
//
// Safe for concurrent use.
type pace struct {
	min, max time.Duration
	turn     chan struct{} // held by the one request that may go while the receiver fails

	mu    sync.Mutex
	delay time.Duration // the wait after the next failure; 0 while the receiver answers
	until time.Time     // no attempt before
}

func newPace(min, max time.Duration) *pace {
	return &pace{min: min, max: max, turn: make(chan struct{}, 1)}
}

// wait returns once the caller may send: at once while the receiver answers; while it
// fails, once the caller holds the turn (held: it already does) and the backoff has
// passed. It returns whether the caller holds the turn, to give back with release.
func (p *pace) wait(ctx context.Context, held bool) (bool, error) {
	p.mu.Lock()
	failing := p.delay > 0
	p.mu.Unlock()
	if !failing && !held {
		return false, nil
	}
	if !held {
		select {
		case p.turn <- struct{}{}:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	p.mu.Lock()
	until := p.until
	p.mu.Unlock()
	if d := time.Until(until); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return true, ctx.Err()
		}
	}
	return true, nil
}

// next reports whether the receiver fails and, if so, when the next attempt may go.
func (p *pace) next() (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.until, p.delay > 0
}

// release gives the turn back if held.
func (p *pace) release(held bool) {
	if held {
		<-p.turn
	}
}

// answered records that the receiver answered (a success or a refusal): no more waits.
func (p *pace) answered() {
	p.mu.Lock()
	p.delay, p.until = 0, time.Time{}
	p.mu.Unlock()
}

// failed records a failure: the next attempt waits the current backoff, with a jitter
// of ±10 % (within min and max: intervals still grow, never shrink by more than that),
// or as long as the receiver's Retry-After asks.
func (p *pace) failed(retryAfter time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.delay == 0 {
		p.delay = p.min
	}
	d := p.delay + time.Duration((rand.Float64()-0.5)*0.2*float64(p.delay))
	d = min(max(d, p.min), p.max)
	if retryAfter > d {
		d = retryAfter
	}
	p.until = time.Now().Add(d)
	p.delay = min(2*p.delay, p.max)
}
