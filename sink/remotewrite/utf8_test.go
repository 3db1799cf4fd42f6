package remotewrite

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/promtest"
)

// TestUTF8Names: metric and label names outside the legacy character set (quoted in the
// exposition, as Prometheus 3 reads them) reach Prometheus 3 as written, over remote
// write 1.0 and 2.0, beside the legacy names of the same scrape.
func TestUTF8Names(t *testing.T) {
	body := []byte(`# HELP "my.requests" Requests, with a dotted name.
# TYPE "my.requests" counter
{"my.requests","http.method"="GET"} 3
{"my.requests","http.method"="POST"} 4
{"température_°C"} 21.5
legacy_metric{"k8s.pod"="a"} 1
`)
	for _, r := range receivers {
		if r.binary != promtest.Prometheus3 {
			continue // Prometheus 2 refuses them
		}
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			srv := r.start(t, "")
			snk := newSink(t, srv.RemoteWriteURL(), r.message)
			start := time.Now().Add(-time.Second).Truncate(time.Millisecond)
			deliver(t, snk, scrape(t, "rw", "edge:1", start, body))
			for sel, want := range map[string]float64{
				`{"my.requests", "http.method"="POST", job="rw"}`: 4,
				`{"my.requests", "http.method"="GET", job="rw"}`:  3,
				`{"température_°C", job="rw"}`:                    21.5,
				`legacy_metric{"k8s.pod"="a", job="rw"}`:          1,
			} {
				v, err := srv.Query(context.Background(), sel, time.Time{})
				if err != nil || len(v) != 1 || v[0].Value != model.SampleValue(want) {
					t.Errorf("%s = %v (%v), want %v", sel, v, err, want)
				}
			}
		})
	}
}
