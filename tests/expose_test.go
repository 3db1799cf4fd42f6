package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// centralConfig is a drain with an embedded stream and the expose sink, no gateway.
func centralConfig(natsAddr, exposeAddr, monitorAddr, extra string) string {
	return fmt.Sprintf(`verbose: true
max_age: 30s
embedded_stream:
  listen: %s
  cluster_id: central
  store_dir: memory
expose:
  listen: %s
monitor:
  listen: %s
%s`, natsAddr, exposeAddr, monitorAddr, extra)
}

func fetch(t *testing.T, url, accept string) (string, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return resp.Header.Get("Content-Type"), b
}

func parseBody(t *testing.T, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := exposition.Parse(b, "text/plain; version=0.0.4")
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	m := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		m[f.GetName()] = f
	}
	return m
}

// TestExposeEndToEnd: scrape-once → the drain's embedded stream → the expose endpoint,
// compared with what the targets served: names, types, labels, values, timestamps.
func TestExposeEndToEnd(t *testing.T) {
	natsAddr, exposeAddr, mon := freeAddr(t), freeAddr(t), freeAddr(t)
	node := fixture.ServeCapture(t, fixture.NodeExporter)
	prom := fixture.ServeCapture(t, fixture.Prometheus)
	startDrain(t, writeConfig(t, centralConfig(natsAddr, exposeAddr, mon, "")), mon)
	edge := writeConfig(t, edgeConfig("nats://"+natsAddr, "central", fmt.Sprintf(`  node:
    labels: {dc: dc1}
    targets:
      - {name: node1, url: '%s/metrics'}
      - {name: prom1, url: '%s/metrics'}
`, node.URL, prom.URL)))
	if r := runBin(t, "scrape-once", "-c", edge); r.code != 0 {
		t.Fatalf("scrape-once: exit %d\n%s", r.code, r.stderr)
	}
	url := "http://" + exposeAddr + "/metrics"
	var got map[string]*dto.MetricFamily
	waitFor(t, 20*time.Second, "both targets exposed", func() bool {
		_, b := fetch(t, url, "")
		got = parseBody(t, b)
		_, a := groupValue(got, exposition.HealthUp, "node", "node1")
		_, p := groupValue(got, exposition.HealthUp, "node", "prom1")
		return a && p
	})
	ts, _ := groupValue(got, exposition.HealthTimestamp, "node", "node1")
	wantMs := int64(ts * 1000)
	for instance, capture := range map[string]string{"node1": fixture.NodeExporter, "prom1": fixture.Prometheus} {
		want := parseCapture(t, capture)
		for name, wf := range want {
			gf := got[name]
			if gf == nil {
				t.Errorf("%s: family %s missing", instance, name)
				continue
			}
			if gf.GetType() != wf.GetType() || gf.GetHelp() != wf.GetHelp() {
				t.Errorf("%s: %s type %v help %q, want %v %q", instance, name, gf.GetType(), gf.GetHelp(), wf.GetType(), wf.GetHelp())
			}
			n := 0
			for _, m := range gf.GetMetric() {
				if !hasLabels(m, "job", "node", "instance", instance, "dc", "dc1") {
					continue
				}
				n++
				if m.GetTimestampMs() == 0 || m.GetTimestampMs()/1000 != wantMs/1000 && instance == "node1" {
					t.Errorf("%s: %s timestamp %d, want the scrape's %d", instance, name, m.GetTimestampMs(), wantMs)
				}
			}
			if n != len(wf.GetMetric()) {
				t.Errorf("%s: %s has %d series, want %d", instance, name, n, len(wf.GetMetric()))
			}
		}
	}
	if v, _ := groupValue(got, "node_load1", "node", "node1"); v != valueOf(parseCapture(t, fixture.NodeExporter), "node_load1") {
		t.Errorf("node_load1 = %v", v)
	}

	// OpenMetrics by negotiation, and gzip.
	ct, b := fetch(t, url, "application/openmetrics-text;version=1.0.0")
	if !strings.HasPrefix(ct, "application/openmetrics-text") || !bytes.HasSuffix(b, []byte("# EOF\n")) {
		t.Fatalf("OpenMetrics not negotiated: %q", ct)
	}
	p := textparse.NewOpenMetricsParser(b, labels.NewSymbolTable())
	series := 0
	for {
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("OpenMetrics response does not parse: %v", err)
		}
		if e == textparse.EntrySeries {
			series++
		}
	}
	if series < 800 {
		t.Errorf("OpenMetrics response has %d series", series)
	}
}

// TestExposeTypeConflict: a family whose type differs between two targets is not
// corrupted: the second target's family is left out and counted.
func TestExposeTypeConflict(t *testing.T) {
	natsAddr, exposeAddr, mon := freeAddr(t), freeAddr(t), freeAddr(t)
	d := startDrain(t, writeConfig(t, centralConfig(natsAddr, exposeAddr, mon, "")), mon)
	srv := embeddedServer(natsAddr)
	now := time.Now()
	publishTo(t, srv, encode(t, "j", "first", now, "# TYPE clash counter\nclash 1\nother 1\n"))
	url := "http://" + exposeAddr + "/metrics"
	waitFor(t, 10*time.Second, "first target", func() bool {
		_, b := fetch(t, url, "")
		_, ok := groupValue(parseBody(t, b), "clash", "j", "first")
		return ok
	})
	publishTo(t, srv, encode(t, "j", "second", now, "# TYPE clash gauge\nclash 2\nother 2\n"))
	var got map[string]*dto.MetricFamily
	waitFor(t, 10*time.Second, "second target", func() bool {
		_, b := fetch(t, url, "")
		got = parseBody(t, b)
		_, ok := groupValue(got, "other", "j", "second")
		return ok
	})
	if _, ok := groupValue(got, "clash", "j", "second"); ok {
		t.Error("the conflicting family was served")
	}
	if got["clash"].GetType() != dto.MetricType_COUNTER {
		t.Errorf("clash type %v", got["clash"].GetType())
	}
	if v := d.metric("prometheus_streams_drain_expose_conflicts_total"); v < 1 {
		t.Errorf("conflicts = %v", v)
	}
}

// TestExposeExpiry: a target whose last scrape is older than max_age disappears.
func TestExposeExpiry(t *testing.T) {
	natsAddr, exposeAddr, mon := freeAddr(t), freeAddr(t), freeAddr(t)
	cfg := strings.Replace(centralConfig(natsAddr, exposeAddr, mon, ""), "max_age: 30s", "max_age: 2s", 1)
	startDrain(t, writeConfig(t, cfg), mon)
	publishTo(t, embeddedServer(natsAddr), encode(t, "j", "short", time.Now(), "m 1\n"))
	url := "http://" + exposeAddr + "/metrics"
	waitFor(t, 10*time.Second, "the target", func() bool {
		_, b := fetch(t, url, "")
		_, ok := groupValue(parseBody(t, b), "m", "j", "short")
		return ok
	})
	waitFor(t, 10*time.Second, "the target gone after max_age", func() bool {
		_, b := fetch(t, url, "")
		_, ok := groupValue(parseBody(t, b), "m", "j", "short")
		return !ok
	})
}

// TestExposeConcurrentReaders: while a target's scrapes replace each other, every read
// sees each target whole: all its series from one scrape.
func TestExposeConcurrentReaders(t *testing.T) {
	natsAddr, exposeAddr, mon := freeAddr(t), freeAddr(t), freeAddr(t)
	startDrain(t, writeConfig(t, centralConfig(natsAddr, exposeAddr, mon, "")), mon)
	srv := embeddedServer(natsAddr)
	url := "http://" + exposeAddr + "/metrics"
	body := func(gen int) string {
		var b strings.Builder
		for i := range 200 {
			fmt.Fprintf(&b, "s%d %d\n", i, gen)
		}
		return b.String()
	}
	start := time.Now().Add(-10 * time.Second)
	publishTo(t, srv, encode(t, "j", "a", start, body(0)))
	waitFor(t, 10*time.Second, "first scrape", func() bool {
		_, b := fetch(t, url, "")
		_, ok := groupValue(parseBody(t, b), "s0", "j", "a")
		return ok
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var torn []string
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Get(url)
				if err != nil {
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				gens := map[float64]bool{}
				for name, f := range parseBodyNoFail(b) {
					if strings.HasPrefix(name, "s") && !strings.HasPrefix(name, "streams_") {
						for _, m := range f.GetMetric() {
							gens[m.GetUntyped().GetValue()] = true
						}
					}
				}
				if len(gens) > 1 {
					mu.Lock()
					torn = append(torn, fmt.Sprint(gens))
					mu.Unlock()
				}
			}
		}()
	}
	for gen := 1; gen <= 30; gen++ {
		publishTo(t, srv, encode(t, "j", "a", start.Add(time.Duration(gen)*100*time.Millisecond), body(gen)))
	}
	waitFor(t, 20*time.Second, "the last scrape", func() bool {
		_, b := fetch(t, url, "")
		v, _ := groupValue(parseBody(t, b), "s0", "j", "a")
		return v == 30
	})
	close(stop)
	wg.Wait()
	if len(torn) > 0 {
		t.Errorf("%d reads saw a mix of scrapes, e.g. %s", len(torn), torn[0])
	}
}

func parseBodyNoFail(b []byte) map[string]*dto.MetricFamily {
	fams, err := exposition.Parse(b, "text/plain; version=0.0.4")
	if err != nil {
		return nil
	}
	m := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		m[f.GetName()] = f
	}
	return m
}

// TestLegacyMessages: the drain reads the earlier system's JSON messages too, so operators
// can move the central side first and the edges one by one.
func TestLegacyMessages(t *testing.T) {
	natsAddr, exposeAddr, mon := freeAddr(t), freeAddr(t), freeAddr(t)
	startDrain(t, writeConfig(t, centralConfig(natsAddr, exposeAddr, mon, "")), mon)
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	_, _ = zw.Write(fixture.Read(t, fixture.PushGateway))
	_ = zw.Close()
	msg, err := json.Marshal(map[string]any{"job": "old", "instance": "edge9:9091", "time": time.Now().Unix(), "publisher": "edge9", "Scrape": z.Bytes()})
	if err != nil {
		t.Fatal(err)
	}
	publishTo(t, embeddedServer(natsAddr), msg)
	url := "http://" + exposeAddr + "/metrics"
	var got map[string]*dto.MetricFamily
	waitFor(t, 10*time.Second, "the legacy scrape", func() bool {
		_, b := fetch(t, url, "")
		got = parseBody(t, b)
		_, ok := groupValue(got, exposition.HealthUp, "old", "edge9:9091")
		return ok
	})
	if v, _ := groupValue(got, exposition.HealthSamples, "old", "edge9:9091"); v != 41 {
		t.Errorf("samples = %v, want 41", v)
	}
	if _, ok := groupValue(got, "pushgateway_build_info", "old", "edge9:9091"); !ok {
		t.Error("the legacy scrape's series are missing")
	}
}

// TestReload: SIGHUP reloads the config; a bad one is refused and the old one kept, and
// the expose sink keeps what it holds.
func TestReload(t *testing.T) {
	natsAddr, exposeAddr, mon := freeAddr(t), freeAddr(t), freeAddr(t)
	path := writeConfig(t, centralConfig(natsAddr, exposeAddr, mon, ""))
	d := startDrain(t, path, mon)
	url := "http://" + exposeAddr + "/metrics"
	publishTo(t, embeddedServer(natsAddr), encode(t, "j", "before", time.Now(), "m 1\n"))
	waitFor(t, 10*time.Second, "the first scrape", func() bool {
		_, b := fetch(t, url, "")
		_, ok := groupValue(parseBody(t, b), "m", "j", "before")
		return ok
	})

	// A bad config: refused, the drain goes on.
	if err := os.WriteFile(path, []byte("max_age: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the refusal", func() bool {
		return strings.Contains(d.logs(), "config reload refused")
	})
	if v := d.metric("prometheus_streams_drain_config_last_reload_successful"); v != 0 {
		t.Errorf("reload successful = %v after a bad config", v)
	}

	// A good one with trust: unsigned messages are now rejected; what was held stays.
	trust := "trust:\n  - {public_key: UD466L6EBCM3YY5HEGHJANNTN4LSKTSUXTH7RILHCKEQMQHTBNLHJJXT, jobs: [j]}\n"
	if err := os.WriteFile(path, []byte(centralConfig(natsAddr, exposeAddr, mon, trust)), 0o600); err != nil {
		t.Fatal(err)
	}
	d.signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the reload", func() bool {
		return d.metric("prometheus_streams_drain_config_last_reload_successful") == 1
	})
	publishTo(t, embeddedServer(natsAddr), encode(t, "j", "after", time.Now(), "m 2\n"))
	waitFor(t, 10*time.Second, "the unsigned message rejected", func() bool {
		return d.metric("prometheus_streams_drain_messages_rejected_total", "reason", "unsigned") == 1
	})
	_, b := fetch(t, url, "")
	got := parseBody(t, b)
	if _, ok := groupValue(got, "m", "j", "before"); !ok {
		t.Error("the expose sink lost what it held")
	}
	if _, ok := groupValue(got, "m", "j", "after"); ok {
		t.Error("an unsigned message was served under trust")
	}

	// The log level changes at once: with debug on, an expired message (logged at
	// debug) shows in the log.
	debug := "debug: true\n" // and trust off again: an unsigned message is read
	if err := os.WriteFile(path, []byte(centralConfig(natsAddr, exposeAddr, mon, debug)), 0o600); err != nil {
		t.Fatal(err)
	}
	d.signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the debug reload", func() bool { return strings.Count(d.logs(), "config reloaded") == 2 })
	if strings.Contains(d.logs(), `msg="message expired"`) {
		t.Fatal("a debug line before debug was on")
	}
	publishTo(t, embeddedServer(natsAddr), encode(t, "j", "old", time.Now().Add(-time.Hour), "m 3\n"))
	waitFor(t, 10*time.Second, "a debug line", func() bool { return strings.Contains(d.logs(), `msg="message expired"`) })

	// A remote_write added: reported as waiting for a restart, and again at the next
	// reload, since it is still not applied.
	rw := debug + "remote_write:\n  - url: http://127.0.0.1:1/api/v1/write\n"
	if err := os.WriteFile(path, []byte(centralConfig(natsAddr, exposeAddr, mon, rw)), 0o600); err != nil {
		t.Fatal(err)
	}
	const pending = `msg="config changed; takes effect at the next restart" key=remote_write`
	for i := 1; i <= 2; i++ {
		d.signal(syscall.SIGHUP)
		waitFor(t, 10*time.Second, fmt.Sprintf("reload %d to report remote_write", i), func() bool {
			return strings.Count(d.logs(), pending) == i
		})
	}
}
