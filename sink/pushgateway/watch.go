package pushgateway

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gatewayState is what the gateway's status says.
type gatewayState struct {
	start   time.Time // zero when the status cannot be read: restarts go unnoticed
	checked bool      // it runs its own consistency check
}

// watch keeps the gateway's state, read again when a caller needs it confirmed more
// recently. Its methods are safe for concurrent use.
type watch struct {
	client    *Client
	logger    *slog.Logger
	restarts  prometheus.Counter
	restarted func() // called when the gateway's start time changes

	reqMu sync.Mutex // one status request at a time
	mu    sync.Mutex
	state gatewayState
	sent  time.Time // when the request that read state was sent; zero: never read
	blind bool      // the status could not be read (logged once)
	// The gateway process was up for at least up when the first answer that showed
	// its start time arrived, at seen (local clock).
	seen time.Time
	up   time.Duration
}

// confirm returns the gateway's state as read by a status request sent at since or
// later, and when that request was sent.
func (w *watch) confirm(ctx context.Context, since time.Time) (gatewayState, time.Time, error) {
	if st, sent, ok := w.cached(since); ok {
		return st, sent, nil
	}
	w.reqMu.Lock()
	defer w.reqMu.Unlock()
	if st, sent, ok := w.cached(since); ok {
		return st, sent, nil
	}
	sent := time.Now()
	s, err := w.client.Status(ctx)
	var st gatewayState
	switch {
	case err == nil:
		st = gatewayState{start: s.Start, checked: s.ConsistencyCheck}
	case errors.Is(err, ErrRejected):
		// A gateway (or a proxy) without the status API: take it for one without its
		// check, whose restarts cannot be noticed.
		w.mu.Lock()
		first := !w.blind
		w.blind = true
		w.mu.Unlock()
		if first {
			w.logger.Warn("cannot read the push gateway's status: its consistency check is taken to be off, and a restart of the gateway goes unnoticed", "err", err)
		}
	default:
		return gatewayState{}, time.Time{}, err
	}
	w.mu.Lock()
	changed := !w.sent.IsZero() && !w.state.start.Equal(st.start)
	restarted := changed && !w.state.start.IsZero() && !st.start.IsZero()
	if changed || w.sent.IsZero() {
		w.seen, w.up = time.Now(), 0
		if !s.Now.IsZero() && !st.start.IsZero() {
			w.up = max(s.Now.Sub(st.start), 0)
		}
	}
	w.state, w.sent = st, sent
	w.mu.Unlock()
	if restarted {
		w.restarts.Inc()
		w.logger.Warn("the push gateway restarted: families are claimed anew before they are pushed", "started", st.start, "checks_consistency", st.checked)
	}
	if changed {
		w.restarted()
	}
	return st, sent, nil
}

// uptime returns how long, at least, the gateway process last read had been up at
// local time t: what its clock said, or how long it has been known.
func (w *watch) uptime(t time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.up + t.Sub(w.seen)
}

func (w *watch) cached(since time.Time) (gatewayState, time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sent.IsZero() || w.sent.Before(since) {
		return gatewayState{}, time.Time{}, false
	}
	return w.state, w.sent, true
}
