package stream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"github.com/nats-io/stan.go"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
)

func TestPublishAsyncAckedAndReadBackInOrder(t *testing.T) {
	srv := stantest.Start(t)
	s := dial(t, srv)
	const n = 500
	var acks Acks
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("scrape %d", i)
		if err := acks.Publish(&publisher{conn: s}, "metrics", []byte(want[i]), "", nil); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if acked, failed, pending := acks.Wait(ctx); acked != n || failed != 0 || pending != 0 {
		t.Fatalf("Wait = acked %d, failed %d, pending %d; want %d, 0, 0 (first error %v)", acked, failed, pending, n, acks.Err())
	}
	got := readBack(t, srv, "metrics", n)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("message %d = %q, want %q", i, got[i], want[i])
		}
	}
}

var clientIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func TestClientID(t *testing.T) {
	for _, tc := range []struct {
		prefix, host string
		want         string // before the random part
	}{
		{"scrape-once", "edge-1", "scrape-once-edge-1-"},
		{"scrape-once", "edge1.example.org", "scrape-once-edge1_example_org-"},
		{"scrape once", "my host", "scrape_once-my_host-"},
		{"drain", "hôte-ünïcode", "drain-h_te-_n_code-"},
		{"drain", "日本", "drain-__-"},
		{"p", "bad\xffutf8", "p-bad_utf8-"},
		{"p", "a:b/c@d", "p-a_b_c_d-"},
		{"under_score", "", "under_score-"},
		{"", "host", "host-"},
		{"", "", ""},
	} {
		got := ClientID(tc.prefix, tc.host)
		if !clientIDPattern.MatchString(got) {
			t.Errorf("ClientID(%q, %q) = %q: characters outside [A-Za-z0-9_-]", tc.prefix, tc.host, got)
		}
		rest, ok := strings.CutPrefix(got, tc.want)
		if !ok || !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(rest) {
			t.Errorf("ClientID(%q, %q) = %q, want %q + 16 hex digits", tc.prefix, tc.host, got, tc.want)
		}
	}
	seen := map[string]bool{}
	for range 10000 {
		id := ClientID("scrape-once", "edge-1")
		if seen[id] {
			t.Fatalf("ClientID repeated %q", id)
		}
		seen[id] = true
	}
}

func TestDialTwiceWithClientIDDoesNotCollide(t *testing.T) {
	srv := stantest.Start(t)
	// As a systemd timer would: one run after the other, on the same host...
	for run := range 2 {
		s := dial(t, srv, func(o *STANOptions) { o.ClientID = ClientID("scrape-once", "edge-1") })
		r := newResult()
		if err := s.PublishAsync("runs", []byte(fmt.Sprint(run)), r.done); err != nil {
			t.Fatal(err)
		}
		if err := r.wait(t); err != nil {
			t.Fatalf("run %d: ack: %v", run, err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("run %d: close: %v", run, err)
		}
	}
	// ...and overlapping, as when a run outlives its interval.
	a := dial(t, srv, func(o *STANOptions) { o.ClientID = ClientID("scrape-once", "edge-1") })
	b := dial(t, srv, func(o *STANOptions) { o.ClientID = ClientID("scrape-once", "edge-1") })
	if a.ClientID() == b.ClientID() {
		t.Fatalf("same client ID %q", a.ClientID())
	}
	for _, s := range []*STAN{a, b} {
		r := newResult()
		if err := s.PublishAsync("runs", []byte(s.ClientID()), r.done); err != nil {
			t.Fatal(err)
		}
		if err := r.wait(t); err != nil {
			t.Fatalf("%s: ack: %v", s.ClientID(), err)
		}
	}
}

// What ClientID avoids: a fixed ID is refused while its holder is alive.
func TestDialFixedClientIDCollides(t *testing.T) {
	srv := stantest.Start(t)
	dial(t, srv, func(o *STANOptions) { o.ClientID = "scrape-once" })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := DialSTAN(ctx, STANOptions{URLs: []string{srv.URL()}, ClusterID: srv.ClusterID(), ClientID: "scrape-once"})
	if err == nil {
		_ = s.Close()
		t.Fatal("second connection with the same client ID succeeded")
	}
	if !errors.Is(err, ErrClientIDInUse) {
		t.Fatalf("err = %v, want ErrClientIDInUse", err)
	}
}

func TestDialValidatesOptions(t *testing.T) {
	ok := STANOptions{URLs: []string{"nats://127.0.0.1:1"}, ClusterID: "c", ClientID: "id"}
	for name, edit := range map[string]func(*STANOptions){
		"no URL":         func(o *STANOptions) { o.URLs = nil },
		"no cluster":     func(o *STANOptions) { o.ClusterID = "" },
		"no client ID":   func(o *STANOptions) { o.ClientID = "" },
		"bad client ID":  func(o *STANOptions) { o.ClientID = "edge.example" },
		"space in ID":    func(o *STANOptions) { o.ClientID = "a b" },
		"unicode in ID":  func(o *STANOptions) { o.ClientID = "hôte" },
		"wildcard in ID": func(o *STANOptions) { o.ClientID = "a*" },
	} {
		o := ok
		edit(&o)
		if _, err := DialSTAN(context.Background(), o); err == nil || errors.Is(err, ErrUnreachable) {
			t.Errorf("%s: err = %v, want a validation error", name, err)
		}
	}
}

// closedPortURL returns a loopback URL nothing listens on.
func closedPortURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return "nats://" + addr
}

// silentURL returns a loopback URL whose listener accepts connections and never says a
// word, so a NATS handshake waits for its timeout.
func silentURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return "nats://" + l.Addr().String()
}

func TestDialUnreachable(t *testing.T) {
	srv := stantest.Start(t)
	for _, tc := range []struct {
		name      string
		urls      []string
		clusterID string
	}{
		{"closed port", []string{closedPortURL(t)}, "c"},
		{"two closed ports", []string{closedPortURL(t), closedPortURL(t)}, "c"},
		{"silent server", []string{silentURL(t)}, "c"},
		{"no streaming server for cluster", []string{srv.URL()}, "no-such-cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			start := time.Now()
			s, err := DialSTAN(ctx, STANOptions{
				URLs:           tc.urls,
				ClusterID:      tc.clusterID,
				ClientID:       ClientID("test", ""),
				ConnectTimeout: 30 * time.Second, // the ctx must cut it short
			})
			elapsed := time.Since(start)
			if err == nil {
				_ = s.Close()
				t.Fatal("DialSTAN succeeded")
			}
			t.Logf("after %v: %v", elapsed.Round(time.Millisecond), err)
			if !errors.Is(err, ErrUnreachable) {
				t.Errorf("err = %v, want ErrUnreachable", err)
			}
			if elapsed > 5*time.Second {
				t.Errorf("DialSTAN took %v with a 2s context deadline", elapsed)
			}
			for _, u := range tc.urls {
				if !strings.Contains(err.Error(), u) {
					t.Errorf("error %q does not name URL %s", err, u)
				}
			}
		})
	}
}

// A streaming server that takes the connect request and never answers: the ctx, not
// ConnectTimeout, ends the wait.
func TestDialStreamingHandshakeHonoursContext(t *testing.T) {
	srv := stantest.Start(t, stantest.WithSeparateNATS())
	srv.ShutdownStreaming()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	requests := make(chan struct{}, 1)
	if _, err := nc.Subscribe(stan.DefaultDiscoverPrefix+"."+srv.ClusterID(), func(*nats.Msg) {
		select {
		case requests <- struct{}{}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, err = DialSTAN(ctx, STANOptions{URLs: []string{srv.URL()}, ClusterID: srv.ClusterID(), ClientID: ClientID("test", ""), ConnectTimeout: 30 * time.Second})
	elapsed := time.Since(start)
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrUnreachable and context.DeadlineExceeded", err)
	}
	if elapsed > 5*time.Second {
		t.Errorf("DialSTAN took %v with a 1s context deadline", elapsed)
	}
	select {
	case <-requests:
	default:
		t.Error("no connect request reached the fake streaming server")
	}
}

func TestDialCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := DialSTAN(ctx, STANOptions{URLs: []string{silentURL(t)}, ClusterID: "c", ClientID: "id"})
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want ErrUnreachable and context.Canceled", err)
	}
}

func TestRedactURLs(t *testing.T) {
	got := redactURLs([]string{
		"nats://user:secret@host:4222",
		"nats://s3cr3ttoken@host:4222",
		"nats://host:4222",
		"tok:en@host:4222",
	})
	if strings.Contains(got, "secret") || strings.Contains(got, "s3cr3t") || strings.Contains(got, "tok:en") {
		t.Errorf("redactURLs leaks a credential: %s", got)
	}
	if !strings.Contains(got, "nats://host:4222") || strings.Count(got, "host:4222") != 4 {
		t.Errorf("redactURLs lost the hosts: %s", got)
	}
}

func TestMaxPayloadBoundary(t *testing.T) {
	const limit = 64 * 1024
	srv := stantest.Start(t, stantest.WithMaxPayload(limit))
	s := dial(t, srv)
	const subject = "metrics.edge-1"
	max := s.MaxPayload(subject)
	if max <= limit-200 || max >= limit {
		t.Fatalf("MaxPayload = %d for a %d byte server limit: overhead %d not plausible", max, limit, limit-max)
	}

	// Exactly MaxPayload: persisted.
	r := newResult()
	if err := s.PublishAsync(subject, make([]byte, max), r.done); err != nil {
		t.Fatalf("publish %d bytes: %v", max, err)
	}
	if err := r.wait(t); err != nil {
		t.Fatalf("%d bytes: ack %v", max, err)
	}

	// One byte more: ErrTooLarge, done never called...
	over := newResult()
	err := s.PublishAsync(subject, make([]byte, max+1), over.done)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("publish %d bytes: err = %v, want ErrTooLarge", max+1, err)
	}
	// ...and the bound is tight: stan.go itself would have exceeded NATS's limit.
	if _, err := s.sc.PublishAsync(subject, make([]byte, max+1), func(string, error) {}); !errors.Is(err, nats.ErrMaxPayload) {
		t.Errorf("raw stan publish of MaxPayload+1 bytes: err = %v, want nats.ErrMaxPayload", err)
	}

	// Far too large, and the connection still works afterwards.
	if err := s.PublishAsync(subject, make([]byte, 10*limit), over.done); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("publish %d bytes: err = %v, want ErrTooLarge", 10*limit, err)
	}
	small := newResult()
	if err := s.PublishAsync(subject, []byte("small"), small.done); err != nil {
		t.Fatalf("small publish after oversize: %v", err)
	}
	if err := small.wait(t); err != nil {
		t.Fatalf("small publish after oversize: ack %v", err)
	}
	if n := over.count(); n != 0 {
		t.Errorf("done called %d times for refused publishes", n)
	}
	got := readBack(t, srv, subject, 2)
	if len(got[0]) != max || got[1] != "small" {
		t.Errorf("read back %d bytes and %q", len(got[0]), got[1])
	}
}

func TestMaxPayloadDefaultServer(t *testing.T) {
	srv := stantest.Start(t)
	s := dial(t, srv)
	// A longer subject leaves less room.
	short, long := s.MaxPayload("m"), s.MaxPayload(strings.Repeat("m", 100))
	if short >= 1024*1024 || short < 1024*1024-200 || long != short-99 {
		t.Errorf("MaxPayload = %d (subject of 1 byte), %d (100 bytes)", short, long)
	}
	r := newResult()
	if err := s.PublishAsync("m", make([]byte, short), r.done); err != nil {
		t.Fatal(err)
	}
	if err := r.wait(t); err != nil {
		t.Fatalf("ack of %d bytes: %v", short, err)
	}
}

func TestPubIDLen(t *testing.T) {
	if n := len(nuid.Next()); n != pubIDLen {
		t.Fatalf("NUIDs are %d bytes, MaxPayload assumes %d", n, pubIDLen)
	}
}

// stan.go on Close with acks outstanding: each ack handler gets ErrConnectionClosed,
// from a goroutine of its own (so after or during Close), exactly once. done may call
// Close itself without deadlock.
func TestCloseWithOutstandingAcks(t *testing.T) {
	srv := stantest.Start(t, stantest.WithSeparateNATS())
	s := dial(t, srv, func(o *STANOptions) {
		o.PubAckWait = time.Minute
		// Bounds Close's unanswered close request: NATS may still route it to the
		// stopped server's connection for a moment (then it times out rather than
		// failing at once with no responders).
		o.ConnectTimeout = time.Second
	})
	srv.ShutdownStreaming() // NATS stays up: publishes go out, no acks come back

	const n = 50
	var acks Acks
	var mu sync.Mutex
	var errs []error
	for i := range n {
		err := acks.Publish(&publisher{conn: s}, "metrics", []byte{byte(i)}, "", func(err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
			_ = s.Close() // must not deadlock
		})
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if acked, failed, pending := acks.Counts(); acked+failed != 0 || pending != n {
		t.Fatalf("before Close: acked %d, failed %d, pending %d", acked, failed, pending)
	}
	err := s.Close()
	t.Logf("Close with the streaming server down: %v", err)
	if err == nil {
		t.Error("Close reported no error though no server answered the close request")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if acked, failed, pending := acks.Wait(ctx); acked != 0 || failed != n || pending != 0 {
		t.Fatalf("after Close: acked %d, failed %d, pending %d; want 0, %d, 0", acked, failed, pending, n)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, err := range errs {
		if !errors.Is(err, ErrClosed) || !errors.Is(err, stan.ErrConnectionClosed) {
			t.Fatalf("done got %v, want ErrClosed", err)
		}
	}
	select {
	case <-s.Done():
	default:
		t.Error("Done not closed after Close")
	}
	if !errors.Is(s.Err(), ErrClosed) {
		t.Errorf("Err() = %v, want ErrClosed", s.Err())
	}
	r := newResult()
	if err := s.PublishAsync("metrics", []byte("late"), r.done); !errors.Is(err, ErrClosed) {
		t.Errorf("publish after Close: err = %v, want ErrClosed", err)
	}
	if r.count() != 0 {
		t.Error("done called for a publish that returned an error")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestAckTimeout(t *testing.T) {
	srv := stantest.Start(t, stantest.WithSeparateNATS())
	s := dial(t, srv, func(o *STANOptions) { o.PubAckWait = 100 * time.Millisecond })
	srv.ShutdownStreaming()
	r := newResult()
	if err := s.PublishAsync("metrics", []byte("x"), r.done); err != nil {
		t.Fatal(err)
	}
	if err := r.wait(t); !errors.Is(err, ErrAckTimeout) {
		t.Fatalf("done got %v, want ErrAckTimeout", err)
	}
}

func TestCloseFromDone(t *testing.T) {
	srv := stantest.Start(t)
	s := dial(t, srv)
	closed := make(chan error, 1)
	if err := s.PublishAsync("metrics", []byte("x"), func(err error) { closed <- errors.Join(err, s.Close()) }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close from inside done did not return")
	}
}

func TestPublishWhileDisconnected(t *testing.T) {
	srv := stantest.Start(t)
	log := newTestLog(t)
	s := dial(t, srv, func(o *STANOptions) { o.Logger = log.logger() })
	srv.Shutdown()
	log.await(t, "disconnected from NATS", 10*time.Second)
	r := newResult()
	if err := s.PublishAsync("metrics", []byte("x"), r.done); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("publish while disconnected: err = %v, want ErrUnreachable", err)
	}
	if r.count() != 0 {
		t.Error("done called for a publish that returned an error")
	}
}

// A memory-store server restarted on the same port has forgotten the client: the session
// is lost (at the first client ping, 5s in stan.go) though NATS reconnects.
func TestSessionLostAfterServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for stan.go's 5s client ping")
	}
	srv := stantest.Start(t)
	log := newTestLog(t)
	s := dial(t, srv, func(o *STANOptions) { o.Logger = log.logger() })
	port := srv.Port()
	srv.Shutdown()
	log.await(t, "disconnected from NATS", 10*time.Second)
	stantest.Start(t, stantest.WithPort(port))
	log.await(t, "reconnected to NATS", 20*time.Second)
	select {
	case <-s.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("session not reported lost within 30s")
	}
	if err := s.Err(); !errors.Is(err, ErrUnreachable) || !errors.Is(err, ErrClosed) {
		t.Fatalf("Err() = %v, want ErrUnreachable and ErrClosed", err)
	}
	log.await(t, "NATS Streaming session lost", time.Second)
	if err := s.PublishAsync("metrics", []byte("x"), nil); !errors.Is(err, ErrUnreachable) {
		t.Errorf("publish after loss: err = %v, want ErrUnreachable (session lost)", err)
	}
}
