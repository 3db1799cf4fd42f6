package tests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/promtest"
)

// TestRemoteWriteEndToEnd: scrape-once → the drain's embedded stream → remote write into
// a real Prometheus, in 1.0 (Debian's Prometheus 2) and 2.0 (Prometheus 3), checked by
// PromQL: the capture's values under the target's labels, at the scrape's time; then a
// target whose scrape fails goes stale at once.
func TestRemoteWriteEndToEnd(t *testing.T) {
	for _, tc := range []struct {
		name    string
		binary  promtest.Binary
		message string
	}{
		{"prometheus2-v1", promtest.Prometheus2, "prometheus.WriteRequest"},
		{"prometheus3-v2", promtest.Prometheus3, "io.prometheus.write.v2.Request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			prom := promtest.Start(t, promtest.Options{Binary: tc.binary, RemoteWriteV2: tc.binary == promtest.Prometheus3})
			natsAddr, mon := freeAddr(t), freeAddr(t)
			node := fixture.ServeCapture(t, fixture.NodeExporter)
			down := closedURL(t, "http")
			d := startDrain(t, writeConfig(t, fmt.Sprintf(`verbose: true
max_age: 30s
embedded_stream: {listen: %s, cluster_id: central, store_dir: memory}
monitor: {listen: %s}
remote_write:
  - url: %s
    protobuf_message: %s
`, natsAddr, mon, prom.RemoteWriteURL(), tc.message)), mon)

			edge := writeConfig(t, edgeConfig("nats://"+natsAddr, "central", fmt.Sprintf(`  node:
    labels: {dc: dc1}
    targets:
      - {name: node1, url: '%s/metrics'}
      - {name: gone1, url: '%s/metrics'}
`, node.URL, node.URL)))
			if r := runBin(t, "scrape-once", "-c", edge); r.code != 0 {
				t.Fatalf("scrape-once: exit %d\n%s", r.code, r.stderr)
			}
			nodeSeries := samplesIn(t, fixture.Read(t, fixture.NodeExporter))
			want := valueOf(parseCapture(t, fixture.NodeExporter), "node_load1")
			v := prom.WaitFor(t, `node_load1{job="node", instance="node1", dc="dc1"}`, func(v model.Vector) bool { return len(v) == 1 })
			if float64(v[0].Value) != want {
				t.Errorf("node_load1 = %v, want the capture's %v", v[0].Value, want)
			}
			ctx := context.Background()
			n, err := prom.Query(ctx, `count({job="node", instance="node1", __name__!~"streams_scrape_.*"})`, time.Time{})
			if err != nil || len(n) != 1 || int(n[0].Value) != nodeSeries {
				t.Errorf("node1's series: %v %v, want %d", n, err, nodeSeries)
			}
			// The sample's time is the scrape's start at the edge.
			ts, err := prom.Query(ctx, `timestamp(node_load1{instance="node1"}) - streams_scrape_timestamp_seconds{instance="node1"}`, time.Time{})
			if err != nil || len(ts) != 1 || ts[0].Value > 0.001 || ts[0].Value < -0.001 {
				t.Errorf("sample time minus scrape time = %v %v, want 0", ts, err)
			}

			// The second run: gone1's target is down. Its series end at its failed scrape.
			edge2 := writeConfig(t, edgeConfig("nats://"+natsAddr, "central", fmt.Sprintf(`  node:
    labels: {dc: dc1}
    targets:
      - {name: node1, url: '%s/metrics'}
      - {name: gone1, url: '%s'}
`, node.URL, down)))
			if r := runBin(t, "scrape-once", "-c", edge2); r.code != 0 {
				t.Fatalf("scrape-once: exit %d\n%s", r.code, r.stderr)
			}
			prom.WaitFor(t, `streams_scrape_up{instance="gone1"} == 0`, func(v model.Vector) bool { return len(v) == 1 })
			if v, err := prom.Query(ctx, `node_load1{instance="gone1"}`, time.Time{}); err != nil || len(v) != 0 {
				t.Errorf("node_load1 of the failed target = %v %v, want nothing: stale at its failed scrape", v, err)
			}
			if v, err := prom.Query(ctx, `node_load1{instance="node1"}`, time.Time{}); err != nil || len(v) != 1 {
				t.Errorf("node_load1 of the good target = %v %v", v, err)
			}
			// The drain's /targets page says the same.
			type pageTarget struct {
				Instance, State string
				Sinks           []struct{ Sink, Fate string }
			}
			var page struct{ Targets []pageTarget }
			states := map[string]string{}
			waitFor(t, 10*time.Second, "/targets to show node1 up and gone1 down", func() bool {
				_, b := fetch(t, "http://"+mon+"/targets?job=node&format=json", "")
				if err := json.Unmarshal(b, &page); err != nil {
					t.Fatalf("/targets: %v\n%s", err, b)
				}
				clear(states)
				for _, tg := range page.Targets {
					states[tg.Instance] = tg.State
				}
				return states["node1"] == "up" && states["gone1"] == "down" && len(states) == 2
			})
			for _, tg := range page.Targets {
				if len(tg.Sinks) != 1 || !strings.HasPrefix(tg.Sinks[0].Sink, "remote_write:") || tg.Sinks[0].Fate != "delivered" {
					t.Errorf("/targets: %s sinks %+v, want delivered to the remote write", tg.Instance, tg.Sinks)
				}
			}
			if got := d.metric("prometheus_streams_remote_write_stale_markers_total"); got < float64(nodeSeries) {
				t.Errorf("stale markers sent: %v, want at least gone1's %d series", got, nodeSeries)
			}
		})
	}
}

// samplesIn counts the samples Prometheus's own parser reads from a text exposition.
func samplesIn(t *testing.T, body []byte) int {
	t.Helper()
	p := textparse.NewPromParser(body, labels.NewSymbolTable(), false)
	n := 0
	for {
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		if e == textparse.EntrySeries {
			n++
		}
	}
}
