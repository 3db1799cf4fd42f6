package edge

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prometheus-streams/prometheus-streams/edge/scrape"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/certtest"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
	"github.com/prometheus-streams/prometheus-streams/stream"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// jsEdge is a run publishing to the JetStream stream PROMETHEUS on srv, as mod changes
// it, and scraping two targets whose job and instance need escaping in a subject.
func jsEdge(t *testing.T, srv *stantest.Server, mod func(s *stream.Options)) (Options, stream.Options) {
	t.Helper()
	target := fixture.ServeCapture(t, fixture.PushGateway)
	o := Options{RunTimeout: 9 * time.Second, Jobs: []*Job{testJob("a.job",
		scrape.Target{Name: "host.example:9091", URL: target.URL}, scrape.Target{Name: "x > y", URL: target.URL + "/y"})}}
	s := stream.Options{
		Transport: stream.TransportJetStream, Stream: "PROMETHEUS", URLs: []string{srv.URL()}, Topic: "prom.edge",
		ConnectTimeout: 2 * time.Second, MaxAge: 20 * time.Second, DuplicateWindow: 20 * time.Second,
	}
	if mod != nil {
		mod(&s)
	}
	return o, s
}

// create lets a run create the stream.
func create(s *stream.Options) { s.Create = true }

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
	o, so := jsEdge(t, srv, create)
	sel, err := Select(o.Jobs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// With the dictionary, which the messages' zstd frames must name (checked below).
	codec, err := envelope.NewCodec(envelope.BodyCompression(envelope.CompressionZstdDict))
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	logger := slog.New(slog.DiscardHandler)
	dial := Dial(so, o)
	retried := func(ctx context.Context) (stream.Publisher, error) {
		c, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		return retrying{c}, nil
	}
	sum, err := New(o, codec, retried, logger, "test").Run(context.Background(), sel)
	if err != nil || sum.Acked != 2 {
		t.Fatalf("run: %v, %+v", err, sum)
	}

	st := jsStream(t, srv, "PROMETHEUS")
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := info.Config
	if c.Subjects[0] != "prom.edge.>" || c.Storage != jetstream.FileStorage || c.MaxAge != so.MaxAge || c.Duplicates != so.DuplicateWindow {
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
	run := func(o Options, s stream.Options) error {
		sel, err := Select(o.Jobs, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		logger := slog.New(slog.DiscardHandler)
		_, err = New(o, codec, Dial(s, o), logger, "test").Run(context.Background(), sel)
		return err
	}

	err = run(jsEdge(t, srv, nil))
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
	err = run(jsEdge(t, srv, create)) // an existing stream is never changed
	if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), `captures ["other.>"], not "prom.edge.>"`) {
		t.Fatalf("stream of other subjects: %v", err)
	}

	if _, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: "PROMETHEUS", Subjects: []string{"prom.*.>"}, NoAck: true}); err != nil {
		t.Fatal(err)
	}
	if err := run(jsEdge(t, srv, nil)); !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), "no_ack") {
		t.Fatalf("stream without acks: %v", err)
	}
	if _, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: "PROMETHEUS", Subjects: []string{"prom.*.>"}}); err != nil {
		t.Fatal(err)
	}
	if err := run(jsEdge(t, srv, nil)); err != nil {
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
	tls := stream.Security{CAFile: ca.CertFile, CertFile: client.CertFile, KeyFile: client.KeyFile}
	withToken := tls
	withToken.TokenFile = tokenFile
	for _, c := range []struct {
		name string
		sec  stream.Security
		ok   bool
	}{
		{"tls and token", withToken, true},
		{"no token", tls, false},
	} {
		o, s := jsEdge(t, srv, func(s *stream.Options) { s.Create, s.Security = true, c.sec })
		sel, err := Select(o.Jobs, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		logger := slog.New(slog.DiscardHandler)
		_, err = New(o, codec, Dial(s, o), logger, "test").Run(context.Background(), sel)
		switch {
		case c.ok && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case !c.ok && (!errors.Is(err, ErrUnreachable) || !errors.Is(err, stream.ErrAuth)):
			t.Errorf("%s: %v, want an authentication failure", c.name, err)
		}
	}
}

// TestPublisherOptions: a run publishes with a client ID of its own, which names the
// publisher, and waits for each ack a quarter of the run, within 1s and the client's
// default; the rest of the stream options are as given.
func TestPublisherOptions(t *testing.T) {
	s := stream.Options{ClientID: "edge", Topic: "t", URLs: []string{"nats://h:4222"}}
	for _, c := range []struct {
		run, want time.Duration
	}{
		{20 * time.Second, 5 * time.Second},
		{2 * time.Second, time.Second},
		{time.Hour, stream.DefaultPubAckWait},
	} {
		o := Options{Identity: "host.example", RunTimeout: c.run}
		a, b := publisherOptions(s, o), publisherOptions(s, o)
		if !strings.HasPrefix(a.ClientID, "edge-host_example-") || a.ClientID == b.ClientID {
			t.Errorf("client IDs %q and %q: want edge-host_example-… each its own", a.ClientID, b.ClientID)
		}
		if a.PubAckWait != c.want {
			t.Errorf("run of %v: ack wait %v, want %v", c.run, a.PubAckWait, c.want)
		}
		a.ClientID, a.PubAckWait = s.ClientID, s.PubAckWait
		if !reflect.DeepEqual(a, s) {
			t.Errorf("options %+v, want %+v but for client ID and ack wait", a, s)
		}
	}
}
