package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/proctest"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// Sinks the harness measures.
const (
	sinkCounting    = "counting"    // remote_write into the harness's counting receiver
	sinkPushGateway = "pushgateway" // push_gateway into Debian's prometheus-pushgateway
	sinkPrometheus  = "prometheus"  // remote_write into a real Prometheus 3
)

// Arrival modes.
const (
	modeBurst  = "burst"  // every target at the top of each interval (OnCalendar=*:*:00 on every edge)
	modeSpread = "spread" // targets evenly over the interval
)

const clusterID = "bench"

// stepResult is what one step measured: one sink, one mode, one N.
type stepResult struct {
	Sink, Mode string
	N60        int // targets per 60 s
	N          int // targets per round (N60 scaled to the interval)
	Rounds     int // rounds published
	Aborted    string

	Published int
	PubErr    string
	Drain     drainCounts // deltas over the step
	LagP99    float64     // seconds, from the drain's histogram
	E2E       *endToEnd   // counting receiver only
	Clear     []time.Duration
	BusyRate  float64       // scrapes/s, see rate
	Window    time.Duration // start of the first round to the last message's fate
	DrainCPU  float64       // seconds over the window
	DrainMem  memory
	// The receiving side: what it counted, its CPU over the window, its memory.
	RecvCount float64
	RecvUnit  string
	RecvCPU   float64
	RecvMem   memory
	Load      [2]float64 // one-minute load average at start and end
	Others    float64    // CPU seconds the rest of the machine used over the window
	Quiet     string     // how the wait for a quiet machine before the step went
	Profile   string     // path of the drain's CPU profile, if taken

	Pass bool
	Why  string // why not
	Err  string // the step could not run: neither pass nor fail
}

// rate is the drain's throughput in scrapes per second while it had work: messages
// settled over the time at least tailWaiting messages were waiting, from its counters
// polled while the step ran. 0 when it had work for less than rateWindow in all (a
// small burst, a spread it kept up with at once): its rate then says little of its
// capacity.
func (s *stepResult) rate() float64 { return s.BusyRate }

// rateWindow is the least busy time a throughput is measured over.
const rateWindow = 2 * time.Second

// tailWaiting is how many messages must wait for a poll to count as busy. The last
// few of a burst wait in remote-write requests for batch_send_deadline, for scrapes
// that no longer come (as Prometheus's last samples do): that wait is pacing, not the
// drain's capacity.
const tailWaiting = 100

// busyRate is the rate over the polls of tl that began with at least tailWaiting
// messages waiting.
func busyRate(tl []finalAt) float64 {
	var busy time.Duration
	settled := 0.0
	for i := 0; i+1 < len(tl); i++ {
		if float64(tl[i].published)-tl[i].final >= tailWaiting {
			busy += tl[i+1].at.Sub(tl[i].at)
			settled += tl[i+1].final - tl[i].final
		}
	}
	if busy < rateWindow {
		return 0
	}
	return settled / busy.Seconds()
}

// cpuPerScrape is the drain's CPU milliseconds per delivered scrape.
func (s *stepResult) cpuPerScrape() float64 {
	if s.Drain.Delivered == 0 {
		return math.NaN()
	}
	return s.DrainCPU * 1000 / s.Drain.Delivered
}

// bench is one run's environment, shared by its steps.
type bench struct {
	opts     *options
	procs    *procs
	dir      string // the run's scratch directory
	root     string // module root
	drainBin string
	pgwBin   string
	promBin  string
	capture  *capture
	codec    *envelope.Codec
	encodeMs float64 // calibrated cost of one Encode, milliseconds
	logf     func(format string, args ...any)
}

// sinkSide is the receiving end of a step.
type sinkSide struct {
	name string
	url  string
	recv *receiver // counting
	proc *proc     // pushgateway, prometheus
	base string    // http://addr of the proc
}

func (b *bench) startSink(ctx context.Context, sink, dir string) (*sinkSide, error) {
	switch sink {
	case sinkCounting:
		r, err := startReceiver()
		if err != nil {
			return nil, err
		}
		return &sinkSide{name: sink, url: r.URL(), recv: r}, nil
	case sinkPushGateway:
		p, base, err := b.startPushGateway(ctx, dir)
		if err != nil {
			return nil, err
		}
		return &sinkSide{name: sink, url: base, proc: p, base: base}, nil
	case sinkPrometheus:
		cfg := filepath.Join(dir, "prometheus.yml")
		if err := os.WriteFile(cfg, []byte("global:\n  scrape_interval: 15s\n"), 0o644); err != nil {
			return nil, err
		}
		p, base, err := b.startServer(ctx, dir, "prometheus", b.promBin, "/-/ready", 90*time.Second,
			"--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
			"--web.enable-remote-write-receiver",
			"--web.remote-write-receiver.accepted-protobuf-messages=prometheus.WriteRequest")
		if err != nil {
			return nil, err
		}
		return &sinkSide{name: sink, url: base + "/api/v1/write", proc: p, base: base}, nil
	}
	return nil, fmt.Errorf("unknown sink %q", sink)
}

func (b *bench) startPushGateway(ctx context.Context, dir string) (*proc, string, error) {
	return b.startServer(ctx, dir, "pushgateway", b.pgwBin, "/-/ready", 20*time.Second,
		"--persistence.file=", "--push.disable-consistency-check")
}

// startServer runs bin on a free loopback port (--web.listen-address) with args and
// waits until ready answers 200; it returns the process and its base URL. A port taken
// between the probe and the bind makes it try another.
func (b *bench) startServer(ctx context.Context, dir, name, bin, ready string, timeout time.Duration, args ...string) (*proc, string, error) {
	var err error
	for range bindAttempts {
		var addr string
		if addr, err = proctest.FreeAddr(); err != nil {
			return nil, "", err
		}
		var p *proc
		if p, err = b.procs.start(dir, name, bin, nil, append([]string{"--web.listen-address=" + addr}, args...)...); err != nil {
			return nil, "", err
		}
		base := "http://" + addr
		if err = waitHTTP(ctx, p, base+ready, timeout); err == nil {
			return p, base, nil
		}
		b.procs.stop(p, 20*time.Second)
		if !errors.Is(err, errInUse) {
			break
		}
	}
	return nil, "", err
}

func (s *sinkSide) stop(ps *procs) {
	if s.recv != nil {
		s.recv.close()
	}
	ps.stop(s.proc, 20*time.Second)
}

// count is what the receiving side has taken so far, and its unit.
func (s *sinkSide) count() (float64, string) {
	switch s.name {
	case sinkCounting:
		return float64(s.recv.samples.Load()), "samples"
	case sinkPushGateway:
		// The gateway's /metrics also serves every group pushed: read only its counter.
		v, err := scrapeLines(s.base+"/metrics", "pushgateway_http_requests_total", "handler", "push", "code", "2*")
		if err != nil {
			return math.NaN(), "PUTs"
		}
		return v, "PUTs"
	case sinkPrometheus:
		fams, err := scrape(s.base + "/metrics")
		if err != nil {
			return math.NaN(), "samples"
		}
		return sum(fams, "prometheus_tsdb_head_samples_appended_total"), "samples"
	}
	return math.NaN(), ""
}

// cpu is the receiving side's CPU seconds: its process, or the harness's own for the
// in-process counting receiver (which then includes the publisher).
func (s *sinkSide) cpu() float64 {
	pid := 0
	if s.proc != nil {
		pid = s.proc.pid()
	}
	v, _ := cpuSeconds(pid)
	return v
}

func (s *sinkSide) memory() memory {
	pid := 0
	if s.proc != nil {
		pid = s.proc.pid()
	}
	m, _ := readMemory(pid)
	return m
}

// drainSetup is what a drain config says.
type drainSetup struct {
	MaxAge   time.Duration
	Embedded string // embedded stream's listen address ("auto": startDrain picks one), or ""
	StoreDir string // "memory" or a directory
	// External stream (the backlog test): the drain consumes from it with MaxInflight.
	StreamURL   string
	MaxInflight int
	Monitor     string
	Sink        string
	SinkURL     string
}

func (d drainSetup) yaml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "verbose: false\nmax_age: %s\nidentity: bench-drain\n", d.MaxAge)
	if d.Embedded != "" {
		fmt.Fprintf(&b, "embedded_stream: {listen: '%s', cluster_id: %s, store_dir: '%s'}\n", d.Embedded, clusterID, d.StoreDir)
	}
	if d.StreamURL != "" {
		fmt.Fprintf(&b, "receiver_stream: {cluster_id: %s, urls: '%s', client_id: bench-drain, max_inflight: %d}\n",
			clusterID, d.StreamURL, d.MaxInflight)
	}
	fmt.Fprintf(&b, "monitor: {listen: '%s'}\n", d.Monitor)
	switch d.Sink {
	case sinkPushGateway:
		fmt.Fprintf(&b, "push_gateway: {url: '%s'}\n", d.SinkURL)
	default:
		fmt.Fprintf(&b, "remote_write:\n  - url: '%s'\n", d.SinkURL)
	}
	return b.String()
}

// drainProc is a running drain.
type drainProc struct {
	*proc
	monitor string // http://addr
	stream  string // nats://addr of its embedded stream, if any
	pprof   string // http://addr, when built with the overlay
}

// startDrain runs the drain with setup and waits until it is subscribed. It picks the
// monitor's address, and the embedded stream's when setup has one, itself: another
// process can take a port between the probe and the drain's bind, so it retries.
func (b *bench) startDrain(ctx context.Context, dir string, setup drainSetup) (*drainProc, error) {
	var err error
	for range bindAttempts {
		var d *drainProc
		if d, err = b.launchDrain(ctx, dir, setup); err == nil || !errors.Is(err, errInUse) {
			return d, err
		}
	}
	return nil, err
}

func (b *bench) launchDrain(ctx context.Context, dir string, setup drainSetup) (*drainProc, error) {
	var err error
	if setup.Monitor, err = proctest.FreeAddr(); err != nil {
		return nil, err
	}
	if setup.Embedded != "" {
		if setup.Embedded, err = proctest.FreeAddr(); err != nil {
			return nil, err
		}
	}
	path := filepath.Join(dir, "drain.yaml")
	if err := os.WriteFile(path, []byte(setup.yaml()), 0o644); err != nil {
		return nil, err
	}
	var env []string
	pprofAddr := ""
	if b.opts.PprofDir != "" {
		if pprofAddr, err = proctest.FreeAddr(); err != nil {
			return nil, err
		}
		env = append(env, "BENCH_DRAIN_PPROF="+pprofAddr)
	}
	p, err := b.procs.start(dir, "drain", b.drainBin, env, "-c", path)
	if err != nil {
		return nil, err
	}
	d := &drainProc{proc: p, monitor: "http://" + setup.Monitor}
	if setup.Embedded != "" {
		d.stream = "nats://" + setup.Embedded
	}
	if pprofAddr != "" {
		d.pprof = "http://" + pprofAddr
	}
	if err := waitHTTP(ctx, p, d.monitor+"/healthz", 60*time.Second); err != nil {
		b.procs.stop(p, 10*time.Second)
		return nil, err
	}
	return d, nil
}

// sampler polls the drain's counters while a step runs: when each round cleared, and
// whether the step has already failed (too many messages older than the lag limit
// still undelivered), so that a failing step stops publishing early.
type sampler struct {
	drain    *drainProc
	pub      *publisher
	base     drainCounts
	limit    time.Duration
	planned  int
	mu       sync.Mutex
	timeline []finalAt
	failed   atomic.Bool
}

// finalAt is the drain's progress at one moment: messages with a final fate, and
// messages published by then.
type finalAt struct {
	at        time.Time
	final     float64
	published int
}

func (s *sampler) run(ctx context.Context) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s.poll()
	}
}

func (s *sampler) poll() float64 {
	c, err := readDrain(s.drain.monitor)
	now := time.Now()
	if err != nil {
		return math.NaN() // a busy drain's /metrics may time out: the next poll tells
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	final := c.minus(s.base).final()
	s.timeline = append(s.timeline, finalAt{now, final, s.pub.publishedBy(now)})
	// Messages published longer than the limit ago and not yet final all have a lag
	// over the limit: once they exceed 1 % of what the step publishes, p99 cannot pass.
	if overdue := float64(s.pub.startedBy(now.Add(-s.limit-time.Second))) - final; overdue > 0.01*float64(s.planned) {
		s.failed.Store(true)
	}
	return final
}

// clearedAt is when the final count first reached n, or zero.
func (s *sampler) clearedAt(n int) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.timeline {
		if f.final >= float64(n) {
			return f.at
		}
	}
	return time.Time{}
}

// runStep measures one N: a fresh sink and drain, rounds of publishes, then the
// drain's and the sink's figures over the step.
func (b *bench) runStep(ctx context.Context, sink, mode string, n60 int) (res *stepResult) {
	o := b.opts
	n := max(1, int(math.Round(float64(n60)*o.Interval.Seconds()/60)))
	res = &stepResult{Sink: sink, Mode: mode, N60: n60, N: n}
	dir := filepath.Join(b.dir, fmt.Sprintf("%s-%s-%d", sink, mode, n60))
	fail := func(err error) *stepResult {
		res.Err = err.Error()
		return res
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}

	side, err := b.startSink(ctx, sink, dir)
	if err != nil {
		return fail(fmt.Errorf("start %s: %w", sink, err))
	}
	defer side.stop(b.procs)
	storeDir := "memory"
	if o.Store == "file" {
		storeDir = filepath.Join(dir, "stream")
	}
	d, err := b.startDrain(ctx, dir, drainSetup{
		MaxAge: 2 * o.Interval, Embedded: "auto", StoreDir: storeDir, Sink: sink, SinkURL: side.url,
	})
	if err != nil {
		return fail(fmt.Errorf("start drain: %w", err))
	}
	defer b.procs.stop(d.proc, 15*time.Second)

	pub, err := dialPublisher(ctx, d.stream, clusterID, b.capture.body, b.capture.samples, b.codec)
	if err != nil {
		return fail(fmt.Errorf("publisher: %w", err))
	}
	defer pub.close()

	base, err := readDrain(d.monitor)
	if err != nil {
		return fail(err)
	}
	recv0, unit := side.count()
	own := []int{0, d.pid()}
	if side.proc != nil {
		own = append(own, side.proc.pid())
	}
	res.Quiet = b.waitQuiet(ctx, own...)
	recvCPU0, drainCPU0 := side.cpu(), orZero(cpuSeconds(d.pid()))
	machine0, self0 := machineBusy(), orZero(cpuSeconds(0))
	res.Load[0] = loadAverage()

	smp := &sampler{drain: d, pub: pub, base: base, limit: o.LagLimit, planned: n * o.Intervals}
	sctx, stopSampler := context.WithCancel(ctx)
	var swg sync.WaitGroup
	swg.Add(1)
	go func() {
		defer swg.Done()
		smp.run(sctx)
	}()
	defer func() {
		stopSampler()
		swg.Wait()
	}()

	// Round r starts at t0 + r×interval. A burst round is encoded before it starts, with
	// its start as the scrapes' Start: the edge is never the bottleneck.
	prepLead := time.Duration(float64(n)*b.encodeMs*2*float64(time.Millisecond)) + time.Second
	t0 := time.Now().Add(prepLead + time.Second).Truncate(time.Second)
	starts := make([]time.Time, 0, o.Intervals)
	cum := make([]int, 0, o.Intervals)
	var lastPublish time.Time
	var profDone chan string
	for r := range o.Intervals {
		tr := t0.Add(time.Duration(r) * o.Interval)
		if smp.failed.Load() {
			res.Aborted = fmt.Sprintf("stopped after round %d: over 1%% of the messages already older than %v", r, o.LagLimit)
			break
		}
		if r == 0 && d.pprof != "" {
			profDone = b.profile(ctx, d, tr, res)
		}
		var acked int
		var perr error
		switch mode {
		case modeBurst:
			if !sleepUntil(ctx, tr.Add(-prepLead)) {
				return fail(ctx.Err())
			}
			msgs, err := pub.prepare(n, tr)
			if err != nil {
				return fail(err)
			}
			if !sleepUntil(ctx, tr) {
				return fail(ctx.Err())
			}
			acked, perr = pub.burst(ctx, msgs, tr, o.Interval)
		case modeSpread:
			if !sleepUntil(ctx, tr) {
				return fail(ctx.Err())
			}
			acked, perr = pub.spread(ctx, n, tr, o.Interval, o.Interval, smp.failed.Load)
		}
		lastPublish = time.Now()
		res.Published += acked
		res.Rounds++
		starts = append(starts, tr)
		cum = append(cum, res.Published)
		if perr != nil {
			res.PubErr = perr.Error()
			break
		}
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
	}

	// Wait for every message to find its fate, at most an interval and the lag limit
	// past the last publish: anything later failed the step anyway. A step that has
	// failed already waits only long enough to show the drain's rate while saturated.
	deadline := lastPublish.Add(o.Interval + o.LagLimit)
	for {
		final := smp.poll()
		if cut := lastPublish.Add(2*o.LagLimit + rateWindow); smp.failed.Load() && cut.Before(deadline) {
			deadline = cut
		}
		if final >= float64(res.Published) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		if err := d.exited(); err != nil {
			return fail(err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	end := time.Now()
	if ctx.Err() != nil {
		return fail(ctx.Err())
	}
	if profDone != nil {
		res.Profile = <-profDone
	}
	smp.mu.Lock()
	res.BusyRate = busyRate(smp.timeline)
	smp.mu.Unlock()
	if mode == modeBurst {
		for i, tr := range starts {
			if at := smp.clearedAt(cum[i]); !at.IsZero() {
				res.Clear = append(res.Clear, at.Sub(tr))
			}
		}
	}

	after, err := readDrain(d.monitor)
	if err != nil {
		return fail(err)
	}
	res.Drain = after.minus(base)
	res.LagP99 = res.Drain.Lag.quantile(0.99)
	res.DrainCPU = orZero(cpuSeconds(d.pid())) - drainCPU0
	res.DrainMem, _ = readMemory(d.pid())
	res.Window = end.Sub(t0)
	res.RecvCPU = side.cpu() - recvCPU0
	res.Others = machineBusy() - machine0 - res.DrainCPU - (orZero(cpuSeconds(0)) - self0)
	if side.proc != nil {
		res.Others -= res.RecvCPU
	}
	res.RecvMem = side.memory()
	recv1, _ := side.count() // last: the gateway's /metrics is costly
	res.RecvCount, res.RecvUnit = recv1-recv0, unit
	res.Load[1] = loadAverage()
	if side.recv != nil {
		e := side.recv.endToEnd()
		res.E2E = &e
	}
	res.judge(o.LagLimit)
	return res
}

// judge decides whether the step passed: lag p99 under the limit, and every message
// published delivered — none expired, superseded, rejected or missing.
func (s *stepResult) judge(limit time.Duration) {
	var why []string
	if s.Aborted != "" {
		why = append(why, s.Aborted)
	}
	if s.PubErr != "" {
		why = append(why, "publish: "+s.PubErr)
	}
	if math.IsNaN(s.LagP99) || s.LagP99 >= limit.Seconds() {
		why = append(why, fmt.Sprintf("lag p99 %s ≥ %v", seconds(s.LagP99), limit))
	}
	dc := s.Drain
	if int(dc.Delivered) != s.Published {
		why = append(why, fmt.Sprintf("delivered %.0f of %d", dc.Delivered, s.Published))
	}
	if lost := dc.Expired + dc.Superseded + dc.Rejected + dc.SinkRejected + dc.SinkSuperseded; lost > 0 {
		why = append(why, fmt.Sprintf("%.0f not delivered (expired %.0f, superseded %.0f, rejected %.0f, sink refused %.0f)",
			lost, dc.Expired, dc.Superseded+dc.SinkSuperseded, dc.Rejected, dc.SinkRejected))
	}
	if s.E2E != nil && (s.E2E.Scrapes < s.Published || s.E2E.Incomplete > 0) {
		why = append(why, fmt.Sprintf("receiver has %d scrapes (%d incomplete) of %d", s.E2E.Scrapes, s.E2E.Incomplete, s.Published))
	}
	if s.Sink == sinkPushGateway && int(s.RecvCount) < s.Published {
		why = append(why, fmt.Sprintf("gateway took %.0f PUTs of %d", s.RecvCount, s.Published))
	}
	if len(why) > 0 && int(dc.Received) > s.Published {
		why = append(why, fmt.Sprintf("%.0f redeliveries (ack_wait passed)", dc.Received-float64(s.Published)))
	}
	s.Pass = len(why) == 0
	s.Why = strings.Join(why, "; ")
}

// profile takes a CPU profile of the drain from start, the first round: a failing step
// may publish no other, and a burst is busiest right after it arrives.
func (b *bench) profile(ctx context.Context, d *drainProc, start time.Time, res *stepResult) chan string {
	done := make(chan string, 1)
	secs := int(min(20*time.Second, b.opts.Interval-2*time.Second) / time.Second)
	go func() {
		if !sleepUntil(ctx, start) {
			done <- ""
			return
		}
		url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", d.pprof, secs)
		resp, err := (&http.Client{Timeout: time.Duration(secs+30) * time.Second}).Get(url)
		if err != nil {
			done <- ""
			return
		}
		defer resp.Body.Close()
		path := filepath.Join(b.opts.PprofDir, fmt.Sprintf("drain-%s-%s-%d.pprof", res.Sink, res.Mode, res.N60))
		f, err := os.Create(path)
		if err != nil {
			done <- ""
			return
		}
		_, err = io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil || resp.StatusCode != http.StatusOK {
			done <- ""
			return
		}
		done <- path
	}()
	return done
}

// backlogResult is one backlog test: the drain started late on rounds×N waiting
// messages.
type backlogResult struct {
	N, Rounds, MaxInflight int
	Messages               int
	Clear                  time.Duration
	Drain                  drainCounts
	Peak                   int64 // VmHWM while clearing
	After                  int64 // VmRSS after clearing and one fresh round
	Why                    string
}

// runBacklog publishes rounds×n scrapes (rounds intervals of the same targets, the
// oldest first) to a stream server in the harness, then starts the drain on them with
// max_inflight and measures its peak memory while it clears them.
func (b *bench) runBacklog(ctx context.Context, n60, rounds, inflight int) (res *backlogResult) {
	o := b.opts
	n := max(1, int(math.Round(float64(n60)*o.Interval.Seconds()/60)))
	res = &backlogResult{N: n, Rounds: rounds, MaxInflight: inflight}
	dir := filepath.Join(b.dir, fmt.Sprintf("backlog-%d-%d-%d", n60, rounds, inflight))
	fail := func(err error) *backlogResult {
		res.Why = err.Error()
		return res
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}
	srv, err := startStream()
	if err != nil {
		return fail(err)
	}
	defer srv.Shutdown()
	pub, err := dialPublisher(ctx, srv.URL(), clusterID, b.capture.body, b.capture.samples, b.codec)
	if err != nil {
		return fail(err)
	}
	defer pub.close()
	first := time.Now().Add(-time.Duration(rounds-1) * o.Interval)
	for r := range rounds {
		start := first.Add(time.Duration(r) * o.Interval)
		msgs, err := pub.prepare(n, start)
		if err != nil {
			return fail(err)
		}
		acked, err := pub.burst(ctx, msgs, start, time.Minute)
		res.Messages += acked
		if err != nil {
			return fail(err)
		}
	}

	side, err := b.startSink(ctx, sinkCounting, dir)
	if err != nil {
		return fail(err)
	}
	defer side.stop(b.procs)
	start := time.Now()
	d, err := b.startDrain(ctx, dir, drainSetup{
		MaxAge: time.Duration(rounds+10) * o.Interval, StreamURL: srv.URL(), MaxInflight: inflight,
		Sink: sinkCounting, SinkURL: side.url,
	})
	if err != nil {
		return fail(err)
	}
	defer b.procs.stop(d.proc, 15*time.Second)
	deadline := start.Add(10 * time.Minute)
	for {
		c, err := readDrain(d.monitor)
		if err == nil && c.final() >= float64(res.Messages) {
			res.Clear = time.Since(start)
			res.Drain = c
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fail(fmt.Errorf("backlog not cleared within %v", deadline.Sub(start)))
		}
		if err := d.exited(); err != nil {
			return fail(err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	m, _ := readMemory(d.pid())
	res.Peak = m.Peak

	// Steady state after the backlog: one fresh round, delivered.
	now := time.Now()
	msgs, err := pub.prepare(n, now)
	if err != nil {
		return fail(err)
	}
	if _, err := pub.burst(ctx, msgs, now, time.Minute); err != nil {
		return fail(err)
	}
	for {
		c, err := readDrain(d.monitor)
		if err == nil && c.final() >= float64(res.Messages+n) {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fail(errors.New("fresh round after the backlog not delivered"))
		}
		time.Sleep(250 * time.Millisecond)
	}
	m, _ = readMemory(d.pid())
	res.After = m.RSS
	return res
}

// waitQuiet waits, at most -quiet-wait, until the rest of the machine uses less than
// half a CPU over two seconds: the machine is shared, and a step measured while others
// compile or test says more about them than about the drain. own are the harness's
// processes (0: itself). It says how it went.
func (b *bench) waitQuiet(ctx context.Context, own ...int) string {
	const window, quiet = 2 * time.Second, 0.5
	ownCPU := func() float64 {
		total := 0.0
		for _, pid := range own {
			total += orZero(cpuSeconds(pid))
		}
		return total
	}
	start := time.Now()
	for attempt := 0; ; attempt++ {
		m0, o0 := machineBusy(), ownCPU()
		if !sleepUntil(ctx, time.Now().Add(window)) {
			return ""
		}
		others := (machineBusy() - m0 - (ownCPU() - o0)) / window.Seconds()
		if others < quiet {
			if attempt == 0 {
				return ""
			}
			return fmt.Sprintf("waited %v for a quiet machine", time.Since(start).Round(time.Second))
		}
		if time.Since(start) >= b.opts.QuietWait {
			b.logf("the machine is busy (others use %.1f CPUs): measuring anyway", others)
			return fmt.Sprintf("machine busy at start (others %.1f CPUs after %v)", others, b.opts.QuietWait)
		}
	}
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	select {
	case <-time.After(d):
		return true
	case <-ctx.Done():
		return false
	}
}

// orZero drops an error where a zero is a fine answer (a process that just exited).
func orZero[T any](v T, _ error) T { return v }
