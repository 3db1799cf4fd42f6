package drain

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// handle is what a JetStream message gives the drain: ack, term and a delayed nak.
type handle struct {
	mu          sync.Mutex
	acks, terms int
	naks        []time.Duration
	redeliver   func() // called by a nak, as the server would after the delay
}

func (h *handle) message(data []byte, seq uint64) Message {
	return Message{Data: data, Handle: Handle{Seq: seq,
		Ack:  func() error { h.mu.Lock(); h.acks++; h.mu.Unlock(); return nil },
		Term: func() error { h.mu.Lock(); h.terms++; h.mu.Unlock(); return nil },
		Nak: func(d time.Duration) error {
			h.mu.Lock()
			h.naks = append(h.naks, d)
			again := h.redeliver
			h.mu.Unlock()
			if again != nil {
				go again()
			}
			return nil
		},
	}}
}

func (h *handle) counts() (acks, terms, naks int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.acks, h.terms, len(h.naks)
}

func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPoisonIsTerminated: a message that can never be delivered is terminated, so the
// server stops redelivering it; a good one is acknowledged.
func TestPoisonIsTerminated(t *testing.T) {
	h := newHarness(t, &recorder{}, 2)
	garbage, bad := &handle{}, &handle{}
	h.d.HandleMessage(garbage.message([]byte("not an envelope"), 1))
	b, err := h.codec.Encode(&envelope.Envelope{Job: "j", Instance: "i", Start: h.base, ContentType: "text/plain; version=0.0.4", Body: []byte("m{ 1\n")})
	if err != nil {
		t.Fatal(err)
	}
	h.d.HandleMessage(bad.message(b, 2)) // a body that does not parse
	waitCond(t, "both terminated", func() bool {
		_, g, _ := garbage.counts()
		_, b, _ := bad.counts()
		return g == 1 && b == 1
	})
	if a, _, _ := garbage.counts(); a != 0 {
		t.Errorf("garbage acknowledged %d times besides terminated", a)
	}
}

// TestNakWithDelay: a failing delivery of a JetStream message is handed back to the
// server with a growing delay instead of held; the redelivery goes on where it stopped
// (the attempt count grows) and is acknowledged once the sink takes it.
func TestNakWithDelay(t *testing.T) {
	fails := 3
	var mu sync.Mutex
	rec := &recorder{fail: func(*sink.Scrape) error {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			return errors.New("gateway down")
		}
		return nil
	}}
	h := newHarness(t, rec, 2)
	b, err := h.codec.Encode(&envelope.Envelope{Job: "j", Instance: "i", Start: h.base, ContentType: "text/plain; version=0.0.4", Body: []byte("m 1\n")})
	if err != nil {
		t.Fatal(err)
	}
	m := &handle{}
	m.redeliver = func() { h.d.HandleMessage(m.message(b, 7)) }
	h.d.HandleMessage(m.message(b, 7))
	waitCond(t, "acknowledged after the rec recovers", func() bool { a, _, _ := m.counts(); return a == 1 })
	_, terms, naks := m.counts()
	if naks != 3 || terms != 0 {
		t.Errorf("%d naks, %d terms; want 3 naks, no term", naks, terms)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := 1; i < len(m.naks); i++ {
		// Jittered in [delay/2, delay]: the bound doubles with each attempt.
		if m.naks[i] < h.d.opts.MinBackoff<<i/2 {
			t.Errorf("nak %d delay %v: the backoff did not grow with the attempts (%v)", i, m.naks[i], m.naks)
		}
	}
	if got := rec.delivered(); len(got) != 1 {
		t.Errorf("delivered %v, want once", got)
	}
}
