package scrape

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"gopkg.in/yaml.v3"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// testJob is a job asking for Prometheus 3's default formats, a 5 s timeout and a 32 MiB
// body size limit, as mod changes it.
func testJob(t *testing.T, mod func(j *Job)) Job {
	t.Helper()
	j := Job{
		Name: "j", Timeout: 5 * time.Second, BodySizeLimit: 32 << 20, Compression: true,
		Accept: "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.7,application/openmetrics-text;version=0.0.1;q=0.6," +
			"text/plain;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.3",
	}
	if mod != nil {
		mod(&j)
	}
	return j
}

func scrapeURL(t *testing.T, j Job, url string) *Result {
	t.Helper()
	s, err := New(j, "test")
	if err != nil {
		t.Fatal(err)
	}
	return s.Scrape(context.Background(), Target{Name: "t", URL: url})
}

func parseText(t *testing.T, b []byte) map[string]int {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	out := map[string]int{}
	for n, f := range fams {
		out[n] = len(f.GetMetric())
	}
	return out
}

func TestCaptures(t *testing.T) {
	for _, name := range []string{fixture.NodeExporter, fixture.Prometheus, fixture.PushGateway} {
		t.Run(name, func(t *testing.T) {
			want := fixture.Read(t, name)
			srv := fixture.ServeCapture(t, name)
			r := scrapeURL(t, testJob(t, nil), srv.URL+"/metrics")
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			if !bytes.Equal(r.Body, want) {
				t.Error("body differs from what the target served")
			}
			if r.HTTPStatus != 200 || r.ContentType != fixture.TextContentType || r.Job != "j" || r.Instance != "t" {
				t.Errorf("result = %+v", r)
			}
			lines := 0
			for _, l := range bytes.Split(want, []byte("\n")) {
				if len(l) > 0 && l[0] != '#' {
					lines++
				}
			}
			if r.Series != lines {
				t.Errorf("series = %d, want %d (sample lines)", r.Series, lines)
			}
		})
	}
}

func TestRequest(t *testing.T) {
	var got http.Header
	srv := fixture.Serve(t, nil, "")
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		w.Header().Set("Content-Type", fixture.TextContentType)
		_, _ = w.Write([]byte("up 1\n"))
	})
	r := scrapeURL(t, testJob(t, nil), srv.URL)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if !strings.HasPrefix(got.Get("Accept"), "application/openmetrics-text;version=1.0.0") {
		t.Errorf("Accept = %q", got.Get("Accept"))
	}
	if got.Get("Accept-Encoding") != "gzip" || got.Get("User-Agent") != "test" || got.Get("X-Prometheus-Scrape-Timeout-Seconds") != "5" {
		t.Errorf("headers = %v", got)
	}
}

func TestGzip(t *testing.T) {
	want := fixture.Read(t, fixture.NodeExporter)
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	_, _ = zw.Write(want)
	_ = zw.Close()
	srv := fixture.Serve(t, nil, "")
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", fixture.TextContentType)
		w.Header().Set("Content-Encoding", "gzip")
		_, _ = w.Write(zb.Bytes())
	})
	r := scrapeURL(t, testJob(t, nil), srv.URL)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if !bytes.Equal(r.Body, want) {
		t.Error("gunzipped body differs")
	}
	// The cap applies to the uncompressed size: a small gzip of a large body is caught.
	r = scrapeURL(t, testJob(t, func(j *Job) { j.BodySizeLimit = 10 << 10 }), srv.URL)
	if !errors.Is(r.Err, ErrBodyTooLarge) {
		t.Errorf("err = %v, want body size limit", r.Err)
	}
	// A compressed body longer than one gzip member of limit bytes can be is read as it
	// is decompressed: refused past the limit, taken whole within it when it is many
	// members; one whose trailer lies about its size is still read whole (and its
	// checksum then refuses it).
	noise := make([]byte, 64<<10)
	for i := range noise {
		noise[i] = byte(i*7919 + i>>5)
	}
	var nz bytes.Buffer
	nw, _ := gzip.NewWriterLevel(&nz, gzip.NoCompression)
	_, _ = nw.Write(noise)
	_ = nw.Close()
	var members bytes.Buffer // a member per line: more gzip than text
	for l := range strings.Lines(string(want)) {
		mw := gzip.NewWriter(&members)
		_, _ = mw.Write([]byte(l))
		_ = mw.Close()
	}
	lying := slices.Clone(zb.Bytes())
	binary.LittleEndian.PutUint32(lying[len(lying)-4:], 100)
	for _, c := range []struct {
		body    []byte
		limit   int64
		wantErr error
		want    string
	}{
		{nz.Bytes(), 16 << 10, ErrBodyTooLarge, "more than 16384 bytes"},
		{nz.Bytes(), 1 << 20, nil, ""},
		{members.Bytes(), int64(len(want)) + 10, nil, "valid"},
		{lying, 1 << 20, ErrInvalidBody, ""},
	} {
		srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", fixture.TextContentType)
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(c.body)
		})
		r = scrapeURL(t, testJob(t, func(j *Job) { j.BodySizeLimit = c.limit }), srv.URL)
		switch {
		case c.wantErr == nil && (r.HTTPStatus != 200 || errors.Is(r.Err, ErrBodyTooLarge) || r.RawSize != len(noise) && r.RawSize != len(want)):
			t.Errorf("limit %d: read %d bytes (err %v)", c.limit, r.RawSize, r.Err)
		case c.want == "valid" && (r.Err != nil || !bytes.Equal(r.Body, want)):
			t.Errorf("many members: err %v, body of %d bytes", r.Err, len(r.Body))
		case c.wantErr != nil && (!errors.Is(r.Err, c.wantErr) || !strings.Contains(r.Err.Error(), c.want)):
			t.Errorf("limit %d: err = %v, want %v (%q)", c.limit, r.Err, c.wantErr, c.want)
		}
	}
}

// TestCompressionOff: with enable_compression off, the target is asked for the body as
// it is, and a target that compresses when it may (client_golang's handler) sends it so.
func TestCompressionOff(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "G."}))
	promh := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	var asked, served []string
	srv := fixture.Serve(t, nil, "")
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = append(asked, r.Header.Get("Accept-Encoding"))
		promh.ServeHTTP(w, r)
		served = append(served, w.Header().Get("Content-Encoding"))
	})
	for _, on := range []bool{true, false} {
		r := scrapeURL(t, testJob(t, func(j *Job) { j.Compression = on }), srv.URL)
		if r.Err != nil || r.Series != 1 {
			t.Fatalf("compression %v: err %v, %d series", on, r.Err, r.Series)
		}
	}
	if fmt.Sprint(asked) != "[gzip identity]" || fmt.Sprint(served) != "[gzip ]" {
		t.Errorf("Accept-Encoding asked %q, Content-Encoding served %q; want gzip then identity, gzip then none", asked, served)
	}
}

// TestOpenMetrics scrapes a client_golang registry served with OpenMetrics enabled.
func TestOpenMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "requests_total", Help: "Requests."}, []string{"code"})
	c.WithLabelValues("200").Add(3)
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "latency_seconds", Help: "Latency.", Buckets: []float64{0.1, 1}})
	h.Observe(0.5)
	reg.MustRegister(c, h)
	srv := fixture.Serve(t, nil, "")
	srv.Config.Handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true})

	r := scrapeURL(t, testJob(t, nil), srv.URL)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if !strings.HasPrefix(r.ContentType, "application/openmetrics-text") {
		t.Fatalf("content type %q: OpenMetrics was not negotiated", r.ContentType)
	}
	if !bytes.HasSuffix(r.Body, []byte("# EOF\n")) {
		t.Errorf("body is not OpenMetrics:\n%s", r.Body)
	}
	// requests_total (1) + latency: 3 buckets, _sum, _count (5); _created series are not samples.
	if r.Series != 6 {
		t.Errorf("series = %d, want 6:\n%s", r.Series, r.Body)
	}
}

func TestFailures(t *testing.T) {
	closed := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return "http://" + addr + "/metrics"
	}()
	serve := func(status int, ct, body string, delay time.Duration) string {
		srv := fixture.Serve(t, nil, "")
		srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if delay > 0 {
				select {
				case <-time.After(delay):
				case <-r.Context().Done():
					return
				}
			}
			w.Header().Set("Content-Type", ct)
			w.WriteHeader(status)
			_, _ = w.Write([]byte(body))
		})
		return srv.URL
	}
	big := strings.Repeat("a_metric 1\n", 2000)
	tests := []struct {
		name    string
		url     string
		mod     func(*Job)
		wantErr error
		want    string
		status  int
	}{
		{"down", closed, nil, nil, "connection refused", 0},
		{"timeout", serve(200, fixture.TextContentType, "up 1\n", 10*time.Second), func(j *Job) { j.Timeout = 200 * time.Millisecond }, ErrScrapeTimeout, "after 200ms", 0},
		{"oversized", serve(200, fixture.TextContentType, big, 0), func(j *Job) { j.BodySizeLimit = 1000 }, ErrBodyTooLarge, "1000", 200},
		{"non-2xx", serve(503, "text/plain", "down for maintenance", 0), nil, ErrHTTPStatus, "503 Service Unavailable", 503},
		{"not found", serve(404, "text/plain", "no", 0), nil, ErrHTTPStatus, "404", 404},
		{"invalid body", serve(200, fixture.TextContentType, "this is not { an exposition\n", 0), nil, ErrInvalidBody, "", 200},
		{"invalid openmetrics", serve(200, "application/openmetrics-text; version=1.0.0", "a 1\n", 0), nil, ErrInvalidBody, "", 200},
		{"html", serve(200, "text/html", "<html></html>", 0), nil, ErrContentType, "text/html", 200},
		{"sample limit", serve(200, fixture.TextContentType, big, 0), func(j *Job) { j.SampleLimit = 100 }, ErrSampleLimit, "2000 samples, limit 100", 200},
		{"label limit", serve(200, fixture.TextContentType, "m{a=\"1\",b=\"2\",c=\"3\"} 1\n", 0), func(j *Job) { j.LabelLimit = 5 }, ErrLabelLimit, "6 labels, limit 5", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			r := scrapeURL(t, testJob(t, tt.mod), tt.url)
			if r.Err == nil {
				t.Fatal("scrape succeeded")
			}
			if tt.wantErr != nil && !errors.Is(r.Err, tt.wantErr) {
				t.Errorf("err = %v, want %v", r.Err, tt.wantErr)
			}
			if !strings.Contains(r.Err.Error(), tt.want) {
				t.Errorf("err = %q, want it to contain %q", r.Err, tt.want)
			}
			if r.HTTPStatus != tt.status {
				t.Errorf("status = %d, want %d", r.HTTPStatus, tt.status)
			}
			if r.Body != nil {
				t.Error("failed scrape has a body")
			}
			if r.Duration <= 0 || r.Duration > time.Since(start) {
				t.Errorf("duration = %s", r.Duration)
			}
		})
	}
}

func TestUTF8Names(t *testing.T) {
	body := "# HELP \"my.utf8.metric\" A dotted name.\n# TYPE \"my.utf8.metric\" gauge\n{\"my.utf8.metric\",\"some.label\"=\"x\"} 1\n"
	out, n, err := Process(context.Background(), []byte(body), fixture.TextContentType, Limits{}, Relabel{})
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || string(out) != body {
		t.Errorf("n=%d out=%q", n, out)
	}
	// Relabelling writes UTF-8 names back in the quoted form.
	out, _, err = Process(context.Background(), []byte(body), fixture.TextContentType, Limits{}, Relabel{Configs: relabels(t, "- {source_labels: [__name__], regex: nothing, action: drop}")})
	if err != nil {
		t.Fatal(err)
	}
	if got := parseText(t, out); got["my.utf8.metric"] != 1 {
		t.Errorf("relabelled = %q", out)
	}
}

func relabels(t testing.TB, y string) []*relabel.Config {
	t.Helper()
	var rcs []*relabel.Config
	if err := yaml.Unmarshal([]byte(y), &rcs); err != nil {
		t.Fatal(err)
	}
	for _, rc := range rcs {
		if err := rc.Validate(model.UTF8Validation); err != nil {
			t.Fatal(err)
		}
	}
	return rcs
}

func TestRelabel(t *testing.T) {
	node := fixture.Read(t, fixture.NodeExporter)
	before := parseText(t, node)
	tests := []struct {
		name  string
		rules string
		check func(t *testing.T, got map[string]int, body []byte)
	}{
		{"drop by name", "- {source_labels: [__name__], regex: 'node_cpu_.*', action: drop}", func(t *testing.T, got map[string]int, _ []byte) {
			for n := range got {
				if strings.HasPrefix(n, "node_cpu_") {
					t.Errorf("%s kept", n)
				}
			}
			if got["node_load1"] != 1 || len(got) != len(before)-countPrefix(before, "node_cpu_") {
				t.Errorf("%d families left of %d", len(got), len(before))
			}
		}},
		{"drop one summary quantile", "- {source_labels: [__name__, quantile], regex: 'go_gc_duration_seconds;0.5', action: drop}", func(t *testing.T, got map[string]int, body []byte) {
			if bytes.Contains(body, []byte(`go_gc_duration_seconds{quantile="0.5"}`)) {
				t.Error("quantile 0.5 kept")
			}
		}},
		{"keep", "- {source_labels: [__name__], regex: 'node_memory_MemTotal_bytes|node_load1', action: keep}", func(t *testing.T, got map[string]int, _ []byte) {
			if len(got) != 2 {
				t.Errorf("families = %v", got)
			}
		}},
		{"labeldrop", "- {regex: 'mode', action: labeldrop}\n- {source_labels: [__name__], regex: 'node_cpu_seconds_total', action: keep}", func(t *testing.T, got map[string]int, body []byte) {
			if bytes.Contains(body, []byte("mode=")) {
				t.Error("mode label kept")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, n, err := Process(context.Background(), node, fixture.TextContentType, Limits{}, Relabel{Configs: relabels(t, tt.rules)})
			if err != nil {
				t.Fatal(err)
			}
			got := parseText(t, out)
			if n <= 0 {
				t.Errorf("series = %d", n)
			}
			tt.check(t, got, out)
		})
	}
}

func countPrefix(m map[string]int, p string) int {
	n := 0
	for k := range m {
		if strings.HasPrefix(k, p) {
			n++
		}
	}
	return n
}

// TestRelabelIdentity checks that relabelling with a rule that matches nothing rewrites
// every capture into an exposition with the same families and series.
func TestRelabelIdentity(t *testing.T) {
	for _, name := range []string{fixture.NodeExporter, fixture.Prometheus, fixture.PushGateway} {
		body := fixture.Read(t, name)
		out, n, err := Process(context.Background(), body, fixture.TextContentType, Limits{}, Relabel{Configs: relabels(t, "- {source_labels: [__name__], regex: nothing, action: drop}")})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_, n0, _ := Process(context.Background(), body, fixture.TextContentType, Limits{}, Relabel{})
		a, b := parseText(t, body), parseText(t, out)
		if len(a) != len(b) || n != n0 {
			t.Errorf("%s: %d families/%d series, want %d/%d", name, len(b), n, len(a), n0)
		}
		for k, v := range a {
			if b[k] != v {
				t.Errorf("%s: %s has %d series, want %d", name, k, b[k], v)
			}
		}
	}
}

func TestRelabelOpenMetrics(t *testing.T) {
	body := "# TYPE requests counter\n# HELP requests Requests.\nrequests_total{code=\"200\"} 3 # {trace_id=\"abc\"} 1 1700000000.5\nrequests_total{code=\"500\"} 1\n# EOF\n"
	out, n, err := Process(context.Background(), []byte(body), "application/openmetrics-text; version=1.0.0", Limits{}, Relabel{Configs: relabels(t, "- {source_labels: [code], regex: '500', action: drop}")})
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || !bytes.Contains(out, []byte(`# {trace_id="abc"} 1 1700000000.5`)) || bytes.Contains(out, []byte("500")) || !bytes.HasSuffix(out, []byte("# EOF\n")) {
		t.Errorf("n=%d out=\n%s", n, out)
	}
}

// TestRelabelSeesTargetLabels: rules match job, instance and static labels as in
// Prometheus, and those labels do not end up in the published body unless a rule
// changed them.
func TestRelabelSeesTargetLabels(t *testing.T) {
	body := []byte("# TYPE a gauge\na 1\n# TYPE b gauge\nb{instance=\"own\"} 2\n")
	target := labels.FromStrings("job", "node", "instance", "host1", "dc", "dc1")
	tests := []struct {
		rules string
		want  string
	}{
		// drop every series of dc1's node job whose name is a
		{"- {source_labels: [dc, __name__], regex: 'dc1;a', action: drop}", "# TYPE b gauge\nb{instance=\"own\"} 2\n"},
		// keep only what instance host1 exposes under that instance (b's own instance label wins)
		{"- {source_labels: [instance], regex: 'host1', action: keep}", "# TYPE a gauge\na 1\n"},
		// a rule that writes a label from the target's: the new label stays, the target's do not
		{"- {source_labels: [dc], target_label: site, replacement: 'site-$1'}", "# TYPE a gauge\na{site=\"site-dc1\"} 1\n# TYPE b gauge\nb{instance=\"own\",site=\"site-dc1\"} 2\n"},
	}
	for _, tt := range tests {
		out, _, err := Process(context.Background(), body, fixture.TextContentType, Limits{}, Relabel{Configs: relabels(t, tt.rules), Target: target})
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.rules, out, tt.want)
		}
	}
}

// TestLabelLimitStaticOnce: a static label the job and the target both set is one label
// on the series (the target's value wins), and label_limit counts it once, as
// Prometheus does: __name__, job, instance and env are 4.
func TestLabelLimitStaticOnce(t *testing.T) {
	srv := fixture.Serve(t, nil, "")
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", fixture.TextContentType)
		_, _ = w.Write([]byte("up 1\n"))
	})
	j := testJob(t, func(j *Job) { j.LabelLimit, j.Labels = 4, map[string]string{"env": "a"} })
	s, err := New(j, "test")
	if err != nil {
		t.Fatal(err)
	}
	r := s.Scrape(context.Background(), Target{Name: "t", URL: srv.URL, Labels: map[string]string{"env": "b"}})
	if r.Err != nil {
		t.Errorf("err = %v, want the 4 labels within label_limit 4", r.Err)
	}
	r = s.Scrape(context.Background(), Target{Name: "t", URL: srv.URL, Labels: map[string]string{"rack": "b"}})
	if !errors.Is(r.Err, ErrLabelLimit) {
		t.Errorf("err = %v, want 5 labels over label_limit 4", r.Err)
	}
}
