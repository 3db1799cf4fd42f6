// Package pgwtest runs the real Prometheus Push Gateway binary on loopback for tests.
//
// Start runs Debian's prometheus-pushgateway (1.5.1 when this was written) on
// 127.0.0.1 and a free port, with an empty persistence file so that no test shares
// state with another or with an installed gateway's default file, and stops it when
// the test ends. Stop and Restart give a test a gateway that goes away and comes
// back on the same address; without a persistence file it comes back empty.
//
// The gateway's log is kept and printed only when the test fails.
package pgwtest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/proctest"
)

// DefaultBinary is the Debian package's binary, used unless $PUSHGATEWAY_BIN or
// WithBinary name another.
const DefaultBinary = "/usr/bin/prometheus-pushgateway"

const (
	readyTimeout  = 15 * time.Second // start to GET /-/ready 200
	stopTimeout   = 10 * time.Second // SIGTERM to exit, before SIGKILL
	bindRetries   = 5                // Start: fresh ports to try when one is taken
	rebindFor     = 5 * time.Second  // Restart: how long to retry the same port
	listenLogWait = 2 * time.Second  // how long to wait for the "Listening on" line
	maxLog        = 1 << 20          // log bytes kept; the oldest are dropped beyond
)

// Option configures Start.
type Option func(*config)

type config struct {
	binary      string
	args        []string
	unchecked   bool
	persistence string
	prefix      string
}

// WithoutConsistencyCheck starts the gateway with --push.disable-consistency-check:
// pushes are then answered 202 before they are checked, and an inconsistent push
// is accepted (and breaks the gateway's /metrics).
func WithoutConsistencyCheck() Option {
	return func(c *config) { c.unchecked = true }
}

// WithArgs adds command-line flags. The gateway refuses a flag given twice, so
// they must not repeat --web.listen-address (always set by Start) or the flags
// of other options; a --persistence.file here replaces the empty one.
func WithArgs(args ...string) Option {
	return func(c *config) { c.args = append(c.args, args...) }
}

// WithPersistenceFile makes the gateway persist its groups to path (on shutdown
// at the latest), so that after Restart it holds them again.
func WithPersistenceFile(path string) Option {
	return func(c *config) { c.persistence = path }
}

// WithRoutePrefix serves the gateway under a path prefix (--web.route-prefix),
// e.g. "/pushgateway", as behind a reverse proxy. URL then includes it.
func WithRoutePrefix(prefix string) Option {
	return func(c *config) { c.prefix = "/" + strings.Trim(prefix, "/") }
}

// WithBinary runs the gateway binary at path.
func WithBinary(path string) Option {
	return func(c *config) { c.binary = path }
}

// Server is a running Push Gateway. Its methods are safe for concurrent use,
// except that Start and Restart must be called from the test's goroutine (they
// may end the test).
type Server struct {
	tb     testing.TB
	binary string
	args   []string // without the listen address
	client *http.Client
	log    *proctest.Log
	prefix string // route prefix, "" or "/…"

	mu   sync.Mutex
	addr string // host:port, fixed by the first successful start
	proc *process
}

// process is one run of the binary.
type process = proctest.Process

// Start runs the gateway and waits until it is ready. It fails the test when
// the binary is missing or the gateway does not become ready; tb.Cleanup stops it.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	c := config{binary: os.Getenv("PUSHGATEWAY_BIN")}
	if c.binary == "" {
		c.binary = DefaultBinary
	}
	for _, o := range opts {
		o(&c)
	}
	if _, err := exec.LookPath(c.binary); err != nil {
		tb.Fatalf("pgwtest: Push Gateway binary %s: %v: apt-get install prometheus-pushgateway (or set $PUSHGATEWAY_BIN)",
			c.binary, err)
	}

	s := &Server{
		tb:     tb,
		binary: c.binary,
		client: &http.Client{Timeout: 10 * time.Second},
		log:    &proctest.Log{Max: maxLog},
		prefix: c.prefix,
	}
	if !hasFlag(c.args, "persistence.file") {
		s.args = append(s.args, "--persistence.file="+c.persistence)
	}
	if c.prefix != "" {
		s.args = append(s.args, "--web.route-prefix="+c.prefix)
	}
	if c.unchecked {
		s.args = append(s.args, "--push.disable-consistency-check")
	}
	s.args = append(s.args, c.args...)
	tb.Cleanup(func() {
		s.Stop()
		s.client.CloseIdleConnections()
		if tb.Failed() {
			tb.Logf("pgwtest: gateway output:\n%s", s.log.String())
		}
	})

	addr, p, err := proctest.OnFreePort(bindRetries, s.run)
	if err != nil {
		tb.Fatalf("pgwtest: start %s: %v", s.binary, err)
	}
	s.mu.Lock()
	s.addr, s.proc = addr, p
	s.mu.Unlock()
	return s
}

// URL is the gateway's base URL, http://127.0.0.1:<port>[<route prefix>].
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "http://" + s.addr + s.prefix
}

// Addr is the gateway's host:port.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Stop stops the gateway (SIGTERM, then SIGKILL if it has not exited within
// 10s) and waits for it to exit. Until Restart, requests to its address are
// refused. Stop is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p != nil {
		p.Stop(stopTimeout)
	}
}

// Restart starts the gateway again on the same address, stopping it first if it
// runs, and waits until it is ready. It fails the test if it cannot.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	addr := s.Addr()
	p, err := proctest.Rebind(addr, rebindFor, s.run)
	if err != nil {
		s.tb.Fatalf("pgwtest: restart on %s: %v", addr, err)
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
}

// Scrape fetches /metrics as Prometheus would and parses it with UTF-8 names
// allowed. It fails the test unless the answer is 200 and parses.
func (s *Server) Scrape(tb testing.TB) map[string]*dto.MetricFamily {
	tb.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, s.URL()+"/metrics", nil)
	if err != nil {
		tb.Fatalf("pgwtest: scrape: %v", err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := s.client.Do(req)
	if err != nil {
		tb.Fatalf("pgwtest: scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("pgwtest: scrape: read: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("pgwtest: scrape: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		tb.Fatalf("pgwtest: scrape: parse: %v", err)
	}
	return fams
}

// PushRaw sends body with the given Content-Type to path (e.g.
// /metrics/job/other) with PUT, as another pusher would, and returns the
// status. It fails the test only if there is no answer.
func (s *Server) PushRaw(tb testing.TB, path, contentType string, body []byte) int {
	tb.Helper()
	status, _ := s.Do(tb, http.MethodPut, path, contentType, body)
	return status
}

// Do sends a request to path and returns the status and body. It fails the
// test only if there is no answer.
func (s *Server) Do(tb testing.TB, method, path, contentType string, body []byte) (int, []byte) {
	tb.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, s.URL()+path, bytes.NewReader(body))
	if err != nil {
		tb.Fatalf("pgwtest: %s %s: %v", method, path, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		tb.Fatalf("pgwtest: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("pgwtest: %s %s: read: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// run starts the binary on addr and waits until it is ready.
func (s *Server) run(addr string) (*process, error) {
	args := append([]string{"--web.listen-address=" + addr}, s.args...)
	return proctest.Start("pgwtest", s.binary, args, s.log, s.client, "http://"+addr+s.prefix+"/-/ready", readyTimeout, listenLogWait)
}

// hasFlag reports whether args set the kingpin flag name (--name or --name=…).
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--"+name || strings.HasPrefix(a, "--"+name+"=") {
			return true
		}
	}
	return false
}
