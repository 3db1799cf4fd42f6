package endpoint_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/sink/endpoint"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

var (
	_ sink.Sink    = (*endpoint.Sink)(nil)
	_ sink.Sweeper = (*endpoint.Sink)(nil)
)

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 891_000_000, time.UTC)

// captures delivers the three real captures for five targets, in an order other than
// the served one, and returns the scrapes in delivery order.
func captures(t *testing.T, s *endpoint.Sink) []*sink.Scrape {
	t.Helper()
	node, prom, pgw := fixture.Read(t, fixture.NodeExporter), fixture.Read(t, fixture.Prometheus), fixture.Read(t, fixture.PushGateway)
	scrapes := []*sink.Scrape{
		scrapeOf(t, "node", "b:9100", t0, node, fixture.TextContentType, exposition.Label{Name: "dc", Value: "fra"}),
		scrapeOf(t, "prometheus", "localhost:9090", t0.Add(time.Second), prom, fixture.TextContentType),
		scrapeOf(t, "node", "a:9100", t0.Add(2*time.Second), node, fixture.TextContentType, exposition.Label{Name: "dc", Value: "ams"}),
		scrapeOf(t, "pushgateway", "localhost:9091", t0.Add(3*time.Second), pgw, fixture.TextContentType),
		scrapeOf(t, "node", "c:9100", t0.Add(4*time.Second), node, fixture.TextContentType),
	}
	for _, sc := range scrapes {
		if err := s.Deliver(context.Background(), sc); err != nil {
			t.Fatal(err)
		}
	}
	return scrapes
}

// TestServeCaptures: what is served is, byte for byte, what expfmt writes for the
// delivered families merged by name (first type and HELP winning, targets in order,
// samples stamped with their scrape's start), in the text format and in OpenMetrics,
// whether OpenMetrics was encoded on demand or at delivery.
func TestServeCaptures(t *testing.T) {
	now := func() time.Time { return t0.Add(5 * time.Second) }
	h := newHarness(t, endpoint.Options{Timestamps: true, Now: coldStart(now), MaxAge: time.Minute})
	scrapes := captures(t, h.sink)
	want := expected(scrapes, true)

	body, ct := h.get(t, acceptText)
	if ct != string(expfmt.FmtText)+"; escaping=underscores" {
		t.Errorf("Content-Type %q", ct)
	}
	if w := encode(t, want, expfmt.FmtText); !bytes.Equal(body, w) {
		t.Fatalf("text response differs from expfmt's encoding of the merged families: %s", firstDiff(body, w))
	}
	checkMerged(t, body)

	// Parsed back: every delivered series, labelled and stamped.
	got := parseText(t, body)
	for _, sc := range scrapes {
		for _, mf := range append(slices.Clone(sc.Families), sc.Health...) {
			g := got[mf.GetName()]
			if g == nil || g.GetType() != mf.GetType() {
				t.Errorf("family %s: got %v", mf.GetName(), g.GetType())
				continue
			}
			for _, m := range mf.GetMetric() {
				if !containsMetric(g, m, sc.Envelope.Start.UnixMilli()) {
					t.Errorf("%s/%s: %s%v not served", sc.Envelope.Job, sc.Envelope.Instance, mf.GetName(), m.GetLabel())
				}
			}
		}
	}
	if n := len(got[exposition.HealthUp].GetMetric()); n != len(scrapes) {
		t.Errorf("%d %s series, want %d", n, exposition.HealthUp, len(scrapes))
	}

	// OpenMetrics on demand (nothing asked for it for long before these scrapes were
	// delivered).
	om, ct := h.get(t, acceptOpenMetrics)
	if !strings.HasPrefix(ct, "application/openmetrics-text; version=1.0.0") || !strings.Contains(ct, "escaping=allow-utf-8") {
		t.Errorf("Content-Type %q", ct)
	}
	wantOM := encode(t, want, expfmt.FmtOpenMetrics_1_0_0)
	if !bytes.Equal(om, wantOM) {
		t.Fatalf("OpenMetrics response (encoded on demand) differs from expfmt's: %s", firstDiff(om, wantOM))
	}
	checkOpenMetrics(t, om, false)
	// expfmt's parser, on a response small enough for it: two targets merged.
	small := newHarness(t, endpoint.Options{Timestamps: true})
	for i, inst := range []string{"x:9091", "y:9091"} {
		if err := small.sink.Deliver(context.Background(), scrapeOf(t, "pushgateway", inst, t0.Add(time.Duration(i)*time.Second), fixture.Read(t, fixture.PushGateway), fixture.TextContentType)); err != nil {
			t.Fatal(err)
		}
	}
	smallOM, _ := small.get(t, acceptOpenMetrics)
	checkOpenMetrics(t, smallOM, true)

	// A sink that was asked for OpenMetrics recently (or just started) encodes it at
	// delivery: the same.
	h2 := newHarness(t, endpoint.Options{Timestamps: true, Now: now})
	captures(t, h2.sink)
	if om2, _ := h2.get(t, acceptOpenMetrics); !bytes.Equal(om2, wantOM) {
		t.Fatalf("OpenMetrics response (encoded at delivery) differs from expfmt's: %s", firstDiff(om2, wantOM))
	}
	if text2, _ := h2.get(t, acceptText); !bytes.Equal(text2, body) {
		t.Fatalf("text responses differ: %s", firstDiff(text2, body))
	}

	if v := metricValue(t, h.reg, "prometheus_streams_drain_expose_targets"); v != 5 {
		t.Errorf("targets gauge %v", v)
	}
	series := strings.Count(string(body), "\n") - strings.Count(string(body), "\n#")
	if body[0] == '#' {
		series--
	}
	if v := metricValue(t, h.reg, "prometheus_streams_drain_expose_series"); int(v) != series {
		t.Errorf("series gauge %v, served %d sample lines", v, series)
	}
	if v := metricValue(t, h.reg, "prometheus_streams_drain_expose_request_duration_seconds"); v != 2 {
		t.Errorf("request duration histogram counted %v requests, want 2", v)
	}
}

// checkMerged checks the shape of a text response: one HELP and one TYPE per family,
// families sorted by name, each family's samples together under its TYPE, and targets
// in job/instance order within each family.
func checkMerged(t *testing.T, body []byte) {
	t.Helper()
	var names []string
	helps := map[string]int{}
	var cur string
	var last [2]string // job, instance of the family's previous sample
	for _, line := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "# HELP "):
			helps[strings.Fields(line)[2]]++
		case strings.HasPrefix(line, "# TYPE "):
			cur = strings.Fields(line)[2]
			names = append(names, cur)
			last = [2]string{}
		default:
			if !strings.HasPrefix(line, cur) {
				t.Errorf("sample %q outside its family (under %s)", line, cur)
			}
			k := [2]string{labelIn(line, "job"), labelIn(line, "instance")}
			if k[0] < last[0] || k[0] == last[0] && k[1] < last[1] {
				t.Errorf("family %s: target %v after %v", cur, k, last)
			}
			last = k
		}
	}
	if !slices.IsSorted(names) {
		t.Error("families not sorted by name")
	}
	if c := slices.Compact(slices.Clone(names)); len(c) != len(names) {
		t.Error("a family has several TYPE lines")
	}
	for name, n := range helps {
		if n != 1 {
			t.Errorf("family %s has %d HELP lines", name, n)
		}
	}
}

// labelIn returns the value of a label of a sample line whose values have no quotes.
func labelIn(line, name string) string {
	for _, sep := range []string{"{", ","} {
		if _, v, ok := strings.Cut(line, sep+name+`="`); ok {
			v, _, _ = strings.Cut(v, `"`)
			return v
		}
	}
	return ""
}

// checkOpenMetrics parses an OpenMetrics body with Prometheus's parser and, if
// withExpfmt, with expfmt's, which is thorough but takes some ms a line.
func checkOpenMetrics(t *testing.T, body []byte, withExpfmt bool) {
	t.Helper()
	if !bytes.HasSuffix(body, []byte("\n# EOF\n")) || bytes.Count(body, []byte("# EOF")) != 1 {
		t.Errorf("OpenMetrics body does not end with one # EOF")
	}
	p := textparse.NewOpenMetricsParser(body, labels.NewSymbolTable())
	for {
		_, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Prometheus's OpenMetrics parser: %v", err)
		}
	}
	if !withExpfmt {
		return
	}
	// expfmt's parser refuses two families of one OpenMetrics name, which expfmt's
	// encoder writes for a counter foo_total beside a gauge foo (client_golang's
	// go_memstats_alloc_bytes and go_memstats_alloc_bytes_total, say), and which
	// Prometheus reads: it reads the rest.
	dec := expfmt.NewDecoder(bytes.NewReader(withoutNameClashes(body)), expfmt.FmtOpenMetrics_1_0_0.WithEscapingScheme(model.NoEscaping))
	for {
		var mf dto.MetricFamily
		err := dec.Decode(&mf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("expfmt's OpenMetrics parser: %v", err)
		}
	}
}

// withoutNameClashes returns an OpenMetrics body without the families that share their
// OpenMetrics name with another.
func withoutNameClashes(body []byte) []byte {
	var blocks [][]string
	inSamples := true
	for _, line := range strings.SplitAfter(string(body), "\n") {
		meta := strings.HasPrefix(line, "# ") && line != "# EOF\n"
		if meta && inSamples || line == "# EOF\n" {
			blocks = append(blocks, nil)
		}
		inSamples = !meta
		blocks[len(blocks)-1] = append(blocks[len(blocks)-1], line)
	}
	name := func(b []string) string {
		for _, l := range b {
			if strings.HasPrefix(l, "# TYPE ") {
				return strings.Fields(l)[2]
			}
		}
		return ""
	}
	n := map[string]int{}
	for _, b := range blocks {
		n[name(b)]++
	}
	var out strings.Builder
	for _, b := range blocks {
		if k := name(b); k == "" || n[k] == 1 {
			out.WriteString(strings.Join(b, ""))
		}
	}
	return []byte(out.String())
}

// containsMetric reports whether got has m's labels and value, and its timestamp, or
// ts if it has none.
func containsMetric(got *dto.MetricFamily, m *dto.Metric, ts int64) bool {
	want := m.GetTimestampMs()
	if m.TimestampMs == nil {
		want = ts
	}
	for _, g := range got.GetMetric() {
		if slices.EqualFunc(g.GetLabel(), m.GetLabel(), func(a, b *dto.LabelPair) bool {
			return a.GetName() == b.GetName() && a.GetValue() == b.GetValue()
		}) && g.GetTimestampMs() == want && sameValue(g, m) {
			return true
		}
	}
	return false
}

func sameValue(a, b *dto.Metric) bool {
	switch {
	case a.Histogram != nil:
		return a.Histogram.GetSampleSum() == b.Histogram.GetSampleSum() && a.Histogram.GetSampleCount() == b.Histogram.GetSampleCount()
	case a.Summary != nil:
		return a.Summary.GetSampleSum() == b.Summary.GetSampleSum() && len(a.Summary.Quantile) == len(b.Summary.Quantile)
	}
	va, vb := value(a), value(b)
	return va == vb || va != va && vb != vb // NaN
}

// TestTimestamps: with Timestamps every sample without its own timestamp, health
// series included, is stamped with the scrape's start in ms; a sample that has one
// keeps it; without Timestamps, only those are stamped.
func TestTimestamps(t *testing.T) {
	body := []byte("# TYPE own gauge\nown 1 1700000000000\n# TYPE plain gauge\nplain 2\n")
	for _, stamp := range []bool{true, false} {
		t.Run(fmt.Sprint("timestamps=", stamp), func(t *testing.T) {
			h := newHarness(t, endpoint.Options{Timestamps: stamp})
			if err := h.sink.Deliver(context.Background(), scrapeOf(t, "j", "i", t0, body, fixture.TextContentType)); err != nil {
				t.Fatal(err)
			}
			got := h.scrapeText(t)
			if m := got["own"].GetMetric()[0]; m.GetTimestampMs() != 1700000000000 {
				t.Errorf("own timestamp %v", m.TimestampMs)
			}
			for _, name := range []string{"plain", exposition.HealthUp, exposition.HealthTimestamp} {
				m := got[name].GetMetric()[0]
				switch {
				case stamp && m.GetTimestampMs() != t0.UnixMilli():
					t.Errorf("%s: timestamp %v, want %d", name, m.TimestampMs, t0.UnixMilli())
				case !stamp && m.TimestampMs != nil:
					t.Errorf("%s: timestamp %d, want none", name, m.GetTimestampMs())
				}
			}
		})
	}
}

// TestTypeConflict: a family whose type differs from the one established is left out
// for that target alone, counted at every scrape and logged once; once the first
// type's holder is gone, the next scrape establishes the other type.
func TestTypeConflict(t *testing.T) {
	clk := &clock{t: t0}
	h := newHarness(t, endpoint.Options{Timestamps: true, MaxAge: time.Minute, Now: clk.Now})
	ctx := context.Background()
	a := []byte("# HELP x first help\n# TYPE x counter\nx 1\n# TYPE y gauge\ny 1\n")
	b := []byte("# HELP x second help\n# TYPE x gauge\nx 2\n# TYPE y gauge\ny 2\n")
	if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "a", t0, a, fixture.TextContentType)); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "b", t0.Add(time.Duration(i+1)*time.Second), b, fixture.TextContentType)); err != nil {
			t.Fatal(err)
		}
	}
	body, _ := h.get(t, acceptTextUTF8)
	got := parseText(t, body)
	if x := got["x"]; x.GetType() != dto.MetricType_COUNTER || len(x.GetMetric()) != 1 || label(x.GetMetric()[0], "instance") != "a" || x.GetHelp() != "first help" {
		t.Errorf("x: %v", x)
	}
	if y := got["y"]; len(y.GetMetric()) != 2 {
		t.Errorf("y: the conflicting target's other families must be served: %v", y)
	}
	if v := metricValue(t, h.reg, "prometheus_streams_drain_expose_conflicts_total"); v != 3 {
		t.Errorf("conflicts counted %v, want 3 (one per scrape)", v)
	}
	logs := h.logs.String()
	if n := strings.Count(logs, "another type"); n != 1 {
		t.Errorf("conflict logged %d times, want once:\n%s", n, logs)
	}
	for _, want := range []string{"job=j", "instance=b", "family=x", "type=gauge", "served_type=counter"} {
		if !strings.Contains(logs, want) {
			t.Errorf("conflict log lacks %s:\n%s", want, logs)
		}
	}

	// a stops; past max age it is left out, and once swept the name is free.
	clk.Set(t0.Add(61 * time.Second))
	if got := h.scrapeText(t); got["x"] != nil {
		t.Errorf("x still served after its only holder expired: %v", got["x"])
	}
	if err := h.sink.Sweep(ctx, clk.Now(), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "b", t0.Add(62*time.Second), b, fixture.TextContentType)); err != nil {
		t.Fatal(err)
	}
	got = h.scrapeText(t)
	if x := got["x"]; x.GetType() != dto.MetricType_GAUGE || len(x.GetMetric()) != 1 || label(x.GetMetric()[0], "instance") != "b" || x.GetHelp() != "second help" {
		t.Errorf("x after the counter went: %v", x)
	}
	if v := metricValue(t, h.reg, "prometheus_streams_drain_expose_conflicts_total"); v != 3 {
		t.Errorf("conflicts counted %v, want still 3", v)
	}

	// Should the clash come back, it is logged again.
	if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "a", t0.Add(63*time.Second), a, fixture.TextContentType)); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(h.logs.String(), "another type"); n != 2 {
		t.Errorf("new conflict logged %d times in all, want 2", n)
	}
}

// TestTypeChange: a family that changes type at its only source follows it, with no
// conflict.
func TestTypeChange(t *testing.T) {
	h := newHarness(t, endpoint.Options{Timestamps: true})
	ctx := context.Background()
	if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "a", t0, []byte("# TYPE x counter\nx 1\n"), fixture.TextContentType)); err != nil {
		t.Fatal(err)
	}
	if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "a", t0.Add(time.Second), []byte("# TYPE x gauge\nx 2\n"), fixture.TextContentType)); err != nil {
		t.Fatal(err)
	}
	if x := h.scrapeText(t)["x"]; x.GetType() != dto.MetricType_GAUGE || value(x.GetMetric()[0]) != 2 {
		t.Errorf("x: %v", x)
	}
	if v := metricValue(t, h.reg, "prometheus_streams_drain_expose_conflicts_total"); v != 0 {
		t.Errorf("conflicts %v", v)
	}
}

// TestHealthNameClash: a target's own family named like a health family is left out;
// the health family is served.
func TestHealthNameClash(t *testing.T) {
	h := newHarness(t, endpoint.Options{Timestamps: true})
	body := []byte("# TYPE streams_scrape_up counter\nstreams_scrape_up 7\n# TYPE ok gauge\nok 1\n")
	if err := h.sink.Deliver(context.Background(), scrapeOf(t, "j", "a", t0, body, fixture.TextContentType)); err != nil {
		t.Fatal(err)
	}
	got := h.scrapeText(t)
	if up := got[exposition.HealthUp]; up.GetType() != dto.MetricType_GAUGE || len(up.GetMetric()) != 1 || value(up.GetMetric()[0]) != 1 {
		t.Errorf("%s: %v", exposition.HealthUp, up)
	}
	if got["ok"] == nil {
		t.Error("ok not served")
	}
	if !strings.Contains(h.logs.String(), "scrape-health") {
		t.Errorf("clash not logged:\n%s", h.logs.String())
	}
}

// TestExpiry: a target older than MaxAge is left out when serving, before any sweep,
// and forgotten by Sweep.
func TestExpiry(t *testing.T) {
	clk := &clock{t: t0}
	h := newHarness(t, endpoint.Options{Timestamps: true, MaxAge: time.Minute, Now: clk.Now})
	ctx := context.Background()
	body := []byte("# TYPE m gauge\nm 1\n")
	if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "old", t0, body, fixture.TextContentType)); err != nil {
		t.Fatal(err)
	}
	if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "new", t0.Add(30*time.Second), body, fixture.TextContentType)); err != nil {
		t.Fatal(err)
	}
	instances := func() []string {
		var is []string
		for _, m := range h.scrapeText(t)[exposition.HealthUp].GetMetric() {
			is = append(is, label(m, "instance"))
		}
		return is
	}
	if is := instances(); !slices.Equal(is, []string{"new", "old"}) {
		t.Errorf("before max age: %v", is)
	}
	clk.Set(t0.Add(time.Minute + time.Millisecond))
	if is := instances(); !slices.Equal(is, []string{"new"}) {
		t.Errorf("past max age, not swept: %v", is)
	}
	if got := h.scrapeText(t); len(got["m"].GetMetric()) != 1 {
		t.Errorf("m: %v", got["m"])
	}
	if v := metricValue(t, h.reg, "prometheus_streams_drain_expose_targets"); v != 2 {
		t.Errorf("targets %v before the sweep", v)
	}
	if err := h.sink.Sweep(ctx, clk.Now(), time.Minute); err != nil {
		t.Fatal(err)
	}
	if v := metricValue(t, h.reg, "prometheus_streams_drain_expose_targets"); v != 1 {
		t.Errorf("targets %v after the sweep", v)
	}
	if v := metricValue(t, h.reg, "prometheus_streams_drain_expose_series"); v != 5 {
		t.Errorf("series %v after the sweep, want 5 (m and 4 health)", v)
	}
	// Sweep alone, with the serving clock not past max age: the sweep decides.
	clk.Set(t0)
	if is := instances(); !slices.Equal(is, []string{"new"}) {
		t.Errorf("after the sweep: %v", is)
	}
	if err := h.sink.Sweep(ctx, t0.Add(2*time.Minute), time.Minute); err != nil {
		t.Fatal(err)
	}
	if body, _ := h.get(t, acceptText); len(body) != 0 {
		t.Errorf("everything swept, still served:\n%s", body)
	}
	if v := metricValue(t, h.reg, "prometheus_streams_drain_expose_targets_expired_total"); v != 2 {
		t.Errorf("expired %v", v)
	}
}

// TestSuperseded: a scrape not newer than the one held is refused; a newer one
// replaces it whole.
func TestSuperseded(t *testing.T) {
	h := newHarness(t, endpoint.Options{Timestamps: true})
	ctx := context.Background()
	if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "a", t0, []byte("m 1\ngone 1\n"), fixture.TextContentType)); err != nil {
		t.Fatal(err)
	}
	for _, start := range []time.Time{t0, t0.Add(-time.Second)} {
		if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "a", start, []byte("m 0\n"), fixture.TextContentType)); !errors.Is(err, sink.ErrSuperseded) {
			t.Errorf("scrape at %v: %v, want ErrSuperseded", start.Sub(t0), err)
		}
	}
	if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "a", t0.Add(time.Second), []byte("m 2\n"), fixture.TextContentType)); err != nil {
		t.Fatal(err)
	}
	got := h.scrapeText(t)
	if m := got["m"].GetMetric(); len(m) != 1 || value(m[0]) != 2 {
		t.Errorf("m: %v", m)
	}
	if got["gone"] != nil {
		t.Error("a family of the replaced scrape is still served")
	}
}

// TestFailedScrape: a failed scrape serves only the target's health series.
func TestFailedScrape(t *testing.T) {
	h := newHarness(t, endpoint.Options{Timestamps: true})
	ctx := context.Background()
	if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "a", t0, fixture.Read(t, fixture.PushGateway), fixture.TextContentType)); err != nil {
		t.Fatal(err)
	}
	if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "b", t0, []byte("m 1\n"), fixture.TextContentType)); err != nil {
		t.Fatal(err)
	}
	if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "a", t0.Add(time.Second), nil, "")); err != nil {
		t.Fatal(err)
	}
	for name, mf := range h.scrapeText(t) {
		for _, m := range mf.GetMetric() {
			if label(m, "instance") == "a" && !exposition.IsHealthName(name) {
				t.Errorf("failed target serves %s%v", name, m.GetLabel())
			}
		}
	}
	got := h.scrapeText(t)
	for _, m := range got[exposition.HealthUp].GetMetric() {
		want := map[string]float64{"a": 0, "b": 1}[label(m, "instance")]
		if value(m) != want || m.GetTimestampMs() != map[string]int64{"a": t0.Add(time.Second).UnixMilli(), "b": t0.UnixMilli()}[label(m, "instance")] {
			t.Errorf("%s %v = %v @%d", exposition.HealthUp, m.GetLabel(), value(m), m.GetTimestampMs())
		}
	}
	if len(got[exposition.HealthUp].GetMetric()) != 2 {
		t.Errorf("%s: %v", exposition.HealthUp, got[exposition.HealthUp])
	}
}

// TestConcurrentReplace: requests racing with deliveries always see each target's
// series from one scrape. Every value of a scrape, and its timestamp, says which
// scrape it is; odd scrapes have a family more.
func TestConcurrentReplace(t *testing.T) {
	h := newHarness(t, endpoint.Options{Timestamps: true})
	const targets, generations, readers = 4, 60, 4
	body := func(g int) []byte {
		var b strings.Builder
		fmt.Fprintf(&b, "# TYPE a gauge\na{k=\"1\"} %d\na{k=\"2\"} %d\n# TYPE b_total counter\nb_total %d\n", g, g, g)
		fmt.Fprintf(&b, "# TYPE h histogram\nh_bucket{le=\"1\"} %d\nh_bucket{le=\"+Inf\"} %d\nh_sum %d\nh_count %d\n", g, g, g, g)
		if g%2 == 1 {
			fmt.Fprintf(&b, "# TYPE odd gauge\nodd %d\n", g)
		}
		return []byte(b.String())
	}
	start := func(g int) time.Time { return t0.Add(time.Duration(g) * time.Second) }
	// Scrapes are parsed up front, so that deliveries race with requests.
	scrapes := make([][]*sink.Scrape, targets)
	for i := range scrapes {
		for g := 1; g <= generations; g++ {
			sc := scrapeOf(t, "j", fmt.Sprint("t", i), start(g), body(g), fixture.TextContentType)
			sc.Health = exposition.Health(sc.Target, exposition.Outcome{Up: true, Start: start(g), Samples: g})
			scrapes[i] = append(scrapes[i], sc)
		}
	}

	check := func(fams map[string]*dto.MetricFamily) error {
		gen := map[string]int{}
		odd := map[string]bool{}
		note := func(inst string, g int, what string) error {
			if prev, ok := gen[inst]; ok && prev != g {
				return fmt.Errorf("target %s: scrapes %d and %d in one response (%s)", inst, prev, g, what)
			}
			gen[inst] = g
			return nil
		}
		for name, mf := range fams {
			for _, m := range mf.GetMetric() {
				inst := label(m, "instance")
				var v float64
				switch {
				case name == exposition.HealthSamples:
					v = value(m)
				case exposition.IsHealthName(name):
					continue
				case m.Histogram != nil:
					v = m.Histogram.GetSampleSum()
				default:
					v = value(m)
				}
				if name == "odd" {
					odd[inst] = true
				}
				if err := note(inst, int(v), name); err != nil {
					return err
				}
				if ts := m.GetTimestampMs(); ts != start(int(v)).UnixMilli() {
					return fmt.Errorf("target %s: %s of scrape %d stamped %d", inst, name, int(v), ts)
				}
			}
		}
		for inst, g := range gen {
			if odd[inst] != (g%2 == 1) {
				return fmt.Errorf("target %s: scrape %d with odd=%v", inst, g, odd[inst])
			}
		}
		return nil
	}

	var writers, readersWG sync.WaitGroup
	done := make(chan struct{})
	ready := make(chan struct{}, readers)
	errs := make(chan error, readers+targets)
	for range readers {
		readersWG.Go(func() {
			client := &http.Client{}
			defer client.CloseIdleConnections()
			for n := 0; ; n++ {
				select {
				case <-done:
					if n > 1 {
						return
					}
				default:
				}
				resp, err := client.Get(h.srv.URL)
				if err != nil {
					errs <- err
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					errs <- err
					return
				}
				p := expfmt.NewTextParser(model.UTF8Validation)
				fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
				if err == nil {
					err = check(fams)
				}
				if err != nil {
					errs <- err
					return
				}
				if n == 0 {
					ready <- struct{}{}
				}
			}
		})
	}
	for range readers {
		select {
		case <-ready:
		case err := <-errs:
			t.Fatal(err)
		}
	}
	for i := range targets {
		writers.Go(func() {
			for _, sc := range scrapes[i] {
				if err := h.sink.Deliver(context.Background(), sc); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	writers.Wait()
	close(done)
	readersWG.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := h.scrapeText(t)
	if err := check(got); err != nil {
		t.Error(err)
	}
	if n := len(got["odd"].GetMetric()); n != 0 {
		t.Errorf("odd served for %d targets after the last, even, scrape", n)
	}
}

// TestOpenMetrics: negotiation, exemplars and units from an OpenMetrics source, the
// Prometheus parser, and gzip.
func TestOpenMetrics(t *testing.T) {
	// Cold: the families with exemplars are encoded at delivery, the rest on demand.
	h := newHarness(t, endpoint.Options{Timestamps: true, Now: coldStart(time.Now)})
	ctx := context.Background()
	om := []byte(`# TYPE requests counter
# HELP requests Requests.
requests_total{code="200"} 10 # {trace_id="abc"} 1 1700000000.5
requests_created{code="200"} 1700000000
# TYPE latency_seconds histogram
# UNIT latency_seconds seconds
latency_seconds_bucket{le="0.1"} 1 # {trace_id="def"} 0.05
latency_seconds_bucket{le="+Inf"} 2
latency_seconds_sum 0.3
latency_seconds_count 2
# TYPE temp gauge
temp 21.5
# EOF
`)
	if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "om", t0, om, exposition.OpenMetricsType+"; version=1.0.0")); err != nil {
		t.Fatal(err)
	}
	if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "text", t0, fixture.Read(t, fixture.PushGateway), fixture.TextContentType)); err != nil {
		t.Fatal(err)
	}

	body, ct := h.get(t, acceptOpenMetrics)
	if !strings.HasPrefix(ct, "application/openmetrics-text; version=1.0.0; charset=utf-8") {
		t.Errorf("Content-Type %q", ct)
	}
	checkOpenMetrics(t, body, true)
	for _, want := range []string{
		`# TYPE requests counter`,
		`requests_total{code="200",instance="om",job="j"} 10.0 1.772600767891e+09 # {trace_id="abc"} 1.0 1.7000000005e+09`,
		`# UNIT latency_seconds seconds`,
		`latency_seconds_bucket{instance="om",job="j",le="0.1"} 1 1.772600767891e+09 # {trace_id="def"} 0.05 1.7000000005e+09`,
	} {
		if !bytes.Contains(body, []byte(want+"\n")) {
			t.Errorf("OpenMetrics body lacks %q:\n%s", want, head(body))
		}
	}

	// A Prometheus 2 Accept header gets OpenMetrics; no Accept, or */*, the text format.
	for accept, want := range map[string]string{
		`application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1`: "application/openmetrics-text; version=1.0.0",
		`application/openmetrics-text;version=0.0.1`: "application/openmetrics-text; version=0.0.1",
		``:    "text/plain; version=0.0.4",
		`*/*`: "text/plain; version=0.0.4",
		// As promhttp: the protobuf format, and UTF-8 names only when asked for.
		`application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3`: "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited; escaping=underscores",
		`text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2`:                                              "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8",
		`text/plain;version=0.0.4`:                                 "text/plain; version=0.0.4; charset=utf-8; escaping=underscores",
		`application/openmetrics-text;version=1.0.0;escaping=dots`: "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=dots",
	} {
		if _, ct := h.get(t, accept); !strings.HasPrefix(ct, want) {
			t.Errorf("Accept %q: Content-Type %q, want %s", accept, ct, want)
		}
	}

	// gzip, when asked for.
	for _, accept := range []string{acceptText, acceptOpenMetrics} {
		plain, _ := h.get(t, accept)
		resp := h.do(t, accept, "gzip, deflate")
		zipped, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("Accept-Encoding gzip: Content-Encoding %q", resp.Header.Get("Content-Encoding"))
		}
		if !slices.Contains(resp.Header.Values("Vary"), "Accept-Encoding") {
			t.Errorf("Vary: %v", resp.Header.Values("Vary"))
		}
		if got := gunzip(t, zipped); !bytes.Equal(got, plain) {
			t.Errorf("gzipped response differs: %s", firstDiff(got, plain))
		}
	}
	for _, enc := range []string{"identity", "gzip;q=0", "br", "*;q=0"} {
		resp := h.do(t, acceptText, enc)
		resp.Body.Close()
		if ce := resp.Header.Get("Content-Encoding"); ce != "" {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q", enc, ce)
		}
	}
}

// TestOpenMetricsDemand: OpenMetrics is encoded at delivery from the start and while it
// is asked for, not once it has not been for a while, and the encodings agree.
func TestOpenMetricsDemand(t *testing.T) {
	clk := &clock{t: t0}
	h := newHarness(t, endpoint.Options{Timestamps: true, Now: clk.Now})
	ctx := context.Background()
	body := fixture.Read(t, fixture.NodeExporter)
	held := func() float64 { return metricValue(t, h.reg, "prometheus_streams_drain_expose_encoded_bytes") }
	deliver := func(at time.Duration) {
		t.Helper()
		clk.Set(t0.Add(at))
		if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "a", t0, body, fixture.TextContentType)); err != nil && !errors.Is(err, sink.ErrSuperseded) {
			t.Fatal(err)
		}
		if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "a", t0.Add(at), body, fixture.TextContentType)); err != nil && at > 0 {
			t.Fatal(err)
		}
	}
	deliver(0)
	both := held()
	deliver(11 * time.Minute)
	text := held()
	if !(text < both*0.6) {
		t.Fatalf("with no OpenMetrics asked for in 11 minutes, %v bytes held, %v with OpenMetrics", text, both)
	}
	om, _ := h.get(t, acceptOpenMetrics)
	if held() != both {
		t.Errorf("after encoding OpenMetrics on demand %v bytes held, want %v", held(), both)
	}
	deliver(12 * time.Minute)
	if held() != both {
		t.Errorf("OpenMetrics asked for a minute ago: %v bytes held, want %v", held(), both)
	}
	if om2, _ := h.get(t, acceptOpenMetrics); len(om2) != len(om) {
		t.Errorf("OpenMetrics encoded on demand and at delivery differ in size: %d, %d", len(om), len(om2))
	}
}

// TestUTF8Names: names outside the legacy set are served as they are to a scraper
// that reads them, and escaped for one that does not say it does, without colliding
// with a legacy family of the escaped name.
func TestUTF8Names(t *testing.T) {
	h := newHarness(t, endpoint.Options{Timestamps: false, Now: coldStart(time.Now)})
	ctx := context.Background()
	if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "a", t0, []byte("# HELP \"my.metric\" Dotted.\n# TYPE \"my.metric\" gauge\n{\"my.metric\",\"label.x\"=\"1\"} 1\n# TYPE m gauge\nm{\"a.b\"=\"c\"} 2\n"), fixture.TextContentType)); err != nil {
		t.Fatal(err)
	}
	if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "b", t0, []byte("# TYPE my_metric untyped\nmy_metric 3\n# TYPE m gauge\nm 4\n"), fixture.TextContentType)); err != nil {
		t.Fatal(err)
	}

	utf8 := h.scrapeText(t)
	if mf := utf8["my.metric"]; len(mf.GetMetric()) != 1 || label(mf.GetMetric()[0], "label.x") != "1" {
		t.Errorf("my.metric: %v", mf)
	}
	if mf := utf8["m"]; len(mf.GetMetric()) != 2 || label(mf.GetMetric()[0], "a.b") != "c" {
		t.Errorf("m: %v", mf)
	}

	// OpenMetrics, encoded on demand from the text encoding, UTF-8 names and all.
	om, _ := h.get(t, acceptOpenMetrics)
	checkOpenMetrics(t, om, true)
	for _, want := range []string{"# HELP \"my.metric\" Dotted.\n", "{\"my.metric\",instance=\"a\",job=\"j\",\"label.x\"=\"1\"} 1.0\n", "m{\"a.b\"=\"c\",instance=\"a\",job=\"j\"} 2.0\n"} {
		if !bytes.Contains(om, []byte(want)) {
			t.Errorf("OpenMetrics lacks %q:\n%s", want, om)
		}
	}

	for _, accept := range []string{acceptText, "application/openmetrics-text;version=1.0.0"} {
		body, ct := h.get(t, accept)
		if !strings.Contains(ct, "escaping=underscores") {
			t.Errorf("Content-Type %q", ct)
		}
		var fams map[string]*dto.MetricFamily
		if strings.HasPrefix(accept, "text") {
			p := expfmt.NewTextParser(model.LegacyValidation)
			var err error
			if fams, err = p.TextToMetricFamilies(bytes.NewReader(body)); err != nil {
				t.Fatalf("escaped response does not parse with legacy names: %v\n%s", err, body)
			}
		} else {
			checkOpenMetrics(t, body, true)
			fams = map[string]*dto.MetricFamily{}
			dec := expfmt.NewDecoder(bytes.NewReader(body), expfmt.FmtOpenMetrics_1_0_0.WithEscapingScheme(model.UnderscoreEscaping))
			for {
				mf := &dto.MetricFamily{}
				if err := dec.Decode(mf); err != nil {
					if !errors.Is(err, io.EOF) {
						t.Fatalf("escaped OpenMetrics: %v\n%s", err, body)
					}
					break
				}
				fams[mf.GetName()] = mf
			}
		}
		// The legacy my_metric wins the escaped name.
		if mf := fams["my_metric"]; mf.GetType() != dto.MetricType_UNTYPED || len(mf.GetMetric()) != 1 || label(mf.GetMetric()[0], "instance") != "b" {
			t.Errorf("%s: my_metric: %v", accept, mf)
		}
		if mf := fams["m"]; len(mf.GetMetric()) != 2 || label(mf.GetMetric()[0], "a_b") != "c" {
			t.Errorf("%s: m: %v", accept, mf)
		}
	}
}

// TestMethods: the endpoint answers GET and HEAD.
func TestMethods(t *testing.T) {
	h := newHarness(t, endpoint.Options{Timestamps: true})
	resp, err := http.Post(h.srv.URL, "text/plain", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s", resp.Status)
	}
	resp, err = http.Head(h.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("HEAD: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
}

// TestRejected: a scrape whose families expfmt cannot encode is refused for good, and
// the target's previous scrape stays served.
func TestRejected(t *testing.T) {
	h := newHarness(t, endpoint.Options{Timestamps: true})
	ctx := context.Background()
	if err := h.sink.Deliver(ctx, scrapeOf(t, "j", "a", t0, []byte("m 1\n"), fixture.TextContentType)); err != nil {
		t.Fatal(err)
	}
	bad := scrapeOf(t, "j", "a", t0.Add(time.Second), []byte("m 2\n"), fixture.TextContentType)
	bad.Families[0].Type = dto.MetricType_COUNTER.Enum() // its metric is untyped
	if err := h.sink.Deliver(ctx, bad); !errors.Is(err, sink.ErrRejected) {
		t.Fatalf("Deliver: %v, want ErrRejected", err)
	}
	if m := h.scrapeText(t)["m"].GetMetric(); len(m) != 1 || value(m[0]) != 1 {
		t.Errorf("m: %v", m)
	}
}
