package edge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/lib/envelope"
	"github.com/prometheus-streams/prometheus-streams/lib/fixture"
	"github.com/prometheus-streams/prometheus-streams/lib/stantest"
	"github.com/prometheus-streams/prometheus-streams/lib/stream"
)

const (
	benchTargets = 100
	benchSeries  = 1000
)

// benchFleet serves benchTargets loopback targets of ~benchSeries series each (node_exporter
// samples, replicated) and returns a config scraping them into srv.
func benchFleet(b *testing.B, srv *stantest.Server) (*config.Config, []string) {
	body := fixture.Replicate(b, fixture.NodeExporter, benchSeries)
	ts := fixture.Serve(b, body, fixture.TextContentType)
	var targets string
	urls := make([]string, benchTargets)
	for i := range benchTargets {
		urls[i] = fmt.Sprintf("%s/metrics/%d", ts.URL, i)
		targets += fmt.Sprintf("      - {name: t%d, url: '%s'}\n", i, urls[i])
	}
	cfg, err := config.Parse([]byte(fmt.Sprintf(`scrape_interval: 60s
poller_stream: {cluster_id: %s, urls: '%s'}
jobs:
  node:
    targets:
%s`, srv.ClusterID(), srv.URL(), targets)))
	if err != nil {
		b.Fatal(err)
	}
	return cfg, urls
}

// BenchmarkRun measures a whole scrape-once run (scrape, validate, encode, publish, wait
// for acks; connection set-up included) over 100 loopback targets of ~1,000 series against
// an in-process NATS Streaming server, beside its floor: a bare concurrent HTTP fetch of
// the same targets in the same process. Compare the two ns/op as a ratio.
func BenchmarkRun(b *testing.B) {
	srv := stantest.Start(b)
	cfg, urls := benchFleet(b, srv)
	sel, err := Select(cfg, nil, nil)
	if err != nil {
		b.Fatal(err)
	}

	b.Run("floor=bare-http-fetch", func(b *testing.B) {
		client := &http.Client{}
		for b.Loop() {
			var wg sync.WaitGroup
			for _, u := range urls {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := client.Get(u)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}()
			}
			wg.Wait()
		}
		b.ReportMetric(float64(benchTargets*benchSeries)*float64(b.N)/b.Elapsed().Seconds(), "series/s")
	})

	b.Run("scrape-once", func(b *testing.B) {
		codec, err := envelope.NewCodec()
		if err != nil {
			b.Fatal(err)
		}
		defer codec.Close()
		dial := func(ctx context.Context) (Conn, error) {
			return stream.DialSTAN(ctx, stream.STANOptions{
				URLs: cfg.PollerStream.URLs, ClusterID: cfg.PollerStream.ClusterID,
				ClientID: stream.ClientID("bench", "edge"),
			})
		}
		r := New(cfg, codec, dial, slog.New(slog.DiscardHandler), "bench")
		var wire int
		for b.Loop() {
			sum, err := r.Run(context.Background(), sel)
			if err != nil {
				b.Fatal(err)
			}
			if sum.Acked != benchTargets {
				b.Fatalf("acked %d", sum.Acked)
			}
			wire = sum.WireBytes
		}
		b.ReportMetric(float64(benchTargets*benchSeries)*float64(b.N)/b.Elapsed().Seconds(), "series/s")
		b.ReportMetric(float64(wire)/benchTargets, "wire-bytes/target")
	})
}
