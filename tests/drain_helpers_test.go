package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	stan "github.com/nats-io/stan.go"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/proctest"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
	"github.com/prometheus-streams/prometheus-streams/stream"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
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
	addr, err := proctest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// drainConfig is a drain config consuming the STAN channel of srv into the gateway at
// pgwURL, with its monitor on monitorAddr.
func drainConfig(srv *stantest.Server, pgwURL, monitorAddr, extra string) string {
	return stanTransport.drainConfig(srv, pgwURL, monitorAddr, extra)
}

// transport is a stream transport the drain consumes, for the tests that run on each:
// how to start a server for it, and to configure, feed and inspect a drain on it.
type transport struct{ name string }

var (
	stanTransport = transport{"stan"}
	jsTransport   = transport{"jetstream"}
	// transports are what the drain's fault tests run on.
	transports = []transport{stanTransport, jsTransport}
)

func (tr transport) jetStream() bool { return tr == jsTransport }

// jsStreamName is the JetStream stream of the tests' drains and edges.
const jsStreamName = "PROMETHEUS"

// start starts a server for tr: NATS Streaming, with JetStream on the same port (its
// store in a temp dir) for jetstream.
func (tr transport) start(t *testing.T, opts ...stantest.Option) *stantest.Server {
	t.Helper()
	if tr.jetStream() {
		opts = append(opts, stantest.WithJetStream(t.TempDir()))
	}
	return stantest.Start(t, opts...)
}

// drainConfig is a drain config consuming from srv on tr into the gateway at pgwURL,
// with its monitor on monitorAddr. The JetStream drain creates the stream.
func (tr transport) drainConfig(srv *stantest.Server, pgwURL, monitorAddr, extra string) string {
	receiver := fmt.Sprintf("  cluster_id: %s\n", srv.ClusterID())
	if tr.jetStream() {
		receiver = fmt.Sprintf("  transport: jetstream\n  stream: %s\n  create_stream: true\n", jsStreamName)
	}
	return fmt.Sprintf(`verbose: true
max_age: 30s
receiver_stream:
%s  client_id: drain1
  urls: %s
  topic: prometheus
  ack_wait: 2s
push_gateway:
  url: %s
monitor:
  listen: %s
%s`, receiver, srv.URL(), pgwURL, monitorAddr, extra)
}

// sharedDurable replaces "client_id: drain1" in a drainConfig for drain i of several
// sharing the messages: a STAN queue group, a JetStream durable consumer.
func (tr transport) sharedDurable(i int) string {
	if tr.jetStream() {
		return fmt.Sprintf("client_id: drain%d\n  durable_name: central", i)
	}
	return fmt.Sprintf("client_id: drain%d\n  durable_name: central\n  queue_group: central", i)
}

// edgeConfig is a scrape-once config publishing to srv on tr, with the jobs section.
func (tr transport) edgeConfig(srv *stantest.Server, jobs string) string {
	if tr.jetStream() {
		return jsEdgeConfig(srv.URL(), "  create_stream: true\n", jobs)
	}
	return edgeConfig(srv.URL(), srv.ClusterID(), jobs)
}

// publish puts raw messages where a drain on tr reads them: the channel prometheus, or
// on JetStream the subject of the target an envelope names (stream.Subject), and
// prometheus.garbage.x for what names none. The stream must exist.
func (tr transport) publish(t *testing.T, srv *stantest.Server, msgs ...[]byte) {
	t.Helper()
	if !tr.jetStream() {
		publish(t, srv, "prometheus", msgs...)
		return
	}
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	var nms []*nats.Msg
	for _, m := range msgs {
		subject := "prometheus.garbage.x"
		if job, instance, err := codec.Target(m); err == nil {
			subject = stream.Subject("prometheus", job, instance)
		}
		nms = append(nms, &nats.Msg{Subject: subject, Data: m})
	}
	jsPublish(t, srv, nms...)
}

// jsPublish publishes msgs to JetStream on srv, each awaiting its ack, and returns the
// acks.
func jsPublish(t *testing.T, srv *stantest.Server, msgs ...*nats.Msg) []*jetstream.PubAck {
	t.Helper()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var acks []*jetstream.PubAck
	for _, m := range msgs {
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatalf("publish to %s: %v", m.Subject, err)
		}
		acks = append(acks, ack)
	}
	return acks
}

// jsConsumerInfo is the server's view of the durable consumer of the tests' stream.
func jsConsumerInfo(t *testing.T, srv *stantest.Server, durable string) *jetstream.ConsumerInfo {
	t.Helper()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, jsStreamName, durable)
	if err != nil {
		t.Fatalf("consumer %s: %v", durable, err)
	}
	return c.CachedInfo()
}

// jsSettled waits until the durable consumer has delivered everything and awaits no
// ack: every message's fate was final (acked or terminated), none is left to redeliver.
func jsSettled(t *testing.T, srv *stantest.Server, durable string) *jetstream.ConsumerInfo {
	t.Helper()
	var ci *jetstream.ConsumerInfo
	waitFor(t, 20*time.Second, "the consumer settled", func() bool {
		ci = jsConsumerInfo(t, srv, durable)
		return ci.NumAckPending == 0 && ci.NumPending == 0
	})
	return ci
}

// jsAdvisory is a consumer advisory of the server about one message: a nak or a term.
type jsAdvisory struct {
	StreamSeq uint64    `json:"stream_seq"`
	Time      time.Time `json:"timestamp"`
}

// jsAdvisories records the server's advisories of kind (MSG_NAKED, MSG_TERMINATED)
// about the durable consumer's messages from now on, and returns what it recorded so far.
func jsAdvisories(t *testing.T, srv *stantest.Server, kind, durable string) func() []jsAdvisory {
	t.Helper()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var mu sync.Mutex
	var got []jsAdvisory
	subject := fmt.Sprintf("$JS.EVENT.ADVISORY.CONSUMER.%s.%s.%s", kind, jsStreamName, durable)
	if _, err := nc.Subscribe(subject, func(m *nats.Msg) {
		var a jsAdvisory
		if err := json.Unmarshal(m.Data, &a); err != nil {
			return
		}
		mu.Lock()
		got = append(got, a)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() []jsAdvisory {
		mu.Lock()
		defer mu.Unlock()
		return append([]jsAdvisory(nil), got...)
	}
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

// valueOf returns the sum of the values of the metrics of name whose labels include
// labels (name, value pairs), or 0.
func valueOf(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	sum := 0.0
	for _, m := range fams[name].GetMetric() {
		if hasLabels(m, labels...) {
			switch {
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Untyped != nil:
				sum += m.Untyped.GetValue()
			}
		}
	}
	return sum
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
