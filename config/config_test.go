package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLegacySample(t *testing.T) {
	c, err := Load("testdata/legacy-sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Verbose || c.Debug || c.LogFile != "/var/log/prometheus-streams.log" {
		t.Errorf("logging keys: verbose=%v debug=%v logfile=%q", c.Verbose, c.Debug, c.LogFile)
	}
	if c.ScrapeInterval.D() != time.Minute {
		t.Errorf("scrape_interval = %s", c.ScrapeInterval)
	}
	if c.MaxAge.D() != 80*time.Second {
		t.Errorf("max_age = %s, want 80s", c.MaxAge)
	}
	if c.RunTimeout.D() != 54*time.Second {
		t.Errorf("run_timeout default = %s, want 54s (90%% of 60s)", c.RunTimeout)
	}
	if c.ScrapeTimeout.D() != 10*time.Second {
		t.Errorf("scrape_timeout default = %s, want 10s", c.ScrapeTimeout)
	}
	p := c.PollerStream
	if p.ClusterID != "dc1_stream" || p.Topic != "prometheus" || len(p.URLs) != 1 || p.URLs[0] != "nats://nats.dc1.example.net:4222" {
		t.Errorf("poller_stream = %+v", p)
	}
	if p.ClientID != DefaultClientIDPrefix {
		t.Errorf("poller client id prefix = %q", p.ClientID)
	}
	r := c.ReceiverStreams[0]
	if r.ClientID != "prometheus_receiver" || r.ClusterID != "global_stream" || r.URLs.String() != "nats://nats.dc2.example.net:4222" {
		t.Errorf("receiver_stream = %+v", r)
	}
	if c.PushGateway.URL != "http://prometheus.dc2.example.net:9091" {
		t.Errorf("push_gateway = %+v", c.PushGateway)
	}
	j := c.Jobs["choria"]
	if j == nil || len(j.Targets) != 1 {
		t.Fatalf("jobs = %+v", c.Jobs)
	}
	if tg := j.Targets[0]; tg.Name != "choria1" || tg.URL != "http://choria1.dc1.example.net:8222/choria/prometheus" {
		t.Errorf("target = %+v", tg)
	}
	if j.ScrapeTimeout.D() != 10*time.Second || j.BodySizeLimit != DefaultBodySizeLimit {
		t.Errorf("job defaults: timeout %s, body limit %d", j.ScrapeTimeout, j.BodySizeLimit)
	}
	if r.DurableName != "prometheus_receiver" || r.MaxInflight != DefaultMaxInflight || r.AckWait != DefaultAckWait || r.QueueGroup != "" {
		t.Errorf("receiver consumer defaults: %+v", r)
	}
	if c.PushGateway.Workers != DefaultPushWorkers || c.PushGateway.Timeout != DefaultPushTimeout || !c.PushGateway.HTTPClientConfig.FollowRedirects {
		t.Errorf("push_gateway defaults: %+v", c.PushGateway)
	}
	if c.Monitor == nil || c.Monitor.Listen != DefaultMonitorListen {
		t.Errorf("monitor default: %+v", c.Monitor)
	}
	if err := c.RequireEdge(); err != nil {
		t.Errorf("RequireEdge: %v", err)
	}
	if err := c.RequireCentral(); err != nil {
		t.Errorf("RequireCentral: %v", err)
	}
}

// TestExamples loads every example config shipped in config/.
func TestExamples(t *testing.T) {
	files, _ := filepath.Glob("*.yaml")
	if len(files) == 0 {
		t.Fatal("no example configs in config/")
	}
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestValues(t *testing.T) {
	base := "poller_stream: {cluster_id: c, urls: 'nats://127.0.0.1:4222'}\njobs: {j: {targets: [{url: 'http://127.0.0.1:9100/metrics'}]}}\n"
	tests := []struct {
		name  string
		extra string
		check func(t *testing.T, c *Config)
	}{
		{"bare seconds", "max_age: 80\n", func(t *testing.T, c *Config) {
			if c.MaxAge.D() != 80*time.Second {
				t.Errorf("max_age %s", c.MaxAge)
			}
		}},
		{"fractional seconds", "scrape_interval: 1.5\n", func(t *testing.T, c *Config) {
			if c.ScrapeInterval.D() != 1500*time.Millisecond {
				t.Errorf("scrape_interval %s", c.ScrapeInterval)
			}
			if c.ScrapeTimeout.D() != 1500*time.Millisecond {
				t.Errorf("timeout default should be the interval when below 10s, got %s", c.ScrapeTimeout)
			}
		}},
		{"duration string", "max_age: 1m30s\n", func(t *testing.T, c *Config) {
			if c.MaxAge.D() != 90*time.Second {
				t.Errorf("max_age %s", c.MaxAge)
			}
		}},
		{"max_age default", "scrape_interval: 30s\n", func(t *testing.T, c *Config) {
			if c.MaxAge.D() != time.Minute {
				t.Errorf("max_age default %s, want 2×interval", c.MaxAge)
			}
		}},
		{"instance from url", "", func(t *testing.T, c *Config) {
			if got := c.Jobs["j"].Targets[0].Name; got != "127.0.0.1:9100" {
				t.Errorf("instance %q", got)
			}
		}},
		{"http client defaults as Prometheus", "", func(t *testing.T, c *Config) {
			h := c.Jobs["j"].HTTPClientConfig
			if !h.FollowRedirects || !h.EnableHTTP2 {
				t.Errorf("follow_redirects=%v enable_http2=%v, want true as in Prometheus", h.FollowRedirects, h.EnableHTTP2)
			}
		}},
		{"body size limit", "", func(t *testing.T, c *Config) {
			if c.Jobs["j"].BodySizeLimit != 32<<20 {
				t.Errorf("limit %d", c.Jobs["j"].BodySizeLimit)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.extra + base))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

// TestScrapeProtocolDefaults: scrape protocols and histogram settings resolve as in
// Prometheus 3: its default protocols, PrometheusProto first with native histograms, a
// job's own settings over the top level's.
func TestScrapeProtocolDefaults(t *testing.T) {
	c, err := Parse([]byte(`
always_scrape_classic_histograms: true
jobs:
  plain: {targets: [{url: 'http://h:1/'}]}
  native:
    scrape_native_histograms: true
    targets: [{url: 'http://h:1/'}]
  own:
    scrape_protocols: [PrometheusText0.0.4]
    always_scrape_classic_histograms: false
    convert_classic_histograms_to_nhcb: true
    targets: [{url: 'http://h:1/'}]
`))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"plain":  "scrape_protocols [OpenMetricsText1.0.0 OpenMetricsText0.0.1 PrometheusText1.0.0 PrometheusText0.0.4], scrape_native_histograms false, always_scrape_classic_histograms true, convert_classic_histograms_to_nhcb false",
		"native": "scrape_protocols [PrometheusProto OpenMetricsText1.0.0 OpenMetricsText0.0.1 PrometheusText1.0.0 PrometheusText0.0.4], scrape_native_histograms true, always_scrape_classic_histograms true, convert_classic_histograms_to_nhcb false",
		"own":    "scrape_protocols [PrometheusText0.0.4], scrape_native_histograms false, always_scrape_classic_histograms false, convert_classic_histograms_to_nhcb true",
	} {
		if got := c.Jobs[name].Histograms.String(); got != want {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
	}
}

func TestURLList(t *testing.T) {
	for _, in := range []string{
		"urls: 'nats://a:4222,nats://b:4222'",
		"urls: 'nats://a:4222, nats://b:4222'",
		"urls: [nats://a:4222, nats://b:4222]",
		"urls:\n    - nats://a:4222\n    - nats://b:4222",
	} {
		c, err := Parse([]byte("poller_stream:\n    cluster_id: c\n    " + in + "\n"))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if got := c.PollerStream.URLs.String(); got != "nats://a:4222,nats://b:4222" {
			t.Errorf("%s: got %q", in, got)
		}
	}
}

// TestErrors checks that every bad config names the key and the line.
func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"unknown top-level key", "scrape_intervall: 60s\n", []string{"line 1", "scrape_intervall", "unknown key"}},
		{"unknown nested key", "poller_stream:\n  cluster_id: c\n  urls: nats://x:4222\n  clusterid: d\n", []string{"line 4", "poller_stream.clusterid", "unknown key"}},
		{"unknown target key", "jobs:\n  j:\n    targets:\n      - url: http://h:1/m\n        nmae: x\n", []string{"line 5", "nmae", "unknown key"}},
		{"wrong type", "scrape_interval: [1]\n", []string{"line 1", "scrape_interval"}},
		{"bad duration", "max_age: soon\n", []string{"line 1", "max_age", `"soon"`}},
		{"bad int", "scrape_concurrency: many\n", []string{"line 1", "scrape_concurrency"}},
		{"timeout above interval", "scrape_interval: 10s\nscrape_timeout: 20s\n", []string{"line 2", "scrape_timeout", "above scrape_interval"}},
		{"job timeout above interval", "scrape_interval: 10s\njobs:\n  j:\n    scrape_timeout: 1m\n    targets: [{url: 'http://h:1/'}]\n", []string{"line 4", "jobs.j.scrape_timeout", "above scrape_interval"}},
		{"duplicate target", "jobs:\n  j:\n    targets:\n      - {name: a, url: 'http://h:1/'}\n      - {name: a, url: 'http://h:2/'}\n", []string{"line 5", "jobs.j.targets[1].name", `duplicate target "a"`}},
		{"duplicate derived name", "jobs:\n  j:\n    targets:\n      - {url: 'http://h:1/a'}\n      - {url: 'http://h:1/b'}\n", []string{"line 5", `duplicate target "h:1"`}},
		{"url does not parse", "jobs:\n  j:\n    targets:\n      - {name: a, url: 'http://[::1'}\n", []string{"line 4", "jobs.j.targets[0].url", "does not parse"}},
		{"url not http", "jobs:\n  j:\n    targets:\n      - {name: a, url: 'ftp://h/'}\n", []string{"line 4", "jobs.j.targets[0].url", "http://"}},
		{"stream url", "poller_stream: {cluster_id: c, urls: 'http://x:4222'}\n", []string{"line 1", "poller_stream.urls[0]", "nats://"}},
		{"missing cluster id", "poller_stream:\n  urls: nats://x:4222\n", []string{"line 1", "poller_stream.cluster_id", "required"}},
		{"body compression", "poller_stream:\n  cluster_id: c\n  urls: nats://x:4222\n  body_compression: gzip\n", []string{"line 4", "poller_stream.body_compression", `"gzip"`, "zstd_dictionary"}},
		{"receiver without client id", "receiver_stream:\n  cluster_id: c\n  urls: nats://x:4222\n", []string{"receiver_stream.client_id", "required"}},
		{"reserved label", "jobs:\n  j:\n    labels: {instance: x}\n    targets: [{url: 'http://h:1/'}]\n", []string{"line 3", "jobs.j.labels.instance"}},
		{"bad relabel", "jobs:\n  j:\n    targets: [{url: 'http://h:1/'}]\n    metric_relabel_configs:\n      - action: replace\n        regex: '('\n", []string{"line 6", "metric_relabel_configs[0].regex", `"(" is not a valid regular expression: missing closing )`}},
		{"unknown relabel key", "jobs:\n  j:\n    targets: [{url: 'http://h:1/'}]\n    metric_relabel_configs:\n      - action: drop\n        source_label: [a]\n", []string{"line 5", "metric_relabel_configs[0]", "source_label"}},
		{"bad relabel action", "jobs:\n  j:\n    targets: [{url: 'http://h:1/'}]\n    metric_relabel_configs:\n      - action: explode\n", []string{"line 5", "explode"}},
		{"two problems at once", "scrape_interval: -5\nmax_age: nope\n", []string{"line 1", "line 2"}},
		{"no targets", "jobs:\n  j:\n    labels: {a: b}\n", []string{"line 2", "jobs.j.targets", "required"}},
		{"monitor twice", "monitor: {listen: ':9898'}\nmonitor_port: 9898\n", []string{"line 2", "monitor_port", "both set"}},
		{"monitor listen", "monitor: {listen: '9898'}\n", []string{"line 1", "monitor.listen", "host:port"}},
		{"ack wait", "receiver_stream: {cluster_id: c, client_id: d, urls: 'nats://h:1', ack_wait: 500ms}\n", []string{"line 1", "receiver_stream.ack_wait", "at least 1s"}},
		{"publisher label", "push_gateway: {url: 'http://h:1', publisher_label: instance}\n", []string{"line 1", "push_gateway.publisher_label", "grouping label"}},
		{"push gateway url", "push_gateway: {url: 'h:1'}\n", []string{"line 1", "push_gateway.url"}},
		{"expose path", "expose: {path: metrics}\n", []string{"line 1", "expose.path"}},
		{"expose on the monitor's address", "monitor: {listen: ':9000'}\nexpose: {listen: ':9000'}\n", []string{"line 2", "expose.listen"}},
		{"web config missing", "expose: {web_config_file: /nonexistent/web.yml}\n", []string{"line 1", "expose.web_config_file", "no such file"}},
		{"unknown scrape protocol", "scrape_protocols: [PrometheusText0.0.4, Proto]\n", []string{"line 1", "scrape_protocols", `unknown scrape protocol "Proto"`}},
		{"scrape protocol twice", "jobs:\n  j:\n    targets: [{url: 'http://h:1/'}]\n    scrape_protocols: [PrometheusProto, PrometheusProto]\n", []string{"line 4", "jobs.j.scrape_protocols", "PrometheusProto twice"}},
		{"no scrape protocols", "jobs:\n  j:\n    targets: [{url: 'http://h:1/'}]\n    scrape_protocols: []\n", []string{"line 4", "jobs.j.scrape_protocols", "must not be empty"}},
		{"OpenMetrics 2.0", "scrape_protocols: [OpenMetricsText2.0.0]\n", []string{"line 1", "OpenMetricsText2.0.0", "not read"}},
		{"http client", "jobs:\n  j:\n    targets: [{url: 'http://h:1/'}]\n    basic_auth: {username: u, password: p, password_file: /f}\n", []string{"jobs.j", "password"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestCentralWithoutGateway(t *testing.T) {
	c, err := Parse([]byte("max_age: 90s\nembedded_stream: {store_dir: /tmp/x}\nexpose: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RequireCentral(); err != nil {
		t.Fatalf("embedded stream and expose should do: %v", err)
	}
	es, r := c.EmbeddedStream, c.ReceiverStreams[0]
	if es.Listen != DefaultEmbeddedListen || es.ClusterID != DefaultEmbeddedClusterID || es.MaxAge.D() != 90*time.Second {
		t.Errorf("embedded_stream defaults: %+v", es)
	}
	if r == nil || r.URLs.String() != "nats://127.0.0.1:4222" || r.ClusterID != es.ClusterID || r.ClientID == "" || r.DurableName == "" || r.Topic != "prometheus" {
		t.Errorf("derived receiver_stream: %+v", r)
	}
	if e := c.Expose; e.Listen != DefaultExposeListen || e.Path != "/metrics" || !e.KeepTimestamps() {
		t.Errorf("expose defaults: %+v", e)
	}
	c, err = Parse([]byte("embedded_stream: {listen: '0.0.0.0:4333', store_dir: memory}\nexpose: {timestamps: false}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ReceiverStreams[0].URLs.String(); got != "nats://127.0.0.1:4333" {
		t.Errorf("receiver dials %q", got)
	}
	if c.Expose.KeepTimestamps() {
		t.Error("timestamps: false ignored")
	}
}

func TestMonitorPort(t *testing.T) {
	c, err := Parse([]byte("monitor_port: 9999\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Monitor.Listen != ":9999" {
		t.Errorf("monitor_port 9999 gives listen %q", c.Monitor.Listen)
	}
}

func TestRequire(t *testing.T) {
	c, err := Parse([]byte("push_gateway: {url: 'http://127.0.0.1:9091'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RequireEdge(); err == nil || !strings.Contains(err.Error(), "poller_stream") || !strings.Contains(err.Error(), "jobs") {
		t.Errorf("RequireEdge = %v", err)
	}
	if err := c.RequireCentral(); err == nil || !strings.Contains(err.Error(), "receiver_stream or embedded_stream") {
		t.Errorf("RequireCentral = %v", err)
	}
	c, err = Parse([]byte("receiver_stream: {cluster_id: c, client_id: d, urls: 'nats://h:1'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RequireCentral(); err == nil || !strings.Contains(err.Error(), "push_gateway, expose or remote_write") {
		t.Errorf("RequireCentral without a sink = %v", err)
	}
}

// TestSecrets checks that inline secrets are accepted with a warning that does not
// contain them, and that the redacted dump hides them.
func TestSecrets(t *testing.T) {
	const secret = "hunter2-very-secret"
	c, err := Parse([]byte("jobs:\n  j:\n    targets: [{url: 'https://h:1/'}]\n    basic_auth: {username: u, password: " + secret + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "basic_auth.password") {
		t.Errorf("warnings = %q", c.Warnings)
	}
	out, err := c.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range c.Warnings {
		if strings.Contains(w, secret) {
			t.Errorf("warning shows the secret: %q", w)
		}
	}
	if strings.Contains(string(out), secret) {
		t.Errorf("redacted config shows the secret:\n%s", out)
	}
	if !strings.Contains(string(out), "<secret>") {
		t.Errorf("redacted config does not mark the secret:\n%s", out)
	}
}

// TestRelativeFiles checks that file paths resolve against the config's directory.
func TestRelativeFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte("jobs:\n  j:\n    targets: [{url: 'https://h:1/'}]\n    bearer_token_file: token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// Validation turns bearer_token_file into authorization.credentials_file, as Prometheus does.
	if a := c.Jobs["j"].HTTPClientConfig.Authorization; a == nil || a.CredentialsFile != filepath.Join(dir, "token") {
		t.Errorf("authorization = %+v", a)
	}
}

func TestRemoteWrite(t *testing.T) {
	c, err := Parse([]byte(`receiver_stream: {cluster_id: c, client_id: d, urls: 'nats://h:1'}
remote_write:
  - url: http://prom.example.net:9090/api/v1/write
  - url: https://mimir.example.net/api/v1/push
    name: mimir
    protobuf_message: io.prometheus.write.v2.Request
    headers: {X-Scope-OrgID: fleet}
    basic_auth: {username: u, password: s3cr3t}
    queue_config: {max_samples_per_send: 5000, max_shards: 2, retry_on_http_429: false}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RequireCentral(); err != nil {
		t.Errorf("remote_write is a sink: %v", err)
	}
	a, b := c.RemoteWrite[0], c.RemoteWrite[1]
	if a.Name != "prom.example.net:9090/api/v1/write" || a.ProtobufMessage != RemoteWriteV1 || a.RemoteTimeout != DefaultRemoteTimeout ||
		a.QueueConfig.MaxSamplesPerSend != DefaultMaxSamplesPerSend || a.QueueConfig.MaxShards != DefaultRemoteMaxShards ||
		!*a.QueueConfig.RetryOnRateLimit || !a.HTTPClientConfig.FollowRedirects {
		t.Errorf("defaults: %+v", a)
	}
	if b.Name != "mimir" || b.ProtobufMessage != RemoteWriteV2 || b.QueueConfig.MaxSamplesPerSend != 5000 ||
		b.QueueConfig.MaxShards != 2 || *b.QueueConfig.RetryOnRateLimit || b.Headers["X-Scope-OrgID"] != "fleet" {
		t.Errorf("values: %+v", b)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "remote_write[1].basic_auth.password") || strings.Contains(c.Warnings[0], "s3cr3t") {
		t.Errorf("warnings = %q", c.Warnings)
	}

	_, err = Parse([]byte(`remote_write:
  - url: http://a:1/w
    protobuf_message: v3
  - url: ftp://b/w
    headers: {Content-Type: x}
  - url: http://a:1/w
    queue_config: {max_shards: -1, min_backoff: 10s, max_backoff: 1s}
    send_exemplars: true
`))
	if err == nil {
		t.Fatal("bad remote_write accepted")
	}
	msg := err.Error()
	for _, want := range []string{"send_exemplars", "line 8"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	_, err = Parse([]byte(`remote_write:
  - url: http://a:1/w
    protobuf_message: v3
  - url: ftp://b/w
    headers: {Content-Type: x}
  - url: http://a:1/w
    queue_config: {max_shards: -1, min_backoff: 10s, max_backoff: 1s}
`))
	if err == nil {
		t.Fatal("bad remote_write accepted")
	}
	msg = err.Error()
	for _, want := range []string{
		"remote_write[0].protobuf_message", `"v3"`, "line 3",
		"remote_write[1].url", "remote_write[1].headers", "Content-Type",
		"remote_write[2].name", "remote_write[2].queue_config.max_shards", "min_backoff",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
}

func TestTransports(t *testing.T) {
	c, err := Load("testdata/legacy-sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.PollerStream.Transport != TransportSTAN || c.ReceiverStreams[0].Transport != TransportSTAN {
		t.Errorf("legacy sample: transports %q, %q, want stan", c.PollerStream.Transport, c.ReceiverStreams[0].Transport)
	}
	if len(c.ReceiverStreams) != 1 {
		t.Errorf("receiver_stream as a mapping: ReceiverStreams %v", c.ReceiverStreams)
	}

	c, err = Parse([]byte(`scrape_interval: 30s
max_age: 5m
poller_stream:
  transport: jetstream
  stream: PROMETHEUS
  urls: nats://edge:s3cr3t@nats.dc1:4222
  create_stream: true
  tls: {insecure_skip_verify: true}
receiver_stream:
  - {cluster_id: global, client_id: drain, urls: 'nats://nats.dc2:4222'}
  - transport: jetstream
    stream: PROMETHEUS
    urls: nats://nats.dc2:4222
    topic: prom.global
    client_id: drain
    max_inflight: 64
    ack_wait: 500ms
    create_stream: {replicas: 3}
`))
	if err != nil {
		t.Fatal(err)
	}
	p := c.PollerStream
	if !p.IsJetStream() || p.StreamName != "PROMETHEUS" || p.CreateStream != (CreateStream{Enabled: true, Replicas: 1}) || p.Topic != DefaultTopic || p.Subjects() != "prometheus.>" || p.TLS == nil {
		t.Errorf("poller_stream: %+v", p)
	}
	if got, want := p.Describe(), "jetstream stream PROMETHEUS subjects prometheus.> at nats://edge:xxxxx@nats.dc1:4222 (created if missing, 1 replica)"; got != want {
		t.Errorf("Describe:\n got %s\nwant %s", got, want)
	}
	if len(c.ReceiverStreams) != 2 {
		t.Fatalf("receiver_stream as a list: %v", c.ReceiverStreams)
	}
	r := c.ReceiverStreams[1]
	if !r.IsJetStream() || r.DurableName != "drain" || r.MaxInflight != 64 || r.AckWait.D() != 500*time.Millisecond || r.Shards != 1 ||
		r.CreateStream != (CreateStream{Enabled: true, Replicas: 3}) {
		t.Errorf("receiver_stream[1]: %+v", r)
	}
	if c.DuplicateWindow() != 2*time.Minute {
		t.Errorf("duplicate window %v, want the server's 2m (above the 30s interval)", c.DuplicateWindow())
	}
	want := []string{
		"receiver_stream[0]: stan channel prometheus of cluster global at nats://nats.dc2:4222, durable drain",
		"receiver_stream[1]: jetstream stream PROMETHEUS subjects prom.global.> at nats://nats.dc2:4222 (created if missing, 3 replicas), durable drain",
	}
	if got := c.DescribeReceivers(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("DescribeReceivers:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	out, err := c.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "s3cr3t") {
		t.Errorf("redacted config shows the URL's password:\n%s", out)
	}
	for _, w := range []string{"receiver_stream:\n  - transport: stan", "  - transport: jetstream\n", "stream: PROMETHEUS", "create_stream:\n    replicas: 1\n", "create_stream:\n      replicas: 3\n"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("redacted config lacks %q:\n%s", w, out)
		}
	}

	c, err = Parse([]byte("scrape_interval: 60s\nmax_age: 80\nembedded_stream: {store_dir: memory}\nexpose: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	// The embedded server serves both transports; its drain consumes both.
	if len(c.ReceiverStreams) != 2 || c.ReceiverStreams[0].Transport != TransportSTAN ||
		c.ReceiverStreams[1].Transport != TransportJetStream || c.ReceiverStreams[1].StreamName != DefaultJetStreamName || c.ReceiverStreams[1].CreateStream.Replicas != 1 {
		t.Errorf("receiver streams from embedded_stream: %+v", c.ReceiverStreams)
	}
	if got := c.DescribeReceivers(); len(got) != 2 || !strings.HasPrefix(got[0], "receiver_stream (from embedded_stream): stan channel prometheus") ||
		!strings.HasPrefix(got[1], "receiver_stream (from embedded_stream): jetstream stream PROMETHEUS subjects prometheus.>") {
		t.Errorf("DescribeReceivers: %q", got)
	}
	c, err = Parse([]byte("embedded_stream: {store_dir: memory, jetstream: false}\nexpose: {}\n"))
	if err != nil || len(c.ReceiverStreams) != 1 || c.ReceiverStreams[0].Transport != TransportSTAN {
		t.Errorf("embedded_stream without JetStream: %v %v", c.ReceiverStreams, err)
	}
	c, err = Parse([]byte("scrape_interval: 60s\nmax_age: 80\nembedded_stream: {store_dir: memory}\nexpose: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.DuplicateWindow() != 80*time.Second {
		t.Errorf("duplicate window %v, want max_age 80s (the server refuses more)", c.DuplicateWindow())
	}
}

// TestTransportErrors checks the keys that depend on the transport, and receiver_stream
// as a list: every problem names its key (with the entry's index) and line.
func TestTransportErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"unknown transport", "poller_stream: {transport: kafka, cluster_id: c, urls: 'nats://h:1'}\n",
			[]string{"line 1", "poller_stream.transport", `"kafka"`, "stan or jetstream"}},
		{"cluster_id for jetstream", "poller_stream:\n  transport: jetstream\n  stream: S\n  cluster_id: c\n  urls: 'nats://h:1'\n",
			[]string{"line 4", "poller_stream.cluster_id", "means nothing for transport jetstream"}},
		{"queue_group for jetstream", "receiver_stream:\n  transport: jetstream\n  stream: S\n  client_id: d\n  queue_group: q\n  urls: 'nats://h:1'\n",
			[]string{"line 5", "receiver_stream.queue_group", "durable_name"}},
		{"stream for stan", "poller_stream:\n  cluster_id: c\n  urls: 'nats://h:1'\n  stream: S\n  create_stream: true\n",
			[]string{"line 4", "poller_stream.stream", "line 5", "poller_stream.create_stream", "transport stan"}},
		{"replicas for stan", "poller_stream:\n  cluster_id: c\n  urls: 'nats://h:1'\n  create_stream: {replicas: 3}\n",
			[]string{"line 4", "poller_stream.create_stream", "means nothing for transport stan (replicas included)"}},
		{"replicas above 5", "poller_stream:\n  transport: jetstream\n  stream: S\n  urls: 'nats://h:1'\n  create_stream: {replicas: 7}\n",
			[]string{"line 5", "poller_stream.create_stream.replicas", "7: want 1 to 5"}},
		{"replicas 0", "receiver_stream:\n  - {cluster_id: c, client_id: d, urls: 'nats://h:1'}\n  - transport: jetstream\n    stream: S\n    client_id: d\n    urls: 'nats://h:1'\n    create_stream:\n      replicas: 0\n",
			[]string{"line 8", "receiver_stream[1].create_stream.replicas", "0: want 1 to 5"}},
		{"replicas not a number", "poller_stream:\n  transport: jetstream\n  stream: S\n  urls: 'nats://h:1'\n  create_stream:\n    replicas: three\n",
			[]string{"line 6", "poller_stream.create_stream.replicas", "three"}},
		{"create_stream: unknown key", "poller_stream:\n  transport: jetstream\n  stream: S\n  urls: 'nats://h:1'\n  create_stream:\n    replica: 3\n",
			[]string{"line 6", "poller_stream.create_stream.replica", "unknown key"}},
		{"create_stream: neither boolean nor mapping", "poller_stream:\n  transport: jetstream\n  stream: S\n  urls: 'nats://h:1'\n  create_stream: [3]\n",
			[]string{"line 5", "poller_stream.create_stream", "want true, false or a mapping such as {replicas: 3}, got a list"}},
		{"create_stream: not a boolean", "poller_stream:\n  transport: jetstream\n  stream: S\n  urls: 'nats://h:1'\n  create_stream: 3\n",
			[]string{"line 5", "poller_stream.create_stream", `got "3"`}},
		{"jetstream without stream", "poller_stream: {transport: jetstream, urls: 'nats://h:1'}\n",
			[]string{"line 1", "poller_stream.stream", "required"}},
		{"bad stream name", "poller_stream:\n  transport: jetstream\n  stream: a.b\n  urls: 'nats://h:1'\n",
			[]string{"line 3", "poller_stream.stream", `"a.b"`}},
		{"bad subject prefix", "poller_stream:\n  transport: jetstream\n  stream: S\n  topic: a..b\n  urls: 'nats://h:1'\n",
			[]string{"line 4", "poller_stream.topic", "none empty"}},
		{"jetstream receiver without durable", "receiver_stream: {transport: jetstream, stream: S, urls: 'nats://h:1'}\n",
			[]string{"line 1", "receiver_stream.durable_name", "required (or client_id)"}},
		{"bad durable", "receiver_stream: {transport: jetstream, stream: S, durable_name: a.b, urls: 'nats://h:1'}\n",
			[]string{"line 1", "receiver_stream.durable_name", `"a.b"`}},
		{"list: keys by index", "receiver_stream:\n  - {cluster_id: c, client_id: d, urls: 'nats://h:1'}\n  - transport: jetstream\n    cluster_id: c\n    urls: 'nats://h:1'\n",
			[]string{"line 4", "receiver_stream[1].cluster_id", "line 3", "receiver_stream[1].stream", "required"}},
		{"list: unknown key", "receiver_stream:\n  - cluster_id: c\n    client_id: d\n    urls: 'nats://h:1'\n    stream_name: S\n",
			[]string{"line 5", "receiver_stream[0].stream_name", "unknown key"}},
		{"unknown key in a mapping", "receiver_stream:\n  cluster_id: c\n  client_id: d\n  urls: 'nats://h:1'\n  tls: {ca_file: x}\n",
			[]string{"line 5", "receiver_stream.tls.ca_file", "unknown key"}},
		{"list: bad value", "receiver_stream:\n  - cluster_id: c\n    client_id: d\n    urls: 'nats://h:1'\n    ack_wait: soon\n",
			[]string{"line 5", "receiver_stream[0].ack_wait", `"soon"`}},
		{"list: not a mapping", "receiver_stream:\n  - nats://h:1\n", []string{"line 2", "want a stream section"}},
		{"list: same stream twice", "receiver_stream:\n  - {cluster_id: c, client_id: d, urls: 'nats://h:1,nats://h:2'}\n  - {cluster_id: c, client_id: e, urls: 'nats://h:2,nats://h:1'}\n",
			[]string{"line 3", "receiver_stream[1]", "same stan topic \"prometheus\"", "receiver_stream[0]"}},
		{"list: shards differ", "receiver_stream:\n  - {cluster_id: c, client_id: d, urls: 'nats://h:1', shards: 2, shard: 1}\n  - {transport: jetstream, stream: S, client_id: d, urls: 'nats://h:1', shards: 2}\n",
			[]string{"line 3", "receiver_stream[1].shards", "shard 0 of 2 differs from receiver_stream[0]'s shard 1 of 2"}},
		{"list: one client id twice", "receiver_stream:\n  - {cluster_id: c, client_id: d, urls: 'nats://h:1'}\n  - {cluster_id: c, client_id: d, urls: 'nats://h:1', topic: other}\n",
			[]string{"line 3", "receiver_stream[1].client_id", "one connection"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}

	// Accepted: the same topic on two transports (a migration), merge keys in a list,
	// and a JetStream receiver keyed by durable_name alone.
	c, err := Parse([]byte(`receiver_stream:
  - &stan {cluster_id: c, client_id: d, urls: 'nats://h:1'}
  - <<: *stan
    cluster_id: ""
    transport: jetstream
    stream: S
    durable_name: js
`))
	if err != nil {
		t.Fatal(err)
	}
	if r := c.ReceiverStreams[1]; r.DurableName != "js" || r.Topic != "prometheus" || r.URLs.String() != "nats://h:1" {
		t.Errorf("merged entry: %+v", r)
	}
}

func TestShards(t *testing.T) {
	c, err := Parse([]byte("receiver_stream: {cluster_id: c, client_id: d, urls: 'nats://h:1', shards: 3, shard: 2}\nexpose: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ReceiverStreams[0].Durable(); got != "d-shard-2-of-3" {
		t.Errorf("sharded durable = %q", got)
	}
	c, err = Parse([]byte("receiver_stream: {cluster_id: c, client_id: d, urls: 'nats://h:1'}\nexpose: {}\n"))
	if err != nil || c.ReceiverStreams[0].Shards != 1 || c.ReceiverStreams[0].Durable() != "d" {
		t.Errorf("default: %+v %v", c.ReceiverStreams[0], err)
	}
	for _, bad := range []string{"shards: 3, shard: 3", "shards: -1", "shard: 1", "shards: 2, queue_group: q"} {
		_, err := Parse([]byte("receiver_stream: {cluster_id: c, client_id: d, urls: 'nats://h:1', " + bad + "}\n"))
		if err == nil || !strings.Contains(err.Error(), "receiver_stream.shard") {
			t.Errorf("%s: %v, want an error naming the key", bad, err)
		}
	}
}

// TestQueueGroupWithHistory: a queue group cannot keep a target's scrapes in order, which
// a remote_write sink needs: refused, naming the key and shards; with state sinks only it
// is accepted (the README says what it costs them).
func TestQueueGroupWithHistory(t *testing.T) {
	base := "receiver_stream: {cluster_id: c, client_id: d, urls: 'nats://h:1', queue_group: q}\n"
	_, err := Parse([]byte(base + "remote_write:\n  - url: http://127.0.0.1:9090/api/v1/write\n"))
	if err == nil || !strings.Contains(err.Error(), "receiver_stream.queue_group") || !strings.Contains(err.Error(), "use shards") || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("queue_group with remote_write: %v, want an error naming the key, its line and shards", err)
	}
	if _, err := Parse([]byte(base + "expose: {}\n")); err != nil {
		t.Errorf("queue_group with expose: %v", err)
	}
}

// TestTrustWarning: a trusted key bound to jobs only is accepted, with a warning that
// says what a stolen one could do; bound to publishers it is not warned about.
func TestTrustWarning(t *testing.T) {
	base := "receiver_stream: {cluster_id: c, client_id: d, urls: 'nats://h:1'}\nexpose: {}\ntrust:\n  - {public_key: UD466L6EBCM3YY5HEGHJANNTN4LSKTSUXTH7RILHCKEQMQHTBNLHJJXT, jobs: [node]"
	c, err := Parse([]byte(base + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "trust[0] binds its key to jobs only") {
		t.Errorf("warnings %q", c.Warnings)
	}
	c, err = Parse([]byte(base + ", publishers: [edge1], sites: [ams1], labels: {dc: ams1}}\n"))
	if err != nil || len(c.Warnings) != 0 || c.Trust[0].Labels["dc"] != "ams1" || c.Trust[0].Sites[0] != "ams1" {
		t.Errorf("bound key: %+v %q %v", c.Trust[0], c.Warnings, err)
	}
}

// TestEmbeddedJetStreamConsumed: with embedded_stream (serving JetStream, the default)
// and a receiver_stream naming only its channel, the drain consumes the JetStream stream
// too, with that section's settings; a receiver_stream pointing elsewhere leaves the
// embedded JetStream unread and is refused, saying how to fix it.
func TestEmbeddedJetStreamConsumed(t *testing.T) {
	c, err := Parse([]byte("embedded_stream: {listen: '127.0.0.1:4299', cluster_id: central}\nexpose: {}\nreceiver_stream: {cluster_id: central, client_id: d, urls: 'nats://127.0.0.1:4299', max_inflight: 4096, shards: 2, shard: 1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.ReceiverStreams) != 2 || !c.ReceiverStreams[1].IsJetStream() || c.ReceiverStreams[1].MaxInflight != 4096 ||
		c.ReceiverStreams[1].Shard != 1 || c.ReceiverStreams[1].StreamName != DefaultJetStreamName {
		t.Errorf("receivers %+v", c.ReceiverStreams)
	}
	if d := c.DescribeReceivers(); len(d) != 2 || !strings.Contains(d[1], "embedded_stream's JetStream") {
		t.Errorf("described %q", d)
	}
	_, err = Parse([]byte("embedded_stream: {listen: '127.0.0.1:4299'}\nexpose: {}\nreceiver_stream: {cluster_id: c, client_id: d, urls: 'nats://elsewhere:4222'}\n"))
	if err == nil || !strings.Contains(err.Error(), "embedded_stream.jetstream") {
		t.Errorf("receiver elsewhere: %v", err)
	}
	if _, err := Parse([]byte("embedded_stream: {listen: '127.0.0.1:4299', jetstream: false}\nexpose: {}\nreceiver_stream: {cluster_id: c, client_id: d, urls: 'nats://elsewhere:4222'}\n")); err != nil {
		t.Errorf("without embedded JetStream: %v", err)
	}
}

// TestRedactedJobs: the printed config holds every job once, under one jobs key, with
// the keys around it, whatever the number of jobs (they are encoded one by one).
func TestRedactedJobs(t *testing.T) {
	src := "poller_stream: {cluster_id: c, urls: 'nats://127.0.0.1:4222'}\njobs:\n"
	for i := range 30 {
		src += fmt.Sprintf("  j%d:\n    targets: [{name: t%d, url: 'http://127.0.0.1:%d/metrics'}]\n", i, i, 9000+i)
	}
	c, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(out), "\njobs:"); n != 1 {
		t.Errorf("%d jobs keys", n)
	}
	back, err := Parse(out)
	if err != nil {
		t.Fatalf("the printed config does not load: %v\n%s", err, out)
	}
	if len(back.Jobs) != 30 || back.Jobs["j17"].Targets[0].URL != "http://127.0.0.1:9017/metrics" || back.PollerStream.ClusterID != "c" {
		t.Errorf("printed config read back: %d jobs", len(back.Jobs))
	}
}

// TestQueueConfig: Prometheus's queue_config and metadata_config keys, with Prometheus's
// defaults where they apply (batch_send_deadline 5s; an explicit 0 sends at once), and
// the keys that cannot apply here refused with their line and a reason.
func TestQueueConfig(t *testing.T) {
	c, err := Parse([]byte(`receiver_stream: {cluster_id: c, client_id: d, urls: 'nats://h:1'}
remote_write:
  - url: http://a:1/w
  - url: http://b:1/w
    queue_config: {batch_send_deadline: 0, sample_age_limit: 10m}
    metadata_config: {send: false, send_interval: 30s, max_samples_per_send: 100}
`))
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.RemoteWrite[0], c.RemoteWrite[1]
	if a.QueueConfig.BatchSendDeadline != DefaultBatchSendDeadline || a.QueueConfig.SampleAgeLimit != 0 ||
		!*a.MetadataConfig.Send || a.MetadataConfig.SendInterval != DefaultMetadataSendInterval ||
		a.MetadataConfig.MaxSamplesPerSend != DefaultMetadataMaxSamplesPerSend {
		t.Errorf("defaults: %+v %+v", a.QueueConfig, a.MetadataConfig)
	}
	if b.QueueConfig.BatchSendDeadline != 0 || b.QueueConfig.SampleAgeLimit != Duration(10*time.Minute) ||
		*b.MetadataConfig.Send || b.MetadataConfig.SendInterval != Duration(30*time.Second) || b.MetadataConfig.MaxSamplesPerSend != 100 {
		t.Errorf("values: %+v %+v", b.QueueConfig, b.MetadataConfig)
	}

	// A short ack_wait: the default deadline stays well under it, a longer one is refused.
	c, err = Parse([]byte(`receiver_stream: {cluster_id: c, client_id: d, urls: 'nats://h:1', ack_wait: 2s}
remote_write:
  - url: http://a:1/w
`))
	if err != nil {
		t.Fatal(err)
	}
	if d := c.RemoteWrite[0].QueueConfig.BatchSendDeadline; d != Duration(500*time.Millisecond) {
		t.Errorf("batch_send_deadline with ack_wait 2s = %s, want 500ms", d)
	}
	_, err = Parse([]byte(`receiver_stream: {cluster_id: c, client_id: d, urls: 'nats://h:1', ack_wait: 2s}
remote_write:
  - url: http://a:1/w
    queue_config: {batch_send_deadline: 5s}
`))
	if err == nil || !strings.Contains(err.Error(), "line 4") || !strings.Contains(err.Error(), "ack_wait") {
		t.Errorf("batch_send_deadline above ack_wait: %v, want it refused at line 4", err)
	}

	_, err = Parse([]byte(`receiver_stream: {cluster_id: c, client_id: d, urls: 'nats://h:1'}
remote_write:
  - url: http://a:1/w
    queue_config:
      capacity: 10000
      min_shards: 1
      sample_age_limit: -1s
`))
	if err == nil {
		t.Fatal("capacity and min_shards accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		"line 5", "remote_write[0].queue_config.capacity", "in the stream",
		"line 6", "remote_write[0].queue_config.min_shards", "reshard",
		"line 7", "sample_age_limit",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
}

func TestBodyCompression(t *testing.T) {
	c, err := Load("testdata/legacy-sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.PollerStream.BodyCompression != BodyCompressionZstd {
		t.Errorf("legacy sample: body_compression %q, want the default %q", c.PollerStream.BodyCompression, BodyCompressionZstd)
	}
	c, err = Parse([]byte("poller_stream: {cluster_id: c, urls: 'nats://x:4222', body_compression: zstd_dictionary}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.PollerStream.BodyCompression != BodyCompressionZstdDictionary {
		t.Errorf("body_compression %q, want %q", c.PollerStream.BodyCompression, BodyCompressionZstdDictionary)
	}
}
