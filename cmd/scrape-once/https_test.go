package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/edge/scrape"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/certtest"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/logtest"
)

// seen is what an HTTPS target saw of the last request that reached its handler.
type seen struct {
	mu      sync.Mutex
	proto   int    // HTTP major version
	peerCN  string // common name of the client certificate, if any
	reached bool
}

// httpsTarget serves the node_exporter capture over TLS with cfg on 127.0.0.1,
// answering 401 when allow refuses the request. Its log (TLS handshake failures
// among others) is kept in the returned buffer.
func httpsTarget(t *testing.T, cfg *tls.Config, http2 bool, allow func(*http.Request) bool) (*httptest.Server, *seen, *logtest.Buffer) {
	t.Helper()
	body := fixture.Read(t, fixture.NodeExporter)
	s := &seen{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.reached, s.proto = true, r.ProtoMajor
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			s.peerCN = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		s.mu.Unlock()
		if allow != nil && !allow(r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="node"`)
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", fixture.TextContentType)
		_, _ = w.Write(body)
	}))
	logs := &logtest.Buffer{}
	srv.Config.ErrorLog = log.New(logs, "", 0)
	srv.TLS = cfg
	srv.EnableHTTP2 = http2
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, s, logs
}

// yamlJob parses a config with one job scraping url, whose HTTP client settings
// are the YAML lines settings, through config.Parse and scrape-once's mapping as the
// binary reads it.
// The timeout is generous for loaded CI machines; nothing here waits it out.
func yamlJob(t *testing.T, url, settings string) (scrape.Job, scrape.Target) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "jobs:\n  node:\n    scrape_timeout: 30s\n    targets: [{url: %q}]\n", url)
	for l := range strings.Lines(settings) {
		if strings.TrimSpace(l) != "" {
			b.WriteString("    " + strings.TrimRight(l, "\n") + "\n")
		}
	}
	c, err := config.Parse([]byte(b.String()))
	if err != nil {
		t.Fatalf("config.Parse:\n%s\n%v", b.String(), err)
	}
	j := c.Jobs["node"]
	return scrapeJob(j), scrapeTarget(j.Targets[0])
}

// refusedWrite reports whether msg is the failed write of a request on a
// connection the server had closed.
func refusedWrite(msg string) bool {
	return strings.Contains(msg, "write: broken pipe") || strings.Contains(msg, "write: connection reset by peer")
}

func writeSecret(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestHTTPS scrapes targets behind real TLS listeners on loopback, with the job's
// TLS, basic auth and bearer token settings read from YAML files as an operator
// would give them.
func TestHTTPS(t *testing.T) {
	ca := certtest.NewCA(t, "scrape-ca")
	other := certtest.NewCA(t, "other-ca")
	client := ca.Client("scraper")
	stranger := other.Client("stranger")
	expiredClient := ca.ExpiredClient("old-scraper")
	expiredServer := &tls.Config{Certificates: []tls.Certificate{ca.ExpiredServer("old-node").TLS}, MinVersion: tls.VersionTLS12}

	const (
		user       = "prometheus"
		password   = "pa55-Q7mXz2"      // the target's password
		wrongPass  = "not-it-Vb93kq"    // what a stale password file holds
		token      = "tok-3fK9sLw0pZ"   // the target's bearer token
		wrongToken = "old-tok-Hn28cXa1" // a stale token file
	)
	passFile := writeSecret(t, "password", password)
	wrongPassFile := writeSecret(t, "wrong-password", wrongPass)
	tokenFile := writeSecret(t, "token", token)
	wrongTokenFile := writeSecret(t, "wrong-token", wrongToken)
	secrets := []string{password, wrongPass, token, wrongToken}

	basic := func(r *http.Request) bool {
		u, p, ok := r.BasicAuth()
		return ok && u == user && p == password
	}
	bearer := func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer "+token }

	caOnly := fmt.Sprintf("tls_config: {ca_file: %q}", ca.CertFile)
	withCert := func(p certtest.Pair) string {
		return fmt.Sprintf("tls_config: {ca_file: %q, cert_file: %q, key_file: %q}", ca.CertFile, p.CertFile, p.KeyFile)
	}

	for _, tc := range []struct {
		name     string
		server   *tls.Config
		http2    bool
		allow    func(*http.Request) bool
		settings string
		// On success: the client certificate the target saw. On failure: what the
		// error must say, the HTTP status it must record, and what the target
		// logged about the handshake.
		wantCN     string
		wantErr    []string
		wantStatus int
		wantLog    string
		check      func(t *testing.T, err error)
		// The target refuses the client's certificate: see refusedWrite.
		refusedByTarget bool
	}{
		{name: "private CA trusted", server: ca.ServerTLS(false), settings: caOnly},
		{name: "private CA trusted, HTTP/2", server: ca.ServerTLS(false), http2: true, settings: caOnly},
		{
			name: "CA not configured", server: ca.ServerTLS(false), settings: "",
			wantErr: []string{"x509: certificate signed by unknown authority"},
			wantLog: "remote error: tls: bad certificate",
			check: func(t *testing.T, err error) {
				if _, ok := errors.AsType[x509.UnknownAuthorityError](err); !ok {
					t.Errorf("error %v does not unwrap to x509.UnknownAuthorityError", err)
				}
			},
		},
		{
			name: "another CA configured", server: ca.ServerTLS(false),
			settings: fmt.Sprintf("tls_config: {ca_file: %q}", other.CertFile),
			wantErr:  []string{"x509: certificate signed by unknown authority"},
		},
		{
			name: "server name mismatch", server: ca.ServerTLS(false),
			settings: fmt.Sprintf("tls_config: {ca_file: %q, server_name: node.example}", ca.CertFile),
			wantErr:  []string{"x509: certificate is valid for", "not node.example"},
			check: func(t *testing.T, err error) {
				if _, ok := errors.AsType[x509.HostnameError](err); !ok {
					t.Errorf("error %v does not unwrap to x509.HostnameError", err)
				}
			},
		},
		{
			name: "server certificate expired", server: expiredServer, settings: caOnly,
			wantErr: []string{"x509: certificate has expired or is not yet valid"},
			check: func(t *testing.T, err error) {
				ci, ok := errors.AsType[x509.CertificateInvalidError](err)
				if !ok || ci.Reason != x509.Expired {
					t.Errorf("error %v does not unwrap to an x509.Expired CertificateInvalidError", err)
				}
			},
		},
		{name: "client certificate", server: ca.ServerTLS(true), settings: withCert(client), wantCN: "scraper"},
		{
			name: "client certificate missing", server: ca.ServerTLS(true), refusedByTarget: true, settings: caOnly,
			// TLS 1.3: the client's handshake completes before the server has
			// checked its (absent) certificate; the refusal arrives as an alert
			// on the first read, still before any HTTP response.
			wantErr: []string{"remote error: tls: certificate required"},
			wantLog: "tls: client didn't provide a certificate",
		},
		{
			name: "client certificate of another CA", server: ca.ServerTLS(true), refusedByTarget: true, settings: withCert(stranger),
			wantErr: []string{"remote error: tls: unknown certificate authority"},
			wantLog: "x509: certificate signed by unknown authority",
		},
		{
			name: "client certificate expired", server: ca.ServerTLS(true), refusedByTarget: true, settings: withCert(expiredClient),
			wantErr: []string{"remote error: tls: expired certificate"},
			wantLog: "x509: certificate has expired or is not yet valid",
		},
		{
			name: "basic auth over mutual TLS", server: ca.ServerTLS(true), allow: basic, wantCN: "scraper",
			settings: withCert(client) + fmt.Sprintf("\nbasic_auth: {username: %s, password_file: %q}", user, passFile),
		},
		{
			name: "basic auth, wrong password file", server: ca.ServerTLS(false), allow: basic,
			settings:   caOnly + fmt.Sprintf("\nbasic_auth: {username: %s, password_file: %q}", user, wrongPassFile),
			wantErr:    []string{"server returned HTTP status 401 Unauthorized"},
			wantStatus: http.StatusUnauthorized,
			check: func(t *testing.T, err error) {
				if !errors.Is(err, scrape.ErrHTTPStatus) {
					t.Errorf("error %v is not ErrHTTPStatus", err)
				}
			},
		},
		{
			name: "basic auth not configured", server: ca.ServerTLS(false), allow: basic, settings: caOnly,
			wantErr: []string{"401 Unauthorized"}, wantStatus: http.StatusUnauthorized,
		},
		{
			name: "bearer_token_file", server: ca.ServerTLS(false), allow: bearer,
			settings: caOnly + fmt.Sprintf("\nbearer_token_file: %q", tokenFile),
		},
		{
			name: "authorization credentials_file", server: ca.ServerTLS(true), allow: bearer, wantCN: "scraper",
			settings: withCert(client) + fmt.Sprintf("\nauthorization: {credentials_file: %q}", tokenFile),
		},
		{
			name: "authorization, wrong credentials file", server: ca.ServerTLS(false), allow: bearer,
			settings: caOnly + fmt.Sprintf("\nauthorization: {type: Bearer, credentials_file: %q}", wrongTokenFile),
			wantErr:  []string{"401 Unauthorized"}, wantStatus: http.StatusUnauthorized,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, seen, logs := httpsTarget(t, tc.server, tc.http2, tc.allow)
			url := srv.URL + "/metrics"
			if !strings.HasPrefix(url, "https://127.0.0.1:") {
				t.Fatalf("target %s is not HTTPS on loopback", url)
			}
			job, target := yamlJob(t, url, tc.settings)
			s, err := scrape.New(job, "scrape-once-test")
			if err != nil {
				t.Fatal(err)
			}
			r := s.Scrape(context.Background(), target)
			defer func() {
				if t.Failed() {
					t.Logf("target's log:\n%s", logs.String())
				}
			}()

			if tc.wantErr == nil {
				if r.Err != nil {
					t.Fatalf("scrape failed: %v", r.Err)
				}
				if !bytes.Equal(r.Body, fixture.Read(t, fixture.NodeExporter)) || r.HTTPStatus != 200 || r.Series == 0 {
					t.Errorf("result: status %d, %d series, body of %d bytes differs from the capture: %v",
						r.HTTPStatus, r.Series, len(r.Body), !bytes.Equal(r.Body, fixture.Read(t, fixture.NodeExporter)))
				}
				seen.mu.Lock()
				defer seen.mu.Unlock()
				if seen.peerCN != tc.wantCN {
					t.Errorf("target saw client certificate %q, want %q", seen.peerCN, tc.wantCN)
				}
				if want := map[bool]int{false: 1, true: 2}[tc.http2]; seen.proto != want {
					t.Errorf("scraped over HTTP/%d, want HTTP/%d", seen.proto, want)
				}
				return
			}

			if r.Err == nil {
				t.Fatalf("scrape succeeded, want an error containing %q", tc.wantErr)
			}
			msg := r.Err.Error()
			t.Logf("scrape error (as an operator sees it): %s", msg)
			if tc.refusedByTarget && refusedWrite(msg) {
				// The target refused the client certificate after the client's
				// side of the handshake had ended (TLS 1.3) and closed the
				// connection before the request was written: the client saw
				// the closed connection, not the alert. Never seen in 900 runs
				// on loopback, but possible; the target's log still tells.
				t.Logf("the alert was lost to the closed connection")
			} else {
				for _, w := range tc.wantErr {
					if !strings.Contains(msg, w) {
						t.Errorf("error %q does not say %q", msg, w)
					}
				}
			}
			if r.HTTPStatus != tc.wantStatus {
				t.Errorf("HTTP status recorded %d, want %d", r.HTTPStatus, tc.wantStatus)
			}
			if r.Body != nil || r.Series != 0 {
				t.Errorf("failed scrape kept a body (%d bytes, %d series)", len(r.Body), r.Series)
			}
			if tc.wantStatus == 0 {
				seen.mu.Lock()
				if seen.reached {
					t.Error("the request reached the target's handler despite the TLS failure")
				}
				seen.mu.Unlock()
			}
			for _, secret := range secrets {
				if strings.Contains(msg, secret) {
					t.Errorf("error %q shows a secret", msg)
				}
			}
			if tc.wantLog != "" {
				// The target logs the handshake failure after sending its alert,
				// maybe after the client has returned: wait for it briefly.
				deadline := time.Now().Add(10 * time.Second)
				for !strings.Contains(logs.String(), tc.wantLog) {
					if time.Now().After(deadline) {
						t.Errorf("target did not log %q", tc.wantLog)
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			if tc.check != nil {
				tc.check(t, r.Err)
			}
		})
	}
}
