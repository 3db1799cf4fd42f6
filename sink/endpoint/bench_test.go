package endpoint_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/pgwtest"
	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/sink/endpoint"
	"github.com/prometheus-streams/prometheus-streams/sink/pushgateway"
)

const (
	benchTargets = 1000
	benchSeries  = 1000 // per target, node_exporter's capture replicated
)

// benchBody is a node_exporter exposition of benchSeries series.
func benchBody(tb testing.TB) []byte { return fixture.Replicate(tb, fixture.NodeExporter, benchSeries) }

// forTargets builds the scrape of each of the benchmark's targets, parsed and labelled
// as the drain does, and hands it to fn, on as many goroutines as there are CPUs (the
// drain delivers in parallel too). The scrape is not kept: what the sinks hold is all
// that stays.
func forTargets(tb testing.TB, body []byte, start time.Time, fn func(*sink.Scrape) error) {
	tb.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, runtime.GOMAXPROCS(0))
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= benchTargets {
					return
				}
				if err := fn(scrapeOf(tb, "node", fmt.Sprintf("host-%04d:9100", i), start, body, fixture.TextContentType)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

// scraper fetches an endpoint as Prometheus would, reading the body to the end
// without decompressing it (the scraper's cost is not the server's).
type scraper struct {
	client *http.Client
}

func newScraper() *scraper {
	return &scraper{client: &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 5 * time.Minute}}
}

// scrape returns the bytes received.
func (s *scraper) scrape(tb testing.TB, url, accept string, gzip bool) int64 {
	tb.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Accept", accept)
	if gzip {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s: %s", url, resp.Status)
	}
	if gzip != (resp.Header.Get("Content-Encoding") == "gzip") {
		tb.Fatalf("GET %s: Content-Encoding %q", url, resp.Header.Get("Content-Encoding"))
	}
	return n
}

// body fetches and returns the uncompressed text response.
func (s *scraper) body(tb testing.TB, url string) []byte {
	tb.Helper()
	resp, err := s.client.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// serveCase is one way of scraping the endpoint.
type serveCase struct {
	name, accept string
	gzip         bool
}

var serveCases = []serveCase{
	{"text", acceptTextUTF8, false},
	{"text-gzip", acceptTextUTF8, true},
	{"openmetrics", acceptOpenMetrics, false},
	{"protobuf", acceptProto + ";escaping=allow-utf-8", false},
}

// BenchmarkServe measures one full scrape of the endpoint holding 1,000 targets of
// ~1,000 series each (node_exporter's capture), stamped, as a Prometheus would scrape
// it over loopback: in the text format, gzipped, in OpenMetrics and in protobuf. The
// targets are delivered with the text format only, as when neither OpenMetrics nor
// protobuf was asked for in a while: the first scrape in either, which encodes it for
// all of them, is reported apart (first-ms); later ones find it done.
func BenchmarkServe(b *testing.B) {
	h := newHarness(b, endpoint.Options{Timestamps: true, MaxAge: time.Hour, Now: coldStart(time.Now)})
	forTargets(b, benchBody(b), time.Now(), func(sc *sink.Scrape) error { return h.sink.Deliver(context.Background(), sc) })
	sc := newScraper()
	defer sc.client.CloseIdleConnections()
	first := map[string]time.Duration{}
	for _, c := range serveCases {
		b.Run(c.name, func(b *testing.B) {
			if (c.name == "openmetrics" || c.name == "protobuf") && first[c.name] == 0 {
				begin := time.Now()
				sc.scrape(b, h.srv.URL, c.accept, c.gzip)
				first[c.name] = time.Since(begin)
			}
			var n int64
			for b.Loop() {
				n = sc.scrape(b, h.srv.URL, c.accept, c.gzip)
			}
			b.ReportMetric(float64(n)/(1<<20), "MB/scrape")
			b.ReportMetric(float64(benchTargets*benchSeries)/(b.Elapsed().Seconds()/float64(b.N)), "series/s")
			if d := first[c.name]; d > 0 {
				b.ReportMetric(float64(d.Milliseconds()), "first-ms")
			}
		})
	}
}

// BenchmarkDeliver measures the sink's cost of taking one target's scrape of ~1,000
// series: the text encoding alone, and with OpenMetrics too, as while a scraper asks
// for OpenMetrics.
func BenchmarkDeliver(b *testing.B) {
	body := benchBody(b)
	for _, om := range []bool{false, true} {
		b.Run(fmt.Sprint("openmetrics=", om), func(b *testing.B) {
			o := endpoint.Options{Timestamps: true}
			if !om {
				o.Now = coldStart(time.Now)
			}
			h := newHarness(b, o)
			start := time.Now()
			base := scrapeOf(b, "node", "host:9100", start, body, fixture.TextContentType)
			ctx := context.Background()
			i := 0
			for b.Loop() {
				sc := *base
				env := *base.Envelope
				i++
				env.Start = start.Add(time.Duration(i) * time.Millisecond)
				sc.Envelope = &env
				if err := h.sink.Deliver(ctx, &sc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVsPushGateway compares the endpoint with a real Push Gateway (Debian's
// 1.5.1) holding the same 1,000 targets of ~1,000 series, one group each, pushed by the
// project's Push Gateway sink: the time for one full scrape of each (text format,
// plain and gzipped), and the memory each needs to hold the data. The gateway's is
// its resident set (VmRSS of its process, and the growth from the empty gateway); the
// sink's is the Go heap in use after a GC, the growth from before loading (the test
// process's resident set includes the test's own garbage, so it would mislead).
//
// The gateway runs with --push.disable-consistency-check (pgwtest's
// WithoutConsistencyCheck) so that loading 1,000 groups takes seconds rather than
// minutes; it does not change what a scrape of its /metrics does.
func BenchmarkVsPushGateway(b *testing.B) {
	body := benchBody(b)
	b.Log("Push Gateway started with --push.disable-consistency-check (pgwtest.WithoutConsistencyCheck), for loading speed")
	pgw := pgwtest.Start(b, pgwtest.WithoutConsistencyCheck())
	pid := pidOf(b, pgw.Addr())
	pgwBase := status(b, pid, "VmRSS")

	client, err := pushgateway.New(pushgateway.Options{URL: pgw.URL(), Timeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	push := pushgateway.NewSink(client, "", slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	start := time.Now()
	forTargets(b, body, start, func(sc *sink.Scrape) error { return push.Deliver(context.Background(), sc) })
	sc := newScraper()
	defer sc.client.CloseIdleConnections()
	// Without the consistency check the gateway answers a push before it applies it:
	// wait until /metrics has every group.
	var pgwHeap int64
	for {
		body := sc.body(b, pgw.URL()+"/metrics")
		if n := bytes.Count(body, []byte("\npush_time_seconds{")); n == benchTargets {
			pgwHeap = ownGauge(b, body, "go_memstats_heap_inuse_bytes")
			break
		}
	}
	pgwRSS := status(b, pid, "VmRSS")

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	// Text only first, as for a scraper that never asks for OpenMetrics.
	h := newHarness(b, endpoint.Options{Timestamps: true, MaxAge: time.Hour, Now: coldStart(time.Now)})
	forTargets(b, body, start, func(sc *sink.Scrape) error { return h.sink.Deliver(context.Background(), sc) })
	runtime.GC()
	runtime.ReadMemStats(&after)
	heapText := int64(after.HeapInuse) - int64(before.HeapInuse)
	// OpenMetrics too, as once a Prometheus asks for it.
	sc.scrape(b, h.srv.URL, acceptOpenMetrics, false)
	runtime.GC()
	runtime.ReadMemStats(&after)
	heapBoth := int64(after.HeapInuse) - int64(before.HeapInuse)

	type result struct {
		perScrape time.Duration
		bytes     int64
	}
	results := map[string]result{}
	for _, c := range serveCases[:2] {
		for _, srv := range []struct{ name, url string }{{"pushgateway", pgw.URL() + "/metrics"}, {"expose", h.srv.URL}} {
			name := srv.name + "/" + c.name
			b.Run(name, func(b *testing.B) {
				var n int64
				for b.Loop() {
					n = sc.scrape(b, srv.url, acceptText, c.gzip)
				}
				r := result{b.Elapsed() / time.Duration(b.N), n}
				results[name] = r
				b.ReportMetric(float64(n)/(1<<20), "MB/scrape")
				if g, ok := results["pushgateway/"+c.name]; ok && srv.name == "expose" {
					b.ReportMetric(float64(g.perScrape)/float64(r.perScrape), "x-faster-than-pgw")
				}
				if c.name == "text" {
					switch srv.name {
					case "pushgateway":
						b.ReportMetric(float64(pgwRSS-pgwBase)/(1<<20), "RSS-growth-MiB")
					case "expose":
						b.ReportMetric(float64(heapText)/(1<<20), "heap-growth-MiB")
						b.ReportMetric(float64(pgwRSS-pgwBase)/float64(heapText), "x-less-memory-than-pgw")
					}
				}
			})
		}
	}
	pgwPeak := status(b, pid, "VmHWM")

	mib := func(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
	var out strings.Builder
	fmt.Fprintf(&out, "%d targets × %d series (node_exporter), snk samples stamped, gateway's not\n", benchTargets, benchSeries)
	fmt.Fprintf(&out, "%-28s %14s %14s %8s\n", "scrape (loopback, text)", "pushgateway", "expose", "ratio")
	for _, c := range serveCases[:2] {
		g, e := results["pushgateway/"+c.name], results["expose/"+c.name]
		if e.perScrape == 0 || g.perScrape == 0 {
			continue // filtered out with -bench
		}
		fmt.Fprintf(&out, "%-28s %14v %14v %7.1fx\n", c.name+" time", g.perScrape.Round(time.Millisecond), e.perScrape.Round(time.Millisecond), float64(g.perScrape)/float64(e.perScrape))
		fmt.Fprintf(&out, "%-28s %14s %14s\n", c.name+" size", mib(g.bytes), mib(e.bytes))
	}
	fmt.Fprintf(&out, "%-28s %14s %14s %7.1fx\n", "memory: growth from empty", mib(pgwRSS-pgwBase)+" RSS", mib(heapText)+" heap", float64(pgwRSS-pgwBase)/float64(heapText))
	fmt.Fprintf(&out, "%-28s %14s %14s %7.1fx\n", "  with OpenMetrics held too", "", mib(heapBoth)+" heap", float64(pgwRSS-pgwBase)/float64(heapBoth))
	fmt.Fprintf(&out, "%-28s %14s %14s %7.1fx\n", "gateway's own heap_inuse", mib(pgwHeap)+" heap", mib(heapText)+" heap", float64(pgwHeap)/float64(heapText))
	fmt.Fprintf(&out, "%-28s %14s\n", "gateway RSS, total / peak", mib(pgwRSS)+" / "+mib(pgwPeak))
	fmt.Fprintf(&out, "(gateway: its process's VmRSS; its go_memstats_heap_inuse_bytes as it reported it, no GC forced;\n"+
		" expose: this process's HeapInuse after runtime.GC, growth from before loading: live data, without GC headroom)\n")
	if testing.Verbose() {
		b.Log("\n" + out.String())
	} else {
		fmt.Print(out.String()) // a parent benchmark's log is shown with -v only
	}
}

// ownGauge returns the value of an unlabelled gauge in a text exposition: the
// gateway's own, not that of a group it holds.
func ownGauge(tb testing.TB, body []byte, name string) int64 {
	tb.Helper()
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				tb.Fatalf("%s: %v", line, err)
			}
			return int64(f)
		}
	}
	tb.Fatalf("no %s in the gateway's exposition", name)
	return 0
}

// pidOf finds the Push Gateway pgwtest started on addr: a child of this process
// whose command line sets that listen address (pgwtest does not export its process).
func pidOf(tb testing.TB, addr string) int {
	tb.Helper()
	want := "--web.listen-address=" + addr
	entries, err := os.ReadDir("/proc")
	if err != nil {
		tb.Skipf("no /proc to read the gateway's memory from: %v", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !slices.Contains(strings.Split(string(cmdline), "\x00"), want) {
			continue
		}
		if procStatus(tb, pid, "PPid") == strconv.Itoa(os.Getpid()) {
			return pid
		}
	}
	tb.Fatalf("no child process listening on %s", addr)
	return 0
}

// status returns a field of /proc/<pid>/status, in bytes (the memory fields are in kB).
func status(tb testing.TB, pid int, field string) int64 {
	tb.Helper()
	v := procStatus(tb, pid, field)
	n, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
	if err != nil {
		tb.Fatalf("/proc/%d/status %s: %v", pid, field, err)
	}
	return n << 10
}

// procStatus returns a field of /proc/<pid>/status as it is written.
func procStatus(tb testing.TB, pid int, field string) string {
	tb.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), ":"); ok && k == field {
			return strings.TrimSpace(v)
		}
	}
	tb.Fatalf("/proc/%d/status has no %s", pid, field)
	return ""
}
