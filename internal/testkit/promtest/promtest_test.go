package promtest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/promtest"
)

var binaries = []promtest.Binary{promtest.Prometheus2, promtest.Prometheus3}

// answer is a remote-write response.
type answer struct {
	status int
	header http.Header
	body   string
}

func (a answer) String() string { return fmt.Sprintf("%d %q", a.status, a.body) }

// post sends one snappy-compressed remote-write request.
func post(t *testing.T, url, contentType, version string, pb []byte) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, bytes.NewReader(snappy.Encode(nil, pb)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("X-Prometheus-Remote-Write-Version", version)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, strings.TrimSpace(string(body))}
}

// sample is one sample of the series ls.
type sample struct {
	ls labels.Labels
	v  float64
	ts time.Time
}

// writeV1 sends the samples in one remote-write 1.0 request, a series each.
func writeV1(t *testing.T, s *promtest.Server, samples ...sample) answer {
	t.Helper()
	req := &prompb.WriteRequest{}
	for _, smp := range samples {
		var pl []prompb.Label
		smp.ls.Range(func(l labels.Label) { pl = append(pl, prompb.Label{Name: l.Name, Value: l.Value}) })
		req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
			Labels:  pl,
			Samples: []prompb.Sample{{Value: smp.v, Timestamp: smp.ts.UnixMilli()}},
		})
	}
	pb, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return post(t, s.RemoteWriteURL(), "application/x-protobuf", "0.1.0", pb)
}

// writeV2 sends the samples in one remote-write 2.0 request, a series each, as
// gauges with help and unit.
func writeV2(t *testing.T, s *promtest.Server, samples ...sample) answer {
	t.Helper()
	st := writev2.NewSymbolTable()
	req := &writev2.Request{}
	for _, smp := range samples {
		req.Timeseries = append(req.Timeseries, writev2.TimeSeries{
			LabelsRefs: st.SymbolizeLabels(smp.ls, nil),
			Samples:    []writev2.Sample{{Value: smp.v, Timestamp: smp.ts.UnixMilli()}},
			Metadata: writev2.Metadata{
				Type:    writev2.Metadata_METRIC_TYPE_GAUGE,
				HelpRef: st.Symbolize("A test gauge."),
				UnitRef: st.Symbolize("seconds"),
			},
		})
	}
	req.Symbols = st.Symbols()
	pb, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return post(t, s.RemoteWriteURL(), "application/x-protobuf;proto=io.prometheus.write.v2.Request", "2.0.0", pb)
}

// checkSample fails the test unless query returns one series with value v,
// stored at ts.
func checkSample(t *testing.T, s *promtest.Server, query string, v float64, ts time.Time) {
	t.Helper()
	ctx := context.Background()
	got, err := s.Query(ctx, query, ts)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || float64(got[0].Value) != v {
		t.Fatalf("%s = %v, want one series of value %v", query, got, v)
	}
	if want := model.TimeFromUnixNano(ts.UnixNano()); got[0].Timestamp != want {
		t.Errorf("%s evaluated at %v, want %v", query, got[0].Timestamp, want)
	}
	stamp, err := s.Query(ctx, "timestamp("+query+")", ts)
	if err != nil {
		t.Fatal(err)
	}
	if want := float64(ts.UnixMilli()) / 1000; len(stamp) != 1 || math.Abs(float64(stamp[0].Value)-want) > 0.0005 {
		t.Errorf("timestamp(%s) = %v, want %.3f", query, stamp, want)
	}
}

func TestRemoteWriteV1(t *testing.T) {
	for _, b := range binaries {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			s := promtest.Start(t, promtest.Options{Binary: b})
			t.Logf("%v ready in %v", b, time.Since(start).Round(time.Millisecond))
			if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
				t.Fatalf("URL %q is not on loopback", s.URL())
			}
			ts := time.Now().Add(-time.Second).Truncate(time.Millisecond)
			ls := labels.FromStrings("__name__", "promtest_v1", "job", "j", "instance", "i")
			if a := writeV1(t, s, sample{ls, 42, ts}); a.status != http.StatusNoContent {
				t.Fatalf("remote write: %v, want 204", a)
			}
			checkSample(t, s, `promtest_v1{job="j",instance="i"}`, 42, ts)

			series, err := s.Series(context.Background(), "promtest_v1")
			if err != nil {
				t.Fatal(err)
			}
			want := model.LabelSet{"__name__": "promtest_v1", "job": "j", "instance": "i"}
			if len(series) != 1 || !series[0].Equal(want) {
				t.Errorf("series %v, want [%v]", series, want)
			}
		})
	}
}

func TestRemoteWriteV2(t *testing.T) {
	s := promtest.Start(t, promtest.Options{Binary: promtest.Prometheus3, RemoteWriteV2: true})
	ts := time.Now().Add(-time.Second).Truncate(time.Millisecond)
	a := writeV2(t, s, sample{labels.FromStrings("__name__", "promtest_v2", "job", "j"), 7.5, ts})
	if a.status != http.StatusNoContent {
		t.Fatalf("remote write 2.0: %v, want 204", a)
	}
	if got := a.header.Get("X-Prometheus-Remote-Write-Samples-Written"); got != "1" {
		t.Errorf("X-Prometheus-Remote-Write-Samples-Written: %q, want 1", got)
	}
	checkSample(t, s, `promtest_v2{job="j"}`, 7.5, ts)

	// 1.0 is still accepted beside 2.0, answered without the 2.0 headers.
	a = writeV1(t, s, sample{labels.FromStrings("__name__", "promtest_v1", "job", "j"), 1, ts})
	if a.status != http.StatusNoContent {
		t.Fatalf("remote write 1.0: %v, want 204", a)
	}
	if got := a.header.Get("X-Prometheus-Remote-Write-Samples-Written"); got != "" {
		t.Errorf("1.0: X-Prometheus-Remote-Write-Samples-Written: %q, want none", got)
	}
}

// Prometheus 2 reads a 2.0 request as a 1.0 one whose fields it does not know:
// an empty request, answered 204 without the Written headers, and nothing is
// stored. A 2.0 sender learns that it talks to a 1.0 receiver only from the
// missing X-Prometheus-Remote-Write-Samples-Written header.
func TestRemoteWriteV2ToPrometheus2(t *testing.T) {
	s := promtest.Start(t, promtest.Options{Binary: promtest.Prometheus2})
	ts := time.Now().Truncate(time.Millisecond)
	a := writeV2(t, s, sample{labels.FromStrings("__name__", "promtest_v2", "job", "j"), 1, ts})
	t.Logf("2.0 request to Prometheus 2: %v, headers %v", a, a.header)
	if a.status != http.StatusNoContent {
		t.Errorf("status %v, want 204", a)
	}
	if got := a.header.Get("X-Prometheus-Remote-Write-Samples-Written"); got != "" {
		t.Errorf("X-Prometheus-Remote-Write-Samples-Written: %q, want none", got)
	}
	series, err := s.Series(context.Background(), `{job="j"}`)
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 0 {
		t.Errorf("series %v stored from a 2.0 request", series)
	}
}

// Without RemoteWriteV2, Prometheus 3 is a 1.0-only receiver, as most are.
func TestRemoteWriteV2Refused(t *testing.T) {
	s := promtest.Start(t, promtest.Options{Binary: promtest.Prometheus3})
	ts := time.Now().Truncate(time.Millisecond)
	a := writeV2(t, s, sample{labels.FromStrings("__name__", "promtest_v2", "job", "j"), 1, ts})
	t.Logf("2.0 request to a 1.0-only Prometheus 3: %v", a)
	if a.status != http.StatusUnsupportedMediaType {
		t.Fatalf("remote write 2.0 to a 1.0 receiver: %v, want 415", a)
	}
	if a := writeV1(t, s, sample{labels.FromStrings("__name__", "promtest_v1", "job", "j"), 1, ts}); a.status != http.StatusNoContent {
		t.Fatalf("remote write 1.0: %v, want 204", a)
	}
}

// The answers to samples the TSDB cannot take, which a remote-write sender must
// treat as permanent failures (not retry forever). A 1.0 request with one such
// sample is rolled back whole; 2.0 writes the others and says how many.
func TestRemoteWriteRejected(t *testing.T) {
	for _, c := range []struct {
		name  string
		opts  promtest.Options
		write func(*testing.T, *promtest.Server, ...sample) answer
		mixed int // samples the mixed request writes
	}{
		{"Prometheus 2, 1.0", promtest.Options{Binary: promtest.Prometheus2}, writeV1, 0},
		{"Prometheus 3, 1.0", promtest.Options{Binary: promtest.Prometheus3}, writeV1, 0},
		{"Prometheus 3, 2.0", promtest.Options{Binary: promtest.Prometheus3, RemoteWriteV2: true}, writeV2, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := promtest.Start(t, c.opts)
			now := time.Now().Truncate(time.Millisecond)
			ls := labels.FromStrings("__name__", "promtest_old", "job", "j")
			if a := c.write(t, s, sample{ls, 1, now}); a.status != http.StatusNoContent {
				t.Fatalf("first sample: %v", a)
			}
			for _, r := range []struct {
				name string
				ls   labels.Labels
				ts   time.Time
			}{
				{"out of order (10s before the last)", ls, now.Add(-10 * time.Second)},
				{"same timestamp, other value", ls, now},
				{"3h old", ls, now.Add(-3 * time.Hour)},
				{"10d old", ls, now.Add(-10 * 24 * time.Hour)},
				{"10d old, new series", labels.FromStrings("__name__", "promtest_old_new", "job", "j"), now.Add(-10 * 24 * time.Hour)},
			} {
				a := c.write(t, s, sample{r.ls, 2, r.ts})
				t.Logf("%s: %v", r.name, a)
				if a.status != http.StatusBadRequest {
					t.Errorf("%s: %v, want 400", r.name, a)
				}
			}
			checkSample(t, s, `promtest_old{job="j"}`, 1, now)

			// A fresh sample of another series beside an out-of-order one.
			fresh := labels.FromStrings("__name__", "promtest_fresh", "job", "j")
			a := c.write(t, s, sample{fresh, 5, now}, sample{ls, 2, now.Add(-10 * time.Second)})
			t.Logf("mixed: %v, samples written %q", a, a.header.Get("X-Prometheus-Remote-Write-Samples-Written"))
			if a.status != http.StatusBadRequest {
				t.Errorf("mixed: %v, want 400", a)
			}
			got, err := s.Query(context.Background(), "promtest_fresh", now)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != c.mixed {
				t.Errorf("mixed: the good sample's series %v, want %d written", got, c.mixed)
			}
		})
	}
}

func TestStopRestart(t *testing.T) {
	for _, b := range binaries {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			s := promtest.Start(t, promtest.Options{Binary: b})
			url := s.URL()
			ts := time.Now().Truncate(time.Millisecond)
			ls := labels.FromStrings("__name__", "promtest_kept", "job", "j")
			if a := writeV1(t, s, sample{ls, 3, ts}); a.status != http.StatusNoContent {
				t.Fatalf("remote write: %v", a)
			}
			s.Stop()
			s.Stop() // idempotent
			_, err := http.Get(s.RemoteWriteURL())
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("stopped server: got %v, want connection refused", err)
			}
			start := time.Now()
			s.Restart(t)
			t.Logf("%v restarted in %v", b, time.Since(start).Round(time.Millisecond))
			if s.URL() != url {
				t.Fatalf("restarted at %s, was %s", s.URL(), url)
			}
			checkSample(t, s, `promtest_kept`, 3, ts) // from the WAL
			s.Restart(t)                              // from running
			checkSample(t, s, `promtest_kept`, 3, ts)
		})
	}
}

// target serves an exposition in the text format, as an exporter would.
func target(t *testing.T, exposition string) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = io.WriteString(w, exposition)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func scrapeConfig(job, url string) string {
	return fmt.Sprintf("- job_name: %s\n  static_configs:\n    - targets: [%q]\n", job, strings.TrimPrefix(url, "http://"))
}

// Each server scrapes a loopback target every second, as it would scrape what
// the streams carry; Reload adds a second one.
func TestScrape(t *testing.T) {
	a := target(t, "# HELP promtest_scraped A scraped gauge.\n# TYPE promtest_scraped gauge\npromtest_scraped 5\n")
	b := target(t, "promtest_other 6\n")
	for _, bin := range binaries {
		t.Run(bin.String(), func(t *testing.T) {
			t.Parallel()
			s := promtest.Start(t, promtest.Options{Binary: bin, ScrapeConfigs: scrapeConfig("a", a.URL)})
			v := s.WaitForSeries(t, `promtest_scraped{job="a"}`, 1)
			if v[0].Value != 5 {
				t.Errorf("promtest_scraped = %v, want 5", v[0].Value)
			}
			// up and its siblings come every second: two samples within 3s.
			s.WaitFor(t, `count_over_time(up{job="a"}[3s])`, func(v model.Vector) bool {
				return len(v) == 1 && v[0].Value >= 2
			})
			md, err := s.Metadata(context.Background(), "promtest_scraped")
			if err != nil {
				t.Fatal(err)
			}
			want := promtest.Metadata{Type: model.MetricTypeGauge, Help: "A scraped gauge."}
			if len(md) != 1 || md[0] != want {
				t.Errorf("metadata %+v, want [%+v]", md, want)
			}

			s.Reload(t, scrapeConfig("a", a.URL)+scrapeConfig("b", b.URL))
			s.WaitForSeries(t, `promtest_other{job="b"}`, 1)
		})
	}
}

// Remote-written metadata does not reach /api/v1/metadata (served from scrape
// targets only); with type-and-unit-labels, Prometheus 3 keeps 2.0's type and
// unit as labels.
func TestRemoteWriteV2Metadata(t *testing.T) {
	s := promtest.Start(t, promtest.Options{
		Binary:        promtest.Prometheus3,
		RemoteWriteV2: true,
		Features:      []string{"type-and-unit-labels"},
	})
	ts := time.Now().Truncate(time.Millisecond)
	if a := writeV2(t, s, sample{labels.FromStrings("__name__", "promtest_v2", "job", "j"), 1, ts}); a.status != http.StatusNoContent {
		t.Fatalf("remote write 2.0: %v", a)
	}
	series, err := s.Series(context.Background(), "promtest_v2")
	if err != nil {
		t.Fatal(err)
	}
	want := model.LabelSet{"__name__": "promtest_v2", "job": "j", "__type__": "gauge", "__unit__": "seconds"}
	if len(series) != 1 || !series[0].Equal(want) {
		t.Errorf("series %v, want [%v]", series, want)
	}
	md, err := s.Metadata(context.Background(), "promtest_v2")
	if err != nil {
		t.Fatal(err)
	}
	if len(md) != 0 {
		t.Errorf("metadata %+v: remote-written metadata now reach /api/v1/metadata", md)
	}
}

func TestQueryErrors(t *testing.T) {
	s := promtest.Start(t, promtest.Options{Binary: promtest.Prometheus2})
	_, err := s.Query(context.Background(), "up{", time.Time{})
	var apiErr *promtest.APIError
	if !errors.As(err, &apiErr) || apiErr.Type != "bad_data" || apiErr.StatusCode != http.StatusBadRequest {
		t.Errorf("bad query: %v, want a 400 bad_data APIError", err)
	}
	if _, err := s.Query(context.Background(), "1", time.Time{}); err == nil {
		t.Error("scalar result: no error")
	}
	v, err := s.Version(context.Background())
	if err != nil || !strings.HasPrefix(v, "2.") {
		t.Errorf("version %q, %v: want 2.x", v, err)
	}
}

func TestQueryRange(t *testing.T) {
	s := promtest.Start(t, promtest.Options{Binary: promtest.Prometheus3})
	now := time.Now().Truncate(time.Second)
	ls := labels.FromStrings("__name__", "promtest_range", "job", "j")
	for i := range 3 {
		if a := writeV1(t, s, sample{ls, float64(i), now.Add(time.Duration(i-2) * time.Second)}); a.status != http.StatusNoContent {
			t.Fatalf("remote write: %v", a)
		}
	}
	m, err := s.QueryRange(context.Background(), "promtest_range", now.Add(-2*time.Second), now, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || len(m[0].Values) != 3 || m[0].Values[2].Value != 2 {
		t.Errorf("range %v, want 0 1 2", m)
	}
}

func TestRemoteWriteV2OnPrometheus2Fails(t *testing.T) {
	msg := startFails(t, promtest.Options{Binary: promtest.Prometheus2, RemoteWriteV2: true})
	if !strings.Contains(msg, "Prometheus3") {
		t.Errorf("got Fatal %q, want one naming Prometheus3", msg)
	}
}

func TestMissingBinaryFails(t *testing.T) {
	t.Run("Prometheus 2", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		if msg := startFails(t, promtest.Options{}); !strings.Contains(msg, "apt-get install prometheus") {
			t.Errorf("got Fatal %q, want one naming the package", msg)
		}
	})
	t.Run("Prometheus 3 not built", func(t *testing.T) {
		t.Setenv("XDG_CACHE_HOME", t.TempDir())
		if msg := startFails(t, promtest.Options{Binary: promtest.Prometheus3}); !strings.Contains(msg, "systemd/tools.sh prometheus") {
			t.Errorf("got Fatal %q, want one naming systemd/tools.sh", msg)
		}
	})
	t.Run("PROMETHEUS3_BINARY", func(t *testing.T) {
		t.Setenv("PROMETHEUS3_BINARY", filepath.Join(t.TempDir(), "elsewhere"))
		if msg := startFails(t, promtest.Options{Binary: promtest.Prometheus3}); !strings.Contains(msg, "elsewhere") {
			t.Errorf("$PROMETHEUS3_BINARY ignored: %q", msg)
		}
	})
}

// fatalTB records a Fatal and stops the calling code, as t.Fatal would.
type fatalTB struct {
	testing.TB
	msg string
}

type fatal struct{}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(fatal{})
}

// startFails runs Start and returns its Fatal message, failing the test if
// there is none.
func startFails(t *testing.T, opts promtest.Options) string {
	t.Helper()
	tb := &fatalTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(fatal); !ok {
					panic(r)
				}
			}
		}()
		promtest.Start(tb, opts)
	}()
	if tb.msg == "" {
		t.Fatal("Start did not fail")
	}
	return tb.msg
}
