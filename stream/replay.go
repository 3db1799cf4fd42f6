package stream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	stan "github.com/nats-io/stan.go"
)

// replayIdle is how long a replay waits for one more message before it takes the
// stream as read to its end.
const replayIdle = 300 * time.Millisecond

// ReplaySTAN reads channel subject from since to its end, as it is when the replay
// starts, and calls fn with each message's data: how a restarted drain finds each
// target's newest scrape again. It uses a connection and a subscription of its own, not
// durable, which acknowledge nothing and leave the durables' positions as they are. It
// returns once fn has seen every message published before the call, once the channel is
// idle for a moment, or when ctx ends.
//
// last, when not nil, tells the sequence of the channel's newest message (0: none),
// known without a subscription (the embedded server's): the replay then ends as soon
// as it has that message, or at once for an empty channel, rather than after the idle
// wait.
func ReplaySTAN(ctx context.Context, o STANOptions, subject string, since time.Time, last func() (uint64, error), fn func(data []byte)) error {
	var lastSeq uint64
	if last != nil {
		seq, err := last()
		if err != nil {
			last = nil // not known: go by the idle wait
		} else if lastSeq = seq; seq == 0 {
			return nil // empty: whatever comes now, the consumer has
		}
	}
	o.ClientID = ClientID(o.ClientID+"-replay", "")
	s, err := DialSTAN(ctx, o)
	if err != nil {
		return err
	}
	defer s.Close()
	start := time.Now()
	msgs := make(chan *stan.Msg, 1024)
	sub, err := s.sc.Subscribe(subject, func(m *stan.Msg) {
		select {
		case msgs <- m:
		case <-ctx.Done():
		}
	}, stan.StartAtTime(since), stan.MaxInflight(1024))
	if err != nil {
		return fmt.Errorf("stream: replay %q: %w", subject, err)
	}
	defer func() { _ = sub.Close() }()
	idle := time.NewTimer(replayIdle)
	defer idle.Stop()
	for {
		select {
		case m := <-msgs:
			fn(m.Data)
			if time.Unix(0, m.Timestamp).After(start) {
				return nil // published after the replay began: the consumer has it
			}
			if last != nil && m.Sequence >= lastSeq {
				return nil // the newest message when the replay began
			}
			idle.Reset(replayIdle)
		case <-idle.C:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("stream: replay %q: %w", subject, ctx.Err())
		}
	}
}

// ReplayJetStream reads the newest message of each subject under subjectPrefix+".>"
// (each target's newest scrape: the edge publishes every target on a subject of its
// own) that is younger than since, through an ordered consumer of its own that
// acknowledges nothing, and calls fn with each one's data.
func ReplayJetStream(ctx context.Context, o JetStreamOptions, subjectPrefix string, since time.Time, fn func(data []byte)) error {
	j, err := DialJetStream(ctx, o)
	if err != nil {
		return err
	}
	defer j.Close()
	if info := j.stream.CachedInfo(); info != nil && info.State.Msgs == 0 { // as the dial read it
		return nil // empty: whatever comes now, the consumer has
	}
	cons, err := j.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subjectPrefix + ".>"},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("stream: replay %s: %w", o.Stream, err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("stream: replay %s: %w", o.Stream, err)
		}
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(replayIdle))
		if err != nil {
			return fmt.Errorf("stream: replay %s: %w", o.Stream, err)
		}
		n := 0
		var last jetstream.Msg
		for m := range batch.Messages() {
			n++
			last = m
			if md, err := m.Metadata(); err == nil && md.Timestamp.Before(since) {
				continue
			}
			fn(m.Data())
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("stream: replay %s: %w", o.Stream, err)
		}
		if n == 0 {
			return nil
		}
		if md, err := last.Metadata(); err == nil && md.NumPending == 0 {
			return nil
		}
	}
}
