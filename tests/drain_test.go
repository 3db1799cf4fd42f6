package tests

import (
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/prometheus-streams/prometheus-streams/lib/exposition"
	"github.com/prometheus-streams/prometheus-streams/lib/fixture"
	"github.com/prometheus-streams/prometheus-streams/lib/pgwtest"
	"github.com/prometheus-streams/prometheus-streams/lib/stantest"
)

// TestDrainHappyPath runs scrape-once and the drain between real servers: every series a
// target served reaches the gateway with job, instance and static labels, beside the
// scrape-health series.
func TestDrainHappyPath(t *testing.T) {
	srv := stantest.Start(t)
	pgw := pgwtest.Start(t)
	node := fixture.ServeCapture(t, fixture.NodeExporter)
	down := closedURL(t, "http")
	edge := writeConfig(t, edgeConfig(srv.URL(), srv.ClusterID(), fmt.Sprintf(`  node:
    labels: {dc: dc1}
    targets:
      - {name: node1, url: '%s/metrics'}
      - {name: gone, url: '%s/metrics'}
`, node.URL, down)))
	if r := runBin(t, "scrape-once", "-c", edge); r.code != 0 {
		t.Fatalf("scrape-once: exit %d\n%s", r.code, r.stderr)
	}
	mon := freeAddr(t)
	d := startDrain(t, writeConfig(t, drainConfig(srv, pgw.URL(), mon, "")), mon)

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
// max_age arrive once it is back, older ones are counted expired.
func TestDrainGatewayDown(t *testing.T) {
	srv := stantest.Start(t)
	pgw := pgwtest.Start(t)
	mon := freeAddr(t)
	d := startDrain(t, writeConfig(t, drainConfig(srv, pgw.URL(), mon, "")), mon)
	pgw.Stop()

	now := time.Now()
	publish(t, srv, "prometheus",
		encode(t, "j", "old", now.Add(-time.Minute), "m 1\n"), // past max_age (30s)
		encode(t, "j", "a", now.Add(-2*time.Second), "m 2\n"),
		encode(t, "j", "a", now.Add(-time.Second), "m 3\n"), // newer scrape of the same target
		encode(t, "j", "b", now, "m 4\n"),
	)
	waitFor(t, 10*time.Second, "retries against the stopped gateway", func() bool {
		return d.metric("prometheus_streams_drain_delivery_retries_total") >= 2
	})
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
	if v := d.metric("prometheus_streams_drain_messages_superseded_total"); v != 1 {
		t.Errorf("superseded = %v, want 1", v)
	}
}

// TestDrainKilled kills the drain with SIGKILL: on restart every unacknowledged message is
// delivered, and an older scrape redelivered or published late never replaces a newer one.
func TestDrainKilled(t *testing.T) {
	srv := stantest.Start(t, stantest.WithFileStore(t.TempDir()))
	pgw := pgwtest.Start(t)
	mon := freeAddr(t)
	cfg := writeConfig(t, drainConfig(srv, pgw.URL(), mon, ""))
	d := startDrain(t, cfg, mon)

	now := time.Now()
	publish(t, srv, "prometheus", encode(t, "j", "a", now.Add(-2*time.Second), "m 2\n"))
	waitFor(t, 10*time.Second, "a@2 on the gateway", func() bool {
		v, _ := groupValue(pgw.Scrape(t), "m", "j", "a")
		return v == 2
	})
	d.kill()
	// While the drain is dead: an older scrape of a (late), a new target b.
	publish(t, srv, "prometheus",
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
}

// TestDrainGarbage publishes garbage: it is counted, acknowledged, and the drain goes on.
func TestDrainGarbage(t *testing.T) {
	srv := stantest.Start(t)
	pgw := pgwtest.Start(t)
	mon := freeAddr(t)
	d := startDrain(t, writeConfig(t, drainConfig(srv, pgw.URL(), mon, "")), mon)
	good := encode(t, "j", "a", time.Now(), "m 1\n")
	corrupt := append([]byte(nil), good...)
	corrupt[len(corrupt)/2] ^= 0xff
	publish(t, srv, "prometheus",
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
}

// TestDrainRejected4xx: a scrape the gateway refuses (a family whose type conflicts with
// another group's) is counted and acknowledged, and does not stall other targets.
func TestDrainRejected4xx(t *testing.T) {
	srv := stantest.Start(t)
	pgw := pgwtest.Start(t)
	mon := freeAddr(t)
	d := startDrain(t, writeConfig(t, drainConfig(srv, pgw.URL(), mon, "")), mon)
	now := time.Now()
	publish(t, srv, "prometheus", encode(t, "j", "counter", now, "# TYPE clash counter\nclash 1\n"))
	waitFor(t, 10*time.Second, "first group", func() bool {
		_, ok := groupValue(pgw.Scrape(t), "clash", "j", "counter")
		return ok
	})
	publish(t, srv, "prometheus",
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
}

// TestDrainStaleness: a target whose scrapes stop loses its group after max_age; a group
// pushed by someone else stays.
func TestDrainStaleness(t *testing.T) {
	srv := stantest.Start(t)
	pgw := pgwtest.Start(t)
	if code := pgw.PushRaw(t, "/metrics/job/other/instance/x", "text/plain; version=0.0.4", []byte("someone_else 1\n")); code/100 != 2 {
		t.Fatalf("push someone else's group: %d", code)
	}
	mon := freeAddr(t)
	cfg := strings.Replace(drainConfig(srv, pgw.URL(), mon, ""), "max_age: 30s", "max_age: 3s", 1)
	d := startDrain(t, writeConfig(t, cfg), mon)
	publish(t, srv, "prometheus", encode(t, "j", "vanishing", time.Now(), "m 1\n"))
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

// TestDrainQueueGroup runs two drains in one queue group: they share the messages and the
// gateway ends with the newest scrape of every target.
func TestDrainQueueGroup(t *testing.T) {
	srv := stantest.Start(t)
	pgw := pgwtest.Start(t)
	var drains []*drainProc
	for i := range 2 {
		mon := freeAddr(t)
		cfg := drainConfig(srv, pgw.URL(), mon, "")
		cfg = strings.Replace(cfg, "client_id: drain1", fmt.Sprintf("client_id: drain%d\n  durable_name: central\n  queue_group: central", i), 1)
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
		publish(t, srv, "prometheus", msgs...)
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
