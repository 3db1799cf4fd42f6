package httpserver

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"
)

func get(t *testing.T, url, user, pass string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthAndMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x_total", Help: "x"})
	reg.MustRegister(c)
	var ready atomic.Bool
	s, err := Listen("127.0.0.1:0", "", MonitorHandler(reg, ready.Load), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	base := "http://" + s.Addr()
	if code, _ := get(t, base+"/healthz", "", ""); code != 503 {
		t.Errorf("not ready: %d", code)
	}
	ready.Store(true)
	if code, _ := get(t, base+"/healthz", "", ""); code != 200 {
		t.Errorf("ready: %d", code)
	}
	if code, body := get(t, base+"/metrics", "", ""); code != 200 || !strings.Contains(body, "x_total 0") {
		t.Errorf("metrics: %d %s", code, body)
	}
}

// TestWebConfig requires basic auth through an exporter-toolkit web config file.
func TestWebConfig(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(path, []byte("basic_auth_users:\n  prom: "+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Listen("127.0.0.1:0", path, MonitorHandler(prometheus.NewRegistry(), func() bool { return true }), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	base := "http://" + s.Addr()
	if code, _ := get(t, base+"/metrics", "", ""); code != 401 {
		t.Errorf("no credentials: %d, want 401", code)
	}
	if code, _ := get(t, base+"/metrics", "prom", "wrong"); code != 401 {
		t.Errorf("wrong password: %d, want 401", code)
	}
	if code, _ := get(t, base+"/metrics", "prom", "s3cret"); code != 200 {
		t.Errorf("right password: %d, want 200", code)
	}

	bad := filepath.Join(t.TempDir(), "bad.yml")
	_ = os.WriteFile(bad, []byte("tls_server_config: {cert_file: /nonexistent}\n"), 0o600)
	if _, err := Listen("127.0.0.1:0", bad, MonitorHandler(prometheus.NewRegistry(), func() bool { return true }), slog.New(slog.DiscardHandler)); err == nil {
		t.Error("a bad web config was accepted")
	}
}

// TestIndex: / links to every page, each link works, and other paths are still 404.
func TestIndex(t *testing.T) {
	page := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "the targets") })
	s, err := Listen("127.0.0.1:0", "", MonitorHandler(prometheus.NewRegistry(), func() bool { return true },
		Page{Path: "/targets", About: "targets", Handler: page}), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	base := "http://" + s.Addr() + "/"
	code, body := get(t, base, "", "")
	if code != 200 {
		t.Fatalf("/: %d", code)
	}
	for _, link := range []string{"metrics", "targets", "healthz"} {
		if !strings.Contains(body, `href="`+link+`"`) {
			t.Errorf("/ does not link to %s:\n%s", link, body)
		}
		if code, _ := get(t, base+link, "", ""); code != 200 {
			t.Errorf("%s: %d", link, code)
		}
	}
	if code, _ := get(t, base+"nothing", "", ""); code != 404 {
		t.Errorf("/nothing: %d, want 404", code)
	}
}
