package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

func testCapture(t *testing.T) *capture {
	t.Helper()
	c, err := parseCapture(fixture.Read(t, fixture.NodeExporter))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The counting receiver's walk over a request finds what prompb marshalled: every
// sample, under its own instance and time.
func TestWalkWriteRequest(t *testing.T) {
	c := testCapture(t)
	reqs, per, err := c.writeRequests(2, 2000)
	if err != nil {
		t.Fatal(err)
	}
	if per*c.samples > 2000 || (per+1)*c.samples <= 2000 {
		t.Fatalf("%d scrapes of %d samples per request: not as many as fit in 2000", per, c.samples)
	}
	raw, err := snappy.Decode(nil, reqs[1])
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	var stamps []int64
	if err := walkWriteRequest(raw, func(inst []byte, ts int64) {
		got[string(inst)]++
		stamps = append(stamps, ts)
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != per {
		t.Fatalf("instances %v, want %d", got, per)
	}
	for i := per; i < 2*per; i++ {
		if got[instance(i)] != c.samples {
			t.Errorf("%s: %d samples, want %d", instance(i), got[instance(i)], c.samples)
		}
	}
	for _, ts := range stamps {
		if ts != stamps[0] || ts == 0 {
			t.Fatalf("timestamps %d and %d: want one, non-zero", stamps[0], ts)
		}
	}
	if err := walkWriteRequest(raw[:len(raw)-3], func([]byte, int64) {}); err == nil {
		t.Error("a truncated request walked without error")
	}
}

func TestHistogramQuantile(t *testing.T) {
	inf := math.Inf(1)
	h := histogram{Bounds: []float64{1, 5, 15, inf}, Counts: []float64{50, 90, 100, 100}}
	for _, tc := range []struct{ q, want float64 }{
		{0.5, 1},    // the top of the first bucket
		{0.25, 0.5}, // half-way into the first, which starts at 0
		{0.7, 3},    // half-way into (1, 5]
		{0.99, 14},  // 9 of the 10 in (5, 15]
	} {
		if got := h.quantile(tc.q); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	over := histogram{Bounds: []float64{1, inf}, Counts: []float64{1, 100}}
	if got := over.quantile(0.99); !math.IsInf(got, 1) {
		t.Errorf("quantile beyond the last bound = %v, want +Inf", got)
	}
	if got := (histogram{}).quantile(0.99); !math.IsNaN(got) {
		t.Errorf("empty histogram quantile = %v, want NaN", got)
	}
	d := h.minus(histogram{Bounds: h.Bounds, Counts: []float64{50, 50, 50, 50}})
	if d.total() != 50 || d.quantile(0.5) != 3.5 {
		t.Errorf("delta %v: total %v, median %v; want 50 and 3.5", d.Counts, d.total(), d.quantile(0.5))
	}
}

// Every config the harness writes is one the drain accepts.
func TestDrainConfigsLoad(t *testing.T) {
	dir := t.TempDir()
	for name, s := range map[string]drainSetup{
		"remote_write": {MaxAge: 2 * time.Minute, Embedded: "127.0.0.1:14222", StoreDir: "memory",
			Monitor: "127.0.0.1:19898", Sink: sinkCounting, SinkURL: "http://127.0.0.1:1/api/v1/write"},
		"push_gateway": {MaxAge: time.Minute, Embedded: "127.0.0.1:14222", StoreDir: filepath.Join(dir, "stream"),
			Monitor: "127.0.0.1:19898", Sink: sinkPushGateway, SinkURL: "http://127.0.0.1:1"},
		"backlog": {MaxAge: time.Hour, StreamURL: "nats://127.0.0.1:14222", MaxInflight: 256,
			Monitor: "127.0.0.1:19898", Sink: sinkCounting, SinkURL: "http://127.0.0.1:1/api/v1/write"},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".yaml")
			if err := os.WriteFile(path, []byte(s.yaml()), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(path)
			if err == nil {
				err = cfg.RequireCentral()
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, s.yaml())
			}
			if s.MaxInflight != 0 && cfg.ReceiverStreams[0].MaxInflight != s.MaxInflight {
				t.Errorf("max_inflight %d, want %d", cfg.ReceiverStreams[0].MaxInflight, s.MaxInflight)
			}
		})
	}
}

// What the publisher sends decodes to the target and time it stands for.
func TestPublisherEnvelope(t *testing.T) {
	c := testCapture(t)
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	p := &publisher{codec: codec, body: c.body, series: c.samples}
	start := time.Now().Truncate(time.Second)
	msgs, err := p.prepare(3, start)
	if err != nil {
		t.Fatal(err)
	}
	e, err := codec.Decode(msgs[2])
	if err != nil {
		t.Fatal(err)
	}
	if e.Job != benchJob || e.Instance != instance(2) || !e.Start.Equal(start) || e.Series != c.samples || len(e.Body) != len(c.body) {
		t.Errorf("decoded %s/%s at %v, %d series, %d bytes; want %s/%s at %v, %d, %d",
			e.Job, e.Instance, e.Start, e.Series, len(e.Body), benchJob, instance(2), start, c.samples, len(c.body))
	}
}

// The drain's rate counts only the time messages were waiting for it, not the tail of a
// burst waiting in requests for batch_send_deadline.
func TestBusyRate(t *testing.T) {
	t0 := time.Now()
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	tl := []finalAt{
		{at(0), 0, 0},        // idle
		{at(1), 0, 1000},     // a burst arrives
		{at(3), 200, 1000},   // busy
		{at(6), 500, 1000},   // busy
		{at(11), 992, 1000},  // busy until here: 992 in 10 s
		{at(16), 1000, 1000}, // the last 8 waited for the deadline
		{at(20), 1000, 1000}, // idle again
	}
	if got := busyRate(tl); math.Abs(got-99.2) > 1e-9 {
		t.Errorf("busyRate = %v, want 99.2", got)
	}
	if got := busyRate(tl[:2]); got != 0 {
		t.Errorf("busyRate over 1 s of work = %v, want 0 (too short to tell)", got)
	}
}

// The catch-up check finds every way a history sink can fail a target: a scrape lost,
// cut short, out of order, sent twice, or one nobody published.
func TestArrivalsCheck(t *testing.T) {
	const per = 10
	t0 := time.Now()
	published := func(insts ...string) []sentScrape {
		var out []sentScrape
		for r := range 3 {
			for _, inst := range insts {
				out = append(out, sentScrape{instance: inst, ts: int64(1000 * (r + 1)), at: t0.Add(time.Duration(r) * time.Minute)})
			}
		}
		return out
	}
	type obs struct {
		inst string
		ts   int64
		n    int
	}
	inOrder := []obs{{"a", 1000, per}, {"b", 1000, per}, {"a", 2000, per}, {"b", 2000, 4}, {"b", 2000, 6}, {"a", 3000, per}, {"b", 3000, per}}
	for _, tc := range []struct {
		name string
		obs  []obs
		want historyCheck
	}{
		{"every scrape once, in order, one split over two requests", inOrder,
			historyCheck{Whole: 6}},
		{"one lost", []obs{{"a", 1000, per}, {"a", 3000, per}, {"b", 1000, per}, {"b", 2000, per}, {"b", 3000, per}},
			historyCheck{Whole: 5, Missing: 1}},
		{"one cut short", []obs{{"a", 1000, per}, {"a", 2000, per - 1}, {"a", 3000, per}, {"b", 1000, per}, {"b", 2000, per}, {"b", 3000, per}},
			historyCheck{Whole: 5, Partial: 1}},
		{"two swapped", []obs{{"a", 2000, per}, {"a", 1000, per}, {"a", 3000, per}, {"b", 1000, per}, {"b", 2000, per}, {"b", 3000, per}},
			historyCheck{Whole: 6, Reordered: 1}},
		{"the newest sent twice", append(slices.Clone(inOrder), obs{"b", 3000, per}),
			historyCheck{Whole: 6, Repeated: per}},
		{"an older one again after a newer", append(slices.Clone(inOrder), obs{"b", 2000, per}),
			historyCheck{Whole: 6, Repeated: per, Again: per}},
		{"one never published", append(slices.Clone(inOrder), obs{"c", 500, per}),
			historyCheck{Whole: 6, Unknown: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newArrivals(per)
			for _, o := range tc.obs {
				a.observe(o.inst, o.ts, o.n)
			}
			got := a.check(published("a", "b"))
			examples := got.Examples
			got.Examples = nil
			tc.want.Targets, tc.want.Published = 2, 6
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("check = %+v\nwant    %+v", got, tc.want)
			}
			ok := reflect.DeepEqual(tc.want, historyCheck{Targets: 2, Published: 6, Whole: 6})
			if got.ok() != ok || ok != (len(examples) == 0) {
				t.Errorf("ok() = %v with examples %q, want %v", got.ok(), examples, ok)
			}
		})
	}
}

// A scrape counts as arrived once whole; what was published after a moment is not
// asked for yet.
func TestBehind(t *testing.T) {
	t0 := time.Now()
	sent := []sentScrape{
		{"a", 1000, t0}, {"b", 1000, t0.Add(time.Second)},
		{"a", 2000, t0.Add(time.Minute)}, {"b", 2000, t0.Add(time.Minute + time.Second)},
	}
	a := newArrivals(10)
	a.observe("a", 1000, 10)
	a.observe("b", 1000, 9)
	for _, tc := range []struct {
		at   time.Time
		want int
	}{
		{t0.Add(-time.Second), 0},
		{t0, 0},
		{t0.Add(time.Second), 1}, // b's first is one sample short
		{t0.Add(2 * time.Minute), 3},
	} {
		if got := behind(a, sent, tc.at); got != tc.want {
			t.Errorf("behind at %v = %d, want %d", tc.at.Sub(t0), got, tc.want)
		}
	}
	a.observe("b", 1000, 1)
	a.observe("a", 2000, 10)
	a.observe("b", 2000, 10)
	if got := behind(a, sent, t0.Add(2*time.Minute)); got != 0 {
		t.Errorf("behind with everything arrived = %d, want 0", got)
	}
}

// The counting receiver plays an outage with 503s, and keeps the order of what it takes
// once back.
func TestReceiverOutage(t *testing.T) {
	c := testCapture(t)
	reqs, per, err := c.writeRequests(2, 2000)
	if err != nil {
		t.Fatal(err)
	}
	r, err := startReceiver()
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	r.keepHistory(c.samples)
	client := floorClient(1)
	headers := map[string]string{"Content-Encoding": "snappy", "X-Prometheus-Remote-Write-Version": "0.1.0"}
	send := func(body []byte) error {
		return post(t.Context(), client, "POST", r.URL(), "application/x-protobuf", headers, body)
	}
	r.setDown(true)
	if err := send(reqs[0]); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("post while down: %v, want a 503", err)
	}
	r.setDown(false)
	for _, body := range reqs {
		if err := send(body); err != nil {
			t.Fatal(err)
		}
	}
	if r.refused.Load() != 1 || r.requests.Load() != 2 || r.samples.Load() != int64(2*per*c.samples) {
		t.Errorf("refused %d, took %d requests of %d samples; want 1, 2, %d", r.refused.Load(), r.requests.Load(), r.samples.Load(), 2*per*c.samples)
	}
	var sent []sentScrape
	r.historyState(func(a *arrivals) {
		for inst, ta := range a.targets {
			for _, s := range ta.scrapes {
				sent = append(sent, sentScrape{instance: inst, ts: s.ts})
			}
		}
		if got := a.check(sent); !got.ok() || got.Published != 2*per {
			t.Errorf("check = %+v, want %d scrapes whole, in order", got, 2*per)
		}
	})
}

// -quick scales the catch-up's outage and max_age with the interval, unless they are
// set; -catchup-only measures the ceiling with one burst that keeps the drain busy.
func TestCatchupOptions(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		outage, maxAge time.Duration
		steps          []int
		err            bool
	}{
		{args: []string{"-catchup-only"}, outage: 10 * time.Minute, maxAge: 15 * time.Minute, steps: []int{8000}},
		{args: []string{"-catchup-only", "-quick"}, outage: 200 * time.Second, maxAge: 5 * time.Minute, steps: []int{24000}},
		{args: []string{"-catchup-only", "-quick", "-catchup-outage", "1m"}, outage: time.Minute, maxAge: 5 * time.Minute, steps: []int{24000}},
		{args: []string{"-catchup-outage", "20m"}, err: true}, // longer than max_age: scrapes would expire
		{args: []string{"-catchup-sinks", "pushgateway"}, err: true},
	} {
		o, err := parseOptions(tc.args, io.Discard)
		if tc.err {
			if err == nil {
				t.Errorf("%v: no error", tc.args)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		if o.CatchupOutage != tc.outage || o.CatchupMaxAge != tc.maxAge || !slices.Equal(o.Steps, tc.steps) ||
			!o.Catchup || o.Backlog || !slices.Equal(o.Sinks, []string{sinkCounting}) {
			t.Errorf("%v: outage %v, max_age %v, steps %v, catchup %v, backlog %v, sinks %v; want %v, %v, %v, true, false, [counting]",
				tc.args, o.CatchupOutage, o.CatchupMaxAge, o.Steps, o.Catchup, o.Backlog, o.Sinks, tc.outage, tc.maxAge, tc.steps)
		}
	}
}

// The catch-up section sets each figure beside its aim, and says when one is missed.
func TestCatchupReport(t *testing.T) {
	o, err := parseOptions([]string{"-catchup-only"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ok := &catchupResult{Sink: sinkCounting, N60: 1000, N: 1000, Steady: 2 * time.Minute, Outage: 10 * time.Minute,
		MaxAge: 15 * time.Minute, MaxInflight: 1024, Aim: catchupAim, Published: 3, Backlog: 2, CaughtUp: true,
		CatchUp: 20 * time.Second, Delivered: 2, Mem: catchupMemory{Peak: 100 << 20},
		Check: historyCheck{Targets: 1, Published: 3, Whole: 3}, PromSamples: math.NaN()}
	slow := *ok
	slow.Sink, slow.CatchUp, slow.Mem.Peak = sinkPrometheus, 3*time.Minute, 600<<20
	slow.Check = historyCheck{Targets: 1, Published: 3, Whole: 2, Missing: 1, Examples: []string{"x: scrape at 12:00:00.000 never arrived"}}
	slow.PromSamples = 2
	r := &report{opts: o, catchup: []*catchupResult{ok, &slow}}
	var b strings.Builder
	r.writeCatchup(func(format string, a ...any) { fmt.Fprintf(&b, format, a...) })
	out := b.String()
	for _, want := range []string{
		"| caught up, from the receiver's return | ≤ 2m0s | 20s **met** | 3m0s **missed** |",
		"| drain peak RSS (VmHWM, whole run) | < 500 MiB | 100 MiB **met** | 600 MiB **missed** |",
		"3 of 3 (1 targets) **met**",
		"2 of 3 (1 targets) **missed**; missing 1",
		"| scrapes Prometheus holds (samples of `streams_scrape_timestamp_seconds`) | all published | – | 2 of 3 |",
		"x: scrape at 12:00:00.000 never arrived",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
