package stream

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/stan.go"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
)

// testLog is a slog handler that writes to t.Log (until the test ends) and lets a test
// await a log message, e.g. a connection event.
type testLog struct {
	mu      sync.Mutex
	t       testing.TB
	stopped bool
	seen    map[string]chan struct{}
}

func newTestLog(t testing.TB) *testLog {
	l := &testLog{t: t, seen: map[string]chan struct{}{}}
	t.Cleanup(func() {
		l.mu.Lock()
		l.stopped = true
		l.mu.Unlock()
	})
	return l
}

func (l *testLog) logger() *slog.Logger { return slog.New(l) }

// seenCh is closed once a record with message msg has been logged.
func (l *testLog) seenCh(msg string) chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	ch, ok := l.seen[msg]
	if !ok {
		ch = make(chan struct{})
		l.seen[msg] = ch
	}
	return ch
}

func (l *testLog) await(t *testing.T, msg string, timeout time.Duration) {
	t.Helper()
	select {
	case <-l.seenCh(msg):
	case <-time.After(timeout):
		t.Fatalf("no log %q within %v", msg, timeout)
	}
}

func (l *testLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *testLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *testLog) WithGroup(string) slog.Handler            { return l }
func (l *testLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	ch := l.seenCh(r.Message)
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-ch:
	default:
		close(ch)
	}
	if !l.stopped {
		l.t.Log(b.String())
	}
	return nil
}

// dial connects to srv with a fresh client ID, closing the connection when the test ends.
func dial(t *testing.T, srv *stantest.Server, edit ...func(*STANOptions)) *STAN {
	t.Helper()
	o := STANOptions{
		URLs:           []string{srv.URL()},
		ClusterID:      srv.ClusterID(),
		ClientID:       ClientID("test", "host.example"),
		ConnectTimeout: 5 * time.Second,
		Logger:         newTestLog(t).logger(),
	}
	for _, e := range edit {
		e(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := DialSTAN(ctx, o)
	if err != nil {
		t.Fatalf("DialSTAN(%s): %v", srv, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// readBack reads the first n messages of subject with a plain stan.go subscription.
func readBack(t *testing.T, srv *stantest.Server, subject string, n int) []string {
	t.Helper()
	sc, err := stan.Connect(srv.ClusterID(), ClientID("reader", ""), stan.NatsURL(srv.URL()))
	if err != nil {
		t.Fatalf("reader connect: %v", err)
	}
	defer func() { _ = sc.Close() }()
	ch := make(chan string, n)
	sub, err := sc.Subscribe(subject, func(m *stan.Msg) {
		select {
		case ch <- string(m.Data):
		default: // more than n: the test fails on the count anyway
		}
	}, stan.DeliverAllAvailable())
	if err != nil {
		t.Fatalf("subscribe %q: %v", subject, err)
	}
	defer func() { _ = sub.Close() }()
	got := make([]string, 0, n)
	timeout := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case m := <-ch:
			got = append(got, m)
		case <-timeout:
			t.Fatalf("read %d of %d messages from %q", len(got), n, subject)
		}
	}
	return got
}

// result records the error each done callback got, to check it came exactly once.
type result struct {
	mu    sync.Mutex
	calls int
	err   error
	ch    chan struct{}
}

func newResult() *result { return &result{ch: make(chan struct{})} }

func (r *result) done(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	r.err = err
	if r.calls == 1 {
		close(r.ch)
	}
}

func (r *result) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-r.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("done not called within 10s")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *result) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}
