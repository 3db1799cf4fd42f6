package exposition

import (
	"testing"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// TestPrometheus3Capture: Prometheus 3's own /metrics in its protobuf format gives the
// families its text format gives, with native histograms where the text has classic
// ones only, and created timestamps.
func TestPrometheus3Capture(t *testing.T) {
	pb, err := ParseScrape(fixture.Read(t, fixture.Prometheus3Proto), fixture.ProtoContentType, Histograms{Native: true, AlwaysClassic: true})
	if err != nil {
		t.Fatal(err)
	}
	text, err := Parse(fixture.Read(t, fixture.Prometheus3Text), fixture.TextContentType)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range text {
		names[mf.GetName()] = true
	}
	native, created := 0, 0
	for _, mf := range pb {
		if !names[mf.GetName()] {
			t.Errorf("family %s is in the protobuf capture only", mf.GetName())
		}
		delete(names, mf.GetName())
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil && IsNative(h) {
				native++
			}
			if m.GetCounter().GetCreatedTimestamp() != nil || m.GetHistogram().GetCreatedTimestamp() != nil {
				created++
			}
		}
	}
	for n := range names {
		t.Errorf("family %s is in the text capture only", n)
	}
	if native == 0 || created == 0 {
		t.Errorf("%d native histograms, %d created timestamps in the protobuf capture, want some of each", native, created)
	}
	t.Logf("%d families, %d native histograms, %d created timestamps", len(pb), native, created)
}
