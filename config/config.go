// Package config is the YAML schema shared by scrape-once and the drain: one struct tree,
// defaults applied in one place, and validation that reports every problem with its key
// and line. One file may serve both binaries; each validates every key present and then
// requires only its own sections (RequireEdge, RequireCentral).
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/alecthomas/units"
	promcfg "github.com/prometheus/common/config"
	"gopkg.in/yaml.v3"
)

// Defaults, applied by Load where a key is absent.
const (
	DefaultScrapeInterval    = Duration(60e9)
	DefaultMaxScrapeTimeout  = Duration(10e9)
	DefaultScrapeConcurrency = 64
	DefaultBodySizeLimit     = 32 * units.MiB
	DefaultTopic             = "prometheus"
	DefaultClientIDPrefix    = "scrape-once"
	DefaultConnectTimeout    = Duration(5e9)
	DefaultMaxInflight       = 1024
	DefaultAckWait           = Duration(30e9)
	DefaultMaxClockSkew      = Duration(30e9)
	DefaultPushTimeout       = Duration(10e9)
	DefaultPushWorkers       = 8
	// Remote-write defaults: Prometheus 3's where it has one.
	DefaultRemoteTimeout     = Duration(30e9)
	DefaultMaxSamplesPerSend = 2000
	DefaultRemoteMaxShards   = 4
	DefaultRemoteMinBackoff  = Duration(30e6)
	DefaultRemoteMaxBackoff  = Duration(5e9)
	// DefaultBatchSendDeadline is Prometheus's: a lone scrape waits up to this long for
	// others to share its request (an explicit 0 sends at once).
	DefaultBatchSendDeadline         = Duration(5e9)
	DefaultMetadataSendInterval      = Duration(60e9)
	DefaultMetadataMaxSamplesPerSend = 500
	// RemoteWriteV1 and RemoteWriteV2 are the protobuf_message values: remote-write 1.0,
	// the default, and 2.0.
	RemoteWriteV1            = "prometheus.WriteRequest"
	RemoteWriteV2            = "io.prometheus.write.v2.Request"
	DefaultMonitorListen     = ":9898"
	DefaultExposeListen      = ":9899"
	DefaultExposePath        = "/metrics"
	DefaultEmbeddedListen    = "127.0.0.1:4222"
	DefaultEmbeddedStoreDir  = "/var/lib/prometheus-streams/stream"
	DefaultEmbeddedClusterID = "prometheus_streams"
	DefaultDrainClientID     = "prometheus_streams_drain"
	// DefaultJetStreamName is the JetStream stream the embedded server's drain creates.
	DefaultJetStreamName = "PROMETHEUS"
	// DefaultRunTimeoutRatio sets a run's deadline just under the interval, so a run that
	// hangs ends before the timer's next tick and no tick is skipped.
	DefaultRunTimeoutRatio = 0.9
)

// Config is the whole file.
type Config struct {
	Verbose bool   `yaml:"verbose"`
	Debug   bool   `yaml:"debug"`
	LogFile string `yaml:"logfile"`

	// Identity names this host as a publisher; the host name by default.
	Identity string `yaml:"identity"`
	// Site is an optional site or data-centre label carried in every envelope.
	Site string `yaml:"site"`

	ScrapeInterval Duration `yaml:"scrape_interval"`
	// ScrapeTimeout is the default per-target timeout: the smaller of 10s and the interval.
	ScrapeTimeout Duration `yaml:"scrape_timeout"`
	// Histograms are the formats asked of targets and what is taken of their
	// histograms: every job's unless the job sets its own.
	Histograms `yaml:",inline"`
	// RunTimeout bounds a whole scrape-once run, acks included: 90% of the interval.
	RunTimeout Duration `yaml:"run_timeout"`
	// ScrapeConcurrency bounds how many targets scrape-once scrapes at once.
	ScrapeConcurrency int `yaml:"scrape_concurrency"`
	// MaxAge is how old a scrape may be before the central side stops serving it.
	MaxAge Duration `yaml:"max_age"`
	// MaxClockSkew is how far ahead of the drain's clock a scrape may be stamped; a scrape
	// further ahead (an edge whose clock is wrong) is refused.
	MaxClockSkew Duration `yaml:"max_clock_skew"`

	PollerStream *Stream `yaml:"poller_stream"`
	// ReceiverStreams are where the drain consumes: receiver_stream is one stream
	// section or a list of them (e.g. a STAN channel and a JetStream stream while the
	// edges move from one to the other). Derived from embedded_stream when absent.
	ReceiverStreams Streams      `yaml:"receiver_stream"`
	PushGateway     *PushGateway `yaml:"push_gateway"`
	// RemoteWrite lists remote-write receivers, each one more sink, as in Prometheus.
	RemoteWrite []*RemoteWrite `yaml:"remote_write"`

	// Monitor is the drain's own HTTP listener: /metrics and /healthz.
	Monitor *Monitor `yaml:"monitor"`
	// MonitorPort is the earlier system's key: monitor.listen on all interfaces.
	MonitorPort int `yaml:"monitor_port"`
	// Expose makes the drain serve the federated metrics itself.
	Expose *Expose `yaml:"expose"`
	// EmbeddedStream makes the drain run a NATS Streaming server in-process.
	EmbeddedStream *EmbeddedStream `yaml:"embedded_stream"`

	Jobs map[string]*Job `yaml:"jobs"`

	// TLS is the earlier system's top-level TLS to NATS, for stream sections that set none.
	TLS *TLS `yaml:"tls"`
	// Signing makes scrape-once sign every envelope.
	Signing *Signing `yaml:"signing"`
	// Trust lists the publishers the drain accepts; when set, everything else is rejected.
	Trust []*TrustedPublisher `yaml:"trust"`

	// Warnings are non-fatal findings of Load (e.g. an inline secret), for the caller to log.
	Warnings []string `yaml:"-"`
	// Path is the file the config was loaded from, if any.
	Path string `yaml:"-"`

	monitorBoth     bool // monitor and monitor_port both set: an error
	receiverList    bool // receiver_stream is written as a list
	receiverDerived bool // receiver_stream comes from embedded_stream
	// jetStreamDerived is the index of the receiver stream added to consume the embedded
	// server's JetStream beside a receiver_stream that names only its channel; 0: none.
	jetStreamDerived int
}

// Stream is a connection to NATS Streaming or JetStream, and what is published or
// consumed there.
type Stream struct {
	// Transport is TransportSTAN (the default) or TransportJetStream.
	Transport string `yaml:"transport"`
	// ClusterID is the NATS Streaming cluster ID (stan only).
	ClusterID string  `yaml:"cluster_id"`
	URLs      URLList `yaml:"urls"`
	// Topic is the STAN channel, or the JetStream subject prefix: each target's scrapes
	// go to <topic>.<job>.<instance>.
	Topic string `yaml:"topic"`
	// StreamName is the JetStream stream (jetstream only), which must capture <topic>.>.
	StreamName string `yaml:"stream"`
	// CreateStream lets scrape-once and the drain create the JetStream stream when it is
	// missing, with its number of replicas; without it they only check that it exists
	// and captures <topic>.>.
	CreateStream CreateStream `yaml:"create_stream"`
	// ClientID is the drain's durable client ID (STAN; with JetStream the default
	// durable_name); for scrape-once it is the prefix of the unique ID (STAN) or
	// connection name (JetStream) each run makes (prefix, host, random part).
	ClientID       string   `yaml:"client_id"`
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// BodyCompression is how scrape-once compresses the bodies it publishes:
	// BodyCompressionZstd (the default) or BodyCompressionZstdDictionary. The drain
	// ignores it: it reads both.
	BodyCompression string `yaml:"body_compression"`

	// TLS to NATS; the top-level tls when unset.
	TLS *TLS `yaml:"tls"`
	// Authentication to NATS, each secret from a file: user and password_file, or
	// token_file, or nkey_seed_file, or credentials_file (a .creds file: JWT and seed).
	User            string `yaml:"user"`
	PasswordFile    string `yaml:"password_file"`
	TokenFile       string `yaml:"token_file"`
	NKeySeedFile    string `yaml:"nkey_seed_file"`
	CredentialsFile string `yaml:"credentials_file"`

	// Consumer settings, read by the drain only.

	// DurableName names the durable subscription (STAN) or durable consumer
	// (JetStream); client_id by default.
	DurableName string `yaml:"durable_name"`
	// QueueGroup, when set, makes the subscription a durable queue group so several
	// drains share the channel (stan only: JetStream drains share by durable_name).
	QueueGroup string `yaml:"queue_group"`
	// MaxInflight is how many unacknowledged messages the server sends before waiting
	// (JetStream: the consumer's MaxAckPending).
	MaxInflight int `yaml:"max_inflight"`
	// AckWait is how long the server waits for an ack before redelivering.
	AckWait Duration `yaml:"ack_wait"`
	// Shards splits the targets among this many drains by a hash of job and instance;
	// Shard (0 to Shards-1) is this drain's share. Each shard has its own durable, so
	// every scrape of a target goes through one drain, in order.
	Shards int `yaml:"shards"`
	Shard  int `yaml:"shard"`
}

// Durable is the durable subscription's name: DurableName, and the shard when the
// targets are sharded, so each shard keeps its own position on the channel.
func (s *Stream) Durable() string {
	if s.Shards <= 1 {
		return s.DurableName
	}
	return fmt.Sprintf("%s-shard-%d-of-%d", s.DurableName, s.Shard, s.Shards)
}

// TLS configures TLS to a NATS server; the keys are the earlier system's.
type TLS struct {
	CA                 string `yaml:"ca"`
	Cert               string `yaml:"cert"`
	Key                string `yaml:"key"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Signing is the edge's signing key.
type Signing struct {
	// NKeySeedFile holds an NKey (ed25519) seed, as `nk -gen user` writes it.
	NKeySeedFile string `yaml:"nkey_seed_file"`
}

// TrustedPublisher is a public key the drain trusts, and what it may publish.
type TrustedPublisher struct {
	// PublicKey is the NKey public key (U...) of the publisher's seed.
	PublicKey string `yaml:"public_key"`
	// Jobs the key may publish; at least one.
	Jobs []string `yaml:"jobs"`
	// Instances, when set, are regular expressions (anchored) one of which each
	// instance the key publishes must match.
	Instances []string `yaml:"instances"`
	// Publishers, when set, are the publisher identities (the edge's identity) the key
	// may publish as; Sites likewise the site labels.
	Publishers []string `yaml:"publishers"`
	Sites      []string `yaml:"sites"`
	// Labels, when set, are static labels every message of the key must carry with
	// exactly these values.
	Labels map[string]string `yaml:"labels"`
}

// Monitor is an HTTP listener.
type Monitor struct {
	Listen string `yaml:"listen"`
	// WebConfigFile enables TLS and basic auth, in the Prometheus exporter-toolkit format.
	WebConfigFile string `yaml:"web_config_file"`
}

// Expose is the drain's own exposition endpoint.
type Expose struct {
	Listen        string `yaml:"listen"`
	Path          string `yaml:"path"`
	WebConfigFile string `yaml:"web_config_file"`
	// Timestamps stamps each sample with its scrape's time, as Prometheus's /federate
	// does; false serves samples without timestamps. See the README for the trade-off.
	Timestamps *bool `yaml:"timestamps"`
}

// KeepTimestamps reports whether samples are served with their scrape's time.
func (e *Expose) KeepTimestamps() bool { return e.Timestamps == nil || *e.Timestamps }

// EmbeddedStream is a NATS Streaming server run by the drain.
type EmbeddedStream struct {
	Listen    string `yaml:"listen"`
	ClusterID string `yaml:"cluster_id"`
	// StoreDir holds the channels on disk; "memory" keeps them in memory only.
	StoreDir string `yaml:"store_dir"`
	// Channel limits: by default max_age, so no scrape is kept past its use and no
	// message count or size limit drops a young one.
	MaxAge   Duration         `yaml:"max_age"`
	MaxMsgs  int              `yaml:"max_msgs"`
	MaxBytes units.Base2Bytes `yaml:"max_bytes"`
	// JetStream also serves JetStream on the same port (the default), with the stream
	// DefaultJetStreamName, so edges may publish with either transport.
	JetStream *bool `yaml:"jetstream"`
}

// ServesJetStream reports whether the embedded server serves JetStream too.
func (es *EmbeddedStream) ServesJetStream() bool { return es.JetStream == nil || *es.JetStream }

// PushGateway is the Push Gateway sink.
type PushGateway struct {
	URL string `yaml:"url"`
	// PublisherLabel, when set, adds the publisher's identity as a grouping label.
	PublisherLabel string `yaml:"publisher_label"`
	// Timeout bounds one request to the gateway.
	Timeout Duration `yaml:"timeout"`
	// Workers is how many targets are pushed at once.
	Workers int `yaml:"workers"`

	HTTPClientConfig promcfg.HTTPClientConfig `yaml:",inline"`
}

// RemoteWrite is one remote-write receiver: an entry of Prometheus's own remote_write
// list, with the keys that mean something here.
type RemoteWrite struct {
	URL string `yaml:"url"`
	// Name identifies the endpoint in metrics and logs; the URL's host and path by default.
	Name string `yaml:"name"`
	// ProtobufMessage is RemoteWriteV1 (the default) or RemoteWriteV2.
	ProtobufMessage string `yaml:"protobuf_message"`
	// RemoteTimeout bounds one request.
	RemoteTimeout Duration `yaml:"remote_timeout"`
	// Headers are sent with every request; the protocol's own headers are refused.
	Headers        map[string]string `yaml:"headers"`
	QueueConfig    QueueConfig       `yaml:"queue_config"`
	MetadataConfig MetadataConfig    `yaml:"metadata_config"`

	HTTPClientConfig promcfg.HTTPClientConfig `yaml:",inline"`
}

// MetadataConfig is how a remote-write sink sends the families' metadata (type, help,
// unit) in remote-write 1.0, as Prometheus's metadata_config. Remote-write 2.0 carries
// it on every series, as Prometheus does, whatever these say.
type MetadataConfig struct {
	// Send sends metadata (the default).
	Send *bool `yaml:"send"`
	// SendInterval is how often a family's metadata is sent again: it rides on the
	// first request with the family's samples after the interval (1m by default).
	SendInterval Duration `yaml:"send_interval"`
	// MaxSamplesPerSend bounds the metadata entries of one request (500 by default);
	// the rest ride on the next requests.
	MaxSamplesPerSend int `yaml:"max_samples_per_send"`
}

// QueueConfig is how a remote-write sink batches, parallelises and retries: the keys of
// Prometheus's queue_config, with their meaning, where they apply.
type QueueConfig struct {
	// MaxSamplesPerSend bounds one request; scrapes of several targets share a request.
	MaxSamplesPerSend int `yaml:"max_samples_per_send"`
	// BatchSendDeadline is how long a sender waits for a request to fill before it
	// sends it anyway (5s by default, as Prometheus); 0 sends at once.
	BatchSendDeadline Duration `yaml:"batch_send_deadline"`
	// MaxShards is how many requests are in flight at once.
	MaxShards int `yaml:"max_shards"`
	// MinBackoff and MaxBackoff bound the wait before a retry on 5xx, 429 and network
	// errors, doubling from one to the other while the receiver fails.
	MinBackoff Duration `yaml:"min_backoff"`
	MaxBackoff Duration `yaml:"max_backoff"`
	// RetryOnRateLimit retries on 429 Too Many Requests (the default), as on a 5xx.
	RetryOnRateLimit *bool `yaml:"retry_on_http_429"`
	// SampleAgeLimit, when set, drops scrapes older than it rather than write them.
	SampleAgeLimit Duration `yaml:"sample_age_limit"`

	// Keys of Prometheus's queue_config that cannot apply here, refused with a reason.
	Capacity  any `yaml:"capacity,omitempty"`
	MinShards any `yaml:"min_shards,omitempty"`
}

// Job is a group of targets scraped alike, with the options a Prometheus user expects.
type Job struct {
	Name    string            `yaml:"-"`
	Targets []*Target         `yaml:"targets"`
	Labels  map[string]string `yaml:"labels"`

	ScrapeTimeout Duration         `yaml:"scrape_timeout"`
	HonorLabels   bool             `yaml:"honor_labels"`
	SampleLimit   int              `yaml:"sample_limit"`
	LabelLimit    int              `yaml:"label_limit"`
	BodySizeLimit units.Base2Bytes `yaml:"body_size_limit"`
	// EnableCompression asks targets for gzip, as Prometheus does by default; off, they
	// are asked for the body as it is, which costs neither side a compression when the
	// target is on the same host or network.
	EnableCompression *bool `yaml:"enable_compression"`

	MetricRelabelConfigs RelabelConfigs `yaml:"metric_relabel_configs"`

	// Histograms are the job's scrape protocols and histogram settings; unset ones
	// are the top level's.
	Histograms `yaml:",inline"`

	HTTPClientConfig promcfg.HTTPClientConfig `yaml:",inline"`
}

// Compression reports enable_compression as resolved: on unless set false.
func (j *Job) Compression() bool { return j.EnableCompression == nil || *j.EnableCompression }

// Target is one endpoint to scrape.
type Target struct {
	// Name is the instance label; without it, the URL's host[:port] as written.
	Name   string            `yaml:"name"`
	URL    string            `yaml:"url"`
	Labels map[string]string `yaml:"labels"`
}

// Load reads and validates the file at path. A returned error lists every problem found,
// each naming its key and line. Relative file paths in it are relative to its directory,
// as in Prometheus.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := parse(b, dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.Path = path
	return c, nil
}

// Parse decodes and validates a config held in memory; relative paths in it are
// relative to the working directory.
func Parse(b []byte) (*Config, error) {
	return parse(b, "")
}

func parse(b []byte, dir string) (*Config, error) {
	// YAML is UTF-8, and a byte that is not would reach every message as a label or
	// the publisher. Each such line is an error; the rest of the file is still read
	// (with the bytes replaced) so that every other problem is reported with them.
	var encErrs []error
	if !utf8.Valid(b) {
		b, encErrs = invalidUTF8(b)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, errors.Join(append(encErrs, fmt.Errorf("parse yaml: %w", err))...)
	}
	kl := newKeyLines(&root)
	for i, err := range encErrs {
		encErrs[i] = kl.named(err)
	}

	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	// Values that do not decode are reported together with what validation finds in
	// the rest, so that one run shows every problem; validation says nothing of a key
	// that did not decode (it holds its zero value).
	var decodeErr error
	var undecoded []string
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, errors.Join(append(encErrs, kl.explain(err))...)
		}
		decodeErr, undecoded = kl.explain(err), kl.failedKeys(te)
	}
	c.receiverList = receiverIsList(&root)
	c.applyDefaults()
	if pg := c.PushGateway; pg != nil {
		setHTTPDefaults(kl, "push_gateway", &pg.HTTPClientConfig)
	}
	for i, rw := range c.RemoteWrite {
		if rw != nil {
			key := fmt.Sprintf("remote_write[%d]", i)
			setHTTPDefaults(kl, key, &rw.HTTPClientConfig)
			if _, set := kl.lines[key+".queue_config.batch_send_deadline"]; !set {
				rw.QueueConfig.BatchSendDeadline = c.defaultBatchSendDeadline()
			}
		}
	}
	for name, j := range c.Jobs {
		if j != nil {
			setHTTPDefaults(kl, "jobs."+name, &j.HTTPClientConfig)
		}
	}
	if dir != "" {
		c.resolvePaths(dir)
	}
	errs := slices.DeleteFunc(c.validate(), func(err error) bool { return under(err, undecoded) })
	if len(encErrs) > 0 || decodeErr != nil || len(errs) > 0 {
		all := append(encErrs, decodeErr)
		if len(errs) > 0 {
			all = append(all, kl.annotate(errs))
		}
		return nil, errors.Join(all...)
	}
	c.Warnings = append(c.secretWarnings(), c.trustWarnings()...)
	return c, nil
}

// invalidUTF8 returns b with every byte that is not UTF-8 replaced, and an error for
// each line that held one, naming the line and the byte (keyLines.named adds the key).
func invalidUTF8(b []byte) ([]byte, []error) {
	var errs []error
	for i, line := range bytes.SplitAfter(b, []byte("\n")) {
		if utf8.Valid(line) {
			continue
		}
		col := 1
		for rest := line; len(rest) > 0; col++ {
			r, n := utf8.DecodeRune(rest)
			if r == utf8.RuneError && n <= 1 {
				errs = append(errs, fmt.Errorf("line %d: byte %#x at column %d is not UTF-8: a config file is UTF-8 text (an escape such as \\u00e9 in a double-quoted string writes any character)", i+1, rest[0], col))
				break
			}
			rest = rest[n:]
		}
	}
	return bytes.ToValidUTF8(b, []byte("\uFFFD")), errs
}

// under reports whether err is a problem at or below one of keys.
func under(err error, keys []string) bool {
	var p problem
	if !errors.As(err, &p) {
		return false
	}
	for _, k := range keys {
		if p.path == k || strings.HasPrefix(p.path, k+".") || strings.HasPrefix(p.path, k+"[") {
			return true
		}
	}
	return false
}

// resolvePaths makes the file paths of the config relative to dir.
func (c *Config) resolvePaths(dir string) {
	for _, j := range c.Jobs {
		if j == nil {
			continue
		}
		// CA, cert, password and token files, as Prometheus resolves them.
		j.HTTPClientConfig.SetDirectory(dir)
	}
	if c.PushGateway != nil {
		c.PushGateway.HTTPClientConfig.SetDirectory(dir)
	}
	for _, rw := range c.RemoteWrite {
		if rw != nil {
			rw.HTTPClientConfig.SetDirectory(dir)
		}
	}
	if c.Monitor != nil {
		c.Monitor.WebConfigFile = promcfg.JoinDir(dir, c.Monitor.WebConfigFile)
	}
	if c.Expose != nil {
		c.Expose.WebConfigFile = promcfg.JoinDir(dir, c.Expose.WebConfigFile)
	}
	for _, s := range c.streams() {
		for _, f := range []*string{&s.PasswordFile, &s.TokenFile, &s.NKeySeedFile, &s.CredentialsFile} {
			*f = promcfg.JoinDir(dir, *f)
		}
	}
	tlss := []*TLS{c.TLS}
	for _, s := range c.streams() {
		tlss = append(tlss, c.streamTLS(s))
	}
	for _, t := range tlss {
		if t != nil {
			t.CA, t.Cert, t.Key = promcfg.JoinDir(dir, t.CA), promcfg.JoinDir(dir, t.Cert), promcfg.JoinDir(dir, t.Key)
		}
	}
	if c.Signing != nil {
		c.Signing.NKeySeedFile = promcfg.JoinDir(dir, c.Signing.NKeySeedFile)
	}
	if c.EmbeddedStream != nil && c.EmbeddedStream.StoreDir != "memory" {
		c.EmbeddedStream.StoreDir = promcfg.JoinDir(dir, c.EmbeddedStream.StoreDir)
	}
}

// setHTTPDefaults sets Prometheus's HTTP client defaults, which its own unmarshaller
// would set but an inlined struct cannot, where the file does not set them.
func setHTTPDefaults(kl *keyLines, key string, h *promcfg.HTTPClientConfig) {
	if _, set := kl.lines[key+".follow_redirects"]; !set {
		h.FollowRedirects = promcfg.DefaultHTTPClientConfig.FollowRedirects
	}
	if _, set := kl.lines[key+".enable_http2"]; !set {
		h.EnableHTTP2 = promcfg.DefaultHTTPClientConfig.EnableHTTP2
	}
}

func (c *Config) applyDefaults() {
	if c.ScrapeInterval == 0 {
		c.ScrapeInterval = DefaultScrapeInterval
	}
	if c.ScrapeTimeout == 0 {
		c.ScrapeTimeout = min(DefaultMaxScrapeTimeout, c.ScrapeInterval)
	}
	if c.RunTimeout == 0 {
		c.RunTimeout = Duration(float64(c.ScrapeInterval) * DefaultRunTimeoutRatio)
	}
	if c.ScrapeConcurrency == 0 {
		c.ScrapeConcurrency = DefaultScrapeConcurrency
	}
	if c.MaxAge == 0 {
		c.MaxAge = 2 * c.ScrapeInterval
	}
	if c.MaxClockSkew == 0 {
		c.MaxClockSkew = DefaultMaxClockSkew
	}
	if c.Identity == "" {
		c.Identity, _ = os.Hostname()
	}
	c.ReceiverStreams = slices.DeleteFunc(c.ReceiverStreams, func(s *Stream) bool { return s == nil })
	for _, s := range c.streams() {
		s.applyDefaults(c.TLS)
	}
	if c.PollerStream != nil && c.PollerStream.ClientID == "" {
		c.PollerStream.ClientID = DefaultClientIDPrefix
	}
	for _, r := range c.ReceiverStreams {
		r.applyReceiverDefaults()
	}
	if pg := c.PushGateway; pg != nil {
		if pg.Timeout == 0 {
			pg.Timeout = DefaultPushTimeout
		}
		if pg.Workers == 0 {
			pg.Workers = DefaultPushWorkers
		}
	}
	for _, rw := range c.RemoteWrite {
		if rw != nil {
			rw.applyDefaults()
		}
	}
	if e := c.Expose; e != nil {
		if e.Listen == "" {
			e.Listen = DefaultExposeListen
		}
		if e.Path == "" {
			e.Path = DefaultExposePath
		}
	}
	if c.EmbeddedStream != nil {
		c.applyEmbeddedDefaults()
	}
	c.applyMonitorDefaults()
	for name, j := range c.Jobs {
		if j != nil {
			j.applyDefaults(name, c)
		}
	}
}

// applyDefaults fills what a stream section leaves unset; top is the top-level tls.
func (s *Stream) applyDefaults(top *TLS) {
	if s.Transport == "" {
		s.Transport = TransportSTAN
	}
	if s.BodyCompression == "" {
		s.BodyCompression = BodyCompressionZstd
	}
	if s.TLS == nil && top != nil {
		s.TLS = top // a stream section's own tls overrides the top-level one
	}
	if s.Topic == "" {
		s.Topic = DefaultTopic
	}
	if s.ConnectTimeout == 0 {
		s.ConnectTimeout = DefaultConnectTimeout
	}
}

// applyReceiverDefaults fills what only a receiver stream section takes.
func (s *Stream) applyReceiverDefaults() {
	if s.DurableName == "" {
		s.DurableName = s.ClientID
	}
	if s.MaxInflight == 0 {
		s.MaxInflight = DefaultMaxInflight
	}
	if s.AckWait == 0 {
		s.AckWait = DefaultAckWait
	}
	if s.Shards == 0 {
		s.Shards = 1
	}
}

// applyDefaults fills what a remote_write section leaves unset, with Prometheus's
// defaults where they apply.
func (rw *RemoteWrite) applyDefaults() {
	if rw.ProtobufMessage == "" {
		rw.ProtobufMessage = RemoteWriteV1
	}
	if rw.RemoteTimeout == 0 {
		rw.RemoteTimeout = DefaultRemoteTimeout
	}
	q := &rw.QueueConfig
	if q.MaxSamplesPerSend == 0 {
		q.MaxSamplesPerSend = DefaultMaxSamplesPerSend
	}
	if q.MaxShards == 0 {
		q.MaxShards = DefaultRemoteMaxShards
	}
	if q.MinBackoff == 0 {
		q.MinBackoff = DefaultRemoteMinBackoff
	}
	if q.MaxBackoff == 0 {
		q.MaxBackoff = DefaultRemoteMaxBackoff
	}
	if q.RetryOnRateLimit == nil {
		yes := true
		q.RetryOnRateLimit = &yes
	}
	m := &rw.MetadataConfig
	if m.Send == nil {
		yes := true
		m.Send = &yes
	}
	if m.SendInterval == 0 {
		m.SendInterval = DefaultMetadataSendInterval
	}
	if m.MaxSamplesPerSend == 0 {
		m.MaxSamplesPerSend = DefaultMetadataMaxSamplesPerSend
	}
	if rw.Name == "" {
		rw.Name = remoteWriteName(rw.URL)
	}
}

// applyEmbeddedDefaults fills what embedded_stream leaves unset, and the receiver
// streams the drain consumes from its own server: its NATS Streaming channel and, when
// it serves JetStream, its JetStream stream, unless receiver_stream names them.
func (c *Config) applyEmbeddedDefaults() {
	es := c.EmbeddedStream
	if es.Listen == "" {
		es.Listen = DefaultEmbeddedListen
	}
	if es.ClusterID == "" {
		es.ClusterID = DefaultEmbeddedClusterID
		for _, r := range c.ReceiverStreams {
			if r.Transport == TransportSTAN && r.ClusterID != "" {
				es.ClusterID = r.ClusterID
				break
			}
		}
	}
	if es.StoreDir == "" {
		es.StoreDir = DefaultEmbeddedStoreDir
	}
	if es.MaxAge == 0 {
		es.MaxAge = c.MaxAge
	}
	if len(c.ReceiverStreams) == 0 {
		// The drain consumes from its own server.
		stan := &Stream{
			Transport: TransportSTAN, ClusterID: es.ClusterID, URLs: URLList{"nats://" + dialable(es.Listen)},
			ClientID: DefaultDrainClientID, Topic: DefaultTopic, ConnectTimeout: DefaultConnectTimeout,
			DurableName: DefaultDrainClientID, MaxInflight: DefaultMaxInflight, AckWait: DefaultAckWait,
			Shards: 1,
		}
		if c.PollerStream != nil {
			stan.Topic = c.PollerStream.Topic
		}
		c.ReceiverStreams = Streams{stan}
		if es.ServesJetStream() {
			c.ReceiverStreams = append(c.ReceiverStreams, embeddedJetStream(stan))
		}
		c.receiverDerived = true
		return
	}
	if es.ServesJetStream() && !slices.ContainsFunc(c.ReceiverStreams, (*Stream).IsJetStream) {
		// The embedded server takes JetStream publishers too: a drain that named only
		// its NATS Streaming channel consumes them as well, with that section's
		// settings, rather than leave them unread. (Pointing elsewhere, it is refused:
		// validate.)
		if base := c.ReceiverStreams[0]; base.Transport == TransportSTAN && pointsAt(base, es.Listen) {
			js := embeddedJetStream(base)
			js.QueueGroup = ""
			c.ReceiverStreams = append(c.ReceiverStreams, js)
			c.jetStreamDerived = len(c.ReceiverStreams) - 1
		}
	}
}

// embeddedJetStream is the embedded server's JetStream stream, consumed with the
// settings of its NATS Streaming receiver stream stan.
func embeddedJetStream(stan *Stream) *Stream {
	js := *stan
	js.Transport, js.ClusterID = TransportJetStream, ""
	js.StreamName, js.CreateStream = DefaultJetStreamName, CreateStream{Enabled: true, Replicas: 1}
	return &js
}

// applyMonitorDefaults resolves monitor and the earlier system's monitor_port.
func (c *Config) applyMonitorDefaults() {
	switch {
	case c.Monitor != nil && c.MonitorPort != 0:
		c.monitorBoth = true
	case c.MonitorPort != 0:
		c.Monitor = &Monitor{Listen: fmt.Sprintf(":%d", c.MonitorPort)}
	case c.Monitor == nil:
		c.Monitor = &Monitor{Listen: DefaultMonitorListen}
	case c.Monitor.Listen == "":
		c.Monitor.Listen = DefaultMonitorListen
	}
}

// applyDefaults names the job and fills what it leaves unset from the top level c.
func (j *Job) applyDefaults(name string, c *Config) {
	j.Name = name
	if j.ScrapeTimeout == 0 {
		j.ScrapeTimeout = min(c.ScrapeTimeout, c.ScrapeInterval)
	}
	if j.BodySizeLimit == 0 {
		j.BodySizeLimit = DefaultBodySizeLimit
	}
	j.Histograms.inherit(&c.Histograms)
	for _, t := range j.Targets {
		if t != nil && t.Name == "" {
			t.Name = instanceFromURL(t.URL)
		}
	}
}

// JobNames returns the job names in a stable order.
func (c *Config) JobNames() []string {
	names := make([]string, 0, len(c.Jobs))
	for n := range c.Jobs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// streams are the stream sections present: the poller's, then the receivers'.
func (c *Config) streams() []*Stream {
	var out []*Stream
	if c.PollerStream != nil {
		out = append(out, c.PollerStream)
	}
	return append(out, c.ReceiverStreams...)
}

// receiverIsList reports whether receiver_stream is written as a list.
func receiverIsList(root *yaml.Node) bool {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return false
	}
	m := resolveAlias(root.Content[0])
	if m.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "receiver_stream" {
			return resolveAlias(m.Content[i+1]).Kind == yaml.SequenceNode
		}
	}
	return false
}

// streamTLS is s's own TLS section, nil when it has none or shares the top-level one.
func (c *Config) streamTLS(s *Stream) *TLS {
	if s == nil || s.TLS == c.TLS {
		return nil
	}
	return s.TLS
}

// RequireEdge reports what scrape-once needs and the file lacks.
func (c *Config) RequireEdge() error {
	var errs []error
	if c.PollerStream == nil {
		errs = append(errs, errors.New("poller_stream: required by scrape-once"))
	}
	if len(c.Jobs) == 0 {
		errs = append(errs, errors.New("jobs: required by scrape-once: at least one job with targets"))
	}
	return errors.Join(errs...)
}

// RequireCentral reports what the drain needs and the file lacks.
func (c *Config) RequireCentral() error {
	var errs []error
	if len(c.ReceiverStreams) == 0 {
		errs = append(errs, errors.New("receiver_stream or embedded_stream: required by the drain"))
	}
	if c.PushGateway == nil && c.Expose == nil && len(c.RemoteWrite) == 0 {
		errs = append(errs, errors.New("push_gateway, expose or remote_write: the drain needs at least one sink"))
	}
	return errors.Join(errs...)
}

// dialable turns a listen address into one a client on this host can dial: an
// unspecified host means this host.
// pointsAt reports whether s dials the embedded server listening on listen.
// defaultBatchSendDeadline is Prometheus's 5s, or a quarter of the shortest ack_wait
// of the receiver streams when that is shorter: a scrape waiting for its request to
// fill must not be redelivered meanwhile.
func (c *Config) defaultBatchSendDeadline() Duration {
	d := DefaultBatchSendDeadline
	if w := c.shortestAckWait(); w > 0 {
		d = min(d, w/4)
	}
	return d
}

// shortestAckWait is the shortest ack_wait of the receiver streams, 0 without any.
func (c *Config) shortestAckWait() Duration {
	var w Duration
	for _, s := range c.ReceiverStreams {
		if s != nil && s.AckWait > 0 && (w == 0 || s.AckWait < w) {
			w = s.AckWait
		}
	}
	return w
}

// AtEmbedded reports whether s is a NATS Streaming channel of the embedded server,
// reached there only: what the drain's own server holds of it is all there is.
func (c *Config) AtEmbedded(s *Stream) bool {
	es := c.EmbeddedStream
	return es != nil && s.Transport == TransportSTAN && s.ClusterID == es.ClusterID && len(s.URLs) == 1 && pointsAt(s, es.Listen)
}

func pointsAt(s *Stream, listen string) bool {
	want := "nats://" + dialable(listen)
	for _, u := range s.URLs {
		if strings.TrimSuffix(u, "/") == want || strings.Replace(u, "localhost", "127.0.0.1", 1) == want {
			return true
		}
	}
	return false
}

func dialable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// Redacted returns the config as YAML with every secret replaced, for --check-config.
func (c *Config) Redacted() ([]byte, error) {
	// promcfg.Secret marshals as <secret>; nothing else in the tree holds a secret.
	// The jobs are encoded one by one: yaml's emitter takes memory out of proportion
	// to one large document (1.2 GB for a config of 10 MB), and a fleet's jobs are
	// most of a large config.
	if len(c.Jobs) == 0 {
		var buf bytes.Buffer
		err := encodeYAML(&buf, c)
		return buf.Bytes(), err
	}
	rest := *c
	rest.Jobs = map[string]*Job{}
	var head bytes.Buffer
	if err := encodeYAML(&head, &rest); err != nil {
		return nil, err
	}
	const empty = "\njobs: {}\n"
	at := strings.Index(head.String(), empty)
	if at < 0 {
		return nil, errors.New("encode config: no jobs key")
	}
	var buf bytes.Buffer
	buf.Write(head.Bytes()[:at+1])
	buf.WriteString("jobs:\n")
	var job bytes.Buffer
	for _, name := range c.JobNames() {
		job.Reset()
		if err := encodeYAML(&job, map[string]*Job{name: c.Jobs[name]}); err != nil {
			return nil, err
		}
		for line := range strings.Lines(job.String()) {
			buf.WriteString("  ")
			buf.WriteString(line)
		}
	}
	buf.Write(head.Bytes()[at+len(empty):])
	return buf.Bytes(), nil
}

func encodeYAML(w io.Writer, v any) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	return enc.Close()
}
