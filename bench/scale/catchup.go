package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// catchupSlack is how old a scrape must be for "caught up" to require it: at steady
// state the drain delivers a scrape within milliseconds, and a scrape published a
// moment ago is on its way, not behind.
const catchupSlack = 2 * time.Second

// Aims the catch-up is reported against, for 60 s intervals (-quick scales the time).
const (
	catchupAim = 2 * time.Minute
	rssAim     = 500 << 20
)

// catchupResult is one catch-up run: N targets publishing evenly over each interval
// throughout, a drain with one remote_write sink, and its receiver down for an outage.
type catchupResult struct {
	Sink        string
	N60, N      int // targets per 60 s, per interval
	Steady      time.Duration
	Outage      time.Duration
	MaxAge      time.Duration
	MaxInflight int
	Aim         time.Duration // caught up within this, scaled to the interval

	Published    int // scrapes over the run
	SteadyBehind int // scrapes published over catchupSlack before the outage and not arrived by then
	Backlog      int // scrapes published and not arrived when the receiver came back
	Refused      int64
	FirstAfter   time.Duration // from the return to the first request the receiver took
	Cleared      time.Duration // from the return until every scrape published before it arrived
	CatchUp      time.Duration // from the return until every scrape published catchupSlack ago arrived
	CaughtUp     bool
	FreshDuring  int     // scrapes published between the return and being caught up
	Delivered    float64 // scrapes the drain delivered from the return until caught up
	DrainCPU     float64 // the drain's CPU seconds from the return until caught up
	OutageCPU    float64 // the drain's CPU seconds in the outage
	LeftBehind   int     // scrapes not arrived at the end

	Check       historyCheck
	Drain       drainCounts // over the whole run
	Mem         catchupMemory
	PromSamples float64 // prometheus: scrapes it holds (samples of streams_scrape_timestamp_seconds); NaN if not asked
	PromErr     string
	Profiles    []string
	Others      float64 // CPU seconds/second the rest of the machine used over the run
	Load        [2]float64
	Err         string
}

// catchupMemory is the drain's resident memory (VmRSS) and Go heap in use over a run.
type catchupMemory struct {
	Peak                   int64 // VmHWM at the end: the whole run
	Steady                 int64 // VmRSS at the end of the steady phase
	OutageMax, OutageEnd   int64
	CatchUpMax             int64
	End                    int64
	HeapSteady, HeapOutage float64 // go_memstats_heap_inuse_bytes at the end of each phase
	HeapCaughtUp           float64
	PerMinute              []int64 // VmRSS every minute from the first publish
}

// rate is backlog scrapes per second of catch-up: what the brief of the scenario asks.
func (c *catchupResult) rate() float64 {
	if !c.CaughtUp || c.CatchUp <= 0 {
		return math.NaN()
	}
	return float64(c.Backlog) / c.CatchUp.Seconds()
}

// throughput is every scrape the drain delivered per second of catch-up, fresh ones
// included: the drain's own pace while it catches up.
func (c *catchupResult) throughput() float64 {
	if !c.CaughtUp || c.CatchUp <= 0 {
		return math.NaN()
	}
	return c.Delivered / c.CatchUp.Seconds()
}

// lost: a scrape missing, partial, out of order or repeated at the receiver.
func (c *catchupResult) lost() bool { return !c.Check.ok() }

// catchupScale is the factor -quick applies to the outage, max_age and the aim: the
// interval's length over 60 s.
func (o *options) catchupScale() float64 { return o.Interval.Seconds() / 60 }

// catchupEstimate is about how long one catch-up run takes, at the aim.
func (o *options) catchupEstimate() time.Duration {
	aim := time.Duration(float64(catchupAim) * o.catchupScale())
	return time.Duration(o.CatchupSteady)*o.Interval + o.CatchupOutage + 2*aim + o.Interval + 30*time.Second
}

func (b *bench) catchups(ctx context.Context, logf func(string, ...any)) []*catchupResult {
	var out []*catchupResult
	for _, sink := range b.opts.CatchupSinks {
		if ctx.Err() != nil {
			break
		}
		logf("catch-up into %s: N=%d, outage %v", sink, b.opts.CatchupN, b.opts.CatchupOutage)
		res := b.runCatchup(ctx, sink)
		if res.Err != "" {
			logf("catch-up into %s: ERROR: %s", sink, res.Err)
		} else {
			logf("catch-up into %s: backlog %d, caught up %v after the return (cleared %v), peak RSS %s, %d of %d scrapes whole, %d missing, %d reordered",
				sink, res.Backlog, res.CatchUp.Round(100*time.Millisecond), res.Cleared.Round(100*time.Millisecond), mib(res.Mem.Peak),
				res.Check.Whole, res.Check.Published, res.Check.Missing+res.Check.Partial, res.Check.Reordered)
		}
		out = append(out, res)
	}
	return out
}

// runCatchup runs the catch-up scenario into sink: steady state, an outage of the
// receiver while the targets keep publishing, its return, and the time until the
// drain has delivered everything.
func (b *bench) runCatchup(ctx context.Context, sinkName string) (res *catchupResult) {
	o := b.opts
	scale := o.catchupScale()
	n := b.perRound(o.CatchupN)
	res = &catchupResult{
		Sink: sinkName, N60: o.CatchupN, N: n, Steady: time.Duration(o.CatchupSteady) * o.Interval,
		Outage: o.CatchupOutage, MaxAge: o.CatchupMaxAge, MaxInflight: o.CatchupInflight,
		Aim: time.Duration(float64(catchupAim) * scale), PromSamples: math.NaN(),
	}
	fail := func(err error) *catchupResult {
		res.Err = err.Error()
		return res
	}
	dir := filepath.Join(b.dir, "catchup-"+sinkName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}

	// The stream runs in the harness, as in the backlog test: the drain's memory is then
	// the drain's alone, not a store holding max_age of messages.
	srv, err := startStream()
	if err != nil {
		return fail(err)
	}
	defer srv.Shutdown()
	var recv *receiver
	var promBase string
	switch sinkName {
	case sinkCounting:
		if recv, err = startReceiver(); err != nil {
			return fail(err)
		}
	case sinkPrometheus:
		side, err := b.startSink(ctx, sinkPrometheus, dir)
		if err != nil {
			return fail(fmt.Errorf("start Prometheus: %w", err))
		}
		defer side.stop(b.procs)
		promBase = side.base
		if recv, err = startRelay(side.url); err != nil {
			return fail(err)
		}
	default:
		return fail(fmt.Errorf("no catch-up into %q", sinkName))
	}
	defer recv.close()
	recv.keepHistory(b.capture.samples + healthSamples)

	d, err := b.startDrain(ctx, dir, drainSetup{
		MaxAge: o.CatchupMaxAge, StreamURL: srv.URL(), MaxInflight: o.CatchupInflight,
		Sink: sinkCounting, SinkURL: recv.URL(),
	})
	if err != nil {
		return fail(fmt.Errorf("start drain: %w", err))
	}
	defer b.procs.stop(d.proc, 15*time.Second)
	pub, err := dialPublisher(ctx, srv.URL(), clusterID, b.capture.body, b.capture.samples, b.codec)
	if err != nil {
		return fail(fmt.Errorf("publisher: %w", err))
	}
	defer pub.close()
	pub.keep = true

	base, err := readDrain(d.monitor)
	if err != nil {
		return fail(err)
	}
	b.waitQuiet(ctx, 0, d.pid())
	machine0, self0, drain0 := machineBusy(), orZero(cpuSeconds(0)), orZero(cpuSeconds(d.pid()))
	res.Load[0] = loadAverage()

	// The targets publish throughout, each at its own offset in the interval.
	t0 := time.Now().Add(time.Second).Truncate(time.Second)
	var stop sync.Once
	stopped := make(chan struct{})
	isStopped := func() bool {
		select {
		case <-stopped:
			return true
		default:
			return false
		}
	}
	pubDone := make(chan error, 1)
	go func() {
		var errs []error
		for r := 0; !isStopped() && ctx.Err() == nil; r++ {
			tr := t0.Add(time.Duration(r) * o.Interval)
			if !sleepUntil(ctx, tr) {
				break
			}
			if _, err := pub.spread(ctx, n, tr, o.Interval, o.Interval, isStopped); err != nil {
				errs = append(errs, err)
			}
		}
		pubDone <- errors.Join(errs...)
	}()
	stopPublishing := func() error {
		stop.Do(func() { close(stopped) })
		return <-pubDone
	}
	defer func() {
		stop.Do(func() { close(stopped) })
	}()

	// watch polls until cond holds or until passes, keeping the highest RSS in peak and
	// the RSS each minute; it reports whether cond held.
	nextMinute := t0
	watch := func(until time.Time, peak *int64, cond func(now time.Time) bool) bool {
		for {
			now := time.Now()
			if m, err := readMemory(d.pid()); err == nil {
				if peak != nil {
					*peak = max(*peak, m.RSS)
				}
				if !now.Before(nextMinute) {
					res.Mem.PerMinute = append(res.Mem.PerMinute, m.RSS)
					nextMinute = nextMinute.Add(time.Minute)
				}
			}
			if cond != nil && cond(now) {
				return true
			}
			if !now.Before(until) || ctx.Err() != nil {
				return false
			}
			if err := d.exited(); err != nil {
				return false
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	behindBy := func(t time.Time) int {
		sent := pub.sentSoFar()
		k := 0
		recv.historyState(func(a *arrivals) { k = behind(a, sent, t) })
		return k
	}
	heap := func() float64 {
		fams, err := scrape(d.monitor + "/metrics")
		if err != nil {
			return math.NaN()
		}
		return sum(fams, "go_memstats_heap_inuse_bytes")
	}

	// Steady state.
	var steadyPeak int64
	down := t0.Add(res.Steady)
	watch(down, &steadyPeak, nil)
	if err := d.exited(); err != nil {
		return fail(err)
	}
	res.SteadyBehind = behindBy(time.Now().Add(-catchupSlack))
	res.Mem.Steady = orZero(readMemory(d.pid())).RSS
	res.Mem.HeapSteady = heap()

	// The outage.
	cpuDown := orZero(cpuSeconds(d.pid()))
	recv.setDown(true)
	b.logf("catch-up into %s: receiver down for %v", sinkName, o.CatchupOutage)
	up := time.Now().Add(o.CatchupOutage)
	watch(up, &res.Mem.OutageMax, nil)
	if ctx.Err() != nil {
		return fail(ctx.Err())
	}
	if err := d.exited(); err != nil {
		return fail(err)
	}
	res.Mem.OutageEnd = orZero(readMemory(d.pid())).RSS
	res.Mem.HeapOutage = heap()
	if d.pprof != "" {
		b.saveProfile(ctx, d.pprof+"/debug/pprof/heap", fmt.Sprintf("drain-catchup-%s-heap-outage.pprof", sinkName), res)
	}
	atUp, _ := readDrain(d.monitor)
	cpuUp := orZero(cpuSeconds(d.pid()))
	res.OutageCPU = cpuUp - cpuDown
	requestsUp := recv.requests.Load()

	// The return.
	recv.setDown(false)
	back := time.Now()
	res.Refused = recv.refused.Load()
	res.Backlog = behindBy(back)
	b.logf("catch-up into %s: receiver back, %d scrapes behind", sinkName, res.Backlog)
	var cpuProfile chan struct{}
	if d.pprof != "" {
		cpuProfile = make(chan struct{})
		secs := int(min(res.Aim, 30*time.Second) / time.Second)
		go func() {
			defer close(cpuProfile)
			b.saveProfile(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", d.pprof, secs),
				fmt.Sprintf("drain-catchup-%s-cpu.pprof", sinkName), res)
		}()
	}
	limit := back.Add(max(o.CatchupOutage, 2*res.Aim))
	res.CaughtUp = watch(limit, &res.Mem.CatchUpMax, func(now time.Time) bool {
		if res.FirstAfter == 0 && recv.requests.Load() > requestsUp {
			res.FirstAfter = now.Sub(back)
		}
		if res.Cleared == 0 && behindBy(back) == 0 {
			res.Cleared = now.Sub(back)
		}
		return res.Cleared != 0 && behindBy(now.Add(-catchupSlack)) == 0
	})
	caught := time.Now()
	res.CatchUp = caught.Sub(back)
	if atCaught, err := readDrain(d.monitor); err == nil {
		res.Delivered = atCaught.Delivered - atUp.Delivered
	}
	res.DrainCPU = orZero(cpuSeconds(d.pid())) - cpuUp
	res.Mem.HeapCaughtUp = heap()
	res.FreshDuring = pub.publishedBy(caught) - pub.publishedBy(back)
	if err := d.exited(); err != nil {
		return fail(err)
	}

	// Steady again for an interval, then the last scrapes must arrive.
	watch(time.Now().Add(o.Interval), &res.Mem.CatchUpMax, nil)
	if err := stopPublishing(); err != nil {
		b.logf("catch-up into %s: publish: %v", sinkName, err)
	}
	end := time.Now().Add(o.Interval)
	watch(end, nil, func(now time.Time) bool { return behindBy(now) == 0 })
	if cpuProfile != nil {
		<-cpuProfile
	}
	res.LeftBehind = behindBy(time.Now())
	sent := pub.sentSoFar()
	res.Published = len(sent)
	recv.historyState(func(a *arrivals) { res.Check = a.check(sent) })
	if after, err := readDrain(d.monitor); err == nil {
		res.Drain = after.minus(base)
	}
	m, _ := readMemory(d.pid())
	res.Mem.Peak, res.Mem.End = m.Peak, m.RSS
	elapsed := time.Since(t0).Seconds()
	res.Others = (machineBusy() - machine0 - (orZero(cpuSeconds(0)) - self0) - (orZero(cpuSeconds(d.pid())) - drain0)) / elapsed
	res.Load[1] = loadAverage()
	if promBase != "" {
		window := time.Since(t0) + time.Minute
		q := fmt.Sprintf(`sum(count_over_time(streams_scrape_timestamp_seconds{job=%q}[%s]))`, benchJob, modelDuration(window))
		if v, err := promQuery(ctx, promBase, q); err != nil {
			res.PromErr = err.Error()
		} else {
			res.PromSamples = v
		}
	}
	return res
}

// saveProfile fetches a pprof profile from url into -pprof's directory.
func (b *bench) saveProfile(ctx context.Context, url, name string, res *catchupResult) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return
	}
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		b.logf("profile %s: %v", name, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.logf("profile %s: %s", name, resp.Status)
		return
	}
	path := filepath.Join(b.opts.PprofDir, name)
	f, err := os.Create(path)
	if err != nil {
		b.logf("profile %s: %v", name, err)
		return
	}
	_, err = io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		b.logf("profile %s: %v", name, err)
		return
	}
	res.Profiles = append(res.Profiles, path)
}

// promQuery evaluates an instant query that yields one number at Prometheus's base URL.
func promQuery(ctx context.Context, base, promql string) (float64, error) {
	u := base + "/api/v1/query?" + url.Values{"query": {promql}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, fmt.Errorf("query %q: %s: %w", promql, resp.Status, err)
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("query %q: %s", promql, r.Error)
	}
	if len(r.Data.Result) != 1 {
		return 0, fmt.Errorf("query %q: %d results, want 1", promql, len(r.Data.Result))
	}
	s, ok := r.Data.Result[0].Value[1].(string)
	if !ok {
		return 0, fmt.Errorf("query %q: unexpected value %v", promql, r.Data.Result[0].Value)
	}
	return strconv.ParseFloat(s, 64)
}

// modelDuration is d as a PromQL duration, in whole seconds.
func modelDuration(d time.Duration) string {
	return fmt.Sprintf("%ds", int(math.Ceil(d.Seconds())))
}
