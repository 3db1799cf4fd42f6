package tests

import (
	"fmt"
	"testing"

	"github.com/prometheus-streams/prometheus-streams/lib/fixture"
	"github.com/prometheus-streams/prometheus-streams/lib/stantest"
)

// TestExtraArguments: a word left on the command line is a usage error, never ignored
// (`scrape-once -c FILE node1` would otherwise publish every target).
func TestExtraArguments(t *testing.T) {
	srv := stantest.Start(t)
	a := fixture.ServeCapture(t, fixture.PushGateway)
	cfg := writeConfig(t, edgeConfig(srv.URL(), srv.ClusterID(), fmt.Sprintf("  j:\n    targets: [{name: node1, url: '%s'}]\n", a.URL)))

	for _, args := range [][]string{
		{"-c", cfg, "node1"},
		{"-c", cfg, "--dry-run", "node1"},
		{"-c", cfg, "--check-config", "node1"},
		{"-c", cfg, "--", "node1"},
	} {
		r := runBin(t, "scrape-once", args...)
		if r.code != 64 {
			t.Errorf("scrape-once %q: exit %d, want 64\n%s", args, r.code, r.stderr)
		}
		mustContain(t, "stderr", r.stderr, `unexpected argument "node1"`, "--target node1")
		if r.stdout != "" {
			t.Errorf("scrape-once %q printed %q", args, r.stdout)
		}
	}
	if got := readChannel(t, srv, "prometheus"); len(got) != 0 {
		t.Errorf("published %d messages", len(got))
	}

	r := runBin(t, "drain", "-c", cfg, "extra")
	if r.code != 64 {
		t.Errorf("drain extra: exit %d, want 64\n%s", r.code, r.stderr)
	}
	mustContain(t, "stderr", r.stderr, `unexpected argument "extra"`)
}
