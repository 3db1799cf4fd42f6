package main

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/edge"
	"github.com/prometheus-streams/prometheus-streams/edge/scrape"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/stream"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// TestAcceptHeader: the Accept header of a job's scrapes, for each list of scrape
// protocols, is the one
// Prometheus v0.316.0 sends for it with UTF-8 names allowed (scrape.acceptHeader with
// model.UTF8Validation's escaping, allow-utf-8), strings taken from Prometheus's own.
func TestAcceptHeader(t *testing.T) {
	for _, c := range []struct {
		sps  []config.ScrapeProtocol
		want string
	}{
		{config.DefaultScrapeProtocols,
			"application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.7,application/openmetrics-text;version=0.0.1;q=0.6," +
				"text/plain;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.3"},
		{config.DefaultProtoFirstScrapeProtocols,
			"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7," +
				"application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5," +
				"text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"},
		{[]config.ScrapeProtocol{config.PrometheusText0_0_4}, "text/plain;version=0.0.4;q=0.7,*/*;q=0.6"},
		{[]config.ScrapeProtocol{config.PrometheusText1_0_0, config.PrometheusProto},
			"text/plain;version=1.0.0;escaping=allow-utf-8;q=0.7,application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,*/*;q=0.5"},
	} {
		j := &config.Job{Name: "j", Histograms: config.Histograms{ScrapeProtocols: c.sps}}
		if got := scrapeJob(j).Accept; got != c.want {
			t.Errorf("%v:\n got %s\nwant %s", c.sps, got, c.want)
		}
	}
}

// TestEdgeOptionsSetEveryField: a config whose every key of a run is set, each to a
// value of its own, reaches the edge whole: each field of edge.Options, edge.Job,
// scrape.Job and scrape.Target holds its key's value.
func TestEdgeOptionsSetEveryField(t *testing.T) {
	c, err := config.Parse([]byte(`identity: edge7
site: dc3
scrape_interval: 30s
run_timeout: 20s
scrape_concurrency: 4
jobs:
  node:
    honor_labels: true
    scrape_timeout: 3s
    sample_limit: 10
    label_limit: 5
    body_size_limit: 1MiB
    enable_compression: false
    labels: {site: a}
    scrape_protocols: [PrometheusText0.0.4]
    scrape_native_histograms: false
    always_scrape_classic_histograms: true
    convert_classic_histograms_to_nhcb: true
    metric_relabel_configs: [{source_labels: [__name__], regex: 'go_.*', action: drop}]
    basic_auth: {username: u, password: p}
    targets: [{url: 'http://127.0.0.1:9100/metrics', labels: {rack: r1}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	j := c.Jobs["node"]
	got := edgeOptions(c)
	want := edge.Options{
		Identity: "edge7", Site: "dc3", RunTimeout: 20 * time.Second, ScrapeConcurrency: 4,
		Jobs: []*edge.Job{{
			Job: scrape.Job{
				Name: "node", HTTPClient: j.HTTPClientConfig, Accept: "text/plain;version=0.0.4;q=0.7,*/*;q=0.6",
				Timeout: 3 * time.Second, BodySizeLimit: 1 << 20, Compression: false, SampleLimit: 10, LabelLimit: 5,
				Histograms: scrape.Histograms{Native: false, AlwaysClassic: true, ConvertToNHCB: true},
				Labels:     map[string]string{"site": "a"}, MetricRelabelConfigs: j.MetricRelabelConfigs,
			},
			HonorLabels: true,
			Targets:     []scrape.Target{{Name: "127.0.0.1:9100", URL: "http://127.0.0.1:9100/metrics", Labels: map[string]string{"rack": "r1"}}},
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("edgeOptions:\n got %+v\nwant %+v", got, want)
		if len(got.Jobs) == 1 {
			t.Errorf("job:\n got %+v\nwant %+v", *got.Jobs[0], *want.Jobs[0])
		}
	}
	if len(got.Jobs) == 1 {
		sj := got.Jobs[0].Job
		if sj.HTTPClient.BasicAuth == nil || sj.HTTPClient.BasicAuth.Username != "u" || len(sj.MetricRelabelConfigs) != 1 {
			t.Errorf("HTTP client or relabel rules not carried: %+v", sj)
		}
	}
	// Every field is checked above: a field added to any of these fails this until the
	// test (and the mapping) know it.
	for _, f := range []struct {
		v any
		n int
	}{{want, 5}, {*want.Jobs[0], 3}, {want.Jobs[0].Job, 11}, {want.Jobs[0].Targets[0], 3}} {
		if n := reflect.TypeOf(f.v).NumField(); n != f.n {
			t.Errorf("%T has %d fields; this test checks %d", f.v, n, f.n)
		}
	}
	j.EnableCompression = nil
	if !scrapeJob(j).Compression {
		t.Error("enable_compression unset does not ask for gzip")
	}
}

// TestEdgeOptionsJobOrder: the jobs reach the edge in name order, which Select lists
// them in, whatever the file's order.
func TestEdgeOptionsJobOrder(t *testing.T) {
	c, err := config.Parse([]byte(`jobs:
  b: {targets: [{url: 'http://127.0.0.1:2/'}]}
  a: {targets: [{url: 'http://127.0.0.1:1/'}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, j := range edgeOptions(c).Jobs {
		names = append(names, j.Name)
	}
	if fmt.Sprint(names) != "[a b]" {
		t.Errorf("jobs %v, want [a b]", names)
	}
}

// TestBodyCompression checks body_compression reaches the codec: the dictionary only
// when asked for, since drains before it cannot read it.
func TestBodyCompression(t *testing.T) {
	for _, tt := range []struct {
		key  string
		want envelope.Compression
	}{
		{"", envelope.CompressionZstd},
		{", body_compression: zstd", envelope.CompressionZstd},
		{", body_compression: zstd_dictionary", envelope.CompressionZstdDict},
	} {
		cfg, err := config.Parse([]byte("poller_stream: {cluster_id: c, urls: 'nats://127.0.0.1:4222'" + tt.key + "}\n"))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := bodyCompression(cfg.PollerStream); err != nil || got != tt.want {
			t.Errorf("%q: compression %v, %v; want %v", tt.key, got, err, tt.want)
		}
	}
	if got, err := bodyCompression(nil); err != nil || got != envelope.CompressionZstd {
		t.Errorf("no poller_stream: compression %v, %v; want %v", got, err, envelope.CompressionZstd)
	}
}

// TestCodecOptions: the codec scrape-once builds from poller_stream writes what
// body_compression asks for: with the dictionary, a node_exporter body takes about a
// quarter fewer bytes.
func TestCodecOptions(t *testing.T) {
	size := func(key string) int {
		cfg, err := config.Parse([]byte("poller_stream: {cluster_id: c, urls: 'nats://127.0.0.1:4222'" + key + "}\n"))
		if err != nil {
			t.Fatal(err)
		}
		opts, err := codecOptions(cfg.PollerStream, nil)
		if err != nil {
			t.Fatal(err)
		}
		c, err := envelope.NewCodec(opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg, err := c.Encode(&envelope.Envelope{Job: "node", Instance: "host:9100", Body: fixture.Read(t, fixture.NodeExporter)})
		if err != nil {
			t.Fatal(err)
		}
		return len(msg)
	}
	plain, dict := size(""), size(", body_compression: zstd_dictionary")
	if float64(dict) > 0.9*float64(plain) {
		t.Errorf("message with the dictionary %d bytes, without %d: the dictionary did not reach the codec", dict, plain)
	}
	if _, err := codecOptions(&config.Stream{BodyCompression: "lz4"}, nil); err == nil || !strings.Contains(err.Error(), `unknown "lz4"`) {
		t.Errorf("body_compression lz4: %v, want an error naming it", err)
	}
}

// TestStreamOptions: poller_stream reaches the stream client with the run's name, and
// a JetStream stream scrape-once creates keeps messages for max_age, dropping a
// message published again within the duplicate window, which spans a scrape interval.
func TestStreamOptions(t *testing.T) {
	cfg, err := config.Parse([]byte("identity: e1\nscrape_interval: 10s\npoller_stream: {transport: jetstream, stream: PROMETHEUS, create_stream: true, urls: 'nats://h:4222', topic: prom.edge, connect_timeout: 2s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	o := streamOptions(cfg, nil)
	if o.Name != "scrape-once e1" || o.Transport != stream.TransportJetStream || o.Stream != "PROMETHEUS" || !o.Create ||
		o.Topic != "prom.edge" || o.ConnectTimeout != 2*time.Second || fmt.Sprint(o.URLs) != "[nats://h:4222]" {
		t.Errorf("stream options %+v", o)
	}
	if o.MaxAge != cfg.MaxAge.D() || o.DuplicateWindow < cfg.ScrapeInterval.D() || o.DuplicateWindow != cfg.DuplicateWindow() {
		t.Errorf("max_age %v, duplicate window %v; want %v, and %v (at least the interval)", o.MaxAge, o.DuplicateWindow, cfg.MaxAge, cfg.DuplicateWindow())
	}
}

// TestREADMEStreamAdd checks the README's `nats stream add` equivalent of create_stream
// against what scrape-once creates for the config it names.
func TestREADMEStreamAdd(t *testing.T) {
	cfg, err := config.Parse([]byte("scrape_interval: 60s\nmax_age: 2m\npoller_stream: {transport: jetstream, stream: PROMETHEUS, urls: 'nats://h:4222'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	cmd := streamOptions(cfg, nil).StreamAddCommand()
	if !strings.Contains(string(readme), "\n"+cmd+"\n") {
		t.Errorf("README lacks the command scrape-once's create_stream amounts to:\n%s", cmd)
	}
}
