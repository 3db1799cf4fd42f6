package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/proctest"
)

// result is what one sitting measured.
type result struct {
	fetch, scrape []usage // run i of each, alternated
	// The same with enable_compression: false, and the bare fetch asking likewise.
	fetchPlain, scrapePlain []usage
	storedBytes             uint64 // the stream's growth over the measured runs
	storedMsgs              uint64
	agent                   []agentWindow // one per block of runs; none when not measured
	profile                 string        // scrape-once's CPU profile summary, "" when not taken
}

// measure runs the whole sitting: builds, servers, a warm-up run of each, o.runs
// alternated runs, the agent, the profile.
func measure(ctx context.Context, o options, body []byte) (*result, error) {
	dir, err := os.MkdirTemp("", "bench-edge-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	scrapeOnce, err := build(ctx, dir, "cmd/scrape-once")
	if err != nil {
		return nil, err
	}
	fetch, err := build(ctx, dir, "bench/edge/fetch")
	if err != nil {
		return nil, err
	}
	tg, err := serveTargets(body, o.targets)
	if err != nil {
		return nil, err
	}
	defer tg.close()
	ns, err := startNATS(filepath.Join(dir, "jetstream"))
	if err != nil {
		return nil, err
	}
	defer ns.close()
	cfgText := edgeConfig(ns.url(), tg.urls(), true)
	cfgPath := filepath.Join(dir, "scrape-once.yaml")
	plainPath := filepath.Join(dir, "scrape-once-plain.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	if err := os.WriteFile(plainPath, []byte(edgeConfig(ns.url(), tg.urls(), false)), 0o600); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}

	fetchOnce := func(plain bool) (usage, error) {
		before := tg.requests.Load()
		args := tg.urls()
		if plain {
			args = append([]string{"-identity"}, args...)
		}
		u, _, err := runChild(ctx, fetch, args...)
		if err != nil {
			return u, err
		}
		if got := tg.requests.Load() - before; got != int64(o.targets) {
			return u, fmt.Errorf("bare fetch: %d requests for %d targets", got, o.targets)
		}
		return u, nil
	}
	var res result
	scrapeOnceRun := func(plain bool) (usage, error) {
		before := tg.requests.Load()
		b0, m0, err := ns.stored(ctx)
		if err != nil {
			return usage{}, err
		}
		path := cfgPath
		if plain {
			path = plainPath
		}
		u, log, err := runChild(ctx, scrapeOnce, "--config", path)
		if err != nil {
			return u, err
		}
		if err := checkSummary(log, o.targets); err != nil {
			return u, err
		}
		if got := tg.requests.Load() - before; got != int64(o.targets) {
			return u, fmt.Errorf("scrape-once: %d requests for %d targets", got, o.targets)
		}
		b1, m1, err := ns.stored(ctx)
		if err != nil {
			return u, err
		}
		if m1 != m0+uint64(o.targets) || b1 < b0 {
			return u, fmt.Errorf("scrape-once: the stream went from %d to %d messages (%d to %d bytes) for %d targets", m0, m1, b0, b1, o.targets)
		}
		if !plain { // the same bodies: counted once
			res.storedBytes += b1 - b0
			res.storedMsgs += m1 - m0
		}
		return u, nil
	}

	// Warm-up: the page cache, and the stream's creation, are not measured.
	for _, plain := range []bool{false, true} {
		if _, err := fetchOnce(plain); err != nil {
			return nil, err
		}
		if _, err := scrapeOnceRun(plain); err != nil {
			return nil, err
		}
	}
	res.storedBytes, res.storedMsgs = 0, 0

	// The agent, when measured, runs paused (SIGSTOP) while the binaries run; after each
	// block of runs it is resumed for a window of its own, so that its figure and
	// scrape-once's see the machine's load of the same minutes.
	var ag *agent
	blocks := 1
	if o.agent != "" {
		if ag, err = startAgent(ctx, o, dir, tg); err != nil {
			return nil, err
		}
		defer ag.stop()
		blocks = min(agentBlocks, o.runs)
	}
	for b := range blocks {
		for i := b * o.runs / blocks; i < (b+1)*o.runs/blocks; i++ {
			// Alternate which goes first, so that neither always follows the other;
			// each pair with gzip, then without.
			order := []bool{true, false}
			if i%2 == 1 {
				order = []bool{false, true}
			}
			for _, plain := range []bool{false, true} {
				for _, isFetch := range order {
					var u usage
					var err error
					if isFetch {
						u, err = fetchOnce(plain)
					} else {
						u, err = scrapeOnceRun(plain)
					}
					if err != nil {
						return nil, err
					}
					switch {
					case isFetch && plain:
						res.fetchPlain = append(res.fetchPlain, u)
					case isFetch:
						res.fetch = append(res.fetch, u)
					case plain:
						res.scrapePlain = append(res.scrapePlain, u)
					default:
						res.scrape = append(res.scrape, u)
					}
				}
			}
		}
		if ag != nil {
			w, err := ag.window(ctx, o.agentFor/time.Duration(blocks))
			if err != nil {
				return nil, err
			}
			w.scrapeFrom, w.scrapeTo = b*o.runs/blocks, (b+1)*o.runs/blocks
			res.agent = append(res.agent, w)
		}
	}
	if o.profile {
		pdir := o.profileDir
		if pdir == "" {
			pdir = dir
		}
		if res.profile, err = profile(ctx, dir, pdir, cfgPath); err != nil {
			return nil, err
		}
	}
	return &res, nil
}

// edgeConfig is scrape-once's config: one job of the targets, published to the
// stream, which scrape-once creates, asking the targets for gzip or not. The stream
// keeps messages for max_age: an hour, so that none expires during a sitting, which
// would spoil the count of each run's.
func edgeConfig(natsURL string, urls []string, gzip bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "scrape_interval: 60s\nmax_age: 1h\npoller_stream: {transport: jetstream, stream: %s, create_stream: true, urls: '%s'}\n", streamName, natsURL)
	fmt.Fprintf(&b, "jobs:\n  node:\n    enable_compression: %t\n    targets:\n", gzip)
	for i, u := range urls {
		fmt.Fprintf(&b, "      - {name: t%d, url: '%s'}\n", i, u)
	}
	return b.String()
}

// agentBlocks is how many windows the agent's measurement is split into, each after a
// block of the binaries' runs.
const agentBlocks = 3

// agent is Prometheus running as an agent, scraping the targets every o.interval and
// remote-writing to a receiver that answers at once.
type agent struct {
	p        *proctest.Process
	log      *proctest.Log
	client   *http.Client
	metrics  string // its /metrics URL
	rw       *http.Server
	tg       *targets
	interval time.Duration
}

// agentWindow is the agent's CPU per scrape cycle over one window, and the block of
// scrape-once runs (indices scrapeFrom to scrapeTo) before it.
type agentWindow struct {
	cpu                  time.Duration // per cycle
	cycles               float64
	scrapeFrom, scrapeTo int
}

// startAgent starts the agent and pauses it once it has scraped every target twice.
func startAgent(ctx context.Context, o options, dir string, tg *targets) (*agent, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("remote-write receiver: %w", err)
	}
	a := &agent{
		log: &proctest.Log{}, client: &http.Client{Timeout: 5 * time.Second}, tg: tg, interval: o.interval,
		rw: &http.Server{Handler: receiver(), ReadHeaderTimeout: 10 * time.Second},
	}
	go func() { _ = a.rw.Serve(l) }()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(agentConfig(tg.urls(), o.interval, "http://"+l.Addr().String()+"/api/v1/write")), 0o600); err != nil {
		_ = a.rw.Close()
		return nil, fmt.Errorf("agent config: %w", err)
	}
	addr, p, err := proctest.OnFreePort(3, func(addr string) (*proctest.Process, error) {
		return proctest.Start("prometheus", o.agent, []string{
			"--enable-feature=agent", "--config.file=" + cfg, "--storage.agent.path=" + filepath.Join(dir, "agent"),
			"--web.listen-address=" + addr,
		}, a.log, a.client, "http://"+addr+"/-/ready", 30*time.Second, 2*time.Second)
	})
	if err != nil {
		_ = a.rw.Close()
		return nil, fmt.Errorf("prometheus agent: %w", err)
	}
	a.p, a.metrics = p, "http://"+addr+"/metrics"
	if err := a.warmUp(ctx); err != nil {
		a.stop()
		return nil, err
	}
	if err := a.p.Signal(syscall.SIGSTOP); err != nil {
		a.stop()
		return nil, fmt.Errorf("pause prometheus agent: %w", err)
	}
	return a, nil
}

// warmUp waits until the agent has scraped every target twice more.
func (a *agent) warmUp(ctx context.Context) error {
	if err := awaitRequests(ctx, &a.tg.prometheus, a.tg.prometheus.Load()+2*int64(a.tg.n), 30*time.Second); err != nil {
		return fmt.Errorf("prometheus agent warm-up: %w\n%s", err, a.log.String())
	}
	return nil
}

// window resumes the agent, lets it warm up, measures its CPU per scrape cycle over d
// from its process_cpu_seconds_total (a cycle counted as one request to each target),
// and pauses it again.
func (a *agent) window(ctx context.Context, d time.Duration) (agentWindow, error) {
	if err := a.p.Signal(syscall.SIGCONT); err != nil {
		return agentWindow{}, fmt.Errorf("resume prometheus agent: %w", err)
	}
	if err := a.warmUp(ctx); err != nil {
		return agentWindow{}, err
	}
	cpu0, err := processCPU(ctx, a.client, a.metrics)
	if err != nil {
		return agentWindow{}, err
	}
	r0 := a.tg.prometheus.Load()
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return agentWindow{}, ctx.Err()
	}
	cpu1, err := processCPU(ctx, a.client, a.metrics)
	if err != nil {
		return agentWindow{}, err
	}
	r1 := a.tg.prometheus.Load()
	if err := a.p.Signal(syscall.SIGSTOP); err != nil {
		return agentWindow{}, fmt.Errorf("pause prometheus agent: %w", err)
	}
	cycles := float64(r1-r0) / float64(a.tg.n)
	if want := float64(d) / float64(a.interval); cycles < 0.8*want {
		return agentWindow{}, fmt.Errorf("prometheus agent: %.1f scrape cycles in %v, expected about %.0f\n%s", cycles, d, want, a.log.String())
	}
	return agentWindow{cpu: time.Duration((cpu1 - cpu0) / cycles * float64(time.Second)), cycles: cycles}, nil
}

// stop resumes the agent, so that it can take its SIGTERM, and stops it.
func (a *agent) stop() {
	_ = a.p.Signal(syscall.SIGCONT)
	a.p.Stop(10 * time.Second)
	_ = a.rw.Close()
}

// awaitRequests waits until count reaches n.
func awaitRequests(ctx context.Context, count *atomic.Int64, n int64, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for count.Load() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d requests: %w", count.Load(), n, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// profileRuns is how many runs the CPU profile covers.
const profileRuns = 20

// profile runs scrape-once's code (edge, as cmd/scrape-once wires it) profileRuns
// times under the CPU profiler, in a process of its own: scrape-once's test binary,
// whose TestProfileRuns runs it on the config at cfgPath. It writes the profile to dir
// and returns go tool pprof's summary of it by cumulative share. The test binary is
// built in tmp.
func profile(ctx context.Context, tmp, dir, cfgPath string) (string, error) {
	exe := filepath.Join(tmp, "scrape-once.test")
	build := exec.CommandContext(ctx, goCommand(), "test", "-c", "-o", exe, modulePath+"/cmd/scrape-once")
	if b, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("profile: go test -c cmd/scrape-once: %w\n%s", err, b)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("profile: %w", err)
	}
	path := filepath.Join(dir, "edge-cpu.pprof")
	run := exec.CommandContext(ctx, exe, "-test.run", "^TestProfileRuns$", "-test.count", "1", "-test.v", "-test.cpuprofile", path)
	run.Env = append(os.Environ(), "PROFILE_CONFIG="+cfgPath, fmt.Sprintf("PROFILE_RUNS=%d", profileRuns))
	b, err := run.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("profile runs: %w\n%s", err, b)
	}
	if !bytes.Contains(b, []byte("--- PASS: TestProfileRuns")) {
		// Skipped or not found: the profile would be of nothing.
		return "", fmt.Errorf("profile runs: TestProfileRuns did not run and pass\n%s", b)
	}
	cmd := exec.CommandContext(ctx, goCommand(), "tool", "pprof", "-top", "-cum", "-nodecount=25", exe, path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %w\n%s", err, out)
	}
	summary := string(out)
	if err := os.WriteFile(filepath.Join(dir, "edge-cpu.txt"), out, 0o644); err != nil {
		return "", fmt.Errorf("profile: %w", err)
	}
	return summary, nil
}

// median of ds; ds is not empty.
func median(ds []float64) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// report prints the table.
func (r *result) report(w io.Writer, o options, rawBytes int) {
	if len(r.scrape) == 0 || len(r.scrape) != len(r.fetch) {
		fmt.Fprintln(w, "no runs")
		return
	}
	var sw, sc, fw, fc, wallRatio, cpuRatio []float64
	for i := range r.scrape {
		s, f := r.scrape[i], r.fetch[i]
		sw, sc, fw, fc = append(sw, ms(s.wall)), append(sc, ms(s.cpu)), append(fw, ms(f.wall)), append(fc, ms(f.cpu))
		wallRatio = append(wallRatio, float64(s.wall)/float64(f.wall))
		cpuRatio = append(cpuRatio, float64(s.cpu)/float64(f.cpu))
	}
	fmt.Fprintf(w, "%d loopback targets serving %s (%d bytes), gzip when accepted; JetStream file store in-process; %d runs of each, alternated; medians, and the range of the run-by-run ratios.\n\n",
		o.targets, "tests/testdata/node_exporter.prom", rawBytes, len(r.scrape))
	fmt.Fprintln(w, "| row | scrape-once | floor | ratio (range) | goal |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	fmt.Fprintf(w, "| wall per run ÷ bare concurrent fetch | %.0f ms | %.0f ms | %.2f (%.2f–%.2f) | ≤ 2 |\n",
		median(sw), median(fw), median(wallRatio), slices.Min(wallRatio), slices.Max(wallRatio))
	fmt.Fprintf(w, "| CPU per run ÷ bare fetch's CPU | %.0f ms | %.0f ms | %.2f (%.2f–%.2f) | ≤ 2.5 |\n",
		median(sc), median(fc), median(cpuRatio), slices.Min(cpuRatio), slices.Max(cpuRatio))
	var agentCPU, agentRatio []float64
	cycles := 0.0
	for _, a := range r.agent {
		agentCPU = append(agentCPU, ms(a.cpu))
		agentRatio = append(agentRatio, median(sc[a.scrapeFrom:a.scrapeTo])/ms(a.cpu))
		cycles += a.cycles
	}
	if len(r.agent) > 0 {
		fmt.Fprintf(w, "| CPU per run ÷ Prometheus agent's CPU per scrape cycle¹ | %.0f ms | %.0f ms | %.2f (%.2f–%.2f) | ≤ 0.3 |\n",
			median(sc), median(agentCPU), median(agentRatio), slices.Min(agentRatio), slices.Max(agentRatio))
	}
	if len(r.scrapePlain) == len(r.scrape) {
		var pw, pc, pfw, pfc, pWall, pCPU, pCPUGzipFloor []float64
		for i := range r.scrapePlain {
			s, f := r.scrapePlain[i], r.fetchPlain[i]
			pw, pc, pfw, pfc = append(pw, ms(s.wall)), append(pc, ms(s.cpu)), append(pfw, ms(f.wall)), append(pfc, ms(f.cpu))
			pWall = append(pWall, float64(s.wall)/float64(f.wall))
			pCPU = append(pCPU, float64(s.cpu)/float64(f.cpu))
			pCPUGzipFloor = append(pCPUGzipFloor, float64(s.cpu)/float64(r.fetch[i].cpu))
		}
		fmt.Fprintf(w, "| `enable_compression: false`²: wall per run ÷ bare fetch asking likewise | %.0f ms | %.0f ms | %.2f (%.2f–%.2f) | |\n",
			median(pw), median(pfw), median(pWall), slices.Min(pWall), slices.Max(pWall))
		fmt.Fprintf(w, "| `enable_compression: false`²: CPU per run ÷ bare fetch's CPU asking likewise | %.0f ms | %.0f ms | %.2f (%.2f–%.2f) | |\n",
			median(pc), median(pfc), median(pCPU), slices.Min(pCPU), slices.Max(pCPU))
		fmt.Fprintf(w, "| `enable_compression: false`²: CPU per run ÷ the gzip bare fetch's CPU | %.0f ms | %.0f ms | %.2f (%.2f–%.2f) | |\n",
			median(pc), median(fc), median(pCPUGzipFloor), slices.Min(pCPUGzipFloor), slices.Max(pCPUGzipFloor))
	}
	perRun := float64(r.storedBytes) / float64(len(r.scrape))
	raw := float64(o.targets * rawBytes)
	fmt.Fprintf(w, "| bytes stored in the stream ÷ raw exposition bytes | %.0f B/run | %.0f B/run | %.3f | ≤ 0.12 |\n",
		perRun, raw, perRun/raw)
	if len(r.agent) > 0 {
		fmt.Fprintf(w, "\n¹ The agent's CPU includes its remote-write sending (to a loopback receiver answering 204 at once) and its WAL; %.0f scrape cycles at %v, from its process_cpu_seconds_total, in %d windows, each after a block of the runs above (paused meanwhile); the ratio is each window's against the median of its block.\n",
			cycles, o.interval, len(r.agent))
	}
	if len(r.scrapePlain) == len(r.scrape) {
		fmt.Fprintf(w, "\n² The same targets scraped with the job's `enable_compression: false` (Accept-Encoding: identity): the targets send the body uncompressed, which spares their gzip and scrape-once's gunzip, as where a target runs on the edge host itself; runs alternated with the rows above.\n")
	}
	if r.profile != "" {
		fmt.Fprintf(w, "\nWhere scrape-once's CPU goes: edge run %d times under the CPU profiler, in a process of its own (scrape-once's test binary; the NATS and target servers run in another), top by cumulative share:\n\n```\n%s```\n",
			profileRuns, trimProfile(r.profile))
	}
}

// trimProfile keeps pprof's header lines and table, without its build-id lines.
func trimProfile(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if l == "" || strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n") + "\n"
}
