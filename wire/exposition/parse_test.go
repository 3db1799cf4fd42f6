package exposition

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

const (
	omType   = "application/openmetrics-text; version=1.0.0; charset=utf-8"
	omType01 = "application/openmetrics-text; version=0.0.1; charset=utf-8"
)

var captures = []string{fixture.NodeExporter, fixture.Prometheus, fixture.PushGateway}

// asText renders families in the text format: what both formats can say, and a
// comparison that treats NaN as equal to itself.
func asText(tb testing.TB, fams []*dto.MetricFamily) string {
	tb.Helper()
	var b bytes.Buffer
	for _, mf := range fams {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			tb.Fatalf("render %s: %v", mf.GetName(), err)
		}
	}
	return b.String()
}

// checkSorted fails unless families are sorted by name and each metric's labels are.
func checkSorted(tb testing.TB, fams []*dto.MetricFamily) {
	tb.Helper()
	for i, mf := range fams {
		if i > 0 && fams[i-1].GetName() >= mf.GetName() {
			tb.Errorf("families out of order: %q before %q", fams[i-1].GetName(), mf.GetName())
		}
		for _, m := range mf.GetMetric() {
			if !labelsSorted(m.GetLabel()) {
				tb.Errorf("%s: labels not sorted: %s", mf.GetName(), render(m.GetLabel()))
			}
		}
	}
}

func TestParseCaptures(t *testing.T) {
	for _, name := range captures {
		t.Run(name, func(t *testing.T) {
			body := fixture.Read(t, name)
			fams, err := Parse(body, fixture.TextContentType)
			if err != nil {
				t.Fatal(err)
			}
			p := expfmt.NewTextParser(model.UTF8Validation)
			want, err := p.TextToMetricFamilies(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if len(fams) != len(want) {
				t.Fatalf("%d families, expfmt has %d", len(fams), len(want))
			}
			metrics := 0
			for _, mf := range fams {
				w := want[mf.GetName()]
				if w == nil {
					t.Fatalf("family %q not in expfmt's parse", mf.GetName())
				}
				if len(mf.GetMetric()) != len(w.GetMetric()) || mf.GetType() != w.GetType() {
					t.Errorf("%s: %d metrics of type %s, expfmt has %d of %s", mf.GetName(),
						len(mf.GetMetric()), mf.GetType(), len(w.GetMetric()), w.GetType())
				}
				metrics += len(mf.GetMetric())
			}
			checkSorted(t, fams)
			t.Logf("%d families, %d metrics", len(fams), metrics)
		})
	}
}

// TestParseCapturesAsOpenMetrics serves each capture's families as OpenMetrics, as
// client_golang would, and checks the OpenMetrics path reads back what the text path
// read: the assembler on real data.
func TestParseCapturesAsOpenMetrics(t *testing.T) {
	for _, name := range captures {
		t.Run(name, func(t *testing.T) {
			text, err := Parse(fixture.Read(t, name), fixture.TextContentType)
			if err != nil {
				t.Fatal(err)
			}
			var om bytes.Buffer
			if err := Encode(&om, text, expfmt.NewFormat(expfmt.TypeOpenMetrics)); err != nil {
				t.Fatal(err)
			}
			fams, err := Parse(om.Bytes(), omType)
			if err != nil {
				t.Fatal(err)
			}
			checkSorted(t, fams)
			// expfmt writes a counter without the _total suffix as unknown.
			for _, mf := range text {
				if mf.GetType() == dto.MetricType_COUNTER && !strings.HasSuffix(mf.GetName(), "_total") {
					for _, m := range mf.Metric {
						m.Untyped, m.Counter = &dto.Untyped{Value: m.Counter.Value}, nil
					}
					mf.Type = dto.MetricType_UNTYPED.Enum()
				}
			}
			if got, want := asText(t, fams), asText(t, text); got != want {
				t.Errorf("OpenMetrics path differs from the text path:\n%s", diff(got, want))
			}
		})
	}
}

// diff returns the first differing lines of two renderings.
func diff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return "line " + strconv.Itoa(i+1) + ":\ngot  " + gl + "\nwant " + wl
		}
	}
	return "(same)"
}

// registry builds a client_golang registry with one of each kind of metric.
func registry(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "http_requests_total", Help: "Requests served.", ConstLabels: prometheus.Labels{"service": "api"},
	}, []string{"code", "method"})
	sent := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sent_bytes_total", Help: "Bytes sent.", Unit: "bytes",
	})
	temp := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "room_temperature_celsius", Help: "Room temperature.", Unit: "celsius",
	}, []string{"room"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "request_duration_seconds", Help: "Request latency.", Unit: "seconds",
		Buckets: []float64{0.01, 0.1, 1},
	}, []string{"handler"})
	sizes := prometheus.NewSummary(prometheus.SummaryOpts{
		Name: "response_size_bytes", Help: "Response sizes.\nWith \"quotes\" and a \\ backslash.",
		Objectives: map[float64]float64{0.5: 0.05, 0.99: 0.001},
	})
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "app_build_info", Help: "Build information.", ConstLabels: prometheus.Labels{"version": "1.2.3", "goversion": "go1.26"},
	})
	reg.MustRegister(requests, sent, temp, latency, sizes, build)

	requests.WithLabelValues("200", "GET").(prometheus.ExemplarAdder).AddWithExemplar(3, prometheus.Labels{"trace_id": "abc"})
	requests.WithLabelValues("500", "POST").Add(1)
	sent.Add(1234)
	temp.WithLabelValues("kitchen").Set(21.5)
	temp.WithLabelValues("cellar").Set(-3.25)
	obs := latency.WithLabelValues("/")
	obs.(prometheus.ExemplarObserver).ObserveWithExemplar(0.05, prometheus.Labels{"trace_id": "def"})
	obs.Observe(0.5)
	obs.Observe(7)
	for i := range 100 {
		sizes.Observe(float64(i))
	}
	build.Set(1)
	return reg
}

// fetch gets the handler's exposition with the given Accept header, returning the
// body and Content-Type.
func fetch(t *testing.T, url, accept string) ([]byte, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", accept)
	rsp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer rsp.Body.Close()
	body, err := io.ReadAll(rsp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if rsp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d: %s", rsp.StatusCode, body)
	}
	return body, rsp.Header.Get("Content-Type")
}

// TestParseClientGolang scrapes one client_golang registry as OpenMetrics and as the
// text format, and checks both give the same families, and OpenMetrics the extras.
func TestParseClientGolang(t *testing.T) {
	srv := httptest.NewServer(promhttp.HandlerFor(registry(t), promhttp.HandlerOpts{
		EnableOpenMetrics:                   true,
		EnableOpenMetricsTextCreatedSamples: true,
	}))
	defer srv.Close()

	omBody, omCT := fetch(t, srv.URL, "application/openmetrics-text;version=1.0.0")
	textBody, textCT := fetch(t, srv.URL, "text/plain;version=0.0.4")
	if mt, _ := mediaType(omCT); mt != OpenMetricsType {
		t.Fatalf("OpenMetrics request served as %q", omCT)
	}
	if mt, _ := mediaType(textCT); mt != TextType {
		t.Fatalf("text request served as %q", textCT)
	}
	om, err := Parse(omBody, omCT)
	if err != nil {
		t.Fatalf("%v\n%s", err, omBody)
	}
	text, err := Parse(textBody, textCT)
	if err != nil {
		t.Fatalf("%v\n%s", err, textBody)
	}
	checkSorted(t, om)
	checkSorted(t, text)

	got, want := asText(t, om), asText(t, text)
	if got != want {
		t.Errorf("OpenMetrics and text differ:\n%s\n--- OpenMetrics body:\n%s\n--- text body:\n%s", diff(got, want), omBody, textBody)
	}
	// Beyond the text rendering: the very same messages once OpenMetrics's extras go.
	if len(om) != len(text) {
		t.Fatalf("%d families from OpenMetrics, %d from text", len(om), len(text))
	}
	for i := range om {
		if !proto.Equal(withoutExtras(om[i]), text[i]) {
			t.Errorf("family %s differs:\nOpenMetrics %v\ntext        %v", om[i].GetName(), om[i], text[i])
		}
	}

	byName := map[string]*dto.MetricFamily{}
	for _, mf := range om {
		byName[mf.GetName()] = mf
	}
	wantNames := []string{"app_build_info", "http_requests_total", "request_duration_seconds", "response_size_bytes", "room_temperature_celsius", "sent_bytes_total"}
	for _, n := range wantNames {
		if byName[n] == nil {
			t.Fatalf("no family %q in %v", n, asText(t, om))
		}
	}

	for name, unit := range map[string]string{"sent_bytes_total": "bytes", "room_temperature_celsius": "celsius", "request_duration_seconds": "seconds"} {
		if got := byName[name].GetUnit(); got != unit {
			t.Errorf("%s: unit %q, want %q", name, got, unit)
		}
	}
	if got := byName["response_size_bytes"].GetHelp(); got != "Response sizes.\nWith \"quotes\" and a \\ backslash." {
		t.Errorf("help unescaped as %q", got)
	}

	var exemplars int
	for _, m := range byName["http_requests_total"].Metric {
		c := m.GetCounter()
		if c.GetCreatedTimestamp() == nil {
			t.Errorf("counter %s has no created timestamp", render(m.Label))
		} else if age := time.Since(c.GetCreatedTimestamp().AsTime()); age < 0 || age > time.Minute {
			t.Errorf("counter created %v ago", age)
		}
		if e := c.GetExemplar(); e != nil {
			exemplars++
			if e.GetValue() != 3 || render(e.Label) != `{trace_id="abc"}` || e.GetTimestamp() == nil {
				t.Errorf("counter exemplar %v", e)
			}
		}
	}
	if exemplars != 1 {
		t.Errorf("%d counter exemplars, want 1", exemplars)
	}
	h := byName["request_duration_seconds"].Metric[0].GetHistogram()
	if h.GetCreatedTimestamp() == nil {
		t.Error("histogram has no created timestamp")
	}
	if n := len(h.GetBucket()); n != 4 {
		t.Errorf("%d buckets, want 3 and +Inf", n)
	}
	if e := h.GetBucket()[1].GetExemplar(); e.GetValue() != 0.05 || render(e.GetLabel()) != `{trace_id="def"}` {
		t.Errorf("bucket le=0.1 exemplar %v", e)
	}
	if byName["response_size_bytes"].Metric[0].GetSummary().GetCreatedTimestamp() == nil {
		t.Error("summary has no created timestamp")
	}
}

// withoutExtras returns a copy of a family without what the text format cannot carry.
func withoutExtras(mf *dto.MetricFamily) *dto.MetricFamily {
	mf = proto.Clone(mf).(*dto.MetricFamily)
	mf.Unit = nil
	for _, m := range mf.Metric {
		if c := m.Counter; c != nil {
			c.CreatedTimestamp, c.Exemplar = nil, nil
		}
		if h := m.Histogram; h != nil {
			h.CreatedTimestamp = nil
			for _, b := range h.Bucket {
				b.Exemplar = nil
			}
		}
		if s := m.Summary; s != nil {
			s.CreatedTimestamp = nil
		}
	}
	return mf
}

// TestParseOpenMetricsTypes covers what client_golang does not write: info,
// stateset, gaugehistogram, unknown, counters without suffix, sample and exemplar
// timestamps, and metrics split across the body.
func TestParseOpenMetricsTypes(t *testing.T) {
	body := `# TYPE build info
# HELP build Build information.
build_info{version="1.2.3"} 1
# TYPE state stateset
state{state="on"} 1
state{state="off"} 0
# TYPE queue_seconds gaugehistogram
# UNIT queue_seconds seconds
queue_seconds_bucket{le="1"} 2
queue_seconds_bucket{le="+Inf"} 3 # {trace_id="q"} 5 1700000000.5
queue_seconds_gcount 3
queue_seconds_gsum 7.5
# TYPE thing unknown
thing 4
# TYPE legacy counter
legacy 9 1700000000.125
# TYPE c counter
c_total{a="1"} 1.5 # {trace_id="t"} 1 1700000000
c_created{a="1"} 1699999999.25
c_created{a="2"} 1699999999.5
c_total{a="2"} 2
c_created{a="3"} 1699999999.75
# TYPE h histogram
h_bucket{le="0.5",x="1"} 1
h_bucket{le="0.5",x="2"} 4
h_bucket{le="+Inf",x="1"} 2
h_bucket{le="+Inf",x="2"} 5
h_count{x="1"} 2
h_count{x="2"} 5
h_sum{x="1"} 1.5
h_sum{x="2"} 3
h_created{x="1"} 1699999999
# TYPE s summary
s{quantile="0.5"} 0.25 1700000001
s_sum 10 1700000001
s_count 20 1700000001
orphan 1
# EOF
`
	for _, ct := range []string{omType, omType01, "application/openmetrics-text"} {
		fams, err := Parse([]byte(body), ct)
		if err != nil {
			t.Fatalf("%s: %v", ct, err)
		}
		checkSorted(t, fams)
		want := `# HELP build_info Build information.
# TYPE build_info gauge
build_info{version="1.2.3"} 1
# TYPE c_total counter
c_total{a="1"} 1.5
c_total{a="2"} 2
# TYPE h histogram
h_bucket{x="1",le="0.5"} 1
h_bucket{x="1",le="+Inf"} 2
h_sum{x="1"} 1.5
h_count{x="1"} 2
h_bucket{x="2",le="0.5"} 4
h_bucket{x="2",le="+Inf"} 5
h_sum{x="2"} 3
h_count{x="2"} 5
# TYPE legacy counter
legacy 9 1700000000125
# TYPE orphan untyped
orphan 1
# TYPE queue_seconds histogram
queue_seconds_bucket{le="1"} 2
queue_seconds_bucket{le="+Inf"} 3
queue_seconds_sum 7.5
queue_seconds_count 3
# TYPE s summary
s{quantile="0.5"} 0.25 1700000001000
s_sum 10 1700000001000
s_count 20 1700000001000
# TYPE state gauge
state{state="on"} 1
state{state="off"} 0
# TYPE thing untyped
thing 4
`
		if got := asText(t, fams); got != want {
			t.Errorf("%s:\n%s\n--- got:\n%s", ct, diff(got, want), got)
		}
		byName := map[string]*dto.MetricFamily{}
		for _, mf := range fams {
			byName[mf.GetName()] = mf
		}
		if got := byName["queue_seconds"].GetType(); got != dto.MetricType_GAUGE_HISTOGRAM {
			t.Errorf("queue_seconds is %s", got)
		}
		if got := byName["queue_seconds"].GetUnit(); got != "seconds" {
			t.Errorf("queue_seconds unit %q", got)
		}
		e := byName["queue_seconds"].Metric[0].GetHistogram().GetBucket()[1].GetExemplar()
		if e.GetValue() != 5 || e.GetTimestamp().AsTime() != time.UnixMilli(1700000000500).UTC() {
			t.Errorf("gaugehistogram exemplar %v", e)
		}
		c := byName["c_total"].Metric
		if got := c[0].GetCounter().GetCreatedTimestamp().AsTime(); got != time.UnixMilli(1699999999250).UTC() {
			t.Errorf("c_total{a=1} created %v", got)
		}
		if got := c[1].GetCounter().GetCreatedTimestamp().AsTime(); got != time.UnixMilli(1699999999500).UTC() {
			t.Errorf("c_total{a=2} created %v", got)
		}
		if e := c[0].GetCounter().GetExemplar(); e.GetValue() != 1 || e.GetTimestamp().AsTime().Unix() != 1700000000 {
			t.Errorf("c_total exemplar %v", e)
		}
		if got := byName["h"].Metric[0].GetHistogram().GetCreatedTimestamp().AsTime().Unix(); got != 1699999999 {
			t.Errorf("h created %d", got)
		}
		if byName["h"].Metric[1].GetHistogram().GetCreatedTimestamp() != nil {
			t.Error(`h{x="2"} has a created timestamp`)
		}
	}
}

func TestParseUTF8Names(t *testing.T) {
	for _, tc := range []struct{ ct, body string }{
		{"", `{"my.metric","some.label"="x"} 1` + "\n"},
		{fixture.TextContentType, "# TYPE \"my.metric\" gauge\n{\"my.metric\",\"some.label\"=\"x\"} 1\n"},
		{omType, "# TYPE \"my.metric\" gauge\n{\"my.metric\",\"some.label\"=\"x\"} 1\n# EOF\n"},
		{omType, "{\"my.metric\",\"some.label\"=\"x\"} 1\n# EOF\n"},
	} {
		fams, err := Parse([]byte(tc.body), tc.ct)
		if err != nil {
			t.Fatalf("%q: %v", tc.body, err)
		}
		if len(fams) != 1 || fams[0].GetName() != "my.metric" || len(fams[0].Metric) != 1 ||
			render(fams[0].Metric[0].Label) != `{some.label="x"}` {
			t.Errorf("%q: got %v", tc.body, fams)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, ct, body string
		unsupported    bool
		msg            string
	}{
		{"invalid text", fixture.TextContentType, "ok 1\nthis is not { an exposition\n", false, "line 2"},
		{"text duplicate label", "", "a{x=\"1\",x=\"2\"} 1\n", false, "duplicate label"},
		{"OpenMetrics without EOF", omType, "# TYPE a gauge\na 1\n", false, "line 3: data does not end with # EOF"},
		{"OpenMetrics bad value", omType, "a 1\nb x\n# EOF\n", false, "line 2"},
		{"OpenMetrics unit not a suffix", omType, "# TYPE a gauge\n# UNIT a seconds\na 1\n# EOF\n", false, "line 2"},
		{"OpenMetrics duplicate label", omType, "a{x=\"1\",x=\"2\"} 1\n# EOF\n", false, `line 1: a: duplicate label name "x"`},
		{"OpenMetrics bad le", omType, "# TYPE h histogram\nh_bucket{le=\"x\"} 1\n# EOF\n", false, "line 2"},
		{"OpenMetrics type clash", omType, "# TYPE a counter\na_total 1\n# TYPE a_total gauge\na_total 2\n# EOF\n", false, "line 4"},
		{"text as OpenMetrics", omType, string(fixture.Read(t, fixture.PushGateway)), false, "line "},
		{"truncated protobuf", "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited", "\x05\x0a", false, "protobuf"},
		{"JSON", "application/json", "{}", true, "unsupported"},
		{"malformed Content-Type", "text/plain; version", "a 1\n", true, "unsupported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fams, err := Parse([]byte(tc.body), tc.ct)
			if err == nil {
				t.Fatalf("no error; families %v", fams)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%v does not wrap ErrInvalid", err)
			}
			if errors.Is(err, ErrUnsupported) != tc.unsupported {
				t.Errorf("%v: wraps ErrUnsupported %v, want %v", err, !tc.unsupported, tc.unsupported)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%v: does not say %q", err, tc.msg)
			}
		})
	}
}

func TestParseEmpty(t *testing.T) {
	for _, tc := range []struct{ ct, body string }{{"", ""}, {omType, "# EOF\n"}, {omType, "# TYPE a gauge\n# EOF\n"}} {
		fams, err := Parse([]byte(tc.body), tc.ct)
		if err != nil || len(fams) != 0 {
			t.Errorf("%q: %v, %v", tc.body, fams, err)
		}
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	fams, err := Parse(fixture.Read(t, fixture.Prometheus), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []expfmt.Format{expfmt.NewFormat(expfmt.TypeTextPlain), expfmt.NewFormat(expfmt.TypeOpenMetrics)} {
		var b bytes.Buffer
		if err := Encode(&b, fams, f); err != nil {
			t.Fatal(err)
		}
		back, err := Parse(b.Bytes(), string(f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(back) != len(fams) {
			t.Errorf("%s: %d families back of %d", f, len(back), len(fams))
		}
	}
	if err := Encode(io.Discard, fams, "nonsense"); err == nil {
		t.Error("unknown format encoded")
	}
}

// TestParseUnsortedFamilies checks that families out of order, or repeated further on,
// come out sorted and merged, as from a sorted body.
func TestParseUnsortedFamilies(t *testing.T) {
	sorted := "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"2\"} 2\n# TYPE b counter\nb_total 3\n# TYPE c untyped\nc 4\n"
	for _, body := range []string{
		"# TYPE b counter\nb_total 3\n# TYPE a gauge\na{x=\"1\"} 1\n# TYPE c untyped\nc 4\n# TYPE a gauge\na{x=\"2\"} 2\n",
		"# TYPE c untyped\nc 4\n# TYPE b counter\nb_total 3\n# TYPE a gauge\na{x=\"1\"} 1\na{x=\"2\"} 2\n",
		"# TYPE a gauge\na{x=\"1\"} 1\n# TYPE b counter\nb_total 3\n# TYPE a gauge\na{x=\"2\"} 2\n# TYPE c untyped\nc 4\n",
	} {
		want, err := Parse([]byte(sorted), fixture.TextContentType)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Parse([]byte(body), fixture.TextContentType)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := asText(t, got), asText(t, want); g != w {
			t.Errorf("body\n%s\nparsed as\n%s", body, diff(g, w))
		}
	}
}
