package tests

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	stan "github.com/nats-io/stan.go"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/certtest"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// secureEdgeConfig is edgeConfig for srv with extra poller_stream keys (each line
// indented by two spaces) and extra top-level keys.
func secureEdgeConfig(srv *stantest.Server, streamKeys, topLevel, jobs string) string {
	return fmt.Sprintf(`verbose: true
identity: edge1
scrape_interval: 10s
poller_stream:
  cluster_id: %s
  urls: %s
  topic: prometheus
  connect_timeout: 2s
%s
%s
jobs:
%s`, srv.ClusterID(), srv.URL(), streamKeys, topLevel, jobs)
}

// secretFile writes a secret to a file in a temp dir, with a trailing newline as an
// editor leaves it, and returns its path.
func secretFile(t *testing.T, name, secret string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// noSecret fails the test if any secret appears in out.
func noSecret(t *testing.T, what, out string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("%s contains a secret (%.4s...):\n%s", what, s, out)
		}
	}
}

// readSecureChannel is readChannel for a server that wants credentials: every message
// on the channel, decoded, up to a marker it publishes.
func readSecureChannel(t *testing.T, srv *stantest.Server, channel string) []*envelope.Envelope {
	t.Helper()
	sc := srv.Connect(t, fmt.Sprintf("reader-%d", time.Now().UnixNano()))
	marker := []byte(fmt.Sprintf("end-of-test-%d", time.Now().UnixNano()))
	if err := sc.Publish(channel, marker); err != nil {
		t.Fatal(err)
	}
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	var got []*envelope.Envelope
	done := make(chan struct{})
	sub, err := sc.Subscribe(channel, func(m *stan.Msg) {
		if bytes.Equal(m.Data, marker) {
			close(done)
			return
		}
		if e, err := codec.Decode(m.Data); err == nil {
			got = append(got, e)
		}
	}, stan.DeliverAllAvailable())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the channel's messages did not arrive")
	}
	return got
}

// scrape-once to a server requiring TLS and verified client certificates: the right
// material (the earlier system's top-level tls) publishes; a CA that did not sign the
// server's certificate, or an expired client certificate, fail with the stream-failure
// code and say why.
func TestScrapeOnceNATSTLS(t *testing.T) {
	ca := certtest.NewCA(t, "nats-ca")
	other := certtest.NewCA(t, "other-ca")
	srv := stantest.Start(t, stantest.WithTLS(ca, true))
	client := ca.Client("edge1")
	target := fixture.ServeCapture(t, fixture.PushGateway)
	jobs := fmt.Sprintf("  pgw:\n    targets: [{name: pgw1, url: '%s/metrics'}]\n", target.URL)

	good := writeConfig(t, secureEdgeConfig(srv, "", fmt.Sprintf("tls: {ca: %s, cert: %s, key: %s}", ca.CertFile, client.CertFile, client.KeyFile), jobs))
	r := runBin(t, "scrape-once", "-c", good)
	if r.code != 0 {
		t.Fatalf("right material: exit %d\n%s", r.code, r.stderr)
	}
	mustContain(t, "log", r.stderr, "run done", "acked=1")
	got := byInstance(readSecureChannel(t, srv, "prometheus"))
	if e := got["pgw/pgw1"]; e == nil || !bytes.Equal(e.Body, fixture.Read(t, fixture.PushGateway)) {
		t.Fatalf("the scrape did not arrive intact: %v", got)
	}

	for name, tc := range map[string]struct {
		tls  string
		want []string
	}{
		"wrong CA": {
			fmt.Sprintf("  tls: {ca: %s, cert: %s, key: %s}", other.CertFile, client.CertFile, client.KeyFile),
			[]string{"not signed by a trusted CA", "certificate signed by unknown authority"},
		},
		"expired client certificate": {
			func() string {
				p := ca.ExpiredClient("edge1-expired")
				return fmt.Sprintf("  tls: {ca: %s, cert: %s, key: %s}", ca.CertFile, p.CertFile, p.KeyFile)
			}(),
			[]string{"the server refused the client certificate"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			// The section's own tls overrides the top-level one, which is right.
			cfg := writeConfig(t, secureEdgeConfig(srv, tc.tls, fmt.Sprintf("tls: {ca: %s, cert: %s, key: %s}", ca.CertFile, client.CertFile, client.KeyFile), jobs))
			r := runBin(t, "scrape-once", "-c", cfg)
			if r.code != 69 {
				t.Fatalf("exit %d, want 69\n%s", r.code, r.stderr)
			}
			t.Logf("scrape-once:\n%s", r.stderr)
			mustContain(t, "log", r.stderr, append(tc.want, "NATS authentication or TLS failed", "stream unreachable")...)
		})
	}
}

// scrape-once with a token: the right one publishes, a wrong one fails with 69 naming
// the authorization violation, and neither token is ever printed.
func TestScrapeOnceNATSToken(t *testing.T) {
	const token, wrong = "tok-e2e-4c1d9b", "tok-e2e-wrong-77f0"
	srv := stantest.Start(t, stantest.WithToken(token))
	target := fixture.ServeCapture(t, fixture.PushGateway)
	jobs := fmt.Sprintf("  pgw:\n    targets: [{name: pgw1, url: '%s/metrics'}]\n", target.URL)

	cfg := writeConfig(t, secureEdgeConfig(srv, "  token_file: "+secretFile(t, "wrong-token", wrong), "", jobs))
	r := runBin(t, "scrape-once", "-c", cfg)
	if r.code != 69 {
		t.Fatalf("wrong token: exit %d, want 69\n%s", r.code, r.stderr)
	}
	mustContain(t, "log", r.stderr, "authorization violation", "Authorization Violation")
	noSecret(t, "scrape-once output", r.stdout+r.stderr, token, wrong)

	cfg = writeConfig(t, secureEdgeConfig(srv, "  token_file: "+secretFile(t, "token", token), "", jobs))
	r = runBin(t, "scrape-once", "-c", cfg)
	if r.code != 0 {
		t.Fatalf("right token: exit %d\n%s", r.code, r.stderr)
	}
	noSecret(t, "scrape-once output", r.stdout+r.stderr, token)
	if check := runBin(t, "scrape-once", "-c", cfg, "--check-config"); check.code != 0 {
		t.Fatalf("--check-config: exit %d\n%s", check.code, check.stderr)
	} else {
		noSecret(t, "--check-config output", check.stdout+check.stderr, token)
	}
	if got := readSecureChannel(t, srv, "prometheus"); len(got) != 1 {
		t.Fatalf("%d messages on the channel, want 1", len(got))
	}
}

// The drain against a server with TLS, client certificates and users: with a wrong
// password it keeps running, unready, and says why in its log and metric; once the
// password file is right it subscribes (files are read again at each attempt) and
// delivers. No password ever appears in its output.
func TestDrainNATSAuth(t *testing.T) {
	const password, wrong = "drain-e2e-pw-93ab", "drain-e2e-pw-wrong-1c"
	ca := certtest.NewCA(t, "nats-ca")
	srv := stantest.Start(t, stantest.WithTLS(ca, true), stantest.WithUser("drain", password))
	client := ca.Client("drain1")
	pwFile := secretFile(t, "password", wrong)
	exposeAddr, mon := freeAddr(t), freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf(`verbose: true
max_age: 30s
receiver_stream:
  cluster_id: %s
  client_id: drain1
  urls: %s
  topic: prometheus
  user: drain
  password_file: %s
  tls:
    ca: %s
    cert: %s
    key: %s
expose:
  listen: %s
monitor:
  listen: %s
`, srv.ClusterID(), srv.URL(), pwFile, ca.CertFile, client.CertFile, client.KeyFile, exposeAddr, mon))

	d := launchDrain(t, cfg, mon)
	waitFor(t, 10*time.Second, "the refusal logged, and retried", func() bool {
		return strings.Count(d.logs(), "NATS authentication or TLS failed") >= 2
	})
	if code := d.healthz(); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz = %d with a refused password, want 503", code)
	}
	if v := d.metric("prometheus_streams_drain_stream_connected"); v != 0 {
		t.Errorf("stream_connected = %v with a refused password, want 0", v)
	}
	logs := d.logs()
	mustContain(t, "drain log", logs, "NATS authentication or TLS failed", `reason="authorization violation`, "nats: Authorization Violation", "not subscribed to the stream")
	if strings.Count(logs, "NATS authentication or TLS failed") < 2 {
		t.Errorf("the drain did not retry:\n%s", logs)
	}

	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "subscribed with the right password", func() bool { return d.healthz() == 200 })
	if v := d.metric("prometheus_streams_drain_stream_connected"); v != 1 {
		t.Errorf("stream_connected = %v once subscribed, want 1", v)
	}
	sc := srv.Connect(t, "publisher")
	if err := sc.Publish("prometheus", encode(t, "node", "n1", time.Now(), "up 1\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the scrape exposed", func() bool {
		_, b := fetch(t, "http://"+exposeAddr+"/metrics", "")
		_, ok := groupValue(parseBody(t, b), exposition.HealthUp, "node", "n1")
		return ok
	})
	if code := d.stop(); code != 0 {
		t.Errorf("drain exit %d after SIGTERM", code)
	}
	noSecret(t, "drain log", d.logs(), password, wrong)
	t.Logf("drain log:\n%s", d.logs())
}
