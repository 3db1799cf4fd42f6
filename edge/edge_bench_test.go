package edge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prometheus-streams/prometheus-streams/edge/scrape"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
	"github.com/prometheus-streams/prometheus-streams/stream"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

const (
	benchTargets = 100
	benchSeries  = 1000
)

// benchTopic is the channel, or the subjects' prefix, the benchmark publishes to.
const benchTopic = "prometheus"

// benchFleet serves benchTargets loopback targets of ~benchSeries series each (node_exporter
// samples, replicated) and returns their URLs and a run scraping them within 54 s.
func benchFleet(b *testing.B) (urls []string, o Options) {
	body := fixture.Replicate(b, fixture.NodeExporter, benchSeries)
	ts := fixture.Serve(b, body, fixture.TextContentType)
	// Every run opens its connections, as scrape-once does (a process per run); kept
	// alive, each run's would stay open until the file descriptors run out.
	ts.Config.SetKeepAlivesEnabled(false)
	job := testJob("node")
	urls = make([]string, benchTargets)
	for i := range benchTargets {
		urls[i] = fmt.Sprintf("%s/metrics/%d", ts.URL, i)
		job.Targets = append(job.Targets, scrape.Target{Name: fmt.Sprintf("t%d", i), URL: urls[i]})
	}
	return urls, Options{RunTimeout: 54 * time.Second, Jobs: []*Job{job}}
}

// BenchmarkRun measures a whole scrape-once run (scrape, validate, encode, publish, wait
// for acks; connection set-up included) over 100 loopback targets of ~1,000 series,
// beside its floor, a bare concurrent HTTP fetch of the same targets in the same process,
// and on each transport, against in-process servers and the same data:
//
//   - stan-memory: NATS Streaming with a memory store;
//   - stan-file: NATS Streaming with a file store (its default: fsync on every write);
//   - jetstream-file: JetStream with a file store (its default: fsync every 2 minutes),
//     a subject per target and a Nats-Msg-Id per message.
//
// Besides ns/op, each transport reports the bytes its server stores per scrape (a
// message), as the server accounts them: the channel's bytes/msgs from NATS Streaming's
// monitoring, the stream's bytes/msgs from JetStream's stream info. The last
// sub-benchmark runs stan-file and jetstream-file alternately, so that both see the same
// machine load (a shared machine's load drifts between sub-benchmarks), and reports
// JetStream over STAN as ratios of wall time per run and of bytes stored per scrape.
func BenchmarkRun(b *testing.B) {
	urls, run := benchFleet(b)
	stanMem := stantest.Start(b)
	// One server serves both file-store transports.
	both := stantest.Start(b, stantest.WithFileStore(b.TempDir()), stantest.WithJetStream(b.TempDir()))

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

	codec, err := envelope.NewCodec()
	if err != nil {
		b.Fatal(err)
	}
	defer codec.Close()
	transports := []*benchTransport{
		{name: "stan-memory", stream: stream.Options{ClusterID: stanMem.ClusterID(), URLs: []string{stanMem.URL()}, Topic: benchTopic},
			stored: func(b *testing.B) (uint64, uint64) { return stanStored(b, stanMem) }},
		{name: "stan-file", stream: stream.Options{ClusterID: both.ClusterID(), URLs: []string{both.URL()}, Topic: benchTopic},
			stored: func(b *testing.B) (uint64, uint64) { return stanStored(b, both) }},
		{name: "jetstream-file", stream: stream.Options{
			Transport: stream.TransportJetStream, Stream: "PROMETHEUS", Create: true, URLs: []string{both.URL()}, Topic: benchTopic,
			MaxAge: 2 * time.Minute, DuplicateWindow: 2 * time.Minute,
		},
			stored: func(b *testing.B) (uint64, uint64) { return jetStreamStored(b, both.URL(), "PROMETHEUS") }},
	}
	for _, tr := range transports {
		tr.init(b, codec, run)
		b.Run("scrape-once/transport="+tr.name, func(b *testing.B) {
			var wire int
			for b.Loop() {
				wire = tr.run(b)
			}
			b.ReportMetric(float64(benchTargets*benchSeries)*float64(b.N)/b.Elapsed().Seconds(), "series/s")
			b.ReportMetric(float64(wire)/benchTargets, "wire-bytes/scrape")
			b.ReportMetric(tr.storedPerScrape(b), "stored-bytes/scrape")
		})
	}

	stan, js := transports[1], transports[2]
	b.Run("ratio=jetstream-file:stan-file", func(b *testing.B) {
		var stanTime, jsTime time.Duration
		for b.Loop() {
			start := time.Now()
			stan.run(b)
			mid := time.Now()
			js.run(b)
			stanTime += mid.Sub(start)
			jsTime += time.Since(mid)
		}
		b.ReportMetric(float64(stanTime.Milliseconds())/float64(b.N), "stan-ms/run")
		b.ReportMetric(float64(jsTime.Milliseconds())/float64(b.N), "jetstream-ms/run")
		b.ReportMetric(float64(jsTime)/float64(stanTime), "wall-time-ratio")
		b.ReportMetric(js.storedPerScrape(b)/stan.storedPerScrape(b), "stored-bytes-ratio")
	})
}

// benchTransport is a scrape-once run on one transport.
type benchTransport struct {
	name   string
	stream stream.Options
	// stored returns the bytes and messages the server stores.
	stored func(b *testing.B) (bytes, msgs uint64)

	r   *Runner
	sel []Selected
}

func (tr *benchTransport) init(b *testing.B, codec *envelope.Codec, o Options) {
	sel, err := Select(o.Jobs, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	tr.r, tr.sel = New(o, codec, Dial(tr.stream, o), logger, "bench"), sel
}

// run runs scrape-once once and returns the bytes it published.
func (tr *benchTransport) run(b *testing.B) int {
	sum, err := tr.r.Run(context.Background(), tr.sel)
	if err != nil {
		b.Fatal(err)
	}
	if sum.Acked != benchTargets {
		b.Fatalf("%s: acked %d", tr.name, sum.Acked)
	}
	return sum.WireBytes
}

func (tr *benchTransport) storedPerScrape(b *testing.B) float64 {
	bytes, msgs := tr.stored(b)
	return float64(bytes) / float64(msgs)
}

// stanStored is what the server holds on the channel the benchmark publishes to.
func stanStored(b *testing.B, srv *stantest.Server) (bytes, msgs uint64) {
	cz, err := srv.Channel(benchTopic)
	if err != nil {
		b.Fatal(err)
	}
	return cz.Bytes, uint64(cz.Msgs)
}

// jetStreamStored is what the stream holds, from its info.
func jetStreamStored(b *testing.B, url, name string) (bytes, msgs uint64) {
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, name)
	if err != nil {
		b.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return info.State.Bytes, info.State.Msgs
}
