package remotewrite

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	remote "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// BenchmarkDeliver is the sink's cost per scrape of the node_exporter capture, from the
// parsed families to the request on the wire, into a loopback receiver that reads each
// request and answers at once: cold, each scrape of a target the sink has not seen (a
// drain catching up after a restart); warm, each scrape of a target whose series are the
// same as at its last scrape (a drain in its steady state).
func BenchmarkDeliver(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		// What a 2.0 receiver says it wrote; the sender counts nothing written a failure.
		w.Header().Set("X-Prometheus-Remote-Write-Samples-Written", "1")
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	body := fixture.Read(b, fixture.NodeExporter)
	for _, msg := range []remote.WriteMessageType{remote.WriteV1MessageType, remote.WriteV2MessageType} {
		for _, warm := range []bool{false, true} {
			name := fmt.Sprintf("%s/cold", msg)
			if warm {
				name = fmt.Sprintf("%s/warm", msg)
			}
			b.Run(name, func(b *testing.B) {
				s, err := New(Options{Name: "bench", URL: srv.URL, Message: msg, Writers: 1}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				start := time.Now().Add(-time.Hour)
				ctx := context.Background()
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					b.StopTimer()
					instance := fmt.Sprintf("host%d:9100", i)
					if warm {
						instance = "host:9100"
					}
					sc := scrape(b, "node", instance, start.Add(time.Duration(i)*time.Second), body)
					b.StartTimer()
					if err := s.Deliver(ctx, sc); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
