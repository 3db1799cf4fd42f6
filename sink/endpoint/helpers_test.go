package endpoint_test

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/logtest"
	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/sink/endpoint"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// Accept headers of the tests.
const (
	acceptText        = "text/plain;version=0.0.4"
	acceptTextUTF8    = "text/plain;version=0.0.4;escaping=allow-utf-8"
	acceptOpenMetrics = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8"
)

// scrapeOf builds what the drain hands its sinks for a scrape of body (nil: a failed
// scrape), as drain.prepare does.
func scrapeOf(tb testing.TB, job, instance string, start time.Time, body []byte, contentType string, static ...exposition.Label) *sink.Scrape {
	tb.Helper()
	env := &envelope.Envelope{Job: job, Instance: instance, Start: start, Duration: 25 * time.Millisecond, ContentType: contentType, Body: body}
	tg := exposition.Target{Job: job, Instance: instance, Labels: static}
	sc := &sink.Scrape{Envelope: env, Target: tg}
	up := body != nil
	if up {
		fams, err := exposition.Parse(body, contentType)
		if err != nil {
			tb.Fatal(err)
		}
		exposition.Attach(fams, tg)
		sc.Families = fams
		for _, f := range fams {
			env.Series += len(f.GetMetric())
		}
	} else {
		env.Error = "connection refused"
	}
	sc.Health = exposition.Health(tg, exposition.Outcome{Up: up, Start: start, Duration: env.Duration, Samples: env.Series})
	return sc
}

// coldStart wraps a clock so that its first reading, which New takes for the last
// OpenMetrics request, is long past: deliveries then encode the text format only, and
// OpenMetrics is encoded at the first request for it.
func coldStart(now func() time.Time) func() time.Time {
	var started atomic.Bool
	return func() time.Time {
		if started.CompareAndSwap(false, true) {
			return now().Add(-time.Hour)
		}
		return now()
	}
}

// clock is a settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

type harness struct {
	sink *endpoint.Sink
	reg  *prometheus.Registry
	logs *logtest.Buffer
	srv  *httptest.Server
}

func newHarness(t testing.TB, o endpoint.Options) *harness {
	t.Helper()
	h := &harness{reg: prometheus.NewRegistry(), logs: &logtest.Buffer{}}
	h.sink = endpoint.New(o, slog.New(slog.NewTextHandler(h.logs, nil)), h.reg)
	h.srv = httptest.NewServer(h.sink.Handler())
	t.Cleanup(h.srv.Close)
	return h
}

// get fetches the endpoint with the given Accept header, without compression.
func (h *harness) get(t testing.TB, accept string) (body []byte, contentType string) {
	t.Helper()
	resp := h.do(t, accept, "")
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: %s: %s", resp.Status, b)
	}
	if enc := resp.Header.Get("Content-Encoding"); enc != "" {
		t.Fatalf("Content-Encoding %q without Accept-Encoding", enc)
	}
	return b, resp.Header.Get("Content-Type")
}

func (h *harness) do(t testing.TB, accept, acceptEncoding string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, h.srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", accept)
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	// No transparent decompression: the test sees what was sent.
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return resp
}

// scrapeText fetches the endpoint in the text format with UTF-8 names allowed and
// parses it.
func (h *harness) scrapeText(t testing.TB) map[string]*dto.MetricFamily {
	t.Helper()
	body, _ := h.get(t, acceptTextUTF8)
	return parseText(t, body)
}

func parseText(t testing.TB, body []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse response: %v\n%s", err, head(body))
	}
	return fams
}

func gunzip(t testing.TB, b []byte) []byte {
	t.Helper()
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// head is the start of a body, for messages.
func head(b []byte) string {
	if len(b) > 2000 {
		return string(b[:2000]) + "…"
	}
	return string(b)
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// value is a metric's value, for families with one.
func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Summary != nil:
		return float64(m.Summary.GetSampleCount())
	}
	return 0
}

func metricValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			sum += value(m)
		}
		return sum
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// expected is what the endpoint should serve after the scrapes were delivered in the
// given order (each a different target): families merged by name, the first type and
// HELP delivered winning, metrics in target order, stamped when stamp is set.
func expected(scrapes []*sink.Scrape, stamp bool) []*dto.MetricFamily {
	byName := map[string]*dto.MetricFamily{}
	own := func(sc *sink.Scrape) []*dto.MetricFamily {
		fams := slices.Clone(sc.Health)
		for _, mf := range sc.Families {
			if !exposition.IsHealthName(mf.GetName()) {
				fams = append(fams, mf)
			}
		}
		return fams
	}
	for _, sc := range scrapes {
		for _, mf := range own(sc) {
			if byName[mf.GetName()] == nil {
				byName[mf.GetName()] = &dto.MetricFamily{Name: mf.Name, Help: mf.Help, Type: mf.Type, Unit: mf.Unit}
			}
		}
	}
	sorted := slices.Clone(scrapes)
	slices.SortFunc(sorted, func(a, b *sink.Scrape) int {
		return cmp.Or(strings.Compare(a.Envelope.Job, b.Envelope.Job), strings.Compare(a.Envelope.Instance, b.Envelope.Instance))
	})
	for _, sc := range sorted {
		ts := sc.Envelope.Start.UnixMilli()
		for _, mf := range own(sc) {
			out := byName[mf.GetName()]
			if out.GetType() != mf.GetType() {
				continue
			}
			for _, m := range mf.GetMetric() {
				c := proto.Clone(m).(*dto.Metric)
				if stamp && c.TimestampMs == nil {
					c.TimestampMs = proto.Int64(ts)
				}
				out.Metric = append(out.Metric, c)
			}
		}
	}
	fams := make([]*dto.MetricFamily, 0, len(byName))
	for _, mf := range byName {
		fams = append(fams, mf)
	}
	slices.SortFunc(fams, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return fams
}

func encode(t testing.TB, fams []*dto.MetricFamily, format expfmt.Format) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := exposition.Encode(&b, fams, format.WithEscapingScheme(model.NoEscaping)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// firstDiff describes where two bodies first differ.
func firstDiff(got, want []byte) string {
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := range max(len(gl), len(wl)) {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			return "line " + strconv.Itoa(i+1) + ":\n got: " + g + "\nwant: " + w
		}
	}
	return "no difference"
}
