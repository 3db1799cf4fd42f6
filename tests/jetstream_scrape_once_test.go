package tests

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
	"github.com/prometheus-streams/prometheus-streams/stream"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// jsEdgeConfig is a scrape-once config publishing to the JetStream stream PROMETHEUS at
// natsURL, with more poller_stream keys and the given jobs section.
func jsEdgeConfig(natsURL, poller, jobs string) string {
	return fmt.Sprintf(`verbose: true
identity: edge1
scrape_interval: 10s
poller_stream:
  transport: jetstream
  stream: PROMETHEUS
  urls: %s
  topic: prometheus
  connect_timeout: 2s
%sjobs:
%s`, natsURL, poller, jobs)
}

// jsContext is a plain JetStream client of srv.
func jsContext(t *testing.T, srv *stantest.Server) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// readStream returns every message the stream holds, in order.
func readStream(t *testing.T, js jetstream.JetStream, name string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	state := st.CachedInfo().State
	var out []*jetstream.RawStreamMsg
	for seq := state.FirstSeq; seq > 0 && seq <= state.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

// TestJetStreamScrapeOnce publishes three real captures on each transport and reads them
// back; on JetStream each is on its target's subject with a Nats-Msg-Id, in a stream
// created as create_stream says, and publishing one again stores nothing.
func TestJetStreamScrapeOnce(t *testing.T) {
	node := fixture.ServeCapture(t, fixture.NodeExporter)
	prom := fixture.ServeCapture(t, fixture.Prometheus)
	pgw := fixture.ServeCapture(t, fixture.PushGateway)
	jobs := fmt.Sprintf(`  node:
    targets:
      - {name: node1, url: '%s/metrics'}
  'prom.d':
    targets:
      - {url: '%s/metrics'}
      - {name: 'pgw *', url: '%s/metrics'}
`, node.URL, prom.URL, pgw.URL)
	promInstance := strings.TrimPrefix(prom.URL, "http://")
	want := map[string][]byte{
		"node/node1":             fixture.Read(t, fixture.NodeExporter),
		"prom.d/" + promInstance: fixture.Read(t, fixture.Prometheus),
		"prom.d/pgw *":           fixture.Read(t, fixture.PushGateway),
	}
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()

	for _, transport := range []string{"stan", "jetstream"} {
		t.Run(transport, func(t *testing.T) {
			srv := stantest.Start(t, stantest.WithJetStream(t.TempDir()))
			cfg := edgeConfig(srv.URL(), srv.ClusterID(), jobs)
			if transport == "jetstream" {
				cfg = jsEdgeConfig(srv.URL(), "  create_stream: true\n", jobs)
			}
			r := runBin(t, "scrape-once", "-c", writeConfig(t, cfg))
			if r.code != 0 {
				t.Fatalf("exit %d\n%s", r.code, r.stderr)
			}
			mustContain(t, "log", r.stderr, "run done", "targets=3", "ok=3", "acked=3")

			var got []*envelope.Envelope
			if transport == "stan" {
				got = readChannel(t, srv, "prometheus")
			} else {
				got = checkJetStream(t, srv, codec, promInstance)
			}
			byKey := byInstance(got)
			if len(got) != 3 || len(byKey) != 3 {
				t.Fatalf("got %d messages: %v", len(got), byKey)
			}
			for key, body := range want {
				if e := byKey[key]; e == nil || !bytes.Equal(e.Body, body) || e.Error != "" {
					t.Errorf("%s: not published as served: %+v", key, e)
				}
			}
		})
	}
}

// checkJetStream checks the stream scrape-once created and what it holds, and returns
// its messages decoded.
func checkJetStream(t *testing.T, srv *stantest.Server, codec *envelope.Codec, promInstance string) []*envelope.Envelope {
	t.Helper()
	js := jsContext(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "PROMETHEUS")
	if err != nil {
		t.Fatal(err)
	}
	c := st.CachedInfo().Config
	// scrape_interval 10s, max_age by default 20s: the duplicate window is at most the
	// max age, and at least the interval.
	if fmt.Sprint(c.Subjects) != "[prometheus.>]" || c.Storage != jetstream.FileStorage || c.MaxAge != 20*time.Second ||
		c.Duplicates < 10*time.Second || c.Duplicates > c.MaxAge {
		t.Errorf("created stream: subjects %v storage %v max_age %v duplicates %v", c.Subjects, c.Storage, c.MaxAge, c.Duplicates)
	}

	msgs := readStream(t, js, "PROMETHEUS")
	subjects := map[string]string{
		"node/node1":             "prometheus.node.node1",
		"prom.d/" + promInstance: "prometheus.prom%2Ed." + strings.ReplaceAll(promInstance, ".", "%2E"),
		"prom.d/pgw *":           "prometheus.prom%2Ed.pgw%20%2A",
	}
	var out []*envelope.Envelope
	for _, m := range msgs {
		e, err := codec.Decode(m.Data)
		if err != nil {
			t.Fatalf("message %d: %v", m.Sequence, err)
		}
		out = append(out, e)
		key := e.Job + "/" + e.Instance
		if m.Subject != subjects[key] {
			t.Errorf("%s on subject %q, want %q", key, m.Subject, subjects[key])
		}
		id := m.Header.Get(jetstream.MsgIDHeader)
		if id == "" || id != stream.MsgID(e.Job, e.Instance, e.Start, 0, 1) {
			t.Errorf("%s: Nats-Msg-Id %q, want the ID of its scrape", key, id)
		}
	}
	if len(msgs) == 0 {
		return out
	}

	// The same scrape published again, as after a lost ack: the server drops it.
	m := msgs[0]
	ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Data: m.Data, Header: m.Header})
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate {
		t.Error("the same scrape published again is not a duplicate")
	}
	if n := len(readStream(t, js, "PROMETHEUS")); n != len(msgs) {
		t.Errorf("stream holds %d messages after a retried publish, want %d", n, len(msgs))
	}
	return out
}

// TestJetStreamScrapeOnceStreamChecks: without create_stream the stream must exist and
// fit poller_stream; a missing one is unreachable (69), an unfit one a config matter (78).
func TestJetStreamScrapeOnceStreamChecks(t *testing.T) {
	srv := stantest.Start(t, stantest.WithJetStream(t.TempDir()))
	target := fixture.ServeCapture(t, fixture.PushGateway)
	jobs := fmt.Sprintf("  j:\n    targets: [{name: a, url: '%s'}]\n", target.URL)
	cfg := writeConfig(t, jsEdgeConfig(srv.URL(), "", jobs))

	r := runBin(t, "scrape-once", "-c", cfg)
	if r.code != 69 {
		t.Fatalf("missing stream: exit %d, want 69\n%s", r.code, r.stderr)
	}
	mustContain(t, "log", r.stderr, "stream unreachable", `no such JetStream stream \"PROMETHEUS\"`,
		"nats stream add PROMETHEUS --subjects 'prometheus.>' --storage file", "--max-age 20s --dupe-window 20s",
		"poller_stream.create_stream: true")

	js := jsContext(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PROMETHEUS", Subjects: []string{"metrics.>"}}); err != nil {
		t.Fatal(err)
	}
	r = runBin(t, "scrape-once", "-c", cfg)
	if r.code != 78 {
		t.Fatalf("stream of other subjects: exit %d, want 78\n%s", r.code, r.stderr)
	}
	mustContain(t, "log", r.stderr, "stream incompatible", "JetStream stream does not fit", `captures [\"metrics.>\"], not \"prometheus.>\"`)
	if n := len(readStream(t, js, "PROMETHEUS")); n != 0 {
		t.Errorf("%d messages published into an unfit stream", n)
	}

	r = runBin(t, "scrape-once", "-c", writeConfig(t, jsEdgeConfig(closedURL(t, "nats"), "", jobs)))
	if r.code != 69 {
		t.Fatalf("no server: exit %d, want 69\n%s", r.code, r.stderr)
	}
}

// TestJetStreamCheckConfig: --check-config says which transport scrape-once uses.
func TestJetStreamCheckConfig(t *testing.T) {
	jobs := "  j:\n    targets: [{url: 'http://127.0.0.1:1/'}]\n"
	for _, c := range []struct {
		cfg  string
		want []string
	}{
		{edgeConfig("nats://127.0.0.1:4222", "c", jobs), []string{"# poller_stream: stan channel prometheus of cluster c at nats://127.0.0.1:4222\n"}},
		{jsEdgeConfig("nats://u:s3cr3t@127.0.0.1:4222", "", jobs),
			[]string{"# poller_stream: jetstream stream PROMETHEUS subjects prometheus.> at nats://u:xxxxx@127.0.0.1:4222 (must exist)\n"}},
		{jsEdgeConfig("nats://127.0.0.1:4222", "  create_stream: true\n", jobs),
			[]string{"# poller_stream: jetstream stream PROMETHEUS subjects prometheus.> at nats://127.0.0.1:4222 (created if missing, 1 replica)\n"}},
		{jsEdgeConfig("[nats://127.0.0.1:4222, nats://127.0.0.1:4223, nats://127.0.0.1:4224]", "  create_stream: {replicas: 3}\n", jobs),
			[]string{"  create_stream:\n    replicas: 3\n",
				"# poller_stream: jetstream stream PROMETHEUS subjects prometheus.> at nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224 (created if missing, 3 replicas)\n"}},
	} {
		r := runBin(t, "scrape-once", "-c", writeConfig(t, c.cfg), "--check-config")
		if r.code != 0 {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		mustContain(t, "check-config", r.stdout, append(c.want, "valid for scrape-once")...)
		if strings.Contains(r.stdout, "s3cr3t") {
			t.Errorf("--check-config shows the URL's password:\n%s", r.stdout)
		}
	}
}

// TestJetStreamScrapeOnceSplit: on JetStream too, a scrape larger than the server's
// max payload goes in parts, each with its own Nats-Msg-Id, on the target's subject.
func TestJetStreamScrapeOnceSplit(t *testing.T) {
	srv := stantest.Start(t, stantest.WithJetStream(t.TempDir()), stantest.WithMaxPayload(32<<10))
	big := fixture.Serve(t, fixture.Replicate(t, fixture.NodeExporter, 20000), fixture.TextContentType)
	small := fixture.ServeCapture(t, fixture.PushGateway)
	cfg := writeConfig(t, jsEdgeConfig(srv.URL(), "  create_stream: true\n", fmt.Sprintf(`  j:
    targets:
      - {name: big, url: '%s'}
      - {name: small, url: '%s'}
`, big.URL, small.URL)))
	r := runBin(t, "scrape-once", "-c", cfg)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	mustContain(t, "log", r.stderr, "split=1", "oversized=0")
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	var parts []*envelope.Envelope
	ids := map[string]bool{}
	for _, m := range readStream(t, jsContext(t, srv), "PROMETHEUS") {
		e, err := codec.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject == "prometheus.j.big" {
			parts = append(parts, e)
			id := m.Header.Get("Nats-Msg-Id")
			if ids[id] || id != stream.MsgID(e.Job, e.Instance, e.Start, e.Part, e.Parts) {
				t.Errorf("part %d: Nats-Msg-Id %q, want its own, stream.MsgID's", e.Part, id)
			}
			ids[id] = true
		} else if m.Subject != "prometheus.j.small" || e.Error != "" || e.Parts > 1 {
			t.Errorf("%s: %+v", m.Subject, e)
		}
	}
	checkParts(t, parts, 20000)
}
