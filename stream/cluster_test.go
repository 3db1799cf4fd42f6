package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/jstest"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/logtest"
)

// Publish failures that may pass when tried again are told apart from final ones.
func TestJetStreamAckErrors(t *testing.T) {
	j := &JetStream{}
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"no stream leader", jetstream.ErrNoStreamResponse, ErrUnreachable},
		{"JetStream unavailable a while", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, ErrUnreachable},
		{"disconnected awaiting the ack", nats.ErrDisconnected, ErrUnreachable},
		{"no ack in time", jetstream.ErrAsyncPublishTimeout, ErrAckTimeout},
		{"same ID being stored", &jetstream.APIError{Code: 409, ErrorCode: 10158, Description: "duplicate message id is in process"}, ErrAckTimeout},
		{"no room", &jetstream.APIError{Code: 503, ErrorCode: 10023, Description: "insufficient resources"}, ErrRejected},
		{"stream full", &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages exceeded"}, ErrRejected},
		{"message too large for the stream", &jetstream.APIError{Code: 400, ErrorCode: 10054, Description: "message size exceeds maximum allowed"}, ErrRejected},
		{"closed", nats.ErrConnectionClosed, ErrClosed},
	} {
		if got := j.ackError("s.x", c.err); !errors.Is(got, c.want) || !errors.Is(got, c.err) {
			t.Errorf("%s: %v, want %v wrapping the client's error", c.name, got, c.want)
		}
	}
}

// On a cluster: a stream created with replicas; the command given for a missing one
// proposes 3; one that exists with other replicas is left so, with a warning; and a
// dial right after the stream's leader was killed finds the stream under its new one.
func TestJetStreamCluster(t *testing.T) {
	c := jstest.StartCluster(t, 3)
	// connect_timeout as by default: a leader election on a loaded machine can take
	// more than 2 s.
	o := JetStreamOptions{URLs: c.URLs(), Stream: "METRICS", Subject: "metrics", MaxAge: time.Minute, ConnectTimeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	_, err := DialJetStream(ctx, o)
	if !errors.Is(err, ErrNoStream) || !strings.Contains(err.Error(), "--replicas 3 --defaults") {
		t.Errorf("missing stream on a cluster: %v, want the command to create it with 3 replicas", err)
	}

	o.Create, o.Replicas = true, 3
	j, err := DialJetStream(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if r := j.StreamConfig().Replicas; r != 3 {
		t.Errorf("created with %d replicas, want 3", r)
	}
	_ = j.Close()

	var log logtest.Buffer
	o.Replicas, o.Logger = 1, log.Logger()
	j, err = DialJetStream(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	_ = j.Close()
	if r := j.StreamConfig().Replicas; r != 3 || !strings.Contains(log.String(), "replicas=3 create_replicas=1") {
		t.Errorf("existing stream of 3 replicas, 1 asked for: now %d replicas; log:\n%s", r, &log)
	}

	o.Replicas, o.Logger = 3, nil
	for range 2 {
		c.Kill(c.StreamLeader(t, "METRICS"))
		start := time.Now()
		j, err = DialJetStream(ctx, o)
		if err != nil {
			t.Fatalf("dial %v after the stream leader was killed: %v", time.Since(start), err)
		}
		_ = j.Close()
		for i := range c.Size() {
			c.Restart(t, i)
		}
		c.WaitStreamCurrent(t, "METRICS")
	}
}

// ConsumeJetStream goes on delivering while the server leading its consumer, then the
// one it is connected to, is killed and restarted.
func TestConsumeJetStreamCluster(t *testing.T) {
	c := jstest.StartCluster(t, 3)
	o := JetStreamSubscribeOptions{
		JetStreamOptions: JetStreamOptions{URLs: c.URLs(), Name: "consumer under test", Stream: "METRICS", Subject: "metrics",
			Create: true, Replicas: 3, ConnectTimeout: 2 * time.Second},
		Durable: "drain", AckWait: 5 * time.Second,
	}
	got := make(chan *Msg, 100)
	runJS(t, o, func(m *Msg) {
		if err := m.Ack(); err != nil {
			t.Logf("ack #%d: %v", m.Sequence, err) // redelivered: a sequence seen again
		}
		got <- m
	})
	js := c.JetStream(t)
	seen := map[string]bool{}
	n := 0
	round := func() {
		t.Helper()
		for range 5 {
			m := nats.NewMsg(Subject("metrics", "j", "i"))
			m.Data = []byte(fmt.Sprint(n))
			m.Header.Set(jetstream.MsgIDHeader, string(m.Data))
			jstest.Publish(t, js, m)
			n++
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for len(seen) < n {
			select {
			case m := <-got:
				seen[string(m.Data)] = true
			case <-ctx.Done():
				t.Fatalf("%d of %d messages consumed", len(seen), n)
			}
		}
	}
	round()
	for _, kill := range []func() int{
		func() int { return c.ConsumerLeader(t, "METRICS", "drain") },
		func() int { return c.ConnectedTo(t, "consumer under test") },
	} {
		down := kill()
		c.Kill(down)
		round()
		c.Restart(t, down)
		c.WaitStreamCurrent(t, "METRICS")
		round()
	}
}
