package pgwtest_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/pgwtest"
)

const text = "text/plain; version=0.0.4"

func TestStartPushScrape(t *testing.T) {
	s := pgwtest.Start(t)
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
		t.Fatalf("URL %q is not on loopback", s.URL())
	}
	if got := s.PushRaw(t, "/metrics/job/j/instance/i", text, []byte("# TYPE x gauge\nx{a=\"b\"} 42\n")); got != http.StatusOK {
		t.Fatalf("PUT: %d, want 200", got)
	}
	fams := s.Scrape(t)
	f := fams["x"]
	if f == nil || len(f.GetMetric()) != 1 {
		t.Fatalf("x not scraped: %v", f)
	}
	m := f.GetMetric()[0]
	if m.GetGauge().GetValue() != 42 {
		t.Errorf("x = %v, want 42", m.GetGauge().GetValue())
	}
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if want := map[string]string{"a": "b", "job": "j", "instance": "i"}; fmt.Sprint(labels) != fmt.Sprint(want) {
		t.Errorf("labels %v, want %v", labels, want)
	}
	if fams["push_time_seconds"] == nil {
		t.Error("no push_time_seconds")
	}
}

// Each Start has its own, empty gateway: nothing carries over through a
// persistence file.
func TestStartIsolated(t *testing.T) {
	a := pgwtest.Start(t)
	a.PushRaw(t, "/metrics/job/only_in_a", text, []byte("y 1\n"))
	b := pgwtest.Start(t)
	if a.URL() == b.URL() {
		t.Fatalf("both gateways at %s", a.URL())
	}
	if _, ok := b.Scrape(t)["y"]; ok {
		t.Error("second gateway holds the first one's group")
	}
}

func TestStopRestart(t *testing.T) {
	s := pgwtest.Start(t)
	url := s.URL()
	s.PushRaw(t, "/metrics/job/j", text, []byte("z 1\n"))
	s.Stop()
	s.Stop() // idempotent
	_, err := http.Get(url + "/-/ready")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("stopped gateway: got %v, want connection refused", err)
	}
	s.Restart()
	if s.URL() != url {
		t.Fatalf("restarted at %s, was %s", s.URL(), url)
	}
	if _, ok := s.Scrape(t)["z"]; ok {
		t.Error("group survived a restart without persistence")
	}
	if got := s.PushRaw(t, "/metrics/job/j", text, []byte("z 2\n")); got != http.StatusOK {
		t.Fatalf("PUT after restart: %d", got)
	}
	s.Restart() // from running
	if got := s.PushRaw(t, "/metrics/job/j", text, []byte("z 3\n")); got != http.StatusOK {
		t.Fatalf("PUT after second restart: %d", got)
	}
}

// Restart waits out a port briefly held by someone else, who answers HTTP too.
func TestRestartPortBusy(t *testing.T) {
	s := pgwtest.Start(t)
	s.Stop()
	l, err := net.Listen("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	impostor := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})}
	go func() { _ = impostor.Serve(l) }()
	time.AfterFunc(500*time.Millisecond, func() { _ = impostor.Close() })
	s.Restart()
	if got := s.PushRaw(t, "/metrics/job/j", text, []byte("r 1\n")); got != http.StatusOK {
		t.Fatalf("PUT after restart: %d", got)
	}
	if s.Scrape(t)["r"] == nil {
		t.Error("restarted gateway is not the one answering")
	}
}

func TestPersistenceFile(t *testing.T) {
	s := pgwtest.Start(t, pgwtest.WithPersistenceFile(filepath.Join(t.TempDir(), "pgw.data")))
	s.PushRaw(t, "/metrics/job/j", text, []byte("kept 7\n"))
	s.Restart()
	f := s.Scrape(t)["kept"]
	if f == nil || f.GetMetric()[0].GetUntyped().GetValue() != 7 {
		t.Fatalf("group not restored from the persistence file: %v", f)
	}
}

func TestWithoutConsistencyCheck(t *testing.T) {
	s := pgwtest.Start(t, pgwtest.WithoutConsistencyCheck())
	// Unchecked pushes are queued and answered 202 at once.
	if got := s.PushRaw(t, "/metrics/job/j", text, []byte("# TYPE c counter\nc 1\n")); got != http.StatusAccepted {
		t.Fatalf("PUT: %d, want 202", got)
	}
}

func TestRoutePrefix(t *testing.T) {
	s := pgwtest.Start(t, pgwtest.WithRoutePrefix("/pgw/"))
	if !strings.HasSuffix(s.URL(), "/pgw") {
		t.Fatalf("URL %s lacks the prefix", s.URL())
	}
	if got := s.PushRaw(t, "/metrics/job/j", text, []byte("p 1\n")); got != http.StatusOK {
		t.Fatalf("PUT: %d", got)
	}
	if s.Scrape(t)["p"] == nil {
		t.Error("p not scraped under the prefix")
	}
}

// fatalTB records a Fatal and stops the calling code, as t.Fatal would.
type fatalTB struct {
	testing.TB
	msg string
}

type fatal struct{}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(fatal{})
}

func TestMissingBinaryFails(t *testing.T) {
	tb := &fatalTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(fatal); !ok {
					panic(r)
				}
			}
		}()
		pgwtest.Start(tb, pgwtest.WithBinary(filepath.Join(t.TempDir(), "no-such-pushgateway")))
	}()
	if !strings.Contains(tb.msg, "apt-get install prometheus-pushgateway") {
		t.Errorf("missing binary: got Fatal %q, want one naming the package", tb.msg)
	}
}

func TestBinaryFromEnv(t *testing.T) {
	t.Setenv("PUSHGATEWAY_BIN", filepath.Join(t.TempDir(), "elsewhere"))
	tb := &fatalTB{TB: t}
	func() {
		defer func() { _ = recover() }()
		pgwtest.Start(tb)
	}()
	if !strings.Contains(tb.msg, "elsewhere") {
		t.Errorf("$PUSHGATEWAY_BIN ignored: %q", tb.msg)
	}
}
