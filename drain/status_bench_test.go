package drain

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// discard is a sink.Sink that takes everything at once.
type discard struct{}

func (discard) Kind() sink.Kind                             { return sink.State }
func (discard) Name() string                                { return "discard" }
func (discard) Deliver(context.Context, *sink.Scrape) error { return nil }

// BenchmarkHandle10kTargets is the drain's whole path per message, decode to ack, at
// 10,000 targets with two sinks: what recording the statuses adds to is this.
func BenchmarkHandle10kTargets(b *testing.B) {
	const targets = 10000
	codec, err := envelope.NewCodec()
	if err != nil {
		b.Fatal(err)
	}
	defer codec.Close()
	d := New(Options{MaxAge: time.Hour, Workers: 2}, codec, []sink.Sink{discard{}, discard{}}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	base := time.Now().Add(-time.Minute)
	msgs := make([][]byte, b.N)
	for i := range msgs {
		msgs[i], err = codec.Encode(&envelope.Envelope{Publisher: "edge1", Site: "dc1", Job: "node",
			Instance: fmt.Sprintf("host%05d:9100", i%targets), Start: base.Add(time.Duration(i/targets) * time.Millisecond),
			ContentType: "text/plain; version=0.0.4", Body: []byte("m 1\n"), Series: 1})
		if err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx)
	var acked atomic.Int64
	ack := func() error { acked.Add(1); return nil }
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	// In batches of distinct targets, each delivered before its target's next message,
	// so that every message takes the same path: none is superseded.
	const batch = 1000
	for i, m := range msgs {
		d.Handle(m, uint64(i), ack)
		if i%batch == batch-1 || i == len(msgs)-1 {
			for acked.Load() < int64(i+1) {
				time.Sleep(20 * time.Microsecond)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkStatusRecord is the recording alone, per message: a newer scrape observed in
// Handle, its outcome in two sinks recorded in finish.
func BenchmarkStatusRecord(b *testing.B) {
	st := status{sinks: make([]sinkState, 2)}
	env := &envelope.Envelope{Publisher: "edge1", Job: "node", Instance: "host:9100", Start: time.Now(), Series: 10}
	res := make([]sinkResult, 2)
	now := time.Now()
	b.ReportAllocs()
	for i := range b.N {
		env.Start = env.Start.Add(time.Millisecond)
		st.observe(env, uint64(i), now)
		res[0] = sinkResult{fate: FateDelivered, at: now, attempts: 1}
		res[1] = sinkResult{fate: FateDelivered, at: now, attempts: 1}
		st.record(env.Start, res)
	}
}

func benchDrain10k(b *testing.B) *Drain {
	b.Helper()
	d := New(Options{MaxAge: time.Hour}, nil, []sink.Sink{discard{}, discard{}}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	now := time.Now()
	for i := range 10000 {
		env := &envelope.Envelope{Publisher: fmt.Sprint("edge", i%40), Job: fmt.Sprint("job", i%7),
			Instance: fmt.Sprintf("host%05d:9100", i), Start: now, Series: i}
		t := d.target(env.Job + "/" + env.Instance)
		t.status.observe(env, uint64(i), now)
	}
	return d
}

// BenchmarkTargets10k is the page's snapshot of 10,000 targets, sort included.
func BenchmarkTargets10k(b *testing.B) {
	d := benchDrain10k(b)
	b.ReportAllocs()
	for range b.N {
		if got := d.Targets(); len(got) != 10000 {
			b.Fatal(len(got))
		}
	}
}

// BenchmarkTargetsLockHeld10k is the part of Targets that holds the drain's lock.
func BenchmarkTargetsLockHeld10k(b *testing.B) {
	d := benchDrain10k(b)
	out, sinks := make([]TargetStatus, 0, 10000), make([]SinkStatus, 0, 20000)
	b.ReportAllocs()
	for range b.N {
		d.snapshot(out[:0], sinks[:0])
	}
}
