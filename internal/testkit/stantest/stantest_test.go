package stantest_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/stan.go"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
)

const channel = "stantest.channel"

func connect(t *testing.T, s *stantest.Server, clientID string) stan.Conn {
	t.Helper()
	sc, err := stan.Connect(s.ClusterID(), clientID, stan.NatsURL(s.URL()), stan.ConnectWait(5*time.Second))
	if err != nil {
		t.Fatalf("connect to %s: %v", s, err)
	}
	t.Cleanup(func() { _ = sc.Close() })
	return sc
}

// readAll subscribes from the first message and returns the first n bodies, in order.
func readAll(t *testing.T, sc stan.Conn, n int) []string {
	t.Helper()
	ch := make(chan string, n)
	sub, err := sc.Subscribe(channel, func(m *stan.Msg) { ch <- string(m.Data) }, stan.DeliverAllAvailable())
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	got := make([]string, 0, n)
	timeout := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case m := <-ch:
			got = append(got, m)
		case <-timeout:
			t.Fatalf("read %d of %d messages before timeout: %q", len(got), n, got)
		}
	}
	return got
}

func publish(t *testing.T, sc stan.Conn, msgs []string) {
	t.Helper()
	for _, m := range msgs {
		if err := sc.Publish(channel, []byte(m)); err != nil {
			t.Fatalf("publish %q: %v", m, err)
		}
	}
}

func msgs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestStartPublishSubscribe(t *testing.T) {
	s := stantest.Start(t)
	if s.ClusterID() != stantest.DefaultClusterID {
		t.Errorf("ClusterID() = %q, want %q", s.ClusterID(), stantest.DefaultClusterID)
	}
	if s.Port() <= 0 || s.StanServer() == nil {
		t.Fatalf("Port() = %d, StanServer() = %v", s.Port(), s.StanServer())
	}
	want := msgs("m", 5)
	publish(t, connect(t, s, "pub"), want)
	if got := readAll(t, connect(t, s, "sub"), len(want)); !equal(got, want) {
		t.Errorf("read back %q, want %q", got, want)
	}
}

func TestClusterID(t *testing.T) {
	s := stantest.Start(t, stantest.WithClusterID("other-cluster"))
	if s.ClusterID() != "other-cluster" {
		t.Fatalf("ClusterID() = %q", s.ClusterID())
	}
	publish(t, connect(t, s, "pub"), []string{"x"})
}

func TestFileStoreRestartKeepsMessages(t *testing.T) {
	dir := t.TempDir()
	s := stantest.Start(t, stantest.WithFileStore(dir))
	want := msgs("persisted", 3)
	sc, err := stan.Connect(s.ClusterID(), "pub", stan.NatsURL(s.URL()))
	if err != nil {
		t.Fatal(err)
	}
	publish(t, sc, want)
	_ = sc.Close()
	port := s.Port()
	s.Shutdown()

	s2 := stantest.Start(t, stantest.WithFileStore(dir), stantest.WithPort(port))
	if s2.URL() != s.URL() {
		t.Errorf("restarted at %s, want %s", s2.URL(), s.URL())
	}
	if got := readAll(t, connect(t, s2, "sub"), len(want)); !equal(got, want) {
		t.Errorf("after restart read %q, want %q", got, want)
	}
}

func TestMaxPayload(t *testing.T) {
	s := stantest.Start(t, stantest.WithMaxPayload(64*1024))
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := nc.MaxPayload(); got != 64*1024 {
		t.Errorf("MaxPayload() = %d, want %d", got, 64*1024)
	}
}

func TestSeparateNATSShutdownStreaming(t *testing.T) {
	s := stantest.Start(t, stantest.WithSeparateNATS(), stantest.WithServerLog())
	pub := connect(t, s, "pub")
	publish(t, pub, []string{"x"})
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}

	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	s.ShutdownStreaming()
	if s.StanServer() != nil {
		t.Error("StanServer() after ShutdownStreaming is not nil")
	}
	// NATS still answers...
	if err := nc.Flush(); err != nil {
		t.Fatalf("NATS gone after ShutdownStreaming: %v", err)
	}
	// ...but no streaming server does.
	if _, err := stan.Connect(s.ClusterID(), "late", stan.NatsConn(nc), stan.ConnectWait(2*time.Second)); err == nil {
		t.Fatal("stan.Connect succeeded with the streaming server down")
	}
	s.Shutdown()
	s.Shutdown() // idempotent
}

func TestChannelAndClient(t *testing.T) {
	s := stantest.Start(t)
	publish(t, connect(t, s, "pub"), msgs("m", 3))
	sc := connect(t, s, "sub")
	got := make(chan *stan.Msg, 3)
	if _, err := sc.Subscribe(channel, func(m *stan.Msg) { got <- m }, stan.DurableName("d"),
		stan.DeliverAllAvailable(), stan.SetManualAckMode()); err != nil {
		t.Fatal(err)
	}
	first := <-got
	if err := first.Ack(); err != nil {
		t.Fatal(err)
	}
	<-got
	<-got
	// Acks are not confirmed to the client: await the server's count.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ch, err := s.Channel(channel)
		if err != nil {
			t.Fatal(err)
		}
		if ch.Msgs != 3 || ch.LastSeq != 3 || len(ch.Subscriptions) != 1 {
			t.Fatalf("Channel = %+v", ch)
		}
		sub := ch.Subscriptions[0]
		if sub.ClientID != "sub" || sub.DurableName != "d" || !sub.IsDurable || sub.IsOffline || sub.LastSent != 3 {
			t.Fatalf("subscription = %+v", sub)
		}
		if sub.PendingCount == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending %d, want 2 after one ack of three", sub.PendingCount)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cl, err := s.Client("sub")
	if err != nil {
		t.Fatal(err)
	}
	if cl.ID != "sub" || len(cl.Subscriptions[channel]) != 1 {
		t.Errorf("Client = %+v", cl)
	}
	if _, err := s.Channel("no.such.channel"); !errors.Is(err, stantest.ErrNotFound) {
		t.Errorf("unknown channel: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Client("nobody"); !errors.Is(err, stantest.ErrNotFound) {
		t.Errorf("unknown client: err = %v, want ErrNotFound", err)
	}
	s.Shutdown()
	if _, err := s.Channel(channel); err == nil {
		t.Error("Channel after Shutdown: no error")
	}
}
