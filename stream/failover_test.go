package stream

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
)

func TestServerTimeout(t *testing.T) {
	for _, tt := range []struct {
		timeout time.Duration
		servers int
		want    time.Duration
	}{
		{5 * time.Second, 1, 5 * time.Second},
		{5 * time.Second, 2, 5 * time.Second / 3},
		{5 * time.Second, 3, 1250 * time.Millisecond},
		{5 * time.Second, 9, time.Second},
		{500 * time.Millisecond, 3, 500 * time.Millisecond},
	} {
		if got := serverTimeout(tt.timeout, tt.servers); got != tt.want {
			t.Errorf("serverTimeout(%s, %d) = %s, want %s", tt.timeout, tt.servers, got, tt.want)
		}
	}
}

// TestDialFailover: with a server that accepts connections but never answers listed
// beside a healthy one, every dial connects through the healthy one within its
// connect timeout, whichever order nats.go tries them in (it shuffles them).
func TestDialFailover(t *testing.T) {
	srv := stantest.Start(t, stantest.WithJetStream(t.TempDir()))
	silent := stantest.Silent(t)
	const timeout = 3 * time.Second
	for i := range 6 {
		for _, urls := range [][]string{{silent, srv.URL()}, {srv.URL(), silent}} {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			start := time.Now()
			s, err := DialSTAN(ctx, STANOptions{
				URLs: urls, ClusterID: srv.ClusterID(), ClientID: ClientID("failover", "test"),
				ConnectTimeout: timeout, Logger: newTestLog(t).logger(),
			})
			if err != nil {
				t.Fatalf("STAN dial %d to %v: %v after %s", i, urls, err, time.Since(start))
			}
			_ = s.Close()
			j, err := DialJetStream(ctx, JetStreamOptions{
				URLs: urls, Stream: "FAILOVER", Subject: "failover", Create: true,
				ConnectTimeout: timeout, Logger: newTestLog(t).logger(),
			})
			if err != nil {
				t.Fatalf("JetStream dial %d to %v: %v after %s", i, urls, err, time.Since(start))
			}
			_ = j.Close()
			cancel()
		}
	}
}
