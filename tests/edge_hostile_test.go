package tests

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
)

// serveBody serves body with the given Content-Type.
func serveBody(t *testing.T, ct string, body []byte) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", ct)
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s.URL
}

// serveRaw answers every connection with response, bytes as they are: what no
// net/http server would send.
func serveRaw(t *testing.T, response string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				_, _ = c.Read(buf) // the request
				_, _ = c.Write([]byte(response))
			}()
		}
	}()
	return "http://" + l.Addr().String()
}

// wideSeries is one series with n labels.
func wideSeries(n int) []byte {
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

// TestScrapeOnceHostileTargets: bytes that are not UTF-8, wherever a target puts them,
// fail that target's scrape with a reason (itself UTF-8), and a series of 30,000 labels
// (319 KB) is validated in well under its scrape_timeout, so the run ends within
// run_timeout; the other targets are published as ever.
func TestScrapeOnceHostileTargets(t *testing.T) {
	srv := stantest.Start(t)
	ok := fixture.ServeCapture(t, fixture.PushGateway)
	const om = "application/openmetrics-text; version=1.0.0"
	targets := map[string]string{
		"ok":     ok.URL + "/metrics",
		"help":   serveBody(t, fixture.TextContentType, []byte("# HELP m caf\xff\n# TYPE m gauge\nm 1\n")),
		"value":  serveBody(t, fixture.TextContentType, []byte("m{a=\"\xfe\"} 1\n")),
		"unit":   serveBody(t, om, []byte("# TYPE m_seconds gauge\n# UNIT m_seconds s\xff\nm_seconds 1\n# EOF\n")),
		"ctype":  serveBody(t, "text/plain; version=0.0.4; x=\"\xff\"", []byte("m 1\n")),
		"status": serveRaw(t, "HTTP/1.1 500 Bad \xff\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
		"wide":   serveBody(t, fixture.TextContentType, wideSeries(30000)),
	}
	var jobs strings.Builder
	jobs.WriteString("  j:\n    scrape_timeout: 5s\n    targets:\n")
	for name, url := range targets {
		fmt.Fprintf(&jobs, "      - {name: %s, url: '%s'}\n", name, url)
	}
	cfg := writeConfig(t, edgeConfig(srv.URL(), srv.ClusterID(), jobs.String()))

	r := runBin(t, "scrape-once", "-c", cfg)
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\n%s", r.code, r.stderr)
	}
	// run_timeout is 9s (90 % of 10s); the binary's start and exit come on top.
	if r.elapsed > 11*time.Second {
		t.Errorf("run took %s", r.elapsed)
	}
	got := byInstance(readChannel(t, srv, "prometheus"))
	if len(got) != len(targets) {
		t.Fatalf("%d messages, want %d", len(got), len(targets))
	}
	for name := range targets {
		e := got["j/"+name]
		if e == nil {
			t.Errorf("no message for %s", name)
			continue
		}
		if !utf8.ValidString(e.Error) || !utf8.Valid(e.Body) || !utf8.ValidString(e.ContentType) {
			t.Errorf("%s: message holds bytes that are not UTF-8: error %q type %q", name, e.Error, e.ContentType)
		}
		switch name {
		case "ok", "wide":
			if e.Error != "" || e.Series < 1 {
				t.Errorf("%s: %q, %d series", name, e.Error, e.Series)
			}
		case "status":
			mustContain(t, name, e.Error, "500 Bad \uFFFD")
		default:
			mustContain(t, name, e.Error, "not UTF-8")
		}
	}
	mustContain(t, "log", r.stderr, "ok=2", "failed=5")
}
