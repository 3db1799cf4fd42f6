package tests

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// TestScrapeOnce publishes three real captures and reads them back from the channel.
func TestScrapeOnce(t *testing.T) {
	srv := stantest.Start(t)
	node := fixture.ServeCapture(t, fixture.NodeExporter)
	prom := fixture.ServeCapture(t, fixture.Prometheus)
	pgw := fixture.ServeCapture(t, fixture.PushGateway)
	cfg := writeConfig(t, edgeConfig(srv.URL(), srv.ClusterID(), fmt.Sprintf(`  node:
    labels: {team: infra}
    targets:
      - {name: node1, url: '%s/metrics', labels: {rack: r1}}
  prom:
    honor_labels: true
    targets:
      - {url: '%s/metrics'}
      - {name: pgw, url: '%s/metrics'}
`, node.URL, prom.URL, pgw.URL)))

	r := runBin(t, "scrape-once", "-c", cfg)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	mustContain(t, "log", r.stderr, "run done", "targets=3", "ok=3", "failed=0", "acked=3")

	got := byInstance(readChannel(t, srv, "prometheus"))
	if len(got) != 3 {
		t.Fatalf("got %d messages: %v", len(got), got)
	}
	promInstance := strings.TrimPrefix(prom.URL, "http://")
	want := map[string][]byte{
		"node/node1":           fixture.Read(t, fixture.NodeExporter),
		"prom/" + promInstance: fixture.Read(t, fixture.Prometheus),
		"prom/pgw":             fixture.Read(t, fixture.PushGateway),
	}
	for key, body := range want {
		e := got[key]
		if e == nil {
			t.Errorf("no message for %s; got %v", key, got)
			continue
		}
		if !bytes.Equal(e.Body, body) {
			t.Errorf("%s: body differs from what the target served", key)
		}
		if e.Error != "" || e.HTTPStatus != 200 || e.ContentType != fixture.TextContentType {
			t.Errorf("%s: outcome %q status %d type %q", key, e.Error, e.HTTPStatus, e.ContentType)
		}
		if e.Publisher != "edge1" || e.Site != "dc1" {
			t.Errorf("%s: publisher %q site %q", key, e.Publisher, e.Site)
		}
		if e.Series <= 0 || e.Duration <= 0 || time.Since(e.Start) > time.Minute {
			t.Errorf("%s: series %d duration %s start %s", key, e.Series, e.Duration, e.Start)
		}
	}
	if n := got["node/node1"]; n != nil {
		if fmt.Sprint(n.Labels) != "[{rack r1} {team infra}]" || n.HonorLabels {
			t.Errorf("node labels %v honor %v", n.Labels, n.HonorLabels)
		}
	}
	if p := got["prom/pgw"]; p != nil && !p.HonorLabels {
		t.Error("honor_labels did not travel")
	}
}

// TestScrapeOnceFailures checks that every kind of bad target travels as a failed scrape
// with its reason and that none of them holds up the others.
func TestScrapeOnceFailures(t *testing.T) {
	srv := stantest.Start(t)
	ok := fixture.ServeCapture(t, fixture.PushGateway)
	handler := func(status int, ct, body string, delay time.Duration) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
		}))
		t.Cleanup(s.Close)
		return s.URL
	}
	slow := handler(200, fixture.TextContentType, "up 1\n", time.Minute)
	huge := handler(200, fixture.TextContentType, strings.Repeat("a_metric 1\n", 10000), 0)
	broken := handler(500, "text/plain", "oops", 0)
	invalid := handler(200, fixture.TextContentType, "not an { exposition\n", 0)
	down := closedURL(t, "http")
	cfg := writeConfig(t, edgeConfig(srv.URL(), srv.ClusterID(), fmt.Sprintf(`  ok:
    targets: [{name: ok, url: '%s'}]
  bad:
    scrape_timeout: 1s
    body_size_limit: 10KiB
    targets:
      - {name: slow, url: '%s'}
      - {name: huge, url: '%s'}
      - {name: broken, url: '%s'}
      - {name: invalid, url: '%s'}
      - {name: down, url: '%s/metrics'}
`, ok.URL, slow, huge, broken, invalid, down)))

	r := runBin(t, "scrape-once", "-c", cfg)
	if r.code != 0 {
		t.Fatalf("exit %d, want 0: failed scrapes travel as messages\n%s", r.code, r.stderr)
	}
	if r.elapsed > 8*time.Second {
		t.Errorf("run took %s: the slow target held it up past its 1s timeout", r.elapsed)
	}
	mustContain(t, "log", r.stderr, "targets=6", "ok=1", "failed=5", "acked=6", `msg="scrape failed"`, "instance=slow")
	got := byInstance(readChannel(t, srv, "prometheus"))
	if e := got["ok/ok"]; e == nil || e.Error != "" || len(e.Body) == 0 {
		t.Errorf("ok target: %+v", e)
	}
	reasons := map[string]string{
		"bad/slow":    "scrape timed out after 1s",
		"bad/huge":    "body size limit exceeded",
		"bad/broken":  "server returned HTTP status 500",
		"bad/invalid": "invalid exposition",
		"bad/down":    "connection refused",
	}
	for key, reason := range reasons {
		e := got[key]
		if e == nil {
			t.Errorf("%s: no message", key)
			continue
		}
		if !strings.Contains(e.Error, reason) || len(e.Body) != 0 {
			t.Errorf("%s: error %q (want %q), body %d bytes", key, e.Error, reason, len(e.Body))
		}
	}
	if e := got["bad/broken"]; e != nil && e.HTTPStatus != 500 {
		t.Errorf("broken: status %d", e.HTTPStatus)
	}
}

// TestScrapeOnceSplit publishes a scrape larger than the server's max payload: it goes
// in parts that each fit and join into the whole scrape, and the rest of the run is
// unaffected.
func TestScrapeOnceSplit(t *testing.T) {
	srv := stantest.Start(t, stantest.WithMaxPayload(32<<10))
	big := fixture.Serve(t, fixture.Replicate(t, fixture.NodeExporter, 20000), fixture.TextContentType)
	small := fixture.ServeCapture(t, fixture.PushGateway)
	cfg := writeConfig(t, edgeConfig(srv.URL(), srv.ClusterID(), fmt.Sprintf(`  j:
    targets:
      - {name: big, url: '%s'}
      - {name: small, url: '%s'}
`, big.URL, small.URL)))
	r := runBin(t, "scrape-once", "-c", cfg)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	mustContain(t, "log", r.stderr, "split=1", "oversized=0", "scrape split into parts")
	var parts []*envelope.Envelope
	var small1 *envelope.Envelope
	for _, e := range readChannel(t, srv, "prometheus") {
		switch {
		case e.Instance == "big" && e.Parts > 1:
			parts = append(parts, e)
		case e.Instance == "small":
			small1 = e
		default:
			t.Errorf("unexpected message %s/%s part %d of %d", e.Job, e.Instance, e.Part, e.Parts)
		}
	}
	checkParts(t, parts, 20000)
	if small1 == nil || small1.Error != "" || small1.Parts > 1 {
		t.Errorf("small: %+v", small1)
	}
}

// checkParts checks that parts are a whole split scrape of at least series series.
func checkParts(t *testing.T, parts []*envelope.Envelope, series int) {
	t.Helper()
	if len(parts) < 2 || len(parts) != parts[0].Parts {
		t.Fatalf("%d parts, want all of a split scrape (%d)", len(parts), parts[0].Parts)
	}
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	whole, err := codec.Join(parts)
	if err != nil {
		t.Fatal(err)
	}
	if whole.Error != "" || whole.Series < series || len(whole.Body) == 0 {
		t.Errorf("joined scrape: %d series, %d bytes, error %q", whole.Series, len(whole.Body), whole.Error)
	}
}

// TestScrapeOnceUnreachable checks the exit code and message when no stream server
// answers, and that the run ends by its deadline.
func TestScrapeOnceUnreachable(t *testing.T) {
	target := fixture.ServeCapture(t, fixture.PushGateway)
	url := closedURL(t, "nats")
	cfg := writeConfig(t, edgeConfig(url, "c", fmt.Sprintf("  j:\n    targets: [{name: a, url: '%s'}]\n", target.URL)))
	r := runBin(t, "scrape-once", "-c", cfg)
	if r.code != 69 {
		t.Fatalf("exit %d, want 69\n%s", r.code, r.stderr)
	}
	mustContain(t, "log", r.stderr, "stream unreachable", strings.TrimPrefix(url, "nats://"))
	// connect_timeout is 2s and the run's deadline 9s: either bounds the run.
	if r.elapsed > 9*time.Second {
		t.Errorf("run took %s, past its deadline", r.elapsed)
	}
}

func TestScrapeOnceSelection(t *testing.T) {
	srv := stantest.Start(t)
	a := fixture.ServeCapture(t, fixture.PushGateway)
	cfg := writeConfig(t, edgeConfig(srv.URL(), srv.ClusterID(), fmt.Sprintf(`  j1:
    targets: [{name: a, url: '%[1]s'}, {name: shared, url: '%[1]s/x'}]
  j2:
    targets: [{name: b, url: '%[1]s'}, {name: shared, url: '%[1]s/y'}]
`, a.URL)))

	r := runBin(t, "scrape-once", "-c", cfg, "--target", "b", "--target", "j1/shared")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	got := byInstance(readChannel(t, srv, "prometheus"))
	if len(got) != 2 || got["j2/b"] == nil || got["j1/shared"] == nil {
		t.Errorf("published %v, want j2/b and j1/shared", got)
	}

	r = runBin(t, "scrape-once", "-c", cfg, "--target", "nope")
	if r.code != 64 {
		t.Errorf("unknown target: exit %d, want 64", r.code)
	}
	mustContain(t, "stderr", r.stderr, `unknown target "nope"`, "j1/a", "j2/b")

	r = runBin(t, "scrape-once", "-c", cfg, "--target", "shared")
	if r.code != 64 {
		t.Errorf("ambiguous target: exit %d, want 64", r.code)
	}
	mustContain(t, "stderr", r.stderr, "ambiguous", "j1/shared", "j2/shared")

	r = runBin(t, "scrape-once", "-c", cfg, "--job", "j2", "--dry-run")
	if r.code != 0 {
		t.Errorf("--job j2 --dry-run: exit %d\n%s", r.code, r.stderr)
	}
	mustContain(t, "stdout", r.stdout, "# j2/b: ok", "# j2/shared: ok")
	if strings.Contains(r.stdout, "j1/") {
		t.Errorf("--job j2 scraped j1:\n%s", r.stdout)
	}

	r = runBin(t, "scrape-once", "-c", cfg, "--bogus")
	if r.code != 64 {
		t.Errorf("bad flag: exit %d, want 64", r.code)
	}
}

// TestScrapeOnceDryRun prints outcomes and expositions without touching NATS (the
// configured server does not exist).
func TestScrapeOnceDryRun(t *testing.T) {
	a := fixture.ServeCapture(t, fixture.PushGateway)
	cfg := writeConfig(t, edgeConfig(closedURL(t, "nats"), "c", fmt.Sprintf(`  j:
    targets: [{name: a, url: '%s'}, {name: down, url: '%s'}]
`, a.URL, closedURL(t, "http"))))
	r := runBin(t, "scrape-once", "-c", cfg, "--dry-run", "--target", "a")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	mustContain(t, "stdout", r.stdout, "# j/a: ok, 41 series", "pushgateway_build_info")
	if !strings.Contains(r.stdout, string(fixture.Read(t, fixture.PushGateway))) {
		t.Error("dry run does not print the exposition")
	}
	r = runBin(t, "scrape-once", "-c", cfg, "--dry-run")
	if r.code != 1 {
		t.Errorf("dry run with a failed target: exit %d, want 1", r.code)
	}
	mustContain(t, "stdout", r.stdout, "# j/down: FAILED", "connection refused")
}

// TestScrapeOnceBackToBack runs twice in a row: each run's client ID is its own.
func TestScrapeOnceBackToBack(t *testing.T) {
	srv := stantest.Start(t)
	a := fixture.ServeCapture(t, fixture.PushGateway)
	cfg := writeConfig(t, edgeConfig(srv.URL(), srv.ClusterID(), fmt.Sprintf("  j:\n    targets: [{name: a, url: '%s'}]\n", a.URL)))
	for i := 0; i < 3; i++ {
		if r := runBin(t, "scrape-once", "-c", cfg); r.code != 0 {
			t.Fatalf("run %d: exit %d\n%s", i, r.code, r.stderr)
		}
	}
	if got := readChannel(t, srv, "prometheus"); len(got) != 3 {
		t.Errorf("%d messages after 3 runs", len(got))
	}
}

func TestScrapeOnceConfigErrors(t *testing.T) {
	cfg := writeConfig(t, "scrape_interval: 60s\nmax_age: 80\npoller_stream: {cluster_id: c, urls: 'nats://127.0.0.1:4222', topik: x}\njobs: {}\n")
	r := runBin(t, "scrape-once", "-c", cfg)
	if r.code != 78 {
		t.Errorf("exit %d, want 78", r.code)
	}
	mustContain(t, "stderr", r.stderr, "line 3", "poller_stream.topik", "unknown key")

	r = runBin(t, "scrape-once", "-c", cfg+".missing")
	if r.code != 78 {
		t.Errorf("missing file: exit %d, want 78", r.code)
	}

	const secret = "s3cr3t-value"
	cfg = writeConfig(t, edgeConfig("nats://127.0.0.1:4222", "c", "  j:\n    basic_auth: {username: u, password: "+secret+"}\n    targets: [{url: 'http://127.0.0.1:1/'}]\n"))
	r = runBin(t, "scrape-once", "-c", cfg, "--check-config")
	if r.code != 0 {
		t.Fatalf("--check-config: exit %d\n%s", r.code, r.stderr)
	}
	mustContain(t, "check-config", r.stdout, "valid for scrape-once", "1 targets selected", "<secret>")
	mustContain(t, "warning", r.stderr, "basic_auth.password is inline")
	if strings.Contains(r.stdout+r.stderr, secret) {
		t.Error("--check-config shows the secret")
	}

	r = runBin(t, "scrape-once", "--version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "scrape-once ") {
		t.Errorf("--version: %d %q", r.code, r.stdout)
	}
}

// TestScrapeOnceTalks: without verbose in the config, a run still logs its one summary
// line (and nothing per successful target); -v adds a line per target.
func TestScrapeOnceTalks(t *testing.T) {
	srv := stantest.Start(t)
	a := fixture.ServeCapture(t, fixture.PushGateway)
	cfg := writeConfig(t, strings.Replace(edgeConfig(srv.URL(), srv.ClusterID(),
		fmt.Sprintf("  j:\n    targets: [{name: a, url: '%s'}]\n", a.URL)), "verbose: true\n", "", 1))
	r := runBin(t, "scrape-once", "-c", cfg)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	mustContain(t, "log", r.stderr, "run done", "targets=1", "ok=1", "failed=0", "published=1", "acked=1", "duration_seconds=")
	if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n != 0 || strings.Contains(r.stderr, "scrape done") {
		t.Errorf("want the summary line only, got:\n%s", r.stderr)
	}
	r = runBin(t, "scrape-once", "-c", cfg, "-v")
	if r.code != 0 {
		t.Fatalf("-v: exit %d\n%s", r.code, r.stderr)
	}
	mustContain(t, "-v log", r.stderr, `msg="scrape done" job=j instance=a series=41`, "run done")
}
