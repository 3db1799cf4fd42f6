package tests

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/promtest"
)

// TestUTF8NamesEndToEnd: a target whose metric and label names are valid UTF-8 but
// outside the legacy character set (as Prometheus 3 reads them, quoted) reaches a real
// Prometheus 3 through scrape-once, the drain and remote write 1.0 and 2.0, every
// series of it, not only the streams_scrape_* health series.
func TestUTF8NamesEndToEnd(t *testing.T) {
	body := "# HELP \"my.requests\" Requests.\n# TYPE \"my.requests\" counter\n" +
		"{\"my.requests\",\"http.method\"=\"GET\"} 3\n" +
		"{\"température_°C\"} 21.5\n" +
		"legacy_metric{\"k8s.pod\"=\"a\"} 1\n"
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		fmt.Fprint(w, body)
	}))
	t.Cleanup(target.Close) // after the parallel subtests
	for _, message := range []string{"prometheus.WriteRequest", "io.prometheus.write.v2.Request"} {
		t.Run(message, func(t *testing.T) {
			t.Parallel()
			prom := promtest.Start(t, promtest.Options{Binary: promtest.Prometheus3, RemoteWriteV2: true})
			natsAddr, mon := freeAddr(t), freeAddr(t)
			d := startDrain(t, writeConfig(t, fmt.Sprintf(`verbose: true
max_age: 30s
embedded_stream: {listen: %s, cluster_id: central, store_dir: memory}
monitor: {listen: %s}
remote_write:
  - url: %s
    protobuf_message: %s
    queue_config: {batch_send_deadline: 0}
`, natsAddr, mon, prom.RemoteWriteURL(), message)), mon)
			_ = d
			edge := writeConfig(t, edgeConfig("nats://"+natsAddr, "central", fmt.Sprintf("  app:\n    targets:\n      - {name: app1, url: '%s/metrics'}\n", target.URL)))
			if r := runBin(t, "scrape-once", "-c", edge); r.code != 0 {
				t.Fatalf("scrape-once: exit %d\n%s", r.code, r.stderr)
			}
			prom.WaitFor(t, `streams_scrape_up{job="app"}`, func(v model.Vector) bool { return len(v) == 1 })
			for sel, want := range map[string]float64{
				`{"my.requests", "http.method"="GET", job="app"}`: 3,
				`{"température_°C", job="app"}`:                   21.5,
				`legacy_metric{"k8s.pod"="a", job="app"}`:         1,
				`streams_scrape_up{job="app"}`:                    1,
			} {
				v, err := prom.Query(context.Background(), sel, time.Time{})
				if err != nil || len(v) != 1 || v[0].Value != model.SampleValue(want) {
					t.Errorf("%s = %v (%v), want %v", sel, v, err, want)
				}
			}
		})
	}
}
