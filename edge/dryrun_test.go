package edge

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/prometheus-streams/prometheus-streams/edge/scrape"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// TestDryRunOrder: for a terminal, a fast target is written while a slow one is still
// being scraped; otherwise the output is in selection order.
func TestDryRunOrder(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		fmt.Fprintln(w, "slow_metric 1")
	}))
	defer slow.Close()
	fast := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "fast_metric 1")
	}))
	defer fast.Close()
	o := Options{RunTimeout: 30 * time.Second, Jobs: []*Job{testJob("j", scrape.Target{Name: "slow", URL: slow.URL}, scrape.Target{Name: "fast", URL: fast.URL})}}
	sel, err := Select(o.Jobs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	r := New(o, codec, nil, slog.New(slog.DiscardHandler), "test")

	// As each ends: the fast target's line arrives before the slow one is released.
	w := &signalWriter{wrote: make(chan string, 4)}
	done := make(chan error, 1)
	go func() {
		_, err := r.DryRun(context.Background(), sel, w, true)
		done <- err
	}()
	if first := <-w.wrote; !strings.HasPrefix(first, "# j/fast: ok") {
		t.Errorf("first output with asDone: %q, want the fast target", first)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// In selection order.
	var buf bytes.Buffer
	if failed, err := r.DryRun(context.Background(), sel, &buf, false); err != nil || failed != 0 {
		t.Fatalf("dry run: %d failed, %v", failed, err)
	}
	out := buf.String()
	if i, j := strings.Index(out, "# j/slow"), strings.Index(out, "# j/fast"); i < 0 || j < 0 || i > j {
		t.Errorf("not in selection order:\n%s", out)
	}
}

// signalWriter passes on each write.
type signalWriter struct{ wrote chan string }

func (w *signalWriter) Write(p []byte) (int, error) {
	w.wrote <- string(p)
	return len(p), nil
}

// TestDryRunProtobuf: a protobuf scrape is shown in the text format, not as binary.
func TestDryRunProtobuf(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "requests_total", Help: "Requests."})
	reg.MustRegister(c)
	c.Add(3)
	target := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer target.Close()
	j := testJob("j", scrape.Target{Name: "t", URL: target.URL})
	j.Accept = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
	o := Options{RunTimeout: 30 * time.Second, Jobs: []*Job{j}}
	sel, err := Select(o.Jobs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	var out bytes.Buffer
	if failed, err := New(o, codec, nil, slog.New(slog.DiscardHandler), "test").DryRun(context.Background(), sel, &out, false); failed != 0 || err != nil {
		t.Fatalf("dry run: %d failed, %v", failed, err)
	}
	if s := out.String(); !strings.Contains(s, "application/vnd.google.protobuf") || !strings.Contains(s, "shown in the text format") ||
		!strings.Contains(s, "\nrequests_total 3\n") {
		t.Errorf("output:\n%s", s)
	}
}
