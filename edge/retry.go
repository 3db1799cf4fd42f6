package edge

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus-streams/prometheus-streams/stream"
)

// Bounds of the wait before a publish is tried again.
const (
	retryMinWait = 50 * time.Millisecond
	retryMaxWait = time.Second
)

// retrier publishes through a Conn and tries a publish again, with the same message ID,
// when it failed in a way the next try may not: no ack in time, the connection lost
// (the client reconnects to another server meanwhile), no stream leader answering (a
// cluster electing one). It tries until the server acks or ctx ends. A message that
// was stored after all, its ack lost, is stored once: the server drops a message whose
// ID it stored within the stream's duplicate window. So only for a transport that
// deduplicates by message ID (JetStream).
type retrier struct {
	ctx     context.Context
	conn    Conn
	retries atomic.Int64 // publishes tried again, for the run's summary
}

// MaxPayload implements Conn.
func (r *retrier) MaxPayload(subject string) int { return r.conn.MaxPayload(subject) }

// Close implements Conn.
func (r *retrier) Close() error { return r.conn.Close() }

// PublishAsyncMsg implements Conn: done gets the ack, or the last failure once ctx has
// ended or the failure is final. It returns an error, never calling done, only for a
// message that can never be sent (too large, an invalid ID, the Conn closed).
func (r *retrier) PublishAsyncMsg(subject string, data []byte, msgID string, done func(error)) error {
	if done == nil {
		done = func(error) {}
	}
	p := &retried{r: r, subject: subject, data: data, id: msgID, done: done, wait: retryMinWait}
	err := r.conn.PublishAsyncMsg(subject, data, msgID, p.answered)
	if err != nil && !retryable(err) {
		return err
	}
	if err != nil {
		p.again(err)
	}
	return nil
}

// retryable reports whether a publish that failed so may succeed if tried again.
func retryable(err error) bool {
	return errors.Is(err, stream.ErrAckTimeout) || errors.Is(err, stream.ErrUnreachable)
}

// retried is one message being published until acked.
type retried struct {
	r       *retrier
	subject string
	data    []byte
	id      string
	done    func(error)
	tries   int
	wait    time.Duration
}

// answered is the Conn's verdict on a try; it runs on the transport's goroutine.
func (p *retried) answered(err error) {
	if err == nil || !retryable(err) {
		p.done(err)
		return
	}
	p.again(err)
}

// again tries the publish once more after a growing wait, unless ctx ends first. It
// does not block: the transport's goroutines must not publish.
func (p *retried) again(err error) {
	p.tries++
	if p.r.ctx.Err() != nil {
		p.done(p.gaveUp(err))
		return
	}
	wait := p.wait
	p.wait = min(2*p.wait, retryMaxWait)
	go func() {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-p.r.ctx.Done():
			p.done(p.gaveUp(err))
			return
		}
		p.r.retries.Add(1)
		if err := p.r.conn.PublishAsyncMsg(p.subject, p.data, p.id, p.answered); err != nil {
			p.answered(err)
		}
	}()
}

func (p *retried) gaveUp(err error) error {
	return fmt.Errorf("%w (tried %d times until the deadline)", err, p.tries)
}
