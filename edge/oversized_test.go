package edge

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/stan.go"

	"github.com/prometheus-streams/prometheus-streams/edge/scrape"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
	"github.com/prometheus-streams/prometheus-streams/stream"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// TestRunOversized: a scrape that would need more than envelope.MaxParts messages is not
// split but published as a failed scrape that says why, and the run succeeds.
func TestRunOversized(t *testing.T) {
	const maxPayload = 4 << 10
	srv := stantest.Start(t, stantest.WithMaxPayload(maxPayload))
	// Random label values barely compress: about 5 MB on the wire, over 1,024 parts of 4 KB.
	var b strings.Builder
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 80 {
		fmt.Fprintf(&b, "huge{id=\"%d\",blob=\"", i)
		for range 8192 {
			fmt.Fprintf(&b, "%016x", r.Uint64())
		}
		b.WriteString("\"} 1\n")
	}
	big := fixture.Serve(t, []byte(b.String()), fixture.TextContentType)
	o := Options{RunTimeout: 27 * time.Second, Jobs: []*Job{testJob("j", scrape.Target{Name: "huge", URL: big.URL})}}
	sel, err := Select(o.Jobs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := stream.Options{ClusterID: srv.ClusterID(), URLs: []string{srv.URL()}, Topic: "prometheus", ConnectTimeout: 2 * time.Second}
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	logger := slog.New(slog.DiscardHandler)
	sum, err := New(o, codec, Dial(s, o), logger, "test").Run(context.Background(), sel)
	if err != nil || sum.Oversized != 1 || sum.Split != 0 || sum.Published != 1 || sum.Acked != 1 {
		t.Fatalf("run: %v, %+v; want one failed-scrape notice", err, sum)
	}

	sc, err := stan.Connect(srv.ClusterID(), "reader", stan.NatsURL(srv.URL()))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	got := make(chan []byte, 1)
	sub, err := sc.Subscribe("prometheus", func(m *stan.Msg) { got <- m.Data }, stan.DeliverAllAvailable())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	e, err := codec.Decode(<-got)
	if err != nil {
		t.Fatal(err)
	}
	if e.Parts > 1 || e.Body != nil || !strings.Contains(e.Error, "even in parts") || !strings.Contains(e.Error, "max payload") {
		t.Errorf("notice: parts %d, body %d bytes, error %q", e.Parts, len(e.Body), e.Error)
	}
}
