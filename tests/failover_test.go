package tests

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
)

// TestScrapeOnceFailover: with urls listing a server that accepts connections but never
// answers and a healthy one, every run publishes through the healthy one well within
// connect_timeout (nats.go tries the servers in random order: before each server got
// only a share of it, half the runs exited 69).
func TestScrapeOnceFailover(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			srv := tr.start(t)
			target := fixture.ServeCapture(t, fixture.PushGateway)
			cfg := tr.edgeConfig(srv, fmt.Sprintf("  j:\n    targets: [{name: a, url: '%s'}]\n", target.URL))
			cfg = strings.Replace(cfg, "urls: "+srv.URL(), "urls: "+stantest.Silent(t)+","+srv.URL(), 1)
			cfg = strings.Replace(cfg, "connect_timeout: 2s", "connect_timeout: 5s", 1)
			path := writeConfig(t, cfg)
			const runs = 6
			for i := range runs {
				r := runBin(t, "scrape-once", "-c", path)
				if r.code != 0 {
					t.Fatalf("run %d: exit %d after %s\n%s", i, r.code, r.elapsed, r.stderr)
				}
				// One share of connect_timeout (5s / 3) at most for the silent server.
				if r.elapsed > 4*time.Second {
					t.Errorf("run %d took %s", i, r.elapsed)
				}
			}
			if tr.jetStream() {
				if got := readStream(t, jsContext(t, srv), jsStreamName); len(got) != runs {
					t.Errorf("%d messages in the stream, want %d", len(got), runs)
				}
			} else if got := readChannel(t, srv, "prometheus"); len(got) != runs {
				t.Errorf("%d messages on the channel, want %d", len(got), runs)
			}
		})
	}
}

// TestDrainFailover: a drain whose receiver_stream lists a silent server beside a
// healthy one subscribes through the healthy one at once, every time it starts.
func TestDrainFailover(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			srv := tr.start(t)
			monitor := freeAddr(t)
			cfg := tr.drainConfig(srv, closedURL(t, "http"), monitor, "")
			cfg = strings.Replace(cfg, "urls: "+srv.URL(), "urls: "+stantest.Silent(t)+","+srv.URL()+"\n  connect_timeout: 5s", 1)
			path := writeConfig(t, cfg)
			for i := range 4 {
				d := launchDrain(t, path, monitor)
				start := time.Now()
				waitFor(t, 20*time.Second, "drain subscribed", func() bool { return d.healthz() == 200 })
				if took := time.Since(start); took > 3500*time.Millisecond {
					t.Errorf("start %d: subscribed after %s", i, took)
				}
				if code := d.stop(); code != 0 {
					t.Fatalf("start %d: drain exit %d\n%s", i, code, d.logs())
				}
			}
		})
	}
}
