package main

import (
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/lib/envelope"
	"github.com/prometheus-streams/prometheus-streams/lib/fixture"
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
			if s.MaxInflight != 0 && cfg.ReceiverStream.MaxInflight != s.MaxInflight {
				t.Errorf("max_inflight %d, want %d", cfg.ReceiverStream.MaxInflight, s.MaxInflight)
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

// The drain's rate counts only the time messages were waiting for it.
func TestBusyRate(t *testing.T) {
	t0 := time.Now()
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	tl := []finalAt{
		{at(0), 0, 0},        // idle
		{at(1), 0, 1000},     // a burst arrives
		{at(3), 200, 1000},   // busy
		{at(6), 500, 1000},   // busy
		{at(11), 1000, 1000}, // busy until here: 1000 in 10 s
		{at(20), 1000, 1000}, // idle again
	}
	if got := busyRate(tl); math.Abs(got-100) > 1e-9 {
		t.Errorf("busyRate = %v, want 100", got)
	}
	if got := busyRate(tl[:3]); got != 0 {
		t.Errorf("busyRate over 2 s of work = %v, want 0 (too short to tell)", got)
	}
}
