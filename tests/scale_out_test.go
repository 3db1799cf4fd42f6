package tests

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"

	"github.com/prometheus-streams/prometheus-streams/drain"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/pgwtest"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/promtest"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
)

// backlog publishes rounds scrapes of each of targets, round r started r seconds after
// t0 with m = r: what a channel holds after the central side was down for a while.
func backlog(t *testing.T, srv *stantest.Server, targets, rounds int, t0 time.Time) {
	t.Helper()
	var msgs [][]byte
	for r := range rounds {
		for i := range targets {
			msgs = append(msgs, encode(t, "j", fmt.Sprintf("t%d", i), t0.Add(time.Duration(r)*time.Second), fmt.Sprintf("m %d\n", r)))
		}
	}
	publish(t, srv, "prometheus", msgs...)
}

// TestShardsAgainstGateway: two drains sharing a backlog by shards. Every scrape of a
// target goes through one drain, so the gateway ends with every target's newest scrape,
// and each drain skipped the other's targets.
func TestShardsAgainstGateway(t *testing.T) {
	srv := stantest.Start(t)
	pgw := pgwtest.Start(t, pgwtest.WithoutConsistencyCheck())
	const targets, rounds = 30, 6
	backlog(t, srv, targets, rounds, time.Now().Add(-time.Duration(rounds+1)*time.Second))
	var drains []*drainProc
	for i := range 2 {
		mon := freeAddr(t)
		cfg := strings.Replace(drainConfig(srv, pgw.URL(), mon, ""), "client_id: drain1",
			fmt.Sprintf("client_id: drain%d\n  durable_name: central\n  shards: 2\n  shard: %d\n  max_inflight: 4", i, i), 1)
		drains = append(drains, startDrain(t, writeConfig(t, cfg), mon))
	}
	waitFor(t, 30*time.Second, "both drains through the backlog", func() bool {
		for _, d := range drains {
			if d.metric("prometheus_streams_drain_messages_received_total") < targets*rounds {
				return false
			}
		}
		return true
	})
	waitFor(t, 30*time.Second, "every target's newest scrape on the gateway", func() bool {
		fams := pgw.Scrape(t)
		for i := range targets {
			if v, ok := groupValue(fams, "m", "j", fmt.Sprintf("t%d", i)); !ok || v != rounds-1 {
				return false
			}
		}
		return true
	})
	for i, d := range drains {
		skipped := d.metric("prometheus_streams_drain_messages_other_shard_total")
		if skipped == 0 || skipped == targets*rounds {
			t.Errorf("drain %d skipped %v of %d messages: the shards did not split the targets", i, skipped, targets*rounds)
		}
	}
	// Once every message's fate is final, the gateway still holds the newest: nothing
	// older was pushed after it.
	waitFor(t, 30*time.Second, "every message's fate final", func() bool {
		for _, d := range drains {
			settled := d.metric("prometheus_streams_drain_messages_other_shard_total") +
				d.metric("prometheus_streams_drain_messages_superseded_total") +
				d.metric("prometheus_streams_drain_scrapes_delivered_total", "sink", "pushgateway")
			if settled < targets*rounds {
				return false
			}
		}
		return true
	})
	fams := pgw.Scrape(t)
	for i := range targets {
		if v, _ := groupValue(fams, "m", "j", fmt.Sprintf("t%d", i)); v != rounds-1 {
			t.Errorf("t%d: m = %v, want the newest scrape's %d", i, v, rounds-1)
		}
	}
}

// TestShardsTypeConflictAgainstGateway: two shard drains push into a gateway without
// its consistency check, and a target of each shard exposes the family m, one as a
// gauge, the other as a counter. Neither drain has seen the other's target when it
// pushes its own: one of the two is refused (type_conflict, counted by its drain),
// and the gateway's /metrics answers 200 throughout, serving the other.
func TestShardsTypeConflictAgainstGateway(t *testing.T) {
	srv := stantest.Start(t)
	pgw := pgwtest.Start(t, pgwtest.WithoutConsistencyCheck())
	var instances [2]string // a target of each shard
	for i := 0; instances[0] == "" || instances[1] == ""; i++ {
		inst := fmt.Sprintf("t%d", i)
		if sh := drain.ShardOf("j", inst, 2); instances[sh] == "" {
			instances[sh] = inst
		}
	}
	bodies := [2]string{"# TYPE m gauge\nm 1\n", "# TYPE m counter\nm 1\n"}
	scrapes := func(rounds int, t0 time.Time) {
		var msgs [][]byte
		for r := range rounds {
			for sh := range 2 {
				msgs = append(msgs, encode(t, "j", instances[sh], t0.Add(time.Duration(r)*time.Second), bodies[sh]))
			}
		}
		publish(t, srv, "prometheus", msgs...)
	}
	failures := watchGateway(t, pgw)
	var drains []*drainProc
	for i := range 2 {
		mon := freeAddr(t)
		cfg := strings.Replace(drainConfig(srv, pgw.URL(), mon, ""), "client_id: drain1",
			fmt.Sprintf("client_id: drain%d\n  durable_name: central\n  shards: 2\n  shard: %d", i, i), 1)
		drains = append(drains, startDrain(t, writeConfig(t, cfg), mon))
	}
	// Both drains read the gateway at start, when it held neither target.
	const rounds = 3
	scrapes(rounds, time.Now().Add(-rounds*time.Second))
	refused := func(i int) float64 {
		return drains[i].metric("prometheus_streams_drain_pushgateway_pushes_refused_total", "reason", "type_conflict")
	}
	served := func() map[string]*dto.MetricFamily { return pgw.Scrape(t) }
	var winner int
	waitFor(t, 30*time.Second, "one target's m served, the other's refused", func() bool {
		for sh := range 2 {
			_, mine := groupValue(served(), "m", "j", instances[sh])
			_, other := groupValue(served(), "m", "j", instances[1-sh])
			if mine && !other && refused(1-sh) > 0 {
				winner = sh
				return true
			}
		}
		return false
	})
	// Later scrapes of both: the loser stays refused.
	before := refused(1 - winner)
	scrapes(1, time.Now())
	waitFor(t, 30*time.Second, "the loser's next scrape refused", func() bool { return refused(1-winner) > before })
	if n := refused(winner); n != 0 {
		t.Errorf("the drain of the served target refused %v pushes", n)
	}
	f := served()["m"]
	if want := []dto.MetricType{dto.MetricType_GAUGE, dto.MetricType_COUNTER}[winner]; f.GetType() != want || len(f.GetMetric()) != 1 {
		t.Errorf("the gateway serves %v, want %s's %v alone", f, instances[winner], want)
	}
	if n := failures(); n > 0 {
		t.Errorf("the gateway's /metrics failed %d times", n)
	}
}

// watchGateway scrapes the gateway's /metrics, as Prometheus would, every 10ms until
// the test ends, and returns how many answers so far were not 200.
func watchGateway(t *testing.T, pgw *pgwtest.Server) func() int {
	t.Helper()
	var mu sync.Mutex
	failed := 0
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			resp, err := http.Get(pgw.URL() + "/metrics")
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		wg.Wait()
	})
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return failed
	}
}

// TestShardsAgainstPrometheus: two shard drains share a backlog and write it to
// Prometheus. Every scrape of every target lands, each at its own time, in order: at
// every scrape's time each target's value is that scrape's.
func TestShardsAgainstPrometheus(t *testing.T) {
	srv := stantest.Start(t)
	prom := promtest.Start(t, promtest.Options{Binary: promtest.Prometheus2})
	const targets, rounds = 30, 6
	t0 := time.Now().Add(-time.Duration(rounds+1) * time.Second).Truncate(time.Second)
	backlog(t, srv, targets, rounds, t0)
	var drains []*drainProc
	for i := range 2 {
		mon := freeAddr(t)
		cfg := fmt.Sprintf(`verbose: true
max_age: 30s
receiver_stream:
  cluster_id: %s
  urls: %s
  client_id: drain%d
  durable_name: central
  shards: 2
  shard: %d
  max_inflight: 16
remote_write:
  - url: %s
monitor:
  listen: %s
`, srv.ClusterID(), srv.URL(), i, i, prom.RemoteWriteURL(), mon)
		drains = append(drains, startDrain(t, writeConfig(t, cfg), mon))
	}
	last := t0.Add(time.Duration(rounds-1) * time.Second)
	prom.WaitFor(t, fmt.Sprintf(`count(timestamp(m{job="j"}) == %d)`, last.Unix()), func(v model.Vector) bool {
		return len(v) == 1 && int(v[0].Value) == targets
	})
	for i, d := range drains {
		if v := d.metric("prometheus_streams_drain_messages_superseded_total"); v != 0 {
			t.Errorf("drain %d: %v messages superseded: a history sink takes every scrape", i, v)
		}
	}
	// Every scrape is there: count_over_time sees rounds samples per target.
	v, err := prom.Query(context.Background(), fmt.Sprintf(`count_over_time(m{job="j"}[%ds])`, rounds+2), last.Add(time.Second))
	if err != nil || len(v) != targets {
		t.Fatalf("count_over_time: %v (%v)", v, err)
	}
	for _, s := range v {
		if int(s.Value) != rounds {
			t.Errorf("%s: %v samples, want one per scrape (%d)", s.Metric, s.Value, rounds)
		}
	}
	m, err := prom.QueryRange(context.Background(), `m{job="j"}`, t0, last.Add(500*time.Millisecond), 500*time.Millisecond)
	if err != nil || len(m) != targets {
		t.Fatalf("m over the backlog: %d series, %v", len(m), err)
	}
	for _, s := range m {
		for _, p := range s.Values {
			if round := p.Timestamp.Time().Sub(t0) / time.Second; float64(p.Value) != float64(round) {
				t.Errorf("%s at +%v = %v, want that scrape's %d", s.Metric, p.Timestamp.Time().Sub(t0), p.Value, round)
			}
		}
	}
}
