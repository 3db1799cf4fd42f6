package tests

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
)

// bigExposition is a real-sized large exposition, about size bytes, whose label values
// are random enough that it compresses to several times NATS's 1 MB max payload.
func bigExposition(size int) []byte {
	var b strings.Builder
	b.Grow(size + 256)
	b.WriteString("# HELP fat_series A series of a very large target.\n# TYPE fat_series gauge\n")
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; b.Len() < size; i++ {
		// Long label values (about 1 KB a series, as some exporters' info metrics have)
		// keep the series count, and so the parsing time under the race detector, modest.
		fmt.Fprintf(&b, "fat_series{id=\"%07d\",blob=\"", i)
		for range 64 {
			fmt.Fprintf(&b, "%016x", r.Uint64())
		}
		fmt.Fprintf(&b, "\"} %d\n", r.IntN(1_000_000))
	}
	return []byte(b.String())
}

// TestSplitScrapeEndToEnd: a 20 MB exposition, several times the server's 1 MB max
// payload even compressed, travels in parts on each transport and is reassembled by the
// drain: every series arrives, and the small target beside it is not held up.
func TestSplitScrapeEndToEnd(t *testing.T) {
	body := bigExposition(20 << 20)
	series := strings.Count(string(body), "\n") - 2
	big := fixture.Serve(t, body, fixture.TextContentType)
	small := fixture.ServeCapture(t, fixture.NodeExporter)
	for _, tr := range []string{"stan", "jetstream"} {
		t.Run(tr, func(t *testing.T) {
			srv := stantest.Start(t, stantest.WithJetStream(t.TempDir())) // NATS's default 1 MB max payload
			exposeAddr, mon := freeAddr(t), freeAddr(t)
			receiver := fmt.Sprintf("{cluster_id: %s, client_id: drain1, urls: '%s', topic: prometheus}", srv.ClusterID(), srv.URL())
			poller := fmt.Sprintf("{cluster_id: %s, urls: '%s', topic: prometheus}", srv.ClusterID(), srv.URL())
			if tr == "jetstream" {
				receiver = fmt.Sprintf("{transport: jetstream, stream: PROMETHEUS, create_stream: true, client_id: drain1, urls: '%s', topic: prometheus}", srv.URL())
				poller = fmt.Sprintf("{transport: jetstream, stream: PROMETHEUS, create_stream: true, urls: '%s', topic: prometheus}", srv.URL())
			}
			d := startDrain(t, writeConfig(t, fmt.Sprintf("verbose: true\nmax_age: 2m\nreceiver_stream: %s\nexpose: {listen: '%s'}\nmonitor: {listen: '%s'}\n",
				receiver, exposeAddr, mon)), mon)
			edge := writeConfig(t, fmt.Sprintf(`verbose: true
scrape_interval: 60s
poller_stream: %s
jobs:
  big:
    targets: [{name: fat, url: '%s/metrics'}]
  node:
    targets: [{name: node1, url: '%s/metrics'}]
`, poller, big.URL, small.URL))
			r := runBin(t, "scrape-once", "-c", edge)
			if r.code != 0 {
				t.Fatalf("scrape-once: exit %d\n%s", r.code, r.stderr)
			}
			mustContain(t, "scrape-once log", r.stderr, "scrape split into parts", "split=1", "oversized=0")
			waitFor(t, 60*time.Second, "the split scrape delivered", func() bool {
				return d.metric("prometheus_streams_drain_scrapes_delivered_total", "sink", "expose") == 2
			})
			_, b := fetch(t, "http://"+exposeAddr+"/metrics", "")
			got := string(b)
			if !strings.Contains(got, `streams_scrape_up{instance="fat",job="big"} 1`) {
				t.Error("the big target is not up")
			}
			if n := strings.Count(got, "fat_series{"); n != series {
				t.Errorf("%d of the big target's %d series exposed", n, series)
			}
			if !strings.Contains(got, `node_load1{instance="node1",job="node"}`) {
				t.Error("the small target is missing")
			}
			if parts := d.metric("prometheus_streams_drain_parts_received_total"); parts < 3 {
				t.Errorf("%v parts received, want the scrape in several", parts)
			}
			if n := d.metric("prometheus_streams_drain_scrapes_assembled_total"); n != 1 {
				t.Errorf("%v scrapes assembled, want 1", n)
			}
			if held := d.metric("prometheus_streams_drain_split_bytes_held"); held != 0 {
				t.Errorf("%v bytes still held after reassembly", held)
			}
		})
	}
}
