package tests

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/pgwtest"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
	"github.com/prometheus-streams/prometheus-streams/stream"
)

// jsStreamMsgs is how many messages the tests' stream holds.
func jsStreamMsgs(t *testing.T, srv *stantest.Server) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := jsContext(t, srv).Stream(ctx, jsStreamName)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State.Msgs
}

// TestDrainJetStreamDuplicates: a scrape published twice with its Nats-Msg-Id, as by an
// edge retrying after a lost ack, is stored once and delivered once.
func TestDrainJetStreamDuplicates(t *testing.T) {
	srv := jsTransport.start(t)
	pgw := pgwtest.Start(t)
	mon := freeAddr(t)
	d := startDrain(t, writeConfig(t, jsTransport.drainConfig(srv, pgw.URL(), mon, "")), mon)

	start := time.Now()
	msg := func() *nats.Msg {
		m := nats.NewMsg(stream.Subject("prometheus", "j", "a"))
		m.Data = encode(t, "j", "a", start, "m 1\n")
		m.Header.Set(jetstream.MsgIDHeader, stream.MsgID("j", "a", start, 0, 1))
		return m
	}
	acks := jsPublish(t, srv, msg(), msg())
	if acks[0].Duplicate || !acks[1].Duplicate {
		t.Errorf("acks say duplicate %v, %v; want false, true", acks[0].Duplicate, acks[1].Duplicate)
	}
	waitFor(t, 10*time.Second, "a on the gateway", func() bool {
		_, ok := groupValue(pgw.Scrape(t), "m", "j", "a")
		return ok
	})
	if n := jsStreamMsgs(t, srv); n != 1 {
		t.Errorf("stream holds %d messages, want 1", n)
	}
	if ci := jsSettled(t, srv, "drain1"); ci.Delivered.Consumer != 1 {
		t.Errorf("consumer delivered %d times, want 1", ci.Delivered.Consumer)
	}
	if v := d.metric("prometheus_streams_drain_messages_received_total"); v != 1 {
		t.Errorf("received = %v, want 1", v)
	}
}

// TestDrainJetStreamServerRestart stops the JetStream server under a running drain and
// starts it again on the same port and store: the stream and the durable consumer are
// still there, and the drain resumes, delivering what was published meanwhile.
func TestDrainJetStreamServerRestart(t *testing.T) {
	dir := t.TempDir()
	srv := stantest.Start(t, stantest.WithJetStream(dir))
	pgw := pgwtest.Start(t)
	mon := freeAddr(t)
	d := startDrain(t, writeConfig(t, jsTransport.drainConfig(srv, pgw.URL(), mon, "")), mon)

	now := time.Now()
	jsTransport.publish(t, srv, encode(t, "j", "before", now, "m 1\n"))
	waitFor(t, 10*time.Second, "before on the gateway", func() bool {
		_, ok := groupValue(pgw.Scrape(t), "m", "j", "before")
		return ok
	})
	jsSettled(t, srv, "drain1") // its ack processed, before the server goes

	srv.Shutdown()
	waitFor(t, 10*time.Second, "the drain sees the server gone", func() bool {
		return d.metric("prometheus_streams_drain_stream_connected") == 0
	})
	srv = stantest.Start(t, stantest.WithJetStream(dir), stantest.WithPort(srv.Port()))
	// Published before the drain is back: the durable consumer keeps it for the drain.
	jsTransport.publish(t, srv, encode(t, "j", "after", now.Add(time.Second), "m 2\n"))
	if n := jsStreamMsgs(t, srv); n != 2 {
		t.Errorf("stream holds %d messages after the restart, want 2", n)
	}
	waitFor(t, 20*time.Second, "after on the gateway", func() bool {
		_, ok := groupValue(pgw.Scrape(t), "m", "j", "after")
		return ok
	})
	if v := d.metric("prometheus_streams_drain_stream_connected"); v != 1 {
		t.Errorf("stream_connected = %v after the restart", v)
	}
	if ci := jsSettled(t, srv, "drain1"); ci.AckFloor.Stream != 2 {
		t.Errorf("consumer's ack floor at stream sequence %d, want 2", ci.AckFloor.Stream)
	}
}

// TestDrainJetStreamBackoffAcrossScrapes: while the gateway is down, a newer scrape of a
// target arrives after the older one was handed back to the server. The older one is
// superseded at its redelivery, and the newer one's backoff grows.
func TestDrainJetStreamBackoffAcrossScrapes(t *testing.T) {
	// Without place superseding a scrape older than the target's handed-back one, the
	// older would be delivered again, each delivery clearing the other's retry state:
	// both would retry at the first backoff step until the gateway returned, and the
	// older might be pushed before the newer.
	srv := jsTransport.start(t)
	pgw := pgwtest.Start(t)
	mon := freeAddr(t)
	d := startDrain(t, writeConfig(t, jsTransport.drainConfig(srv, pgw.URL(), mon, "")), mon)
	pgw.Stop()
	naks := jsAdvisories(t, srv, "MSG_NAKED", "drain1")
	now := time.Now()
	jsTransport.publish(t, srv, encode(t, "j", "a", now.Add(-2*time.Second), "m 1\n"))
	waitFor(t, 10*time.Second, "the older scrape nakked", func() bool { return len(naks()) >= 1 })
	jsTransport.publish(t, srv, encode(t, "j", "a", now.Add(-time.Second), "m 2\n"))
	waitFor(t, 10*time.Second, "the older scrape superseded", func() bool {
		return d.metric("prometheus_streams_drain_messages_superseded_total") == 1
	})
	checkNakBackoff(t, naks, 2)
	n := 0
	for _, a := range naks() {
		if a.StreamSeq == 1 {
			n++
		}
	}
	// Once before the newer scrape arrived, and at most once more if its redelivery came
	// before the newer scrape did.
	if n > 2 {
		t.Errorf("the older scrape was nakked %d times, want at most 2", n)
	}
	pgw.Restart()
	waitFor(t, 20*time.Second, "the newer scrape on the gateway", func() bool {
		v, _ := groupValue(pgw.Scrape(t), "m", "j", "a")
		return v == 2
	})
}
