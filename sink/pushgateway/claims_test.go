package pushgateway_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/pgwtest"
	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/sink/pushgateway"
)

// drainSink is a sink standing for one drain of several sharing a gateway.
type drainSink struct {
	*pushgateway.Sink
	reg *prometheus.Registry
}

func newDrainSink(t *testing.T, url string, opts ...pushgateway.SinkOption) drainSink {
	t.Helper()
	c, err := pushgateway.New(pushgateway.Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s := pushgateway.NewSink(c, "", slog.New(slog.DiscardHandler), reg, opts...)
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	return drainSink{s, reg}
}

// metric reads one of the sink's self-metrics: a counter or gauge, or a histogram's
// count.
func (d drainSink) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := d.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func isConflict(err error, reason string) bool {
	var ie *pushgateway.InconsistentError
	return errors.Is(err, sink.ErrRejected) && errors.As(err, &ie) && ie.Reason == reason
}

// watchMetrics scrapes the gateway's /metrics until the test ends and fails it on any
// answer but 200: what Prometheus would see meanwhile.
func watchMetrics(t *testing.T, pgw *pgwtest.Server) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			resp, err := http.Get(pgw.URL() + "/metrics")
			if err != nil {
				continue // restarting
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				mu.Lock()
				bad = append(bad, resp.Status)
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		wg.Wait()
		if len(bad) > 0 {
			t.Errorf("the gateway's /metrics answered %d times other than 200: %v", len(bad), bad[0])
		}
	})
}

// TestSinksShareGateway: two drains share a gateway without its consistency check, and
// each read the gateway before the other pushed. The second to push a family with
// another type is refused and counted; the gateway keeps serving the first.
func TestSinksShareGateway(t *testing.T) {
	pgw := pgwtest.Start(t, pgwtest.WithoutConsistencyCheck())
	watchMetrics(t, pgw)
	c := newClient(t, pgw.URL())
	a, b := newDrainSink(t, pgw.URL()), newDrainSink(t, pgw.URL())
	now := time.Now()

	if err := a.Deliver(ctx, scrapeOf("a", now, parsed(t, "# TYPE m gauge\nm 1\n"), false)); err != nil {
		t.Fatal(err)
	}
	err := b.Deliver(ctx, scrapeOf("b", now, parsed(t, "# TYPE m counter\nm 2\n"), false))
	if !isConflict(err, pushgateway.ReasonTypeConflict) || !strings.Contains(err.Error(), `"m" is a counter here but a gauge in`) {
		t.Fatalf("the other drain's counter: %v, want a type conflict", err)
	}
	if n := refusedCount(t, b.reg, pushgateway.ReasonTypeConflict); n != 1 {
		t.Errorf("refused{reason=type_conflict}: %v", n)
	}
	// What the other drain pushed meanwhile is no obstacle when it agrees.
	if err := b.Deliver(ctx, scrapeOf("b", now.Add(time.Second), parsed(t, "# TYPE m gauge\nm 2\n"), false)); err != nil {
		t.Fatalf("the same type: %v", err)
	}
	// The other way round: a histogram of the second drain, a family of the first
	// colliding with its samples.
	if err := b.Deliver(ctx, scrapeOf("b", now.Add(2*time.Second), parsed(t, "# TYPE m gauge\nm 2\n"+strings.ReplaceAll(hist, "foo", "h")), false)); err != nil {
		t.Fatal(err)
	}
	err = a.Deliver(ctx, scrapeOf("a", now.Add(time.Second), parsed(t, "# TYPE m gauge\nm 1\n# TYPE h_count gauge\nh_count 1\n"), false))
	if !isConflict(err, pushgateway.ReasonNameCollision) {
		t.Fatalf("a family colliding with the other drain's histogram: %v", err)
	}
	holds(t, c, "b", now.Add(2*time.Second))
	fams := pgw.Scrape(t)
	if f := fams["m"]; f.GetType() != dto.MetricType_GAUGE || len(f.GetMetric()) != 2 {
		t.Errorf("the gateway serves %v, want the gauges of both targets", f)
	}
	if _, ok := fams["h_count"]; ok {
		t.Error("the gateway serves the colliding h_count family")
	}
}

// TestSinksClaimRace: two drains push, at the same moment, one new family from many
// targets each, half of them as a gauge and half as a counter. Exactly one type gets
// in, and the gateway never serves both.
func TestSinksClaimRace(t *testing.T) {
	pgw := pgwtest.Start(t, pgwtest.WithoutConsistencyCheck())
	watchMetrics(t, pgw)
	c := newClient(t, pgw.URL())
	drains := []drainSink{newDrainSink(t, pgw.URL()), newDrainSink(t, pgw.URL())}
	const targets = 8 // per drain
	for round := range 3 {
		name := fmt.Sprintf("race_%d", round)
		start := time.Now()
		accepted := map[string]int{}
		refused := 0
		var mu sync.Mutex
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for d, s := range drains {
			for i := range targets {
				typ := []string{"gauge", "counter"}[(i+d+round)%2]
				sc := scrapeOf(fmt.Sprintf("d%d-%d", d, i), start, parsed(t, fmt.Sprintf("# TYPE %s %s\n%s %d\n", name, typ, name, i)), false)
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-gate
					err := s.Deliver(ctx, sc)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						accepted[typ]++
					case isConflict(err, pushgateway.ReasonTypeConflict):
						refused++
					default:
						t.Errorf("%s: %v", typ, err)
					}
				}()
			}
		}
		close(gate)
		wg.Wait()
		if len(accepted) != 1 {
			t.Fatalf("round %d: accepted %v: want exactly one type", round, accepted)
		}
		var winner string
		var n int
		for typ, k := range accepted {
			winner, n = typ, k
		}
		if n+refused != 2*targets {
			t.Errorf("round %d: %d accepted, %d refused of %d", round, n, refused, 2*targets)
		}
		eventually(t, "the accepted pushes applied", func() bool {
			gs, err := c.Groups(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			held := 0
			for _, g := range gs {
				if _, ok := g.Families[name]; ok {
					held++
				}
			}
			return held == n
		})
		if f := pgw.Scrape(t)[name]; !strings.EqualFold(f.GetType().String(), winner) || len(f.GetMetric()) != n {
			t.Errorf("round %d: gateway serves %v, want %d %ss", round, f, n, winner)
		}
	}
}

// claimsOf is a drain's registry as the gateway holds it: type by family.
func claimsOf(t *testing.T, c *pushgateway.Client, id string) map[string]string {
	t.Helper()
	gs, err := c.Groups(ctx, pushgateway.ClaimFamily)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if g.Grouping["job"] == pushgateway.ClaimsJob && g.Grouping["instance"] == id {
			out := map[string]string{}
			for _, m := range g.Families[pushgateway.ClaimFamily].Metrics {
				out[m.Labels["family"]] = m.Labels["type"]
			}
			return out
		}
	}
	return nil
}

// TestClaimOfAnotherDrain: a family another drain claimed (its push on the way) is
// refused with another type when that drain claimed it first; claimed later, the sink
// waits for the other drain to withdraw its claim, and then pushes.
func TestClaimOfAnotherDrain(t *testing.T) {
	pgw := pgwtest.Start(t, pgwtest.WithoutConsistencyCheck())
	watchMetrics(t, pgw)
	c := newClient(t, pgw.URL())
	s := newDrainSink(t, pgw.URL(), pushgateway.WithIdentity("drain-s"))
	now := time.Now()
	registry := func(id string) pushgateway.Grouping {
		return pushgateway.Grouping{{"job", pushgateway.ClaimsJob}, {"instance", id}}
	}

	earlier := float64(now.Add(-time.Hour).Unix())
	if err := c.Push(ctx, registry("drain-x"), registryFamilies(t, "counter", "c", earlier)); err != nil {
		t.Fatal(err)
	}
	err := s.Deliver(ctx, scrapeOf("a", now, parsed(t, "# TYPE c gauge\nc 1\n"), false))
	if !isConflict(err, pushgateway.ReasonTypeConflict) || !strings.Contains(err.Error(), `drain "drain-x"`) {
		t.Fatalf("a family claimed first by another drain: %v", err)
	}
	eventually(t, "the lost claim withdrawn", func() bool { return claimsOf(t, c, "drain-s")["c"] == "" })

	later := float64(now.Add(time.Hour).Unix())
	if err := c.Push(ctx, registry("drain-y"), registryFamilies(t, "counter", "d", later)); err != nil {
		t.Fatal(err)
	}
	const withdrawn = 500 * time.Millisecond
	go func() {
		time.Sleep(withdrawn)
		if err := c.Delete(ctx, registry("drain-y")); err != nil {
			t.Error(err)
		}
	}()
	begin := time.Now()
	if err := s.Deliver(ctx, scrapeOf("a", now.Add(time.Second), parsed(t, "# TYPE d gauge\nd 1\n"), false)); err != nil {
		t.Fatalf("a family another drain claimed later, then withdrew: %v", err)
	}
	if took := time.Since(begin); took < withdrawn {
		t.Errorf("pushed after %v, before the other claim was withdrawn", took)
	}
	if got := claimsOf(t, c, "drain-s"); got["d"] != "gauge" {
		t.Errorf("registry %v, want d claimed as a gauge", got) // the round read it there
	}
}

// TestSinkTakesBackItsClaims: a drain restarted with the same identity takes back the
// families it claimed: its pushes of them need no claim round.
func TestSinkTakesBackItsClaims(t *testing.T) {
	pgw := pgwtest.Start(t, pgwtest.WithoutConsistencyCheck())
	c := newClient(t, pgw.URL())
	now := time.Now()
	body := "# TYPE x gauge\nx 1\n# TYPE y counter\ny 1\n"
	first := newDrainSink(t, pgw.URL(), pushgateway.WithIdentity("drain-a"))
	if err := first.Deliver(ctx, scrapeOf("a", now, parsed(t, body), false)); err != nil {
		t.Fatal(err)
	}
	if n := first.metric(t, "prometheus_streams_drain_pushgateway_claim_round_duration_seconds"); n != 1 {
		t.Errorf("first drain: %v claim rounds, want 1", n)
	}
	if got := claimsOf(t, c, "drain-a"); got["x"] != "gauge" || got["y"] != "counter" {
		t.Fatalf("registry %v", got)
	}
	holds(t, c, "a", now)
	// A gateway just started may still receive pushes a drain confirmed before it
	// restarted: claims are taken back from one up for a while (its clock's second
	// tells).
	time.Sleep(time.Second)

	restarted := newDrainSink(t, pgw.URL(), pushgateway.WithIdentity("drain-a"))
	if err := restarted.Deliver(ctx, scrapeOf("a", now.Add(time.Second), parsed(t, body), false)); err != nil {
		t.Fatal(err)
	}
	if n := restarted.metric(t, "prometheus_streams_drain_pushgateway_claim_round_duration_seconds"); n != 0 {
		t.Errorf("restarted drain: %v claim rounds, want none", n)
	}
	// Another drain still finds the claims in force.
	other := newDrainSink(t, pgw.URL())
	err := other.Deliver(ctx, scrapeOf("b", now, parsed(t, "# TYPE x counter\nx 1\n"), false))
	if !isConflict(err, pushgateway.ReasonTypeConflict) {
		t.Errorf("another drain's counter x: %v", err)
	}
}

// TestClaimsAfterGatewayRestart: the gateway restarts empty. A drain that pushed a
// family before does not push it again unclaimed: the drain that claimed it with
// another type after the restart keeps it.
func TestClaimsAfterGatewayRestart(t *testing.T) {
	pgw := pgwtest.Start(t, pgwtest.WithoutConsistencyCheck())
	c := newClient(t, pgw.URL())
	a, b := newDrainSink(t, pgw.URL()), newDrainSink(t, pgw.URL())
	now := time.Now()
	if err := a.Deliver(ctx, scrapeOf("a", now, parsed(t, "# TYPE m gauge\nm 1\n"), false)); err != nil {
		t.Fatal(err)
	}
	pgw.Restart()
	watchMetrics(t, pgw)
	if err := b.Deliver(ctx, scrapeOf("b", now, parsed(t, "# TYPE m counter\nm 1\n"), false)); err != nil {
		t.Fatalf("the counter, in the gateway restarted empty: %v", err)
	}
	err := a.Deliver(ctx, scrapeOf("a", now.Add(time.Second), parsed(t, "# TYPE m gauge\nm 1\n"), false))
	if !isConflict(err, pushgateway.ReasonTypeConflict) {
		t.Fatalf("the gauge, pushed before the restart: %v, want a type conflict", err)
	}
	if n := a.metric(t, "prometheus_streams_drain_pushgateway_restarts_total"); n != 1 {
		t.Errorf("restarts noticed: %v", n)
	}
	holds(t, c, "b", now)
	if f := pgw.Scrape(t)["m"]; f.GetType() != dto.MetricType_COUNTER || len(f.GetMetric()) != 1 {
		t.Errorf("the gateway serves %v, want b's counter", f)
	}
}

// TestNoClaimsOnCheckingGateway: a gateway with its own check refuses conflicts
// itself: the sink keeps no registry there.
func TestNoClaimsOnCheckingGateway(t *testing.T) {
	pgw := pgwtest.Start(t)
	c := newClient(t, pgw.URL())
	s := newDrainSink(t, pgw.URL())
	now := time.Now()
	if err := s.Deliver(ctx, scrapeOf("a", now, parsed(t, "# TYPE m gauge\nm 1\n"), false)); err != nil {
		t.Fatal(err)
	}
	gs, err := c.Groups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if g.Grouping["job"] == pushgateway.ClaimsJob {
			t.Errorf("a registry on a checking gateway: %v", g.Grouping)
		}
	}
	if n := s.metric(t, "prometheus_streams_drain_pushgateway_claim_round_duration_seconds"); n != 0 {
		t.Errorf("%v claim rounds", n)
	}
}
