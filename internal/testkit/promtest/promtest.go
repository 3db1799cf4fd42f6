// Package promtest runs real Prometheus servers on loopback for tests, as
// remote-write receivers and as scrapers to compare with.
//
// Start runs one of two binaries on 127.0.0.1 and a free port, with a TSDB in a
// temporary directory, the remote-write receiver on and a generated
// configuration, and stops it when the test ends:
//
//   - Prometheus2 is Debian's /usr/bin/prometheus (2.42 when this was written;
//     apt-get install prometheus), the remote-write 1.0 receiver most of the
//     field runs. It takes a 2.0 request for an empty 1.0 one: 204, nothing
//     stored, no X-Prometheus-Remote-Write-Samples-Written header.
//   - Prometheus3 is Prometheus 3 (module v0.316.0, the version in go.mod)
//     built by `systemd/tools.sh prometheus` once per machine, about 10
//     minutes. It receives 1.0 and, with Options.RemoteWriteV2, 2.0
//     (io.prometheus.write.v2.Request), answering 2.0 with the
//     X-Prometheus-Remote-Write-*-Written headers.
//
// Both reject samples out of order, duplicated, or more than about an hour
// older than the newest in the TSDB with 400; a 1.0 request holding one is not stored at all,
// while 2.0 stores the others. Both serve the HTTP API that Query, Series and
// Metadata use, and scrape targets given in Options.ScrapeConfigs, so that a
// test can compare what a scrape stores with what remote write stores. Stop and
// Restart give a test a receiver that goes away and comes back on the same
// address with the same data. The server's log is kept and printed only when
// the test fails.
package promtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/proctest"
)

// Binary selects the Prometheus that Start runs.
type Binary int

const (
	// Prometheus2 is Debian's prometheus package (2.42): remote-write 1.0.
	// $PROMETHEUS2_BINARY overrides the path found in $PATH.
	Prometheus2 Binary = iota
	// Prometheus3 is built by systemd/tools.sh prometheus: remote-write 1.0 and 2.0.
	// $PROMETHEUS3_BINARY overrides the built one.
	Prometheus3
)

func (b Binary) String() string {
	switch b {
	case Prometheus2:
		return "Prometheus 2"
	case Prometheus3:
		return "Prometheus 3"
	}
	return "Binary(" + strconv.Itoa(int(b)) + ")"
}

// Remote-write protobuf messages, the values of Prometheus 3's
// --web.remote-write-receiver.accepted-protobuf-messages.
const (
	messageV1 = "prometheus.WriteRequest"
	messageV2 = "io.prometheus.write.v2.Request"
)

const (
	readyTimeout  = 60 * time.Second // start (TSDB and WAL replay included) to /-/ready 200
	stopTimeout   = 20 * time.Second // SIGTERM to exit, before SIGKILL
	bindRetries   = 5                // Start: fresh ports to try when one is taken
	rebindFor     = 5 * time.Second  // Restart: how long to retry the same port
	listenLogWait = 5 * time.Second  // how long to wait for the "Listening on" line
	waitTimeout   = 30 * time.Second // WaitFor's deadline
	maxLog        = 1 << 20          // log bytes kept; the oldest are dropped beyond
)

// Options configure Start. The zero value runs Prometheus 2 with a 1s scrape
// interval and no scrape configs.
type Options struct {
	Binary Binary

	// RemoteWriteV2 makes Prometheus 3 accept remote-write 2.0 as well as 1.0.
	// Without it Prometheus 3 accepts only 1.0 and answers a 2.0 request with
	// 415 Unsupported Media Type, as a 1.0-only receiver should. Start fails
	// the test if it is set for Prometheus 2, which knows only 1.0.
	RemoteWriteV2 bool

	// ScrapeInterval is the global scrape and evaluation interval; 0 means 1s.
	ScrapeInterval time.Duration

	// ScrapeConfigs is raw YAML: a sequence of scrape configs put under
	// scrape_configs, e.g.
	//
	//	- job_name: target
	//	  static_configs: [{targets: ["127.0.0.1:8080"]}]
	//
	// Prometheus 3 scrapes a new target within about half a second;
	// Prometheus 2 only after about 5s (its discovery manager sends target
	// updates every 5s, which no flag changes). Prometheus 3 fails the
	// scrape (up 0) of a target that answers without a Content-Type unless
	// the scrape config sets fallback_scrape_protocol: PrometheusText0.0.4,
	// a key Prometheus 2 rejects.
	ScrapeConfigs string

	// Features are passed as --enable-feature, e.g. "type-and-unit-labels"
	// (Prometheus 3: remote-write 2.0 metadata become __type__ and __unit__
	// labels).
	Features []string

	// Args are extra command-line flags. They must not repeat a flag Start sets.
	Args []string
}

// Server is a running Prometheus. Its methods are safe for concurrent use, except
// that Start, Restart and Reload must be called from the test's goroutine (they
// may end the test).
type Server struct {
	binary string
	args   []string // without the listen address
	config string   // path of the configuration file
	opts   Options
	client *http.Client
	log    *proctest.Log

	mu   sync.Mutex
	addr string // host:port, fixed by the first successful start
	proc *process
}

// process is one run of the binary.
type process = proctest.Process

// Start runs Prometheus and waits until it is ready. It fails the test when the
// binary is missing or the server does not become ready; tb.Cleanup stops it.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if opts.RemoteWriteV2 && opts.Binary != Prometheus3 {
		tb.Fatalf("promtest: %v does not receive remote-write 2.0; use Prometheus3", opts.Binary)
	}
	bin, err := binaryPath(opts.Binary)
	if err != nil {
		tb.Fatalf("promtest: %v", err)
	}
	if opts.ScrapeInterval == 0 {
		opts.ScrapeInterval = time.Second
	}

	// The directory is made before the cleanup below is registered, so it is
	// removed after the server has stopped.
	dir := tb.TempDir()
	s := &Server{
		binary: bin,
		config: filepath.Join(dir, "prometheus.yml"),
		opts:   opts,
		client: &http.Client{Timeout: 10 * time.Second},
		log:    &proctest.Log{Max: maxLog},
	}
	if err := s.writeConfig(opts.ScrapeConfigs); err != nil {
		tb.Fatalf("promtest: %v", err)
	}
	s.args = []string{
		"--config.file=" + s.config,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.enable-remote-write-receiver",
		"--web.enable-lifecycle", // for Reload
		// A hidden flag of both versions: the scrape manager applies target
		// updates at once rather than every 5s (Prometheus 2's discovery
		// manager still sends them every 5s).
		"--scrape.discovery-reload-interval=100ms",
	}
	if opts.Binary == Prometheus3 {
		// The flag is repeated, one message each; given once, it replaces the
		// default of both.
		s.args = append(s.args, "--web.remote-write-receiver.accepted-protobuf-messages="+messageV1)
		if opts.RemoteWriteV2 {
			s.args = append(s.args, "--web.remote-write-receiver.accepted-protobuf-messages="+messageV2)
		}
	}
	if len(opts.Features) > 0 {
		s.args = append(s.args, "--enable-feature="+strings.Join(opts.Features, ","))
	}
	s.args = append(s.args, opts.Args...)
	tb.Cleanup(func() {
		s.Stop()
		s.client.CloseIdleConnections()
		if tb.Failed() {
			tb.Logf("promtest: %v output:\n%s", opts.Binary, s.log.String())
		}
	})

	addr, p, err := proctest.OnFreePort(bindRetries, s.run)
	if err != nil {
		tb.Fatalf("promtest: start %s: %v", s.binary, err)
	}
	s.mu.Lock()
	s.addr, s.proc = addr, p
	s.mu.Unlock()
	return s
}

// binaryPath finds the binary of b, or says how to get it.
func binaryPath(b Binary) (string, error) {
	switch b {
	case Prometheus2:
		if p := os.Getenv("PROMETHEUS2_BINARY"); p != "" {
			if _, err := exec.LookPath(p); err != nil {
				return "", fmt.Errorf("$PROMETHEUS2_BINARY: %w", err)
			}
			return p, nil
		}
		p, err := exec.LookPath("prometheus")
		if err != nil {
			return "", fmt.Errorf("no Prometheus 2 (%w): apt-get install prometheus, or set $PROMETHEUS2_BINARY", err)
		}
		return p, nil
	case Prometheus3:
		if p := os.Getenv("PROMETHEUS3_BINARY"); p != "" {
			if _, err := exec.LookPath(p); err != nil {
				return "", fmt.Errorf("$PROMETHEUS3_BINARY: %w", err)
			}
			return p, nil
		}
		root, err := moduleRoot()
		if err != nil {
			return "", fmt.Errorf("no Prometheus 3: %w; set $PROMETHEUS3_BINARY", err)
		}
		// --check: a test must not start a build of about 10 minutes.
		cmd := exec.Command(filepath.Join(root, "systemd", "tools.sh"), "--check", "prometheus")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("no Prometheus 3 built (%v: %s): run systemd/tools.sh prometheus or make tools (once per machine, about 10 min), or set $PROMETHEUS3_BINARY",
				err, strings.TrimSpace(stderr.String()))
		}
		return strings.TrimSpace(string(out)), nil
	}
	return "", fmt.Errorf("unknown %v", b)
}

// moduleRoot is the nearest directory at or above the working directory (the
// test's package directory) that holds a go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// writeConfig writes the configuration file with scrapeConfigs.
func (s *Server) writeConfig(scrapeConfigs string) error {
	var b strings.Builder
	iv := model.Duration(s.opts.ScrapeInterval)
	fmt.Fprintf(&b, "global:\n  scrape_interval: %v\n  scrape_timeout: %v\n  evaluation_interval: %v\n", iv, iv, iv)
	if strings.TrimSpace(scrapeConfigs) != "" {
		b.WriteString("scrape_configs:\n")
		for line := range strings.Lines(scrapeConfigs) {
			b.WriteString("  " + strings.TrimRight(line, "\n") + "\n")
		}
	}
	if err := os.WriteFile(s.config, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// URL is the server's base URL, http://127.0.0.1:<port>.
func (s *Server) URL() string {
	return "http://" + s.Addr()
}

// RemoteWriteURL is where the server receives remote writes.
func (s *Server) RemoteWriteURL() string {
	return s.URL() + "/api/v1/write"
}

// Addr is the server's host:port.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Stop stops the server (SIGTERM, then SIGKILL if it has not exited within 20s)
// and waits for it to exit. What it stored stays in its data directory (the
// WAL) for Restart. Until Restart, requests to its address are refused. Stop is
// idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p != nil {
		p.Stop(stopTimeout)
	}
}

// Restart starts the server again on the same address and data directory,
// stopping it first if it runs, and waits until it is ready (which includes
// replaying the WAL). It fails the test if it cannot.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop()
	addr := s.Addr()
	p, err := proctest.Rebind(addr, rebindFor, s.run)
	if err != nil {
		tb.Fatalf("promtest: restart on %s: %v", addr, err)
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
}

// Reload replaces the scrape configs (Options.ScrapeConfigs) and has the running
// server reload its configuration. It fails the test unless the reload succeeds.
func (s *Server) Reload(tb testing.TB, scrapeConfigs string) {
	tb.Helper()
	if err := s.writeConfig(scrapeConfigs); err != nil {
		tb.Fatalf("promtest: reload: %v", err)
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, s.URL()+"/-/reload", nil)
	if err != nil {
		tb.Fatalf("promtest: reload: %v", err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		tb.Fatalf("promtest: reload: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("promtest: reload: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
}

// run starts the binary on addr and waits until it is ready.
func (s *Server) run(addr string) (*process, error) {
	args := append([]string{"--web.listen-address=" + addr}, s.args...)
	return proctest.Start("promtest", s.binary, args, s.log, s.client, "http://"+addr+"/-/ready", readyTimeout, listenLogWait)
}
