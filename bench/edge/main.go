// Command edge measures a scrape-once run against its floors, on this machine, and
// prints a markdown table of ratios, each figure against a floor measured in the same
// run, beside its goal:
//
//   - wall and CPU time of a run of the real scrape-once binary (scrape, validate,
//     encode, publish to JetStream, await the acks; process start included), over the
//     same of a bare concurrent HTTP fetch of the same targets (bench/edge/fetch, a
//     process too), the two alternated run by run;
//   - scrape-once's CPU per run over a Prometheus agent's (Debian's /usr/bin/prometheus,
//     --enable-feature=agent) CPU per scrape cycle of the same targets, remote-writing
//     to a receiver that answers at once, measured in windows between blocks of the
//     runs (the agent paused meanwhile);
//   - the bytes the JetStream stream stores per run over the raw exposition bytes
//     scraped.
//
// The targets (loopback, one listener, a path each) serve tests/testdata's
// node_exporter capture, gzipped when asked; the NATS server (JetStream, file store)
// runs in this process, so a child's CPU is its own. A run whose scrapes, publishes or
// acks are not all there fails the harness rather than give a figure. Last, edge
// runs under the CPU profiler in scrape-once's test binary, and go tool pprof's summary
// says where scrape-once's time goes (process start and config loading aside).
//
//	go run ./bench/edge                         # 100 targets, 10 runs each, 15 s of the agent
//	go run ./bench/edge -out bench/results/edge.md -profile-dir /tmp/edge
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

type options struct {
	targets    int
	runs       int
	agent      string        // Prometheus binary; "" skips the agent's row
	agentFor   time.Duration // the agent's measured window
	interval   time.Duration // the agent's scrape interval
	profile    bool          // profile edge and summarise where the CPU goes
	profileDir string        // where to keep the profile; "" for a temp dir
}

func main() {
	var o options
	var out string
	flag.IntVar(&o.targets, "targets", 100, "loopback targets")
	flag.IntVar(&o.runs, "runs", 10, "measured runs of scrape-once and of the bare fetch each, alternated")
	flag.StringVar(&o.agent, "prometheus", "/usr/bin/prometheus", "Prometheus 2 binary run as agent; empty to skip that row")
	flag.DurationVar(&o.agentFor, "agent-window", 15*time.Second, "how long the agent's CPU is measured")
	flag.DurationVar(&o.interval, "agent-interval", time.Second, "the agent's scrape interval")
	flag.BoolVar(&o.profile, "profile", true, "profile scrape-once's code and print where its CPU goes")
	flag.StringVar(&o.profileDir, "profile-dir", "", "keep that CPU profile (edge-cpu.pprof) and its summary (edge-cpu.txt) here")
	flag.StringVar(&out, "out", "", "also write the report to this file")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, out); err != nil {
		fmt.Fprintf(os.Stderr, "edge: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, out string) error {
	body, err := os.ReadFile(filepath.Join(fixture.Dir(), fixture.NodeExporter))
	if err != nil {
		return fmt.Errorf("read the exposition: %w", err)
	}
	load := loadAverage()
	res, err := measure(ctx, o, body)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	var w io.Writer = os.Stdout
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		defer f.Close()
		w = io.MultiWriter(os.Stdout, f)
	}
	fmt.Fprintf(w, "# scrape-once against its floors\n\n%s, %s/%s, %d CPUs (%s), host %s, %s, load average before: %s\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cpuModel(), host, runtime.Version(), load)
	res.report(w, o, len(body))
	return nil
}

// cpuModel is the first model name in /proc/cpuinfo, "unknown" elsewhere.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// loadAverage is /proc/loadavg's 1, 5 and 15 minute figures: the machine may be shared.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
