package stream

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
)

// Publisher publishes to a stream and tells of each message whether the server
// persisted it: what Transport.Publisher returns, whichever the transport. Its methods
// are safe for concurrent use.
type Publisher interface {
	// Subject is the subject a scrape of job/instance is published on, as
	// Transport.Subject.
	Subject(job, instance string) string
	// MaxPayload is the largest body PublishAsync accepts on subject.
	MaxPayload(subject string) int
	// PublishAsync sends data on subject and calls done exactly once with the server's
	// verdict (nil: persisted), unless it returns an error, in which case done is never
	// called. done runs on a transport goroutine, possibly after Close returns; it must
	// not block and must not publish. A nil done ignores the verdict.
	//
	// msgID identifies the message (see MsgID) for a transport that deduplicates by it:
	// JetStream stores a message published again with an ID it stored within the
	// stream's duplicate window only once, so there a publish that got no ack in time,
	// lost its connection (the client reconnects to another server meanwhile) or found
	// no stream leader (a cluster electing one) is tried again, with the same ID, until
	// the server acks it, the failure is final, or the context the Publisher was opened
	// with ends; done then gets the last failure. NATS Streaming has no message IDs: it
	// ignores msgID, and does not try again.
	//
	// The errors, returned or given to done, wrap ErrTooLarge, ErrClosed,
	// ErrUnreachable, ErrAckTimeout or ErrRejected, as STAN.PublishAsync and
	// JetStream.PublishAsyncMsg say.
	PublishAsync(subject string, data []byte, msgID string, done func(error)) error
	// Retried is how many publishes were tried again so far.
	Retried() int
	// Close closes the connection. Publishes still awaiting their ack are reported to
	// their done with ErrClosed (they may nevertheless have been persisted).
	Close() error
}

// conn is a transport's own connection as a publisher uses it: *STAN, *JetStream.
type conn interface {
	MaxPayload(subject string) int
	PublishAsyncMsg(subject string, data []byte, msgID string, done func(error)) error
	Close() error
}

var (
	_ conn = (*STAN)(nil)
	_ conn = (*JetStream)(nil)
)

// publisher is the Publisher of both transports: a connection, and for one that
// deduplicates by message ID, the tries again until ctx ends.
type publisher struct {
	conn
	subject func(job, instance string) string
	ctx     context.Context // nil: no tries again
	retries atomic.Int64
}

// Bounds of the wait before a publish is tried again.
const (
	retryMinWait = 50 * time.Millisecond
	retryMaxWait = time.Second
)

func (p *publisher) Subject(job, instance string) string { return p.subject(job, instance) }

func (p *publisher) Retried() int { return int(p.retries.Load()) }

func (p *publisher) PublishAsync(subject string, data []byte, msgID string, done func(error)) error {
	if p.ctx == nil {
		return p.conn.PublishAsyncMsg(subject, data, msgID, done)
	}
	if done == nil {
		done = func(error) {}
	}
	r := &retried{p: p, subject: subject, data: data, id: msgID, done: done, wait: retryMinWait}
	err := p.conn.PublishAsyncMsg(subject, data, msgID, r.answered)
	if err != nil && !retryable(err) {
		return err
	}
	if err != nil {
		r.again(err)
	}
	return nil
}

// retryable reports whether a publish that failed so may succeed if tried again.
func retryable(err error) bool {
	return errors.Is(err, ErrAckTimeout) || errors.Is(err, ErrUnreachable)
}

// retried is one message being published until acked.
type retried struct {
	p       *publisher
	subject string
	data    []byte
	id      string
	done    func(error)
	tries   int
	wait    time.Duration
}

// answered is the connection's verdict on a try; it runs on the transport's goroutine.
func (r *retried) answered(err error) {
	if err == nil || !retryable(err) {
		r.done(err)
		return
	}
	r.again(err)
}

// again tries the publish once more after a growing wait, unless ctx ends first. It
// does not block: the transport's goroutines must not publish.
func (r *retried) again(err error) {
	r.tries++
	ctx := r.p.ctx
	if ctx.Err() != nil {
		r.done(r.gaveUp(err))
		return
	}
	wait := r.wait
	r.wait = min(2*r.wait, retryMaxWait)
	go func() {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			r.done(r.gaveUp(err))
			return
		}
		r.p.retries.Add(1)
		if err := r.p.conn.PublishAsyncMsg(r.subject, r.data, r.id, r.answered); err != nil {
			r.answered(err)
		}
	}()
}

func (r *retried) gaveUp(err error) error {
	return fmt.Errorf("%w (tried %d times until the deadline)", err, r.tries)
}

// MsgID identifies part part of parts of the scrape of job/instance started at start,
// as its message's Nats-Msg-Id: the same scrape published again (a retry after a lost
// ack) has the same ID, so the server stores it once; another scrape, target or part
// has another. A whole scrape is part 0 of 1. The ID is a hash of job and instance
// (which may hold anything), the start in Unix nanoseconds and the part: at most 64
// bytes of [0-9a-f-].
func MsgID(job, instance string, start time.Time, part, parts int) string {
	h := sha256.New()
	// Length-prefixed, so no two (job, instance) pairs hash the same input.
	for _, s := range []string{job, instance} {
		h.Write(strconv.AppendInt(nil, int64(len(s)), 10))
		h.Write([]byte{':'})
		h.Write([]byte(s))
	}
	b := make([]byte, 0, 64)
	b = hex.AppendEncode(b, h.Sum(nil)[:12])
	b = append(b, '-')
	b = strconv.AppendInt(b, start.UnixNano(), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(part), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(parts), 10)
	return string(b)
}
