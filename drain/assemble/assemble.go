// Package assemble puts split scrapes back together at the drain. A scrape too large
// for one message travels as parts (envelope.Codec.EncodeSplit); a Reassembler holds
// the parts of each scrape until the last arrives and hands back the whole scrape with
// the handles of all its parts, so the caller acknowledges them together once the
// scrape's fate is final: all or nothing. Memory is bounded, incomplete scrapes time
// out, and a newer scrape of a target supersedes an older incomplete one.
package assemble

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// Errors Add returns for a part it did not take. It keeps no handle of such a part:
// the caller decides its fate.
var (
	// ErrFull: taking the part would hold more than MaxBytes. Leave it unacknowledged,
	// for the stream to deliver again once expiry or completed scrapes made room.
	ErrFull = errors.New("assemble: memory limit reached")
	// ErrTooLarge: the part's scrape alone would need more than MaxBytes, so it can
	// never be assembled. Acknowledge the part and count it as rejected.
	ErrTooLarge = errors.New("assemble: scrape larger than the memory limit")
	// ErrMismatch: the part has the target and start of a scrape being assembled but
	// does not belong to it (another header, split or body). Acknowledge and count it.
	ErrMismatch = errors.New("assemble: part does not match the scrape being assembled")
	// ErrNotPart: not a part of a split scrape as envelope.Codec.Decode returns one.
	ErrNotPart = errors.New("assemble: not a part of a split scrape")
)

// Why scrapes are dropped: Dropped.Err wraps one of these, or, for a scrape whose
// parts were all there but do not join, an envelope error (envelope.ErrCorrupt,
// envelope.ErrInvalid, envelope.ErrTooLarge).
var (
	// ErrSuperseded: a part of a newer scrape of the same target arrived; the older
	// scrape would be superseded at the sinks anyway.
	ErrSuperseded = errors.New("assemble: superseded by a newer scrape of the target")
	// ErrTimeout: parts were still missing Timeout after the scrape's first part came.
	ErrTimeout = errors.New("assemble: parts missing at the timeout")
)

// Defaults for zero Options fields.
const (
	DefaultMaxBytes = 64 << 20
	DefaultTimeout  = time.Minute
)

// Options configure a Reassembler. Zero fields take the defaults noted.
type Options struct {
	// MaxBytes bounds the bytes of chunks held for incomplete scrapes, all targets
	// together (default DefaultMaxBytes). The stream's max in-flight or max ack
	// pending must let at least this much through unacknowledged.
	MaxBytes int64
	// Timeout is how long an incomplete scrape is held after its first part came,
	// whatever came since (default DefaultTimeout). It should exceed the stream's ack
	// wait, so that a part delivered again after a loss can still complete the scrape.
	Timeout time.Duration
	// Now is the clock Add records arrivals by; time.Now by default.
	Now func() time.Time
	// Packed leaves the body of a joined scrape compressed (envelope's JoinPacked),
	// for the caller to decompress when it needs it.
	Packed bool
}

// Outcome is what a part Add took completed or displaced. Every handle in it is the
// caller's to acknowledge once the fate of its scrape is final.
type Outcome[H any] struct {
	// Whole is the scrape this part completed, joined; nil if it completed none.
	Whole *envelope.Envelope
	// Handles are those of Whole's parts, in part order: for each part the newest
	// handle given for it.
	Handles []H
	// Dropped are the scrapes whose fate this part decided without delivery: older
	// scrapes of its target it superseded (the part itself, when it is of an older
	// scrape than the one being assembled), or the scrape it completed whose parts
	// would not join.
	Dropped []Dropped[H]
}

// Dropped is a scrape that will not be delivered, with the handles of the parts held
// for it.
type Dropped[H any] struct {
	Job, Instance, Publisher string
	Start                    time.Time
	Parts                    int   // the scrape's part count
	Missing                  []int // indexes of the parts never received
	Handles                  []H
	// Err says why: it wraps ErrSuperseded or ErrTimeout, or is the join error. Its
	// text is the reason to log.
	Err error
}

// Stats are what a Reassembler holds.
type Stats struct {
	Scrapes int   // incomplete scrapes
	Parts   int   // their parts
	Bytes   int64 // their chunks' bytes, at most MaxBytes
}

// Reassembler holds the parts of split scrapes until they are complete. Its methods
// are safe for concurrent use. Parts are keyed by target (job and instance): one scrape
// per target is assembled at a time, the one with the newest start seen.
type Reassembler[H any] struct {
	codec *envelope.Codec
	opts  Options

	mu      sync.Mutex
	scrapes map[target]*scrape[H]
	parts   int
	bytes   int64
}

type target struct{ job, instance string }

// scrape is one incomplete scrape.
type scrape[H any] struct {
	first   *envelope.Envelope   // the first part that came: the header the others must match
	parts   []*envelope.Envelope // by index; nil: not yet received
	handles []H
	have    int
	bytes   int64
	since   time.Time // when the first part came
}

// New returns a Reassembler that joins parts with codec, which must outlive it.
func New[H any](codec *envelope.Codec, opts Options) *Reassembler[H] {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Reassembler[H]{codec: codec, opts: opts, scrapes: map[target]*scrape[H]{}}
}

// Add takes a part, as envelope.Codec.Decode returned it, and h, the handle that
// acknowledges its message. The caller must have decided the part is acceptable
// (trusted signer, not expired) first: a part taken here is only checked against the
// others of its scrape. Add keeps part until its scrape completes or is dropped; the
// caller must not modify it.
//
// A part of the scrape being assembled for its target is stored; given again (a
// redelivery), its newest handle replaces the one stored, and its chunk is not stored
// twice. The part that completes a scrape returns it in Outcome.Whole, with all the
// handles; the parts are then no longer held. A part of a newer scrape (a later start)
// supersedes the one being assembled, which is returned in Outcome.Dropped; a part of
// an older one is returned there itself.
//
// On error the part was not taken and nothing changed: ErrFull (leave it
// unacknowledged), ErrTooLarge, ErrMismatch or ErrNotPart (acknowledge it).
func (r *Reassembler[H]) Add(part *envelope.Envelope, h H) (Outcome[H], error) {
	var out Outcome[H]
	if part == nil || part.Parts < 2 || part.Part < 0 || part.Part >= part.Parts || len(part.Chunk) == 0 {
		return out, ErrNotPart
	}
	// Every chunk of an evenly cut scrape is within a byte of this one, so the scrape
	// holds at least this much: a scrape that needs more than MaxBytes never completes.
	if least := int64(part.Parts)*int64(len(part.Chunk)-1) + 1; least > r.opts.MaxBytes {
		return out, fmt.Errorf("%w: %s/%s: %d parts of about %d bytes, limit %d bytes",
			ErrTooLarge, part.Job, part.Instance, part.Parts, len(part.Chunk), r.opts.MaxBytes)
	}
	now := r.opts.Now()
	key := target{part.Job, part.Instance}
	size := int64(len(part.Chunk))

	r.mu.Lock()
	s := r.scrapes[key]
	var stale *scrape[H] // the older scrape this part supersedes
	if s != nil {
		switch {
		case part.Start.Before(s.first.Start):
			r.mu.Unlock()
			out.Dropped = append(out.Dropped, Dropped[H]{
				Job: part.Job, Instance: part.Instance, Publisher: part.Publisher, Start: part.Start,
				Parts: part.Parts, Handles: []H{h},
				Err: fmt.Errorf("%w: part %d of %d of the scrape started at %v, one started at %v is being assembled",
					ErrSuperseded, part.Part, part.Parts, part.Start, s.first.Start),
			})
			return out, nil
		case part.Start.After(s.first.Start):
			stale, s = s, nil
		default:
			if err := envelope.SameScrape(s.first, part); err != nil {
				r.mu.Unlock()
				return out, fmt.Errorf("%w: %s/%s at %v: %v", ErrMismatch, part.Job, part.Instance, part.Start, err)
			}
			if old := s.parts[part.Part]; old != nil {
				if !bytes.Equal(old.Chunk, part.Chunk) {
					r.mu.Unlock()
					return out, fmt.Errorf("%w: %s/%s at %v: part %d again with another chunk",
						ErrMismatch, part.Job, part.Instance, part.Start, part.Part)
				}
				s.handles[part.Part] = h // the newest delivery's handle is the live one
				r.mu.Unlock()
				return out, nil
			}
		}
	}
	freed := int64(0)
	if stale != nil {
		freed = stale.bytes
	}
	if r.bytes-freed+size > r.opts.MaxBytes {
		held := r.bytes
		r.mu.Unlock()
		return out, fmt.Errorf("%w: %s/%s: part %d of %d (%d bytes) with %d bytes held, limit %d",
			ErrFull, part.Job, part.Instance, part.Part, part.Parts, size, held, r.opts.MaxBytes)
	}
	if stale != nil {
		r.remove(key, stale)
		out.Dropped = append(out.Dropped, stale.dropped(fmt.Errorf("%w: the scrape started at %v, with %d of %d parts, by one started at %v",
			ErrSuperseded, stale.first.Start, stale.have, stale.first.Parts, part.Start)))
	}
	if s == nil {
		s = &scrape[H]{
			first:   part,
			parts:   make([]*envelope.Envelope, part.Parts),
			handles: make([]H, part.Parts),
			since:   now,
		}
		r.scrapes[key] = s
	}
	s.parts[part.Part], s.handles[part.Part] = part, h
	s.have++
	s.bytes += size
	r.parts++
	r.bytes += size
	if s.have < len(s.parts) {
		r.mu.Unlock()
		return out, nil
	}
	r.remove(key, s)
	r.mu.Unlock()

	// Joined outside the lock: decompressing a large scrape takes milliseconds.
	join := r.codec.Join
	if r.opts.Packed {
		join = r.codec.JoinPacked
	}
	whole, err := join(s.parts)
	if err != nil {
		out.Dropped = append(out.Dropped, s.dropped(err))
		return out, nil
	}
	out.Whole, out.Handles = whole, s.handles
	return out, nil
}

// remove forgets s, the scrape of key. Called with r.mu held.
func (r *Reassembler[H]) remove(key target, s *scrape[H]) {
	delete(r.scrapes, key)
	r.parts -= s.have
	r.bytes -= s.bytes
}

// dropped describes s, dropped for err, with the handles of the parts it held.
func (s *scrape[H]) dropped(err error) Dropped[H] {
	d := Dropped[H]{
		Job: s.first.Job, Instance: s.first.Instance, Publisher: s.first.Publisher, Start: s.first.Start,
		Parts: s.first.Parts, Handles: make([]H, 0, s.have), Err: err,
	}
	for i, p := range s.parts {
		if p == nil {
			d.Missing = append(d.Missing, i)
		} else {
			d.Handles = append(d.Handles, s.handles[i])
		}
	}
	return d
}

// Expire drops the incomplete scrapes whose first part came Timeout or more before
// now, and returns them: the caller acknowledges their handles and counts them. Call
// it periodically.
func (r *Reassembler[H]) Expire(now time.Time) []Dropped[H] {
	var out []Dropped[H]
	r.mu.Lock()
	defer r.mu.Unlock()
	for key, s := range r.scrapes {
		age := now.Sub(s.since)
		if age < r.opts.Timeout {
			continue
		}
		r.remove(key, s)
		d := s.dropped(nil)
		d.Err = fmt.Errorf("%w: %d of %d parts after %v, missing %s",
			ErrTimeout, s.have, len(s.parts), age.Round(time.Millisecond), indexes(d.Missing))
		out = append(out, d)
	}
	return out
}

// Supersede drops the incomplete scrape of job and instance if it started before
// start, and returns it: the caller calls it when a newer scrape of the target
// arrived whole, in one message, and acknowledges the handles.
func (r *Reassembler[H]) Supersede(job, instance string, start time.Time) (Dropped[H], bool) {
	key := target{job, instance}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.scrapes[key]
	if s == nil || !s.first.Start.Before(start) {
		return Dropped[H]{}, false
	}
	r.remove(key, s)
	return s.dropped(fmt.Errorf("%w: the scrape started at %v, with %d of %d parts, by a whole one started at %v",
		ErrSuperseded, s.first.Start, s.have, len(s.parts), start)), true
}

// Assembling reports whether r holds parts of a scrape of job and instance, and the
// scrape's start.
func (r *Reassembler[H]) Assembling(job, instance string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.scrapes[target{job, instance}]; s != nil {
		return s.first.Start, true
	}
	return time.Time{}, false
}

// Stats returns what r holds now.
func (r *Reassembler[H]) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Stats{Scrapes: len(r.scrapes), Parts: r.parts, Bytes: r.bytes}
}

// indexes formats part indexes for a log line: at most ten, then how many more.
func indexes(ix []int) string {
	const most = 10
	var b strings.Builder
	for i, x := range ix {
		if i == most {
			fmt.Fprintf(&b, " and %d more", len(ix)-most)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(x))
	}
	return b.String()
}
