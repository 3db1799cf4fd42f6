package stream

import (
	"sync/atomic"
	"testing"
	"time"

	natsd "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// A pull request that no one serving the consumer answered (no responders: its leader
// being elected, as when the server leading it died) is made again within seconds;
// nats.go alone makes it again only after two missed heartbeats, 30 s by default. A
// stand-in for JetStream on a plain NATS server answers the first pull so, and
// delivers a message to the next.
func TestConsumeJetStreamPullsAgainWhenUnanswered(t *testing.T) {
	s, err := natsd.NewServer(&natsd.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	created := time.Now().UTC().Format(time.RFC3339Nano)
	answer := func(reply string) func(*nats.Msg) {
		return func(m *nats.Msg) { _ = m.Respond([]byte(reply)) }
	}
	if _, err := nc.Subscribe("$JS.API.STREAM.INFO.METRICS", answer(`{"type":"io.nats.jetstream.api.v1.stream_info_response",`+
		`"config":{"name":"METRICS","subjects":["metrics.>"],"retention":"limits","storage":"file","num_replicas":1},`+
		`"created":"`+created+`","state":{"messages":1,"first_seq":1,"last_seq":1}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe("$JS.API.CONSUMER.CREATE.METRICS.drain.>", answer(`{"type":"io.nats.jetstream.api.v1.consumer_create_response",`+
		`"stream_name":"METRICS","name":"drain","created":"`+created+`",`+
		`"config":{"durable_name":"drain","deliver_policy":"all","ack_policy":"explicit","ack_wait":5000000000,`+
		`"filter_subject":"metrics.>","max_ack_pending":1024}}`)); err != nil {
		t.Fatal(err)
	}
	var pulls atomic.Int32
	if _, err := nc.Subscribe("$JS.API.CONSUMER.MSG.NEXT.METRICS.drain", func(m *nats.Msg) {
		if pulls.Add(1) == 1 {
			// What the server sends to a request no one listens to.
			r := nats.NewMsg(m.Reply)
			r.Header.Set("Status", "503")
			_ = nc.PublishMsg(r)
			return
		}
		// A client may not publish with a $JS.ACK reply subject: this message has no
		// metadata.
		_ = nc.PublishRequest(m.Reply, "stand-in.ack", []byte("after the election"))
	}); err != nil {
		t.Fatal(err)
	}

	got := make(chan *Msg, 10)
	start := time.Now()
	runJS(t, JetStreamSubscribeOptions{
		JetStreamOptions: JetStreamOptions{URLs: []string{s.ClientURL()}, Stream: "METRICS", Subject: "metrics"},
		Durable:          "drain", AckWait: 5 * time.Second,
	}, func(m *Msg) { got <- m })
	select {
	case m := <-got:
		if string(m.Data) != "after the election" {
			t.Errorf("got %q", m.Data)
		}
		if pulls.Load() < 2 {
			t.Errorf("delivered after %d pulls", pulls.Load())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("nothing delivered within 10s of the first pull's no responders (%d pulls)", pulls.Load())
	}
	t.Logf("delivered after %v, %d pulls", time.Since(start).Round(time.Millisecond), pulls.Load())
}
