package remotewrite

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// TestStateSize measures what the sink keeps per target to end its series (the README's
// figure): the label-set hashes and the compressed label sets of a node_exporter target.
func TestStateSize(t *testing.T) {
	rw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer rw.Close()
	snk := newSink(t, rw.URL, "")
	sc := scrape(t, "node", "host1:9100", time.Now(), fixture.Read(t, fixture.NodeExporter))
	if err := snk.Deliver(context.Background(), sc); err != nil {
		t.Fatal(err)
	}
	tg := snk.targets["node/host1:9100"]
	size := 8*len(tg.hashes) + len(tg.sets)
	t.Logf("%d series: %d bytes of hashes + %d bytes of label sets = %d bytes (%.1f per series)",
		len(tg.hashes), 8*len(tg.hashes), len(tg.sets), size, float64(size)/float64(len(tg.hashes)))
	// The README says about 8 KB for this target, about 16 bytes a series.
	if size < 7<<10 || size > 9<<10 {
		t.Errorf("state of a node_exporter target: %d bytes, the README says about 8 KB", size)
	}
}
