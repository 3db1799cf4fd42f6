package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-streaming-server/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/stan.go"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
)

const (
	testSubject = "metrics"
	testDurable = "drain"
)

// testConsumer runs Consume in the background and records what it delivers and reports.
type testConsumer struct {
	t      *testing.T
	log    *testLog
	cancel context.CancelFunc
	ret    chan error

	returned atomic.Bool
	inHandle atomic.Int32

	mu     sync.Mutex
	msgs   []*Msg
	states []State
}

// consumeOptions are the options the tests start from: a fixed client ID and durable,
// quick retries.
func consumeOptions(t *testing.T, urls ...string) (SubscribeOptions, *testLog) {
	log := newTestLog(t)
	return SubscribeOptions{
		STANOptions: STANOptions{
			URLs:           urls,
			ClusterID:      stantest.DefaultClusterID,
			ClientID:       "drain-1",
			ConnectTimeout: 2 * time.Second,
			Logger:         log.logger(),
		},
		Subject:     testSubject,
		DurableName: testDurable,
		MinBackoff:  10 * time.Millisecond,
		MaxBackoff:  200 * time.Millisecond,
	}, log
}

// startConsume runs Consume with o; onMsg, if not nil, sees each message in handle
// (after it is recorded) and may ack it. The consumer is stopped when the test ends.
func startConsume(t *testing.T, o SubscribeOptions, log *testLog, onMsg func(*Msg)) *testConsumer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &testConsumer{t: t, log: log, cancel: cancel, ret: make(chan error, 1)}
	go func() {
		c.ret <- Consume(ctx, o, func(m *Msg) {
			if c.inHandle.Add(1) != 1 {
				t.Error("handle called concurrently")
			}
			defer c.inHandle.Add(-1)
			if c.returned.Load() {
				t.Error("handle called after Consume returned")
			}
			c.mu.Lock()
			c.msgs = append(c.msgs, m)
			c.mu.Unlock()
			if onMsg != nil {
				onMsg(m)
			}
		}, func(s State) {
			if c.returned.Load() {
				t.Error("state called after Consume returned")
			}
			if s.Connected != (s.Err == nil) {
				t.Errorf("state %+v: Err must be set exactly when not connected", s)
			}
			c.mu.Lock()
			c.states = append(c.states, s)
			c.mu.Unlock()
		})
		c.returned.Store(true)
	}()
	t.Cleanup(func() { c.stop() })
	return c
}

// stop cancels Consume and checks that it returns nil promptly, with a last state
// saying it closed. It is idempotent.
func (c *testConsumer) stop() {
	c.t.Helper()
	c.cancel()
	select {
	case err, ok := <-c.ret:
		if !ok {
			return
		}
		close(c.ret)
		if err != nil {
			c.t.Errorf("Consume returned %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		c.t.Fatal("Consume did not return within 10s of its ctx ending")
	}
	if st := c.lastState(); st.Connected || !errors.Is(st.Err, ErrClosed) {
		c.t.Errorf("last state %+v, want not connected with ErrClosed", st)
	}
}

func (c *testConsumer) received() []*Msg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.msgs)
}

func (c *testConsumer) allStates() []State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.states)
}

func (c *testConsumer) lastState() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.states) == 0 {
		return State{}
	}
	return c.states[len(c.states)-1]
}

func (c *testConsumer) connected() bool { return c.lastState().Connected }

// sequences lists the sequence numbers of msgs, in order.
func sequences(msgs []*Msg) []uint64 {
	seqs := make([]uint64, len(msgs))
	for i, m := range msgs {
		seqs[i] = m.Sequence
	}
	return seqs
}

// seqRange is [from, to].
func seqRange(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// waitUntil polls cond until it holds, failing the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", timeout, what)
		}
		<-tick.C
	}
}

// publishRange publishes bodies "m<i>" for i in [from, to] (which become sequences
// from..to of a fresh channel) and waits for their acks.
func publishRange(t *testing.T, srv *stantest.Server, from, to int) {
	t.Helper()
	s := dial(t, srv)
	var acks Acks
	for i := from; i <= to; i++ {
		if err := acks.Publish(&publisher{conn: s}, testSubject, fmt.Appendf(nil, "m%d", i), "", nil); err != nil {
			t.Fatalf("publish m%d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if acked, _, _ := acks.Wait(ctx); acked != to-from+1 {
		t.Fatalf("published %d of m%d..m%d (first error %v)", acked, from, to, acks.Err())
	}
	_ = s.Close()
}

// durableSubs is the server's view of the test durable: one subscription, or the
// members of a queue group.
func durableSubs(t *testing.T, srv *stantest.Server) []*server.Subscriptionz {
	t.Helper()
	ch, err := srv.Channel(testSubject)
	if errors.Is(err, stantest.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var subs []*server.Subscriptionz
	for _, s := range ch.Subscriptions {
		if s.IsDurable {
			subs = append(subs, s)
		}
	}
	return subs
}

// durableSub is the server's view of the test durable, nil if there is none.
func durableSub(t *testing.T, srv *stantest.Server) *server.Subscriptionz {
	t.Helper()
	subs := durableSubs(t, srv)
	if len(subs) > 1 {
		t.Fatalf("%d durable subscriptions", len(subs))
	}
	if len(subs) == 0 || subs[0].DurableName != testDurable {
		return nil
	}
	return subs[0]
}

// awaitPending waits until the server counts n messages awaiting the durable's acks
// (all members together), having sent up to lastSent: the acks sent before have been
// processed.
func awaitPending(t *testing.T, srv *stantest.Server, n int, lastSent uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pending, last := 0, uint64(0)
		for _, s := range durableSubs(t, srv) {
			pending += s.PendingCount
			last = max(last, s.LastSent)
		}
		if pending == n && last == lastSent {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server: %d pending, last sent %d; want %d, %d", pending, last, n, lastSent)
		}
		time.Sleep(5 * time.Millisecond) // polling: the server has no notification
	}
}

func checkBodies(t *testing.T, msgs []*Msg) {
	t.Helper()
	for _, m := range msgs {
		if want := fmt.Sprintf("m%d", m.Sequence); string(m.Data) != want {
			t.Errorf("message #%d = %q, want %q", m.Sequence, m.Data, want)
		}
	}
}

func ackAll(t *testing.T, msgs []*Msg) {
	t.Helper()
	for _, m := range msgs {
		if err := m.Ack(); err != nil {
			t.Fatalf("ack #%d: %v", m.Sequence, err)
		}
	}
}

// A new durable starts at the beginning; after a restart of Consume the acked messages
// stay acked and the others come again, redelivered.
func TestConsumeFromStartThenResume(t *testing.T) {
	srv := stantest.Start(t)
	start := time.Now()
	publishRange(t, srv, 1, 10)

	o, log := consumeOptions(t, srv.URL())
	c := startConsume(t, o, log, nil)
	waitUntil(t, 10*time.Second, "subscribed", c.connected) // reported after the subscribe returns
	waitUntil(t, 10*time.Second, "10 messages", func() bool { return len(c.received()) == 10 })
	got := c.received()
	if seqs := sequences(got); !slices.Equal(seqs, seqRange(1, 10)) {
		t.Fatalf("sequences %v, want 1..10", seqs)
	}
	checkBodies(t, got)
	for _, m := range got {
		if m.Redelivered {
			t.Errorf("#%d redelivered on first delivery", m.Sequence)
		}
		if m.Timestamp.Before(start.Add(-time.Second)) || m.Timestamp.After(time.Now()) {
			t.Errorf("#%d timestamp %v, want about %v", m.Sequence, m.Timestamp, start)
		}
	}
	if st := c.allStates(); len(st) != 1 || !st[0].Connected {
		t.Errorf("states %+v, want one Connected", st)
	}

	// Ack 1..5, concurrently from several goroutines, and stop: the close request
	// follows the acks on the connection, and the server processes them first.
	var wg sync.WaitGroup
	for _, m := range got[:5] {
		wg.Go(func() {
			if err := m.Ack(); err != nil {
				t.Errorf("ack #%d: %v", m.Sequence, err)
			}
		})
	}
	wg.Wait()
	c.stop()
	if err := got[5].Ack(); !errors.Is(err, ErrClosed) {
		t.Errorf("ack after Consume returned: %v, want ErrClosed", err)
	}
	// Closed, not unsubscribed: the durable is offline, holding 6..10 for a later run.
	if s := durableSub(t, srv); s == nil || !s.IsDurable || !s.IsOffline || s.PendingCount != 5 || s.LastSent != 10 {
		t.Errorf("durable after Consume returned: %+v, want offline with 5 pending, last sent 10", s)
	}

	c2 := startConsume(t, o, log, nil)
	waitUntil(t, 10*time.Second, "5 redelivered messages", func() bool { return len(c2.received()) == 5 })
	got2 := c2.received()
	if seqs := sequences(got2); !slices.Equal(seqs, seqRange(6, 10)) {
		t.Fatalf("after restart: sequences %v, want 6..10", seqs)
	}
	checkBodies(t, got2)
	for _, m := range got2 {
		if !m.Redelivered {
			t.Errorf("#%d not marked redelivered", m.Sequence)
		}
	}
	ackAll(t, got2)
	publishRange(t, srv, 11, 11)
	waitUntil(t, 10*time.Second, "message 11", func() bool { return len(c2.received()) == 6 })
	if m := c2.received()[5]; m.Sequence != 11 || m.Redelivered {
		t.Errorf("then got #%d (redelivered %v), want 11, new", m.Sequence, m.Redelivered)
	}
}

// Consume's end keeps the durable: what is published meanwhile comes on the next run.
func TestConsumeCloseKeepsDurable(t *testing.T) {
	srv := stantest.Start(t)
	o, log := consumeOptions(t, srv.URL())
	ack := func(m *Msg) {
		if err := m.Ack(); err != nil {
			t.Errorf("ack #%d: %v", m.Sequence, err)
		}
	}
	c := startConsume(t, o, log, ack)
	waitUntil(t, 10*time.Second, "subscribed", c.connected)
	publishRange(t, srv, 1, 3)
	waitUntil(t, 10*time.Second, "3 messages", func() bool { return len(c.received()) == 3 })
	awaitPending(t, srv, 0, 3)
	c.stop()

	publishRange(t, srv, 4, 6)
	c2 := startConsume(t, o, log, ack)
	waitUntil(t, 10*time.Second, "3 messages", func() bool { return len(c2.received()) == 3 })
	got := c2.received()
	if seqs := sequences(got); !slices.Equal(seqs, seqRange(4, 6)) {
		t.Fatalf("next run got %v, want 4..6", seqs)
	}
	checkBodies(t, got)
	for _, m := range got {
		if m.Redelivered {
			t.Errorf("#%d marked redelivered", m.Sequence)
		}
	}
}

func TestConsumeRedeliversAfterAckWait(t *testing.T) {
	srv := stantest.Start(t)
	publishRange(t, srv, 1, 1)
	o, log := consumeOptions(t, srv.URL())
	o.AckWait = time.Second
	var first time.Time
	var gap atomic.Int64
	c := startConsume(t, o, log, func(m *Msg) {
		if !m.Redelivered {
			first = time.Now() // handle calls are sequential
			return
		}
		gap.Store(int64(time.Since(first)))
		if err := m.Ack(); err != nil {
			t.Errorf("ack: %v", err)
		}
	})
	waitUntil(t, 10*time.Second, "a redelivery", func() bool { return len(c.received()) == 2 })
	got := c.received()
	if got[0].Sequence != 1 || got[1].Sequence != 1 || got[0].Redelivered || !got[1].Redelivered {
		t.Fatalf("got #%d (redelivered %v), #%d (redelivered %v); want #1 then #1 redelivered",
			got[0].Sequence, got[0].Redelivered, got[1].Sequence, got[1].Redelivered)
	}
	if d := time.Duration(gap.Load()); d < 900*time.Millisecond {
		t.Errorf("redelivered after %v, want about the 1s AckWait", d)
	}
	awaitPending(t, srv, 0, 1)
	if s := durableSub(t, srv); s == nil || s.AckWait != 1 {
		t.Errorf("server has AckWait %ds, want 1", s.AckWait)
	}
}

// The server sends MaxInflight messages and then waits for an ack.
func TestConsumeMaxInflight(t *testing.T) {
	srv := stantest.Start(t)
	publishRange(t, srv, 1, 10)
	o, log := consumeOptions(t, srv.URL())
	o.MaxInflight = 3
	var ackNew atomic.Bool
	c := startConsume(t, o, log, func(m *Msg) {
		if ackNew.Load() {
			if err := m.Ack(); err != nil {
				t.Errorf("ack #%d: %v", m.Sequence, err)
			}
		}
	})
	stalledAt := func(n uint64) {
		t.Helper()
		waitUntil(t, 10*time.Second, fmt.Sprintf("server stalled at %d unacked", o.MaxInflight), func() bool {
			s := durableSub(t, srv)
			return s != nil && s.IsStalled && s.LastSent == n && s.PendingCount == o.MaxInflight && s.MaxInflight == o.MaxInflight
		})
		// Stalled server side: nothing more is under way.
		waitUntil(t, 10*time.Second, fmt.Sprintf("%d messages", n), func() bool { return len(c.received()) == int(n) })
	}
	stalledAt(3)
	if err := c.received()[0].Ack(); err != nil {
		t.Fatal(err)
	}
	stalledAt(4) // one ack, one more message
	ackNew.Store(true)
	ackAll(t, c.received()[1:])
	waitUntil(t, 10*time.Second, "all 10 messages", func() bool { return len(c.received()) == 10 })
	if seqs := sequences(c.received()); !slices.Equal(seqs, seqRange(1, 10)) {
		t.Fatalf("sequences %v, want 1..10", seqs)
	}
	awaitPending(t, srv, 0, 10)
}

// A file-store server restarted under a running Consume: the consumer reports the
// outage, gets back, and resumes: nothing acked comes again, nothing unacked is lost.
func TestConsumeServerRestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		// lost: pings that give the session up during the outage; else the
		// session outlives the outage (defaults: 5s pings, 3 out).
		lost bool
	}{
		{"session survives", false},
		{"session lost", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			srv := stantest.Start(t, stantest.WithFileStore(dir))
			publishRange(t, srv, 1, 10)

			o, log := consumeOptions(t, srv.URL())
			o.AckWait = time.Second // so unacked messages come back soon after the restart
			if tc.lost {
				o.PingInterval, o.PingMaxOut = time.Second, 2
			}
			var restarted atomic.Bool
			c := startConsume(t, o, log, func(m *Msg) {
				if m.Sequence <= 5 || restarted.Load() {
					if err := m.Ack(); err != nil && !errors.Is(err, ErrClosed) {
						t.Errorf("ack #%d: %v", m.Sequence, err)
					}
				}
			})
			// 1..5 acked (and the server knows), 6..10 not.
			waitUntil(t, 10*time.Second, "10 messages", func() bool { return len(c.received()) >= 10 })
			awaitPending(t, srv, 5, 10)
			before := len(c.allStates())
			unacked := c.received()[5]

			port := srv.Port()
			srv.Shutdown()
			waitUntil(t, 10*time.Second, "Connected=false reported", func() bool { return !c.connected() })
			if st := c.lastState(); !errors.Is(st.Err, ErrUnreachable) {
				t.Errorf("state during the outage %+v, want ErrUnreachable", st)
			}
			if tc.lost {
				log.await(t, "subscription lost with the session; resubscribing", 10*time.Second)
				if err := unacked.Ack(); !errors.Is(err, ErrClosed) {
					t.Errorf("ack after the session was lost: %v, want ErrClosed", err)
				}
			}
			restarted.Store(true)
			srv = stantest.Start(t, stantest.WithFileStore(dir), stantest.WithPort(port))
			waitUntil(t, 20*time.Second, "Connected=true again", c.connected)
			publishRange(t, srv, 11, 15)

			// All of 6..15 come (again), and then are acked.
			waitUntil(t, 20*time.Second, "6..15 after the restart", func() bool {
				seen := map[uint64]bool{}
				for _, m := range c.received()[10:] {
					seen[m.Sequence] = true
				}
				for s := uint64(6); s <= 15; s++ {
					if !seen[s] {
						return false
					}
				}
				return true
			})
			awaitPending(t, srv, 0, 15)
			count := map[uint64]int{}
			for _, m := range c.received() {
				count[m.Sequence]++
			}
			for s := uint64(1); s <= 5; s++ {
				if count[s] != 1 {
					t.Errorf("acked #%d delivered %d times", s, count[s])
				}
			}
			checkBodies(t, c.received())

			states := c.allStates()[before:]
			t.Logf("states across the restart: %+v", states)
			lost := slices.ContainsFunc(states, func(s State) bool { return errors.Is(s.Err, ErrClosed) })
			if lost != tc.lost {
				t.Errorf("session lost = %v, want %v", lost, tc.lost)
			}
		})
	}
}

// Two consumers in a durable queue group share the messages; a message one of them
// leaves unacked goes to the other.
func TestConsumeQueueGroup(t *testing.T) {
	srv := stantest.Start(t)
	var hold atomic.Bool // don't ack: the test does
	hold.Store(true)
	ack := func(m *Msg) {
		if !hold.Load() {
			if err := m.Ack(); err != nil {
				t.Errorf("ack #%d: %v", m.Sequence, err)
			}
		}
	}
	start := func(id string) *testConsumer {
		o, log := consumeOptions(t, srv.URL())
		o.ClientID = id
		o.QueueGroup = "drains"
		o.MaxInflight = 1
		return startConsume(t, o, log, ack)
	}
	a, b := start("drain-a"), start("drain-b")
	waitUntil(t, 10*time.Second, "both subscribed", func() bool { return a.connected() && b.connected() })

	const n = 30
	publishRange(t, srv, 1, n)
	// With one message in flight each, neither can take all.
	waitUntil(t, 10*time.Second, "a message each", func() bool { return len(a.received()) == 1 && len(b.received()) == 1 })
	hold.Store(false)
	ackAll(t, a.received())
	ackAll(t, b.received())
	all := func() []*Msg { return append(a.received(), b.received()...) }
	waitUntil(t, 10*time.Second, "all messages", func() bool { return len(all()) >= n })
	awaitPending(t, srv, 0, n) // all acked
	seqs := sequences(all())
	slices.Sort(seqs)
	if !slices.Equal(seqs, seqRange(1, n)) {
		t.Fatalf("together got %v, want 1..%d once each", seqs, n)
	}
	t.Logf("a got %d, b got %d", len(a.received()), len(b.received()))

	// One more, left unacked by whoever gets it, who then stops: the other gets it.
	hold.Store(true)
	publishRange(t, srv, n+1, n+1)
	waitUntil(t, 10*time.Second, "the last message", func() bool { return len(all()) == n+1 })
	got, other := a, b
	if slices.Contains(sequences(b.received()), n+1) {
		got, other = b, a
	}
	hold.Store(false)
	got.stop()
	waitUntil(t, 10*time.Second, "the unacked message at the other consumer", func() bool {
		r := other.received()
		return r[len(r)-1].Sequence == n+1
	})
	if r := other.received(); !r[len(r)-1].Redelivered {
		t.Error("message taken over from the stopped consumer not marked redelivered")
	}
	awaitPending(t, srv, 0, n+1)
}

// killedClient connects through url with a client ID, takes the durable's first want
// messages without acking them, and dies: its NATS connection is closed without a
// stan.go Close, as when its process is killed; or, with a proxy p, frozen, as when its
// host is lost: the connection stays open and says nothing.
func killedClient(t *testing.T, srv *stantest.Server, clientID string, want int, p *proxy) {
	t.Helper()
	url := srv.URL()
	if p != nil {
		url = p.url
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sc, err := stan.Connect(srv.ClusterID(), clientID, stan.NatsConn(nc))
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Int32
	if _, err := sc.Subscribe(testSubject, func(*stan.Msg) { got.Add(1) },
		stan.DurableName(testDurable), stan.DeliverAllAvailable(), stan.SetManualAckMode()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the old client's messages", func() bool { return int(got.Load()) == want })
	if p != nil {
		p.freeze()
	} else {
		nc.Close()
	}
}

// A consumer restarted right after its predecessor with the same client ID died gets
// in: the server asks the registered holder of the ID whether it is alive, and
// replaces it when no answer comes within half a second. The dead client had been
// registered still (the server only drops it after missing its heartbeats: 30s interval,
// 10s timeout, 10 failures by default, i.e. minutes).
func TestConsumeAfterKilledClient(t *testing.T) {
	for _, tc := range []struct {
		name   string
		frozen bool
	}{{"connection closed", false}, {"connection frozen", true}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := stantest.Start(t)
			publishRange(t, srv, 1, 5)
			var p *proxy
			if tc.frozen {
				p = startProxy(t, srv.URL())
			}
			killedClient(t, srv, "drain-1", 5, p)
			if _, err := srv.Client("drain-1"); err != nil {
				t.Fatalf("dead client not registered any more: %v", err)
			}

			o, log := consumeOptions(t, srv.URL())
			start := time.Now()
			c := startConsume(t, o, log, func(m *Msg) { _ = m.Ack() })
			waitUntil(t, 10*time.Second, "subscribed", c.connected)
			took := time.Since(start)
			t.Logf("subscribed after %v, states %+v", took, c.allStates())
			if took > 5*time.Second {
				t.Errorf("took %v to replace the dead client", took)
			}
			waitUntil(t, 10*time.Second, "the dead client's unacked messages", func() bool { return len(c.received()) == 5 })
			for _, m := range c.received() {
				if !m.Redelivered {
					t.Errorf("#%d not marked redelivered", m.Sequence)
				}
			}
			awaitPending(t, srv, 0, 5)
		})
	}
}

// proxy forwards TCP to a server until frozen; then it holds its connections open and
// forwards nothing.
type proxy struct {
	url    string
	frozen atomic.Bool
	stop   chan struct{}
}

func startProxy(t *testing.T, upstream string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{url: "nats://" + l.Addr().String(), stop: make(chan struct{})}
	target := strings.TrimPrefix(upstream, "nats://")
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32*1024)
		for {
			n, err := src.Read(buf)
			if p.frozen.Load() {
				<-p.stop
				return
			}
			if n > 0 {
				if _, err := dst.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					_ = dst.Close()
				}
				return
			}
		}
	}
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			track(c)
			track(u)
			wg.Go(func() { pipe(u, c) })
			wg.Go(func() { pipe(c, u) })
		}
	})
	t.Cleanup(func() {
		close(p.stop)
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}

func (p *proxy) freeze() { p.frozen.Store(true) }

// A live holder of the client ID keeps Consume out, retrying, until it leaves.
func TestConsumeClientIDInUse(t *testing.T) {
	srv := stantest.Start(t)
	holder := dial(t, srv, func(o *STANOptions) { o.ClientID = "drain-1" })
	o, log := consumeOptions(t, srv.URL())
	c := startConsume(t, o, log, nil)
	inUse := func() int {
		n := 0
		for _, s := range c.allStates() {
			if errors.Is(s.Err, ErrClientIDInUse) {
				n++
			}
		}
		return n
	}
	waitUntil(t, 10*time.Second, "two refusals", func() bool { return inUse() >= 2 })
	log.await(t, "NATS Streaming client ID in use by a live connection (another consumer with this client ID?); retrying", time.Second)
	if c.connected() {
		t.Fatal("connected while the client ID is held")
	}
	if err := holder.Close(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "subscribed after the holder left", c.connected)
}

// Nothing to connect to at first: Consume reports and retries, and gets in once a
// server is there.
func TestConsumeRetriesUntilServerStarts(t *testing.T) {
	url := closedPortURL(t)
	o, log := consumeOptions(t, url)
	c := startConsume(t, o, log, func(m *Msg) { _ = m.Ack() })
	waitUntil(t, 10*time.Second, "three failed attempts", func() bool { return len(c.allStates()) >= 3 })
	for _, s := range c.allStates() {
		if s.Connected || !errors.Is(s.Err, ErrUnreachable) || !strings.Contains(s.Err.Error(), url) {
			t.Errorf("state %+v, want ErrUnreachable naming %s", s, url)
		}
	}
	_, portStr, _ := net.SplitHostPort(strings.TrimPrefix(url, "nats://"))
	var port int
	_, _ = fmt.Sscan(portStr, &port)
	srv := stantest.Start(t, stantest.WithPort(port))
	waitUntil(t, 10*time.Second, "subscribed", c.connected)
	publishRange(t, srv, 1, 1)
	waitUntil(t, 10*time.Second, "a message", func() bool { return len(c.received()) == 1 })
}

// Consume returns promptly when ctx ends during a connection attempt.
func TestConsumeStopsDuringConnect(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- c // and say nothing: the NATS handshake waits
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		select {
		case c := <-accepted:
			_ = c.Close()
		default:
		}
	})
	o, log := consumeOptions(t, "nats://"+l.Addr().String())
	o.ConnectTimeout = time.Minute
	c := startConsume(t, o, log, nil)
	select {
	case conn := <-accepted:
		accepted <- conn // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Consume did not connect")
	}
	start := time.Now()
	c.stop()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Consume returned %v after ctx ended", d)
	}
}

func TestConsumeValidatesOptions(t *testing.T) {
	ok, _ := consumeOptions(t, silentURL(t))
	for name, edit := range map[string]func(*SubscribeOptions){
		"no URL":              func(o *SubscribeOptions) { o.URLs = nil },
		"bad client ID":       func(o *SubscribeOptions) { o.ClientID = "drain.1" },
		"no subject":          func(o *SubscribeOptions) { o.Subject = "" },
		"wildcard subject":    func(o *SubscribeOptions) { o.Subject = "metrics.*" },
		"empty token":         func(o *SubscribeOptions) { o.Subject = "metrics..x" },
		"space in subject":    func(o *SubscribeOptions) { o.Subject = "met rics" },
		"no durable":          func(o *SubscribeOptions) { o.DurableName = "" },
		"colon in durable":    func(o *SubscribeOptions) { o.DurableName = "a:b" },
		"negative inflight":   func(o *SubscribeOptions) { o.MaxInflight = -1 },
		"sub-second ack wait": func(o *SubscribeOptions) { o.AckWait = 500 * time.Millisecond },
		"negative ack wait":   func(o *SubscribeOptions) { o.AckWait = -time.Second },
		"sub-second pings":    func(o *SubscribeOptions) { o.PingInterval = 100 * time.Millisecond },
		"one ping out":        func(o *SubscribeOptions) { o.PingMaxOut = 1 },
		"backoff min > max":   func(o *SubscribeOptions) { o.MinBackoff, o.MaxBackoff = time.Second, time.Millisecond },
		"negative backoff":    func(o *SubscribeOptions) { o.MinBackoff = -1 },
	} {
		o := ok
		edit(&o)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := Consume(ctx, o, func(*Msg) {}, func(s State) { t.Errorf("%s: state %+v", name, s) })
		cancel()
		if err == nil {
			t.Errorf("%s: Consume returned nil, want a validation error", name)
		}
	}
	if err := Consume(context.Background(), ok, nil, nil); err == nil {
		t.Error("nil handle: Consume returned nil")
	}
	if err := (&Msg{}).Ack(); err == nil {
		t.Error("Ack of a zero Msg succeeded")
	}
}

func TestSubscribeOptionsDefaults(t *testing.T) {
	o := SubscribeOptions{STANOptions: STANOptions{URLs: []string{"nats://x"}, ClusterID: "c", ClientID: "d"}, Subject: "s", DurableName: "d"}
	if err := o.normalize(); err != nil {
		t.Fatal(err)
	}
	if o.MaxInflight != DefaultMaxInflight || o.AckWait != DefaultAckWait || o.PingInterval != DefaultPingInterval ||
		o.PingMaxOut != DefaultPingMaxOut || o.MinBackoff != DefaultMinBackoff || o.MaxBackoff != DefaultMaxBackoff {
		t.Errorf("defaults: %+v", o)
	}
	o = SubscribeOptions{STANOptions: o.STANOptions, Subject: "s", DurableName: "d", MaxBackoff: 10 * time.Millisecond}
	if err := o.normalize(); err != nil || o.MinBackoff != 10*time.Millisecond {
		t.Errorf("MaxBackoff below the default MinBackoff: MinBackoff %v, err %v", o.MinBackoff, err)
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: time.Second}
	for round := range 2 {
		for i, top := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
			top *= time.Millisecond
			if d := b.next(); d < top/2 || d > top {
				t.Errorf("round %d, wait %d: %v, want in [%v, %v]", round, i, d, top/2, top)
			}
		}
		b.reset()
	}
	odd := backoff{min: 300 * time.Millisecond, max: 500 * time.Millisecond}
	for i, top := range []time.Duration{300, 500, 500} {
		top *= time.Millisecond
		if d := odd.next(); d < top/2 || d > top {
			t.Errorf("wait %d: %v, want in [%v, %v]", i, d, top/2, top)
		}
	}
}
