package drain

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// ledger is a history sink that records every scrape it takes, fails while down, and
// takes batches when batch is set.
type ledger struct {
	mu      sync.Mutex
	base    time.Time
	down    bool
	got     []string // instance@offset, in the order taken
	batches []int    // sizes of the batches taken
	// disorder lists the scrapes taken after a newer one of their target.
	disorder []string
	last     map[string]time.Time
	failFor  map[string]bool // instances whose scrapes it fails
	tries    map[string]int  // deliveries it took, by instance
}

func newLedger() *ledger {
	return &ledger{last: map[string]time.Time{}, failFor: map[string]bool{}, tries: map[string]int{}}
}

func (l *ledger) Name() string    { return "ledger" }
func (l *ledger) Kind() sink.Kind { return sink.History }

func (l *ledger) Deliver(_ context.Context, s *sink.Scrape) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.take(s)
}

func (l *ledger) take(s *sink.Scrape) error {
	l.tries[s.Envelope.Instance]++
	if l.down || l.failFor[s.Envelope.Instance] {
		return errors.New("receiver down")
	}
	key := fmt.Sprintf("%s@%s", s.Envelope.Instance, s.Envelope.Start.Sub(l.base))
	for _, g := range l.got {
		if g == key {
			return nil // a redelivery
		}
	}
	// A history sink must never be handed a target's scrape older than one it has.
	if last, ok := l.last[s.Envelope.Instance]; ok && s.Envelope.Start.Before(last) {
		l.disorder = append(l.disorder, key)
	}
	l.last[s.Envelope.Instance] = s.Envelope.Start
	l.got = append(l.got, key)
	return nil
}

func (l *ledger) DeliverBatch(_ context.Context, ss []*sink.Scrape, errs []error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.batches = append(l.batches, len(ss))
	for i, s := range ss {
		errs[i] = l.take(s)
	}
}

func (l *ledger) set(down bool) {
	l.mu.Lock()
	l.down = down
	l.mu.Unlock()
}

func (l *ledger) taken() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.disorder) > 0 {
		panic(fmt.Sprintf("history out of order: %v after %v", l.disorder, l.got))
	}
	return slices.Clone(l.got)
}

// plainLedger is a ledger without DeliverBatch: the drain hands it one scrape at a time.
type plainLedger struct{ l *ledger }

func (p plainLedger) Name() string    { return p.l.Name() }
func (p plainLedger) Kind() sink.Kind { return sink.History }
func (p plainLedger) Deliver(ctx context.Context, s *sink.Scrape) error {
	return p.l.Deliver(ctx, s)
}

func historyHarness(t *testing.T, batch bool, state bool) (*harness, *ledger) {
	t.Helper()
	l := newLedger()
	var sinks []sink.Sink
	if state {
		sinks = append(sinks, &recorder{})
	}
	if batch {
		sinks = append(sinks, l)
	} else {
		sinks = append(sinks, plainLedger{l})
	}
	h, _ := newStatusHarness(t, Options{Workers: 4}, sinks...)
	l.base = h.base
	return h, l
}

// TestHistoryEveryScrapeInOrder: while the history sink is down, a target's scrapes wait,
// unacknowledged; once it is back every one of them arrives, in scrape order, and the
// state sink beside it ends on the newest scrape without being given the older ones.
func TestHistoryEveryScrapeInOrder(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			h, l := historyHarness(t, batch, true)
			l.set(true)
			var seqs []uint64
			for i := 1; i <= 6; i++ {
				seqs = append(seqs, h.send("a", time.Duration(i)*time.Second))
				seqs = append(seqs, h.send("b", time.Duration(i)*time.Second))
			}
			h.waitRetries(2)
			for _, s := range seqs {
				if h.acks.count(s) != 0 {
					t.Fatalf("message %d acknowledged while the history sink is down", s)
				}
			}
			l.set(false)
			h.waitAcked(seqs...)
			got := l.taken()
			for _, inst := range []string{"a", "b"} {
				var mine []string
				for _, g := range got {
					if g[0] == inst[0] {
						mine = append(mine, g)
					}
				}
				var want []string
				for i := 1; i <= 6; i++ {
					want = append(want, fmt.Sprintf("%s@%s", inst, time.Duration(i)*time.Second))
				}
				if !slices.Equal(mine, want) {
					t.Errorf("history of %s: %v, want %v", inst, mine, want)
				}
			}
			// The state sink holds each target's newest scrape and was given no older
			// one after it.
			st := h.rec.delivered()
			for _, inst := range []string{"a", "b"} {
				var last string
				for _, g := range st {
					if g[2] == inst[0] {
						last = g
					}
				}
				if want := fmt.Sprintf("j/%s@6s", inst); last != want {
					t.Errorf("state sink ends on %q, want %q (all: %v)", last, want, st)
				}
			}
			if v := testutil.ToFloat64(h.d.metrics.superseded); v != 0 {
				t.Errorf("superseded %v: every scrape went to the history sink", v)
			}
			if batch {
				l.mu.Lock()
				big := slices.Max(l.batches)
				l.mu.Unlock()
				if big < 2 {
					t.Errorf("batches %v: the backlog never went in one batch", l.batches)
				}
			}
		})
	}
}

// TestHistoryStateSinkGoesOn: a history sink that is down does not stop the state sink:
// it gets each target's newest scrape while the history waits, however long its backoff.
func TestHistoryStateSinkGoesOn(t *testing.T) {
	h, l := historyHarness(t, true, true)
	l.set(true)
	h.d.opts.MinBackoff, h.d.opts.MaxBackoff = time.Hour, time.Hour
	h.send("a", time.Second)
	h.send("a", 2*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(h.rec.delivered(), "j/a@2s") {
		if time.Now().After(deadline) {
			t.Fatalf("state sink got %v while the history sink was down", h.rec.delivered())
		}
		time.Sleep(time.Millisecond)
	}
	if got := l.taken(); len(got) != 0 {
		t.Errorf("history %v while down", got)
	}
}

// TestHistoryLateScrape: a scrape older than one the history sink has is final there at
// once (superseded), never written after the newer one.
func TestHistoryLateScrape(t *testing.T) {
	h, l := historyHarness(t, false, false)
	s2 := h.send("a", 2*time.Second)
	h.waitAcked(s2)
	s1 := h.send("a", time.Second)
	h.waitAcked(s1)
	if got := l.taken(); !slices.Equal(got, []string{"a@2s"}) {
		t.Errorf("history %v", got)
	}
}

// TestHistoryHold: after a subscription that left messages unacknowledged, the history
// sinks wait for their redelivery before taking newer scrapes, so a target's history
// stays in order across a drain restart; the state sink does not wait.
func TestHistoryHold(t *testing.T) {
	h, l := historyHarness(t, true, true)
	// The previous drain had messages 1 and 2 (a@1s, a@2s) and died before acking.
	h.d.HoldHistory("s", 2, 2, time.Minute)
	h.seq = 2
	b3 := h.sendStream("s", 3, "a", 3*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(h.rec.delivered(), "j/a@3s") {
		if time.Now().After(deadline) {
			t.Fatalf("state sink got %v during the hold", h.rec.delivered())
		}
		time.Sleep(time.Millisecond)
	}
	if got := l.taken(); len(got) != 0 || h.acks.count(b3) != 0 {
		t.Fatalf("history %v during the hold", got)
	}
	h.sendStream("s", 1, "a", time.Second)
	if got := l.taken(); len(got) != 0 {
		t.Fatalf("history %v with one redelivery missing", got)
	}
	h.sendStream("s", 2, "a", 2*time.Second)
	h.waitAcked(1, 2, b3)
	if got := l.taken(); !slices.Equal(got, []string{"a@1s", "a@2s", "a@3s"}) {
		t.Errorf("history %v", got)
	}
}

// TestHistoryHoldTimesOut: a hold whose redeliveries never come ends at its time.
func TestHistoryHoldTimesOut(t *testing.T) {
	h, l := historyHarness(t, true, false)
	h.d.HoldHistory("s", 2, 2, 50*time.Millisecond)
	b3 := h.sendStream("s", 3, "a", 3*time.Second)
	h.waitAcked(b3)
	if got := l.taken(); !slices.Equal(got, []string{"a@3s"}) {
		t.Errorf("history %v", got)
	}
}

// sendStream hands the drain a scrape of j/instance as message seq of stream.
func (h *harness) sendStream(stream string, seq uint64, instance string, offset time.Duration) uint64 {
	h.t.Helper()
	b, err := h.codec.Encode(&envelope.Envelope{Job: "j", Instance: instance, Start: h.base.Add(offset),
		ContentType: "text/plain; version=0.0.4", Body: []byte("m 1\n"), Series: 1})
	if err != nil {
		h.t.Fatal(err)
	}
	h.d.HandleMessage(Message{Data: b, Stream: stream, Handle: Handle{Seq: seq, Ack: h.acks.fn(seq)}})
	return seq
}

// TestRecoveryWakesParked: once a sink takes a scrape again, the targets waiting for a
// retry of it go at once, not at the end of their backoff.
func TestRecoveryWakesParked(t *testing.T) {
	l := newLedger()
	h, _ := newStatusHarness(t, Options{}, l)
	// Backoff far beyond the test's patience.
	h.d.opts.MinBackoff, h.d.opts.MaxBackoff = time.Hour, time.Hour
	l.base = h.base
	l.set(true)
	a := h.send("a", time.Second)
	b := h.send("b", time.Second)
	h.waitRetries(2)
	l.set(false)
	c := h.send("c", 2*time.Second) // a target that never failed: its success shows the sink is back
	h.waitAcked(c, a, b)
	if got := l.taken(); len(got) != 3 {
		t.Errorf("history %v", got)
	}
}

// TestLoneFailureKeepsBackoff: a target whose scrapes the sink keeps failing while it
// takes the others' waits out its backoff; the others' successes do not wake it.
func TestLoneFailureKeepsBackoff(t *testing.T) {
	h, l := historyHarness(t, false, false)
	h.d.opts.MinBackoff, h.d.opts.MaxBackoff = time.Hour, time.Hour
	l.mu.Lock()
	l.failFor["x"] = true
	l.mu.Unlock()
	x := h.send("x", time.Second)
	h.waitRetries(1)
	for i := 1; i <= 20; i++ {
		h.waitAcked(h.send("y", time.Duration(i)*time.Second))
	}
	l.mu.Lock()
	tries := l.tries["x"]
	l.mu.Unlock()
	if tries != 1 || h.acks.count(x) != 0 {
		t.Errorf("x tried %d times during its backoff, acked %d", tries, h.acks.count(x))
	}
}

// TestHistorySplitLate: a split scrape whose last part comes after the target's next
// scrape is still written to history, before that next scrape.
func TestHistorySplitLate(t *testing.T) {
	h, l := historyHarness(t, false, false)
	var sb strings.Builder
	sb.WriteString("# TYPE m gauge\n")
	for i := range 400 {
		fmt.Fprintf(&sb, "m{i=\"%x\"} %d\n", rand.Uint64(), i) // random: it does not compress to one part
	}
	body := []byte(sb.String())
	parts, err := h.codec.EncodeSplit(&envelope.Envelope{Job: "j", Instance: "a", Start: h.base.Add(time.Second),
		ContentType: "text/plain; version=0.0.4", Body: body, Series: 1}, 512)
	if err != nil || len(parts) < 2 {
		t.Fatalf("split: %d parts, %v", len(parts), err)
	}
	var seqs []uint64
	for _, p := range parts[:len(parts)-1] {
		h.seq++
		seqs = append(seqs, h.seq)
		h.d.Handle(p, h.seq, h.acks.fn(h.seq))
	}
	b := h.send("a", 2*time.Second) // whole, while the split one waits for its last part
	h.seq++
	seqs = append(seqs, h.seq)
	h.d.Handle(parts[len(parts)-1], h.seq, h.acks.fn(h.seq))
	h.waitAcked(append(seqs, b)...)
	if got := l.taken(); !slices.Equal(got, []string{"a@1s", "a@2s"}) {
		t.Errorf("history %v, want the split scrape then the next", got)
	}
}
