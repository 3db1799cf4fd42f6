package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/stream"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// Names of what the harness publishes.
const (
	benchJob       = "node"
	benchPublisher = "bench-edge"
	benchTopic     = "prometheus"
)

// instance is the instance label of target i.
func instance(i int) string { return fmt.Sprintf("bench-%05d:9100", i) }

// publisher is the edge side: it publishes one envelope per target per round through
// stream's publisher, as scrape-once does, so the edge is never the bottleneck.
type publisher struct {
	codec  *envelope.Codec
	conn   stream.Publisher
	body   []byte
	series int

	mu       sync.Mutex
	timeline []published // cumulative publishes over time, for the overload check
	total    int
	// keep: remember every scrape spread publishes, in sent, for a receiver's check.
	keep bool
	sent []sentScrape
}

// published is how many messages had been published by a moment, the last of them of
// scrapes started at start.
type published struct {
	at, start time.Time
	n         int
}

func dialPublisher(ctx context.Context, url, clusterID string, body []byte, series int, codec *envelope.Codec) (*publisher, error) {
	t, err := stream.Open(stream.Options{
		URLs: []string{url}, ClusterID: clusterID, ClientID: stream.ClientID("bench-edge", ""),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, err
	}
	conn, err := t.Publisher(ctx)
	if err != nil {
		return nil, err
	}
	return &publisher{codec: codec, conn: conn, body: body, series: series}, nil
}

func (p *publisher) close() { _ = p.conn.Close() }

// encode is target i's scrape started at start, as the wire carries it.
func (p *publisher) encode(i int, start time.Time) ([]byte, error) {
	return p.codec.Encode(&envelope.Envelope{
		Publisher: benchPublisher, Job: benchJob, Instance: instance(i),
		Start: start, Duration: 20 * time.Millisecond, HTTPStatus: 200,
		ContentType: fixture.TextContentType, Body: p.body, Series: p.series,
	})
}

// prepare encodes every target's scrape of the round starting at start.
func (p *publisher) prepare(n int, start time.Time) ([][]byte, error) {
	msgs := make([][]byte, n)
	for i := range msgs {
		m, err := p.encode(i, start)
		if err != nil {
			return nil, err
		}
		msgs[i] = m
	}
	return msgs, nil
}

// burst publishes msgs, the round's scrapes started at start, at once and waits for
// the server's acks.
func (p *publisher) burst(ctx context.Context, msgs [][]byte, start time.Time, ackWait time.Duration) (int, error) {
	var acks stream.Acks
	var sendErr error
	// Counted before they go: the drain sees the first at once.
	p.record(len(msgs), start)
	for _, m := range msgs {
		if err := acks.Publish(p.conn, benchTopic, m, "", nil); err != nil {
			sendErr = errors.Join(sendErr, err)
			continue
		}
	}
	return p.waitAcks(ctx, &acks, len(msgs), ackWait, sendErr)
}

// spread publishes target i's scrape at start + i×interval/n, each encoded when it is
// due with that time as its Start, until stop says to stop, and waits for the acks.
func (p *publisher) spread(ctx context.Context, n int, start time.Time, interval, ackWait time.Duration, stop func() bool) (int, error) {
	var acks stream.Acks
	var sendErr error
	sent := 0
	for sent < n && ctx.Err() == nil && !stop() {
		due := start.Add(time.Duration(int64(interval) * int64(sent) / int64(n)))
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
			continue
		}
		// Everything due by now, in one go: sleeps are coarser than the spacing at large n.
		for now := time.Now(); sent < n; sent++ {
			if start.Add(time.Duration(int64(interval) * int64(sent) / int64(n))).After(now) {
				break
			}
			at := time.Now()
			m, err := p.encode(sent, at)
			if err != nil {
				return 0, err
			}
			if err := acks.Publish(p.conn, benchTopic, m, "", nil); err != nil {
				sendErr = errors.Join(sendErr, err)
				continue
			}
			p.record(1, at)
			if p.keep {
				p.mu.Lock()
				p.sent = append(p.sent, sentScrape{instance: instance(sent), ts: at.UnixMilli(), at: time.Now()})
				p.mu.Unlock()
			}
		}
	}
	return p.waitAcks(ctx, &acks, sent, ackWait, sendErr)
}

func (p *publisher) waitAcks(ctx context.Context, acks *stream.Acks, sent int, ackWait time.Duration, sendErr error) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, ackWait)
	defer cancel()
	acked, failed, pending := acks.Wait(ctx)
	if sendErr != nil || failed > 0 || pending > 0 {
		err := fmt.Errorf("%d of %d messages acknowledged by the stream, %d failed, %d unanswered", acked, sent, failed, pending)
		if first := acks.Err(); first != nil {
			err = fmt.Errorf("%w (first failure: %w)", err, first)
		}
		return acked, errors.Join(err, sendErr)
	}
	return acked, nil
}

// record counts n messages of scrapes started at start as published now.
func (p *publisher) record(n int, start time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total += n
	p.timeline = append(p.timeline, published{at: time.Now(), start: start, n: p.total})
}

// publishedBy is how many messages had been published by t.
func (p *publisher) publishedBy(t time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, e := range p.timeline {
		if e.at.After(t) {
			break
		}
		n = e.n
	}
	return n
}

// startedBy is how many messages published are of scrapes started by t: their lag
// counts from then.
func (p *publisher) startedBy(t time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, e := range p.timeline {
		if e.start.After(t) {
			break
		}
		n = e.n
	}
	return n
}

func (p *publisher) publishedTotal() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total
}

// sentSoFar is every scrape spread has published with keep set, in sending order. The
// slice is shared: the caller must not modify it.
func (p *publisher) sentSoFar() []sentScrape {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent[:len(p.sent):len(p.sent)]
}
