package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// report is everything a run measured, written as markdown.
type report struct {
	opts      *options
	bench     *bench
	started   time.Time
	finished  time.Time
	load      [2]float64
	floors    []*floorResult
	scenarios []*scenario
	backlog   []*backlogResult
	catchup   []*catchupResult
	// catchupSkipped says why the catch-up test did not run, if it was to.
	catchupSkipped string
}

func (r *report) write(w io.Writer) error {
	bw := bufio.NewWriter(w)
	o := r.opts
	p := func(format string, a ...any) { fmt.Fprintf(bw, format, a...) }

	p("# Drain scale report\n\n")
	p("| | |\n|---|---|\n")
	p("| date | %s, %s |\n", r.started.Format("2006-01-02 15:04 MST"), r.finished.Sub(r.started).Round(time.Second))
	p("| machine | %d CPUs (%s), %s RAM, Linux %s; shared: load average %.2f at start, %.2f at end |\n",
		runtime.NumCPU(), cpuModel(), gib(memTotal()), kernel(), r.load[0], r.load[1])
	if o.DrainBin != "" {
		p("| drain | %s (-drain-bin) |\n", o.DrainBin)
	} else {
		p("| Go | %s (drain built without -race) |\n", runtime.Version())
	}
	p("| interval | %v, %d rounds per step; N is targets per 60 s, each round publishes N × %v/60s |\n", o.Interval, o.Intervals, o.Interval)
	if o.Quick {
		p("| **quick mode** | 20 s intervals with N scaled by 1/3 and the lag limit with it (same load rate and burst size relative to the limit as 60 s), %d round(s) per step: a trial, not the figure to quote |\n", o.Intervals)
	}
	p("| pass | drain lag p99 (`prometheus_streams_drain_delivery_lag_seconds`, bucket deltas over the step) < %v, and every message published delivered (none expired, superseded, rejected) |\n", o.LagLimit)
	p("| modes | %s; sinks %s; embedded stream store: %s |\n", strings.Join(o.Modes, ", "), strings.Join(o.Sinks, ", "), o.Store)
	if b := r.bench; b != nil && b.capture != nil {
		p("| scrape | node_exporter capture, %d KB, %d samples (+4 `streams_scrape_*`), envelope %d KB zstd, encoded by the harness in %.2f ms |\n",
			len(b.capture.body)>>10, b.capture.samples, envelopeSize(b)>>10, b.encodeMs)
	}
	p("\n")

	r.writeSummary(p)
	r.writeFloors(p)
	r.writeCeiling(p)
	for _, sc := range r.scenarios {
		r.writeScenario(p, sc)
	}
	r.writeBacklog(p)
	r.writeCatchup(p)
	r.writeNotes(p)
	return bw.Flush()
}

func envelopeSize(b *bench) int {
	m, err := (&publisher{codec: b.codec, body: b.capture.body, series: b.capture.samples}).encode(0, time.Now())
	if err != nil {
		return 0
	}
	return len(m)
}

// floorFor is the floor a sink's figures are compared with.
func (r *report) floorFor(sink string) *floorResult {
	want := sinkCounting
	if sink == sinkPushGateway {
		want = sinkPushGateway + " (text)"
	}
	if sink == sinkPrometheus {
		return nil
	}
	for _, f := range r.floors {
		if f.Name == want {
			return f
		}
	}
	return nil
}

func (r *report) writeSummary(p func(string, ...any)) {
	o := r.opts
	p("## Summary\n\n")
	p("Largest N (targets per 60 s) that passed, per sink and arrival mode. *Drain rate*: the best scrapes/s measured while messages were waiting for it (see the notes). *Floor-implied N* is what the receiving side alone could take: its floor rate × %gs (burst: a 60 s interval's scrapes must clear within the lag limit) or × 60 s (spread).\n\n", o.LagLimit.Seconds()*60/o.Interval.Seconds())
	p("| sink | arrival | largest passing N | smallest failing N | drain rate | drain rate ÷ floor | floor-implied N | N ÷ floor-implied N |\n")
	p("|---|---|--:|--:|--:|--:|--:|--:|\n")
	for _, sc := range r.scenarios {
		rate := sc.rate()
		fl := r.floorFor(sc.Sink)
		ratio, implied, nRatio := "–", "–", "–"
		if fl != nil && fl.scrapesPerSecond() > 0 {
			fs := fl.scrapesPerSecond()
			if rate > 0 {
				ratio = fmt.Sprintf("%.2f", rate/fs)
			}
			window := 60.0
			if sc.Mode == modeBurst {
				window = o.LagLimit.Seconds() * 60 / o.Interval.Seconds()
			}
			in := fs * window
			implied = fmt.Sprintf("%.0f", in)
			if sc.Best > 0 {
				nRatio = fmt.Sprintf("%.2f", float64(sc.Best)/in)
			}
		}
		best, fail := "none", "–"
		if sc.Best > 0 {
			best = fmt.Sprint(sc.Best)
		}
		if sc.FirstFail > 0 {
			fail = fmt.Sprint(sc.FirstFail)
		} else if len(sc.Steps) > 0 {
			fail = "not reached"
		}
		if len(sc.Steps) == 0 {
			best = "not run"
		}
		rs := "–"
		if rate > 0 {
			rs = fmt.Sprintf("%.0f scrapes/s", rate)
		}
		p("| %s | %s | %s | %s | %s | %s | %s | %s |\n", sinkTitle(sc.Sink), sc.Mode, best, fail, rs, ratio, implied, nRatio)
	}
	p("\n")
}

// rate is the drain's highest measured throughput in the scenario.
func (sc *scenario) rate() float64 {
	best := 0.0
	for _, s := range sc.Steps {
		best = max(best, s.rate())
	}
	return best
}

func sinkTitle(s string) string {
	switch s {
	case sinkCounting:
		return "remote_write → counting receiver"
	case sinkPushGateway:
		return "push_gateway → prometheus-pushgateway"
	case sinkPrometheus:
		return "remote_write → Prometheus 3"
	}
	return s
}

func (r *report) writeFloors(p func(string, ...any)) {
	if len(r.floors) == 0 {
		return
	}
	p("## Floors: the receiving side alone\n\n")
	p("Pre-built requests sent as fast as the clients go for %v, no drain involved.\n\n", r.opts.FloorDuration)
	p("| receiver | request | clients | requests/s | scrapes/s | receiver CPU s/s | failed |\n|---|---|--:|--:|--:|--:|--:|\n")
	for _, f := range r.floors {
		p("| %s | %s | %d | %.0f | %.0f | %.2f | %d %s |\n", f.Name, f.Expressed, f.Clients, f.Rate, f.scrapesPerSecond(), f.RecvCPU, f.Failed, f.Err)
	}
	p("\nThe counting receiver runs in the harness: its CPU is the harness's, clients included.\n\n")
}

func (r *report) writeCeiling(p func(string, ...any)) {
	var sc *scenario
	for _, s := range r.scenarios {
		if s.Sink == sinkCounting && s.Mode == modeBurst {
			sc = s
		}
	}
	if sc == nil || len(sc.Steps) == 0 {
		return
	}
	p("## The drain's ceiling (a sink that answers at once)\n\n")
	rate := sc.rate()
	var top *stepResult
	for _, s := range sc.Steps {
		if top == nil || s.rate() > top.rate() {
			top = s
		}
	}
	cpu := top.cpuPerScrape()
	if rate == 0 {
		p("No burst took long enough to clear (≥ 1 s) to measure a rate.\n\n")
		return
	}
	p("- Measured: **%.0f scrapes/s** into the counting receiver (burst of %d, cleared in %v), parsing, labelling and remote-write encoding included; the receiver and the publisher share the machine's %d CPUs with it.\n",
		rate, top.N, maxDuration(top.Clear).Round(100*time.Millisecond), runtime.NumCPU())
	if !math.IsNaN(cpu) && cpu > 0 {
		p("- Drain CPU: %.2f ms per scrape (embedded stream server included), so about %.0f scrapes/s if the drain had all %d CPUs to itself.\n",
			cpu, float64(runtime.NumCPU())*1000/cpu, runtime.NumCPU())
	}
	if fl := r.floorFor(sinkCounting); fl != nil && fl.scrapesPerSecond() > 0 {
		p("- The counting receiver alone takes %.0f scrapes/s: the drain reaches %.2f of it.\n", fl.scrapesPerSecond(), rate/fl.scrapesPerSecond())
	}
	p("- For reference, an earlier system reached about 1,200 scrapes/s of this size on this machine, parsing nothing: %.2f of it.\n\n", rate/1200)
}

func (r *report) writeScenario(p func(string, ...any), sc *scenario) {
	p("## %s, %s\n\n", sinkTitle(sc.Sink), sc.Mode)
	for _, n := range sc.Notes {
		p("- %s\n", n)
	}
	if len(sc.Notes) > 0 {
		p("\n")
	}
	if len(sc.Steps) == 0 {
		p("Not run.\n\n")
		return
	}
	p("| N/60s | per round | rounds | result | lag p99 | e2e p50 / p99 / max | clear, per round | rate | drain CPU s/s | ms/scrape | drain peak RSS | published | delivered | retries | receiver took | receiver CPU s/s | receiver peak RSS | others' CPU s/s (load1) |\n")
	p("|--:|--:|--:|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	steps := slices.Clone(sc.Steps)
	slices.SortStableFunc(steps, func(a, b *stepResult) int { return a.N60 - b.N60 })
	for _, s := range steps {
		result := "**pass**"
		switch {
		case s.Err != "":
			result = "error: " + s.Err
		case !s.Pass:
			result = "fail: " + s.Why
		}
		e2e := "–"
		if s.E2E != nil && s.E2E.Scrapes > 0 {
			e2e = fmt.Sprintf("%s / %s / %s", seconds(s.E2E.P50), seconds(s.E2E.P99), seconds(s.E2E.Max))
		}
		clear, rate := "–", "–"
		if len(s.Clear) > 0 {
			var cs []string
			for _, c := range s.Clear {
				cs = append(cs, c.Round(100*time.Millisecond).String())
			}
			clear = strings.Join(cs, ", ")
		}
		if v := s.rate(); v > 0 {
			rate = fmt.Sprintf("%.0f/s", v)
		}
		win := s.Window.Seconds()
		lag := seconds(s.LagP99)
		if math.IsInf(s.LagP99, 1) {
			lag = fmt.Sprintf("> %gs", s.Drain.Lag.lastFiniteBound())
		}
		others := fmt.Sprintf("%.2f (%.1f→%.1f)", max(0, s.Others/win), s.Load[0], s.Load[1])
		if s.Quiet != "" {
			others += "; " + s.Quiet
		}
		p("| %d | %d | %d | %s | %s | %s | %s | %s | %.2f | %.2f | %s | %d | %.0f | %.0f | %.0f %s | %.2f | %s | %s |\n",
			s.N60, s.N, s.Rounds, result, lag, e2e, clear, rate, s.DrainCPU/win, s.cpuPerScrape(), mib(s.DrainMem.Peak),
			s.Published, s.Drain.Delivered, s.Drain.Retries, s.RecvCount, s.RecvUnit, s.RecvCPU/win, recvMem(s), others)
	}
	for _, s := range sc.Steps {
		if s.Profile != "" {
			p("\nCPU profile of the drain at N=%d: `%s` (`go tool pprof -top %s`).\n", s.N60, s.Profile, s.Profile)
		}
	}
	p("\n")
}

func recvMem(s *stepResult) string {
	if s.Sink == sinkCounting {
		return "(harness) " + mib(s.RecvMem.Peak)
	}
	return mib(s.RecvMem.Peak)
}

func (r *report) writeBacklog(p func(string, ...any)) {
	if len(r.backlog) == 0 {
		return
	}
	o := r.opts
	p("## Backlog: bounded memory\n\n")
	p("The drain starts late on many intervals of the same targets waiting in a stream server outside it (so its memory holds none of the backlog but what it takes in), remote_write into the counting receiver; max_age is long enough that nothing expires. Memory should follow `receiver_stream.max_inflight`, not the backlog's size.\n\n")
	p("| N/round | rounds | messages | max_inflight | cleared in | messages/s | delivered | superseded | peak RSS while clearing | RSS after, + 1 fresh round | |\n")
	p("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, b := range r.backlog {
		rate := 0.0
		if b.Clear > 0 {
			rate = float64(b.Messages) / b.Clear.Seconds()
		}
		p("| %d | %d | %d | %d | %v | %.0f | %.0f | %.0f | %s | %s | %s |\n", b.N, b.Rounds, b.Messages, b.MaxInflight,
			b.Clear.Round(100*time.Millisecond), rate, b.Drain.Delivered, b.Drain.Superseded+b.Drain.SinkSuperseded, mib(b.Peak), mib(b.After), b.Why)
	}
	var steady *stepResult
	for _, sc := range r.scenarios {
		if sc.Sink != sinkCounting || sc.Mode != modeBurst {
			continue
		}
		for _, s := range sc.Steps {
			if s.N60 == o.BacklogN {
				steady = s
			}
		}
	}
	if steady != nil {
		p("\nFor comparison, steady state at the same N (counting, burst): peak RSS %s — with the embedded stream in memory, which holds up to max_age of messages in the drain's process.\n", mib(steady.DrainMem.Peak))
	}
	p("\n")
}

// ceiling is the drain's rate into a sink that answers at once, as writeCeiling shows
// it: the counting sink's best burst rate in this run; 0 if none was measured.
func (r *report) ceiling() float64 {
	if s := r.ceilingStep(); s != nil {
		return s.rate()
	}
	return 0
}

// ceilingStep is the step that measured the ceiling, or nil.
func (r *report) ceilingStep() *stepResult {
	var top *stepResult
	for _, sc := range r.scenarios {
		if sc.Sink != sinkCounting || sc.Mode != modeBurst {
			continue
		}
		for _, s := range sc.Steps {
			if s.rate() > 0 && (top == nil || s.rate() > top.rate()) {
				top = s
			}
		}
	}
	return top
}

func (r *report) writeCatchup(p func(string, ...any)) {
	o := r.opts
	if !o.Catchup {
		return
	}
	p("## Catch-up after a receiver outage\n\n")
	if r.catchupSkipped != "" {
		p("%s.\n\n", capitalise(r.catchupSkipped))
		return
	}
	if len(r.catchup) == 0 {
		p("Not run (interrupted).\n\n")
		return
	}
	c0 := r.catchup[0]
	p("%d targets per 60 s (%d per %v interval), node_exporter-sized, publish evenly over every interval throughout. The drain has one remote_write sink, `max_age: %v`, `max_inflight: %d`, and consumes from a NATS Streaming server in the harness (in memory), so its memory is its own. After %v of steady state the receiver answers 503 to every request for %v, then takes everything again.\n\n",
		c0.N60, c0.N, o.Interval, c0.MaxAge, c0.MaxInflight, c0.Steady, c0.Outage)
	p("*Caught up*: every scrape published more than %v before has arrived whole at the receiver. The receiver keeps every target's scrapes in the order they arrive and checks them against every scrape published: each arrived, whole, once, and after the target's previous one. Times come from polling the receiver every 250 ms; RSS is the drain's /proc/PID/status, sampled at each poll.", catchupSlack)
	if o.Quick {
		p(" **Quick mode**: the outage, max_age and the catch-up aim are scaled by %v/60s, as N per interval is.", o.Interval)
	}
	p("\n\n")

	ceiling := r.ceiling()
	head, rule := "| | aim, or what to compare with |", "|---|---|"
	for _, c := range r.catchup {
		head += " " + sinkTitle(c.Sink) + " |"
		rule += "---|"
	}
	p("%s\n%s\n", head, rule)
	row := func(name, aim string, cell func(c *catchupResult) string) {
		p("| %s | %s |", name, aim)
		for _, c := range r.catchup {
			if c.Err != "" {
				p(" error: %s |", c.Err)
				continue
			}
			p(" %s |", cell(c))
		}
		p("\n")
	}
	verdict := func(ok bool) string {
		if ok {
			return "**met**"
		}
		return "**missed**"
	}
	row("caught up, from the receiver's return", "≤ "+c0.Aim.String(), func(c *catchupResult) string {
		if !c.CaughtUp {
			return fmt.Sprintf("not within %v (%d scrapes behind at the end) %s", c.CatchUp.Round(time.Second), c.LeftBehind, verdict(false))
		}
		return fmt.Sprintf("%v %s", c.CatchUp.Round(100*time.Millisecond), verdict(c.CatchUp <= c.Aim))
	})
	row("everything published before the return arrived", "", func(c *catchupResult) string {
		if c.Cleared == 0 {
			return "–"
		}
		return c.Cleared.Round(100 * time.Millisecond).String()
	})
	row("first request taken after the return", "", func(c *catchupResult) string {
		return c.FirstAfter.Round(10 * time.Millisecond).String()
	})
	row("backlog at the return: scrapes not arrived", fmt.Sprintf("about %d (outage × N/60 s)", int(c0.Outage.Minutes()*float64(c0.N60))), func(c *catchupResult) string {
		return fmt.Sprint(c.Backlog)
	})
	row("catch-up rate: backlog ÷ time to catch up", "", func(c *catchupResult) string { return perSecond(c.rate()) })
	if ceiling > 0 {
		row(fmt.Sprintf("… ÷ the drain's ceiling in this run (%.0f scrapes/s, see above)", ceiling), "", func(c *catchupResult) string {
			return ratio(c.rate() / ceiling)
		})
	} else {
		row("… ÷ the drain's ceiling", "", func(*catchupResult) string { return "not measured in this run" })
	}
	row("delivered while catching up, fresh scrapes included", "", func(c *catchupResult) string {
		s := perSecond(c.throughput())
		if ceiling > 0 && !math.IsNaN(c.throughput()) {
			s += fmt.Sprintf(" (%s of the ceiling)", ratio(c.throughput()/ceiling))
		}
		return fmt.Sprintf("%s; %d published meanwhile", s, c.FreshDuring)
	})
	top := r.ceilingStep()
	ceilingCPU := math.NaN()
	if top != nil {
		ceilingCPU = top.cpuPerScrape()
	}
	cpuAim := ""
	if !math.IsNaN(ceilingCPU) {
		cpuAim = fmt.Sprintf("ceiling step: %.2f ms, its stream server inside the drain", ceilingCPU)
	}
	row("drain CPU while catching up: per second, per scrape delivered", cpuAim, func(c *catchupResult) string {
		if c.CatchUp <= 0 || c.Delivered <= 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f s/s, %.2f ms", c.DrainCPU/c.CatchUp.Seconds(), c.DrainCPU*1000/c.Delivered)
	})
	row("drain CPU in the outage (retries, the stream's redeliveries)", "", func(c *catchupResult) string {
		return fmt.Sprintf("%.2f s/s", c.OutageCPU/c.Outage.Seconds())
	})
	row("drain peak RSS (VmHWM, whole run)", "< "+mib(rssAim), func(c *catchupResult) string {
		return fmt.Sprintf("%s %s", mib(c.Mem.Peak), verdict(c.Mem.Peak > 0 && c.Mem.Peak < rssAim))
	})
	row("drain RSS: end of steady state / highest in the outage / its end / highest catching up and after / end", "", func(c *catchupResult) string {
		m := c.Mem
		return fmt.Sprintf("%s / %s / %s / %s / %s", mib(m.Steady), mib(m.OutageMax), mib(m.OutageEnd), mib(m.CatchUpMax), mib(m.End))
	})
	row("drain Go heap in use: end of steady state / end of the outage / caught up", "", func(c *catchupResult) string {
		m := c.Mem
		return fmt.Sprintf("%s / %s / %s", mib(int64(m.HeapSteady)), mib(int64(m.HeapOutage)), mib(int64(m.HeapCaughtUp)))
	})
	row("every scrape arrived whole, once, in order", "all", func(c *catchupResult) string {
		k := c.Check
		return fmt.Sprintf("%d of %d (%d targets) %s; missing %d, partial %d, reordered %d, repeated samples %d, out-of-order samples %d, unknown %d",
			k.Whole, k.Published, k.Targets, verdict(k.ok()), k.Missing, k.Partial, k.Reordered, k.Repeated, k.Again, k.Unknown)
	})
	if slices.ContainsFunc(r.catchup, func(c *catchupResult) bool { return c.Sink == sinkPrometheus }) {
		row("scrapes Prometheus holds (samples of `streams_scrape_timestamp_seconds`)", "all published", func(c *catchupResult) string {
			switch {
			case c.PromErr != "":
				return "query failed: " + c.PromErr
			case math.IsNaN(c.PromSamples):
				return "–"
			}
			return fmt.Sprintf("%.0f of %d", c.PromSamples, c.Published)
		})
	}
	row("steady state before the outage: scrapes behind", "0", func(c *catchupResult) string { return fmt.Sprint(c.SteadyBehind) })
	row("drain: received (redeliveries included) / delivered / retries / expired / superseded / rejected", "", func(c *catchupResult) string {
		d := c.Drain
		return fmt.Sprintf("%.0f / %.0f / %.0f / %.0f / %.0f / %.0f", d.Received, d.Delivered, d.Retries, d.Expired,
			d.Superseded+d.SinkSuperseded, d.Rejected+d.SinkRejected)
	})
	row("requests answered 503 in the outage", "", func(c *catchupResult) string { return fmt.Sprint(c.Refused) })
	row("others' CPU s/s over the run (load1 at start → end)", "", func(c *catchupResult) string {
		return fmt.Sprintf("%.2f (%.1f → %.1f)", max(0, c.Others), c.Load[0], c.Load[1])
	})
	p("\n")
	if top != nil && top.Window > 0 {
		p("- The ceiling step ran with the rest of the machine using %.2f CPUs, the catch-ups with the figures above: rates measured minutes apart on a shared machine compare loosely, CPU per scrape better.\n",
			max(0, top.Others/top.Window.Seconds()))
	}
	for _, c := range r.catchup {
		if c.Err != "" {
			continue
		}
		var per []string
		for _, v := range c.Mem.PerMinute {
			per = append(per, fmt.Sprintf("%.0f", float64(v)/(1<<20)))
		}
		p("- %s: drain RSS each minute from the first publish, MiB: %s.\n", sinkTitle(c.Sink), strings.Join(per, ", "))
		for _, e := range c.Check.Examples {
			p("  - %s\n", e)
		}
		for _, f := range c.Profiles {
			p("  - profile of the drain: `%s` (`go tool pprof -top %s`)\n", f, f)
		}
	}
	p("\n")
}

func perSecond(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.0f scrapes/s", v)
}

func ratio(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return fmt.Sprintf("%.2f", v)
}

func capitalise(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func (r *report) writeNotes(p func(string, ...any)) {
	p("## How it was measured\n\n")
	p("- Each step starts a fresh drain (`go build ./cmd/drain`) with `embedded_stream` (store %s), `monitor`, and one sink; and a fresh Push Gateway or Prometheus. Peak RSS is the drain's VmHWM, so it includes the embedded stream server, which keeps every message for max_age (2 intervals).\n", r.opts.Store)
	p("- The publisher uses wire/envelope and stream's STAN publisher, as scrape-once does; each target has its own job/instance and Start is the round's publish time. Burst: the round is encoded just before the top of the interval (twice the calibrated encode time ahead), then published at once. Spread: each scrape is encoded when due, so the harness spends about %.2f ms of CPU per scrape during the step.\n", r.encodeMs())
	p("- *lag p99*: from the drain's histogram (buckets up to 300 s, interpolated). *e2e*: publish time to the counting receiver's arrival of a scrape's last sample. *clear*: top of the interval until every message of the round had its fate (drain counters polled every 0.5 s).\n")
	p("- *drain CPU s/s*: utime+stime from /proc over the step, from the first round to the last delivery; *ms/scrape* = CPU ÷ delivered.\n")
	p("- A step whose undelivered messages older than the lag limit already exceed 1%% of its total stops publishing early (it cannot pass), and then waits an interval for what was published.\n")
	p("- The machine is shared: before each step the harness waits up to %v for the rest of the machine to use under half a CPU; *others' CPU s/s* is what everything but the drain, the harness and the receiver used over the step (from /proc/stat), with the one-minute load average at its start and end.\n", r.opts.QuietWait)
	p("- *rate*: messages settled ÷ the time at least %d messages were waiting for the drain (polled every 0.5 s), shown when that time is at least %v; the last few of a burst, which wait in remote-write requests for `batch_send_deadline` (pacing, not capacity), are left out.\n", tailWaiting, rateWindow)
}

func (r *report) encodeMs() float64 {
	if r.bench == nil {
		return math.NaN()
	}
	return r.bench.encodeMs
}

func seconds(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case math.IsInf(v, 1):
		return "∞"
	case v < 1:
		return fmt.Sprintf("%.0fms", v*1000)
	}
	return fmt.Sprintf("%.1fs", v)
}

func maxDuration(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

func mib(b int64) string {
	if b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
}

func gib(b int64) string { return fmt.Sprintf("%.0f GiB", float64(b)/(1<<30)) }

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown model"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if name, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown model"
}

func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), &kb)
			return kb << 10
		}
	}
	return 0
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// summary is a step's one-line outcome for the progress log.
func (s *stepResult) summary() string {
	if s.Err != "" {
		return "ERROR: " + s.Err
	}
	out := "pass"
	if !s.Pass {
		out = "FAIL (" + s.Why + ")"
	}
	rate := ""
	if v := s.rate(); v > 0 {
		rate = fmt.Sprintf(", %.0f scrapes/s", v)
	}
	return fmt.Sprintf("%s: lag p99 %s, published %d, delivered %.0f%s, drain CPU %.1f ms/scrape, peak RSS %s",
		out, seconds(s.LagP99), s.Published, s.Drain.Delivered, rate, s.cpuPerScrape(), mib(s.DrainMem.Peak))
}
