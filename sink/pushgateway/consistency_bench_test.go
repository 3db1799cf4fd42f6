package pushgateway

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/pgwtest"
	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// nodePush returns what the sink pushes for one scrape of the captured node_exporter:
// its families, labelled, and the health series.
func nodePush(b *testing.B, instance string) []*dto.MetricFamily {
	b.Helper()
	fams, err := exposition.Parse(fixture.Read(b, fixture.NodeExporter), fixture.TextContentType)
	if err != nil {
		b.Fatal(err)
	}
	tg := exposition.Target{Job: "node", Instance: instance}
	exposition.Attach(fams, tg)
	return append(fams, exposition.Health(tg, exposition.Outcome{Up: true, Start: time.Now(), Duration: time.Millisecond, Samples: 507})...)
}

// BenchmarkConsistencyCheck compares, in one run, what checking a push of a
// node_exporter-sized group costs the sink (in-process, per push) with what it costs
// the gateway: its push rate with the check and without, holding 100 such groups.
// "full" is the whole check of a push whose families the sink's registry holds (the
// steady state; claims.go), "claims-uncached" the same with the registry looked up for
// every family, as after another claim was lost.
// The "ratio" sub-benchmark reports the figures as ratios; run the whole benchmark
// (-bench ConsistencyCheck) for it to have them.
func BenchmarkConsistencyCheck(b *testing.B) {
	sinkNs := map[string]float64{}
	for _, held := range []int{100, 1000} {
		for _, what := range []string{"full", "claims-uncached", "ledger-only"} {
			name := fmt.Sprintf("sink/held=%d/%s", held, what)
			b.Run(name, func(b *testing.B) {
				x := newLedger()
				fams := nodePush(b, "bench")
				paths := make([]string, held)
				for i := range paths {
					paths[i] = Grouping{{"job", "node"}, {"instance", fmt.Sprint("t", i)}}.Path()
					res, _, err := x.reserve(paths[i], paths[i], fams)
					if err != nil {
						b.Fatal(err)
					}
					x.commit(paths[i], res)
				}
				for _, f := range x.groups[paths[0]].shapes[0].fams {
					x.claims[famKey{f.name, f.typ}] = &claim{vouched: true}
				}
				gk := Grouping{{"job", "node"}, {"instance", "t0"}}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					// A target pushes its next scrape: same families, its own group.
					p := paths[i%held]
					i++
					if what != "ledger-only" {
						if err := checkSeries(fams, gk, x.seed, true); err != nil {
							b.Fatal(err)
						}
					}
					res, _, err := x.reserve(p, p, fams)
					if err != nil {
						b.Fatal(err)
					}
					if what == "claims-uncached" {
						x.claimsGen++
					}
					if what != "ledger-only" {
						if keys := x.unvouched(res); len(keys) > 0 {
							b.Fatalf("unvouched: %v", keys)
						}
					}
					x.commit(p, res)
				}
				sinkNs[name] = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			})
		}
	}

	const resident = 100
	gatewayNs := map[bool]float64{}
	for _, checked := range []bool{true, false} {
		b.Run(fmt.Sprintf("gateway/checked=%v/held=%d", checked, resident), func(b *testing.B) {
			var opts []pgwtest.Option
			if !checked {
				opts = append(opts, pgwtest.WithoutConsistencyCheck())
			}
			s := pgwtest.Start(b, opts...)
			c, err := New(Options{URL: s.URL(), Timeout: time.Minute})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			for i := range resident {
				g := Grouping{{"job", "node"}, {"instance", fmt.Sprint("resident-", i)}}
				if err := c.Push(ctx, g, nodePush(b, g[1].Value)); err != nil {
					b.Fatal(err)
				}
			}
			g := Grouping{{"job", "node"}, {"instance", "bench"}}
			fams := nodePush(b, "bench")
			for b.Loop() {
				if err := c.Push(ctx, g, fams); err != nil {
					b.Fatal(err)
				}
			}
			gatewayNs[checked] = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pushes/s")
		})
	}

	b.Run("ratio", func(b *testing.B) {
		for b.Loop() {
		}
		sink := sinkNs["sink/held=1000/full"]
		if sink == 0 || gatewayNs[true] == 0 || gatewayNs[false] == 0 {
			b.Skip("needs the other sub-benchmarks of this run")
		}
		check := gatewayNs[true] - gatewayNs[false]
		b.ReportMetric(sink/1e3, "sink-check-µs/push@1000")
		b.ReportMetric(check/1e6, "gateway-check-ms/push@100")
		b.ReportMetric(check/sink, "gateway-check@100/sink-check@1000")
		b.ReportMetric(gatewayNs[true]/gatewayNs[false], "gateway-push-time-checked/unchecked@100")
		b.ReportMetric(sinkNs["sink/held=1000/full"]/sinkNs["sink/held=100/full"], "sink-check@1000/sink-check@100")
	})
}

// nodeScrape is a scrape of the captured node_exporter as the drain hands it to the
// sink, with extra families.
func nodeScrape(b *testing.B, instance string, start time.Time, extra ...*dto.MetricFamily) *sink.Scrape {
	b.Helper()
	fams, err := exposition.Parse(fixture.Read(b, fixture.NodeExporter), fixture.TextContentType)
	if err != nil {
		b.Fatal(err)
	}
	fams = append(fams, extra...)
	tg := exposition.Target{Job: "node", Instance: instance}
	exposition.Attach(fams, tg)
	return &sink.Scrape{
		Envelope: &envelope.Envelope{Job: "node", Instance: instance, Start: start},
		Target:   tg,
		Families: fams,
		Health:   exposition.Health(tg, exposition.Outcome{Up: true, Start: start, Duration: time.Millisecond, Samples: 507}),
	}
}

// BenchmarkClaimRound measures what the sink's claims (claims.go) cost a push into a
// gateway without its consistency check that holds held node_exporter-sized groups:
// "known" pushes a target's next scrape, its families claimed already (the steady
// state: the HTTP push, plus a status request per second at most); "new-family" pushes
// one with a family new to the gateway each time, which takes a claim round (write the
// registry, read the whole gateway, decide). The difference is a round's cost.
func BenchmarkClaimRound(b *testing.B) {
	for _, held := range []int{100, 1000} {
		s := pgwtest.Start(b, pgwtest.WithoutConsistencyCheck())
		c, err := New(Options{URL: s.URL(), Timeout: time.Minute, ListTimeout: 10 * time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		var wg sync.WaitGroup
		next := make(chan int)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					g := Grouping{{"job", "node"}, {"instance", fmt.Sprint("resident-", i)}}
					if err := c.Push(ctx, g, nodePush(b, g[1].Value)); err != nil {
						b.Error(err)
					}
				}
			}()
		}
		for i := range held {
			next <- i
		}
		close(next)
		wg.Wait()
		snk := NewSink(c, "", slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err := snk.Load(ctx); err != nil {
			b.Fatal(err)
		}
		// The target's first push claims its families: a round.
		start := time.Now()
		if err := snk.Deliver(ctx, nodeScrape(b, "bench", start)); err != nil {
			b.Fatal(err)
		}
		for _, what := range []string{"known", "new-family"} {
			b.Run(fmt.Sprintf("held=%d/%s", held, what), func(b *testing.B) {
				i := 0
				for b.Loop() {
					i++
					start = start.Add(time.Second)
					var extra []*dto.MetricFamily
					if what == "new-family" {
						extra = append(extra, gauge(fmt.Sprintf("bench_new_%d", i)))
					}
					if err := snk.Deliver(ctx, nodeScrape(b, "bench", start, extra...)); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		s.Stop()
	}
}
