package tests

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	stan "github.com/nats-io/stan.go"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/prometheus-streams/prometheus-streams/lib/envelope"
	"github.com/prometheus-streams/prometheus-streams/lib/stantest"
)

// drainProc is a running drain binary.
type drainProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	monitor string // http://host:port of its monitor listener
	mu      sync.Mutex
	log     bytes.Buffer
	done    chan struct{}
	code    int
}

// freeAddr returns a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// drainConfig is a drain config consuming from srv into the gateway at pgwURL, with its
// monitor on monitorAddr.
func drainConfig(srv *stantest.Server, pgwURL, monitorAddr, extra string) string {
	return fmt.Sprintf(`verbose: true
max_age: 30s
receiver_stream:
  cluster_id: %s
  client_id: drain1
  urls: %s
  topic: prometheus
  ack_wait: 2s
push_gateway:
  url: %s
monitor:
  listen: %s
%s`, srv.ClusterID(), srv.URL(), pgwURL, monitorAddr, extra)
}

// startDrain runs the drain binary with the config at path and waits until it is
// subscribed (/healthz answers 200).
func startDrain(t *testing.T, path, monitorAddr string) *drainProc {
	t.Helper()
	d := launchDrain(t, path, monitorAddr)
	waitFor(t, 20*time.Second, "drain subscribed", func() bool { return d.healthz() == 200 })
	return d
}

// launchDrain runs the drain binary with the config at path without waiting for it to
// subscribe: only for its monitor to answer.
func launchDrain(t *testing.T, path, monitorAddr string) *drainProc {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "drain"), "-c", path)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 halt_on_error=1")
	d := &drainProc{t: t, cmd: cmd, monitor: "http://" + monitorAddr, done: make(chan struct{})}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			d.mu.Lock()
			d.log.Write(sc.Bytes())
			d.log.WriteByte('\n')
			d.mu.Unlock()
		}
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			d.code = ee.ExitCode()
		}
		close(d.done)
	}()
	t.Cleanup(func() {
		d.signal(syscall.SIGKILL)
		<-d.done
		if t.Failed() {
			t.Logf("drain log:\n%s", d.logs())
		}
	})
	waitFor(t, 20*time.Second, "drain monitor up", func() bool { return d.healthz() != 0 })
	return d
}

// healthz is the status of the drain's /healthz, 0 when it does not answer.
func (d *drainProc) healthz() int {
	select {
	case <-d.done:
		d.t.Fatalf("drain exited with %d:\n%s", d.code, d.logs())
	default:
	}
	resp, err := http.Get(d.monitor + "/healthz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (d *drainProc) logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.String()
}

func (d *drainProc) signal(sig os.Signal) {
	select {
	case <-d.done:
	default:
		_ = d.cmd.Process.Signal(sig)
	}
}

// stop sends SIGTERM and waits for the exit code.
func (d *drainProc) stop() int {
	d.signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		d.t.Fatal("drain did not stop within 30s of SIGTERM")
	}
	return d.code
}

// kill sends SIGKILL and waits for the process to end.
func (d *drainProc) kill() {
	d.signal(syscall.SIGKILL)
	<-d.done
}

// metric returns the value of the drain's self-metric name{labels}, 0 if absent.
func (d *drainProc) metric(name string, labels ...string) float64 {
	d.t.Helper()
	fams := scrapeURL(d.t, d.monitor+"/metrics")
	return valueOf(fams, name, labels...)
}

func scrapeURL(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// valueOf returns the value of the first metric of name whose labels include labels
// (name, value pairs), or 0.
func valueOf(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	for _, m := range fams[name].GetMetric() {
		if hasLabels(m, labels...) {
			switch {
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Untyped != nil:
				return m.Untyped.GetValue()
			}
		}
	}
	return 0
}

func hasLabels(m *dto.Metric, labels ...string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// waitFor polls cond every 50ms until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// natsServer is where a test publishes: a URL and a cluster ID.
type natsServer struct{ url, cluster string }

// embeddedServer is the drain's embedded stream of centralConfig at addr.
func embeddedServer(addr string) natsServer { return natsServer{"nats://" + addr, "central"} }

// publish puts raw messages on the channel.
func publish(t *testing.T, srv *stantest.Server, channel string, msgs ...[]byte) {
	t.Helper()
	publishOn(t, natsServer{srv.URL(), srv.ClusterID()}, channel, msgs...)
}

// publishTo puts raw messages on the prometheus channel of n.
func publishTo(t *testing.T, n natsServer, msgs ...[]byte) {
	t.Helper()
	publishOn(t, n, "prometheus", msgs...)
}

func publishOn(t *testing.T, n natsServer, channel string, msgs ...[]byte) {
	t.Helper()
	sc, err := stan.Connect(n.cluster, fmt.Sprintf("test-pub-%d", time.Now().UnixNano()), stan.NatsURL(n.url))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	for _, m := range msgs {
		if err := sc.Publish(channel, m); err != nil {
			t.Fatal(err)
		}
	}
}

// encode builds an envelope of a successful scrape of body.
func encode(t *testing.T, job, instance string, start time.Time, body string) []byte {
	t.Helper()
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	b, err := codec.Encode(&envelope.Envelope{
		Publisher: "test", Job: job, Instance: instance, Start: start, Duration: time.Millisecond,
		HTTPStatus: 200, ContentType: "text/plain; version=0.0.4", Body: []byte(body),
		Series: strings.Count(body, "\n") - strings.Count(body, "#"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// groupValue returns the value of name in the gateway's exposition for job/instance.
func groupValue(fams map[string]*dto.MetricFamily, name, job, instance string) (float64, bool) {
	for _, m := range fams[name].GetMetric() {
		if hasLabels(m, "job", job, "instance", instance) {
			return valueOf(map[string]*dto.MetricFamily{name: {Metric: []*dto.Metric{m}}}, name), true
		}
	}
	return 0, false
}
