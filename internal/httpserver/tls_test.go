package httpserver_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/prometheus-streams/prometheus-streams/internal/httpserver"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/certtest"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/logtest"
)

// listenTLS serves a registry with one counter through httpserver.Listen with the
// web config webConfig, on 127.0.0.1, until the test ends. It returns the
// address and the server's log.
func listenTLS(t *testing.T, webConfig string) (string, *logtest.Buffer) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(path, []byte(webConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "tls_requests_total", Help: "x"})
	c.Add(3)
	reg.MustRegister(c)
	logs := &logtest.Buffer{}
	s, err := httpserver.Listen("127.0.0.1:0", path, httpserver.MonitorHandler(reg, func() bool { return true }),
		slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return s.Addr(), logs
}

// fetch GETs url with a fresh client using cfg (nil: Go's defaults, the
// system's roots) and returns the status and body, or the error. The timeout
// is generous for loaded machines; no case waits it out.
func fetch(t *testing.T, cfg *tls.Config, url, user, pass string) (int, string, error) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	if resp.TLS == nil && strings.HasPrefix(url, "https:") {
		t.Errorf("%s answered without TLS", url)
	}
	return resp.StatusCode, string(b), nil
}

// waitFor waits briefly for the server to log want: a refused handshake is
// logged after the alert is sent, maybe after the client has returned.
func waitFor(t *testing.T, logs *logtest.Buffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Errorf("server did not log %q", want)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTLS serves /metrics over TLS: a client trusting the CA is served, one that
// does not fails the handshake, and plain HTTP is refused.
func TestTLS(t *testing.T) {
	ca := certtest.NewCA(t, "monitor-ca")
	server := ca.Server("drain")
	addr, _ := listenTLS(t, fmt.Sprintf("tls_server_config:\n  cert_file: %q\n  key_file: %q\n", server.CertFile, server.KeyFile))
	base := "https://" + addr

	trusting := &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}
	code, body, err := fetch(t, trusting, base+"/metrics", "", "")
	if err != nil || code != http.StatusOK || !strings.Contains(body, "tls_requests_total 3") {
		t.Errorf("client with the CA: %d %v\n%s", code, err, body)
	}
	if code, _, err := fetch(t, trusting, base+"/healthz", "", ""); err != nil || code != http.StatusOK {
		t.Errorf("healthz: %d %v", code, err)
	}

	_, _, err = fetch(t, nil, base+"/metrics", "", "")
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); !ok {
		t.Errorf("client without the CA: got %v, want x509: certificate signed by unknown authority", err)
	}

	code, body, err = fetch(t, nil, "http://"+addr+"/metrics", "", "")
	if err != nil || code != http.StatusBadRequest || strings.Contains(body, "tls_requests_total") {
		t.Errorf("plain HTTP: %d %v\n%s", code, err, body)
	}
}

// TestTLSClientAuth requires client certificates of the CA and basic auth.
func TestTLSClientAuth(t *testing.T) {
	ca := certtest.NewCA(t, "monitor-ca")
	other := certtest.NewCA(t, "other-ca")
	server := ca.Server("drain")
	client := ca.Client("prometheus")
	const password = "mon-pa55-Zt61"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	addr, logs := listenTLS(t, fmt.Sprintf(`tls_server_config:
  cert_file: %q
  key_file: %q
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: %q
basic_auth_users:
  prometheus: %q
`, server.CertFile, server.KeyFile, ca.CertFile, hash))
	url := "https://" + addr + "/metrics"

	withCert := &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{client.TLS}, MinVersion: tls.VersionTLS12}
	code, body, err := fetch(t, withCert, url, "prometheus", password)
	if err != nil || code != http.StatusOK || !strings.Contains(body, "tls_requests_total 3") {
		t.Errorf("right certificate and password: %d %v\n%s", code, err, body)
	}
	if code, _, err := fetch(t, withCert, url, "prometheus", "wrong"); err != nil || code != http.StatusUnauthorized {
		t.Errorf("right certificate, wrong password: %d %v, want 401", code, err)
	}

	// present makes a client offer p whatever CAs the server asks for, as
	// Prometheus's HTTP client does; Go's default would offer nothing when the
	// certificate's issuer is not among them.
	present := func(p certtest.Pair) *tls.Config {
		return &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &p.TLS, nil }}
	}
	for _, tc := range []struct {
		name      string
		cfg       *tls.Config
		clientErr string // what the client sees: the server's alert
		serverLog string // why, as the server logs it
	}{
		{"no client certificate", &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12},
			"remote error: tls: certificate required", "tls: client didn't provide a certificate"},
		{"certificate of another CA", present(other.Client("stranger")),
			"remote error: tls: unknown certificate authority", "x509: certificate signed by unknown authority"},
		{"expired certificate", present(ca.ExpiredClient("old-prometheus")),
			"remote error: tls: expired certificate", "x509: certificate has expired or is not yet valid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, err := fetch(t, tc.cfg, url, "prometheus", password)
			if err == nil {
				t.Fatalf("served: %d\n%s", code, body)
			}
			t.Logf("client error: %v", err)
			// TLS 1.3: the client's handshake ends before the server checks
			// the certificate, so the refusal is an alert read with the
			// response, or, if the server closed first, a failed write.
			if msg := err.Error(); !strings.Contains(msg, tc.clientErr) &&
				!strings.Contains(msg, "write: broken pipe") && !strings.Contains(msg, "write: connection reset by peer") {
				t.Errorf("client error %q, want %q", msg, tc.clientErr)
			}
			// The handshake failure is in the binary's log, for the operator.
			waitFor(t, logs, tc.serverLog)
		})
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "TLS handshake error") {
		t.Errorf("handshake failures not logged as warnings:\n%s", logs.String())
	}
}

// TestTLSConfigChecked: a web config whose certificate cannot be loaded fails
// Listen, not the first connection.
func TestTLSConfigChecked(t *testing.T) {
	ca := certtest.NewCA(t, "monitor-ca")
	a, b := ca.Server("a"), ca.Server("b")
	for name, cfg := range map[string]string{
		"missing cert file": fmt.Sprintf("tls_server_config:\n  cert_file: %q\n  key_file: %q\n", filepath.Join(t.TempDir(), "none.pem"), a.KeyFile),
		"mismatched key":    fmt.Sprintf("tls_server_config:\n  cert_file: %q\n  key_file: %q\n", a.CertFile, b.KeyFile),
	} {
		path := filepath.Join(t.TempDir(), "web.yml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := httpserver.Listen("127.0.0.1:0", path, http.NotFoundHandler(), slog.New(slog.DiscardHandler))
		if err == nil {
			_ = s.Shutdown(context.Background())
			t.Errorf("%s: Listen accepted the web config", name)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
}

// TestTLSClientAuthWithoutCA: client_auth_type RequireAndVerifyClientCert without
// client_ca_file is accepted by Listen (exporter-toolkit does not object), and
// client certificates are then verified against the system's roots: a
// certificate of the operator's private CA is refused. The operator learns of
// the missing client_ca_file only from refused scrapes.
func TestTLSClientAuthWithoutCA(t *testing.T) {
	ca := certtest.NewCA(t, "monitor-ca")
	server := ca.Server("drain")
	client := ca.Client("prometheus")
	addr, logs := listenTLS(t, fmt.Sprintf("tls_server_config:\n  cert_file: %q\n  key_file: %q\n  client_auth_type: RequireAndVerifyClientCert\n",
		server.CertFile, server.KeyFile))
	cfg := &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &client.TLS, nil }}
	if code, _, err := fetch(t, cfg, "https://"+addr+"/metrics", "", ""); err == nil {
		t.Fatalf("served (%d) a client certificate of a CA the server was not given", code)
	}
	waitFor(t, logs, "x509: certificate signed by unknown authority")
}
