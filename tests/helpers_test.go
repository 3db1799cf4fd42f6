// Package tests holds end-to-end tests that run the built binaries against real servers on
// loopback: an in-process NATS Streaming server and HTTP targets serving captured
// expositions.
package tests

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	stan "github.com/nats-io/stan.go"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// binDir holds the binaries TestMain builds once for every test.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "prometheus-streams-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for _, b := range []string{"scrape-once", "drain"} {
		cmd := exec.Command("go", "build", "-race", "-o", filepath.Join(dir, b), "../cmd/"+b)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", b, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one run of a binary.
type result struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
}

func runBin(t *testing.T, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, name), args...)
	// The binaries are built with the race detector, whose exit otherwise sleeps 1s.
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 halt_on_error=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %s: %v", name, err)
	}
	return r
}

// writeConfig writes a config file into a temp dir and returns its path.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "prometheus-streams.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// edgeConfig is a scrape-once config publishing to srv with the given jobs section.
func edgeConfig(natsURL, clusterID, jobs string) string {
	return fmt.Sprintf(`verbose: true
identity: edge1
site: dc1
scrape_interval: 10s
poller_stream:
  cluster_id: %s
  urls: %s
  topic: prometheus
  connect_timeout: 2s
jobs:
%s`, clusterID, natsURL, jobs)
}

// closedURL returns a loopback URL on which nothing listens.
func closedURL(t *testing.T, scheme string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return scheme + "://" + addr
}

// readChannel returns every message on the channel, decoded. It publishes a marker and
// reads from the start of the channel up to it, so "everything" is exact without waiting
// for a quiet period.
func readChannel(t *testing.T, srv *stantest.Server, channel string) []*envelope.Envelope {
	t.Helper()
	sc, err := stan.Connect(srv.ClusterID(), fmt.Sprintf("reader-%d", time.Now().UnixNano()), stan.NatsURL(srv.URL()))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	marker := []byte(fmt.Sprintf("end-of-test-%d", time.Now().UnixNano()))
	if err := sc.Publish(channel, marker); err != nil {
		t.Fatal(err)
	}
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	var got []*envelope.Envelope
	var errs []error
	done := make(chan struct{})
	sub, err := sc.Subscribe(channel, func(m *stan.Msg) {
		// stan.go calls a subscription's handler from one goroutine, in order.
		if bytes.Equal(m.Data, marker) {
			close(done)
			return
		}
		e, err := codec.Decode(m.Data)
		if err != nil {
			errs = append(errs, fmt.Errorf("message %d: %w", m.Sequence, err))
			return
		}
		got = append(got, e)
	}, stan.DeliverAllAvailable())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the channel's messages did not arrive")
	}
	for _, err := range errs {
		t.Errorf("decode %v", err)
	}
	return got
}

func byInstance(es []*envelope.Envelope) map[string]*envelope.Envelope {
	m := map[string]*envelope.Envelope{}
	for _, e := range es {
		m[e.Job+"/"+e.Instance] = e
	}
	return m
}

func mustContain(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not contain %q:\n%s", what, sub, s)
		}
	}
}
