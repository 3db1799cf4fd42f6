package version

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector("prometheus_streams"))
	n, err := testutil.GatherAndCount(reg, "prometheus_streams_build_info")
	if err != nil || n != 1 {
		t.Fatalf("build_info: %d series, %v", n, err)
	}
	fams, _ := reg.Gather()
	labels := map[string]string{}
	for _, l := range fams[0].GetMetric()[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["version"] != Version || labels["revision"] != Commit || !strings.HasPrefix(labels["goversion"], "go") {
		t.Errorf("build_info labels %v, want version %s, revision %s", labels, Version, Commit)
	}
	if !strings.Contains(Info("drain"), Version) {
		t.Errorf("Info %q lacks %s", Info("drain"), Version)
	}
}
