package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nkeys"
	promcfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/prometheus-streams/prometheus-streams/stream/natsauth"
)

// problem is one validation finding at a key path such as jobs.choria.targets[0].url.
type problem struct {
	path string
	msg  string
}

func (p problem) Error() string { return escapeInvalid(p.path) + ": " + p.msg }

// escapeInvalid writes the bytes of s that are not UTF-8 as Go escapes them (\xff), so
// that a key holding them can be named in a message.
func escapeInvalid(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			fmt.Fprintf(&b, `\x%02x`, s[i])
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

type problems []error

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, problem{path: path, msg: fmt.Sprintf(format, args...)})
}

func (c *Config) validate() []error {
	var ps problems
	if c.ScrapeInterval <= 0 {
		ps.add("scrape_interval", "must be positive")
	}
	if c.ScrapeTimeout <= 0 {
		ps.add("scrape_timeout", "must be positive")
	} else if c.ScrapeTimeout > c.ScrapeInterval {
		ps.add("scrape_timeout", "%s is above scrape_interval %s", c.ScrapeTimeout, c.ScrapeInterval)
	}
	if c.RunTimeout <= 0 {
		ps.add("run_timeout", "must be positive")
	} else if c.RunTimeout > c.ScrapeInterval {
		ps.add("run_timeout", "%s is above scrape_interval %s: a slow run would overlap the next", c.RunTimeout, c.ScrapeInterval)
	}
	if c.ScrapeConcurrency < 0 {
		ps.add("scrape_concurrency", "must be positive, got %d", c.ScrapeConcurrency)
	}
	if c.MaxClockSkew < 0 {
		ps.add("max_clock_skew", "must be positive")
	}
	if c.MaxAge <= 0 {
		ps.add("max_age", "must be positive")
	}
	// Both travel in every message, as the publisher and its site.
	validUTF8(&ps, "identity", c.Identity)
	validUTF8(&ps, "site", c.Site)
	validStream(&ps, "poller_stream", c.PollerStream, false)
	if t := c.streamTLS(c.PollerStream); t != nil {
		validTLS(&ps, "poller_stream.tls", t) // the top-level one is checked once, as tls
	}
	for i, r := range c.ReceiverStreams {
		validStream(&ps, c.receiverKey(i), r, true)
		if t := c.streamTLS(r); t != nil {
			validTLS(&ps, c.receiverKey(i)+".tls", t)
		}
	}
	c.validReceivers(&ps)
	if pg := c.PushGateway; pg != nil {
		if validURL(&ps, "push_gateway.url", pg.URL) {
			// As the sink refuses them (a URL ends up in messages).
			switch u, _ := url.Parse(pg.URL); {
			case u.User != nil:
				ps.add("push_gateway.url", "%q has credentials: use basic_auth instead, which keeps them secret", redactURL(pg.URL))
			case u.RawQuery != "" || u.Fragment != "":
				ps.add("push_gateway.url", "%q: query and fragment are not allowed", redactURL(pg.URL))
			}
		}
		if pg.PublisherLabel != "" && !model.LegacyValidation.IsValidLabelName(pg.PublisherLabel) {
			// The gateway's grouping labels are legacy names only.
			ps.add("push_gateway.publisher_label", "%q is not a valid grouping label name ([a-zA-Z_][a-zA-Z0-9_]*)", pg.PublisherLabel)
		}
		if pg.PublisherLabel == model.JobLabel || pg.PublisherLabel == model.InstanceLabel {
			ps.add("push_gateway.publisher_label", "%q is already a grouping label", pg.PublisherLabel)
		}
		if pg.Timeout < 0 {
			ps.add("push_gateway.timeout", "must be positive")
		}
		if pg.Workers < 0 {
			ps.add("push_gateway.workers", "must be positive, got %d", pg.Workers)
		}
		validHTTPClient(&ps, "push_gateway", &pg.HTTPClientConfig)
	}
	validRemoteWrite(&ps, c, c.RemoteWrite)
	if es := c.EmbeddedStream; es != nil && es.ServesJetStream() && !c.receiverDerived &&
		!slices.ContainsFunc(c.ReceiverStreams, (*Stream).IsJetStream) {
		ps.add("embedded_stream.jetstream", "the embedded server takes JetStream publishers, and no receiver_stream consumes them (receiver_stream points elsewhere): add a receiver_stream section with transport: jetstream, or set embedded_stream.jetstream: false")
	}
	if len(c.RemoteWrite) > 0 {
		for i, r := range c.ReceiverStreams {
			if r.QueueGroup != "" {
				ps.add(c.receiverKey(i)+".queue_group", "drains of a queue group take a target's scrapes in turns and can write them out of order, and a remote_write receiver refuses the older ones: use shards, which keep every target's scrapes in order (see the README's Several drains)")
			}
		}
	}
	if c.MonitorPort != 0 {
		if c.monitorBoth {
			ps.add("monitor_port", "monitor_port and monitor.listen are both set: keep monitor.listen")
		}
		if c.MonitorPort < 0 || c.MonitorPort > 65535 {
			ps.add("monitor_port", "%d is not a port", c.MonitorPort)
		}
	}
	if c.Monitor != nil {
		validListen(&ps, "monitor.listen", c.Monitor.Listen)
		validWebConfig(&ps, "monitor.web_config_file", c.Monitor.WebConfigFile)
	}
	if e := c.Expose; e != nil {
		validListen(&ps, "expose.listen", e.Listen)
		validWebConfig(&ps, "expose.web_config_file", e.WebConfigFile)
		if !strings.HasPrefix(e.Path, "/") {
			ps.add("expose.path", "%q: want an absolute path such as /metrics", e.Path)
		}
		if c.Monitor != nil && e.Listen == c.Monitor.Listen {
			ps.add("expose.listen", "%q is monitor.listen too: give each its own", e.Listen)
		}
	}
	if es := c.EmbeddedStream; es != nil {
		validListen(&ps, "embedded_stream.listen", es.Listen)
		if !validClientID(es.ClusterID) {
			ps.add("embedded_stream.cluster_id", "%q: only letters, digits, '-' and '_' are allowed", es.ClusterID)
		}
		if es.MaxAge < 0 || es.MaxMsgs < 0 || es.MaxBytes < 0 {
			ps.add("embedded_stream", "channel limits must not be negative")
		}
	}
	validProtocols(&ps, "scrape_protocols", c.ScrapeProtocols)
	for _, name := range c.JobNames() {
		c.validJob(&ps, name)
	}
	validTLS(&ps, "tls", c.TLS)
	if c.Signing != nil {
		if c.Signing.NKeySeedFile == "" {
			ps.add("signing.nkey_seed_file", "required")
		}
		validFile(&ps, "signing.nkey_seed_file", c.Signing.NKeySeedFile)
	}
	seen := map[string]int{}
	for i, tp := range c.Trust {
		key := fmt.Sprintf("trust[%d]", i)
		if tp == nil {
			ps.add(key, "empty entry: want public_key and jobs")
			continue
		}
		if !nkeys.IsValidPublicUserKey(tp.PublicKey) {
			ps.add(key+".public_key", "%q is not an NKey user public key (U...)", tp.PublicKey)
		}
		if first, dup := seen[tp.PublicKey]; dup {
			ps.add(key+".public_key", "listed twice (also trust[%d])", first)
		} else {
			seen[tp.PublicKey] = i
		}
		if len(tp.Jobs) == 0 {
			ps.add(key+".jobs", "required: the jobs this key may publish")
		}
		for j, re := range tp.Instances {
			if _, err := regexp.Compile("^(?:" + re + ")$"); err != nil {
				ps.add(fmt.Sprintf("%s.instances[%d]", key, j), "%v", err)
			}
		}
	}
	return ps
}

func validTLS(ps *problems, key string, t *TLS) {
	if t == nil {
		return
	}
	// As the dial reads them: a file it would refuse is a config error, not an
	// unreachable stream.
	checkFile(ps, key+".ca", t.CA, natsauth.CheckCA)
	validFile(ps, key+".cert", t.Cert)
	validFile(ps, key+".key", t.Key)
	switch {
	case (t.Cert == "") != (t.Key == ""):
		ps.add(key, "cert and key go together")
	case t.Cert != "" && fileExists(t.Cert) && fileExists(t.Key):
		if err := natsauth.CheckKeyPair(t.Cert, t.Key); err != nil {
			ps.add(key+".cert", "%v", err)
		}
	}
}

func validStream(ps *problems, key string, s *Stream, central bool) {
	if s == nil {
		return
	}
	validTransport(ps, key, s, central)
	if len(s.URLs) == 0 {
		ps.add(key+".urls", "required: at least one nats:// URL")
	}
	for i, u := range s.URLs {
		// A NATS URL may carry a user and password or a token: never shown.
		pu, err := url.Parse(u)
		switch {
		case err != nil:
			ps.add(fmt.Sprintf("%s.urls[%d]", key, i), "%q does not parse: %v", redactURL(u), urlError(err))
		case pu.Scheme != "nats" && pu.Scheme != "tls":
			ps.add(fmt.Sprintf("%s.urls[%d]", key, i), "%q: want a nats:// or tls:// URL", redactURL(u))
		case pu.Host == "":
			ps.add(fmt.Sprintf("%s.urls[%d]", key, i), "%q has no host", redactURL(u))
		}
	}
	if strings.ContainsAny(s.Topic, " \t*>") || strings.HasPrefix(s.Topic, ".") || strings.HasSuffix(s.Topic, ".") {
		ps.add(key+".topic", "%q is not a valid channel name", s.Topic)
	}
	if central && s.ClientID == "" && s.Transport == TransportSTAN {
		ps.add(key+".client_id", "required: the drain's durable subscription is keyed by it")
	}
	if s.ClientID != "" && !validClientID(s.ClientID) {
		ps.add(key+".client_id", "%q: only letters, digits, '-' and '_' are allowed", s.ClientID)
	}
	if s.ConnectTimeout < 0 {
		ps.add(key+".connect_timeout", "must be positive")
	}
	switch s.BodyCompression {
	case "", BodyCompressionZstd, BodyCompressionZstdDictionary: // "": a section derived after the defaults
	default:
		ps.add(key+".body_compression", "%q: want %s (the default) or %s", s.BodyCompression, BodyCompressionZstd, BodyCompressionZstdDictionary)
	}
	if s.MaxInflight < 0 {
		ps.add(key+".max_inflight", "must be positive, got %d", s.MaxInflight)
	}
	// Each file as the dial reads it: one it would refuse is a config error (78), not
	// an unreachable stream (69).
	checkFile(ps, key+".password_file", s.PasswordFile, func(p string) error { _, err := natsauth.Secret("password file", p); return err })
	checkFile(ps, key+".token_file", s.TokenFile, func(p string) error { _, err := natsauth.Secret("token file", p); return err })
	checkFile(ps, key+".nkey_seed_file", s.NKeySeedFile, natsauth.CheckSeed)
	checkFile(ps, key+".credentials_file", s.CredentialsFile, natsauth.CheckCreds)
	methods := 0
	for _, set := range []bool{s.User != "" || s.PasswordFile != "", s.TokenFile != "", s.NKeySeedFile != "", s.CredentialsFile != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		ps.add(key, "choose one of user/password_file, token_file, nkey_seed_file and credentials_file")
	}
	if (s.User == "") != (s.PasswordFile == "") {
		ps.add(key+".user", "user and password_file go together")
	}
	if s.DurableName != "" && !validClientID(s.DurableName) {
		ps.add(key+".durable_name", "%q: only letters, digits, '-' and '_' are allowed", s.DurableName)
	}
	switch {
	case s.Shards < 0:
		ps.add(key+".shards", "must be positive, got %d", s.Shards)
	case s.Shard < 0 || (s.Shard > 0 && s.Shard >= max(s.Shards, 1)):
		ps.add(key+".shard", "%d is not a shard of %d: want 0 to %d", s.Shard, max(s.Shards, 1), max(s.Shards, 1)-1)
	case s.Shards > 1 && s.QueueGroup != "":
		ps.add(key+".shards", "shards and queue_group both share the channel among drains: choose one (see the README's Several drains)")
	}
}

func validClientID(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func (c *Config) validJob(ps *problems, name string) {
	key := "jobs." + name
	j := c.Jobs[name]
	if j == nil {
		ps.add(key, "empty job: want targets")
		return
	}
	if name == "" {
		ps.add(key, "job name is empty")
	}
	validUTF8(ps, key, name) // the job label
	if len(j.Targets) == 0 {
		ps.add(key+".targets", "required: at least one target")
	}
	if j.ScrapeTimeout <= 0 {
		ps.add(key+".scrape_timeout", "must be positive")
	} else if j.ScrapeTimeout > c.ScrapeInterval {
		ps.add(key+".scrape_timeout", "%s is above scrape_interval %s", j.ScrapeTimeout, c.ScrapeInterval)
	}
	if j.SampleLimit < 0 {
		ps.add(key+".sample_limit", "must not be negative")
	}
	if j.LabelLimit < 0 {
		ps.add(key+".label_limit", "must not be negative")
	}
	if j.BodySizeLimit < 0 {
		ps.add(key+".body_size_limit", "must not be negative")
	}
	validLabels(ps, key+".labels", j.Labels)
	if !sameProtocols(j.ScrapeProtocols, c.ScrapeProtocols) { // the top level's are checked once
		validProtocols(ps, key+".scrape_protocols", j.ScrapeProtocols)
	}
	for i, rc := range j.MetricRelabelConfigs {
		if rc == nil {
			ps.add(fmt.Sprintf("%s.metric_relabel_configs[%d]", key, i), "empty relabel config")
			continue
		}
		if err := rc.Validate(model.UTF8Validation); err != nil {
			ps.add(fmt.Sprintf("%s.metric_relabel_configs[%d]", key, i), "%v", err)
		}
	}
	validHTTPClient(ps, key, &j.HTTPClientConfig)
	seen := map[string]int{}
	for i, t := range j.Targets {
		tkey := fmt.Sprintf("%s.targets[%d]", key, i)
		if t == nil {
			ps.add(tkey, "empty target: want a url")
			continue
		}
		if t.URL == "" {
			ps.add(tkey+".url", "required")
		} else if validURL(ps, tkey+".url", t.URL) {
			if u, _ := url.Parse(t.URL); u.User != nil {
				// Go would send them as basic auth, but a target's URL is shown
				// (--check-config, --dry-run, logs): they go in basic_auth.
				ps.add(tkey+".url", "%q has credentials: use the job's basic_auth instead, which keeps them secret", redactURL(t.URL))
			} else if t.Name == "" {
				ps.add(tkey+".name", "required: the url %q has no host to name the instance by", t.URL)
			}
		}
		validUTF8(ps, tkey+".name", t.Name) // the instance label
		if first, dup := seen[t.Name]; dup && t.Name != "" {
			ps.add(tkey+".name", "duplicate target %q in job %q (also targets[%d])", t.Name, name, first)
		} else {
			seen[t.Name] = i
		}
		validLabels(ps, tkey+".labels", t.Labels)
	}
}

func validLabels(ps *problems, key string, labels map[string]string) {
	for n, v := range labels {
		validUTF8(ps, key+"."+n, v)
		switch {
		case !model.UTF8Validation.IsValidLabelName(n):
			ps.add(key+"."+n, "%q is not a valid label name", n)
		case n == model.JobLabel || n == model.InstanceLabel:
			ps.add(key+"."+n, "%q comes from the job and target; it cannot be set as a static label", n)
		case strings.HasPrefix(n, model.ReservedLabelPrefix):
			ps.add(key+"."+n, "%q: names starting with __ are reserved", n)
		}
	}
}

// validURL reports whether raw is an absolute http(s) URL, adding a problem when not.
func validURL(ps *problems, key, raw string) bool {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		ps.add(key, "%q does not parse: %v", redactURL(raw), urlError(err))
	case u.Scheme != "http" && u.Scheme != "https":
		ps.add(key, "%q: want an http:// or https:// URL", redactURL(raw))
	case u.Host == "":
		ps.add(key, "%q has no host", redactURL(raw))
	default:
		return true
	}
	return false
}

// urlError is what url.Parse says is wrong, without the URL, which may hold a password.
func urlError(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		err = ue.Err
	}
	if strings.Contains(err.Error(), "userinfo") {
		return errors.New("invalid user or password in it")
	}
	return err
}

// validUTF8 refuses a value that is not valid UTF-8: it would travel in every message
// as a label value or the publisher, and no Prometheus parser reads such a value.
func validUTF8(ps *problems, key, s string) {
	if !utf8.ValidString(s) {
		ps.add(key, "%q is not valid UTF-8", s)
	}
}

// validHTTPClient checks Prometheus's HTTP client settings, and their TLS files as the
// client the binaries build reads them. Validate completes h as Prometheus does
// (bearer_token_file becomes authorization.credentials_file).
func validHTTPClient(ps *problems, key string, h *promcfg.HTTPClientConfig) {
	if err := h.Validate(); err != nil {
		ps.add(key, "http client settings: %v", err)
		return
	}
	if _, err := promcfg.NewTLSConfig(&h.TLSConfig); err != nil {
		ps.add(key+".tls_config", "%v", err)
	}
}

// validWebConfig checks an exporter-toolkit web config file as the listener loads it.
func validWebConfig(ps *problems, key, path string) {
	if path == "" {
		return
	}
	if !fileExists(path) {
		validFile(ps, key, path)
		return
	}
	if err := web.Validate(path); err != nil {
		ps.add(key, "%s: %v", path, err)
	}
}

// instanceFromURL is the URL's host[:port] as written, as Prometheus 3 names instances.
func instanceFromURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

// trustWarnings lists trusted keys bound to nothing but their jobs: such a key, stolen,
// can publish any instance of those jobs as any host and site.
func (c *Config) trustWarnings() []string {
	var w []string
	for i, p := range c.Trust {
		if p != nil && len(p.Publishers) == 0 && len(p.Instances) == 0 {
			w = append(w, fmt.Sprintf("trust[%d] binds its key to jobs only: a stolen key could publish any instance of them as any publisher; set publishers (and instances, sites, labels)", i))
		}
	}
	return w
}

// secretWarnings lists inline secrets, accepted as Prometheus accepts them but better kept
// in files. The messages name the key, never the value.
func (c *Config) secretWarnings() []string {
	var w []string
	for _, name := range c.JobNames() {
		w = inlineSecrets(w, "jobs."+name, &c.Jobs[name].HTTPClientConfig)
	}
	if c.PushGateway != nil {
		w = inlineSecrets(w, "push_gateway", &c.PushGateway.HTTPClientConfig)
	}
	for i, rw := range c.RemoteWrite {
		if rw != nil {
			w = inlineSecrets(w, fmt.Sprintf("remote_write[%d]", i), &rw.HTTPClientConfig)
		}
	}
	return w
}

func inlineSecrets(w []string, key string, h *promcfg.HTTPClientConfig) []string {
	if h.BasicAuth != nil && h.BasicAuth.Password != "" {
		w = append(w, key+".basic_auth.password is inline; prefer password_file")
	}
	if h.Authorization != nil && h.Authorization.Credentials != "" {
		w = append(w, key+".authorization.credentials is inline; prefer credentials_file")
	}
	if h.BearerToken != "" {
		w = append(w, key+".bearer_token is inline; prefer bearer_token_file")
	}
	if h.OAuth2 != nil && h.OAuth2.ClientSecret != "" {
		w = append(w, key+".oauth2.client_secret is inline; prefer client_secret_file")
	}
	if h.TLSConfig.Key != "" {
		w = append(w, key+".tls_config.key is inline; prefer key_file")
	}
	return w
}

func validListen(ps *problems, key, addr string) {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		ps.add(key, "%q: want host:port or :port", addr)
	}
}

// validFile reports a file that is named but cannot be read: better at load than at
// the first request.
func validFile(ps *problems, key, path string) {
	if path == "" {
		return
	}
	if _, err := os.Stat(path); err != nil {
		ps.add(key, "%v", err)
	}
}

// checkFile reports a file that is named but does not pass check, which reads it as
// its user will.
func checkFile(ps *problems, key, path string, check func(string) error) {
	if path == "" {
		return
	}
	if err := check(path); err != nil {
		ps.add(key, "%v", err)
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// reservedHeaders are the remote-write protocol's own headers, which Prometheus refuses in
// a remote_write entry's headers too.
var reservedHeaders = []string{
	"Authorization", "Host", "Content-Encoding", "Content-Length", "Content-Type",
	"User-Agent", "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Www-Authenticate", "Retry-After", "X-Prometheus-Remote-Write-Version",
}

func validRemoteWrite(ps *problems, c *Config, rws []*RemoteWrite) {
	names := map[string]int{}
	for i, rw := range rws {
		key := fmt.Sprintf("remote_write[%d]", i)
		if rw == nil {
			ps.add(key, "empty entry: want at least a url")
			continue
		}
		if rw.URL == "" {
			ps.add(key+".url", "required")
		} else if validURL(ps, key+".url", rw.URL) {
			if u, _ := url.Parse(rw.URL); u.User != nil {
				ps.add(key+".url", "%q has credentials: use basic_auth instead, which keeps them secret", redactURL(rw.URL))
			}
		}
		if j, dup := names[rw.Name]; dup {
			ps.add(key+".name", "%q is also remote_write[%d]'s name: give each entry its own name", rw.Name, j)
		}
		names[rw.Name] = i
		switch rw.ProtobufMessage {
		case RemoteWriteV1, RemoteWriteV2:
		default:
			ps.add(key+".protobuf_message", "%q: want %s (remote-write 1.0) or %s (2.0)", rw.ProtobufMessage, RemoteWriteV1, RemoteWriteV2)
		}
		if rw.RemoteTimeout < 0 {
			ps.add(key+".remote_timeout", "must be positive")
		}
		for h := range rw.Headers {
			for _, r := range reservedHeaders {
				if strings.EqualFold(h, r) {
					ps.add(key+".headers", "%s is set by the protocol or the client settings and cannot be overridden", r)
				}
			}
		}
		q := rw.QueueConfig
		if q.MaxSamplesPerSend < 0 {
			ps.add(key+".queue_config.max_samples_per_send", "must be positive, got %d", q.MaxSamplesPerSend)
		}
		if q.MaxShards < 0 {
			ps.add(key+".queue_config.max_shards", "must be positive, got %d", q.MaxShards)
		}
		if q.BatchSendDeadline < 0 {
			ps.add(key+".queue_config.batch_send_deadline", "must not be negative")
		}
		if q.MinBackoff < 0 || q.MaxBackoff < 0 || q.MinBackoff > q.MaxBackoff {
			ps.add(key+".queue_config", "min_backoff %s and max_backoff %s: want 0 < min_backoff <= max_backoff", q.MinBackoff, q.MaxBackoff)
		}
		if w := c.shortestAckWait(); w > 0 && q.BatchSendDeadline >= w/2 {
			ps.add(key+".queue_config.batch_send_deadline", "%s is not well below the receiver stream's ack_wait %s: scrapes waiting for their request to fill would be redelivered; keep it under half of ack_wait", q.BatchSendDeadline, w)
		}
		if q.SampleAgeLimit < 0 {
			ps.add(key+".queue_config.sample_age_limit", "must not be negative")
		}
		if q.Capacity != nil {
			ps.add(key+".queue_config.capacity", "does not apply here: the scrapes wait in the stream, not in a buffer of the sink, until a sender takes them; remove it")
		}
		if q.MinShards != nil {
			ps.add(key+".queue_config.min_shards", "does not apply here: the sink does not reshard, it runs max_shards senders; remove it")
		}
		if m := rw.MetadataConfig; m.SendInterval < 0 {
			ps.add(key+".metadata_config.send_interval", "must be positive")
		} else if m.MaxSamplesPerSend < 0 {
			ps.add(key+".metadata_config.max_samples_per_send", "must be positive, got %d", m.MaxSamplesPerSend)
		}
		validHTTPClient(ps, key, &rw.HTTPClientConfig)
	}
}

// remoteWriteName is a remote-write endpoint's default name: its URL's host and path,
// which identify it without any credential.
func remoteWriteName(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return raw
	}
	return u.Host + u.Path
}
