package remotewrite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	remote "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/promtest"
	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// receiver is a real Prometheus to write into, with the protocol to speak to it.
type receiver struct {
	name    string
	binary  promtest.Binary
	message remote.WriteMessageType
}

var receivers = []receiver{
	{"prometheus2-v1", promtest.Prometheus2, remote.WriteV1MessageType},
	{"prometheus3-v1", promtest.Prometheus3, remote.WriteV1MessageType},
	{"prometheus3-v2", promtest.Prometheus3, remote.WriteV2MessageType},
}

func (r receiver) start(t *testing.T, scrapeConfigs string) *promtest.Server {
	t.Helper()
	o := promtest.Options{Binary: r.binary, ScrapeConfigs: scrapeConfigs, RemoteWriteV2: r.message == remote.WriteV2MessageType}
	if o.RemoteWriteV2 {
		// Remote-write 2.0 metadata become __type__ and __unit__ labels, to query them.
		o.Features = []string{"type-and-unit-labels"}
	}
	return promtest.Start(t, o)
}

func newSink(t *testing.T, url string, msg remote.WriteMessageType, mod ...func(*Options)) *Sink {
	t.Helper()
	o := Options{Name: "test", URL: url, Message: msg, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	for _, m := range mod {
		m(&o)
	}
	s, err := New(o, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// scrape builds what the drain hands a sink for a scrape of body by job/instance.
func scrape(t testing.TB, job, instance string, start time.Time, body []byte) *sink.Scrape {
	t.Helper()
	env := &envelope.Envelope{Job: job, Instance: instance, Start: start, Duration: 20 * time.Millisecond}
	tg := exposition.Target{Job: job, Instance: instance}
	s := &sink.Scrape{Envelope: env, Target: tg}
	up := body != nil
	if up {
		fams, err := exposition.Parse(body, fixture.TextContentType)
		if err != nil {
			t.Fatal(err)
		}
		exposition.Attach(fams, tg)
		s.Families = fams
	}
	s.Health = exposition.Health(tg, exposition.Outcome{Up: up, Start: start, Duration: env.Duration, Samples: len(s.Families)})
	return s
}

func deliver(t *testing.T, s *Sink, sc *sink.Scrape) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Deliver(ctx, sc); err != nil {
		t.Fatalf("deliver %s at %s: %v", sc.Key(), sc.Envelope.Start.Format(time.TimeOnly), err)
	}
}

// normalize renders a series without job and instance, with le and quantile as numbers:
// Prometheus 2 stores them as the exposition wrote them, Prometheus 3 in canonical form.
func normalize(m model.Metric) string {
	m = m.Clone()
	delete(m, "job")
	delete(m, "instance")
	delete(m, "__type__")
	delete(m, "__unit__")
	for _, l := range []model.LabelName{model.BucketLabel, model.QuantileLabel} {
		if f, err := strconv.ParseFloat(string(m[l]), 64); err == nil {
			m[l] = model.LabelValue(formatFloat(f))
		}
	}
	return m.String()
}

// TestSameAnswersAsAScrape: what the sink writes is queryable as if Prometheus had
// scraped the target itself: the same series, values and histogram quantiles.
func TestSameAnswersAsAScrape(t *testing.T) {
	for _, r := range receivers {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			body := append(fixture.Read(t, fixture.Prometheus), observed(t)...)
			target := fixture.Serve(t, body, fixture.TextContentType)
			fallback := ""
			if r.binary == promtest.Prometheus3 {
				fallback = "\n  fallback_scrape_protocol: PrometheusText0.0.4"
			}
			srv := r.start(t, fmt.Sprintf("- job_name: direct\n  static_configs: [{targets: [%q]}]%s\n",
				strings.TrimPrefix(target.URL, "http://"), fallback))
			snk := newSink(t, srv.RemoteWriteURL(), r.message)
			start := time.Now().Add(-time.Second).Truncate(time.Millisecond)
			sc := scrape(t, "rw", "edge:9090", start, body)
			deliver(t, snk, sc)

			ctx := context.Background()
			srv.WaitFor(t, `up{job="direct"}`, func(v model.Vector) bool { return len(v) == 1 && v[0].Value == 1 })
			direct, err := srv.Query(ctx, `{job="direct", __name__!~"up|scrape_.*"}`, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			ours, err := srv.Query(ctx, `{job="rw", __name__!~"streams_scrape_.*"}`, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]model.SampleValue{}
			for _, s := range direct {
				want[normalize(s.Metric)] = s.Value
			}
			if len(ours) != len(want) || len(want) < 100 {
				t.Errorf("%d series written, %d scraped", len(ours), len(want))
			}
			for _, s := range ours {
				v, ok := want[normalize(s.Metric)]
				if !ok {
					t.Errorf("%s: not in the direct scrape", s.Metric)
				} else if v != s.Value && !(math.IsNaN(float64(v)) && math.IsNaN(float64(s.Value))) {
					t.Errorf("%s = %v, scraped %v", s.Metric, s.Value, v)
				}
			}
			// Timestamps are the scrape's, not the receiver's.
			ts, err := srv.Query(ctx, `timestamp(streams_scrape_up{job="rw"})`, time.Time{})
			if err != nil || len(ts) != 1 || int64(float64(ts[0].Value)*1000) != start.UnixMilli() {
				t.Errorf("timestamp(streams_scrape_up) = %v (%v), want %d ms", ts, err, start.UnixMilli())
			}
			// Histogram quantiles, the query operators run most on classic histograms.
			for _, q := range []string{
				`histogram_quantile(0.9, sum by (le) (request_duration_seconds_bucket{job="%s"}))`,
				`histogram_quantile(0.5, request_duration_seconds_bucket{job="%s", code="200"})`,
				`sum(request_duration_seconds_count{job="%s"})`,
				`response_size_bytes{job="%s", quantile="0.99"}`,
				`go_gc_duration_seconds{job="%s", quantile="0.5"}`,
			} {
				a, errA := srv.Query(ctx, fmt.Sprintf(q, "direct"), time.Time{})
				b, errB := srv.Query(ctx, fmt.Sprintf(q, "rw"), time.Time{})
				if errA != nil || errB != nil || len(a) != 1 || len(b) != 1 || a[0].Value != b[0].Value || math.IsNaN(float64(a[0].Value)) {
					t.Errorf("%s: direct %v (%v), remote write %v (%v)", q, a, errA, b, errB)
				}
			}
			if r.message == remote.WriteV2MessageType {
				// 2.0 carries metadata on every series.
				v, err := srv.Query(ctx, `go_memstats_frees_total{job="rw", __type__="counter"}`, time.Time{})
				if err != nil || len(v) == 0 {
					t.Errorf("no counter type on go_memstats_frees_total: %v %v", v, err)
				}
			}
		})
	}
}

// TestStaleness: a series that disappears, a failed scrape and an expired target end
// their series with staleness markers, so queries stop returning them at once.
func TestStaleness(t *testing.T) {
	for _, r := range receivers {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			srv := r.start(t, "")
			t0 := time.Now().Add(-10 * time.Second).Truncate(time.Millisecond)
			// The drain hands the scrapes over a second after t0, by the sink's clock.
			snk := newSink(t, srv.RemoteWriteURL(), r.message, func(o *Options) { o.Now = func() time.Time { return t0.Add(time.Second) } })
			ctx := context.Background()
			both := []byte("# TYPE a gauge\na 1\n# TYPE b gauge\nb 2\n")
			onlyA := []byte("# TYPE a gauge\na 3\n")

			deliver(t, snk, scrape(t, "j", "one", t0, both))
			deliver(t, snk, scrape(t, "j", "two", t0, both))
			deliver(t, snk, scrape(t, "j", "one", t0.Add(time.Second), onlyA))
			deliver(t, snk, scrape(t, "j", "two", t0.Add(time.Second), nil)) // failed
			count := func(q string, at time.Time) int {
				t.Helper()
				v, err := srv.Query(ctx, q, at)
				if err != nil {
					t.Fatal(err)
				}
				return len(v)
			}
			at := t0.Add(1500 * time.Millisecond)
			if n := count(`b{job="j"}`, t0.Add(500*time.Millisecond)); n != 2 {
				t.Errorf("b before it went: %d series, want 2", n)
			}
			if n := count(`b{job="j"}`, at); n != 0 {
				t.Errorf("b after it went: %d series, want none (stale)", n)
			}
			if n := count(`a{job="j"}`, at); n != 1 {
				t.Errorf("a after the failed scrape of two: %d series, want only one's", n)
			}
			if v, err := srv.Query(ctx, `streams_scrape_up{job="j"}`, at); err != nil || len(v) != 2 {
				t.Errorf("streams_scrape_up = %v %v", v, err)
			}

			// one expires: every series it had ends at the sweep.
			sweep := t0.Add(5 * time.Second)
			if err := snk.Sweep(ctx, sweep, 3*time.Second); err != nil {
				t.Fatal(err)
			}
			if n := count(`{job="j", instance="one"}`, sweep.Add(time.Millisecond)); n != 0 {
				t.Errorf("%d series of the expired target after the sweep, want none", n)
			}
			if n := count(`{job="j", instance="one"}`, sweep.Add(-time.Millisecond)); n == 0 {
				t.Error("the expired target's series were gone before the sweep")
			}
		})
	}
}

// TestReceiverDownThenUp: while the receiver is down, a scrape fails to be retried (not
// refused for good); once it is back, the scrape goes through and nothing is lost.
func TestReceiverDownThenUp(t *testing.T) {
	r := receivers[0]
	srv := r.start(t, "")
	snk := newSink(t, srv.RemoteWriteURL(), r.message, func(o *Options) { o.Timeout = 2 * time.Second })
	t0 := time.Now().Add(-5 * time.Second).Truncate(time.Millisecond)
	deliver(t, snk, scrape(t, "j", "i", t0, []byte("a 1\n")))
	srv.Stop()
	ctx := context.Background()
	err := snk.Deliver(ctx, scrape(t, "j", "i", t0.Add(time.Second), []byte("a 2\n")))
	if err == nil || errors.Is(err, sink.ErrRejected) || errors.Is(err, sink.ErrSuperseded) {
		t.Fatalf("delivery to a stopped receiver = %v, want an error to retry", err)
	}
	srv.Restart(t)
	deliver(t, snk, scrape(t, "j", "i", t0.Add(time.Second), []byte("a 2\n")))
	v, err := srv.QueryRange(ctx, `a{job="j"}`, t0, t0.Add(time.Second), time.Second)
	if err != nil || len(v) != 1 || len(v[0].Values) != 2 || v[0].Values[0].Value != 1 || v[0].Values[1].Value != 2 {
		t.Errorf("a over both scrapes = %v %v, want 1 then 2", v, err)
	}
}

// TestRefusedAlone: a scrape the receiver refuses (samples too old) shares a request with
// good ones; it is refused for good, they are written.
func TestRefusedAlone(t *testing.T) {
	for _, r := range receivers[:2] {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			srv := r.start(t, "")
			// One sender that waits to fill its request: the scrapes below share one.
			snk := newSink(t, srv.RemoteWriteURL(), r.message, func(o *Options) {
				o.MaxShards, o.BatchSendDeadline = 1, 300*time.Millisecond
			})
			// Something recent first, so that the head's window starts now.
			now := time.Now().Truncate(time.Millisecond)
			deliver(t, snk, scrape(t, "j", "first", now.Add(-time.Second), []byte("a 1\n")))

			var wg sync.WaitGroup
			errs := make([]error, 4)
			for i := range errs {
				start := now
				if i == 2 {
					start = now.Add(-10 * 24 * time.Hour) // far behind the head: out of bounds
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = snk.Deliver(context.Background(), scrape(t, "j", fmt.Sprint(i), start, []byte("a 1\n")))
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if i == 2 {
					if !errors.Is(err, sink.ErrRejected) || !strings.Contains(err.Error(), "out of bounds") {
						t.Errorf("the old scrape: %v, want refused as out of bounds", err)
					}
				} else if err != nil {
					t.Errorf("scrape %d: %v", i, err)
				}
			}
			v, err := srv.Query(context.Background(), `a{job="j"}`, time.Time{})
			if err != nil || len(v) != 4 {
				t.Errorf("a = %v %v, want first and the three good ones", v, err)
			}
		})
	}
}

// TestRedeliveryAndOlder: the same scrape twice is harmless; an older scrape of a target
// the receiver holds newer samples of is superseded, not retried.
func TestRedeliveryAndOlder(t *testing.T) {
	r := receivers[0]
	srv := r.start(t, "")
	snk := newSink(t, srv.RemoteWriteURL(), r.message)
	t0 := time.Now().Add(-5 * time.Second).Truncate(time.Millisecond)
	deliver(t, snk, scrape(t, "j", "i", t0.Add(time.Second), []byte("a 2\n")))
	deliver(t, snk, scrape(t, "j", "i", t0.Add(time.Second), []byte("a 2\n")))
	if err := snk.Deliver(context.Background(), scrape(t, "j", "i", t0, []byte("a 1\n"))); !errors.Is(err, sink.ErrSuperseded) {
		t.Errorf("an older scrape = %v, want superseded", err)
	}
	// A second sink (a restarted drain) knows nothing: the receiver refuses the older
	// samples as out of order, and the sink reports the scrape superseded.
	other := newSink(t, srv.RemoteWriteURL(), r.message)
	if err := other.Deliver(context.Background(), scrape(t, "j", "i", t0, []byte("a 1\n"))); !errors.Is(err, sink.ErrSuperseded) {
		t.Errorf("an older scrape after a restart = %v, want superseded", err)
	}
	v, err := srv.Query(context.Background(), `a{job="j"}`, time.Time{})
	if err != nil || len(v) != 1 || v[0].Value != 2 {
		t.Errorf("a = %v %v, want the newer 2", v, err)
	}
}

// observed is a real client's exposition of a histogram and a summary with observations,
// the captures' own being empty.
func observed(t *testing.T) []byte {
	t.Helper()
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "request_duration_seconds", Help: "Request latency.", Buckets: prometheus.DefBuckets,
	}, []string{"code"})
	sm := prometheus.NewSummary(prometheus.SummaryOpts{
		Name: "response_size_bytes", Help: "Response sizes.", Objectives: map[float64]float64{0.5: 0.05, 0.99: 0.001},
	})
	reg.MustRegister(h, sm)
	for i := range 1000 {
		h.WithLabelValues([]string{"200", "500"}[i%2]).Observe(float64(i%97) / 50)
		sm.Observe(float64(i * 13 % 1021))
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range fams {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return []byte(b.String())
}

// TestBatch: a target's backlog written in one batch lands as if each scrape had been
// written alone: every sample at its own time, a series that disappears in the middle
// of the batch marked stale there (not at the end), in one request when it fits; a
// batch the receiver refuses in part is written again scrape by scrape.
func TestBatch(t *testing.T) {
	for _, r := range receivers {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			srv := r.start(t, "")
			reg := prometheus.NewRegistry()
			snk, err := New(Options{Name: "test", URL: srv.RemoteWriteURL(), Message: r.message, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
				slog.New(slog.DiscardHandler), reg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(snk.Close)
			ctx := context.Background()
			t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
			bodies := [][]byte{
				[]byte("# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n"),
				[]byte("# TYPE a gauge\na 2\n# TYPE b gauge\nb 2\n"),
				[]byte("# TYPE a gauge\na 3\n"), // b goes
				[]byte("# TYPE a gauge\na 4\n# TYPE b gauge\nb 4\n"),
			}
			var scs []*sink.Scrape
			for i, b := range bodies {
				scs = append(scs, scrape(t, "j", "i", t0.Add(time.Duration(i)*10*time.Second), b))
			}
			errs := make([]error, len(scs))
			snk.DeliverBatch(ctx, scs, errs)
			for i, err := range errs {
				if err != nil {
					t.Fatalf("scrape %d: %v", i, err)
				}
			}
			if c := histogramCount(t, reg, "prometheus_streams_remote_write_request_samples"); c != 1 {
				t.Errorf("%d requests for a batch that fits one, want 1", c)
			}
			for i := range bodies {
				at := t0.Add(time.Duration(i)*10*time.Second + time.Second)
				a, err := srv.Query(ctx, `a{job="j"}`, at)
				if err != nil || len(a) != 1 || float64(a[0].Value) != float64(i+1) {
					t.Errorf("a at scrape %d: %v (%v), want %d", i, a, err, i+1)
				}
				b, err := srv.Query(ctx, `b{job="j"}`, at)
				want := 1
				if i == 2 {
					want = 0 // stale from the third scrape on, until it comes back
				}
				if err != nil || len(b) != want {
					t.Errorf("b at scrape %d: %v (%v), want %d series", i, b, err, want)
				}
			}

			// A sink that does not know what the receiver has (a drain restarted) writes
			// an older and a newer scrape in one batch: the receiver refuses the older
			// samples, so the batch is written again scrape by scrape; the older is
			// superseded, the newer lands.
			fresh := newSink(t, srv.RemoteWriteURL(), r.message)
			late := []*sink.Scrape{
				scrape(t, "j", "i", t0.Add(25*time.Second), []byte("# TYPE a gauge\na 25\n")),
				scrape(t, "j", "i", t0.Add(40*time.Second), []byte("# TYPE a gauge\na 5\n")),
			}
			errs = make([]error, len(late))
			fresh.DeliverBatch(ctx, late, errs)
			if !errors.Is(errs[0], sink.ErrSuperseded) || errs[1] != nil {
				t.Errorf("late batch: %v", errs)
			}
			if a, err := srv.Query(ctx, `a{job="j"}`, t0.Add(41*time.Second)); err != nil || len(a) != 1 || a[0].Value != 5 {
				t.Errorf("a after the late batch: %v (%v), want 5", a, err)
			}
		})
	}
}

// histogramCount is the sample count of the one histogram named name in reg.
func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}

// TestNoSweepWhileTrying: a target whose newest scrape the receiver has is older than
// max_age, but whose newer scrapes the drain still tries to hand over (the receiver was
// down), is not ended by the sweep: its waiting scrapes land after it, not refused as
// out of order behind staleness markers.
func TestNoSweepWhileTrying(t *testing.T) {
	r := receivers[0]
	srv := r.start(t, "")
	snk := newSink(t, srv.RemoteWriteURL(), r.message, func(o *Options) { o.Timeout = 2 * time.Second })
	ctx := context.Background()
	now := time.Now().Truncate(time.Millisecond)
	deliver(t, snk, scrape(t, "j", "i", now.Add(-85*time.Second), []byte("a 1\n")))
	srv.Stop()
	// The drain tries the next scrape while the receiver is down.
	if err := snk.Deliver(ctx, scrape(t, "j", "i", now.Add(-25*time.Second), []byte("a 2\n"))); err == nil {
		t.Fatal("delivered to a stopped receiver")
	}
	if err := snk.Sweep(ctx, now, 80*time.Second); err != nil {
		t.Fatal(err)
	}
	srv.Restart(t)
	deliver(t, snk, scrape(t, "j", "i", now.Add(-25*time.Second), []byte("a 2\n")))
	if v, err := srv.Query(ctx, `a{job="j"}`, now.Add(-24*time.Second)); err != nil || len(v) != 1 || v[0].Value != 2 {
		t.Errorf("a after the outage: %v (%v), want 2", v, err)
	}
}
