package stream

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakePublisher keeps done callbacks for the test to answer, or refuses with refuse.
type fakePublisher struct {
	Publisher // what Acks does not use: nil
	mu        sync.Mutex
	refuse    error
	dones     []func(error)
}

func (p *fakePublisher) PublishAsync(_ string, _ []byte, _ string, done func(error)) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refuse != nil {
		return p.refuse
	}
	p.dones = append(p.dones, done)
	return nil
}

func (p *fakePublisher) answer(i int, err error) {
	p.mu.Lock()
	done := p.dones[i]
	p.mu.Unlock()
	done(err)
}

func TestAcks(t *testing.T) {
	p := &fakePublisher{}
	var acks Acks
	var thenCalls []error
	for range 3 {
		if err := acks.Publish(p, "s", nil, "", func(err error) { thenCalls = append(thenCalls, err) }); err != nil {
			t.Fatal(err)
		}
	}
	p.refuse = ErrTooLarge
	if err := acks.Publish(p, "s", nil, "", func(error) { t.Error("then called for a refused publish") }); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("refused publish: err = %v", err)
	}
	if a, f, pend := acks.Counts(); a != 0 || f != 0 || pend != 3 {
		t.Fatalf("Counts = %d, %d, %d; want 0, 0, 3", a, f, pend)
	}

	// Wait ends with ctx, reporting what is still pending.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if a, f, pend := acks.Wait(ctx); a != 0 || f != 0 || pend != 3 {
		t.Fatalf("Wait(expired) = %d, %d, %d; want 0, 0, 3", a, f, pend)
	}

	boom := errors.New("boom")
	p.answer(0, nil)
	p.answer(1, boom)
	waited := make(chan [3]int)
	go func() {
		a, f, pend := acks.Wait(context.Background())
		waited <- [3]int{a, f, pend}
	}()
	p.answer(2, ErrAckTimeout)
	if got := <-waited; got != [3]int{1, 2, 0} {
		t.Fatalf("Wait = %v, want [1 2 0]", got)
	}
	if !errors.Is(acks.Err(), boom) {
		t.Errorf("Err() = %v, want the first failure", acks.Err())
	}
	if len(thenCalls) != 3 || thenCalls[0] != nil || thenCalls[1] != boom || thenCalls[2] != ErrAckTimeout {
		t.Errorf("then got %v", thenCalls)
	}
	// Nothing pending: Wait returns at once, also again.
	if a, f, pend := acks.Wait(context.Background()); a != 1 || f != 2 || pend != 0 {
		t.Errorf("second Wait = %d, %d, %d", a, f, pend)
	}
}
