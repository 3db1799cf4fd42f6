package drain

import (
	"cmp"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// Fate is what became of a target's newest scrape in one sink.
type Fate string

// Fates, from the drain's point of view.
const (
	FatePending    Fate = "pending"    // queued or being delivered, not yet tried by this sink
	FateDelivered  Fate = "delivered"  // the sink took it
	FateRejected   Fate = "rejected"   // the sink, or the drain (invalid body), refused it for good
	FateSuperseded Fate = "superseded" // the sink already held a newer scrape of the target
	FateRetrying   Fate = "retrying"   // the sink failed transiently; the drain retries
	FateExpired    Fate = "expired"    // it passed max_age before the sink took it
)

// State sums up a target for an operator.
type State string

// States, in the order in which they take precedence: a target with a stale message is
// stale whatever else is true, one with a rejection is rejected even if it is also down.
const (
	StateStale    State = "stale"    // no message for more than max_age (by the drain's clock)
	StateRejected State = "rejected" // a sink, or the drain, refused the newest scrape for good
	StateRetrying State = "retrying" // a sink is failing; the drain retries
	StateExpired  State = "expired"  // the newest scrape passed max_age before every sink had it
	StateDown     State = "down"     // the scrape itself failed at the edge
	StatePending  State = "pending"  // the newest scrape is on its way
	StateUp       State = "up"       // scraped and delivered everywhere
)

// TargetStatus is what the drain knows of one target (job and instance): its newest
// scrape and that scrape's fate in each sink. Targets returns copies.
type TargetStatus struct {
	Job, Instance string
	Publisher     string // identity of the edge that published the scrape
	Version       string // the publishing scrape-once's build version; "" from older builds
	Site          string // "" when the envelope carries none
	State         State

	Start    time.Time     // the newest scrape's start, by the edge's clock
	Duration time.Duration // how long the edge took to scrape
	Error    string        // why the scrape failed; "" when it succeeded
	Series   int           // series in the scrape, as the edge counted them

	Received time.Time     // when the scrape's message first reached the drain
	Seq      uint64        // the message's sequence on the channel (its latest redelivery's)
	Age      time.Duration // time of the snapshot minus Start
	Sinks    []SinkStatus  // one per sink, in the drain's order of sinks
}

// Lag is the scrape's transit time: its message's arrival minus its start. It includes
// the edge clock's offset.
func (t *TargetStatus) Lag() time.Duration { return t.Received.Sub(t.Start) }

// SinkStatus is the fate of a target's newest scrape in one sink.
type SinkStatus struct {
	Sink     string
	Fate     Fate
	Error    string    // the rejection's reason, or the last retry's error
	At       time.Time // when the fate was decided; for FateRetrying, the last attempt
	Attempts int       // times the sink was given this scrape
	// LastSuccess is when this sink last took a scrape of the target (not necessarily
	// the newest); zero if it has not since the drain started.
	LastSuccess time.Time
}

// maxErrorLen bounds the error texts kept per target and sink: a gateway's error body can
// be long, and there are thousands of targets.
const maxErrorLen = 1024

// status is what Targets reports of a target. Guarded by Drain.mu, updated in place:
// recording a message's fate allocates nothing.
type status struct {
	job, instance, publisher, site, err string
	version                             string // the publisher's build version

	start    time.Time
	duration time.Duration
	series   int
	received time.Time
	seq      uint64
	sinks    []sinkState
}

type sinkState struct {
	fate     Fate
	err      string
	at       time.Time
	attempts int
	lastOK   time.Time
}

// sinkResult is one delivery's outcome in one sink so far, kept by the worker without a
// lock and copied into the target's status under it.
type sinkResult struct {
	fate     Fate // "" until the sink has been tried
	err      string
	at       time.Time
	attempts int
}

// final reports whether the sink's fate for the delivery is final.
func (r *sinkResult) final() bool { return r.fate != "" && r.fate != FateRetrying }

// observe records that env arrived, as message seq at now. A newer scrape than the one
// recorded replaces it, its fates pending; a redelivery of the same scrape only updates
// the sequence; an older one changes nothing.
func (st *status) observe(env *envelope.Envelope, seq uint64, now time.Time) {
	switch {
	case env.Start.Equal(st.start) && !st.received.IsZero():
		st.seq = seq
		return
	case env.Start.Before(st.start):
		return
	}
	st.job, st.instance, st.publisher, st.site, st.err = env.Job, env.Instance, env.Publisher, env.Site, env.Error
	st.version = env.PublisherVersion
	st.start, st.duration, st.series = env.Start, env.Duration, env.Series
	st.received, st.seq = now, seq
	for i := range st.sinks {
		st.sinks[i].fate, st.sinks[i].err, st.sinks[i].at, st.sinks[i].attempts = FatePending, "", now, 0
	}
}

// expired records that env arrived already past max_age, if it is the newest scrape.
func (st *status) expired(env *envelope.Envelope, seq uint64, now time.Time) {
	if !env.Start.After(st.start) && !st.received.IsZero() {
		return
	}
	st.observe(env, seq, now)
	for i := range st.sinks {
		st.sinks[i].fate, st.sinks[i].err = FateExpired, "older than max_age on arrival"
	}
}

// refused records that env was refused as a whole for why (a clock far ahead), without
// taking its start as the target's newest: the genuine scrapes that follow it show.
func (st *status) refused(env *envelope.Envelope, seq uint64, now time.Time, why string) {
	st.job, st.instance, st.publisher, st.site = env.Job, env.Instance, env.Publisher, env.Site
	st.version = env.PublisherVersion
	st.received, st.seq = now, seq
	if st.start.IsZero() {
		st.duration, st.series = env.Duration, env.Series
	}
	for i := range st.sinks {
		st.sinks[i].fate, st.sinks[i].err, st.sinks[i].at, st.sinks[i].attempts = FateRejected, why, now, 0
	}
}

// record copies a delivery's outcomes into st: the fates only while start is still
// the target's newest scrape, the sinks' successes always.
func (st *status) record(start time.Time, res []sinkResult) {
	newest := start.Equal(st.start)
	for i := range res {
		r, s := &res[i], &st.sinks[i]
		if r.fate == FateDelivered && r.at.After(s.lastOK) {
			s.lastOK = r.at
		}
		if newest && r.fate != "" {
			s.fate, s.err, s.at, s.attempts = r.fate, r.err, r.at, r.attempts
		}
	}
}

// state sums st up at now.
func (st *status) state(now time.Time, maxAge time.Duration) State {
	if now.Sub(st.received) > maxAge {
		return StateStale
	}
	var retrying, expired, pending bool
	for i := range st.sinks {
		switch st.sinks[i].fate {
		case FateRejected:
			return StateRejected
		case FateRetrying:
			retrying = true
		case FateExpired:
			expired = true
		case FatePending:
			pending = true
		}
	}
	switch {
	case retrying:
		return StateRetrying
	case expired:
		return StateExpired
	case st.err != "":
		return StateDown
	case pending:
		return StatePending
	}
	return StateUp
}

// errorText is err's text, cut to maxErrorLen bytes on a rune boundary.
func errorText(err error) string {
	s := err.Error()
	if len(s) <= maxErrorLen {
		return s
	}
	cut := maxErrorLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// Targets returns what the drain knows of every target it heard from within max_age,
// and of those the sweep forgot within the last StaleRetention, sorted by job and
// instance. The drain's lock is held only to copy; the rest happens outside it.
func (d *Drain) Targets() []TargetStatus {
	d.mu.Lock()
	n := len(d.targets) + len(d.forgotten)
	d.mu.Unlock()
	n += n/8 + 16 // room for the targets that arrive before the copy
	snap, now := d.snapshot(make([]TargetStatus, 0, n), make([]SinkStatus, 0, n*len(d.sinkNames)))

	// Sorted through indices: a TargetStatus is too large to swap cheaply.
	order := make([]int32, len(snap))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int {
		x, y := &snap[a], &snap[b]
		return cmp.Or(cmp.Compare(x.Job, y.Job), cmp.Compare(x.Instance, y.Instance))
	})
	out := make([]TargetStatus, len(snap))
	for i, j := range order {
		t := &out[i]
		*t = snap[j]
		t.Age = now.Sub(t.Start)
		for k := range t.Sinks {
			t.Sinks[k].Sink = d.sinkNames[k]
		}
	}
	return out
}

// snapshot appends every target's status to out, and their sinks' to sinks, under the
// drain's lock: a copy per target, and no allocation when out and sinks have the room.
func (d *Drain) snapshot(out []TargetStatus, sinks []SinkStatus) ([]TargetStatus, time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.opts.Now()
	add := func(st *status) {
		from := len(sinks)
		for i := range st.sinks {
			s := &st.sinks[i]
			sinks = append(sinks, SinkStatus{Fate: s.fate, Error: s.err, At: s.at, Attempts: s.attempts, LastSuccess: s.lastOK})
		}
		out = append(out, TargetStatus{
			Job: st.job, Instance: st.instance, Publisher: st.publisher, Version: st.version, Site: st.site,
			State: st.state(now, d.opts.MaxAge), Start: st.start, Duration: st.duration, Error: st.err,
			Series: st.series, Received: st.received, Seq: st.seq, Sinks: sinks[from:len(sinks):len(sinks)],
		})
	}
	for _, t := range d.targets {
		if !t.status.received.IsZero() {
			add(&t.status)
		}
	}
	for _, t := range d.forgotten {
		add(&t.status)
	}
	return out, now
}
