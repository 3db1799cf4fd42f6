package drain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// recorder is a sink.Sink that records what it is given and fails as told. The drain's own
// fate logic is tested against it; the real sinks are tested against real servers.
type recorder struct {
	mu    sync.Mutex
	got   []string // job/instance@start-offset of every delivered scrape, in order
	fail  func(s *sink.Scrape) error
	calls int
	base  time.Time
	kind  sink.Kind
}

func (r *recorder) Name() string    { return "recorder" }
func (r *recorder) Kind() sink.Kind { return r.kind }

func (r *recorder) Deliver(_ context.Context, s *sink.Scrape) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.fail != nil {
		if err := r.fail(s); err != nil {
			return err
		}
	}
	r.got = append(r.got, fmt.Sprintf("%s@%s", s.Key(), s.Envelope.Start.Sub(r.base)))
	return nil
}

func (r *recorder) delivered() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// acks records which sequence numbers were acknowledged.
type acks struct {
	mu  sync.Mutex
	seq map[uint64]int
}

func (a *acks) fn(seq uint64) func() error {
	return func() error {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.seq == nil {
			a.seq = map[uint64]int{}
		}
		a.seq[seq]++
		return nil
	}
}

func (a *acks) count(seq uint64) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seq[seq]
}

type harness struct {
	t     *testing.T
	d     *Drain
	rec   *recorder
	acks  *acks
	codec *envelope.Codec
	reg   *prometheus.Registry
	base  time.Time
	seq   uint64
}

func newHarness(t *testing.T, rec *recorder, workers int) *harness {
	t.Helper()
	return newHarnessWith(t, rec, workers, nil, slog.New(slog.DiscardHandler))
}

// newHarnessWith is newHarness with a trust list and a logger.
func newHarnessWith(t *testing.T, rec *recorder, workers int, trust *Trust, logger *slog.Logger) *harness {
	t.Helper()
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(codec.Close)
	reg := prometheus.NewRegistry()
	base := time.Now().Add(-10 * time.Second)
	rec.base = base
	d := New(Options{MaxAge: time.Minute, Workers: workers, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Trust: trust},
		codec, []sink.Sink{rec}, logger, reg)
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
	return &harness{t: t, d: d, rec: rec, acks: &acks{}, codec: codec, reg: reg, base: base}
}

// send hands the drain a scrape of instance started at offset after base, returning its
// sequence number.
func (h *harness) send(instance string, offset time.Duration) uint64 {
	h.t.Helper()
	h.seq++
	b, err := h.codec.Encode(&envelope.Envelope{Job: "j", Instance: instance, Start: h.base.Add(offset),
		ContentType: "text/plain; version=0.0.4", Body: []byte("m 1\n"), Series: 1})
	if err != nil {
		h.t.Fatal(err)
	}
	h.d.Handle(b, h.seq, h.acks.fn(h.seq))
	return h.seq
}

func (h *harness) redeliver(seq uint64, instance string, offset time.Duration) {
	h.t.Helper()
	b, err := h.codec.Encode(&envelope.Envelope{Job: "j", Instance: instance, Start: h.base.Add(offset),
		ContentType: "text/plain; version=0.0.4", Body: []byte("m 1\n"), Series: 1})
	if err != nil {
		h.t.Fatal(err)
	}
	h.d.Handle(b, seq, h.acks.fn(seq))
}

// waitRetries waits until the drain has retried deliveries n times.
func (h *harness) waitRetries(n float64) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(h.d.metrics.retries) < n {
		if time.Now().After(deadline) {
			h.t.Fatalf("%v retries, want %v", testutil.ToFloat64(h.d.metrics.retries), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func (h *harness) waitAcked(seqs ...uint64) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, s := range seqs {
		for h.acks.count(s) == 0 {
			if time.Now().After(deadline) {
				h.t.Fatalf("message %d not acknowledged", s)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func TestDeliverAndAck(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, rec, 2)
	a := h.send("a", time.Second)
	b := h.send("b", time.Second)
	h.waitAcked(a, b)
	if got := rec.delivered(); len(got) != 2 {
		t.Errorf("delivered %v", got)
	}
	if v := testutil.ToFloat64(h.d.metrics.delivered.WithLabelValues("recorder")); v != 2 {
		t.Errorf("delivered metric %v", v)
	}
}

// TestRetryThenDeliver: a transient failure is retried; the message is acknowledged only
// after the sink took it.
func TestRetryThenDeliver(t *testing.T) {
	var failures int
	rec := &recorder{fail: func(*sink.Scrape) error {
		if failures < 3 {
			failures++
			return errors.New("gateway down")
		}
		return nil
	}}
	h := newHarness(t, rec, 1)
	a := h.send("a", time.Second)
	h.waitAcked(a)
	if rec.calls != 4 || len(rec.delivered()) != 1 {
		t.Errorf("calls %d delivered %v", rec.calls, rec.delivered())
	}
	if v := testutil.ToFloat64(h.d.metrics.retries); v != 3 {
		t.Errorf("retries %v", v)
	}
}

// TestNoAckWhileFailing: while the sink fails, nothing is acknowledged.
func TestNoAckWhileFailing(t *testing.T) {
	release := make(chan struct{})
	rec := &recorder{fail: func(*sink.Scrape) error {
		select {
		case <-release:
			return nil
		default:
			return errors.New("down")
		}
	}}
	h := newHarness(t, rec, 1)
	a := h.send("a", time.Second)
	h.waitRetries(5)
	if h.acks.count(a) != 0 {
		t.Fatal("acknowledged before delivery")
	}
	close(release)
	h.waitAcked(a)
}

func TestRejectedIsFinal(t *testing.T) {
	rec := &recorder{fail: func(s *sink.Scrape) error {
		if s.Envelope.Instance == "bad" {
			return fmt.Errorf("%w: 400 inconsistent", sink.ErrRejected)
		}
		return nil
	}}
	h := newHarness(t, rec, 1)
	bad := h.send("bad", time.Second)
	good := h.send("good", time.Second)
	h.waitAcked(bad, good)
	if v := testutil.ToFloat64(h.d.metrics.sinkRejected.WithLabelValues("recorder")); v != 1 {
		t.Errorf("rejected %v", v)
	}
	if got := rec.delivered(); len(got) != 1 || got[0] != "j/good@1s" {
		t.Errorf("delivered %v", got)
	}
}

// TestNewestWins: while a target's delivery is held up, newer scrapes supersede older
// ones; an older or duplicate scrape arriving later is never delivered.
func TestNewestWins(t *testing.T) {
	release := make(chan struct{})
	rec := &recorder{fail: func(s *sink.Scrape) error {
		select {
		case <-release:
			return nil
		default:
			return errors.New("down")
		}
	}}
	h := newHarness(t, rec, 1)
	s1 := h.send("a", 1*time.Second)
	s3 := h.send("a", 3*time.Second)
	s2 := h.send("a", 2*time.Second) // late: older than s3
	h.waitAcked(s2)                  // superseded at once
	close(release)
	h.waitAcked(s1, s3)
	s0 := h.send("a", 0) // a redelivered old scrape after s3 was delivered
	h.waitAcked(s0)
	if got := rec.delivered(); len(got) != 1 || got[0] != "j/a@3s" {
		t.Errorf("delivered %v, want only the newest scrape", got)
	}
	if v := testutil.ToFloat64(h.d.metrics.superseded); v != 3 {
		t.Errorf("superseded %v, want 3", v)
	}
}

// TestRedeliveryOfInflight: the stream redelivering a message the drain is still
// delivering does not acknowledge it early nor deliver it twice.
func TestRedeliveryOfInflight(t *testing.T) {
	release := make(chan struct{})
	rec := &recorder{fail: func(*sink.Scrape) error {
		select {
		case <-release:
			return nil
		default:
			return errors.New("down")
		}
	}}
	h := newHarness(t, rec, 1)
	a := h.send("a", time.Second)
	h.waitRetries(2)
	h.redeliver(a, "a", time.Second)
	if h.acks.count(a) != 0 {
		t.Fatal("redelivery acknowledged while the first delivery is under way")
	}
	close(release)
	h.waitAcked(a)
	if got := rec.delivered(); len(got) != 1 {
		t.Errorf("delivered %v, want once", got)
	}
}

func TestExpired(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, rec, 1)
	old := h.send("a", -2*time.Minute) // base is 10s ago, max_age 1m
	h.waitAcked(old)
	if len(rec.delivered()) != 0 || testutil.ToFloat64(h.d.metrics.expired) != 1 {
		t.Errorf("delivered %v, expired %v", rec.delivered(), testutil.ToFloat64(h.d.metrics.expired))
	}
}

func TestGarbage(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, rec, 1)
	for i, data := range [][]byte{nil, []byte("x"), []byte(`{"job":"j"}`)} {
		h.d.Handle(data, uint64(100+i), h.acks.fn(uint64(100+i)))
		h.waitAcked(uint64(100 + i))
	}
	if v := testutil.ToFloat64(h.d.metrics.rejected.WithLabelValues("not_an_envelope")); v != 3 {
		t.Errorf("rejected %v", v)
	}
}

// TestTargetsInParallel: a target whose sink hangs does not hold up the others.
func TestTargetsInParallel(t *testing.T) {
	release := make(chan struct{})
	rec := &recorder{fail: func(s *sink.Scrape) error {
		if s.Envelope.Instance == "slow" {
			select {
			case <-release:
			default:
				return errors.New("down")
			}
		}
		return nil
	}}
	h := newHarness(t, rec, 2)
	slow := h.send("slow", time.Second)
	var seqs []uint64
	for i := range 20 {
		seqs = append(seqs, h.send(fmt.Sprint("t", i), time.Second))
	}
	h.waitAcked(seqs...)
	if h.acks.count(slow) != 0 {
		t.Error("slow target acknowledged")
	}
	close(release)
	h.waitAcked(slow)
}
