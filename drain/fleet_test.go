package drain

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// TestFleetMetrics: the drain counts targets by job, publisher and state as /targets
// shows them, and names the scrape-once version of each publisher's newest message; a target that
// moves from up to down moves between the series, and a publisher's upgrade replaces
// its version.
func TestFleetMetrics(t *testing.T) {
	h, clk := newStatusHarness(t, Options{}, &recorder{})
	h.waitAcked(h.sendEnv(envelope.Envelope{Instance: "a", Publisher: "edge-1", PublisherVersion: "1.0.0"}, time.Second))
	h.waitAcked(h.sendEnv(envelope.Envelope{Instance: "b", Publisher: "edge-1", PublisherVersion: "1.0.0"}, time.Second))
	h.waitAcked(h.sendEnv(envelope.Envelope{Instance: "c", Publisher: "edge-2", Error: "connection refused"}, time.Second))
	h.waitAcked(h.sendEnv(envelope.Envelope{Instance: "d", Publisher: "edge-1", PublisherVersion: "1.0.0"}, time.Second))
	h.waitState("a", StateUp)
	h.waitState("d", StateUp)
	h.waitState("b", StateUp)
	h.waitState("c", StateDown)

	want := `
# HELP prometheus_streams_drain_fleet_targets Targets by job, publisher (edge host) and state, as on /targets: up, down (the edge's scrape failed), pending, retrying, rejected, expired, stale.
# TYPE prometheus_streams_drain_fleet_targets gauge
prometheus_streams_drain_fleet_targets{job="j",publisher="edge-1",state="up"} 3
prometheus_streams_drain_fleet_targets{job="j",publisher="edge-2",state="down"} 1
# HELP prometheus_streams_drain_publisher_build_info 1 for each publisher (edge host) and the version of scrape-once that published its newest message; version is empty for builds that do not say.
# TYPE prometheus_streams_drain_publisher_build_info gauge
prometheus_streams_drain_publisher_build_info{publisher="edge-1",version="1.0.0"} 1
prometheus_streams_drain_publisher_build_info{publisher="edge-2",version=""} 1
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want),
		"prometheus_streams_drain_fleet_targets", "prometheus_streams_drain_publisher_build_info"); err != nil {
		t.Error(err)
	}

	// a goes down, b and c are scraped by an upgraded edge-1 and edge-2; d's newest
	// scrape is still the old edge-1's, whose version is no longer shown.
	clk.add(time.Second)
	h.waitAcked(h.sendEnv(envelope.Envelope{Instance: "a", Publisher: "edge-1", PublisherVersion: "1.1.0", Error: "timeout"}, 2*time.Second))
	h.waitAcked(h.sendEnv(envelope.Envelope{Instance: "b", Publisher: "edge-1", PublisherVersion: "1.1.0"}, 2*time.Second))
	h.waitAcked(h.sendEnv(envelope.Envelope{Instance: "c", Publisher: "edge-2", PublisherVersion: "1.1.0"}, 2*time.Second))
	h.waitState("a", StateDown)
	h.waitState("b", StateUp)
	h.waitState("c", StateUp)
	want = `
# HELP prometheus_streams_drain_fleet_targets Targets by job, publisher (edge host) and state, as on /targets: up, down (the edge's scrape failed), pending, retrying, rejected, expired, stale.
# TYPE prometheus_streams_drain_fleet_targets gauge
prometheus_streams_drain_fleet_targets{job="j",publisher="edge-1",state="down"} 1
prometheus_streams_drain_fleet_targets{job="j",publisher="edge-1",state="up"} 2
prometheus_streams_drain_fleet_targets{job="j",publisher="edge-2",state="up"} 1
# HELP prometheus_streams_drain_publisher_build_info 1 for each publisher (edge host) and the version of scrape-once that published its newest message; version is empty for builds that do not say.
# TYPE prometheus_streams_drain_publisher_build_info gauge
prometheus_streams_drain_publisher_build_info{publisher="edge-1",version="1.1.0"} 1
prometheus_streams_drain_publisher_build_info{publisher="edge-2",version="1.1.0"} 1
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want),
		"prometheus_streams_drain_fleet_targets", "prometheus_streams_drain_publisher_build_info"); err != nil {
		t.Error(err)
	}
}
