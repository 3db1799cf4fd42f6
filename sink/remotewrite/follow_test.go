package remotewrite

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	remote "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/promtest"
	"github.com/prometheus-streams/prometheus-streams/sink"
)

// requests is a remote-write 1.0 receiver that keeps each request it takes, decoded, and
// refuses with a 400 every request holding a sample of value refuse (when not 0).
type requests struct {
	mu     sync.Mutex
	got    []prompb.WriteRequest
	refuse float64
	status int // when not 0, every answer
}

func (rq *requests) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := promtest.ReadWriteRequest(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rq.mu.Lock()
	defer rq.mu.Unlock()
	if rq.status != 0 {
		w.WriteHeader(rq.status)
		return
	}
	for _, ts := range req.Timeseries {
		for _, s := range ts.Samples {
			if rq.refuse != 0 && s.Value == rq.refuse {
				http.Error(w, "refused", http.StatusBadRequest)
				return
			}
		}
	}
	rq.got = append(rq.got, *req)
	w.WriteHeader(http.StatusNoContent)
}

// samples returns the samples of series name in request i, in request order.
func (rq *requests) samples(i int, name string) []prompb.Sample {
	rq.mu.Lock()
	defer rq.mu.Unlock()
	var out []prompb.Sample
	for _, ts := range rq.got[i].Timeseries {
		for _, l := range ts.Labels {
			if l.Name == "__name__" && l.Value == name {
				out = append(out, ts.Samples...)
			}
		}
	}
	return out
}

func (rq *requests) count() int {
	rq.mu.Lock()
	defer rq.mu.Unlock()
	return len(rq.got)
}

// feed is the drain's side of sink.Later in a test: the scrapes it is given, handed
// over when Next is called.
type feed struct {
	mu      sync.Mutex
	waiting []*sink.Scrape
	arrived chan struct{}
}

func newFeed() *feed { return &feed{arrived: make(chan struct{}, 1)} }

func (f *feed) add(sc *sink.Scrape) {
	f.mu.Lock()
	f.waiting = append(f.waiting, sc)
	f.mu.Unlock()
	select {
	case f.arrived <- struct{}{}:
	default:
	}
}

func (f *feed) Next() []*sink.Scrape {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.waiting
	f.waiting = nil
	return out
}

func (f *feed) Arrived() <-chan struct{} { return f.arrived }

// follow delivers first with DeliverFollowing while a goroutine hands over later, one
// every 100ms, and returns the fates.
func follow(t *testing.T, snk *Sink, first *sink.Scrape, later ...*sink.Scrape) []error {
	t.Helper()
	f := newFeed()
	go func() {
		for _, sc := range later {
			time.Sleep(100 * time.Millisecond)
			f.add(sc)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return snk.DeliverFollowing(ctx, []*sink.Scrape{first}, f)
}

// followSink is a sink writing to rq with one sender that waits a second for its
// request to fill, and the times of three scrapes a second apart.
func followSink(t *testing.T, rq *requests) (*Sink, time.Time, time.Time, time.Time) {
	t.Helper()
	rw := httptest.NewServer(rq)
	t.Cleanup(rw.Close)
	snk := newSink(t, rw.URL, remote.WriteV1MessageType, func(o *Options) {
		o.MaxShards, o.BatchSendDeadline = 1, time.Second
	})
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	return snk, t0, t0.Add(time.Second), t0.Add(2 * time.Second)
}

// TestFollowJoinsWaitingRequest: a target's scrapes that come while the request carrying
// its first one waits for batch_send_deadline join that request, as samples appended to
// Prometheus's queue join the batch it fills: one request holds the three scrapes, each
// sample at its scrape's time, and the series the middle scrape lacks is marked stale at
// that scrape, not before or after.
func TestFollowJoinsWaitingRequest(t *testing.T) {
	rq := &requests{}
	snk, t0, t1, t2 := followSink(t, rq)
	errs := follow(t, snk,
		scrape(t, "j", "i", t0, []byte("a 1\nb 1\n")),
		scrape(t, "j", "i", t1, []byte("a 2\n")),
		scrape(t, "j", "i", t2, []byte("a 3\nb 3\n")))
	if len(errs) != 3 || errs[0] != nil || errs[1] != nil || errs[2] != nil {
		t.Fatalf("fates %v, want 3 delivered", errs)
	}
	if n := rq.count(); n != 1 {
		t.Fatalf("%d requests, want the 3 scrapes in 1", n)
	}
	a := rq.samples(0, "a")
	if want := []prompb.Sample{{Value: 1, Timestamp: t0.UnixMilli()}, {Value: 2, Timestamp: t1.UnixMilli()}, {Value: 3, Timestamp: t2.UnixMilli()}}; !slices.EqualFunc(a, want, func(x, y prompb.Sample) bool {
		return x.Value == y.Value && x.Timestamp == y.Timestamp
	}) {
		t.Errorf("a: %v, want %v", a, want)
	}
	b := rq.samples(0, "b")
	if len(b) != 3 || b[0].Value != 1 || b[0].Timestamp != t0.UnixMilli() ||
		!value.IsStaleNaN(b[1].Value) || b[1].Timestamp != t1.UnixMilli() ||
		b[2].Value != 3 || b[2].Timestamp != t2.UnixMilli() {
		t.Errorf("b: %v, want 1 at the first scrape, a marker at the second, 3 at the third", b)
	}
}

// TestFollowRefusedWrittenAlone: a request of joined scrapes that the receiver refuses
// for good is written again scrape by scrape, in order: the bad scrape is refused alone,
// and the scrape after it is written with its markers taken from the one before.
func TestFollowRefusedWrittenAlone(t *testing.T) {
	rq := &requests{refuse: 666}
	snk, t0, t1, t2 := followSink(t, rq)
	errs := follow(t, snk,
		scrape(t, "j", "i", t0, []byte("a 1\nb 1\n")),
		scrape(t, "j", "i", t1, []byte("a 666\n")),
		scrape(t, "j", "i", t2, []byte("a 3\n")))
	if len(errs) != 3 || errs[0] != nil || !errors.Is(errs[1], sink.ErrRejected) || errs[2] != nil {
		t.Fatalf("fates %v, want delivered, rejected, delivered", errs)
	}
	if n := rq.count(); n != 2 {
		t.Fatalf("%d requests taken, want the first and the third scrape alone", n)
	}
	if a := rq.samples(1, "a"); len(a) != 1 || a[0].Value != 3 || a[0].Timestamp != t2.UnixMilli() {
		t.Errorf("second request's a: %v, want 3 at the third scrape", a)
	}
	if b := rq.samples(1, "b"); len(b) != 1 || !value.IsStaleNaN(b[0].Value) || b[0].Timestamp != t2.UnixMilli() {
		t.Errorf("second request's b: %v, want a marker at the third scrape", b)
	}
}

// TestFollowFailureFailsEveryScrape: when the request of joined scrapes fails, every one
// of them fails retryably, so that the drain retries them all, oldest first; the sink
// holds none of them, and the next delivery writes them again.
func TestFollowFailureFailsEveryScrape(t *testing.T) {
	rq := &requests{status: http.StatusServiceUnavailable}
	rw := httptest.NewServer(rq)
	defer rw.Close()
	snk := newSink(t, rw.URL, remote.WriteV1MessageType, func(o *Options) {
		o.MaxShards, o.BatchSendDeadline, o.MaxRetries = 1, 500*time.Millisecond, 1
	})
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	scs := []*sink.Scrape{
		scrape(t, "j", "i", t0, []byte("a 1\n")),
		scrape(t, "j", "i", t0.Add(time.Second), []byte("a 2\n")),
	}
	errs := follow(t, snk, scs[0], scs[1])
	if len(errs) != 2 || !sink.Retryable(errs[0]) || !sink.Retryable(errs[1]) {
		t.Fatalf("fates %v, want both retryable", errs)
	}
	rq.mu.Lock()
	rq.status = 0
	rq.mu.Unlock()
	got := make([]error, 2)
	snk.DeliverBatch(context.Background(), scs, got)
	if got[0] != nil || got[1] != nil {
		t.Fatalf("again: %v, want both delivered", got)
	}
	if a := rq.samples(0, "a"); len(a) != 2 || a[0].Value != 1 || a[1].Value != 2 {
		t.Errorf("a: %v, want both scrapes' samples", a)
	}
}

// TestDuplicateSeriesEndsOnce: a series a scrape has twice is tracked once, so the
// scrape that lacks it ends it with one marker, and the series that stays gets none.
func TestDuplicateSeriesEndsOnce(t *testing.T) {
	rq := &requests{}
	snk, t0, t1, _ := followSink(t, rq)
	errs := follow(t, snk,
		scrape(t, "j", "i", t0, []byte("a 1\nb 1\na 2\n")),
		scrape(t, "j", "i", t1, []byte("b 2\n")))
	if len(errs) != 2 || errs[0] != nil || errs[1] != nil {
		t.Fatalf("fates %v, want 2 delivered", errs)
	}
	a := rq.samples(0, "a")
	if len(a) != 3 || a[0].Value != 1 || a[1].Value != 2 || !value.IsStaleNaN(a[2].Value) || a[2].Timestamp != t1.UnixMilli() {
		t.Errorf("a: %v, want 1 and 2 at the first scrape, one marker at the second", a)
	}
	if b := rq.samples(0, "b"); len(b) != 2 || value.IsStaleNaN(b[0].Value) || value.IsStaleNaN(b[1].Value) {
		t.Errorf("b: %v, want 1 and 2, no marker", b)
	}
}
