// Command scale is a load harness for the central side: it measures how many targets
// the drain binary sustains per interval, per sink, on this machine, and prints a
// markdown report with each figure beside a floor measured in the same run (the
// receiving side taking the same data without the drain).
//
// For each sink it runs the drain as a subprocess with an embedded stream server and
// that one sink, publishes one node_exporter-sized envelope per target per interval
// (all at the top of the interval, "burst", or evenly over it, "spread"), and steps the
// number of targets N upward. A step passes when the drain's delivery lag p99 stays
// under the limit (15 s for a 60 s interval) and every message published was delivered.
// Then a backlog test starts a drain late on many intervals of waiting scrapes and
// reports its peak memory, and a catch-up test takes a remote-write receiver away for
// an outage while the targets keep publishing: how long the drain takes to deliver the
// backlog once the receiver is back, at what peak memory, and whether every scrape of
// every target arrived, whole, once and in order. Only loopback addresses are used.
//
//	go run ./bench/scale -quick              # 20 s intervals, N scaled by 1/3: a few minutes
//	go run ./bench/scale -max-duration 55m   # real 60 s intervals
//	go run ./bench/scale -catchup-only       # the catch-up test alone: about 17 minutes
//	go run ./bench/scale -catchup-only -quick # the same scaled by 1/3: about 6 minutes
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/proctest"
	"github.com/prometheus-streams/prometheus-streams/stream/embedded"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

type options struct {
	Interval        time.Duration
	Intervals       int
	Quick           bool
	Sinks           []string
	Modes           []string
	Steps           []int // targets per 60 s; empty: search from Probe
	Probe           int
	Growth          float64
	SearchSteps     int
	MaxDuration     time.Duration
	LagLimit        time.Duration
	Out             string
	Store           string
	Capture         string
	FloorDuration   time.Duration
	FloorClients    int
	PushWorkers     int
	Backlog         bool
	BacklogN        int
	BacklogRounds   []int
	BacklogInflight []int
	Catchup         bool
	CatchupOnly     bool
	CatchupN        int
	CatchupSteady   int
	CatchupOutage   time.Duration
	CatchupMaxAge   time.Duration
	CatchupInflight int
	CatchupSinks    []string
	PromMaxSeries   int
	PprofDir        string
	DrainBin        string
	QuietWait       time.Duration
	Keep            bool
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sinks, modes, steps, rounds, inflight, catchupSinks string
	fs.DurationVar(&o.Interval, "interval", 60*time.Second, "scrape interval: one round of publishes per interval")
	fs.IntVar(&o.Intervals, "intervals", 2, "rounds per step (-quick: 1)")
	fs.BoolVar(&o.Quick, "quick", false, "20 s intervals with N scaled by 1/3 (and the lag limit with it), one round per step: a trial run")
	fs.StringVar(&sinks, "sinks", "counting,pushgateway,prometheus", "sinks to measure: counting (remote_write into a receiver that only counts), pushgateway, prometheus (Prometheus 3)")
	fs.StringVar(&modes, "modes", "burst,spread", "arrival modes: burst (all at the top of the interval), spread (evenly over it)")
	fs.StringVar(&steps, "steps", "", "N to climb, targets per 60 s, ascending, e.g. 500,1000,2000,4000 (default: search from -probe)")
	fs.IntVar(&o.Probe, "probe", 8000, "first N of a burst search, targets per 60 s: large enough to saturate the drain, so its rate predicts the limit")
	fs.Float64Var(&o.Growth, "growth", 2, "while every step passes, the next N is at least this many times the last")
	fs.IntVar(&o.SearchSteps, "search-steps", 5, "most steps per sink and mode")
	fs.DurationVar(&o.MaxDuration, "max-duration", 55*time.Minute, "bound on the whole run; steps that would not fit are skipped")
	fs.DurationVar(&o.LagLimit, "lag-limit", 0, "a step passes when the drain's lag p99 is under this (default 15 s × interval/60 s)")
	fs.StringVar(&o.Out, "out", "", "write the report here (default stdout)")
	fs.StringVar(&o.Store, "store", "memory", "embedded stream store: memory or file")
	fs.StringVar(&o.Capture, "capture", filepath.Join(fixture.Dir(), fixture.NodeExporter), "exposition every target serves")
	fs.DurationVar(&o.FloorDuration, "floor-duration", 10*time.Second, "how long each floor measurement runs")
	fs.IntVar(&o.FloorClients, "floor-clients", 4, "parallel clients of the remote-write floor (the drain's default max_shards)")
	fs.IntVar(&o.PushWorkers, "push-workers", 8, "parallel clients of the Push Gateway floor (the drain's default push_gateway.workers)")
	fs.BoolVar(&o.Backlog, "backlog", true, "run the backlog test")
	fs.IntVar(&o.BacklogN, "backlog-n", 1000, "backlog test: targets per 60 s")
	fs.StringVar(&rounds, "backlog-rounds", "10,30", "backlog test: intervals of scrapes waiting when the drain starts; the largest is tried with every max_inflight, the others with the default 1024")
	fs.StringVar(&inflight, "backlog-inflight", "256,1024,4096", "backlog test: receiver_stream.max_inflight values to try")
	fs.BoolVar(&o.Catchup, "catchup", true, "run the catch-up test (a receiver outage while the targets keep publishing), when -max-duration leaves it the time")
	fs.BoolVar(&o.CatchupOnly, "catchup-only", false, "run only the catch-up test, with the floor and one burst step of the counting sink for the drain's ceiling")
	fs.IntVar(&o.CatchupN, "catchup-n", 1000, "catch-up test: targets per 60 s, spread over the interval")
	fs.IntVar(&o.CatchupSteady, "catchup-steady", 2, "catch-up test: intervals of steady state before the outage")
	fs.DurationVar(&o.CatchupOutage, "catchup-outage", 10*time.Minute, "catch-up test: how long the receiver answers 503 (-quick: scaled by 20s/60s unless set)")
	fs.DurationVar(&o.CatchupMaxAge, "catchup-max-age", 15*time.Minute, "catch-up test: the drain's max_age, longer than the outage (-quick: scaled like the outage unless set)")
	fs.IntVar(&o.CatchupInflight, "catchup-inflight", config.DefaultMaxInflight, "catch-up test: receiver_stream.max_inflight")
	fs.StringVar(&catchupSinks, "catchup-sinks", "counting", "catch-up test: receivers, counting (the harness's) and/or prometheus (Prometheus 3 behind a relay that plays the outage)")
	fs.IntVar(&o.PromMaxSeries, "prom-max-series", 0, "cap N for the prometheus sink so that Prometheus holds at most this many series (default: half the available memory at 4 KiB a series)")
	fs.StringVar(&o.DrainBin, "drain-bin", "", "run this drain binary (e.g. one built from an earlier commit, as a baseline) instead of building ./cmd/drain")
	fs.StringVar(&o.PprofDir, "pprof", "", "build the drain with net/http/pprof and save a CPU profile of the first round of each step here")
	fs.DurationVar(&o.QuietWait, "quiet-wait", time.Minute, "before each step, wait up to this long for the rest of the shared machine to use under half a CPU")
	fs.BoolVar(&o.Keep, "keep", false, "keep the scratch directory (configs, logs)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.Quick {
		o.Interval = 20 * time.Second
		if !set["intervals"] {
			o.Intervals = 1
		}
		if !set["catchup-outage"] {
			o.CatchupOutage = time.Duration(float64(o.CatchupOutage) * o.catchupScale())
		}
		if !set["catchup-max-age"] {
			o.CatchupMaxAge = time.Duration(float64(o.CatchupMaxAge) * o.catchupScale())
		}
	}
	if o.Interval < 5*time.Second || o.Intervals < 1 {
		return nil, errors.New("-interval must be at least 5s and -intervals at least 1")
	}
	if o.LagLimit == 0 {
		o.LagLimit = time.Duration(float64(15*time.Second) * o.Interval.Seconds() / 60)
	}
	var err error
	if o.Sinks, err = list(sinks, sinkCounting, sinkPushGateway, sinkPrometheus); err != nil {
		return nil, fmt.Errorf("-sinks: %w", err)
	}
	if o.Modes, err = list(modes, modeBurst, modeSpread); err != nil {
		return nil, fmt.Errorf("-modes: %w", err)
	}
	if o.Steps, err = ints(steps); err != nil || !slices.IsSorted(o.Steps) {
		return nil, fmt.Errorf("-steps: ascending positive integers: %q", steps)
	}
	if o.Probe <= 0 || o.SearchSteps <= 0 {
		return nil, errors.New("-probe and -search-steps must be positive")
	}
	if o.BacklogInflight, err = ints(inflight); err != nil || len(o.BacklogInflight) == 0 {
		return nil, fmt.Errorf("-backlog-inflight: %w", err)
	}
	if o.BacklogRounds, err = ints(rounds); err != nil || len(o.BacklogRounds) == 0 {
		return nil, fmt.Errorf("-backlog-rounds: %w", err)
	}
	if o.Growth <= 1 {
		return nil, errors.New("-growth must be more than 1")
	}
	if o.CatchupSinks, err = list(catchupSinks, sinkCounting, sinkPrometheus); err != nil {
		return nil, fmt.Errorf("-catchup-sinks: %w", err)
	}
	if o.CatchupOnly {
		// The drain's ceiling, to compare the catch-up with: one burst large enough to
		// keep the drain busy for several seconds at any interval.
		o.Catchup, o.Backlog = true, false
		o.Sinks, o.Modes, o.SearchSteps = []string{sinkCounting}, []string{modeBurst}, 1
		o.Steps = []int{max(o.Probe, int(float64(o.Probe)*60/o.Interval.Seconds()))}
	}
	if o.Catchup && (o.CatchupN <= 0 || o.CatchupSteady < 1 || o.CatchupInflight <= 0 || len(o.CatchupSinks) == 0) {
		return nil, errors.New("-catchup-n, -catchup-steady and -catchup-inflight must be positive, -catchup-sinks not empty")
	}
	if o.Catchup && o.CatchupMaxAge <= o.CatchupOutage {
		return nil, fmt.Errorf("-catchup-max-age (%v) must be longer than -catchup-outage (%v): else scrapes expire in the outage", o.CatchupMaxAge, o.CatchupOutage)
	}
	if o.Store != "memory" && o.Store != "file" {
		return nil, fmt.Errorf("-store: memory or file, not %q", o.Store)
	}
	return o, nil
}

func list(s string, allowed ...string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if !slices.Contains(allowed, f) {
			return nil, fmt.Errorf("%q is not one of %s", f, strings.Join(allowed, ", "))
		}
		out = append(out, f)
	}
	return out, nil
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, v)
	}
	return out, nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "scale: %v\n", err)
		return 64
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s scale: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// A hard bound a little past the planned one: a step under way may finish.
	ctx, cancel := context.WithTimeout(ctx, o.MaxDuration+3*time.Minute)
	defer cancel()

	rep := &report{opts: o, started: time.Now(), load: [2]float64{loadAverage(), 0}}
	b, cleanup, err := setup(ctx, o, logf)
	defer cleanup()
	if err != nil {
		fmt.Fprintf(stderr, "scale: %v\n", err)
		return 1
	}
	rep.bench = b
	measure(ctx, b, rep, logf)
	rep.finished = time.Now()
	rep.load[1] = loadAverage()

	out := stdout
	if o.Out != "" {
		f, err := os.Create(o.Out)
		if err != nil {
			fmt.Fprintf(stderr, "scale: %v\n", err)
			return 1
		}
		defer f.Close()
		out = f
	}
	if err := rep.write(out); err != nil {
		fmt.Fprintf(stderr, "scale: write report: %v\n", err)
		return 1
	}
	if o.Out != "" {
		logf("report written to %s", o.Out)
	}
	if ctx.Err() != nil {
		fmt.Fprintf(stderr, "scale: interrupted: the report is partial\n")
		return 1
	}
	return 0
}

// setup checks the binaries the chosen sinks need, builds the drain and prepares the
// capture; cleanup stops every subprocess and removes the scratch directory.
func setup(ctx context.Context, o *options, logf func(string, ...any)) (*bench, func(), error) {
	ps := newProcs()
	b := &bench{opts: o, procs: ps, logf: logf}
	cleanup := func() {
		ps.stopAll()
		if b.codec != nil {
			b.codec.Close()
		}
		if b.dir != "" && !o.Keep {
			_ = os.RemoveAll(b.dir)
		} else if b.dir != "" {
			logf("scratch directory kept: %s", b.dir)
		}
	}
	var err error
	if b.root, err = moduleRoot(); err != nil {
		return b, cleanup, err
	}
	var missing []error
	if slices.Contains(o.Sinks, sinkPushGateway) {
		if b.pgwBin, err = pushGatewayBinary(); err != nil {
			missing = append(missing, err)
		}
	}
	if slices.Contains(o.Sinks, sinkPrometheus) || o.Catchup && slices.Contains(o.CatchupSinks, sinkPrometheus) {
		if b.promBin, err = prometheus3Binary(b.root); err != nil {
			missing = append(missing, err)
		}
	}
	if len(missing) > 0 {
		return b, cleanup, fmt.Errorf("missing binaries (or leave their sinks out with -sinks): %w", errors.Join(missing...))
	}
	if o.PprofDir != "" {
		if err := os.MkdirAll(o.PprofDir, 0o755); err != nil {
			return b, cleanup, err
		}
	}
	if b.dir, err = os.MkdirTemp("", "bench-scale-"); err != nil {
		return b, cleanup, err
	}
	if o.DrainBin != "" {
		b.drainBin = o.DrainBin
	} else {
		logf("building the drain")
		if b.drainBin, err = buildDrain(ctx, b.root, b.dir, o.PprofDir != ""); err != nil {
			return b, cleanup, err
		}
	}
	body, err := os.ReadFile(o.Capture)
	if err != nil {
		return b, cleanup, fmt.Errorf("capture: %w", err)
	}
	if b.capture, err = parseCapture(body); err != nil {
		return b, cleanup, err
	}
	if b.codec, err = envelope.NewCodec(); err != nil {
		return b, cleanup, err
	}
	// The cost of one Encode, warm (the compressor builds its tables on first use), to
	// encode a burst just before it is due: the encoding must not compete with the
	// drain still busy with the previous round. The fastest of a few tries: the machine
	// is shared.
	p := &publisher{codec: b.codec, body: body, series: b.capture.samples}
	b.encodeMs = math.Inf(1)
	for try := range 4 {
		start := time.Now()
		for i := range 100 {
			if _, err := p.encode(i, start); err != nil {
				return b, cleanup, err
			}
		}
		if try > 0 {
			b.encodeMs = min(b.encodeMs, float64(time.Since(start).Microseconds())/1000/100)
		}
	}
	return b, cleanup, nil
}

// scenario is one sink in one arrival mode, stepped upward.
type scenario struct {
	Sink, Mode string
	Steps      []*stepResult
	Best       int // largest passing N per 60 s, 0 if none
	FirstFail  int // smallest failing N per 60 s, 0 if none
	Notes      []string
}

// floorResult is a receiver's own rate, without the drain.
type floorResult struct {
	Name      string
	Clients   int
	Rate      float64 // requests per second
	PerReq    int     // scrapes per request
	RecvCPU   float64 // the receiver's CPU seconds per second
	Failed    int
	Err       string
	Expressed string // what a request is
}

// scrapesPerSecond is the floor in the drain's unit.
func (f *floorResult) scrapesPerSecond() float64 { return f.Rate * float64(f.PerReq) }

func measure(ctx context.Context, b *bench, rep *report, logf func(string, ...any)) {
	o := b.opts
	deadline := rep.started.Add(o.MaxDuration)
	logf("floors")
	rep.floors = b.floors(ctx)

	var scenarios []*scenario
	for _, mode := range o.Modes {
		for _, sink := range o.Sinks {
			scenarios = append(scenarios, &scenario{Sink: sink, Mode: mode})
		}
	}
	rep.scenarios = scenarios
	backlogReserve := time.Duration(0)
	if o.Backlog {
		backlogReserve = time.Duration(len(o.BacklogInflight)+len(o.BacklogRounds)-1) * time.Minute
	}
	// The catch-up test runs last, in time set aside for it; a run too short for it
	// leaves it out and says so.
	catchupReserve := time.Duration(0)
	if o.Catchup {
		catchupReserve = time.Duration(len(o.CatchupSinks)) * o.catchupEstimate()
		if !o.CatchupOnly && time.Until(deadline)-backlogReserve-catchupReserve < time.Duration(len(scenarios))*b.stepEstimate(sinkCounting) {
			rep.catchupSkipped = fmt.Sprintf("not run: -max-duration %v leaves too little time for it (about %v) and the searches", o.MaxDuration, catchupReserve.Round(time.Minute))
			catchupReserve = 0
		}
	}
	// The backlog test runs after the bursts, before the spreads: it is short, and the
	// spreads can use whatever time is left.
	backlogDone := !o.Backlog
	for i, sc := range scenarios {
		if ctx.Err() != nil {
			break
		}
		if !backlogDone && sc.Mode == modeSpread {
			rep.backlog = b.backlogs(ctx, logf)
			backlogDone = true
		}
		reserve := catchupReserve + backlogReserve
		if backlogDone {
			reserve = catchupReserve
		}
		share := (time.Until(deadline) - reserve) / time.Duration(len(scenarios)-i)
		b.search(ctx, sc, scenarios, time.Now().Add(share), logf)
	}
	if !backlogDone && ctx.Err() == nil {
		rep.backlog = b.backlogs(ctx, logf)
	}
	if o.Catchup && rep.catchupSkipped == "" && ctx.Err() == nil {
		rep.catchup = b.catchups(ctx, logf)
	}
}

func (b *bench) floors(ctx context.Context) []*floorResult {
	o := b.opts
	var out []*floorResult
	if slices.Contains(o.Sinks, sinkCounting) || slices.Contains(o.Sinks, sinkPrometheus) {
		out = append(out, b.receiverFloor(ctx))
	}
	if slices.Contains(o.Sinks, sinkPushGateway) {
		out = append(out, b.gatewayFloors(ctx)...)
	}
	return out
}

// receiverFloor posts pre-built remote-write 1.0 requests of the capture into the
// counting receiver as fast as floor-clients clients can.
func (b *bench) receiverFloor(ctx context.Context) *floorResult {
	o := b.opts
	res := &floorResult{Name: sinkCounting, Clients: o.FloorClients}
	r, err := startReceiver()
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer r.close()
	reqs, per, err := b.capture.writeRequests(64, 2000)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	res.PerReq = per
	res.Expressed = fmt.Sprintf("1.0 request of %d scrapes (%d samples), snappy", per, per*b.capture.samples)
	client := floorClient(o.FloorClients)
	headers := map[string]string{"Content-Encoding": "snappy", "X-Prometheus-Remote-Write-Version": "0.1.0"}
	cpu0 := orZero(cpuSeconds(0))
	f := runFloor(ctx, o.FloorClients, o.FloorDuration, func(ctx context.Context, i int) error {
		return post(ctx, client, "POST", r.URL(), "application/x-protobuf", headers, reqs[i%len(reqs)])
	})
	res.Rate, res.Failed = f.rate(), f.Failed
	res.RecvCPU = (orZero(cpuSeconds(0)) - cpu0) / f.Elapsed.Seconds()
	if f.Err != nil {
		res.Err = f.Err.Error()
	}
	return res
}

// gatewayFloors PUTs the capture into a fresh gateway with push-workers clients: as
// text (timestamps stripped: the capture has none), and as the delimited protobuf the
// drain sends.
func (b *bench) gatewayFloors(ctx context.Context) []*floorResult {
	o := b.opts
	proto, err := b.capture.protoDelimited()
	if err != nil {
		return []*floorResult{{Name: sinkPushGateway, Err: err.Error()}}
	}
	var out []*floorResult
	for _, f := range []struct {
		name, contentType string
		body              []byte
	}{
		{sinkPushGateway + " (text)", "text/plain; version=0.0.4", b.capture.body},
		{sinkPushGateway + " (protobuf)", "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited", proto},
	} {
		res := &floorResult{Name: f.name, Clients: o.PushWorkers, PerReq: 1,
			Expressed: fmt.Sprintf("PUT of one target's group, %d KB, 1000 groups", len(f.body)>>10)}
		out = append(out, res)
		dir := filepath.Join(b.dir, "floor-pushgateway")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			res.Err = err.Error()
			continue
		}
		p, base, err := b.startPushGateway(ctx, dir)
		if err != nil {
			res.Err = err.Error()
			continue
		}
		client := floorClient(o.PushWorkers)
		cpu0 := orZero(cpuSeconds(p.pid()))
		fl := runFloor(ctx, o.PushWorkers, o.FloorDuration, func(ctx context.Context, i int) error {
			url := fmt.Sprintf("%s/metrics/job/%s/instance/%s", base, benchJob, instance(i%1000))
			return post(ctx, client, "PUT", url, f.contentType, nil, f.body)
		})
		res.Rate, res.Failed = fl.rate(), fl.Failed
		res.RecvCPU = (orZero(cpuSeconds(p.pid())) - cpu0) / fl.Elapsed.Seconds()
		if fl.Err != nil {
			res.Err = fl.Err.Error()
		}
		b.procs.stop(p, 10*time.Second)
	}
	return out
}

// search finds the largest N of sc that passes. Without -steps it starts with a probe
// large enough to saturate the drain (burst) or with what the burst's measured rate
// predicts (spread), guesses the limit from the drain's rate while saturated, and then
// bisects between the largest passing and the smallest failing N; with -steps it climbs
// the listed N until one fails, then bisects. It stops at -search-steps steps or when
// its share of -max-duration (until) is used up.
func (b *bench) search(ctx context.Context, sc *scenario, all []*scenario, until time.Time, logf func(string, ...any)) {
	o := b.opts
	lo, hi := 0, 0 // largest passing, smallest failing N per 60 s (0: none yet)
	rate := 0.0    // the drain's rate while saturated, scrapes/s
	window := 60.0 // seconds of arrivals the drain must take within the limit
	if sc.Mode == modeBurst {
		window = o.LagLimit.Seconds() * 60 / o.Interval.Seconds()
	}
	estimate := func() int {
		if rate == 0 {
			return 0
		}
		return roundN(0.75 * rate * window)
	}
	try := func(n60 int) bool {
		if ctx.Err() != nil {
			return false
		}
		if est := b.stepEstimate(sc.Sink); time.Now().Add(est).After(until) {
			sc.Notes = append(sc.Notes, fmt.Sprintf("stopped before N=%d: out of time (this scenario's share of -max-duration)", n60))
			return false
		}
		logf("%s/%s N=%d (%d per %v round)", sc.Sink, sc.Mode, n60, b.perRound(n60), o.Interval)
		r := b.runStep(ctx, sc.Sink, sc.Mode, n60)
		if ctx.Err() != nil {
			return false
		}
		sc.Steps = append(sc.Steps, r)
		logf("%s/%s N=%d: %s", sc.Sink, sc.Mode, n60, r.summary())
		switch {
		case r.Err != "":
			return len(sc.Steps) < o.SearchSteps // try again, within the step budget
		case r.Pass:
			lo = max(lo, n60)
			sc.Best = max(sc.Best, n60)
		case hi == 0 || n60 < hi:
			hi = n60
			sc.FirstFail = n60
		}
		rate = max(rate, r.rate())
		return true
	}
	limit := b.maxN(sc.Sink)
	clamp := func(n int) int {
		if n > limit {
			if !slices.Contains(sc.Notes, limitNote(sc.Sink, limit)) {
				sc.Notes = append(sc.Notes, limitNote(sc.Sink, limit))
			}
			return limit
		}
		return n
	}

	guessed := false // the estimate has been tried
	if len(o.Steps) > 0 {
		for _, n60 := range o.Steps {
			if n60 > limit || !try(n60) || hi != 0 {
				break
			}
		}
	} else {
		next := o.Probe
		if sc.Mode == modeSpread {
			for _, other := range all {
				if other.Sink == sc.Sink && other.Mode == modeBurst {
					// Spread is never harder than burst: what passed there passes here.
					lo, rate = other.Best, other.rate()
					if lo > 0 {
						sc.Notes = append(sc.Notes, fmt.Sprintf("searched above burst's largest passing N (%d)", lo))
					}
				}
			}
			guessed = true
			switch next = estimate(); {
			case next == 0:
				guessed = false
				next = max(o.Probe, roundN(o.Growth*float64(lo)))
			case next <= lo:
				next = roundN(o.Growth * float64(lo))
			}
		}
		if !try(clamp(next)) {
			return
		}
	}
	for len(sc.Steps) < o.SearchSteps {
		var next int
		switch e := estimate(); {
		case hi == 0:
			next = max(e, roundN(o.Growth*float64(lo)))
		case !guessed && e-lo > max(100, lo/10) && hi-e > max(100, hi/10):
			next, guessed = e, true
		default:
			if hi-lo <= max(100, lo/10) {
				return
			}
			next = roundN(float64(lo+hi) / 2)
		}
		next = clamp(next)
		if next <= lo || hi != 0 && next >= hi {
			return
		}
		if !try(next) {
			return
		}
	}
}

func limitNote(sink string, n int) string {
	return fmt.Sprintf("N capped at %d: %s would hold more series than -prom-max-series", n, sinkTitle(sink))
}

// roundN rounds n to a figure fit for a table: two significant digits or so.
func roundN(n float64) int {
	step := 10.0
	switch {
	case n >= 2000:
		step = 100
	case n >= 500:
		step = 50
	}
	return max(10, int(math.Round(n/step)*step))
}

// maxN is the largest N a step of sink may use: Prometheus holds every series in memory.
func (b *bench) maxN(sink string) int {
	if sink != sinkPrometheus {
		return math.MaxInt
	}
	perTarget := b.capture.samples + 4
	n := float64(b.promMaxSeries()/perTarget) * 60 / b.opts.Interval.Seconds()
	return max(10, int(n/100)*100)
}

// perRound is how many targets a round publishes for n60 targets per 60 s.
func (b *bench) perRound(n60 int) int {
	return max(1, int(math.Round(float64(n60)*b.opts.Interval.Seconds()/60)))
}

// stepEstimate is about how long one step takes: its rounds, the time to clear the
// last, the start of the drain and the sink.
func (b *bench) stepEstimate(sink string) time.Duration {
	o := b.opts
	est := time.Duration(o.Intervals-1)*o.Interval + o.LagLimit + 10*time.Second
	if sink == sinkPrometheus {
		est += 15 * time.Second
	}
	return est
}

func (b *bench) promMaxSeries() int {
	if b.opts.PromMaxSeries > 0 {
		return b.opts.PromMaxSeries
	}
	return int(memAvailable() / 2 / 4096)
}

// memAvailable is the kernel's estimate of memory available, in bytes.
func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 8 << 30
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 8 << 30
}

func (b *bench) backlogs(ctx context.Context, logf func(string, ...any)) []*backlogResult {
	o := b.opts
	type run struct{ rounds, inflight int }
	most := slices.Max(o.BacklogRounds)
	var runs []run
	for _, inflight := range o.BacklogInflight {
		runs = append(runs, run{most, inflight})
	}
	for _, rounds := range o.BacklogRounds {
		if rounds != most {
			runs = append(runs, run{rounds, config.DefaultMaxInflight})
		}
	}
	var out []*backlogResult
	for _, r := range runs {
		if ctx.Err() != nil {
			break
		}
		logf("backlog: %d rounds of N=%d, max_inflight %d", r.rounds, o.BacklogN, r.inflight)
		res := b.runBacklog(ctx, o.BacklogN, r.rounds, r.inflight)
		logf("backlog: cleared %d messages in %v, peak RSS %s, after %s %s", res.Messages, res.Clear.Round(time.Millisecond),
			mib(res.Peak), mib(res.After), res.Why)
		out = append(out, res)
	}
	return out
}

// startStream runs a NATS Streaming server in the harness, in memory, unlimited, for
// the backlog test: it must outlive the drain, so it cannot be the drain's own.
func startStream() (*embedded.Server, error) {
	addr, err := proctest.FreeAddr()
	if err != nil {
		return nil, err
	}
	return embedded.Start(embedded.Options{Listen: addr, ClusterID: clusterID})
}
