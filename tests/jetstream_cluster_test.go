package tests

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/jstest"
	"github.com/prometheus-streams/prometheus-streams/stream"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// scrapeNumber is the family a countingTarget adds to its capture: the number of its
// response, which identifies the scrape.
const scrapeNumber = "streams_test_scrape_number"

// countingTarget serves a capture and the number of each response (1, 2, …) as
// scrapeNumber. While held, a request waits (after being counted and reported on hits)
// until released, so a test can act while a run's scrapes are under way.
type countingTarget struct {
	srv  *httptest.Server
	hits chan int // the number of each request, as it arrives

	mu   sync.Mutex
	n    int
	gate chan struct{} // closed when released; nil when not held
}

func newCountingTarget(t *testing.T, capture []byte) *countingTarget {
	t.Helper()
	ct := &countingTarget{hits: make(chan int, 100)}
	ct.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ct.mu.Lock()
		ct.n++
		n, gate := ct.n, ct.gate
		ct.mu.Unlock()
		ct.hits <- n
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", fixture.TextContentType)
		_, _ = w.Write(capture)
		fmt.Fprintf(w, "# TYPE %s gauge\n%s %d\n", scrapeNumber, scrapeNumber, n)
	}))
	t.Cleanup(ct.srv.Close)
	return ct
}

// hold makes the next requests wait until release is called.
func (ct *countingTarget) hold() func() {
	gate := make(chan struct{})
	ct.mu.Lock()
	ct.gate = gate
	ct.mu.Unlock()
	return func() {
		ct.mu.Lock()
		ct.gate = nil
		ct.mu.Unlock()
		close(gate)
	}
}

// awaitHit waits for request number n.
func (ct *countingTarget) awaitHit(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case got := <-ct.hits:
			if got >= n {
				return
			}
		case <-timeout:
			t.Fatalf("target %s: request %d did not come", ct.srv.URL, n)
		}
	}
}

// clusterEdgeConfig is a scrape-once config publishing to the R3 stream PROMETHEUS on
// the cluster, creating it, every server's URL given.
func clusterEdgeConfig(c *jstest.Cluster, jobs string) string {
	return fmt.Sprintf(`verbose: true
identity: edge1
scrape_interval: 10s
max_age: 2m
poller_stream:
  transport: jetstream
  stream: PROMETHEUS
  create_stream: {replicas: 3}
  urls: [%s]
  connect_timeout: 2s
jobs:
%s`, strings.Join(c.URLs(), ", "), jobs)
}

// startBin starts a binary and returns a function that waits for it and gives its
// result.
func startBin(t *testing.T, name string, args ...string) func() result {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 halt_on_error=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	return func() result {
		t.Helper()
		err := cmd.Wait()
		r := result{stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start)}
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("run %s: %v", name, err)
		}
		return r
	}
}

// TestJetStreamClusterScrapeOnce: runs of scrape-once publish to an R3 stream while
// its leader is killed, and while the server the run is connected to is killed; such a
// run either exits 0 with every scrape stored, once, or exits 75 (or 69). Runs while
// one server is down exit 0.
func TestJetStreamClusterScrapeOnce(t *testing.T) {
	c := jstest.StartCluster(t, 3)
	capture := fixture.Read(t, fixture.PushGateway)
	targets := make([]*countingTarget, 4)
	var jobs strings.Builder
	jobs.WriteString("  node:\n    targets:\n")
	for i := range targets {
		targets[i] = newCountingTarget(t, capture)
		fmt.Fprintf(&jobs, "      - {name: t%d, url: '%s/metrics'}\n", i, targets[i].srv.URL)
	}
	cfg := writeConfig(t, clusterEdgeConfig(c, jobs.String()))

	var codes []int // exit code of run k+1
	var slow []string
	run := func(chaos func()) {
		t.Helper()
		k := len(codes) + 1
		var release []func()
		if chaos != nil {
			for _, tg := range targets {
				release = append(release, tg.hold())
			}
		}
		wait := startBin(t, "scrape-once", "-c", cfg)
		if chaos != nil {
			for _, tg := range targets {
				tg.awaitHit(t, k)
			}
			chaos()
			for _, r := range release {
				r()
			}
		}
		r := wait()
		codes = append(codes, r.code)
		t.Logf("run %d: exit %d in %v: %s", k, r.code, r.elapsed.Round(time.Millisecond), summaryLine(r.stderr))
		switch {
		case r.code == 0:
			mustContain(t, "log", r.stderr, "run done", "targets=4", "acked=4", "pending=0")
		case chaos == nil:
			// Two servers of three are up: the stream has its leader.
			t.Fatalf("run %d, no server lost during it: exit %d, want 0\n%s", k, r.code, r.stderr)
		case r.code != 69 && r.code != 75:
			t.Fatalf("run %d: exit %d, want 0, 75 or 69\n%s", k, r.code, r.stderr)
		}
		if r.elapsed > 9*time.Second+2*time.Second {
			slow = append(slow, fmt.Sprintf("run %d took %v", k, r.elapsed))
		}
	}

	run(nil) // creates the stream
	c.WaitStreamCurrent(t, "PROMETHEUS")

	// A server dies as the run publishes, the next run finds it down, and the one after
	// finds it back: first the stream's leader, then the server the run is connected
	// to (which may lead the stream too).
	for _, which := range []func() int{
		func() int { return c.StreamLeader(t, "PROMETHEUS") },
		func() int { return c.ConnectedTo(t, "scrape-once") },
	} {
		down := -1
		killed := make(chan struct{})
		run(func() {
			down = which()
			go func() {
				defer close(killed)
				c.Kill(down)
			}()
		})
		<-killed
		run(nil)
		c.Restart(t, down)
		c.WaitStreamCurrent(t, "PROMETHEUS")
	}
	run(nil)

	if len(slow) > 0 {
		t.Errorf("runs beyond their run_timeout (9s): %v", slow)
	}
	checkClusterStream(t, c, codes, len(targets))
}

var summaryRE = regexp.MustCompile(`msg="run (done|failed)[^"]*".*`)

// summaryLine is the run's summary log line, for the test's log.
func summaryLine(stderr string) string {
	return summaryRE.FindString(stderr)
}

// checkClusterStream checks that the stream holds every scrape of every run that exited
// 0, and no scrape twice: run k's scrape of each target is that target's k-th response.
func checkClusterStream(t *testing.T, c *jstest.Cluster, codes []int, targets int) {
	t.Helper()
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	stored := map[string]int{} // instance/scrape number → copies
	for _, m := range c.Messages(t, c.JetStream(t), "PROMETHEUS") {
		e, err := codec.Decode(m.Data)
		if err != nil {
			t.Fatalf("message %d: %v", m.Sequence, err)
		}
		n, err := scrapeNumberOf(e.Body)
		if err != nil {
			t.Fatalf("message %d (%s): %v", m.Sequence, e.Instance, err)
		}
		stored[fmt.Sprintf("%s/%d", e.Instance, n)]++
	}
	for key, copies := range stored {
		if copies > 1 {
			t.Errorf("scrape %s stored %d times", key, copies)
		}
	}
	for i, code := range codes {
		if code != 0 {
			continue
		}
		for tg := range targets {
			if key := fmt.Sprintf("t%d/%d", tg, i+1); stored[key] == 0 {
				t.Errorf("run %d exited 0, but its scrape of t%d is not in the stream", i+1, tg)
			}
		}
	}
}

var scrapeNumberRE = regexp.MustCompile(`(?m)^` + scrapeNumber + ` (\d+)$`)

func scrapeNumberOf(body []byte) (int, error) {
	m := scrapeNumberRE.FindSubmatch(body)
	if m == nil {
		return 0, fmt.Errorf("no %s in the scrape", scrapeNumber)
	}
	return strconv.Atoi(string(m[1]))
}

// clusterDrainConfig is a drain consuming the R3 stream PROMETHEUS on the cluster
// (creating it), every server's URL given, into its expose sink.
func clusterDrainConfig(c *jstest.Cluster, exposeAddr, monitorAddr string) string {
	return fmt.Sprintf(`verbose: true
identity: central
max_age: 2m
receiver_stream:
  transport: jetstream
  stream: PROMETHEUS
  create_stream: {replicas: 3}
  client_id: drain1
  urls: [%s]
  connect_timeout: 2s
  ack_wait: 5s
expose:
  listen: %s
monitor:
  listen: %s
`, strings.Join(c.URLs(), ", "), exposeAddr, monitorAddr)
}

// TestJetStreamClusterDrain: the drain consumes an R3 stream while the server leading
// its consumer is killed and restarted, then the server it is connected to; every
// scrape published reaches its expose sink.
func TestJetStreamClusterDrain(t *testing.T) {
	c := jstest.StartCluster(t, 3)
	exposeAddr, mon := freeAddr(t), freeAddr(t)
	startDrain(t, writeConfig(t, clusterDrainConfig(c, exposeAddr, mon)), mon)
	js := c.JetStream(t)

	// Each round publishes scrapes of targets of its own, each the newest of its
	// target: the expose sink must show them all.
	const perRound = 5
	rounds := 0
	publishRound := func() {
		t.Helper()
		var msgs []*nats.Msg
		for i := range perRound {
			instance := fmt.Sprintf("r%d-%d", rounds, i)
			body := fmt.Sprintf("# TYPE %s gauge\n%s %d\n", scrapeNumber, scrapeNumber, rounds*100+i)
			msg := nats.NewMsg(stream.Subject("prometheus", "cluster", instance))
			msg.Data = encode(t, "cluster", instance, time.Now(), body)
			msg.Header.Set(jetstream.MsgIDHeader, instance)
			msgs = append(msgs, msg)
		}
		publishRetrying(t, js, msgs)
		rounds++
	}
	awaitExposed := func() {
		t.Helper()
		waitFor(t, 20*time.Second, fmt.Sprintf("the %d rounds exposed", rounds), func() bool {
			_, b := fetch(t, "http://"+exposeAddr+"/metrics", "")
			fams := parseBody(t, b)
			for r := range rounds {
				for i := range perRound {
					v, ok := groupValue(fams, scrapeNumber, "cluster", fmt.Sprintf("r%d-%d", r, i))
					if !ok || v != float64(r*100+i) {
						return false
					}
				}
			}
			return true
		})
	}

	publishRound()
	awaitExposed()

	// The consumer's leader dies: the drain goes on with the new one.
	down := c.ConsumerLeader(t, "PROMETHEUS", "drain1")
	c.Kill(down)
	publishRound()
	awaitExposed()
	c.Restart(t, down)
	c.WaitStreamCurrent(t, "PROMETHEUS")
	publishRound()
	awaitExposed()

	// The server the drain is connected to dies: it reconnects to another.
	down = c.ConnectedTo(t, "drain central")
	c.Kill(down)
	publishRound()
	awaitExposed()
	c.Restart(t, down)
	c.WaitStreamCurrent(t, "PROMETHEUS")
	publishRound()
	awaitExposed()
}

// publishRetrying publishes msgs to JetStream, each until acked: a publish meeting a
// leader election or a killed server is tried again (its message ID makes the stream
// store it once).
func publishRetrying(t *testing.T, js jetstream.JetStream, msgs []*nats.Msg) {
	t.Helper()
	for _, m := range msgs {
		jstest.Publish(t, js, m)
	}
}
