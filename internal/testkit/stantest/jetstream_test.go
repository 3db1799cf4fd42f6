package stantest_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
)

// One server, one port: a STAN client and a JetStream client side by side, and the
// JetStream store surviving a restart on the same dir.
func TestWithJetStreamServesBoth(t *testing.T) {
	dir := t.TempDir()
	s := stantest.Start(t, stantest.WithJetStream(dir))
	sc := connect(t, s, "both-stan")
	publish(t, sc, msgs("stan", 3))
	if got := readAll(t, sc, 3); got[2] != "stan-2" {
		t.Fatalf("STAN read %q", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"js.>"}}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	if _, err := js.Publish(ctx, "js.a", []byte("x")); err != nil {
		t.Fatalf("JetStream publish: %v", err)
	}
	nc.Close()

	port := s.Port()
	s.Shutdown()
	s = stantest.Start(t, stantest.WithJetStream(dir), stantest.WithPort(port))
	nc, err = nats.Connect(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err = jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "S")
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("stream holds %d messages after restart, want 1", n)
	}
}
