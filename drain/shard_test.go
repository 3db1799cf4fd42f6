package drain

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// TestShards: drains of a shard set each take their share of the targets, every target
// goes to exactly one of them, and each acknowledges the others' messages unread.
func TestShards(t *testing.T) {
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	const shards, targets = 3, 300
	sinks := make([]*recorder, shards)
	drains := make([]*Drain, shards)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range shards {
		sinks[i] = &recorder{}
		drains[i] = New(Options{MaxAge: time.Minute, Workers: 2, Shards: shards, Shard: i},
			codec, []sink.Sink{sinks[i]}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		go drains[i].Run(ctx)
	}
	a := &acks{}
	start := time.Now().Add(-time.Second)
	for n := range targets {
		b, err := codec.Encode(&envelope.Envelope{Job: "j", Instance: fmt.Sprint("host", n), Start: start,
			ContentType: "text/plain; version=0.0.4", Body: []byte("m 1\n"), Series: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range drains { // each drain reads the whole channel
			d.Handle(b, uint64(n), a.fn(uint64(n)))
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for n := range targets {
		for a.count(uint64(n)) < shards {
			if time.Now().After(deadline) {
				t.Fatalf("message %d acknowledged %d times, want once per drain", n, a.count(uint64(n)))
			}
			time.Sleep(time.Millisecond)
		}
	}
	seen := map[string]int{}
	for i, s := range sinks {
		got := s.delivered()
		if len(got) < targets/shards/2 {
			t.Errorf("shard %d took %d of %d targets: the hash does not spread", i, len(got), targets)
		}
		for _, g := range got {
			key, _, _ := strings.Cut(g, "@")
			seen[key]++
			inst := strings.TrimPrefix(key, "j/")
			if ShardOf("j", inst, shards) != i {
				t.Errorf("%s delivered by shard %d, belongs to %d", key, i, ShardOf("j", inst, shards))
			}
		}
		if other := testutil.ToFloat64(drains[i].metrics.otherShard); int(other)+len(got) != targets {
			t.Errorf("shard %d: %v skipped + %d delivered, want %d", i, other, len(got), targets)
		}
	}
	for n := range targets {
		if k := fmt.Sprint("j/host", n); seen[k] != 1 {
			t.Errorf("%s delivered %d times, want once", k, seen[k])
		}
	}
	// The hash is part of the deployment contract: drains of different releases in one
	// shard set must agree, so these values may never change.
	for _, c := range []struct {
		job, instance string
		shards, want  int
	}{{"node", "host1:9100", 4, 1}, {"node", "host2:9100", 4, 0}, {"choria", "choria1", 7, 6}, {"a", "b", 1, 0}} {
		if got := ShardOf(c.job, c.instance, c.shards); got != c.want {
			t.Errorf("ShardOf(%q, %q, %d) = %d, want %d", c.job, c.instance, c.shards, got, c.want)
		}
	}
}

// BenchmarkOtherShard measures what a drain spends on another shard's message (read its
// header, acknowledge it), beside a full decode of the same node_exporter-sized message:
// the README's figure for shards.
func BenchmarkOtherShard(b *testing.B) {
	codec, err := envelope.NewCodec()
	if err != nil {
		b.Fatal(err)
	}
	defer codec.Close()
	body := []byte(strings.Repeat("# TYPE m gauge\nm{l=\"some value\"} 1\n", 500))
	d := New(Options{MaxAge: time.Minute, Shards: 2, Shard: 0}, codec, nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	var msg []byte
	for n := 0; ; n++ {
		inst := fmt.Sprint("host", n)
		if ShardOf("j", inst, 2) == 1 {
			msg, err = codec.Encode(&envelope.Envelope{Job: "j", Instance: inst, Start: time.Now(),
				ContentType: "text/plain; version=0.0.4", Body: body, Series: 500})
			if err != nil {
				b.Fatal(err)
			}
			break
		}
	}
	ack := func() error { return nil }
	b.Run("skip", func(b *testing.B) {
		for b.Loop() {
			d.Handle(msg, 1, ack)
		}
	})
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			if _, err := codec.Decode(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}
