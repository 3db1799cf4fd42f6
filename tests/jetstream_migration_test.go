package tests

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
)

// TestJetStreamMigration: one drain consumes the STAN channel and a JetStream stream
// at once (receiver_stream as a list); an edge on each transport; both targets arrive.
func TestJetStreamMigration(t *testing.T) {
	srv := stantest.Start(t, stantest.WithJetStream(t.TempDir()))
	exposeAddr, monAddr := freeAddr(t), freeAddr(t)
	central := writeConfig(t, fmt.Sprintf(`verbose: true
max_age: 30s
receiver_stream:
  - {cluster_id: %[1]s, client_id: drain1, urls: '%[2]s', topic: prometheus}
  - {transport: jetstream, stream: PROMETHEUS, create_stream: true, client_id: drain1, urls: '%[2]s', topic: prometheus}
expose: {listen: '%[3]s'}
monitor: {listen: '%[4]s'}
`, srv.ClusterID(), srv.URL(), exposeAddr, monAddr))
	r := runBin(t, "drain", "-c", central, "--check-config")
	if r.code != 0 {
		t.Fatalf("check-config: %d %s", r.code, r.stderr)
	}
	mustContain(t, "drain --check-config", r.stdout,
		"# receiver_stream[0]: stan channel prometheus of cluster test-cluster at nats://",
		"# receiver_stream[1]: jetstream stream PROMETHEUS subjects prometheus.> at nats://")
	t.Log(r.stdout[strings.Index(r.stdout, "# receiver_stream[0]"):])
	d := startDrain(t, central, monAddr)

	a := fixture.ServeCapture(t, fixture.PushGateway)
	jobs := func(name string) string {
		return fmt.Sprintf("  j:\n    targets: [{name: %s, url: '%s'}]\n", name, a.URL)
	}
	if r := runBin(t, "scrape-once", "-c", writeConfig(t, edgeConfig(srv.URL(), srv.ClusterID(), jobs("on-stan")))); r.code != 0 {
		t.Fatalf("stan edge: %d\n%s", r.code, r.stderr)
	}
	if r := runBin(t, "scrape-once", "-c", writeConfig(t, jsEdgeConfig(srv.URL(), "", jobs("on-jetstream")))); r.code != 0 {
		t.Fatalf("jetstream edge: %d\n%s", r.code, r.stderr)
	}
	waitFor(t, 20*time.Second, "both targets exposed", func() bool {
		_, b := fetch(t, "http://"+exposeAddr+"/metrics", "")
		return strings.Contains(string(b), `instance="on-stan"`) && strings.Contains(string(b), `instance="on-jetstream"`)
	})
	// Step 4's signal: each stream's own count of messages.
	stanName, jsName := "stan:"+srv.ClusterID()+"/prometheus", "jetstream:PROMETHEUS"
	if s, j := d.metric("prometheus_streams_drain_messages_received_total", "stream", stanName),
		d.metric("prometheus_streams_drain_messages_received_total", "stream", jsName); s != 1 || j != 1 {
		t.Errorf("messages received: %s %v, %s %v; want 1 each", stanName, s, jsName, j)
	}
	if r := runBin(t, "scrape-once", "-c", writeConfig(t, jsEdgeConfig(srv.URL(), "", jobs("on-jetstream")))); r.code != 0 {
		t.Fatalf("jetstream edge: %d\n%s", r.code, r.stderr)
	}
	waitFor(t, 10*time.Second, "the JetStream count to grow alone", func() bool {
		return d.metric("prometheus_streams_drain_messages_received_total", "stream", jsName) == 2 &&
			d.metric("prometheus_streams_drain_messages_received_total", "stream", stanName) == 1
	})
}

// TestEmbeddedServesBoth: the drain's embedded server takes NATS Streaming and
// JetStream clients on one port, and the drain consumes both: an edge on each arrives.
func TestEmbeddedServesBoth(t *testing.T) {
	t.Run("derived", func(t *testing.T) { embeddedServesBoth(t, "") })
	// A receiver_stream naming only the embedded server's channel (to set max_inflight,
	// as the README's Capacity section advises) still consumes its JetStream too.
	t.Run("with-receiver_stream", func(t *testing.T) {
		embeddedServesBoth(t, "receiver_stream:\n  cluster_id: central\n  urls: nats://%s\n  client_id: drain1\n  max_inflight: 2048\n")
	})
}

func embeddedServesBoth(t *testing.T, receiver string) {
	natsAddr, exposeAddr, mon := freeAddr(t), freeAddr(t), freeAddr(t)
	if receiver != "" {
		receiver = fmt.Sprintf(receiver, natsAddr)
	}
	path := writeConfig(t, centralConfig(natsAddr, exposeAddr, mon, receiver))
	r := runBin(t, "drain", "-c", path, "--check-config")
	if r.code != 0 {
		t.Fatalf("check-config: %d %s", r.code, r.stderr)
	}
	mustContain(t, "drain --check-config", r.stdout, "stan channel prometheus of cluster central", "jetstream stream PROMETHEUS subjects prometheus.>")
	startDrain(t, path, mon)
	a := fixture.ServeCapture(t, fixture.NodeExporter)
	jobs := func(name string) string {
		return fmt.Sprintf("  node:\n    targets: [{name: %s, url: '%s'}]\n", name, a.URL)
	}
	if r := runBin(t, "scrape-once", "-c", writeConfig(t, edgeConfig("nats://"+natsAddr, "central", jobs("via-stan")))); r.code != 0 {
		t.Fatalf("stan edge: %d\n%s", r.code, r.stderr)
	}
	// The stream exists: the drain created it at start.
	if r := runBin(t, "scrape-once", "-c", writeConfig(t, jsEdgeConfig("nats://"+natsAddr, "", jobs("via-jetstream")))); r.code != 0 {
		t.Fatalf("jetstream edge: %d\n%s", r.code, r.stderr)
	}
	waitFor(t, 20*time.Second, "both targets exposed", func() bool {
		_, b := fetch(t, "http://"+exposeAddr+"/metrics", "")
		return strings.Contains(string(b), `node_load1{instance="via-stan",job="node"}`) &&
			strings.Contains(string(b), `node_load1{instance="via-jetstream",job="node"}`)
	})
}
