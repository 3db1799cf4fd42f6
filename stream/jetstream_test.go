package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
)

func jsServer(t *testing.T) *stantest.Server {
	t.Helper()
	return stantest.Start(t, stantest.WithJetStream(t.TempDir()))
}

func jsOptions(srv *stantest.Server) JetStreamOptions {
	return JetStreamOptions{URLs: []string{srv.URL()}, Stream: "METRICS", Subject: "metrics", Create: true}
}

func dialJS(t *testing.T, srv *stantest.Server) *JetStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	j, err := DialJetStream(ctx, jsOptions(srv))
	if err != nil {
		t.Fatalf("DialJetStream: %v", err)
	}
	t.Cleanup(func() { _ = j.Close() })
	return j
}

func publishJS(t *testing.T, j *JetStream, bodies []string) {
	t.Helper()
	var acks Acks
	for _, b := range bodies {
		if err := acks.Publish(&publisher{conn: j}, Subject("metrics", "job", "inst"), []byte(b), "", nil); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if acked, failed, pending := acks.Wait(ctx); acked != len(bodies) {
		t.Fatalf("acked %d failed %d pending %d (%v)", acked, failed, pending, acks.Err())
	}
}

// runJS runs ConsumeJetStream until the returned stop is called (also at cleanup).
func runJS(t *testing.T, o JetStreamSubscribeOptions, handle func(*Msg)) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := ConsumeJetStream(ctx, o, handle, nil); err != nil {
			t.Errorf("ConsumeJetStream: %v", err)
		}
	})
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

func subOpts(srv *stantest.Server, ackWait time.Duration) JetStreamSubscribeOptions {
	return JetStreamSubscribeOptions{JetStreamOptions: jsOptions(srv), Durable: "drain", AckWait: ackWait}
}

func recv(t *testing.T, ch <-chan *Msg, timeout time.Duration) *Msg {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(timeout):
		t.Fatalf("no message within %v", timeout)
		return nil
	}
}

func bodies(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

func TestJetStreamPublishConsumeInOrder(t *testing.T) {
	srv := jsServer(t)
	j := dialJS(t, srv)
	want := bodies("m", 200)
	publishJS(t, j, want)

	ch := make(chan *Msg, 1000)
	runJS(t, subOpts(srv, 0), func(m *Msg) { ch <- m })
	for i, w := range want {
		m := recv(t, ch, 10*time.Second)
		if string(m.Data) != w || m.Sequence != uint64(i+1) || m.Redelivered {
			t.Fatalf("delivery %d: %q seq %d redelivered %v, want %q", i, m.Data, m.Sequence, m.Redelivered, w)
		}
		if m.Subject != "metrics.job.inst" {
			t.Fatalf("subject %q", m.Subject)
		}
		if err := m.Ack(); err != nil {
			t.Fatalf("ack: %v", err)
		}
		if err := m.Ack(); err != nil {
			t.Fatalf("second ack: %v", err)
		}
	}
}

func TestJetStreamDedupByMsgID(t *testing.T) {
	srv := jsServer(t)
	j := dialJS(t, srv)
	results := make(chan error, 3)
	for _, id := range []string{"a", "a", "b"} {
		if err := j.PublishAsyncMsg("metrics.x.y", []byte(id), id, func(err error) { results <- err }); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if err := <-results; err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	info, err := j.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("stream holds %d messages, want 2 (duplicate stored once)", info.State.Msgs)
	}
}

func TestJetStreamRedeliveries(t *testing.T) {
	srv := jsServer(t)
	j := dialJS(t, srv)
	publishJS(t, j, []string{"unacked", "nakked", "termed"})
	ch := make(chan *Msg, 100)
	runJS(t, subOpts(srv, time.Second), func(m *Msg) { ch <- m })

	first := map[string]time.Time{}
	for range 3 {
		m := recv(t, ch, 5*time.Second)
		first[string(m.Data)] = time.Now()
		switch string(m.Data) {
		case "nakked":
			if err := m.Nak(2 * time.Second); err != nil {
				t.Fatal(err)
			}
		case "termed":
			if err := m.Term(); err != nil {
				t.Fatal(err)
			}
		}
	}
	seen := map[string]bool{}
	deadline := time.After(5 * time.Second)
	for len(seen) < 2 {
		select {
		case m := <-ch:
			body := string(m.Data)
			after := time.Since(first[body])
			switch body {
			case "unacked":
				if after < 900*time.Millisecond {
					t.Errorf("unacked redelivered after %v, before AckWait", after)
				}
			case "nakked":
				if after < 2*time.Second {
					t.Errorf("nakked redelivered after %v, before its 2s delay", after)
				}
			case "termed":
				t.Fatalf("termed message redelivered after %v", after)
			}
			if !m.Redelivered {
				t.Errorf("%s: Redelivered not set", body)
			}
			_ = m.Ack()
			seen[body] = true
		case <-deadline:
			t.Fatalf("redelivered only %v", seen)
		}
	}
	select {
	case m := <-ch:
		t.Fatalf("unexpected delivery %q", m.Data)
	case <-time.After(1500 * time.Millisecond):
	}
}

func TestJetStreamConsumeResumesDurable(t *testing.T) {
	srv := jsServer(t)
	j := dialJS(t, srv)
	publishJS(t, j, bodies("a", 5))
	ch := make(chan *Msg, 100)
	// A short AckWait: a message the server hands to the stopped consumer's last pull
	// request, before it notices the connection is gone, comes back after it.
	stop := runJS(t, subOpts(srv, time.Second), func(m *Msg) { ch <- m })
	for range 5 {
		if err := recv(t, ch, 5*time.Second).Ack(); err != nil {
			t.Fatal(err)
		}
	}
	// Acks are not confirmed: wait until the server has taken them all.
	waitAcked(t, j, "drain")
	stop()
	publishJS(t, j, bodies("b", 3))
	ch2 := make(chan *Msg, 100)
	runJS(t, subOpts(srv, time.Second), func(m *Msg) { ch2 <- m })
	// Every b, none of the acked a's. Not necessarily in order: a b the server handed to
	// the stopped consumer's last pull request comes back only after AckWait.
	got := map[string]bool{}
	for range 3 {
		m := recv(t, ch2, 15*time.Second)
		if !strings.HasPrefix(string(m.Data), "b-") || got[string(m.Data)] {
			t.Fatalf("after restart got %q (already got %v)", m.Data, got)
		}
		got[string(m.Data)] = true
		_ = m.Ack()
	}
}

func TestJetStreamDialChecksStream(t *testing.T) {
	srv := jsServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o := jsOptions(srv)
	o.Create = false
	_, err := DialJetStream(ctx, o)
	if !errors.Is(err, ErrNoStream) || errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), `no such JetStream stream "METRICS"`) ||
		!strings.Contains(err.Error(), "create it with: nats stream add METRICS --subjects 'metrics.>'") {
		t.Fatalf("missing stream without Create: %v", err)
	}
	dialJS(t, srv) // creates it
	o.Subject = "other"
	if _, err := DialJetStream(ctx, o); !errors.Is(err, ErrStreamMismatch) || !strings.Contains(err.Error(), "captures") {
		t.Fatalf("stream of other subjects: %v", err)
	}

	// What a publisher cannot use; a consumer could.
	js := dialJS(t, srv).js
	for _, c := range []struct {
		cfg  jetstream.StreamConfig
		want string
	}{
		{jetstream.StreamConfig{Name: "NOACK", Subjects: []string{"noack.>"}, NoAck: true}, "no_ack"},
		{jetstream.StreamConfig{Name: "SEALED", Subjects: []string{"sealed.>"}}, "sealed"},
	} {
		if _, err := js.CreateStream(ctx, c.cfg); err != nil {
			t.Fatal(err)
		}
		if c.want == "sealed" {
			c.cfg.Sealed = true
			if _, err := js.UpdateStream(ctx, c.cfg); err != nil {
				t.Fatal(err)
			}
		}
		o := JetStreamOptions{URLs: []string{srv.URL()}, Stream: c.cfg.Name, Subject: strings.ToLower(c.cfg.Name)}
		if _, err := DialJetStream(ctx, o); !errors.Is(err, ErrStreamMismatch) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.cfg.Name, err)
		}
	}
}

// A created stream is what StreamAddCommand says, with the duplicate window at most
// MaxAge (which the server requires).
func TestJetStreamCreateSettings(t *testing.T) {
	for _, c := range []struct {
		o    JetStreamOptions
		want string
	}{
		{JetStreamOptions{Stream: "PROMETHEUS", Subject: "prometheus", MaxAge: 80 * time.Second},
			"nats stream add PROMETHEUS --subjects 'prometheus.>' --storage file --retention limits --discard old --max-age 1m20s --dupe-window 1m20s --replicas 1 --defaults"},
		{JetStreamOptions{Stream: "S", Subject: "a.b", MaxAge: 2 * time.Hour, DuplicateWindow: 5 * time.Minute},
			"nats stream add S --subjects 'a.b.>' --storage file --retention limits --discard old --max-age 2h --dupe-window 5m --replicas 1 --defaults"},
		{JetStreamOptions{Stream: "P", Subject: "p", MaxAge: time.Minute, Replicas: 3},
			"nats stream add P --subjects 'p.>' --storage file --retention limits --discard old --max-age 1m --dupe-window 1m --replicas 3 --defaults"},
		{JetStreamOptions{Stream: "it's", Subject: "x"},
			`nats stream add 'it'\''s' --subjects 'x.>' --storage file --retention limits --discard old --dupe-window 2m --replicas 1 --defaults`},
	} {
		if got := c.o.StreamAddCommand(); got != c.want {
			t.Errorf("StreamAddCommand:\n got %s\nwant %s", got, c.want)
		}
	}

	srv := jsServer(t)
	o := jsOptions(srv)
	o.MaxAge = 80 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	j, err := DialJetStream(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	cfg := j.StreamConfig()
	if cfg.Storage != jetstream.FileStorage || cfg.Retention != jetstream.LimitsPolicy || cfg.Discard != jetstream.DiscardOld ||
		cfg.MaxAge != 80*time.Second || cfg.Duplicates != 80*time.Second || cfg.Replicas != 1 || fmt.Sprint(cfg.Subjects) != "[metrics.>]" {
		t.Errorf("created stream: %+v", cfg)
	}
}

func TestSubjectEscaping(t *testing.T) {
	for _, c := range []struct{ job, instance, want string }{
		{"node", "host:9100", "p.node.host:9100"},
		{"a.b", "*", "p.a%2Eb.%2A"},
		{">", "x y\tz", "p.%3E.x%20y%09z"},
		{"", "100%", "p.%.100%25"},
		{"é", "a/b", "p.%C3%A9.a%2Fb"},
	} {
		got := Subject("p", c.job, c.instance)
		if got != c.want {
			t.Errorf("Subject(%q, %q) = %q, want %q", c.job, c.instance, got, c.want)
		}
		if err := validChannel(got); err != nil || len(strings.Split(got, ".")) != 3 {
			t.Errorf("Subject(%q, %q) = %q: not three plain tokens: %v", c.job, c.instance, got, err)
		}
		for _, s := range []string{c.job, c.instance} {
			if back, err := UnescapeToken(EscapeToken(s)); err != nil || back != s {
				t.Errorf("UnescapeToken(EscapeToken(%q)) = %q, %v", s, back, err)
			}
		}
	}
	for _, bad := range []string{"", "%2", "%zz", "%41", "a.b", "%2e"} {
		if _, err := UnescapeToken(bad); err == nil {
			t.Errorf("UnescapeToken(%q) accepted", bad)
		}
	}
}

// waitAcked waits until the durable has no message pending an ack on the server.
func waitAcked(t *testing.T, j *JetStream, durable string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		c, err := j.js.Consumer(ctx, j.Stream(), durable)
		if err == nil {
			info, err := c.Info(ctx)
			if err == nil && info.NumAckPending == 0 {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("acks of %s not taken by the server: %v", durable, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
