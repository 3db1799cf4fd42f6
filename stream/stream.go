// Package stream is prometheus-streams' transport: it carries opaque message bodies from
// the edge to the centre over a persistent message stream, NATS Streaming or JetStream,
// and tells the publisher which ones the server has persisted.
//
// The binaries ask Open for a Transport, from transport-neutral Options, and get from it
// all they need, whichever the transport: a Publisher (the edge; with Acks to wait for a
// run's acks, and MsgID to name each message), a durable consumer that stays up across
// faults and hands over each message (Msg) to be acked once it is dealt with, reporting
// its State (the drain's Consume), and a replay of what the stream holds (the drain at
// start). Subject and Name say how the transport addresses a target and names itself.
// What only one transport offers is a capability, not a branch for the caller: a Msg
// carries Nak and Term where the transport has them (JetStream), and a publish is tried
// again where the transport deduplicates by message ID (JetStream).
//
// Below the Transport, each transport has its own entry points (DialSTAN, Consume,
// ReplaySTAN for NATS Streaming; DialJetStream, ConsumeJetStream, ReplayJetStream for
// JetStream) on one NATS connection set-up (Security); both consumers run one loop
// (reconnects, backoff, state reports) and differ only in how they subscribe.
// Package stream/embedded runs a server serving both, for a drain that needs no
// separate one.
package stream

import (
	"context"
	"errors"
	"sync"
)

// Sentinel errors. Errors returned or reported by this package wrap one of them (and,
// where there is one, the underlying client's error), so test them with errors.Is.
var (
	// ErrUnreachable: the server could not be reached or lost: dialing failed, the
	// connection is down, or no streaming server answered for the cluster ID.
	ErrUnreachable = errors.New("stream: server unreachable")
	// ErrTooLarge: the message body exceeds what the server accepts (see MaxPayload).
	// Nothing was sent and the connection is unaffected.
	ErrTooLarge = errors.New("stream: message too large")
	// ErrClosed: the connection was closed (by Close or after being lost) before the
	// message was sent or before its ack arrived. A message whose ack was cut short by
	// a close may nevertheless have been persisted.
	ErrClosed = errors.New("stream: connection closed")
	// ErrAckTimeout: the server did not ack within the publish ack wait. The message
	// may or may not have been persisted.
	ErrAckTimeout = errors.New("stream: no ack from server in time")
	// ErrRejected: the server answered a publish with an error (e.g. an invalid
	// subject or a store limit); the message was not persisted.
	ErrRejected = errors.New("stream: server rejected message")
	// ErrClientIDInUse: another live connection holds the client ID. Use ClientID to
	// make one unique per run.
	ErrClientIDInUse = errors.New("stream: client ID already in use")
	// ErrAuth: the server refused the connection's credentials (authentication or
	// authorization), or TLS failed: the server's certificate did not verify, the
	// server refused ours (missing, expired, of a CA it does not trust), or TLS is
	// wanted by one side only. Retrying does not help until the configuration or the
	// server changes. Such an error wraps ErrUnreachable too (no connection was made);
	// AuthReason says why in a few words.
	ErrAuth = errors.New("stream: NATS authentication or TLS failed")
)

// Acks counts asynchronous publishes until the server has answered each of them, for
// a publisher that sends a batch and then waits for the whole batch within a deadline.
//
//	var acks stream.Acks
//	for _, m := range batch {
//		if err := acks.Publish(pub, subject, m.data, m.id, nil); err != nil { ... } // not sent
//	}
//	acked, failed, pending := acks.Wait(ctx)
//
// The zero value is ready to use; an Acks is safe for concurrent use but must not be
// copied after first use.
type Acks struct {
	mu       sync.Mutex
	pending  int
	acked    int
	failed   int
	firstErr error
	idle     chan struct{} // closed when pending drops to 0; nil if no one waits
}

// Publish publishes data with msgID through p and counts it as pending until p
// reports its ack.
// then, if not nil, is called with the ack result before the counts change (so it has
// returned by the time Wait sees the message answered); it runs on the transport's
// goroutine and must not block. When p.PublishAsync returns an error, Publish returns
// it, counts nothing, and then is not called.
func (a *Acks) Publish(p Publisher, subject string, data []byte, msgID string, then func(error)) error {
	a.mu.Lock()
	a.pending++
	a.mu.Unlock()
	err := p.PublishAsync(subject, data, msgID, func(err error) {
		if then != nil {
			then(err)
		}
		a.finish(err, true)
	})
	if err != nil {
		a.finish(nil, false)
	}
	return err
}

// finish records one pending publish as answered (counted) or as never sent.
func (a *Acks) finish(err error, counted bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pending--
	switch {
	case !counted:
	case err == nil:
		a.acked++
	default:
		a.failed++
		if a.firstErr == nil {
			a.firstErr = err
		}
	}
	if a.pending == 0 && a.idle != nil {
		close(a.idle)
		a.idle = nil
	}
}

// Wait blocks until no publish is pending or ctx ends, and returns the counts then:
// publishes acked by the server, publishes that failed (ack error, ack timeout,
// connection closed), and publishes still unanswered (non-zero only when ctx ended).
// Call it after the last Publish.
func (a *Acks) Wait(ctx context.Context) (acked, failed, pending int) {
	a.mu.Lock()
	if a.pending > 0 {
		if a.idle == nil {
			a.idle = make(chan struct{})
		}
		idle := a.idle
		a.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
		}
		a.mu.Lock()
	}
	defer a.mu.Unlock()
	return a.acked, a.failed, a.pending
}

// Counts returns the current counts without waiting.
func (a *Acks) Counts() (acked, failed, pending int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.acked, a.failed, a.pending
}

// Err returns the first failure reported for a publish, or nil.
func (a *Acks) Err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.firstErr
}
