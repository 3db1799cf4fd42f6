package tests

import (
	"fmt"
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
