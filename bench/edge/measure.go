package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const modulePath = "github.com/prometheus-streams/prometheus-streams"

// build builds a command of the module into dir, as make build does (trimmed paths,
// symbols stripped), and returns the binary's path.
func build(ctx context.Context, dir, pkg string) (string, error) {
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.CommandContext(ctx, goCommand(), "build", "-trimpath", "-ldflags", "-s -w", "-o", out, modulePath+"/"+pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}

func goCommand() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// usage is what one run of a child process took.
type usage struct {
	wall, cpu time.Duration // cpu: user + system, from the kernel's rusage of the child
}

// runChild runs bin with args to its end and returns its wall time, its CPU time and
// its standard error; a non-zero exit is an error that quotes that output.
func runChild(ctx context.Context, bin string, args ...string) (usage, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return usage{}, out.String(), fmt.Errorf("%s: %w\n%s", filepath.Base(bin), err, out.String())
	}
	return usage{wall: wall, cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}, out.String(), nil
}

// checkSummary fails unless scrape-once's summary line says that every one of n
// targets was scraped, published and acked.
func checkSummary(log string, n int) error {
	// Each key with the space before it: "failed=0" is also the end of "ack_failed=0".
	for _, want := range []string{
		fmt.Sprintf(" targets=%d ", n), fmt.Sprintf(" ok=%d ", n), " failed=0 ",
		fmt.Sprintf(" published=%d ", n), fmt.Sprintf(" acked=%d ", n), " ack_failed=0 ", " pending=0 ",
	} {
		if !strings.Contains(log, want) {
			return fmt.Errorf("scrape-once's summary lacks %q:\n%s", strings.TrimSpace(want), log)
		}
	}
	return nil
}

// agentConfig is a Prometheus configuration scraping every URL each interval, each
// target its own instance, and remote-writing to writeURL.
func agentConfig(urls []string, interval time.Duration, writeURL string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n", interval, interval*9/10)
	fmt.Fprintf(&b, "remote_write:\n  - url: %s\nscrape_configs:\n  - job_name: node\n    static_configs:\n", writeURL)
	for i, u := range urls {
		rest := strings.TrimPrefix(u, "http://")
		host, path, _ := strings.Cut(rest, "/")
		fmt.Fprintf(&b, "      - targets: ['%s']\n        labels: {instance: t%d, __metrics_path__: '/%s'}\n", host, i, path)
	}
	return b.String()
}

// receiver answers every remote-write request with 204 at once, after reading it.
func receiver() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})
}

// processCPU reads process_cpu_seconds_total from a Prometheus's own /metrics.
func processCPU(ctx context.Context, client *http.Client, metricsURL string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", metricsURL, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", metricsURL, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "process_cpu_seconds_total "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("read %s: process_cpu_seconds_total: %w", metricsURL, err)
			}
			return f, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read %s: %w", metricsURL, err)
	}
	return 0, fmt.Errorf("read %s: no process_cpu_seconds_total", metricsURL)
}
