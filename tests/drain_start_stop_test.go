package tests

import (
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
