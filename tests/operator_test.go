package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
			t.Skipf("no %s", tool)
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
