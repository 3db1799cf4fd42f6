package tests

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/pgwtest"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// TestDrainHappyPath runs scrape-once and the drain between real servers: every series a
// target served reaches the gateway with job, instance and static labels, beside the
// scrape-health series.
func TestDrainHappyPath(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { drainHappyPath(t, tr) })
	}
}

func drainHappyPath(t *testing.T, tr transport) {
	srv := tr.start(t)
	pgw := pgwtest.Start(t)
	node := fixture.ServeCapture(t, fixture.NodeExporter)
	down := closedURL(t, "http")
	edge := writeConfig(t, tr.edgeConfig(srv, fmt.Sprintf(`  node:
    labels: {dc: dc1}
    targets:
      - {name: node1, url: '%s/metrics'}
      - {name: gone, url: '%s/metrics'}
`, node.URL, down)))
	if r := runBin(t, "scrape-once", "-c", edge); r.code != 0 {
		t.Fatalf("scrape-once: exit %d\n%s", r.code, r.stderr)
	}
	mon := freeAddr(t)
	d := startDrain(t, writeConfig(t, tr.drainConfig(srv, pgw.URL(), mon, "")), mon)

	var fams map[string]*dto.MetricFamily
	waitFor(t, 20*time.Second, "both groups on the gateway", func() bool {
		fams = pgw.Scrape(t)
		_, ok1 := groupValue(fams, exposition.HealthUp, "node", "node1")
		_, ok2 := groupValue(fams, exposition.HealthUp, "node", "gone")
		return ok1 && ok2
	})
	if v, _ := groupValue(fams, exposition.HealthUp, "node", "node1"); v != 1 {
		t.Errorf("node1 up = %v", v)
	}
	if v, _ := groupValue(fams, exposition.HealthUp, "node", "gone"); v != 0 {
		t.Errorf("gone up = %v, want 0", v)
	}
	if v, _ := groupValue(fams, exposition.HealthSamples, "node", "node1"); v != 507 {
		t.Errorf("node1 samples = %v, want 507", v)
	}
	if v, ok := groupValue(fams, exposition.HealthTimestamp, "node", "node1"); !ok || math.Abs(float64(time.Now().Unix())-v) > 60 {
		t.Errorf("node1 scrape timestamp = %v", v)
	}
	// Every family the target served, with its series, labelled.
	want := parseCapture(t, fixture.NodeExporter)
	for name, wf := range want {
		gf := fams[name]
		if gf == nil {
			t.Errorf("family %s missing on the gateway", name)
			continue
		}
		if gf.GetType() != wf.GetType() {
			t.Errorf("%s: type %v, want %v", name, gf.GetType(), wf.GetType())
		}
		got := 0
		for _, m := range gf.GetMetric() {
			if hasLabels(m, "job", "node", "instance", "node1", "dc", "dc1") {
				got++
			}
		}
		if got != len(wf.GetMetric()) {
			t.Errorf("%s: %d series labelled job=node instance=node1 dc=dc1, want %d", name, got, len(wf.GetMetric()))
		}
	}
	if v, _ := groupValue(fams, "node_load1", "node", "node1"); v != valueOf(want, "node_load1") {
		t.Errorf("node_load1 = %v, want %v", v, valueOf(want, "node_load1"))
	}
	// The failed target's group holds the health series only.
	for name, f := range fams {
		if strings.HasPrefix(name, "streams_scrape_") || name == "push_time_seconds" || name == "push_failure_time_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			if hasLabels(m, "instance", "gone") {
				t.Errorf("failed target has %s", name)
			}
		}
	}
	if v := d.metric("prometheus_streams_drain_scrapes_delivered_total", "sink", "pushgateway"); v != 2 {
		t.Errorf("delivered = %v, want 2", v)
	}
	if v := d.metric("prometheus_streams_drain_stream_connected"); v != 1 {
		t.Errorf("stream_connected = %v", v)
	}
	if code := d.stop(); code != 0 {
		t.Errorf("drain exit %d after SIGTERM", code)
	}
}

func parseCapture(t *testing.T, name string) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := exposition.Parse(fixture.Read(t, name), fixture.TextContentType)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		m[f.GetName()] = f
	}
	return m
}

// TestDrainGatewayDown keeps messages while the gateway is down: scrapes younger than
// max_age arrive once it is back, older ones are counted expired. On JetStream the drain
// hands each failed delivery back to the server with a delay (a nak) that grows.
func TestDrainGatewayDown(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { drainGatewayDown(t, tr) })
	}
}

func drainGatewayDown(t *testing.T, tr transport) {
	srv := tr.start(t)
	pgw := pgwtest.Start(t)
	mon := freeAddr(t)
	d := startDrain(t, writeConfig(t, tr.drainConfig(srv, pgw.URL(), mon, "")), mon)
	pgw.Stop()
	var naks func() []jsAdvisory
	if tr.jetStream() {
		naks = jsAdvisories(t, srv, "MSG_NAKED", "drain1")
	}

	now := time.Now()
	tr.publish(t, srv,
		encode(t, "j", "old", now.Add(-time.Minute), "m 1\n"), // past max_age (30s)
		encode(t, "j", "a", now.Add(-2*time.Second), "m 2\n"),
		encode(t, "j", "a", now.Add(-time.Second), "m 3\n"), // newer scrape of the same target
		encode(t, "j", "b", now, "m 4\n"),
	)
	waitFor(t, 10*time.Second, "retries against the stopped gateway", func() bool {
		return d.metric("prometheus_streams_drain_delivery_retries_total") >= 2
	})
	if tr.jetStream() {
		checkNakBackoff(t, naks, 4) // b's, the one scrape of its target
	}
	if v := d.metric("prometheus_streams_drain_scrapes_delivered_total", "sink", "pushgateway"); v != 0 {
		t.Fatalf("delivered %v while the gateway was down", v)
	}
	pgw.Restart()
	var fams map[string]*dto.MetricFamily
	waitFor(t, 40*time.Second, "scrapes delivered after the gateway came back", func() bool {
		fams = pgw.Scrape(t)
		_, a := groupValue(fams, "m", "j", "a")
		_, b := groupValue(fams, "m", "j", "b")
		return a && b
	})
	if v, _ := groupValue(fams, "m", "j", "a"); v != 3 {
		t.Errorf("a: m = %v, want 3 (the newest scrape)", v)
	}
	if _, ok := groupValue(fams, "m", "j", "old"); ok {
		t.Error("the expired scrape was pushed")
	}
	if v := d.metric("prometheus_streams_drain_messages_expired_total"); v != 1 {
		t.Errorf("expired = %v, want 1", v)
	}
	if tr.jetStream() {
		// The older scrape of a may still wait for its delayed redelivery, to be found
		// superseded then.
		jsSettled(t, srv, "drain1")
	}
	if v := d.metric("prometheus_streams_drain_messages_superseded_total"); v != 1 {
		t.Errorf("superseded = %v, want 1", v)
	}
}

// checkNakBackoff waits until the message of stream sequence seq was handed back to the
// JetStream server four times, and checks that no message came back sooner than the
// drain's shortest backoff (50ms: half of 100ms, with jitter) and that seq's delays grow:
// the server honours the drain's delayed naks, and the drain's backoff goes on across
// redeliveries.
func checkNakBackoff(t *testing.T, naks func() []jsAdvisory, seq uint64) {
	t.Helper()
	gaps := map[uint64][]time.Duration{}
	waitFor(t, 10*time.Second, fmt.Sprintf("message %d nakked four times", seq), func() bool {
		clear(gaps)
		last := map[uint64]time.Time{}
		for _, a := range naks() {
			if l, ok := last[a.StreamSeq]; ok {
				gaps[a.StreamSeq] = append(gaps[a.StreamSeq], a.Time.Sub(l))
			}
			last[a.StreamSeq] = a.Time
		}
		return len(gaps[seq]) >= 3
	})
	for s, gs := range gaps {
		if slices.Min(gs) < 45*time.Millisecond {
			t.Errorf("message %d redelivered %v after a nak, sooner than any backoff; gaps between naks %v", s, slices.Min(gs), gs)
		}
	}
	// Attempt k waits 50ms<<k to 100ms<<k: the third wait is longer than the first.
	if gs := gaps[seq]; gs[2] <= gs[0] {
		t.Errorf("message %d: the backoff does not grow: gaps between naks %v", seq, gs)
	}
}

// TestDrainKilled kills the drain with SIGKILL: on restart every unacknowledged message is
// delivered, and an older scrape redelivered or published late never replaces a newer one.
func TestDrainKilled(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { drainKilled(t, tr) })
	}
}

func drainKilled(t *testing.T, tr transport) {
	srv := tr.start(t, stantest.WithFileStore(t.TempDir()))
	pgw := pgwtest.Start(t)
	mon := freeAddr(t)
	cfg := writeConfig(t, tr.drainConfig(srv, pgw.URL(), mon, ""))
	d := startDrain(t, cfg, mon)

	now := time.Now()
	tr.publish(t, srv, encode(t, "j", "a", now.Add(-2*time.Second), "m 2\n"))
	waitFor(t, 10*time.Second, "a@2 on the gateway", func() bool {
		v, _ := groupValue(pgw.Scrape(t), "m", "j", "a")
		return v == 2
	})
	d.kill()
	// While the drain is dead: an older scrape of a (late), a new target b.
	tr.publish(t, srv,
		encode(t, "j", "a", now.Add(-5*time.Second), "m 1\n"),
		encode(t, "j", "b", now, "m 7\n"),
	)
	d = startDrain(t, cfg, mon)
	waitFor(t, 20*time.Second, "b on the gateway", func() bool {
		_, ok := groupValue(pgw.Scrape(t), "m", "j", "b")
		return ok
	})
	waitFor(t, 10*time.Second, "the late scrape's fate", func() bool {
		// Refused by the drain (it already has the newer scrape) or by the sink (the
		// gateway holds the newer one, which the restarted drain read from it).
		return d.metric("prometheus_streams_drain_messages_superseded_total")+
			d.metric("prometheus_streams_drain_scrapes_superseded_total", "sink", "pushgateway") >= 1
	})
	if v, _ := groupValue(pgw.Scrape(t), "m", "j", "a"); v != 2 {
		t.Errorf("a: m = %v, want 2: an older scrape replaced a newer one", v)
	}
	if tr.jetStream() {
		jsSettled(t, srv, "drain1")
	}
}

// TestDrainGarbage publishes garbage: it is counted, acknowledged (on JetStream
// terminated: never redelivered), and the drain goes on.
func TestDrainGarbage(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { drainGarbage(t, tr) })
	}
}

func drainGarbage(t *testing.T, tr transport) {
	srv := tr.start(t)
	pgw := pgwtest.Start(t)
	mon := freeAddr(t)
	d := startDrain(t, writeConfig(t, tr.drainConfig(srv, pgw.URL(), mon, "")), mon)
	var terms func() []jsAdvisory
	if tr.jetStream() {
		terms = jsAdvisories(t, srv, "MSG_TERMINATED", "drain1")
	}
	good := encode(t, "j", "a", time.Now(), "m 1\n")
	corrupt := append([]byte(nil), good...)
	corrupt[len(corrupt)/2] ^= 0xff
	tr.publish(t, srv,
		[]byte("garbage"),
		[]byte(`{"job":"j","instance":"x","time":1700000000,"publisher":"p","Scrape":"H4sI"}`),
		corrupt,
		[]byte{},
		encode(t, "j", "bad-body", time.Now(), "this is { not metrics\n"),
		good,
	)
	waitFor(t, 10*time.Second, "the good message", func() bool {
		_, ok := groupValue(pgw.Scrape(t), "m", "j", "a")
		return ok
	})
	waitFor(t, 5*time.Second, "rejections counted", func() bool {
		// The JSON message is read as the earlier system's, whose scrape is truncated.
		return d.metric("prometheus_streams_drain_messages_rejected_total", "reason", "not_an_envelope") == 2 &&
			d.metric("prometheus_streams_drain_messages_rejected_total", "reason", "corrupt") == 2 &&
			d.metric("prometheus_streams_drain_messages_rejected_total", "reason", "invalid_body") == 1
	})
	if strings.Count(d.logs(), `msg="message rejected"`) != 5 {
		t.Errorf("want one log line per rejected message:\n%s", d.logs())
	}
	if !tr.jetStream() {
		return
	}
	// The five bad messages (stream sequences 1 to 5) terminated, the good one (6) acked,
	// each delivered once.
	waitFor(t, 5*time.Second, "five terminations", func() bool { return len(terms()) >= 5 })
	var termed []uint64
	for _, a := range terms() {
		termed = append(termed, a.StreamSeq)
	}
	slices.Sort(termed)
	if fmt.Sprint(termed) != "[1 2 3 4 5]" {
		t.Errorf("terminated stream sequences %v, want [1 2 3 4 5]", termed)
	}
	ci := jsSettled(t, srv, "drain1")
	if ci.NumRedelivered != 0 || ci.Delivered.Consumer != 6 || ci.AckFloor.Stream != 6 {
		t.Errorf("consumer: %d redelivered, %d deliveries, ack floor %d; want 0, 6, 6",
			ci.NumRedelivered, ci.Delivered.Consumer, ci.AckFloor.Stream)
	}
	if v := d.metric("prometheus_streams_drain_messages_received_total"); v != 6 {
		t.Errorf("received = %v, want 6", v)
	}
}

// TestDrainRejected4xx: a scrape the gateway refuses (a family whose type conflicts with
// another group's) is counted and acknowledged, and does not stall other targets.
func TestDrainRejected4xx(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { drainRejected4xx(t, tr) })
	}
}

func drainRejected4xx(t *testing.T, tr transport) {
	srv := tr.start(t)
	pgw := pgwtest.Start(t)
	mon := freeAddr(t)
	d := startDrain(t, writeConfig(t, tr.drainConfig(srv, pgw.URL(), mon, "")), mon)
	now := time.Now()
	tr.publish(t, srv, encode(t, "j", "counter", now, "# TYPE clash counter\nclash 1\n"))
	waitFor(t, 10*time.Second, "first group", func() bool {
		_, ok := groupValue(pgw.Scrape(t), "clash", "j", "counter")
		return ok
	})
	tr.publish(t, srv,
		encode(t, "j", "gauge", now, "# TYPE clash gauge\nclash 2\n"),
		encode(t, "j", "other", now, "fine 1\n"),
	)
	waitFor(t, 10*time.Second, "the other target", func() bool {
		_, ok := groupValue(pgw.Scrape(t), "fine", "j", "other")
		return ok
	})
	waitFor(t, 5*time.Second, "the rejection counted", func() bool {
		return d.metric("prometheus_streams_drain_scrapes_rejected_total", "sink", "pushgateway") == 1
	})
	if !strings.Contains(d.logs(), "instance=gauge") {
		t.Errorf("the rejection's log line does not name the target:\n%s", d.logs())
	}
	if tr.jetStream() {
		if ci := jsSettled(t, srv, "drain1"); ci.NumRedelivered != 0 || ci.Delivered.Consumer != 3 {
			t.Errorf("consumer: %d redelivered, %d deliveries; want 0, 3", ci.NumRedelivered, ci.Delivered.Consumer)
		}
	}
}

// TestDrainStaleness: a target whose scrapes stop loses its group after max_age; a group
// pushed by someone else stays.
func TestDrainStaleness(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel() // most of it is waiting out max_age: both transports at once
			drainStaleness(t, tr)
		})
	}
}

func drainStaleness(t *testing.T, tr transport) {
	srv := tr.start(t)
	pgw := pgwtest.Start(t)
	if code := pgw.PushRaw(t, "/metrics/job/other/instance/x", "text/plain; version=0.0.4", []byte("someone_else 1\n")); code/100 != 2 {
		t.Fatalf("push someone else's group: %d", code)
	}
	mon := freeAddr(t)
	cfg := strings.Replace(tr.drainConfig(srv, pgw.URL(), mon, ""), "max_age: 30s", "max_age: 3s", 1)
	d := startDrain(t, writeConfig(t, cfg), mon)
	tr.publish(t, srv, encode(t, "j", "vanishing", time.Now(), "m 1\n"))
	waitFor(t, 10*time.Second, "the group", func() bool {
		_, ok := groupValue(pgw.Scrape(t), "m", "j", "vanishing")
		return ok
	})
	waitFor(t, 20*time.Second, "the group deleted after max_age", func() bool {
		_, ok := groupValue(pgw.Scrape(t), "m", "j", "vanishing")
		return !ok
	})
	if _, ok := groupValue(pgw.Scrape(t), "someone_else", "other", "x"); !ok {
		t.Error("someone else's group was deleted")
	}
	if v := d.metric("prometheus_streams_drain_pushgateway_groups_deleted_total"); v != 1 {
		t.Errorf("groups deleted = %v, want 1", v)
	}
}

// TestDrainQueueGroup runs two drains in one queue group (on JetStream: on one durable
// consumer): they share the messages and the gateway ends with the newest scrape of
// every target.
func TestDrainQueueGroup(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { drainQueueGroup(t, tr) })
	}
}

func drainQueueGroup(t *testing.T, tr transport) {
	srv := tr.start(t)
	pgw := pgwtest.Start(t)
	var drains []*drainProc
	for i := range 2 {
		mon := freeAddr(t)
		cfg := tr.drainConfig(srv, pgw.URL(), mon, "")
		cfg = strings.Replace(cfg, "client_id: drain1", tr.sharedDurable(i), 1)
		drains = append(drains, startDrain(t, writeConfig(t, cfg), mon))
	}
	const targets = 20
	now := time.Now()
	// Rounds follow each other as scrape intervals do: each is delivered before the next
	// is published. (Within a round, each target's scrape goes to one drain or the other.)
	for round := range 3 {
		var msgs [][]byte
		for i := range targets {
			msgs = append(msgs, encode(t, "j", fmt.Sprintf("t%d", i), now.Add(time.Duration(round-3)*time.Second), fmt.Sprintf("m %d\n", round)))
		}
		tr.publish(t, srv, msgs...)
		waitFor(t, 20*time.Second, fmt.Sprintf("round %d on the gateway", round), func() bool {
			fams := pgw.Scrape(t)
			for i := range targets {
				if v, ok := groupValue(fams, "m", "j", fmt.Sprintf("t%d", i)); !ok || v != float64(round) {
					return false
				}
			}
			return true
		})
	}
	var total float64
	for i, d := range drains {
		n := d.metric("prometheus_streams_drain_messages_received_total")
		if n == 0 {
			t.Errorf("drain %d received nothing: the queue group did not share the work", i)
		}
		total += n
	}
	if total < 3*targets {
		t.Errorf("received %v messages in all, want %d", total, 3*targets)
	}
	if tr.jetStream() {
		if ci := jsSettled(t, srv, "central"); ci.Delivered.Stream != 3*targets {
			t.Errorf("the shared consumer delivered up to stream sequence %d, want %d", ci.Delivered.Stream, 3*targets)
		}
	}
}

// TestMetricsDocumented checks that every self-metric a drain with both sinks serves is in
// the README's metrics reference.
func TestMetricsDocumented(t *testing.T) {
	pgw := pgwtest.Start(t)
	natsAddr, exposeAddr, mon := freeAddr(t), freeAddr(t), freeAddr(t)
	cfg := centralConfig(natsAddr, exposeAddr, mon, fmt.Sprintf("push_gateway: {url: '%s'}\n", pgw.URL()))
	d := startDrain(t, writeConfig(t, cfg), mon)
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for name := range scrapeURL(t, d.monitor+"/metrics") {
		if !strings.HasPrefix(name, "prometheus_streams_") {
			continue
		}
		n++
		if !strings.Contains(string(readme), "`"+name+"`") && !strings.Contains(string(readme), "`"+name+"{") {
			t.Errorf("%s is not in the README", name)
		}
	}
	if n < 10 {
		t.Errorf("only %d prometheus_streams_ metrics served", n)
	}
}
