package drain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// clock is a settable Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newStatusHarness runs a drain over sinks with opts (MaxAge one minute and fast
// backoff unless set) and a clock it returns.
func newStatusHarness(t *testing.T, opts Options, sinks ...sink.Sink) (*harness, *clock) {
	t.Helper()
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(codec.Close)
	clk := &clock{now: time.Now()}
	opts.Now = clk.Now
	if opts.MaxAge == 0 {
		opts.MaxAge = time.Minute
	}
	opts.MinBackoff, opts.MaxBackoff = time.Millisecond, 5*time.Millisecond
	base := clk.Now().Add(-10 * time.Second)
	var rec *recorder
	for _, s := range sinks {
		if r, ok := s.(*recorder); ok {
			r.base = base
			rec = r
		}
	}
	reg := prometheus.NewRegistry()
	d := New(opts, codec, sinks, slog.New(slog.DiscardHandler), reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		d.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return &harness{t: t, d: d, rec: rec, acks: &acks{}, codec: codec, reg: reg, base: base}, clk
}

// sendEnv hands the drain e, with job "j", a small body and Start offset after base
// unless set, and returns its sequence number.
func (h *harness) sendEnv(e envelope.Envelope, offset time.Duration) uint64 {
	h.t.Helper()
	h.seq++
	if e.Job == "" {
		e.Job = "j"
	}
	if e.ContentType == "" {
		e.ContentType = "text/plain; version=0.0.4"
	}
	if e.Body == nil && e.Error == "" {
		e.Body, e.Series = []byte("m 1\n"), 1
	}
	e.Start = h.base.Add(offset)
	b, err := h.codec.Encode(&e)
	if err != nil {
		h.t.Fatal(err)
	}
	h.d.Handle(b, h.seq, h.acks.fn(h.seq))
	return h.seq
}

// status returns the drain's status of j/instance, failing if it has none.
func (h *harness) status(instance string) TargetStatus {
	h.t.Helper()
	for _, ts := range h.d.Targets() {
		if ts.Job == "j" && ts.Instance == instance {
			return ts
		}
	}
	h.t.Fatalf("no status for j/%s in %+v", instance, h.d.Targets())
	return TargetStatus{}
}

// waitState waits until j/instance is in state want.
func (h *harness) waitState(instance string, want State) TargetStatus {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ts := h.status(instance)
		if ts.State == want {
			return ts
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("j/%s is %s, want %s: %+v", instance, ts.State, want, ts)
		}
		time.Sleep(time.Millisecond)
	}
}

// failing is a sink.Sink that fails with err (retried unless it wraps a final fate) until
// released.
type failing struct {
	name    string
	err     error
	release chan struct{}
}

func (f *failing) Name() string    { return f.name }
func (f *failing) Kind() sink.Kind { return sink.State }

func (f *failing) Deliver(context.Context, *sink.Scrape) error {
	select {
	case <-f.release:
		return nil
	default:
		return f.err
	}
}

func TestStatusDelivered(t *testing.T) {
	h, clk := newStatusHarness(t, Options{}, &recorder{})
	seq := h.sendEnv(envelope.Envelope{Instance: "a", Publisher: "edge1", Site: "dc1", Duration: 250 * time.Millisecond}, 2*time.Second)
	h.waitAcked(seq)
	ts := h.waitState("a", StateUp)
	if ts.Publisher != "edge1" || ts.Site != "dc1" || ts.Series != 1 || ts.Seq != seq || ts.Error != "" ||
		ts.Duration != 250*time.Millisecond || !ts.Start.Equal(h.base.Add(2*time.Second)) {
		t.Errorf("status %+v", ts)
	}
	if ts.Lag() != 8*time.Second || ts.Age != 8*time.Second || !ts.Received.Equal(clk.Now()) {
		t.Errorf("lag %v age %v received %v", ts.Lag(), ts.Age, ts.Received)
	}
	if len(ts.Sinks) != 1 {
		t.Fatalf("sinks %+v", ts.Sinks)
	}
	s := ts.Sinks[0]
	if s.Sink != "recorder" || s.Fate != FateDelivered || s.Error != "" || s.Attempts != 1 || !s.LastSuccess.Equal(clk.Now()) || !s.At.Equal(clk.Now()) {
		t.Errorf("sink %+v", s)
	}
}

func TestStatusDown(t *testing.T) {
	h, _ := newStatusHarness(t, Options{}, &recorder{})
	seq := h.sendEnv(envelope.Envelope{Instance: "a", Error: "Get \"http://a/metrics\": connection refused"}, time.Second)
	h.waitAcked(seq)
	ts := h.waitState("a", StateDown)
	if ts.Error != `Get "http://a/metrics": connection refused` || ts.Sinks[0].Fate != FateDelivered {
		t.Errorf("status %+v", ts)
	}
}

// TestStatusRetrying: while one sink fails and another takes the scrape, each sink's
// fate is its own and the target is retrying; once the failing sink recovers, up.
func TestStatusRetrying(t *testing.T) {
	down := &failing{name: "gateway", err: errors.New("503 service unavailable"), release: make(chan struct{})}
	h, _ := newStatusHarness(t, Options{}, &recorder{}, down)
	seq := h.sendEnv(envelope.Envelope{Instance: "a"}, time.Second)
	h.waitRetries(2)
	ts := h.waitState("a", StateRetrying)
	if s := ts.Sinks[0]; s.Sink != "recorder" || s.Fate != FateDelivered || s.Attempts != 1 {
		t.Errorf("recorder %+v", s)
	}
	if s := ts.Sinks[1]; s.Sink != "gateway" || s.Fate != FateRetrying || s.Error != "503 service unavailable" || s.Attempts < 2 || !s.LastSuccess.IsZero() {
		t.Errorf("gateway %+v", s)
	}
	if h.acks.count(seq) != 0 {
		t.Fatal("acknowledged while retrying")
	}
	close(down.release)
	h.waitAcked(seq)
	ts = h.waitState("a", StateUp)
	if s := ts.Sinks[1]; s.Fate != FateDelivered || s.Error != "" || s.LastSuccess.IsZero() {
		t.Errorf("gateway %+v", s)
	}
}

func TestStatusRejected(t *testing.T) {
	bad := &failing{name: "gateway", err: fmt.Errorf("%w: 400 inconsistent <b>labels</b>", sink.ErrRejected)}
	h, _ := newStatusHarness(t, Options{}, bad, &recorder{})
	seq := h.sendEnv(envelope.Envelope{Instance: "a"}, time.Second)
	h.waitAcked(seq)
	ts := h.waitState("a", StateRejected)
	if s := ts.Sinks[0]; s.Fate != FateRejected || s.Error != "rejected: 400 inconsistent <b>labels</b>" {
		t.Errorf("gateway %+v", s)
	}
	if s := ts.Sinks[1]; s.Fate != FateDelivered {
		t.Errorf("recorder %+v", s)
	}
}

func TestStatusInvalidBody(t *testing.T) {
	h, _ := newStatusHarness(t, Options{}, &recorder{}, &recorder{})
	seq := h.sendEnv(envelope.Envelope{Instance: "a", Body: []byte("not { an exposition\n"), Series: 1}, time.Second)
	h.waitAcked(seq)
	ts := h.waitState("a", StateRejected)
	for _, s := range ts.Sinks {
		if s.Fate != FateRejected || !strings.HasPrefix(s.Error, "invalid body: ") || s.Attempts != 0 {
			t.Errorf("sink %+v", s)
		}
	}
}

func TestStatusSupersededBySink(t *testing.T) {
	h, _ := newStatusHarness(t, Options{}, &failing{name: "gateway", err: sink.ErrSuperseded})
	seq := h.sendEnv(envelope.Envelope{Instance: "a"}, time.Second)
	h.waitAcked(seq)
	ts := h.waitState("a", StateUp)
	if s := ts.Sinks[0]; s.Fate != FateSuperseded || !s.LastSuccess.IsZero() {
		t.Errorf("sink %+v", s)
	}
}

// TestStatusExpiredOnArrival: a target whose messages all arrive past max_age (an edge
// clock behind) is listed, as expired, not hidden.
func TestStatusExpiredOnArrival(t *testing.T) {
	h, _ := newStatusHarness(t, Options{}, &recorder{})
	seq := h.sendEnv(envelope.Envelope{Instance: "late", Publisher: "edge1"}, -2*time.Minute)
	h.waitAcked(seq)
	ts := h.waitState("late", StateExpired)
	if ts.Publisher != "edge1" || ts.Seq != seq || ts.Sinks[0].Fate != FateExpired || ts.Sinks[0].Error == "" {
		t.Errorf("status %+v", ts)
	}
}

// TestStatusExpiredWhileRetrying: a scrape that passes max_age while a sink fails is
// expired in that sink and keeps its fate in the sink that took it.
func TestStatusExpiredWhileRetrying(t *testing.T) {
	down := &failing{name: "gateway", err: errors.New("down")}
	h, clk := newStatusHarness(t, Options{}, &recorder{}, down)
	seq := h.sendEnv(envelope.Envelope{Instance: "a"}, time.Second)
	h.waitRetries(1)
	clk.add(55 * time.Second) // the scrape is 64s old; its message arrived 55s ago
	h.waitAcked(seq)
	ts := h.waitState("a", StateExpired)
	if ts.Sinks[0].Fate != FateDelivered || ts.Sinks[1].Fate != FateExpired || ts.Sinks[1].Error != "" {
		t.Errorf("sinks %+v", ts.Sinks)
	}
}

// TestStatusNewest: the status follows the newest scrape; an older one arriving later
// changes nothing, a redelivery of the newest only its sequence.
func TestStatusNewest(t *testing.T) {
	h, _ := newStatusHarness(t, Options{}, &recorder{})
	s2 := h.sendEnv(envelope.Envelope{Instance: "a", Publisher: "new"}, 2*time.Second)
	h.waitAcked(s2)
	s1 := h.sendEnv(envelope.Envelope{Instance: "a", Publisher: "old"}, time.Second)
	h.waitAcked(s1)
	if ts := h.status("a"); ts.Publisher != "new" || ts.Seq != s2 || ts.State != StateUp {
		t.Errorf("after an older scrape: %+v", ts)
	}
	h.redeliver(s2, "a", 2*time.Second) // acked at once: the rec has it
	h.redeliver(77, "a", 2*time.Second)
	h.waitAcked(77)
	if ts := h.status("a"); ts.Seq != s2 || ts.Sinks[0].Attempts != 1 {
		t.Errorf("after a redelivery of a delivered scrape: %+v", ts)
	}

	// A redelivery of a scrape being retried takes its new sequence.
	down := &failing{name: "gateway", err: errors.New("down"), release: make(chan struct{})}
	h, _ = newStatusHarness(t, Options{}, down)
	s := h.sendEnv(envelope.Envelope{Instance: "b"}, time.Second)
	h.waitState("b", StateRetrying)
	h.redeliver(99, "b", time.Second)
	if ts := h.status("b"); ts.Seq != 99 || ts.State != StateRetrying {
		t.Errorf("after a redelivery of a scrape in flight: %+v", ts)
	}
	close(down.release)
	h.waitAcked(99)
	if h.acks.count(s) != 0 {
		t.Error("the first handle was acknowledged")
	}
	h.waitState("b", StateUp)
}

// TestStatusStale: a target that stops sending goes stale after max_age, stays listed
// for StaleRetention after the sweep forgets it, and keeps its sinks' last successes
// when it comes back.
func TestStatusStale(t *testing.T) {
	h, clk := newStatusHarness(t, Options{StaleRetention: 10 * time.Minute}, &recorder{})
	seq := h.sendEnv(envelope.Envelope{Instance: "a"}, 9*time.Second)
	h.waitAcked(seq)
	ok := h.waitState("a", StateUp).Sinks[0].LastSuccess
	clk.add(61 * time.Second)
	h.waitState("a", StateStale)
	h.d.Sweep(context.Background())
	h.d.mu.Lock()
	_, known := h.d.targets["j/a"]
	h.d.mu.Unlock()
	if known {
		t.Fatal("the sweep kept the target")
	}
	if ts := h.status("a"); ts.State != StateStale || ts.Age != 62*time.Second {
		t.Errorf("after the sweep: %+v", ts)
	}

	// Back within the retention: the page still knows when the sink last took it.
	seq = h.sendEnv(envelope.Envelope{Instance: "a"}, 71*time.Second)
	h.redeliver(seq, "a", 71*time.Second)
	h.waitAcked(seq)
	ts := h.waitState("a", StateUp)
	if !ts.Sinks[0].LastSuccess.After(ok) {
		t.Errorf("last success %v, want after %v", ts.Sinks[0].LastSuccess, ok)
	}

	// Gone for good after max_age plus the retention.
	clk.add(time.Minute + time.Second)
	h.d.Sweep(context.Background())
	if ts := h.status("a"); ts.State != StateStale {
		t.Errorf("swept: %+v", ts)
	}
	clk.add(10 * time.Minute)
	h.d.Sweep(context.Background())
	if got := h.d.Targets(); len(got) != 0 {
		t.Errorf("after the retention: %+v", got)
	}
}

func TestStatusNoRetention(t *testing.T) {
	h, clk := newStatusHarness(t, Options{StaleRetention: -1}, &recorder{})
	h.waitAcked(h.sendEnv(envelope.Envelope{Instance: "a"}, time.Second))
	clk.add(2 * time.Minute)
	h.d.Sweep(context.Background())
	if got := h.d.Targets(); len(got) != 0 {
		t.Errorf("targets %+v", got)
	}
}

func TestTargetsSorted(t *testing.T) {
	h, _ := newStatusHarness(t, Options{}, &recorder{})
	var seqs []uint64
	for _, k := range [][2]string{{"b", "x"}, {"a", "z"}, {"b", "a"}, {"a", "b:1"}} {
		seqs = append(seqs, h.sendEnv(envelope.Envelope{Job: k[0], Instance: k[1]}, time.Second))
	}
	h.waitAcked(seqs...)
	var got []string
	for _, ts := range h.d.Targets() {
		got = append(got, ts.Job+"/"+ts.Instance)
	}
	if want := "a/b:1 a/z b/a b/x"; strings.Join(got, " ") != want {
		t.Errorf("order %v, want %s", got, want)
	}
}

// TestTargetsUntrustedNotRecorded: a message the trust list refuses leaves no trace
// a forger could use to fill the page.
func TestTargetsUntrustedNotRecorded(t *testing.T) {
	h := newHarnessWith(t, &recorder{}, 1, &Trust{}, slog.New(slog.DiscardHandler))
	h.waitAcked(h.send("a", time.Second))
	if got := h.d.Targets(); len(got) != 0 {
		t.Errorf("targets %+v", got)
	}
}

func TestErrorText(t *testing.T) {
	long := strings.Repeat("é", maxErrorLen)
	got := errorText(errors.New(long))
	if len(got) > maxErrorLen+len("…") || !strings.HasSuffix(got, "…") || !strings.HasPrefix(got, "éé") {
		t.Errorf("%d bytes: %q…", len(got), got[:10])
	}
	if got := errorText(errors.New("short")); got != "short" {
		t.Errorf("%q", got)
	}
}

// TestClockAhead: a scrape stamped further ahead of the drain's clock than
// MaxClockSkew is refused: counted, shown on the target's status with the offset, and
// the genuine scrapes that follow it are delivered, not superseded by it.
func TestClockAhead(t *testing.T) {
	h, _ := newStatusHarness(t, Options{}, &recorder{})
	ahead := h.sendEnv(envelope.Envelope{Instance: "a", Publisher: "skewed"}, time.Hour)
	h.waitAcked(ahead)
	if v := testutil.ToFloat64(h.d.metrics.rejected.WithLabelValues(reasonClockAhead)); v != 1 {
		t.Errorf("rejected{clock_ahead} = %v", v)
	}
	ts := h.status("a")
	if ts.State != StateRejected || !strings.Contains(ts.Sinks[0].Error, "ahead of the drain's clock") || !strings.Contains(ts.Sinks[0].Error, `"skewed"`) {
		t.Errorf("status after a scrape from the future: %+v", ts)
	}
	// Within the tolerance: taken.
	near := h.sendEnv(envelope.Envelope{Instance: "a", Publisher: "skewed"}, 10*time.Second+5*time.Second)
	h.waitAcked(near)
	genuine := h.sendEnv(envelope.Envelope{Instance: "b", Publisher: "good"}, 2*time.Second)
	h.waitAcked(genuine)
	got := h.rec.delivered()
	if !slices.Contains(got, "j/a@15s") || !slices.Contains(got, "j/b@2s") || slices.Contains(got, "j/a@1h0m0s") {
		t.Errorf("delivered %v", got)
	}
	if ts := h.status("a"); ts.State != StateUp {
		t.Errorf("status after a genuine scrape: %+v", ts)
	}
}

// TestStatusLine: the status line speaks of every stream, not of the last to report.
func TestStatusLine(t *testing.T) {
	h, _ := newStatusHarness(t, Options{Streams: 2}, &recorder{})
	if got := h.d.Status(); got != "connecting to the stream" {
		t.Errorf("before any subscription: %q", got)
	}
	h.d.StreamState("jetstream:P", false, errors.New("no responders"))
	h.d.StreamState("stan:c/prometheus", true, nil)
	if got := h.d.Status(); got != "not subscribed to jetstream:P (no responders)" {
		t.Errorf("one stream down: %q", got)
	}
	h.d.StreamState("jetstream:P", true, nil)
	if got := h.d.Status(); got != "subscribed to jetstream:P, stan:c/prometheus" {
		t.Errorf("both up: %q", got)
	}
}
