package stream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// flaky is a connection whose publishes go through scripted outcomes, one per try: an error
// PublishAsyncMsg returns ("sync:" prefix) or one its done gets; past the script, an ack.
type flaky struct {
	mu     sync.Mutex
	script []string
	tries  []string // the message IDs tried, in order
}

var outcomes = map[string]error{
	"unreachable": fmt.Errorf("%w: no stream leader answered", ErrUnreachable),
	"timeout":     fmt.Errorf("%w: no ack", ErrAckTimeout),
	"rejected":    fmt.Errorf("%w: store full", ErrRejected),
	"too large":   fmt.Errorf("%w: 2 MB", ErrTooLarge),
}

func (f *flaky) MaxPayload(string) int { return 1 << 20 }
func (f *flaky) Close() error          { return nil }

func (f *flaky) PublishAsyncMsg(_ string, _ []byte, msgID string, done func(error)) error {
	f.mu.Lock()
	f.tries = append(f.tries, msgID)
	next := ""
	if len(f.script) > 0 {
		next, f.script = f.script[0], f.script[1:]
	}
	f.mu.Unlock()
	if len(next) > 5 && next[:5] == "sync:" {
		return outcomes[next[5:]]
	}
	go done(outcomes[next]) // nil past the script: acked
	return nil
}

func TestRetrier(t *testing.T) {
	for _, c := range []struct {
		name    string
		script  []string
		sendErr error // what PublishAsyncMsg returns
		want    error // what done gets
		tries   int
	}{
		{"acked at once", nil, nil, nil, 1},
		{"no leader, then acked", []string{"unreachable", "unreachable"}, nil, nil, 3},
		{"disconnected, ack lost, then acked", []string{"sync:unreachable", "timeout"}, nil, nil, 3},
		{"rejected: final", []string{"timeout", "rejected"}, nil, ErrRejected, 2},
		{"too large: never sent", []string{"sync:too large"}, ErrTooLarge, nil, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := &flaky{script: c.script}
			r := &publisher{conn: conn, ctx: context.Background()}
			got := make(chan error, 2)
			err := r.PublishAsync("s", []byte("x"), "id-1", func(err error) { got <- err })
			if !errors.Is(err, c.sendErr) || (err == nil) != (c.sendErr == nil) {
				t.Fatalf("PublishAsync: %v, want %v", err, c.sendErr)
			}
			if err == nil {
				select {
				case err := <-got:
					if !errors.Is(err, c.want) || (err == nil) != (c.want == nil) {
						t.Errorf("done(%v), want %v", err, c.want)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("done not called")
				}
			}
			conn.mu.Lock()
			defer conn.mu.Unlock()
			if len(conn.tries) != c.tries || int(r.retries.Load()) != c.tries-1 {
				t.Errorf("tried %d times (%d retries counted), want %d", len(conn.tries), r.retries.Load(), c.tries)
			}
			for _, id := range conn.tries {
				if id != "id-1" {
					t.Errorf("tried with message ID %q: a retry must keep the first's", id)
				}
			}
			select {
			case err := <-got:
				t.Errorf("done called twice (again with %v)", err)
			default:
			}
		})
	}
}

// The deadline ends the tries: done gets the last failure, once.
func TestRetrierDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	script := make([]string, 1000)
	for i := range script {
		script[i] = "unreachable"
	}
	conn := &flaky{script: script}
	r := &publisher{conn: conn, ctx: ctx}
	got := make(chan error, 2)
	if err := r.PublishAsync("s", []byte("x"), "id", func(err error) { got <- err }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if !errors.Is(err, ErrUnreachable) || ctx.Err() == nil {
			t.Errorf("done(%v) before the deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("done not called at the deadline")
	}
	// Once: a second call could only come from a try still under way, which ends
	// within its own wait; none comes (an absence, so it is waited for a bounded time).
	select {
	case err := <-got:
		t.Errorf("done called again: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	conn.mu.Lock()
	tries := len(conn.tries)
	conn.mu.Unlock()
	if tries < 3 || tries > 10 {
		t.Errorf("%d tries in 300ms: want a few, backing off", tries)
	}
}
