package config

import (
	"fmt"
	"log/slog"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/prometheus-streams/prometheus-streams/stream"
)

// Transports a stream section may name.
const (
	// TransportSTAN is NATS Streaming: one channel, named by topic. The default.
	TransportSTAN = stream.TransportSTAN
	// TransportJetStream is NATS JetStream: a stream capturing <topic>.>, each
	// target's scrapes on its own subject <topic>.<job>.<instance>.
	TransportJetStream = stream.TransportJetStream
)

// Body compressions a stream section's body_compression may name: how scrape-once
// compresses the expositions it publishes. The drain reads both whatever it says.
const (
	// BodyCompressionZstd is zstd without a dictionary, which every drain reads. The
	// default.
	BodyCompressionZstd = "zstd"
	// BodyCompressionZstdDictionary is zstd with the exposition dictionary built into
	// both binaries: fewer bytes, but drains built before it refuse the messages, so
	// every drain must be upgraded before an edge sends it.
	BodyCompressionZstdDictionary = "zstd_dictionary"
)

// maxJetStreamName is the longest stream or consumer name a NATS server accepts.
const maxJetStreamName = 255

// MaxReplicas is the most replicas a JetStream stream may have (the server's limit).
const MaxReplicas = 5

// CreateStream is create_stream: whether scrape-once and the drain create the JetStream
// stream when it is missing, and on how many servers of a JetStream cluster. It is
// written as a boolean, true meaning one replica (a single server), or as a mapping:
// {replicas: 3} for a cluster that rides through the loss of one server ({} is one
// replica).
type CreateStream struct {
	// Enabled: create the stream when it is missing.
	Enabled bool `yaml:"-"`
	// Replicas is how many servers hold the stream, 1 to MaxReplicas, when Enabled;
	// the drain's consumer has as many.
	Replicas int `yaml:"replicas"`
}

// createStreamKeys are the keys of create_stream's mapping form.
type createStreamKeys struct {
	Replicas *int `yaml:"replicas"`
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (c *CreateStream) UnmarshalYAML(n *yaml.Node) error {
	n = resolveAlias(n)
	switch n.Kind {
	case yaml.ScalarNode:
		var on bool
		if err := n.Decode(&on); err != nil {
			return typeError(n, "want true, false or a mapping such as {replicas: 3}, got %q", n.Value)
		}
		*c = CreateStream{}
		if on {
			*c = CreateStream{Enabled: true, Replicas: 1}
		}
		return nil
	case yaml.MappingNode:
		if errs := unknownKeys(n, reflect.TypeFor[createStreamKeys]()); len(errs) > 0 {
			return &yaml.TypeError{Errors: errs}
		}
		var k createStreamKeys
		if err := n.Decode(&k); err != nil {
			return err
		}
		*c = CreateStream{Enabled: true, Replicas: 1}
		if k.Replicas != nil {
			c.Replicas = *k.Replicas
		}
		return nil
	default:
		return typeError(n, "want true, false or a mapping such as {replicas: 3}, got a %s", kindName(n.Kind))
	}
}

// MarshalYAML implements yaml.Marshaler: false, or the mapping form with the replicas,
// so that --check-config shows them.
func (c CreateStream) MarshalYAML() (any, error) {
	if !c.Enabled {
		return false, nil
	}
	return createStreamKeys{Replicas: &c.Replicas}, nil
}

// Streams are the receiver_stream sections: one mapping or a list of them in the
// file, so that one drain can consume several streams at once (a STAN channel and a
// JetStream stream, while edges move from one to the other).
type Streams []*Stream

// UnmarshalYAML implements yaml.Unmarshaler. Unknown keys are errors with their line,
// as everywhere else in the file (a custom unmarshaler is not held to the decoder's
// known-fields rule, so the keys are checked here).
func (s *Streams) UnmarshalYAML(n *yaml.Node) error {
	n = resolveAlias(n)
	var items []*yaml.Node
	switch n.Kind {
	case yaml.MappingNode:
		items = []*yaml.Node{n}
	case yaml.SequenceNode:
		items = n.Content
	default:
		return typeError(n, "want a stream section or a list of them, got a %s", kindName(n.Kind))
	}
	var errs []string
	out := make(Streams, 0, len(items))
	for _, item := range items {
		item = resolveAlias(item)
		if item.Kind != yaml.MappingNode {
			errs = append(errs, fmt.Sprintf("line %d: want a stream section (a mapping), got a %s", item.Line, kindName(item.Kind)))
			continue
		}
		errs = append(errs, unknownKeys(item, reflect.TypeFor[Stream]())...)
		st := &Stream{}
		if err := item.Decode(st); err != nil {
			if te, ok := err.(*yaml.TypeError); ok {
				errs = append(errs, te.Errors...)
			} else {
				errs = append(errs, fmt.Sprintf("line %d: %v", item.Line, err))
			}
		}
		out = append(out, st)
	}
	*s = out
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	return nil
}

// MarshalYAML implements yaml.Marshaler: one section as a mapping, several as a list,
// as they are written.
func (s Streams) MarshalYAML() (any, error) {
	switch len(s) {
	case 0:
		return nil, nil
	case 1:
		return s[0], nil
	default:
		return []*Stream(s), nil
	}
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// unknownKeys lists the keys of the mapping n that no yaml tag of the struct type t
// names, recursively into fields of struct type, in yaml.v3's own wording so that
// keyLines can name the key: "line 7: field clusterid not found in type config.Stream". Keys
// of fields whose type unmarshals itself are that type's business.
func unknownKeys(n *yaml.Node, t reflect.Type) []string {
	n = resolveAlias(n)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind != yaml.MappingNode || t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]()) {
		return nil
	}
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name != "-" && name != "" && f.IsExported() {
			fields[name] = f.Type
		}
	}
	var errs []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "<<" { // a merge key: the merged mappings' keys count
			v = resolveAlias(v)
			if v.Kind == yaml.SequenceNode {
				for _, m := range v.Content {
					errs = append(errs, unknownKeys(m, t)...)
				}
			} else {
				errs = append(errs, unknownKeys(v, t)...)
			}
			continue
		}
		ft, ok := fields[k.Value]
		if !ok {
			errs = append(errs, fmt.Sprintf("line %d: field %s not found in type %s", k.Line, k.Value, t))
			continue
		}
		errs = append(errs, unknownKeys(v, ft)...)
	}
	return errs
}

// IsJetStream reports whether the section uses JetStream.
func (s *Stream) IsJetStream() bool { return s.Transport == TransportJetStream }

// Subjects is the subject filter of the section's JetStream stream: every target's
// subject <topic>.<job>.<instance> matches it.
func (s *Stream) Subjects() string { return s.Topic + ".>" }

// Describe says in one line which transport the section uses and where, for
// --check-config and logs. Passwords and tokens in URLs are hidden.
func (s *Stream) Describe() string {
	urls := make([]string, len(s.URLs))
	for i, u := range s.URLs {
		urls[i] = redactURL(u)
	}
	where := strings.Join(urls, ",")
	if s.IsJetStream() {
		create := "must exist"
		if cs := s.CreateStream; cs.Enabled {
			create = fmt.Sprintf("created if missing, %d replicas", cs.Replicas)
			if cs.Replicas == 1 {
				create = "created if missing, 1 replica"
			}
		}
		return fmt.Sprintf("jetstream stream %s subjects %s at %s (%s)", s.StreamName, s.Subjects(), where, create)
	}
	return fmt.Sprintf("stan channel %s of cluster %s at %s", s.Topic, s.ClusterID, where)
}

// DescribeReceivers describes each receiver stream in one line, with its key and the
// durable the drain consumes with, for the drain's --check-config.
func (c *Config) DescribeReceivers() []string {
	out := make([]string, 0, len(c.ReceiverStreams))
	for i, s := range c.ReceiverStreams {
		key := c.receiverKey(i)
		switch {
		case c.receiverDerived:
			key += " (from embedded_stream)"
		case c.jetStreamDerived > 0 && i == c.jetStreamDerived:
			key = "receiver_stream (embedded_stream's JetStream, with the settings of " + c.receiverKey(0) + ")"
		}
		out = append(out, fmt.Sprintf("%s: %s, durable %s", key, s.Describe(), s.Durable()))
	}
	return out
}

// receiverKey is the key of the i-th receiver stream as written in the file.
func (c *Config) receiverKey(i int) string {
	if c.receiverList {
		return fmt.Sprintf("receiver_stream[%d]", i)
	}
	return "receiver_stream"
}

// DuplicateWindow is the duplicate window of a JetStream stream this project creates:
// at least a scrape interval, so a publish retried within a run is stored once (each
// message carries a Nats-Msg-Id), at least the server's default, and at most max_age
// (the server refuses a window longer than the stream's max age).
func (c *Config) DuplicateWindow() time.Duration {
	return stream.DuplicateWindow(max(c.ScrapeInterval.D(), stream.DefaultDuplicateWindow), c.MaxAge.D())
}

// redactURL hides the password or token of a URL, as Prometheus does (xxxxx), for
// messages and --check-config.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		if i := strings.LastIndex(raw, "@"); i >= 0 && err != nil {
			scheme, _, found := strings.Cut(raw[:i], "://")
			if !found {
				scheme = ""
			} else {
				scheme += "://"
			}
			return scheme + "xxxxx@" + raw[i+1:]
		}
		return raw
	}
	if _, ok := u.User.Password(); ok {
		return u.Redacted()
	}
	u.User = url.User("redacted") // a token alone
	return u.String()
}

// MarshalYAML implements yaml.Marshaler, hiding credentials in URLs: the YAML form of
// a config is only ever shown (--check-config), never read back.
func (u URLList) MarshalYAML() (any, error) {
	out := make([]string, len(u))
	for i, raw := range u {
		out[i] = redactURL(raw)
	}
	return out, nil
}

// validTransport checks the keys that depend on the transport. Keys that mean nothing
// for the section's transport are errors, as unknown keys are: a key that is silently
// ignored is a misunderstanding waiting to happen.
func validTransport(ps *problems, key string, s *Stream, central bool) {
	switch s.Transport {
	case TransportSTAN:
		if s.ClusterID == "" {
			ps.add(key+".cluster_id", "required (transport stan)")
		}
		if s.StreamName != "" {
			ps.add(key+".stream", "means nothing for transport stan: set transport: jetstream, or remove it")
		}
		if s.CreateStream.Enabled {
			ps.add(key+".create_stream", "means nothing for transport stan (replicas included): set transport: jetstream, or remove it")
		}
		if s.AckWait < 0 || (s.AckWait > 0 && s.AckWait.D() < time.Second) {
			ps.add(key+".ack_wait", "must be at least 1s (NATS Streaming counts it in seconds)")
		}
	case TransportJetStream:
		if s.ClusterID != "" {
			ps.add(key+".cluster_id", "means nothing for transport jetstream (a NATS Streaming cluster ID): remove it")
		}
		if s.QueueGroup != "" {
			ps.add(key+".queue_group", "means nothing for transport jetstream: drains with the same durable_name share the stream's messages")
		}
		switch {
		case s.StreamName == "":
			ps.add(key+".stream", "required (transport jetstream): the JetStream stream's name")
		case len(s.StreamName) > maxJetStreamName:
			ps.add(key+".stream", "%q: at most %d characters", s.StreamName, maxJetStreamName)
		case strings.ContainsAny(s.StreamName, ".*>/\\") || strings.ContainsFunc(s.StreamName, isSpaceOrControl):
			ps.add(key+".stream", "%q is not a valid stream name: no '.', '*', '>', '/', '\\' or white space", s.StreamName)
		}
		if slices.Contains(strings.Split(s.Topic, "."), "") || strings.Contains(s.Topic, "/") {
			ps.add(key+".topic", "%q is not a valid subject prefix: dot-separated tokens, none empty, no '/'", s.Topic)
		}
		if cs := s.CreateStream; cs.Enabled && (cs.Replicas < 1 || cs.Replicas > MaxReplicas) {
			ps.add(key+".create_stream.replicas", "%d: want 1 to %d (the servers of the JetStream cluster that hold the stream; 3 rides through the loss of one)",
				cs.Replicas, MaxReplicas)
		}
		if s.AckWait < 0 {
			ps.add(key+".ack_wait", "must be positive")
		}
		if central && s.DurableName == "" {
			ps.add(key+".durable_name", "required (or client_id): names the drain's durable consumer")
		}
		if d := s.Durable(); central && len(d) > maxJetStreamName {
			ps.add(key+".durable_name", "%q: a consumer name has at most %d characters", d, maxJetStreamName)
		}
	default:
		ps.add(key+".transport", "%q: want %s or %s", s.Transport, TransportSTAN, TransportJetStream)
	}
}

// validReceivers checks what concerns several receiver streams together.
func (c *Config) validReceivers(ps *problems) {
	type where struct{ transport, urls, topic string }
	seen := map[where]int{}
	clients := map[[2]string]int{}
	for i, s := range c.ReceiverStreams {
		if s == nil {
			continue
		}
		key := c.receiverKey(i)
		urls := slices.Clone(s.URLs)
		slices.Sort(urls)
		w := where{s.Transport, strings.Join(urls, ","), s.Topic}
		if j, dup := seen[w]; dup {
			ps.add(key, "%s consumes the same %s topic %q at the same server as %s", key, s.Transport, s.Topic, c.receiverKey(j))
		} else {
			seen[w] = i
		}
		// One drain takes one shard of the targets, whatever stream they come by.
		if first := c.ReceiverStreams[0]; i > 0 && (s.Shards != first.Shards || s.Shard != first.Shard) {
			ps.add(key+".shards", "shard %d of %d differs from %s's shard %d of %d: a drain takes one shard of the targets from every stream",
				s.Shard, s.Shards, c.receiverKey(0), first.Shard, first.Shards)
		}
		if s.Transport == TransportSTAN && s.ClientID != "" {
			id := [2]string{s.ClusterID, s.ClientID}
			if j, dup := clients[id]; dup {
				ps.add(key+".client_id", "%q is also %s's on cluster %q: a NATS Streaming client ID serves one connection", s.ClientID, c.receiverKey(j), s.ClusterID)
			} else {
				clients[id] = i
			}
		}
	}
}

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }

// Security is the TLS and authentication of the section (its own tls, else the top-level
// one, as applied at load), as both binaries hand it to stream.
func (s *Stream) Security() stream.Security {
	sec := stream.Security{
		User: s.User, PasswordFile: s.PasswordFile, TokenFile: s.TokenFile,
		NKeySeedFile: s.NKeySeedFile, CredentialsFile: s.CredentialsFile,
	}
	if t := s.TLS; t != nil {
		sec.CAFile, sec.CertFile, sec.KeyFile = t.CA, t.Cert, t.Key
		sec.ServerName, sec.InsecureSkipVerify = t.ServerName, t.InsecureSkipVerify
	}
	return sec
}

// StreamOptions is how a client named name reaches the section's stream, whichever
// its transport: the one conversion of a stream section that the edge and the drain
// share (each adds what only it sets: the edge a client ID unique to its run and its
// publish ack wait, the drain the embedded server's channel ends).
func (c *Config) StreamOptions(s *Stream, name string, logger *slog.Logger) stream.Options {
	return stream.Options{
		Transport:       s.Transport,
		URLs:            s.URLs,
		Topic:           s.Topic, // JetStream: the stream's subjects, and a consumer's filter: Topic+".>"
		Name:            name,
		ConnectTimeout:  s.ConnectTimeout.D(),
		Security:        s.Security(),
		Logger:          logger,
		ClusterID:       s.ClusterID,
		ClientID:        s.ClientID,
		Stream:          s.StreamName,
		Create:          s.CreateStream.Enabled,
		Replicas:        s.CreateStream.Replicas,
		MaxAge:          c.MaxAge.D(),
		DuplicateWindow: c.DuplicateWindow(),
	}
}
