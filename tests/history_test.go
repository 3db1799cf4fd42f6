package tests

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/pgwtest"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/promtest"
)

// blinkingTarget serves scrape_count, the number of times it was scraped, so that every
// scrape is identifiable wherever it lands; and blink, a series it stops exposing from
// its vanishAt-th scrape on.
type blinkingTarget struct {
	mu       sync.Mutex
	n        int
	vanishAt int
	srv      *httptest.Server
}

func startBlinkingTarget(t *testing.T, vanishAt int) *blinkingTarget {
	t.Helper()
	c := &blinkingTarget{vanishAt: vanishAt}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		c.mu.Lock()
		c.n++
		n := c.n
		c.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "# TYPE scrape_count gauge\nscrape_count %d\n", n)
		if n < c.vanishAt {
			fmt.Fprint(w, "# TYPE blink gauge\nblink 1\n")
		}
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *blinkingTarget) served() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// TestHistoryThroughOutage: scrape-once → stream → drain → remote write into a real
// Prometheus that is stopped for several scrapes and started again. Every scrape
// published arrives, each at its own time, in order, with a staleness marker where the
// series that vanished during the outage ended (not at the end of it); on both
// transports, with and without a SIGKILL of the drain while it holds the backlog, and
// with the Push Gateway beside remote_write (which ends on each target's newest scrape).
func TestHistoryThroughOutage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tr      transport
		binary  promtest.Binary
		gateway bool
		kill    bool
	}{
		{"stan-prometheus2-gateway", stanTransport, promtest.Prometheus2, true, false},
		{"stan-prometheus3v2-kill", stanTransport, promtest.Prometheus3, false, true},
		{"jetstream-prometheus3v2-gateway", jsTransport, promtest.Prometheus3, true, false},
		{"jetstream-prometheus2-kill", jsTransport, promtest.Prometheus2, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			historyThroughOutage(t, tc.tr, tc.binary, tc.gateway, tc.kill)
		})
	}
}

func historyThroughOutage(t *testing.T, tr transport, binary promtest.Binary, gateway, kill bool) {
	const before, during, after = 3, 4, 3
	srv := tr.start(t)
	v2 := binary == promtest.Prometheus3
	prom := promtest.Start(t, promtest.Options{Binary: binary, RemoteWriteV2: v2})
	message := "prometheus.WriteRequest"
	if v2 {
		message = "io.prometheus.write.v2.Request"
	}
	pgwURL := "http://127.0.0.1:1" // replaced below, or the section removed
	var pgw *pgwtest.Server
	if gateway {
		pgw = pgwtest.Start(t)
		pgwURL = pgw.URL()
	}
	mon := freeAddr(t)
	cfg := tr.drainConfig(srv, pgwURL, mon, fmt.Sprintf("remote_write:\n  - url: %s\n    protobuf_message: %s\n", prom.RemoteWriteURL(), message))
	if !gateway {
		cfg = strings.Replace(cfg, "push_gateway:\n  url: "+pgwURL+"\n", "", 1)
	}
	path := writeConfig(t, cfg)
	d := startDrain(t, path, mon)

	const targets = 3
	var counting []*blinkingTarget
	jobs := "  count:\n    targets:\n"
	for i := range targets {
		c := startBlinkingTarget(t, before+2)
		counting = append(counting, c)
		jobs += fmt.Sprintf("      - {name: c%d, url: '%s/metrics'}\n", i, c.srv.URL)
	}
	edge := writeConfig(t, tr.edgeConfig(srv, jobs))
	run := func() {
		t.Helper()
		if r := runBin(t, "scrape-once", "-c", edge); r.code != 0 {
			t.Fatalf("scrape-once: exit %d\n%s", r.code, r.stderr)
		}
	}
	for range before {
		run()
	}
	prom.WaitFor(t, fmt.Sprintf(`count(scrape_count{job="count"} == %d)`, before), func(v model.Vector) bool {
		return len(v) == 1 && int(v[0].Value) == targets
	})
	prom.Stop()
	for range during {
		run()
	}
	if kill {
		// The drain holds the backlog unacknowledged; the next one must take it up in
		// order, while newer scrapes arrive at once.
		waitFor(t, 10*time.Second, "the drain to hold the backlog", func() bool {
			return d.metric("prometheus_streams_drain_messages_received_total") >= (before+during)*targets
		})
		d.kill()
		prom.Restart(t)
		d = startDrain(t, path, mon)
	} else {
		prom.Restart(t)
	}
	for range after {
		run()
	}
	total := before + during + after
	prom.WaitFor(t, fmt.Sprintf(`count(scrape_count{job="count"} == %d)`, total), func(v model.Vector) bool {
		return len(v) == 1 && int(v[0].Value) == targets
	})

	ctx := context.Background()
	for i, c := range counting {
		inst := fmt.Sprintf("c%d", i)
		if c.served() != total {
			t.Fatalf("%s served %d scrapes, want %d", inst, c.served(), total)
		}
		m, err := prom.Samples(ctx, fmt.Sprintf(`scrape_count{job="count", instance=%q}`, inst), time.Now().Add(time.Minute), 10*time.Minute)
		if err != nil || len(m) != 1 {
			t.Fatalf("%s: samples %v (%v)", inst, m, err)
		}
		var got []int
		at := map[int]model.Time{}
		for _, p := range m[0].Values {
			got = append(got, int(p.Value))
			at[int(p.Value)] = p.Timestamp
		}
		for k := range total {
			if k >= len(got) || got[k] != k+1 {
				t.Fatalf("%s: history %v, want every scrape 1 to %d in order", inst, got, total)
			}
		}
		// blink vanished at scrape before+2, during the outage: stale from then on.
		gone, stayed := at[before+2], at[before+1]
		if v, err := prom.Query(ctx, fmt.Sprintf(`blink{instance=%q}`, inst), stayed.Time().Add(time.Millisecond)); err != nil || len(v) != 1 {
			t.Errorf("%s: blink just before it vanished: %v (%v), want it", inst, v, err)
		}
		if v, err := prom.Query(ctx, fmt.Sprintf(`blink{instance=%q}`, inst), gone.Time().Add(time.Millisecond)); err != nil || len(v) != 0 {
			t.Errorf("%s: blink at the scrape it vanished in: %v (%v), want nothing (marked stale there)", inst, v, err)
		}
	}
	if v := d.metric("prometheus_streams_drain_messages_superseded_total"); v != 0 {
		t.Errorf("%v messages superseded: the history sink takes every scrape", v)
	}
	if gateway {
		waitFor(t, 20*time.Second, "the gateway to hold every target's newest scrape", func() bool {
			fams := pgw.Scrape(t)
			for i := range targets {
				if v, ok := groupValue(fams, "scrape_count", "count", fmt.Sprintf("c%d", i)); !ok || int(v) != total {
					return false
				}
			}
			return true
		})
	}
}
