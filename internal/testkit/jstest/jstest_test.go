package jstest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/jstest"
)

// An R3 stream keeps taking messages, and keeps them all, while its leader is killed
// and restarted; a client named by nats.Name is found on its server.
func TestClusterSurvivesItsStreamLeader(t *testing.T) {
	c := jstest.StartCluster(t, 3)
	if c.Size() != 3 || len(c.URLs()) != 3 {
		t.Fatalf("cluster of %d, URLs %v", c.Size(), c.URLs())
	}
	js := c.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Replicas: 3, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			// A publish during the hand-over may find no leader, or be lost with
			// the server: Publish tries it again, with its message ID so it is
			// stored once.
			m := nats.NewMsg("s.x")
			m.Data = fmt.Appendf(nil, "%d", i)
			m.Header.Set(jetstream.MsgIDHeader, fmt.Sprint(i))
			jstest.Publish(t, js, m)
		}
	}
	publish(0, 10)

	leader := c.StreamLeader(t, "S")
	c.Kill(leader)
	if c.Server(leader) != nil {
		t.Fatal("a killed server is still there")
	}
	if now := c.StreamLeader(t, "S"); now == leader {
		t.Fatalf("stream leader is still %d", now)
	}
	publish(10, 20)
	c.Restart(t, leader)
	c.WaitStreamCurrent(t, "S")
	publish(20, 30)

	msgs := c.Messages(t, js, "S")
	if len(msgs) != 30 {
		t.Fatalf("stream holds %d messages, want 30", len(msgs))
	}
	for i, m := range msgs {
		if string(m.Data) != fmt.Sprint(i) {
			t.Errorf("message %d is %q", i, m.Data)
		}
	}

	nc, err := nats.Connect(c.URL(1), nats.Name("finder test"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if at := c.ConnectedTo(t, "finder"); at != 1 {
		t.Errorf("connection found on server %d, want 1", at)
	}
}
