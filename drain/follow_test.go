package drain

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/promtest"
	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/sink/remotewrite"
)

// receiver is a remote-write 1.0 receiver that keeps, for each request it takes, the
// timestamps of the samples of series m.
type receiver struct {
	mu       sync.Mutex
	requests [][]int64
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := promtest.ReadWriteRequest(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var ts []int64
	for _, s := range req.Timeseries {
		for _, l := range s.Labels {
			if l.Name == "__name__" && l.Value == "m" {
				for _, smp := range s.Samples {
					ts = append(ts, smp.Timestamp)
				}
			}
		}
	}
	rc.mu.Lock()
	rc.requests = append(rc.requests, ts)
	rc.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// TestHistoryFollowsWaitingRequest: a target's scrapes that reach the drain while the
// remote-write request carrying its first one waits for batch_send_deadline join that
// request rather than wait in the drain for its answer: one request carries all three,
// in order, and each is acknowledged once it is answered. A second remote-write sink
// gets the scrapes the first one followed in the same round, also in one request.
func TestHistoryFollowsWaitingRequest(t *testing.T) {
	var sinks []sink.Sink
	var receivers []*receiver
	for range 2 {
		rc := &receiver{}
		rw := httptest.NewServer(rc)
		defer rw.Close()
		snk, err := remotewrite.New(remotewrite.Options{Name: rw.URL, URL: rw.URL, MaxShards: 1, BatchSendDeadline: time.Second},
			slog.New(slog.DiscardHandler), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer snk.Close()
		sinks, receivers = append(sinks, snk), append(receivers, rc)
	}
	h, _ := newStatusHarness(t, Options{Workers: 4}, sinks...)
	var seqs []uint64
	for i := 1; i <= 3; i++ {
		seqs = append(seqs, h.send("a", time.Duration(i)*time.Second))
		time.Sleep(100 * time.Millisecond)
	}
	h.waitAcked(seqs...)
	var want []int64
	for i := 1; i <= 3; i++ {
		want = append(want, h.base.Add(time.Duration(i)*time.Second).UnixMilli())
	}
	for k, rc := range receivers {
		rc.mu.Lock()
		if len(rc.requests) != 1 || !slices.Equal(rc.requests[0], want) {
			t.Errorf("sink %d: requests carried m at %v, want one request with %v", k, rc.requests, want)
		}
		rc.mu.Unlock()
	}
}

// TestSaturatedDrainSendsAtOnce: a drain that holds max_inflight scrapes can take no
// more from its streams, so a remote-write request waiting to fill goes at once rather
// than after batch_send_deadline; below that bound it still waits, as Prometheus's
// queue does for samples to come.
func TestSaturatedDrainSendsAtOnce(t *testing.T) {
	const deadline = 4 * time.Second
	for _, c := range []struct {
		maxInflight int
		wantBefore  bool // answered well before the deadline
	}{
		{3, true},
		{100, false},
	} {
		rc := &receiver{}
		rw := httptest.NewServer(rc)
		snk, err := remotewrite.New(remotewrite.Options{Name: rw.URL, URL: rw.URL, MaxShards: 1, BatchSendDeadline: deadline},
			slog.New(slog.DiscardHandler), nil)
		if err != nil {
			t.Fatal(err)
		}
		h, _ := newStatusHarness(t, Options{Workers: 8, MaxInflight: c.maxInflight}, snk)
		start := time.Now()
		seqs := []uint64{h.send("a", time.Second), h.send("b", time.Second), h.send("c", time.Second)}
		// The first answer tells: once one request is answered the drain is no longer
		// saturated, so a scrape prepared after that waits, as the last samples of a
		// burst wait in Prometheus's queue.
		var first time.Duration
		for first == 0 {
			for _, s := range seqs {
				if h.acks.count(s) > 0 {
					first = time.Since(start)
				}
			}
			if time.Since(start) > 2*deadline {
				t.Fatalf("max_inflight %d: nothing acknowledged after %s", c.maxInflight, 2*deadline)
			}
			time.Sleep(time.Millisecond)
		}
		h.waitAcked(seqs...)
		if early := first < deadline/2; early != c.wantBefore {
			t.Errorf("max_inflight %d: the first scrape acknowledged after %s; batch_send_deadline %s", c.maxInflight, first.Round(time.Millisecond), deadline)
		}
		rc.mu.Lock()
		// Saturated, a request goes once no scrape came for a moment: the three may
		// take more than one; waiting, they take one.
		n := 0
		for _, r := range rc.requests {
			n += len(r)
		}
		if n != 3 || !c.wantBefore && len(rc.requests) != 1 {
			t.Errorf("max_inflight %d: requests carried m at %v, want the three scrapes (in one request unless saturated)", c.maxInflight, rc.requests)
		}
		rc.mu.Unlock()
		snk.Close()
		rw.Close()
	}
}
