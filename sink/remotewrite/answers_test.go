package remotewrite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	remote "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/promtest"
	"github.com/prometheus-streams/prometheus-streams/sink"
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

// TestBackoffUnderFailure: a receiver that answers 503 to everything, written to by
// several targets at once (each scrape retried by the drain as soon as it fails), sees
// one request at a time, at intervals that grow from min_backoff to max_backoff, as
// Prometheus's shards retry: new scrapes do not slip in between the retries, and no
// batch_send_deadline adds to the backoff.
func TestBackoffUnderFailure(t *testing.T) {
	var mu sync.Mutex
	var times []time.Time
	inFlight, most := 0, 0 // most: after the first failures, when the receiver is known to fail
	rw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		times = append(times, time.Now())
		inFlight++
		if len(times) > 4 {
			most = max(most, inFlight)
		}
		mu.Unlock()
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer rw.Close()
	const minB, maxB = 20 * time.Millisecond, 320 * time.Millisecond
	snk := newSink(t, rw.URL, remote.WriteV1MessageType, func(o *Options) {
		o.MinBackoff, o.MaxBackoff, o.MaxShards = minB, maxB, 4
		// While the receiver fails, a sender waits for the backoff, not for the deadline.
		o.BatchSendDeadline = time.Second
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				err := snk.Deliver(ctx, scrape(t, "j", string(rune('a'+i)), time.Now(), []byte("a 1\n")))
				if err == nil || errors.Is(err, sink.ErrRejected) {
					t.Errorf("a failing receiver: %v, want an error to retry", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if most > 1 {
		// The first requests may go together, before the receiver is known to fail;
		// after them, one at a time.
		t.Errorf("%d requests in flight at once while the receiver failed", most)
	}
	if len(times) < 8 {
		t.Fatalf("%d requests in 3 s, want a retry every backoff", len(times))
	}
	var prev time.Duration
	for i := 1; i < len(times); i++ {
		d := times[i].Sub(times[i-1])
		if i > 4 && d < 9*minB/10 { // past the requests that may have gone together
			t.Errorf("interval %d: %v, under min_backoff %v", i, d, minB)
		}
		if d > maxB+maxB/5+50*time.Millisecond {
			t.Errorf("interval %d: %v, over max_backoff %v", i, d, maxB)
		}
		if i > 4 && prev > 0 && float64(d) < 0.8*float64(prev) {
			t.Errorf("interval %d: %v after %v: the backoff shrank", i, d, prev)
		}
		prev = d
	}
	if last := times[len(times)-1].Sub(times[len(times)-2]); last < 8*maxB/10 {
		t.Errorf("last interval %v, want about max_backoff %v", last, maxB)
	}
}

// TestSampleAgeLimit: a scrape older than sample_age_limit is refused for good, counted
// too_old, and never sent; a younger one is written.
func TestSampleAgeLimit(t *testing.T) {
	var mu sync.Mutex
	n := 0
	rw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rw.Close()
	snk := newSink(t, rw.URL, remote.WriteV1MessageType, func(o *Options) { o.SampleAgeLimit = time.Minute })
	err := snk.Deliver(context.Background(), scrape(t, "j", "i", time.Now().Add(-2*time.Minute), []byte("a 1\n")))
	if !errors.Is(err, sink.ErrRejected) {
		t.Errorf("a scrape past sample_age_limit: %v, want a refusal", err)
	}
	if got := testutil.ToFloat64(snk.sender.rejected.WithLabelValues("too_old")); got != 1 {
		t.Errorf("rejected{reason=too_old} = %v", got)
	}
	deliver(t, snk, scrape(t, "j", "i", time.Now(), []byte("a 1\n")))
	mu.Lock()
	defer mu.Unlock()
	if n != 1 {
		t.Errorf("%d requests, want 1: the young scrape only", n)
	}
}

// TestMetadataInterval: in remote-write 1.0 a family's metadata rides on the first
// request with its samples and not again within send_interval; with send off, never.
func TestMetadataInterval(t *testing.T) {
	for _, off := range []bool{false, true} {
		var mu sync.Mutex
		var got []int // metadata entries per request
		rw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			req, err := promtest.ReadWriteRequest(r)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			mu.Lock()
			got = append(got, len(req.Metadata))
			mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		}))
		snk := newSink(t, rw.URL, remote.WriteV1MessageType, func(o *Options) { o.Metadata = Metadata{Off: off, Interval: time.Hour} })
		t0 := time.Now().Add(-time.Second)
		deliver(t, snk, scrape(t, "j", "i", t0, []byte("# TYPE a counter\na 1\n")))
		deliver(t, snk, scrape(t, "j", "i", t0.Add(100*time.Millisecond), []byte("# TYPE a counter\na 2\n")))
		rw.Close()
		mu.Lock()
		if len(got) != 2 || (off && got[0] != 0) || (!off && got[0] == 0) || got[1] != 0 {
			t.Errorf("send %v: metadata entries per request %v, want some in the first only", !off, got)
		}
		mu.Unlock()
	}
}

// TestFlushAtClose: a scrape waiting for its request to fill (batch_send_deadline) is
// sent when the sink closes, as Prometheus flushes its queues at shutdown.
func TestFlushAtClose(t *testing.T) {
	got := make(chan struct{}, 1)
	rw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
		got <- struct{}{}
	}))
	defer rw.Close()
	snk, err := New(Options{Name: "test", URL: rw.URL, BatchSendDeadline: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- snk.Deliver(ctx, scrape(t, "j", "i", time.Now(), []byte("a 1\n"))) }()
	select {
	case <-got:
		t.Fatal("sent before the deadline or a full request")
	case <-time.After(300 * time.Millisecond):
	}
	cancel() // the drain stops
	<-done
	snk.Close()
	select {
	case <-got:
	default:
		t.Error("the waiting scrape was not sent at close")
	}
}

// TestFlushWhenEveryWriterWaits: with batch_send_deadline far off, a request that
// cannot fill further (every scrape the drain can hand over at once waits in it) goes
// at once: the drain waits for its outcome before it hands over more.
func TestFlushWhenEveryWriterWaits(t *testing.T) {
	var mu sync.Mutex
	n := 0
	rw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rw.Close()
	snk := newSink(t, rw.URL, remote.WriteV1MessageType, func(o *Options) {
		o.BatchSendDeadline, o.Writers, o.MaxShards = time.Hour, 3, 1
	})
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deliver(t, snk, scrape(t, "j", fmt.Sprint(i), time.Now(), []byte("a 1\n")))
		}()
	}
	wg.Wait()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v, want the request sent once every writer waits", took)
	}
	mu.Lock()
	defer mu.Unlock()
	if n != 1 {
		t.Errorf("%d requests, want the 3 scrapes in 1", n)
	}
}
