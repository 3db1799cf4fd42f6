package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/certtest"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
	"github.com/prometheus-streams/prometheus-streams/stream"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// jsEdge is a config publishing to a JetStream stream on srv, scraping two targets
// whose job and instance need escaping in a subject.
func jsEdge(t *testing.T, srv *stantest.Server, poller string) *config.Config {
	t.Helper()
	target := fixture.ServeCapture(t, fixture.PushGateway)
	cfg, err := config.Parse([]byte(fmt.Sprintf(`scrape_interval: 10s
poller_stream: {transport: jetstream, stream: PROMETHEUS, urls: '%s', topic: prom.edge, connect_timeout: 2s, %s}
jobs:
  'a.job':
    targets:
      - {name: 'host.example:9091', url: '%s'}
      - {name: 'x > y', url: '%s/y'}
`, srv.URL(), poller, target.URL, target.URL)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// retrying publishes every message twice with the same ID, as a publisher that did not
// hear the first ack would.
type retrying struct{ stream.Publisher }

func (r retrying) PublishAsync(subject string, data []byte, msgID string, done func(error)) error {
	var wg sync.WaitGroup
	wg.Add(1)
	if err := r.Publisher.PublishAsync(subject, data, msgID, func(error) { wg.Done() }); err != nil {
		return err
	}
	go func() {
		wg.Wait() // the retry goes out once the first is answered: done must not publish
		if err := r.Publisher.PublishAsync(subject, data, msgID, done); err != nil {
			done(err)
		}
	}()
	return nil
}

func TestRunJetStream(t *testing.T) {
	srv := stantest.Start(t, stantest.WithJetStream(t.TempDir()))
	// With the dictionary, which the messages' zstd frames must name (checked below).
	cfg := jsEdge(t, srv, "create_stream: true, body_compression: zstd_dictionary")
	sel, err := Select(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := CodecOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	codec, err := envelope.NewCodec(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	logger := slog.New(slog.DiscardHandler)
	dial := Dial(cfg, logger)
	retried := func(ctx context.Context) (stream.Publisher, error) {
		c, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		return retrying{c}, nil
	}
	sum, err := New(cfg, codec, retried, logger, "test").Run(context.Background(), sel)
	if err != nil || sum.Acked != 2 {
		t.Fatalf("run: %v, %+v", err, sum)
	}

	st := jsStream(t, srv, "PROMETHEUS")
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := info.Config
	if c.Subjects[0] != "prom.edge.>" || c.Storage != jetstream.FileStorage || c.MaxAge != cfg.MaxAge.D() ||
		c.Duplicates < cfg.ScrapeInterval.D() || c.Duplicates != cfg.DuplicateWindow() {
		t.Errorf("created stream: subjects %q storage %v max_age %v duplicates %v", c.Subjects, c.Storage, c.MaxAge, c.Duplicates)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("stream holds %d messages, want 2: each retried publish stored once", info.State.Msgs)
	}
	want := map[string]string{
		"prom.edge.a%2Ejob.host%2Eexample:9091": "host.example:9091",
		"prom.edge.a%2Ejob.x%20%3E%20y":         "x > y",
	}
	for seq := uint64(1); seq <= 2; seq++ {
		m, err := st.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		e, err := codec.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if want[m.Subject] != e.Instance || e.Job != "a.job" {
			t.Errorf("message %d of %s/%s on subject %q", seq, e.Job, e.Instance, m.Subject)
		}
		if id := m.Header.Get(jetstream.MsgIDHeader); id != stream.MsgID(e.Job, e.Instance, e.Start, 0, 1) {
			t.Errorf("message %d: Nats-Msg-Id %q, want MsgID of its scrape", seq, id)
		}
		if id := zstdDictionary(t, m.Data); id != envelope.DictionaryID {
			t.Errorf("message %d: body's zstd frame names dictionary %d, want %d", seq, id, envelope.DictionaryID)
		}
	}
}

// zstdDictionary returns the dictionary ID of the zstd frame in an envelope's body.
func zstdDictionary(tb testing.TB, msg []byte) uint32 {
	tb.Helper()
	i := bytes.Index(msg, []byte{0x28, 0xb5, 0x2f, 0xfd}) // zstd frame magic
	if i < 0 {
		tb.Fatal("no zstd frame in the message")
	}
	var h zstd.Header
	if err := h.Decode(msg[i:]); err != nil {
		tb.Fatal(err)
	}
	return h.DictionaryID
}

func TestRunJetStreamStreamChecks(t *testing.T) {
	srv := stantest.Start(t, stantest.WithJetStream(t.TempDir()))
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	run := func(cfg *config.Config) error {
		sel, err := Select(cfg, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		logger := slog.New(slog.DiscardHandler)
		_, err = New(cfg, codec, Dial(cfg, logger), logger, "test").Run(context.Background(), sel)
		return err
	}

	err = run(jsEdge(t, srv, "create_stream: false"))
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, stream.ErrNoStream) {
		t.Fatalf("missing stream: %v", err)
	}
	for _, want := range []string{`no such JetStream stream "PROMETHEUS"`, "nats stream add PROMETHEUS --subjects 'prom.edge.>' --storage file",
		"--max-age 20s --dupe-window 20s", "create_stream: true"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing stream: %q lacks %q", err, want)
		}
	}

	js := jsContext(t, srv)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PROMETHEUS", Subjects: []string{"other.>"}}); err != nil {
		t.Fatal(err)
	}
	err = run(jsEdge(t, srv, "create_stream: true")) // an existing stream is never changed
	if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), `captures ["other.>"], not "prom.edge.>"`) {
		t.Fatalf("stream of other subjects: %v", err)
	}

	if _, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: "PROMETHEUS", Subjects: []string{"prom.*.>"}, NoAck: true}); err != nil {
		t.Fatal(err)
	}
	if err := run(jsEdge(t, srv, "create_stream: false")); !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), "no_ack") {
		t.Fatalf("stream without acks: %v", err)
	}
	if _, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: "PROMETHEUS", Subjects: []string{"prom.*.>"}}); err != nil {
		t.Fatal(err)
	}
	if err := run(jsEdge(t, srv, "create_stream: false")); err != nil {
		t.Fatalf("stream capturing prom.*.>: %v", err)
	}
}

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

func jsStream(t *testing.T, srv *stantest.Server, name string) jetstream.Stream {
	t.Helper()
	st, err := jsContext(t, srv).Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestREADMEStreamAdd checks the README's `nats stream add` equivalent of create_stream
// against what scrape-once creates for the config it names.
func TestREADMEStreamAdd(t *testing.T) {
	cfg, err := config.Parse([]byte("scrape_interval: 60s\nmax_age: 2m\npoller_stream: {transport: jetstream, stream: PROMETHEUS, urls: 'nats://h:4222'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	cmd := options(cfg, nil).StreamAddCommand()
	if !strings.Contains(string(readme), "\n"+cmd+"\n") {
		t.Errorf("README lacks the command scrape-once's create_stream amounts to:\n%s", cmd)
	}
}

// TestRunJetStreamSecurity: the stream section's TLS and credentials apply to JetStream
// as to STAN.
func TestRunJetStreamSecurity(t *testing.T) {
	ca := certtest.NewCA(t, "nats-ca")
	const token = "t0ken-for-jetstream"
	srv := stantest.Start(t, stantest.WithJetStream(t.TempDir()), stantest.WithTLS(ca, true), stantest.WithToken(token))
	client := ca.Client("edge")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	tls := fmt.Sprintf("create_stream: true, tls: {ca: '%s', cert: '%s', key: '%s'}", ca.CertFile, client.CertFile, client.KeyFile)
	for _, c := range []struct {
		name, keys string
		ok         bool
	}{
		{"tls and token", tls + ", token_file: '" + tokenFile + "'", true},
		{"no token", tls, false},
	} {
		cfg := jsEdge(t, srv, c.keys)
		sel, err := Select(cfg, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		logger := slog.New(slog.DiscardHandler)
		_, err = New(cfg, codec, Dial(cfg, logger), logger, "test").Run(context.Background(), sel)
		switch {
		case c.ok && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case !c.ok && (!errors.Is(err, ErrUnreachable) || !errors.Is(err, stream.ErrAuth)):
			t.Errorf("%s: %v, want an authentication failure", c.name, err)
		}
	}
}
