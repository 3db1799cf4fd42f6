package pushgateway_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/prometheus-streams/prometheus-streams/drain"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/pgwtest"
	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/sink/pushgateway"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

const (
	benchGroups  = 20 // distinct targets the gateway holds during the benchmark
	benchWorkers = 8
)

// BenchmarkDrainIntoGateway measures the drain's throughput into a real Push Gateway
// (Debian's 1.5.1, consistency check on, holding benchGroups node_exporter-sized groups):
// messages handed to the drain, decoded, parsed, labelled and pushed, each acknowledged
// on the gateway's 2xx. Beside it, in the same run, the floor: the gateway's own ingest
// rate for raw parallel PUTs of the same bodies, pre-encoded. Compare ns/op as a ratio.
// The drain's added latency (receipt to ack) is reported as p50/p99.
func BenchmarkDrainIntoGateway(b *testing.B) {
	pgw := pgwtest.Start(b)
	body := fixture.Read(b, fixture.NodeExporter)
	series := 0
	for _, l := range bytes.Split(body, []byte("\n")) {
		if len(l) > 0 && l[0] != '#' {
			series++
		}
	}

	b.Run("floor=raw-parallel-put", func(b *testing.B) {
		// The bodies the drain would push, encoded once.
		payloads := make([][]byte, benchGroups)
		for i := range payloads {
			fams, err := exposition.Parse(body, fixture.TextContentType)
			if err != nil {
				b.Fatal(err)
			}
			exposition.Attach(fams, exposition.Target{Job: "bench", Instance: fmt.Sprint("t", i)})
			var buf bytes.Buffer
			enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeProtoDelim))
			for _, f := range fams {
				if err := enc.Encode(f); err != nil {
					b.Fatal(err)
				}
			}
			payloads[i] = buf.Bytes()
		}
		client := &http.Client{}
		jobs := make(chan int)
		var wg sync.WaitGroup
		for range benchWorkers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range jobs {
					req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("%s/metrics/job/bench/instance/t%d", pgw.URL(), i%benchGroups), bytes.NewReader(payloads[i%benchGroups]))
					req.Header.Set("Content-Type", `application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited`)
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						continue
					}
					resp.Body.Close()
					if resp.StatusCode/100 != 2 {
						b.Errorf("status %d", resp.StatusCode)
					}
				}
			}()
		}
		b.ResetTimer()
		for i := range b.N {
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "scrapes/s")
		b.ReportMetric(float64(b.N*series)/b.Elapsed().Seconds(), "series/s")
	})

	b.Run("drain", func(b *testing.B) {
		codec, err := envelope.NewCodec()
		if err != nil {
			b.Fatal(err)
		}
		defer codec.Close()
		client, err := pushgateway.New(pushgateway.Options{URL: pgw.URL()})
		if err != nil {
			b.Fatal(err)
		}
		reg := prometheus.NewRegistry()
		logger := slog.New(slog.DiscardHandler)
		snk := pushgateway.NewSink(client, "", logger, reg)
		d := drain.New(drain.Options{MaxAge: time.Hour, Workers: benchWorkers}, codec, []sink.Sink{snk}, logger, reg)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go d.Run(ctx)

		// Messages encoded up front: the stream hands the drain bytes.
		start := time.Now()
		msgs := make([][]byte, b.N)
		for i := range msgs {
			msgs[i], err = codec.Encode(&envelope.Envelope{Publisher: "bench", Job: "bench", Instance: fmt.Sprint("t", i%benchGroups),
				Start: start.Add(time.Duration(i) * time.Millisecond), Duration: time.Millisecond, HTTPStatus: 200,
				ContentType: fixture.TextContentType, Body: body, Series: series})
			if err != nil {
				b.Fatal(err)
			}
		}
		var mu sync.Mutex
		var lat []time.Duration
		b.ResetTimer()
		// A scrape interval's worth of targets at a time, as the stream delivers them:
		// handed all at once, newer scrapes would supersede queued ones and the
		// benchmark would measure coalescing, not delivery.
		for off := 0; off < b.N; off += benchGroups {
			n := min(benchGroups, b.N-off)
			var wg sync.WaitGroup
			wg.Add(n)
			for i := off; i < off+n; i++ {
				received := time.Now()
				d.Handle(msgs[i], uint64(i+1), func() error {
					mu.Lock()
					lat = append(lat, time.Since(received))
					mu.Unlock()
					wg.Done()
					return nil
				})
			}
			wg.Wait()
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "scrapes/s")
		b.ReportMetric(float64(b.N*series)/b.Elapsed().Seconds(), "series/s")
		slices.Sort(lat)
		if len(lat) > 0 {
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		}
	})
}

// BenchmarkDrainMemory reports the drain's heap while it knows 1,000 targets, each pushed
// once to a real gateway (consistency check off, so filling it stays quick).
func BenchmarkDrainMemory(b *testing.B) {
	const targets = 1000
	pgw := pgwtest.Start(b, pgwtest.WithoutConsistencyCheck())
	body := fixture.Read(b, fixture.NodeExporter)
	for range b.N {
		codec, err := envelope.NewCodec()
		if err != nil {
			b.Fatal(err)
		}
		client, err := pushgateway.New(pushgateway.Options{URL: pgw.URL()})
		if err != nil {
			b.Fatal(err)
		}
		reg := prometheus.NewRegistry()
		logger := slog.New(slog.DiscardHandler)
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		snk := pushgateway.NewSink(client, "", logger, reg)
		d := drain.New(drain.Options{MaxAge: time.Hour, Workers: benchWorkers}, codec, []sink.Sink{snk}, logger, reg)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { d.Run(ctx); close(done) }()
		var wg sync.WaitGroup
		wg.Add(targets)
		now := time.Now()
		for i := range targets {
			m, err := codec.Encode(&envelope.Envelope{Publisher: "bench", Job: "bench", Instance: fmt.Sprint("t", i),
				Start: now, Duration: time.Millisecond, HTTPStatus: 200, ContentType: fixture.TextContentType, Body: body, Series: 507})
			if err != nil {
				b.Fatal(err)
			}
			d.Handle(m, uint64(i+1), func() error { wg.Done(); return nil })
		}
		wg.Wait()
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/(1<<20), "heap-MiB/1000-targets")
		cancel()
		<-done
		codec.Close()
	}
}
