//go:build compliance

// The project's senders for Prometheus's remote-write sender compliance suite
// (github.com/prometheus/compliance, folder remotewrite/sender): `make compliance`
// copies this file into the suite's targets/ folder and registers both functions.
// Built only there (the suite defines TargetOptions), with the compliance tag.

package targets

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// RunPrometheusStreams runs the project as a remote-write sender: a drain with an
// embedded stream and a remote_write sink to the suite's receiver, and scrape-once
// started every second, as a systemd timer would, for opts.Timeout. The binaries are
// in $PROMETHEUS_STREAMS_BIN.
func RunPrometheusStreams(opts TargetOptions) error {
	bin := os.Getenv("PROMETHEUS_STREAMS_BIN")
	if bin == "" {
		return fmt.Errorf("PROMETHEUS_STREAMS_BIN is not set")
	}
	dir, err := os.MkdirTemp("", "prometheus-streams-compliance-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	nats, mon := loopbackAddr(), loopbackAddr()
	drainCfg := fmt.Sprintf(`max_age: 60s
embedded_stream: {listen: %s, cluster_id: compliance, store_dir: memory}
monitor: {listen: %s}
remote_write:
  - url: %s
    protobuf_message: io.prometheus.write.v2.Request
    metadata_config: {send: true}
`, nats, mon, opts.ReceiveEndpoint)
	edgeCfg := fmt.Sprintf(`scrape_interval: 1s
poller_stream: {cluster_id: compliance, urls: nats://%s, topic: prometheus}
jobs:
  test:
    targets:
      - url: %s/metrics
`, nats, strings.TrimSuffix(opts.ScrapeTarget, "/"))
	drainPath, edgePath := filepath.Join(dir, "drain.yaml"), filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(drainPath, []byte(drainCfg), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(edgePath, []byte(edgeCfg), 0o600); err != nil {
		return err
	}
	out, err := logFile(dir)
	if err != nil {
		return err
	}
	if out != os.Stdout {
		defer out.Close()
	}

	start := time.Now()
	drain := exec.Command(filepath.Join(bin, "drain"), "-c", drainPath)
	drain.Dir, drain.Stdout, drain.Stderr = dir, out, out
	if err := drain.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- drain.Wait() }()
	stop := func() error {
		_ = drain.Process.Signal(syscall.SIGINT)
		select {
		case err := <-exited:
			return err
		case <-time.After(15 * time.Second):
			_ = drain.Process.Kill()
			return fmt.Errorf("drain did not stop within 15s")
		}
	}
	// Ready: /healthz answers 200.
	for {
		if resp, err := http.Get("http://" + mon + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Since(start) > opts.Timeout {
			_ = stop()
			return fmt.Errorf("drain not ready within %s", opts.Timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The timer: a run at once, then every second, until the time is up.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	deadline := time.After(opts.Timeout - time.Since(start))
	for done := false; !done; {
		run := exec.Command(filepath.Join(bin, "scrape-once"), "-c", edgePath)
		run.Dir, run.Stdout, run.Stderr = dir, out, out
		_ = run.Run() // a failed scrape is a message too; exit codes say so
		select {
		case <-tick.C:
		case <-deadline:
			done = true
		}
	}
	return stop()
}

// RunCachedPrometheus runs Prometheus as the suite's own target does, with the binary
// at $PROMETHEUS_BIN (built once per machine by systemd/tools.sh) rather than one
// downloaded, and listening on loopback only.
func RunCachedPrometheus(opts TargetOptions) error {
	binary := os.Getenv("PROMETHEUS_BIN")
	if binary == "" {
		return fmt.Errorf("PROMETHEUS_BIN is not set")
	}
	dir, err := os.MkdirTemp("", "prometheus-compliance-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	scrapeTarget := strings.TrimPrefix(strings.TrimPrefix(opts.ScrapeTarget, "http://"), "https://")
	cfg := fmt.Sprintf(`
global:
  scrape_interval: 1s

remote_write:
  - url: '%s'
    protobuf_message: "io.prometheus.write.v2.Request"
    send_exemplars: true
    metadata_config:
      send: true

scrape_configs:
  - job_name: 'test'
    scrape_interval: 1s
    scrape_protocols:
      - OpenMetricsText1.0.0
      - PrometheusText0.0.4
    static_configs:
    - targets: ['%s']
`, opts.ReceiveEndpoint, scrapeTarget)
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return err
	}
	out, err := logFile(dir)
	if err != nil {
		return err
	}
	if out != os.Stdout {
		defer out.Close()
	}
	cmd := exec.Command(binary, "--web.listen-address=127.0.0.1:0", "--config.file="+path, "--storage.tsdb.path="+filepath.Join(dir, "data"))
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	time.AfterFunc(opts.Timeout, func() { _ = cmd.Process.Signal(syscall.SIGINT) })
	return cmd.Wait()
}

// loopbackAddr is a free port on 127.0.0.1.
func loopbackAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
}

// logFile is where a sender's output goes: stdout with DEBUG set, as the suite does.
func logFile(dir string) (*os.File, error) {
	if os.Getenv("DEBUG") != "" {
		return os.Stdout, nil
	}
	return os.Create(filepath.Join(dir, "output.log"))
}
