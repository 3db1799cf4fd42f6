package stream

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/proctest"
	"github.com/prometheus-streams/prometheus-streams/stream/embedded"
)

func freePort(t *testing.T) string {
	t.Helper()
	addr, err := proctest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// consumeN runs Consume until n messages arrived, acknowledging those n only, and
// returns their bodies.
func consumeN(t *testing.T, url string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan string, 100)
	done := make(chan error, 1)
	handled := 0 // the handler is never called concurrently
	go func() {
		done <- Consume(ctx, SubscribeOptions{
			STANOptions: STANOptions{URLs: []string{url}, ClusterID: "emb", ClientID: "consumer"},
			Subject:     "prometheus", DurableName: "d",
		}, func(m *Msg) {
			if handled == n {
				return // leave the rest unacknowledged
			}
			handled++
			_ = m.Ack()
			got <- string(m.Data)
		}, func(State) {})
	}()
	var out []string
	for len(out) < n {
		select {
		case s := <-got:
			out = append(out, s)
		case <-ctx.Done():
			t.Fatalf("got %v, want %d messages", out, n)
		}
	}
	cancel()
	<-done
	return out
}

func publishN(t *testing.T, url string, n, from int) {
	t.Helper()
	s, err := DialSTAN(context.Background(), STANOptions{URLs: []string{url}, ClusterID: "emb", ClientID: ClientID("pub", "h")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var acks Acks
	for i := from; i < from+n; i++ {
		if err := acks.Publish(&publisher{conn: s}, "prometheus", []byte(fmt.Sprint(i)), "", nil); err != nil {
			t.Fatal(err)
		}
	}
	if acked, _, _ := acks.Wait(context.Background()); acked != n {
		t.Fatalf("acked %d of %d", acked, n)
	}
}

// TestEmbeddedFileStore: what the embedded server stored survives its restart.
func TestEmbeddedFileStore(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	e, err := embedded.Start(embedded.Options{Listen: addr, ClusterID: "emb", StoreDir: dir, MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, e.URL(), 3, 0)
	if got := consumeN(t, e.URL(), 2); fmt.Sprint(got) != "[0 1]" {
		t.Errorf("got %v", got)
	}
	e.Shutdown()

	e, err = embedded.Start(embedded.Options{Listen: addr, ClusterID: "emb", StoreDir: dir, MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	// The durable resumes after the two it acknowledged before the restart.
	if got := consumeN(t, e.URL(), 1); fmt.Sprint(got) != "[2]" {
		t.Errorf("after restart got %v, want [2]", got)
	}
}

// TestEmbeddedMaxAge: the channel drops messages older than max_age.
func TestEmbeddedMaxAge(t *testing.T) {
	e, err := embedded.Start(embedded.Options{Listen: freePort(t), ClusterID: "emb", MaxAge: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	publishN(t, e.URL(), 1, 0)
	time.Sleep(2500 * time.Millisecond) // the limit is a property of time: let it pass
	publishN(t, e.URL(), 1, 1)
	if got := consumeN(t, e.URL(), 1); fmt.Sprint(got) != "[1]" {
		t.Errorf("got %v, want only the young message", got)
	}
}

func TestEmbeddedBadListen(t *testing.T) {
	if _, err := embedded.Start(embedded.Options{Listen: "nonsense", ClusterID: "emb"}); err == nil {
		t.Error("bad listen address accepted")
	}
}

// TestEmbeddedPortInUse: a port already taken fails the start at once, saying so, not
// after the server's 10s wait with "unable to start a NATS Server".
func TestEmbeddedPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	e, err := embedded.Start(embedded.Options{Listen: l.Addr().String(), ClusterID: "emb", JetStream: true})
	if err == nil {
		e.Shutdown()
		t.Fatal("started on a port in use")
	}
	if !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Errorf("err = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("failed after %s", d)
	}
}

// TestReplayEmbeddedEnds: the embedded server tells a channel's newest sequence, so a
// replay of it ends with its newest message, or at once when it is empty, without the
// idle wait; and still sees every message published before it began.
func TestReplayEmbeddedEnds(t *testing.T) {
	e, err := embedded.Start(embedded.Options{Listen: freePort(t), ClusterID: "emb", MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	o := STANOptions{URLs: []string{e.URL()}, ClusterID: "emb", ClientID: "drain"}
	last := func() (uint64, error) { return e.LastSeq("prometheus") }
	replay := func() ([]string, time.Duration) {
		var got []string
		start := time.Now()
		if err := ReplaySTAN(context.Background(), o, "prometheus", time.Now().Add(-time.Hour), last, func(b []byte) { got = append(got, string(b)) }); err != nil {
			t.Fatal(err)
		}
		return got, time.Since(start)
	}
	if seq, err := last(); err != nil || seq != 0 {
		t.Errorf("LastSeq of a channel never published on = %d, %v; want 0", seq, err)
	}
	if got, took := replay(); len(got) != 0 || took >= replayIdle {
		t.Errorf("empty channel: read %v in %v, want nothing at once", got, took)
	}
	publishN(t, e.URL(), 5, 0)
	if seq, err := last(); err != nil || seq != 5 {
		t.Errorf("LastSeq = %d, %v; want 5", seq, err)
	}
	if got, took := replay(); fmt.Sprint(got) != "[0 1 2 3 4]" || took >= replayIdle {
		t.Errorf("read %v in %v, want all 5 before the idle wait", got, took)
	}
}
