package pushgateway

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/pgwtest"
	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

func internalSink(t *testing.T, url string) (*Sink, *Client) {
	t.Helper()
	c, err := New(Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	return NewSink(c, "", slog.New(slog.DiscardHandler), prometheus.NewRegistry()), c
}

func gaugeScrape(instance string, start time.Time, name string) *sink.Scrape {
	tg := exposition.Target{Job: "j", Instance: instance}
	fams := []*dto.MetricFamily{gauge(name)}
	exposition.Attach(fams, tg)
	return &sink.Scrape{
		Envelope: &envelope.Envelope{Job: "j", Instance: instance, Start: start},
		Target:   tg,
		Families: fams,
		Health:   exposition.Health(tg, exposition.Outcome{Up: true, Start: start, Duration: time.Millisecond, Samples: 1}),
	}
}

// waitApplied waits until the gateway lists the group of instance: an unchecked
// gateway answers a push before it applies it.
func waitApplied(t *testing.T, c *Client, instance string, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		gs, err := c.Groups(context.Background(), "none")
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, g := range gs {
			found = found || g.Grouping["instance"] == instance
		}
		if found == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s listed: %v, want %v", instance, found, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestExpiredRegistry: the registry of a drain gone for the TTL no longer holds its
// claims, and a sweep deletes it.
func TestExpiredRegistry(t *testing.T) {
	ctx := context.Background()
	pgw := pgwtest.Start(t, pgwtest.WithoutConsistencyCheck())
	s, c := internalSink(t, pgw.URL())
	s.times.ttl = time.Second
	gone := Grouping{{"job", ClaimsJob}, {"instance", "gone"}}
	if err := c.Push(ctx, gone, claimFamilies([]claimEntry{{key: famKey{"m", dto.MetricType_COUNTER}, at: 1}})); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if err := s.Deliver(ctx, gaugeScrape("a", time.Now(), "m")); err != nil {
		t.Fatalf("a family only an expired registry claims: %v", err)
	}
	waitApplied(t, c, "a", true)
	s.mu.Lock()
	s.listed = time.Time{} // a sweep reads the gateway when its last listing is old
	s.mu.Unlock()
	if err := s.Sweep(ctx, time.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, c, "gone", false)
}

// TestSlowPushAcrossRestart: a push answered too long after the gateway's start time
// was confirmed, by a gateway that turns out to have restarted meanwhile, may have
// been applied after another drain trusted the new gateway: its group is deleted and
// the push is to be tried again.
func TestSlowPushAcrossRestart(t *testing.T) {
	ctx := context.Background()
	pgw := pgwtest.Start(t, pgwtest.WithoutConsistencyCheck(), pgwtest.WithPersistenceFile(filepath.Join(t.TempDir(), "pgw.data")))
	s, c := internalSink(t, pgw.URL())
	sc := gaugeScrape("a", time.Now(), "m")
	if err := s.Deliver(ctx, sc); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, c, "a", true)
	gk := s.Grouping(sc)
	st, _, err := s.watch.confirm(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	g := s.group(gk.Path())
	g.mu.Lock()
	if err := s.afterSlowPush(ctx, gk, gk.Path(), g, st); err != nil {
		t.Fatalf("the same gateway: %v", err)
	}
	pgw.Restart() // with what it persisted: the group
	waitApplied(t, c, "a", true)
	err = s.afterSlowPush(ctx, gk, gk.Path(), g, st)
	g.mu.Unlock()
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("across a restart: %v, want a retryable error", err)
	}
	waitApplied(t, c, "a", false)
	if n := testutil.ToFloat64(s.watch.restarts); n != 1 {
		t.Errorf("restarts noticed: %v", n)
	}
	// The claims wait for a round in the restarted gateway.
	if keys := s.ledger.unvouched(s.ledger.newShape([]famMeta{{name: "m", typ: dto.MetricType_GAUGE}})); len(keys) != 1 {
		t.Errorf("unvouched after the restart: %v", keys)
	}
}
