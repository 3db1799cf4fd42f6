package tests

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// TestDrainVersionAndIndex: the drain's build_info names the version --version prints,
// and its monitor's root links to its pages instead of answering 404.
func TestDrainVersionAndIndex(t *testing.T) {
	natsAddr, exposeAddr, mon := freeAddr(t), freeAddr(t), freeAddr(t)
	d := startDrain(t, writeConfig(t, centralConfig(natsAddr, exposeAddr, mon, "")), mon)

	// "drain 0.0.0~dev (commit unknown)"
	f := strings.Fields(runBin(t, "drain", "--version").stdout)
	if len(f) != 4 {
		t.Fatalf("drain --version: %q", f)
	}
	_, b := fetch(t, d.monitor+"/metrics", "")
	want := fmt.Sprintf(`version=%q`, f[1])
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "prometheus_streams_build_info{") && strings.Contains(line, want) && strings.HasSuffix(line, " 1") {
			found = true
		}
	}
	if !found {
		t.Errorf("no prometheus_streams_build_info with %s in:\n%s", want, b)
	}

	_, b = fetch(t, d.monitor+"/", "")
	for _, link := range []string{`href="metrics"`, `href="targets"`, `href="healthz"`} {
		if !strings.Contains(string(b), link) {
			t.Errorf("/ lacks %s:\n%s", link, b)
		}
	}
	fetch(t, d.monitor+"/targets", "")
}

// TestMakeTestStopsFirst: on a machine without the Debian packages the tests use, and
// without a way to install them, make test stops before building anything and names the
// one command that installs them.
func TestMakeTestStopsFirst(t *testing.T) {
	bin := t.TempDir()
	for _, tool := range []string{"bash", "sh", "make"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("no %s in PATH: the test needs it to run make", tool)
		}
		if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("make", "-C", "..", "test")
	cmd.Env = append(os.Environ(), "PATH="+bin)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("make test succeeded with nothing installed:\n%s", out)
	}
	s := string(out)
	mustContain(t, "make test", s, "apt-get install -y --no-install-recommends prometheus-pushgateway prometheus chromium rpm")
	if strings.Contains(s, "go vet") || strings.Contains(s, "go test") || strings.Contains(s, "tools.sh") {
		t.Errorf("make test went on past the missing packages:\n%s", s)
	}
}

// TestDryRunOnTerminal: on a terminal (script(1) gives scrape-once one), --dry-run prints
// each target as its scrape ends: a fast target before a slow one listed first.
func TestDryRunOnTerminal(t *testing.T) {
	script, err := exec.LookPath("script")
	if err != nil {
		t.Fatal("script not found in PATH: apt-get install -y util-linux")
	}
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(time.Second)
		fmt.Fprintln(w, "slow_metric 1")
	}))
	defer slow.Close()
	fast := fixture.ServeCapture(t, fixture.PushGateway)
	cfg := writeConfig(t, fmt.Sprintf(`scrape_interval: 30s
jobs:
  j:
    targets: [{name: slow, url: '%s'}, {name: fast, url: '%s'}]
`, slow.URL, fast.URL))
	cmd := exec.Command(script, "-qec", filepath.Join(binDir, "scrape-once")+" -c "+cfg+" --dry-run", "/dev/null")
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	s := string(out)
	if i, j := strings.Index(s, "# j/fast: ok"), strings.Index(s, "# j/slow: ok"); i < 0 || j < 0 || i > j {
		t.Errorf("on a terminal, want the fast target first:\n%.2000s", s)
	}
	// Into a pipe, the config's order.
	r := runBin(t, "scrape-once", "-c", cfg, "--dry-run")
	if i, j := strings.Index(r.stdout, "# j/fast: ok"), strings.Index(r.stdout, "# j/slow: ok"); i < 0 || j < 0 || j > i {
		t.Errorf("into a pipe, want the config's order:\n%.2000s", r.stdout)
	}
}
