package drain_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prometheus-streams/prometheus-streams/drain"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// down is a history sink whose receiver is down: every delivery fails, to be retried.
type down struct{ tries atomic.Int64 }

func (s *down) Name() string    { return "down" }
func (s *down) Kind() sink.Kind { return sink.History }
func (s *down) Deliver(context.Context, *sink.Scrape) error {
	s.tries.Add(1)
	return errors.New("receiver down")
}

// heldBytes is the memory the drain holds, after a collection, for n node_exporter
// scrapes (of targets targets) waiting in a remote-write receiver's outage: each
// message's bytes, kept by its acknowledgement as a stream's message is, and what the
// drain keeps of the scrape until the receiver is back.
func heldBytes(tb testing.TB, n, targets int) float64 {
	tb.Helper()
	codec, err := envelope.NewCodec()
	if err != nil {
		tb.Fatal(err)
	}
	defer codec.Close()
	body := fixture.Read(tb, fixture.NodeExporter)
	now := time.Now()
	before := heapAlloc()
	msgs := make([][]byte, n)
	for i := range msgs {
		if msgs[i], err = codec.Encode(&envelope.Envelope{Job: "node", Instance: fmt.Sprintf("host%d:9100", i%targets),
			Start: now.Add(-time.Duration(n-i) * time.Second), ContentType: fixture.TextContentType, Body: body, Series: 507}); err != nil {
			tb.Fatal(err)
		}
	}
	recv := &down{}
	d := drain.New(drain.Options{MaxAge: 24 * time.Hour, Workers: 2, MinBackoff: time.Hour, MaxBackoff: time.Hour},
		codec, []sink.Sink{recv}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx)

	var acked atomic.Int64
	for i, m := range msgs {
		msgs[i] = nil // held from now on by its acknowledgement only
		d.Handle(m, uint64(i+1), func() error { acked.Add(1); return ack(m) })
	}
	// Every target tried once, and parked until the receiver is back.
	for deadline := time.Now().Add(time.Minute); recv.tries.Load() < int64(targets); {
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d targets tried", recv.tries.Load(), targets)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the last round's release
	held := heapAlloc() - before
	if a := acked.Load(); a != 0 {
		tb.Fatalf("%d scrapes acknowledged while the receiver is down", a)
	}
	runtime.KeepAlive(d)
	return float64(held) / float64(n)
}

// ack stands for a stream's acknowledgement, which holds its message.
//
//go:noinline
func ack([]byte) error { return nil }

func heapAlloc() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// BenchmarkHeld reports the memory a drain holds per node_exporter scrape waiting
// for a history sink that is down: 1,000 scrapes, 100 of each of 10 targets.
func BenchmarkHeld(b *testing.B) {
	var per float64
	for range b.N {
		per += heldBytes(b, 1000, 10)
	}
	b.ReportMetric(per/float64(b.N), "held-B/scrape")
	b.ReportMetric(0, "ns/op")
}

// TestHeldCompressed checks that a waiting scrape is held compressed: a node_exporter
// scrape is about 9 KB on the wire and 56 KB decompressed.
func TestHeldCompressed(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 1,000 scrapes")
	}
	body := len(fixture.Read(t, fixture.NodeExporter))
	per := heldBytes(t, 1000, 10)
	t.Logf("%.0f bytes held per waiting scrape of a %d-byte body", per, body)
	if per > float64(body)/3 {
		t.Errorf("%.0f bytes held per waiting scrape, want well under the body's %d: is the body held decompressed?", per, body)
	}
}
