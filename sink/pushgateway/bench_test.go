package pushgateway_test

import (
	"bytes"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/pgwtest"
	"github.com/prometheus-streams/prometheus-streams/sink/pushgateway"
)

// nodeExporter is the captured node_exporter scrape as families.
func nodeExporter(b *testing.B) ([]*dto.MetricFamily, int) {
	b.Helper()
	fams := families(b, string(fixture.Read(b, fixture.NodeExporter)))
	series := 0
	for _, f := range fams {
		series += len(f.GetMetric())
	}
	return fams, series
}

// benchGateways are the gateway set-ups both benchmarks run against: the
// consistency check makes every push gather all the gateway holds, so the
// number of groups already there ("resident") matters.
var benchGateways = []struct {
	name      string
	unchecked bool
	resident  int
}{
	{"checked/resident=0", false, 0},
	{"checked/resident=100", false, 100},
	{"unchecked/resident=100", true, 100},
}

// parallelism is goroutines per GOMAXPROCS: pushes wait on the network and on
// the gateway, so more are in flight than there are CPUs, as in the drain.
const parallelism = 4

func startBenchGateway(b *testing.B, unchecked bool, resident int, fams []*dto.MetricFamily) *pgwtest.Server {
	b.Helper()
	var opts []pgwtest.Option
	if unchecked {
		opts = append(opts, pgwtest.WithoutConsistencyCheck())
	}
	s := pgwtest.Start(b, opts...)
	// Seeding slows as the gateway fills: each checked push gathers all of it.
	c, err := pushgateway.New(pushgateway.Options{URL: s.URL(), Timeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	for i := range resident {
		g := pushgateway.Grouping{{"job", "node"}, {"instance", fmt.Sprintf("resident-%d:9100", i)}}
		if err := c.Push(ctx, g, fams); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

func reportPushes(b *testing.B, series int) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pushes/s")
	b.ReportMetric(float64(series), "series/push")
}

// BenchmarkPush pushes a node_exporter-sized group through Client.Push, each
// goroutine replacing its own group, as the drain does for its targets.
func BenchmarkPush(b *testing.B) {
	fams, series := nodeExporter(b)
	for _, gw := range benchGateways {
		b.Run(gw.name, func(b *testing.B) {
			s := startBenchGateway(b, gw.unchecked, gw.resident, fams)
			c, err := pushgateway.New(pushgateway.Options{URL: s.URL(), Timeout: time.Minute})
			if err != nil {
				b.Fatal(err)
			}
			var next atomic.Int64
			b.SetParallelism(parallelism)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				g := pushgateway.Grouping{{"job", "node"}, {"instance", fmt.Sprintf("bench-%d:9100", next.Add(1))}}
				for pb.Next() {
					if err := c.Push(ctx, g, fams); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportPushes(b, series)
		})
	}
}

// BenchmarkPushRaw is the floor under BenchmarkPush: the same group, encoded
// once, PUT with a bare http.Client.
func BenchmarkPushRaw(b *testing.B) {
	fams, series := nodeExporter(b)
	var body bytes.Buffer
	enc := expfmt.NewEncoder(&body, expfmt.FmtProtoDelim)
	for _, f := range fams {
		if err := enc.Encode(f); err != nil {
			b.Fatal(err)
		}
	}
	for _, gw := range benchGateways {
		b.Run(gw.name, func(b *testing.B) {
			s := startBenchGateway(b, gw.unchecked, gw.resident, fams)
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer hc.CloseIdleConnections()
			var next atomic.Int64
			b.SetParallelism(parallelism)
			b.SetBytes(int64(body.Len()))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				url := fmt.Sprintf("%s/metrics/job/node/instance/bench-%d:9100", s.URL(), next.Add(1))
				for pb.Next() {
					req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(body.Bytes()))
					if err != nil {
						b.Error(err)
						return
					}
					req.Header.Set("Content-Type", protoType)
					resp, err := hc.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_ = resp.Body.Close()
					if resp.StatusCode/100 != 2 {
						b.Errorf("PUT: %s", resp.Status)
						return
					}
				}
			})
			reportPushes(b, series)
		})
	}
}

// BenchmarkGroups lists a gateway of 100 node_exporter-sized groups, in full
// and keeping one family, as a sweep of stale groups does.
func BenchmarkGroups(b *testing.B) {
	fams, _ := nodeExporter(b)
	s := startBenchGateway(b, true, 100, fams)
	c, err := pushgateway.New(pushgateway.Options{URL: s.URL(), Timeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name     string
		families []string
	}{
		{"all", nil},
		{"one_family", []string{"node_boot_time_seconds"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				gs, err := c.Groups(ctx, bc.families...)
				if err != nil {
					b.Fatal(err)
				}
				if len(gs) != 100 {
					b.Fatalf("%d groups", len(gs))
				}
			}
		})
	}
}
