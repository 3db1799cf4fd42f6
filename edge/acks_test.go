package edge

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/edge/scrape"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/stream"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// lossyConn acknowledges the first message it is given, refuses the second and never
// answers the rest, as a server going away during a run does.
type lossyConn struct {
	mu    sync.Mutex
	calls int
}

func (c *lossyConn) Subject(string, string) string { return "s" }
func (c *lossyConn) MaxPayload(string) int         { return 1 << 20 }
func (c *lossyConn) Retried() int                  { return 0 }
func (c *lossyConn) Close() error                  { return nil }

func (c *lossyConn) PublishAsync(_ string, _ []byte, _ string, done func(error)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	switch c.calls {
	case 1:
		go done(nil)
		return nil
	case 2:
		return errors.New("connection lost")
	default:
		return nil
	}
}

// TestRunAcksMissing: the error of a run whose messages were not all acknowledged
// counts against everything it had to send: targets, and messages sent or not.
func TestRunAcksMissing(t *testing.T) {
	a := fixture.ServeCapture(t, fixture.PushGateway)
	o := Options{RunTimeout: 2 * time.Second, Jobs: []*Job{testJob("j",
		scrape.Target{Name: "a", URL: a.URL + "/1"}, scrape.Target{Name: "b", URL: a.URL + "/2"}, scrape.Target{Name: "c", URL: a.URL + "/3"})}}
	sel, err := Select(o.Jobs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	conn := &lossyConn{}
	dial := func(context.Context) (stream.Publisher, error) { return conn, nil }
	logger := slog.New(slog.DiscardHandler)
	sum, err := New(o, codec, dial, logger, "test").Run(context.Background(), sel)
	if !errors.Is(err, ErrAcksMissing) {
		t.Fatalf("err = %v, want ErrAcksMissing", err)
	}
	want := "1 of 3 targets acknowledged; of 3 messages, 1 acknowledged, 0 failed, 1 unanswered at the deadline, 1 not sent"
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "connection lost") {
		t.Errorf("err = %v\nwant %q", err, want)
	}
	if sum.Published != 2 || sum.Acked != 1 || sum.Pending != 1 {
		t.Errorf("summary %+v", sum)
	}
}
