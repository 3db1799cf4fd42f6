package tests

import (
	"strings"
	"testing"
	"time"
)

// TestDrainEmbeddedPortInUse: a second drain on an embedded stream port already in use
// fails at once, saying why, instead of waiting 10s for "unable to start a NATS Server".
func TestDrainEmbeddedPortInUse(t *testing.T) {
	nats, monitor := freeAddr(t), freeAddr(t)
	d := startDrain(t, writeConfig(t, centralConfig(nats, freeAddr(t), monitor, "")), monitor)

	r := runBin(t, "drain", "-c", writeConfig(t, centralConfig(nats, freeAddr(t), freeAddr(t), "")))
	if r.code == 0 {
		t.Fatal("the second drain started")
	}
	mustContain(t, "stderr", r.stderr, "embedded stream", nats, "address already in use")
	if r.elapsed > 5*time.Second {
		t.Errorf("the second drain failed after %s", r.elapsed)
	}
	if d.healthz() != 200 {
		t.Error("the first drain is no longer ready")
	}
}

// TestDrainStopQuiet: SIGTERM stops the drain cleanly, logging nothing as a fault (it
// logged a WARN "not subscribed" line per stream it consumed).
func TestDrainStopQuiet(t *testing.T) {
	monitor := freeAddr(t)
	d := startDrain(t, writeConfig(t, centralConfig(freeAddr(t), freeAddr(t), monitor, "")), monitor)
	before := len(d.logs())
	if code := d.stop(); code != 0 {
		t.Fatalf("exit %d\n%s", code, d.logs())
	}
	after := d.logs()[before:]
	for _, line := range strings.Split(after, "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			t.Errorf("logged at stop: %s", line)
		}
	}
	mustContain(t, "log", after, "stopping")
}
