package pushgateway_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/pgwtest"
	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/sink/pushgateway"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// scrapeOf builds what the drain hands a sink for a scrape of job "j" that yielded fams.
func scrapeOf(instance string, start time.Time, fams []*dto.MetricFamily, honor bool) *sink.Scrape {
	tg := exposition.Target{Job: "j", Instance: instance, HonorLabels: honor}
	exposition.Attach(fams, tg)
	return &sink.Scrape{
		Envelope: &envelope.Envelope{Job: "j", Instance: instance, Start: start},
		Target:   tg,
		Families: fams,
		Health:   exposition.Health(tg, exposition.Outcome{Up: true, Start: start, Duration: time.Millisecond, Samples: 1}),
	}
}

// parsed parses a text exposition as the drain does.
func parsed(t testing.TB, body string) []*dto.MetricFamily {
	t.Helper()
	fams, err := exposition.Parse([]byte(body), "text/plain; version=0.0.4")
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// sinkWith returns a sink on url registering its metrics on reg.
func sinkWith(t testing.TB, url string, reg prometheus.Registerer) *pushgateway.Sink {
	t.Helper()
	c, err := pushgateway.New(pushgateway.Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	return pushgateway.NewSink(c, "", slog.New(slog.DiscardHandler), reg)
}

// refusedCount reads prometheus_streams_drain_pushgateway_pushes_refused_total{reason}.
func refusedCount(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "prometheus_streams_drain_pushgateway_pushes_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelsOf(m)["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no refused counter for reason %q", reason)
	return 0
}

// served scrapes the gateway's /metrics as Prometheus would, reporting its status
// rather than failing on a 500.
func served(t *testing.T, pgw *pgwtest.Server) int {
	t.Helper()
	status, _ := pgw.Do(t, http.MethodGet, "/metrics", "", nil)
	return status
}

// holds waits until the gateway's listing shows the group of instance with the scrape
// of start: an unchecked gateway answers a push before applying it.
func holds(t *testing.T, c *pushgateway.Client, instance string, start time.Time) {
	t.Helper()
	want := float64(start.UnixNano()) / 1e9
	eventually(t, fmt.Sprintf("group %s applied", instance), func() bool {
		gs, err := c.Groups(ctx, exposition.HealthTimestamp)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range gs {
			f := g.Families[exposition.HealthTimestamp]
			if g.Grouping["instance"] == instance && len(f.Metrics) > 0 && f.Metrics[0].Value == want {
				return true
			}
		}
		return false
	})
}

// TestSinkRefusesTypeConflict: on a gateway without its own check, the sink refuses a
// family whose type differs from another target's, the gateway keeps serving the first,
// and once the first target's group is swept the other type is taken.
func TestSinkRefusesTypeConflict(t *testing.T) {
	pgw := pgwtest.Start(t, pgwtest.WithoutConsistencyCheck())
	c := newClient(t, pgw.URL())
	reg := prometheus.NewRegistry()
	s := sinkWith(t, pgw.URL(), reg)
	now := time.Now()
	old := now.Add(-2 * time.Minute)

	if err := s.Deliver(ctx, scrapeOf("a", old, parsed(t, "# TYPE shared counter\nshared 1\n"), false)); err != nil {
		t.Fatal(err)
	}
	err := s.Deliver(ctx, scrapeOf("b", now, parsed(t, "# TYPE shared gauge\nshared 2\n"), false))
	var ie *pushgateway.InconsistentError
	if !errors.Is(err, sink.ErrRejected) || !errors.As(err, &ie) || ie.Reason != pushgateway.ReasonTypeConflict {
		t.Fatalf("conflicting push: %v, want a type conflict", err)
	}
	for _, want := range []string{`"shared"`, "gauge here", "counter in", `{job="j",instance="a"}`, `push {job="j",instance="b"}`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if n := refusedCount(t, reg, pushgateway.ReasonTypeConflict); n != 1 {
		t.Errorf("refused{reason=type_conflict} = %v", n)
	}
	holds(t, c, "a", old)
	if st := served(t, pgw); st != http.StatusOK {
		t.Fatalf("GET /metrics: %d", st)
	}
	if f := pgw.Scrape(t)["shared"]; f.GetType() != dto.MetricType_COUNTER || len(f.GetMetric()) != 1 {
		t.Fatalf("gateway serves %v, want target a's counter alone", f)
	}

	// The first target's scrapes stop: a sweep deletes its group, and with it its
	// claim on the family.
	if err := s.Sweep(ctx, now, time.Minute); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stale group deleted", func() bool {
		_, ok := value(t, pgw, "shared", "a")
		return !ok
	})
	if err := s.Deliver(ctx, scrapeOf("b", now.Add(time.Second), parsed(t, "# TYPE shared gauge\nshared 2\n"), false)); err != nil {
		t.Fatalf("after the counter's group went: %v", err)
	}
	holds(t, c, "b", now.Add(time.Second))
	if f := pgw.Scrape(t)["shared"]; f.GetType() != dto.MetricType_GAUGE {
		t.Errorf("gateway serves %v, want the gauge", f)
	}
}

// TestSinkConsistencyRace: many targets push a family new to the gateway at once, half
// of them as a gauge and half as a counter. Exactly one type gets in.
func TestSinkConsistencyRace(t *testing.T) {
	pgw := pgwtest.Start(t, pgwtest.WithoutConsistencyCheck())
	c := newClient(t, pgw.URL())
	s := newSink(t, pgw.URL())
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	const targets = 24
	for round := range 3 {
		name := fmt.Sprintf("race_%d", round)
		start := time.Now()
		types := map[bool]string{false: "gauge", true: "counter"}
		accepted := map[string]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for i := range targets {
			typ := types[i%2 == 1]
			sc := scrapeOf(fmt.Sprint("r", i), start, parsed(t, fmt.Sprintf("# TYPE %s %s\n%s %d\n", name, typ, name, i)), false)
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				err := s.Deliver(ctx, sc)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					accepted[typ]++
				case errors.Is(err, pushgateway.ErrInconsistent) && errors.Is(err, sink.ErrRejected):
				default:
					t.Errorf("%s: %v", typ, err)
				}
			}()
		}
		close(gate)
		wg.Wait()
		if len(accepted) != 1 {
			t.Fatalf("round %d: accepted %v: want exactly one type", round, accepted)
		}
		var winner string
		var n int
		for typ, k := range accepted {
			winner, n = typ, k
		}
		eventually(t, "the accepted pushes applied", func() bool {
			gs, err := c.Groups(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			held := 0
			for _, g := range gs {
				if _, ok := g.Families[name]; ok {
					held++
				}
			}
			return held == n
		})
		if st := served(t, pgw); st != http.StatusOK {
			t.Fatalf("round %d: GET /metrics: %d", round, st)
		}
		if f := pgw.Scrape(t)[name]; !strings.EqualFold(f.GetType().String(), winner) || len(f.GetMetric()) != n {
			t.Errorf("round %d: gateway serves %v, want %d %ss", round, f, n, winner)
		}
	}
}

// TestSinkLoadRebuildsLedger: a new sink (a restarted drain) learns the families of the
// groups it owns from the gateway, with Load or before its first push.
func TestSinkLoadRebuildsLedger(t *testing.T) {
	pgw := pgwtest.Start(t, pgwtest.WithoutConsistencyCheck())
	c := newClient(t, pgw.URL())
	now := time.Now()
	first := newSink(t, pgw.URL())
	if err := first.Deliver(ctx, scrapeOf("a", now, parsed(t, "# TYPE loaded counter\nloaded 1\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"), false)); err != nil {
		t.Fatal(err)
	}
	holds(t, c, "a", now)

	loaded := newSink(t, pgw.URL())
	if err := loaded.Load(ctx); err != nil {
		t.Fatal(err)
	}
	lazy := newSink(t, pgw.URL())
	for name, s := range map[string]*pushgateway.Sink{"after Load": loaded, "without Load": lazy} {
		err := s.Deliver(ctx, scrapeOf("b", now, parsed(t, "# TYPE loaded gauge\nloaded 2\n"), false))
		if !errors.Is(err, sink.ErrRejected) || !strings.Contains(err.Error(), `{job="j",instance="a"}`) {
			t.Errorf("%s: type conflict with the loaded group: %v", name, err)
		}
		err = s.Deliver(ctx, scrapeOf("b", now, parsed(t, "# TYPE h_count gauge\nh_count 2\n"), false))
		if !errors.Is(err, pushgateway.ErrInconsistent) {
			t.Errorf("%s: name collision with the loaded histogram: %v", name, err)
		}
	}
	if err := loaded.Deliver(ctx, scrapeOf("b", now, parsed(t, "# TYPE loaded counter\nloaded 2\n"), false)); err != nil {
		t.Errorf("the same type: %v", err)
	}
}

// gatewayCase is a sequence of pushes; refused says, per push, what Push Gateway 1.5.1
// with its consistency check does with it.
type gatewayCase struct {
	name    string
	pushes  []casePush
	refused []bool
	reason  string // the snk's reason for the refused push
}

type casePush struct {
	instance string
	text     string                     // a text exposition, or
	fams     func() []*dto.MetricFamily // families built by hand (what text cannot say)
	honor    bool                       // the target's honor_labels
}

func (p casePush) families(t testing.TB) []*dto.MetricFamily {
	if p.fams != nil {
		return p.fams()
	}
	return parsed(t, p.text)
}

const hist = "# TYPE foo histogram\nfoo_bucket{le=\"+Inf\"} 1\nfoo_sum 1\nfoo_count 1\n"
const summ = "# TYPE foo summary\nfoo_sum 1\nfoo_count 1\n"

func pair(a, b string) []casePush {
	return []casePush{{instance: "a", text: a}, {instance: "b", text: b}}
}

func one(text string) []casePush { return []casePush{{instance: "a", text: text}} }

func handMade(f *dto.MetricFamily) []casePush {
	return []casePush{{instance: "a", fams: func() []*dto.MetricFamily {
		return []*dto.MetricFamily{proto.Clone(f).(*dto.MetricFamily)}
	}}}
}

func lp(name, value string) *dto.LabelPair {
	return &dto.LabelPair{Name: proto.String(name), Value: proto.String(value)}
}

var gatewayCases = []gatewayCase{
	{"type differs", pair("# TYPE foo gauge\nfoo 1\n", "# TYPE foo counter\nfoo 1\n"), []bool{false, true}, pushgateway.ReasonTypeConflict},
	{"untyped beside gauge", pair("foo 1\n", "# TYPE foo gauge\nfoo 1\n"), []bool{false, true}, pushgateway.ReasonTypeConflict},
	{"help differs", pair("# HELP foo one\n# TYPE foo gauge\nfoo 1\n", "# HELP foo two\n# TYPE foo gauge\nfoo 1\n"), []bool{false, false}, ""},
	{"label names differ", pair("foo{x=\"1\"} 1\n", "foo{y=\"1\"} 1\n"), []bool{false, false}, ""},
	{"the same series in two groups", pair("foo{x=\"1\"} 1\n", "foo{x=\"1\"} 1\n"), []bool{false, false}, ""},
	{"histogram, then its _count", pair(hist, "# TYPE foo_count gauge\nfoo_count 1\n"), []bool{false, true}, pushgateway.ReasonNameCollision},
	{"a _count, then the histogram", pair("# TYPE foo_count gauge\nfoo_count 1\n", hist), []bool{false, true}, pushgateway.ReasonNameCollision},
	{"histogram beside its _bucket", pair(hist, "# TYPE foo_bucket gauge\nfoo_bucket 1\n"), []bool{false, true}, pushgateway.ReasonNameCollision},
	{"histogram beside its _sum", pair(hist, "foo_sum 1\n"), []bool{false, true}, pushgateway.ReasonNameCollision},
	{"histogram beside a histogram _count", pair(hist, "# TYPE foo_count histogram\nfoo_count_bucket{le=\"+Inf\"} 1\nfoo_count_sum 1\nfoo_count_count 1\n"), []bool{false, true}, pushgateway.ReasonNameCollision},
	{"summary beside its _count", pair(summ, "# TYPE foo_count counter\nfoo_count 1\n"), []bool{false, true}, pushgateway.ReasonNameCollision},
	{"summary beside a _bucket", pair(summ, "# TYPE foo_bucket gauge\nfoo_bucket 1\n"), []bool{false, false}, ""},
	{"summary beside a _total", pair(summ, "# TYPE foo_total counter\nfoo_total 1\n"), []bool{false, false}, ""},
	{"counter beside a _total", pair("# TYPE foo counter\nfoo 1\n", "# TYPE foo_total counter\nfoo_total 1\n"), []bool{false, false}, ""},
	{"gauge beside a _created", pair("# TYPE foo gauge\nfoo 1\n", "# TYPE foo_created gauge\nfoo_created 1\n"), []bool{false, false}, ""},
	{"another type in the same group", []casePush{{instance: "a", text: "# TYPE foo gauge\nfoo 1\n"}, {instance: "a", text: "# TYPE foo counter\nfoo 1\n"}}, []bool{false, false}, ""},
	{"a series twice", one("foo{x=\"1\"} 1\nfoo{x=\"1\"} 2\n"), []bool{true}, pushgateway.ReasonDuplicateSeries},
	{"series alike once the gateway sets instance", []casePush{{instance: "a", text: "foo{instance=\"x\"} 1\nfoo{instance=\"y\"} 2\n", honor: true}}, []bool{true}, pushgateway.ReasonDuplicateSeries},
	{"a reserved label name", one("foo{__x=\"1\"} 1\n"), []bool{true}, pushgateway.ReasonInvalidSeries},
	{"the gateway's own family, another type", one("# TYPE go_goroutines counter\ngo_goroutines 1\n"), []bool{true}, pushgateway.ReasonTypeConflict},
	{"the gateway's own family, untyped", one("process_open_fds 1\n"), []bool{true}, pushgateway.ReasonTypeConflict},
	{"the gateway's own family, another help", one("# HELP go_goroutines mine\n# TYPE go_goroutines gauge\ngo_goroutines 1\n"), []bool{false}, ""},
	{"the gateway's push handler family, another help", one("# HELP pushgateway_http_requests_total mine\n# TYPE pushgateway_http_requests_total counter\npushgateway_http_requests_total 1\n"), []bool{true}, pushgateway.ReasonHelpConflict},
	{"the gateway's push handler family, its help", one("# HELP pushgateway_http_requests_total Total HTTP requests processed by the Pushgateway, excluding scrapes.\n# TYPE pushgateway_http_requests_total counter\npushgateway_http_requests_total 1\n"), []bool{false}, ""},
	{"the _count of the gateway's own summary", one("# TYPE go_gc_duration_seconds_count gauge\ngo_gc_duration_seconds_count 1\n"), []bool{true}, pushgateway.ReasonNameCollision},
	{"push_time_seconds of another type", one("# TYPE push_time_seconds counter\npush_time_seconds 1\n"), []bool{false}, ""},
	{"push_failure_time_seconds of another type, new group", one("# TYPE push_failure_time_seconds counter\npush_failure_time_seconds 1\n"), []bool{false}, ""},
	{"push_failure_time_seconds of another type, existing group", []casePush{
		{instance: "a", text: "x 1\n"}, {instance: "b", text: "x 1\n"},
		{instance: "a", text: "# TYPE push_failure_time_seconds counter\npush_failure_time_seconds 1\n"},
	}, []bool{false, false, true}, pushgateway.ReasonTypeConflict},
	{"push_failure_time_seconds of another type beside the registries", []casePush{
		{instance: "a", text: "x 1\n"},
		{instance: "a", text: "# TYPE push_failure_time_seconds counter\npush_failure_time_seconds 1\n"},
		{instance: "b", text: "x 1\n"},
	}, []bool{false, true, false}, pushgateway.ReasonTypeConflict},
	{"the registries' family of another type", one("# TYPE prometheus_streams_family_claimed_timestamp_seconds counter\nprometheus_streams_family_claimed_timestamp_seconds 1\n"), []bool{true}, pushgateway.ReasonTypeConflict},
	{"push_failure_time_seconds series alike, existing group", []casePush{
		{instance: "a", text: "x 1\n"},
		{instance: "a", text: "# TYPE push_failure_time_seconds gauge\npush_failure_time_seconds{job=\"p\"} 1\npush_failure_time_seconds{job=\"q\"} 1\n", honor: true},
	}, []bool{false, true}, pushgateway.ReasonDuplicateSeries},
	{"a summary with a quantile label", handMade(&dto.MetricFamily{Name: proto.String("foo"), Type: dto.MetricType_SUMMARY.Enum(), Metric: []*dto.Metric{
		{Label: []*dto.LabelPair{lp("quantile", "x")}, Summary: &dto.Summary{SampleCount: proto.Uint64(1), SampleSum: proto.Float64(1)}},
	}}), []bool{true}, pushgateway.ReasonInvalidSeries},
	{"a label value that is not UTF-8", handMade(&dto.MetricFamily{Name: proto.String("foo"), Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{
		{Label: []*dto.LabelPair{lp("x", "\xff")}, Gauge: &dto.Gauge{Value: proto.Float64(1)}},
	}}), []bool{true}, pushgateway.ReasonInvalidSeries},
	{"a value of another type", handMade(&dto.MetricFamily{Name: proto.String("foo"), Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{
		{Counter: &dto.Counter{Value: proto.Float64(1)}},
	}}), []bool{true}, pushgateway.ReasonInvalidSeries},
	{"two labels of one name", handMade(&dto.MetricFamily{Name: proto.String("foo"), Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{
		{Label: []*dto.LabelPair{lp("x", "1"), lp("x", "2")}, Gauge: &dto.Gauge{Value: proto.Float64(1)}},
	}}), []bool{true}, pushgateway.ReasonInvalidSeries},
	{"a histogram and its _count in one push", []casePush{{instance: "a", fams: func() []*dto.MetricFamily {
		// Text cannot say it (the parser takes foo_count for the histogram's).
		var fams []*dto.MetricFamily
		for _, text := range []string{hist, "# TYPE foo_count gauge\nfoo_count 1\n"} {
			f, err := exposition.Parse([]byte(text), "text/plain; version=0.0.4")
			if err != nil {
				panic(err)
			}
			fams = append(fams, f...)
		}
		return fams
	}}}, []bool{true}, pushgateway.ReasonNameCollision},
	// Native histograms, which the gateway takes in a protobuf push, are histograms to
	// its check.
	{"native histogram, then its _count", []casePush{nativePush("a", false), {instance: "b", text: "# TYPE foo_count gauge\nfoo_count 1\n"}}, []bool{false, true}, pushgateway.ReasonNameCollision},
	{"a _bucket, then the native histogram", []casePush{{instance: "a", text: "# TYPE foo_bucket gauge\nfoo_bucket 1\n"}, nativePush("b", false)}, []bool{false, true}, pushgateway.ReasonNameCollision},
	{"native histogram, then a gauge of its name", []casePush{nativePush("a", false), {instance: "b", text: "# TYPE foo gauge\nfoo 1\n"}}, []bool{false, true}, pushgateway.ReasonTypeConflict},
	{"native beside classic histogram", []casePush{nativePush("a", false), {instance: "b", text: hist}}, []bool{false, false}, ""},
	{"float native beside integer native", []casePush{nativePush("a", true), nativePush("b", false)}, []bool{false, false}, ""},
	{"a native histogram series twice", []casePush{{instance: "a", fams: func() []*dto.MetricFamily {
		f := nativeFoo(false)
		f.Metric = append(f.Metric, proto.Clone(f.Metric[0]).(*dto.Metric))
		return []*dto.MetricFamily{f}
	}}}, []bool{true}, pushgateway.ReasonDuplicateSeries},
}

// nativeFoo is a native histogram family foo, with integer or float counts.
func nativeFoo(float bool) *dto.MetricFamily {
	h := &dto.Histogram{SampleSum: proto.Float64(3), Schema: proto.Int32(3), ZeroThreshold: proto.Float64(1e-128),
		PositiveSpan: []*dto.BucketSpan{{Offset: proto.Int32(2), Length: proto.Uint32(3)}}}
	if float {
		h.SampleCountFloat, h.ZeroCountFloat, h.PositiveCount = proto.Float64(10), proto.Float64(1), []float64{2, 3, 4}
	} else {
		h.SampleCount, h.ZeroCount, h.PositiveDelta = proto.Uint64(10), proto.Uint64(1), []int64{2, 1, 1}
	}
	return &dto.MetricFamily{Name: proto.String("foo"), Type: dto.MetricType_HISTOGRAM.Enum(), Metric: []*dto.Metric{{Histogram: h}}}
}

func nativePush(instance string, float bool) casePush {
	return casePush{instance: instance, fams: func() []*dto.MetricFamily { return []*dto.MetricFamily{nativeFoo(float)} }}
}

// TestSinkMatchesGatewayCheck pushes every case to a gateway with its consistency check
// on, directly, and through the sink to one with the check off: the sink refuses what
// the gateway refuses, no more, no less, and the unchecked gateway's /metrics stays
// valid. On the unchecked gateway the sink keeps a registry of the families it claims
// (a group of job prometheus_streams_families): the checked gateway holds one alike.
func TestSinkMatchesGatewayCheck(t *testing.T) {
	checked := pgwtest.Start(t)
	unchecked := pgwtest.Start(t, pgwtest.WithoutConsistencyCheck())
	cc, uc := newClient(t, checked.URL()), newClient(t, unchecked.URL())
	// The gateway's push handler families appear with its first push, and the check
	// gathers them from then on.
	if err := cc.Push(ctx, pushgateway.Grouping{{"job", "warm-up"}}, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range gatewayCases {
		t.Run(tc.name, func(t *testing.T) {
			defer wipe(t, cc)
			defer wipe(t, uc)
			reg := prometheus.NewRegistry()
			s := sinkWith(t, unchecked.URL(), reg)
			registry := pushgateway.Grouping{{"job", pushgateway.ClaimsJob}, {"instance", "stand-in"}}
			if err := cc.Push(ctx, registry, registryFamilies(t, "gauge", "x", 1)); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for i, p := range tc.pushes {
				at := start.Add(time.Duration(i) * time.Second)
				direct := scrapeOf(p.instance, at, p.families(t), p.honor)
				err := cc.Push(ctx, pushgateway.Grouping{{"job", "j"}, {"instance", p.instance}}, append(direct.Families, direct.Health...))
				if err != nil && !errors.Is(err, pushgateway.ErrRejected) {
					t.Fatal(err)
				}
				if got := err != nil; got != tc.refused[i] {
					t.Errorf("push %d: the checking gateway refused it: %v (%v), the case says %v", i, got, err, tc.refused[i])
				}
				err = s.Deliver(ctx, scrapeOf(p.instance, at, p.families(t), p.honor))
				if err != nil && !errors.Is(err, sink.ErrRejected) {
					t.Fatal(err)
				}
				if got := err != nil; got != tc.refused[i] {
					t.Errorf("push %d: the snk refused it: %v (%v), the case says %v", i, got, err, tc.refused[i])
				}
				var ie *pushgateway.InconsistentError
				if err != nil && (!errors.As(err, &ie) || ie.Reason != tc.reason) {
					t.Errorf("push %d: %v, want an InconsistentError of reason %q", i, err, tc.reason)
				}
				if err == nil {
					holds(t, uc, p.instance, at)
				}
			}
			if st := served(t, unchecked); st != http.StatusOK {
				t.Errorf("the unchecked gateway's /metrics: %d", st)
			}
			if tc.reason != "" && refusedCount(t, reg, tc.reason) != 1 {
				t.Errorf("refused{reason=%q} not counted once", tc.reason)
			}
		})
	}
}

// registryFamilies is a drain's registry claiming a family of a type at a time.
func registryFamilies(t testing.TB, typ, family string, at float64) []*dto.MetricFamily {
	t.Helper()
	return parsed(t, fmt.Sprintf("# TYPE %s gauge\n%s{family=%q,type=%q} %v\n", pushgateway.ClaimFamily, pushgateway.ClaimFamily, family, typ, at))
}

// wipe deletes every group of the gateway and waits until it holds none.
func wipe(t *testing.T, c *pushgateway.Client) {
	t.Helper()
	gs, err := c.Groups(context.Background(), "none")
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if err := c.Delete(ctx, pushgateway.GroupingOf(g.Grouping)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the gateway empty", func() bool {
		gs, err := c.Groups(ctx, "none")
		return err == nil && len(gs) == 0
	})
}
