package drain_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/stan.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/prometheus-streams/prometheus-streams/drain"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/stream"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// instant is a sink that takes every scrape at once: what is left is the drain's own cost.
type instant struct{ n atomic.Int64 }

func (s *instant) Name() string    { return "instant" }
func (s *instant) Kind() sink.Kind { return sink.State }
func (s *instant) Deliver(context.Context, *sink.Scrape) error {
	s.n.Add(1)
	return nil
}

// BenchmarkTransport measures the drain's sustained rate on each transport, on the same
// data in the same run: a backlog of node_exporter-sized scrapes of distinct targets on
// one in-process server (NATS Streaming and JetStream on one port, file stores), drained
// into a sink that answers at once. Each iteration runs both transports, one after the
// other, so both see the same machine; the ratio is what to read.
func BenchmarkTransport(b *testing.B) {
	const targets = 2000
	srv := stantest.Start(b, stantest.WithJetStream(b.TempDir()), stantest.WithFileStore(b.TempDir()))
	codec, err := envelope.NewCodec()
	if err != nil {
		b.Fatal(err)
	}
	defer codec.Close()
	body := fixture.Read(b, fixture.NodeExporter)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	sc, err := stan.Connect(srv.ClusterID(), "bench-publisher", stan.NatsConn(nc))
	if err != nil {
		b.Fatal(err)
	}
	defer sc.Close()

	var elapsed [2]time.Duration
	var stored [2]int64
	for i := range b.N {
		start := time.Now()
		msgs := make([][]byte, targets)
		for t := range msgs {
			if msgs[t], err = codec.Encode(&envelope.Envelope{Job: "node", Instance: fmt.Sprintf("host%d:9100", t), Start: start,
				ContentType: fixture.TextContentType, Body: body, Series: 507}); err != nil {
				b.Fatal(err)
			}
		}
		channel, prefix, name := fmt.Sprintf("bench%d", i), fmt.Sprintf("bench%d", i), fmt.Sprintf("BENCH%d", i)
		if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: name, Subjects: []string{prefix + ".>"}, Storage: jetstream.FileStorage}); err != nil {
			b.Fatal(err)
		}
		for t, m := range msgs {
			if err := sc.Publish(channel, m); err != nil {
				b.Fatal(err)
			}
			if _, err := js.PublishAsync(stream.Subject(prefix, "node", fmt.Sprintf("host%d:9100", t)), m); err != nil {
				b.Fatal(err)
			}
		}
		<-js.PublishAsyncComplete()
		info, err := js.Stream(context.Background(), name)
		if err != nil {
			b.Fatal(err)
		}
		stored[1] += int64(info.CachedInfo().State.Bytes)
		for _, tr := range []int{0, 1} {
			inst := &instant{}
			d := drain.New(drain.Options{MaxAge: time.Hour, Workers: 8}, codec, []sink.Sink{inst}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			ctx, cancel := context.WithCancel(context.Background())
			go d.Run(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				handle := func(m *stream.Msg) { d.Handle(m.Data, m.Sequence, m.Ack) }
				if tr == 0 {
					err = stream.Consume(ctx, stream.SubscribeOptions{
						STANOptions: stream.STANOptions{URLs: []string{srv.URL()}, ClusterID: srv.ClusterID(), ClientID: fmt.Sprintf("bench-drain-%d", i)},
						Subject:     channel, DurableName: "bench", MaxInflight: 1024, AckWait: time.Minute,
					}, handle, nil)
				} else {
					handle = func(m *stream.Msg) {
						d.HandleMessage(drain.Message{Data: m.Data, Handle: drain.Handle{Seq: m.Sequence, Ack: m.Ack, Term: m.Term, Nak: m.Nak}})
					}
					err = stream.ConsumeJetStream(ctx, stream.JetStreamSubscribeOptions{
						JetStreamOptions: stream.JetStreamOptions{URLs: []string{srv.URL()}, Stream: name, Subject: prefix},
						Durable:          "bench", MaxAckPending: 1024, AckWait: time.Minute,
					}, handle, nil)
				}
			}()
			t0 := time.Now()
			for inst.n.Load() < targets {
				time.Sleep(time.Millisecond)
			}
			elapsed[tr] += time.Since(t0)
			cancel()
			<-done
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	stanRate := float64(b.N*targets) / elapsed[0].Seconds()
	jsRate := float64(b.N*targets) / elapsed[1].Seconds()
	b.ReportMetric(stanRate, "stan-scrapes/s")
	b.ReportMetric(jsRate, "jetstream-scrapes/s")
	b.ReportMetric(jsRate/stanRate, "jetstream/stan")
	b.ReportMetric(float64(stored[1])/float64(b.N*targets), "jetstream-stored-B/scrape")
}
