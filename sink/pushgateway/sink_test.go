package pushgateway_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/pgwtest"
	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/sink/pushgateway"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

func newSink(t *testing.T, url string) *pushgateway.Sink {
	t.Helper()
	c, err := pushgateway.New(pushgateway.Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	return pushgateway.NewSink(c, "", slog.New(slog.DiscardHandler), prometheus.NewRegistry())
}

// scrape builds what the drain hands a sink for a successful scrape of body.
func scrape(t *testing.T, instance string, start time.Time, body string) *sink.Scrape {
	t.Helper()
	tg := exposition.Target{Job: "j", Instance: instance}
	fams, err := exposition.Parse([]byte(body), "text/plain; version=0.0.4")
	if err != nil {
		t.Fatal(err)
	}
	exposition.Attach(fams, tg)
	return &sink.Scrape{
		Envelope: &envelope.Envelope{Job: "j", Instance: instance, Start: start},
		Target:   tg,
		Families: fams,
		Health:   exposition.Health(tg, exposition.Outcome{Up: true, Start: start, Duration: time.Millisecond, Samples: 1}),
	}
}

func value(t *testing.T, pgw *pgwtest.Server, name, instance string) (float64, bool) {
	t.Helper()
	for _, m := range pgw.Scrape(t)[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "instance" && l.GetValue() == instance {
				switch {
				case m.Gauge != nil:
					return m.Gauge.GetValue(), true
				case m.Untyped != nil:
					return m.Untyped.GetValue(), true
				case m.Counter != nil:
					return m.Counter.GetValue(), true
				}
			}
		}
	}
	return 0, false
}

func TestSinkDeliver(t *testing.T) {
	pgw := pgwtest.Start(t)
	s := newSink(t, pgw.URL())
	ctx := context.Background()
	now := time.Now().Truncate(time.Millisecond)
	body := "# TYPE m gauge\nm 1 1700000000000\n{\"my.metric\"} 5\n"
	if err := s.Deliver(ctx, scrape(t, "a", now, body)); err != nil {
		t.Fatal(err)
	}
	if v, ok := value(t, pgw, "m", "a"); !ok || v != 1 {
		t.Errorf("m = %v %v (timestamped sample must be pushed without its timestamp)", v, ok)
	}
	if v, ok := value(t, pgw, "my_metric", "a"); !ok || v != 5 {
		t.Errorf("my_metric = %v %v: a UTF-8 name must arrive escaped", v, ok)
	}
	if v, _ := value(t, pgw, exposition.HealthTimestamp, "a"); v != float64(now.UnixNano())/1e9 {
		t.Errorf("scrape timestamp %v, want %v", v, float64(now.UnixNano())/1e9)
	}
	// An older or the same scrape is refused as superseded; a newer one replaces.
	if err := s.Deliver(ctx, scrape(t, "a", now.Add(-time.Second), "m 0\n")); !errors.Is(err, sink.ErrSuperseded) {
		t.Errorf("older scrape: %v", err)
	}
	if err := s.Deliver(ctx, scrape(t, "a", now.Add(time.Second), "m 2\n")); err != nil {
		t.Fatal(err)
	}
	if v, _ := value(t, pgw, "m", "a"); v != 2 {
		t.Errorf("m = %v after the newer scrape", v)
	}
	if _, ok := value(t, pgw, "my_metric", "a"); ok {
		t.Error("PUT did not replace the group: my_metric is still there")
	}

	// A new sink (a restarted drain) learns the newest scrape from the gateway.
	s2 := newSink(t, pgw.URL())
	if err := s2.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s2.Deliver(ctx, scrape(t, "a", now, "m 9\n")); !errors.Is(err, sink.ErrSuperseded) {
		t.Errorf("after Load, an older scrape: %v", err)
	}
}

func TestSinkSweep(t *testing.T) {
	pgw := pgwtest.Start(t)
	s := newSink(t, pgw.URL())
	ctx := context.Background()
	now := time.Now()
	if code := pgw.PushRaw(t, "/metrics/job/other/instance/x", "text/plain; version=0.0.4", []byte("theirs 1\n")); code/100 != 2 {
		t.Fatalf("push: %d", code)
	}
	if err := s.Deliver(ctx, scrape(t, "old", now.Add(-time.Minute), "m 1\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Deliver(ctx, scrape(t, "fresh", now, "m 1\n")); err != nil {
		t.Fatal(err)
	}
	// A restarted drain knows the groups from the gateway only.
	s2 := newSink(t, pgw.URL())
	if err := s2.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s2.Sweep(ctx, now, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stale group deleted", func() bool {
		_, ok := value(t, pgw, "m", "old")
		return !ok
	})
	if _, ok := value(t, pgw, "m", "fresh"); !ok {
		t.Error("fresh group deleted")
	}
	if _, ok := value(t, pgw, "theirs", "x"); !ok {
		t.Error("someone else's group deleted")
	}
}

// TestSinkLeftover: the gateway keeps an empty group for a refused first push; the next
// sweep removes it, and only it. The conflict is with another pusher's group, which the
// sink does not track, so that the gateway's check, not the sink's, refuses the push.
func TestSinkLeftover(t *testing.T) {
	pgw := pgwtest.Start(t)
	s := newSink(t, pgw.URL())
	ctx := context.Background()
	now := time.Now()
	if code := pgw.PushRaw(t, "/metrics/job/other/instance/x", "text/plain; version=0.0.4", []byte("# TYPE clash counter\nclash 1\n")); code/100 != 2 {
		t.Fatalf("push: %d", code)
	}
	err := s.Deliver(ctx, scrape(t, "gauge", now, "# TYPE clash gauge\nclash 1\n"))
	if !errors.Is(err, sink.ErrRejected) || errors.Is(err, pushgateway.ErrInconsistent) {
		t.Fatalf("conflicting push: %v, want the gateway's refusal", err)
	}
	if status, body := pgw.Do(t, "GET", "/api/v1/metrics", "", nil); status != 200 || !bytes.Contains(body, []byte(`"gauge"`)) {
		t.Fatalf("no leftover group to test with: %d %s", status, body)
	}
	if err := s.Sweep(ctx, now, time.Minute); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the leftover group deleted", func() bool {
		_, body := pgw.Do(t, "GET", "/api/v1/metrics", "", nil)
		return !bytes.Contains(body, []byte(`"gauge"`))
	})
	if _, ok := value(t, pgw, "clash", "x"); !ok {
		t.Error("the other pusher's group went too")
	}
}
