package drain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"

	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// HandleMessage is Handle for a message that may also be terminated or handed back to
// the server with a delay. It admits the message: decodes it, checks trust and shard,
// expires it if it arrived older than max_age, and queues it for its target.
func (d *Drain) HandleMessage(m Message) {
	data, h := m.Data, m.Handle
	now := d.opts.Now()
	d.metrics.received.WithLabelValues(m.Stream).Inc()
	// Counted once placed: a hold that ends wakes the targets, which must find it.
	defer d.sawAtHold(m.Stream, h.Seq)
	if d.opts.Shards > 1 {
		// Another shard's target: skipped from its header, neither verified nor
		// decompressed. What does not parse goes on, to be rejected with its reason.
		if job, instance, err := d.codec.Target(data); err == nil && ShardOf(job, instance, d.opts.Shards) != d.opts.Shard {
			d.metrics.otherShard.Inc()
			d.ack(h.Ack, h.Seq)
			return
		}
	}
	// The body stays compressed while the scrape waits for its sinks: a worker
	// decompresses it when it delivers it (prepare).
	env, err := d.codec.DecodePacked(data)
	if errors.Is(err, envelope.ErrNotEnvelope) && len(data) > 0 && data[0] == '{' {
		// The earlier system's JSON: read it too, so the central side can move first.
		env, err = d.codec.DecodeLegacy(data)
	}
	if err != nil {
		reason := decodeReason(err)
		d.metrics.rejected.WithLabelValues(reason).Inc()
		attrs := []any{"seq", h.Seq, "reason", reason, "bytes", len(data)}
		var se *envelope.SignatureError
		if errors.As(err, &se) {
			// What the message claims, unverified: who a forgery pretends to be.
			attrs = append(attrs, "key", se.Signer, "job", se.Job, "instance", se.Instance, "publisher", se.Publisher)
		}
		d.logger.Warn("message rejected", append(attrs, "err", err)...)
		d.ack(h.term(), h.Seq)
		return
	}
	if what := invalidUTF8(env); what != "" {
		d.metrics.rejected.WithLabelValues(reasonInvalidUTF8).Inc()
		d.logger.Warn("message rejected", "seq", h.Seq, "reason", reasonInvalidUTF8, "field", what,
			"job", strconv.Quote(env.Job), "instance", strconv.Quote(env.Instance), "publisher", strconv.Quote(env.Publisher))
		d.ack(h.term(), h.Seq)
		return
	}
	// Trust comes before anything else looks at the message: an untrusted message
	// touches no state and no per-publisher metric.
	if reason, why := d.trust.Load().Check(env); reason != "" {
		d.metrics.rejected.WithLabelValues(reason).Inc()
		d.logger.Warn("message rejected", "seq", h.Seq, "reason", reason, "key", env.Signer,
			"job", env.Job, "instance", env.Instance, "publisher", env.Publisher, "err", why)
		d.ack(h.term(), h.Seq)
		return
	}
	if m.Want != nil {
		if want := m.Want(env.Job, env.Instance); m.Subject != want {
			d.metrics.rejected.WithLabelValues(reasonWrongSubject).Inc()
			d.logger.Warn("message rejected", "seq", h.Seq, "reason", reasonWrongSubject, "subject", m.Subject, "want", want,
				"job", env.Job, "instance", env.Instance, "publisher", env.Publisher)
			d.ack(h.term(), h.Seq)
			return
		}
	}
	if d.opts.Shards > 1 && ShardOf(env.Job, env.Instance, d.opts.Shards) != d.opts.Shard {
		d.metrics.otherShard.Inc() // the earlier system's JSON, read in full to find its target
		d.ack(h.Ack, h.Seq)
		return
	}
	end := env.Start.Add(env.Duration)
	d.metrics.publisherSeen(env.Publisher, now, now.Sub(end))
	key := env.Job + "/" + env.Instance
	if ahead := env.Start.Sub(now); ahead > d.opts.MaxClockSkew {
		d.refuseAhead(key, env, h, now, ahead)
		return
	}
	if age := now.Sub(env.Start); age > d.opts.MaxAge {
		d.metrics.expired.Inc()
		d.logger.Debug("message expired", "job", env.Job, "instance", env.Instance, "age", age)
		// Recorded, so that a target whose every message arrives late (an edge clock
		// behind, a backlog) shows as such rather than not at all.
		d.mu.Lock()
		t := d.target(key)
		t.lastSeen = now
		t.status.expired(env, h.Seq, now)
		d.mu.Unlock()
		d.ack(h.Ack, h.Seq)
		return
	}
	if env.Parts > 1 {
		var whole bool
		if env, h, whole = d.assemble(env, h); !whole {
			return
		}
	} else if len(d.history) == 0 {
		// A newer scrape arrived whole: the split one will not be needed. A history sink
		// still wants it; it completes or times out.
		if dr, ok := d.parts.Supersede(env.Job, env.Instance, env.Start); ok {
			d.drop(dr)
		}
	}
	d.enqueue(key, &delivery{env: env, h: h, stream: m.Stream, received: now})
}

// ShardOf is the shard, of shards, that a target belongs to: a hash of its job and
// instance, stable across releases and hosts, so every drain of a shard set agrees.
func ShardOf(job, instance string, shards int) int {
	if shards <= 1 {
		return 0
	}
	var d xxhash.Digest
	_, _ = d.WriteString(job)
	_, _ = d.Write([]byte{0xff})
	_, _ = d.WriteString(instance)
	return int(d.Sum64() % uint64(shards))
}

// decodeReason names why an envelope could not be decoded, for the rejected counter.
func decodeReason(err error) string {
	switch {
	case errors.Is(err, envelope.ErrUnknownVersion):
		return "unknown_version"
	case errors.Is(err, envelope.ErrUnsupported):
		return "unsupported"
	case errors.Is(err, envelope.ErrTooLarge):
		return "too_large"
	case errors.Is(err, envelope.ErrNotEnvelope):
		return "not_an_envelope"
	case errors.Is(err, envelope.ErrBadSignature):
		return reasonBadSignature
	default:
		return "corrupt"
	}
}

// Reasons of the rejected counter: a scrape stamped in the future; a message on a subject
// that is not its target's.
const (
	reasonClockAhead   = "clock_ahead"
	reasonWrongSubject = "wrong_subject"
	reasonInvalidUTF8  = "invalid_utf8"
)

// invalidUTF8 names the first field of env that is not valid UTF-8, or returns "": job,
// instance, publisher, site and static labels become label values on every endpoint,
// where one bad byte fails a Prometheus scrape of all of them.
func invalidUTF8(env *envelope.Envelope) string {
	for _, f := range []struct{ name, v string }{
		{"job", env.Job}, {"instance", env.Instance}, {"publisher", env.Publisher}, {"site", env.Site},
		{"publisher_version", env.PublisherVersion},
	} {
		if !utf8.ValidString(f.v) {
			return f.name
		}
	}
	for _, l := range env.Labels {
		if !utf8.ValidString(l.Name) || !utf8.ValidString(l.Value) {
			return "labels"
		}
	}
	return ""
}

// refuseAhead refuses a scrape stamped ahead of the drain's clock by more than
// MaxClockSkew: its publisher's clock is wrong. Taken, it would supersede the genuine
// scrapes that follow it until the drain's clock caught up, and reach the sinks with
// timestamps in the future. It is counted, shown on the target's status, and logged
// with the offset once per publisher every 10 minutes.
func (d *Drain) refuseAhead(key string, env *envelope.Envelope, h Handle, now time.Time, ahead time.Duration) {
	d.metrics.rejected.WithLabelValues(reasonClockAhead).Inc()
	why := fmt.Sprintf("stamped %v ahead of the drain's clock (more than max_clock_skew %v): the clock of publisher %q is wrong",
		ahead.Round(time.Millisecond), d.opts.MaxClockSkew, env.Publisher)
	d.mu.Lock()
	t := d.target(key)
	t.lastSeen = now
	t.status.refused(env, h.Seq, now, why)
	last, seen := d.skewed[env.Publisher]
	warn := !seen || now.Sub(last) >= 10*time.Minute
	if warn {
		d.skewed[env.Publisher] = now
	}
	d.mu.Unlock()
	level := slog.LevelDebug
	if warn {
		level = slog.LevelWarn
	}
	d.logger.Log(context.Background(), level, "message rejected: scrape stamped in the future", "seq", h.Seq, "reason", reasonClockAhead,
		"publisher", env.Publisher, "job", env.Job, "instance", env.Instance, "ahead", ahead.Round(time.Millisecond), "max_clock_skew", d.opts.MaxClockSkew)
	d.ack(h.term(), h.Seq)
}
