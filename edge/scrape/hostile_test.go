package scrape

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

const omType = "application/openmetrics-text; version=1.0.0"

// TestHostileBodies refuses, with a reason that is itself UTF-8, every body whose
// bytes a Prometheus parser would refuse once the drain serves them again.
func TestHostileBodies(t *testing.T) {
	tests := []struct {
		name, ct, body string
		want           string
	}{
		{"HELP", fixture.TextContentType, "# HELP m caf\xff\n# TYPE m gauge\nm 1\n", `line 1: byte 0xff at column 13 is not UTF-8: "# HELP m caf\xff"`},
		{"label value", fixture.TextContentType, "m 1\nm{a=\"\xfe\"} 1\n", "line 2: byte 0xfe at column 6"},
		{"label name", fixture.TextContentType, "m{\"a\xff\"=\"x\"} 1\n", "line 1: byte 0xff"},
		{"metric name", fixture.TextContentType, "{\"m\xff\"} 1\n", "line 1: byte 0xff"},
		{"TYPE name", fixture.TextContentType, "# TYPE \"m\xff\" gauge\n", "line 1: byte 0xff"},
		{"comment", fixture.TextContentType, "# just \xc3 a comment\nm 1\n", "line 1: byte 0xc3"},
		{"OpenMetrics UNIT", omType, "# TYPE m_seconds gauge\n# UNIT m_seconds sec\xffonds\nm_seconds 1\n# EOF\n", "line 2: byte 0xff"},
		{"OpenMetrics HELP", omType, "# HELP m \xff\nm 1\n# EOF\n", "line 1: byte 0xff"},
		{"OpenMetrics exemplar", omType, "# TYPE c counter\nc_total 1 # {trace_id=\"\xff\"} 1\n# EOF\n", "line 2: byte 0xff"},
		{"label twice", fixture.TextContentType, "m{a=\"1\",a=\"2\"} 1\n", `series "m": label "a" twice`},
		{"empty label name", fixture.TextContentType, "m{\"\"=\"1\"} 1\n", "empty metric or label name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Process(context.Background(), []byte(tt.body), tt.ct, Limits{}, Relabel{})
			if !errors.Is(err, ErrInvalidBody) {
				t.Fatalf("err = %v, want ErrInvalidBody", err)
			}
			if !utf8.ValidString(err.Error()) {
				t.Errorf("reason is not UTF-8: %q", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("reason %q does not say %q", err, tt.want)
			}
		})
	}
	// Names outside the legacy charset are valid UTF-8 and accepted, as Prometheus 3 does.
	for _, ok := range []string{"{\"caf\u00e9.m\",\"l\u00e9\"=\"v\u00e9\"} 1\n", "# HELP m \u65e5\u672c\nm 1\n"} {
		if _, _, err := Process(context.Background(), []byte(ok), fixture.TextContentType, Limits{}, Relabel{}); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}

// manyLabels is one series with n labels: 30,000 labels (319 KB) took expfmt, which
// validated text bodies before, close to a minute (quadratic in a series' labels).
func manyLabels(n int) []byte {
	var b strings.Builder
	b.WriteString("# TYPE wide gauge\nwide{")
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "l%d=\"v\"", i)
	}
	b.WriteString("} 1\n")
	return []byte(b.String())
}

// TestProcessBounded: validation is linear in the body, and stops when its context
// ends, so a target's whole work is bounded by its scrape_timeout.
func TestProcessBounded(t *testing.T) {
	body := manyLabels(30000)
	start := time.Now()
	_, n, err := Process(context.Background(), body, fixture.TextContentType, Limits{}, Relabel{})
	if err != nil || n != 1 {
		t.Fatalf("n=%d err=%v", n, err)
	}
	// Milliseconds without the race detector; the bound leaves room for it.
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("30,000 labels took %s", d)
	}
	_, _, err = Process(context.Background(), body, fixture.TextContentType, Limits{LabelLimit: 100}, Relabel{})
	if !errors.Is(err, ErrLabelLimit) || !utf8.ValidString(err.Error()) || len(err.Error()) > 300 {
		t.Errorf("label_limit: %v", err)
	}

	// A body larger than its deadline allows: the error wraps the context's.
	big := fixture.Replicate(t, fixture.NodeExporter, 200)
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	<-ctx.Done()
	for _, rl := range []Relabel{{}, {Configs: relabels(t, "- {source_labels: [__name__], regex: nothing, action: drop}")}} {
		_, _, err := Process(ctx, big, fixture.TextContentType, Limits{}, rl)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("relabel %v: err = %v, want the deadline", rl.Configs != nil, err)
		}
	}
}

// TestScrapeTimeoutCoversValidation: a scrape whose validation outlasts scrape_timeout
// fails with the timeout as its reason, like one whose fetch does.
func TestScrapeTimeoutCoversValidation(t *testing.T) {
	var b strings.Builder
	for i := range 100000 {
		fmt.Fprintf(&b, "m{i=\"%d\"} 1\n", i)
	}
	body := []byte(b.String())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", fixture.TextContentType)
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	// Relabelling every sample by many rules takes far longer than the fetch.
	var rules strings.Builder
	for i := range 200 {
		fmt.Fprintf(&rules, "- {source_labels: [__name__], regex: 'nothing_%d.*', action: drop}\n", i)
	}
	j := testJob(t, func(j *Job) {
		j.MetricRelabelConfigs = relabels(t, rules.String())
		j.Timeout = 300 * time.Millisecond
	})
	start := time.Now()
	r := scrapeURL(t, j, srv.URL)
	if !errors.Is(r.Err, ErrScrapeTimeout) {
		t.Fatalf("err = %v, want a timeout (%d bytes, %s)", r.Err, len(body), time.Since(start))
	}
	mustSay(t, r.Err.Error(), "scrape timed out after 300ms", "body")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the scrape took %s, past its 300ms", d)
	}
}

func mustSay(t *testing.T, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%q does not say %q", s, sub)
		}
	}
}
