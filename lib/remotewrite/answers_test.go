package remotewrite

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	remote "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/prometheus-streams/prometheus-streams/lib/promtest"
	"github.com/prometheus-streams/prometheus-streams/lib/sink"
)

// TestRetryAfter429: a receiver that limits the rate (as Mimir does) answers 429 with
// Retry-After; the sink waits that long and sends again, and the scrape lands. With
// retry_on_http_429 off, the 429 is not retried at once, but it is no refusal either:
// the drain retries the scrape later, with its own backoff; nothing is dropped.
func TestRetryAfter429(t *testing.T) {
	var mu sync.Mutex
	var times []time.Time
	rw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		if len(times) == 1 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rw.Close()
	snk := newSink(t, rw.URL, remote.WriteV1MessageType, func(o *Options) { o.RetryOnRateLimit = true })
	if err := snk.Deliver(context.Background(), scrape(t, "j", "i", time.Now(), []byte("a 1\n"))); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	mu.Lock()
	if len(times) != 2 {
		t.Fatalf("%d requests, want 2", len(times))
	}
	if wait := times[1].Sub(times[0]); wait < 900*time.Millisecond {
		t.Errorf("sent again after %v, want the 1 s Retry-After", wait)
	}
	times = nil
	mu.Unlock()

	off := newSink(t, rw.URL, remote.WriteV1MessageType) // RetryOnRateLimit false
	err := off.Deliver(context.Background(), scrape(t, "j", "i2", time.Now(), []byte("a 1\n")))
	if err == nil || errors.Is(err, sink.ErrRejected) || errors.Is(err, sink.ErrSuperseded) {
		t.Errorf("429 without retry_on_http_429: %v, want an error the drain retries", err)
	}
}

// TestNotWritten: a receiver that speaks remote-write 1.0 only (Prometheus 2.42) answers
// a 2.0 request with 2xx without writing it; the sink sees that from the missing 2.0
// response headers and refuses the scrape as not_written, for good, at once.
func TestNotWritten(t *testing.T) {
	srv := promtest.Start(t, promtest.Options{Binary: promtest.Prometheus2})
	snk := newSink(t, srv.RemoteWriteURL(), remote.WriteV2MessageType)
	err := snk.Deliver(context.Background(), scrape(t, "j", "i", time.Now(), []byte("a 1\n")))
	if !errors.Is(err, sink.ErrRejected) {
		t.Fatalf("2.0 into a 1.0-only receiver: %v, want a refusal", err)
	}
	if got := testutil.ToFloat64(snk.sender.rejected.WithLabelValues("not_written")); got != 1 {
		t.Errorf("rejected{reason=not_written} = %v", got)
	}
}
