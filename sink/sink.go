// Package sink is the contract between the drain and the places it delivers scrapes to:
// what a scrape looks like to a sink, what a sink promises, and the final fates a sink
// reports. The drain and every sink import it; it imports neither.
//
// There are two kinds of sink. A state sink (the Push Gateway, the expose endpoint) holds
// each target's current state: only a target's newest scrape matters, and the drain
// skips an older scrape that waits behind a newer one. A history sink (remote_write)
// stores every scrape as a point in time: the drain hands it every scrape of a target,
// in scrape order, and never skips one.
//
// A history sink that holds a target's scrapes in a request waiting to fill (a
// remote-write queue waits up to batch_send_deadline) is a Follower: while that request
// waits, the target's scrapes that reach the drain meanwhile join it, rather than wait
// in the drain for its answer. The drain still hands them over in order, through the
// one call for the target under way (it never calls a sink twice at once for one
// target), and that call returns each scrape's fate once the request carrying it is
// answered; so "acknowledged only when final in every sink" and "in scrape order" hold
// as for a single scrape.
package sink

import (
	"context"
	"errors"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// Kind says which scrapes of a target a sink wants.
type Kind int

const (
	// State sinks want each target's newest scrape; older ones waiting behind it are
	// superseded.
	State Kind = iota
	// History sinks want every scrape of a target, in scrape order.
	History
)

func (k Kind) String() string {
	if k == History {
		return "history"
	}
	return "state"
}

// Sink delivers a target's scrapes somewhere: a Push Gateway, an exposition endpoint, a
// remote-write receiver.
//
// Deliver is called for one target at a time (never concurrently for the same target)
// and for a target's scrapes in increasing start order; different targets are delivered
// concurrently. It must not modify the Scrape. It returns nil once the sink holds the
// scrape, an error wrapping ErrRejected when it never will (the message is then
// acknowledged), or one wrapping ErrSuperseded when it already holds a newer scrape of
// the target (or this one); any other error is retried, with the same scrape first.
// A scrape the sink already holds may come again (a redelivery): it must take it without
// harm.
type Sink interface {
	Name() string
	Kind() Kind
	Deliver(ctx context.Context, s *Scrape) error
}

// Batcher is a history sink that takes several scrapes of one target at once: the
// backlog of a target after an outage goes in fewer, fuller requests.
//
// DeliverBatch is called under Deliver's rules with scrapes of one target in increasing
// start order, and sets errs[i] (len(errs) == len(scrapes)) to what Deliver would have
// returned for scrapes[i]. Once it reports a retryable error for a scrape, it reports
// one for every later scrape too: a history sink never holds a scrape whose predecessor
// it is still to be given.
type Batcher interface {
	DeliverBatch(ctx context.Context, scrapes []*Scrape, errs []error)
}

// Follower is a Batcher that, while it waits for the answer to the request carrying a
// target's scrapes, takes the target's next scrapes into that same request as long as
// the request is not sent yet: a request waiting for batch_send_deadline holds every
// scrape of the target that came meanwhile, as Prometheus's queue holds every sample
// appended meanwhile.
//
// DeliverFollowing is called under DeliverBatch's rules with scrapes of one target in
// increasing start order. While it waits it may call later.Next, at any time and from
// the calling goroutine only, for the target's scrapes that follow every one it was
// given so far (none, when there are none now); later.Arrived signals when there may be
// some. It returns one fate per scrape given, those of scrapes first and then those Next
// returned, in that order, each as Deliver would have returned it, and with
// DeliverBatch's rule: once a scrape's fate is retryable, so is every later one's. It
// never holds a scrape it is given after its fate is returned.
type Follower interface {
	DeliverFollowing(ctx context.Context, scrapes []*Scrape, later Later) []error
}

// Later is what a Follower asks the drain for a target's next scrapes.
type Later interface {
	// Next returns the target's scrapes that follow every one handed over so far in
	// the call, oldest first; none when none can be handed over now.
	Next() []*Scrape
	// Arrived receives a value when Next may have more to return.
	Arrived() <-chan struct{}
}

// Volatile is a state sink that holds what it holds in the drain's memory only (the
// expose endpoint): a restarted drain hands it each target's newest scrape, read again
// from the stream, before it says it is ready.
type Volatile interface {
	Volatile()
}

// Pressured is a Sink that wants to know when the drain can take no more messages from
// its streams (it holds max_inflight unacknowledged): nothing more can reach the sink
// until some of what it holds is answered, so a request waiting to fill (for
// batch_send_deadline) should go now. The drain calls Saturated(true) when it reaches
// that bound and Saturated(false) when it drops below, with its own lock held: it must
// not block.
type Pressured interface {
	Saturated(on bool)
}

// Sweeper is a Sink that also removes the targets whose scrapes stopped arriving. The
// drain calls Sweep periodically; now minus maxAge is the cut-off.
type Sweeper interface {
	Sweep(ctx context.Context, now time.Time, maxAge time.Duration) error
}

// Final fates a Sink reports.
var (
	ErrRejected   = errors.New("rejected")
	ErrSuperseded = errors.New("superseded by a newer scrape")
)

// Retryable reports whether err, from Deliver, is a transient failure: not nil, and no
// final fate.
func Retryable(err error) bool {
	return err != nil && !errors.Is(err, ErrRejected) && !errors.Is(err, ErrSuperseded)
}

// Scrape is one target's scrape as the sinks receive it. Sinks share it: read only.
type Scrape struct {
	Envelope *envelope.Envelope
	Target   exposition.Target
	// Families is the target's exposition, labelled with job, instance and the static
	// labels; nil when the scrape failed.
	Families []*dto.MetricFamily
	// Health is the streams_scrape_* families of this scrape.
	Health []*dto.MetricFamily
}

// Key is the target's identity: job and instance.
func (s *Scrape) Key() string { return s.Envelope.Job + "/" + s.Envelope.Instance }
