// Package endpoint is the drain's built-in exposition sink (the config's expose section): it keeps the latest scrape of every target and serves
// them all on one endpoint for Prometheus to scrape.
//
// # What is served
//
// The endpoint is what a Prometheus federating the targets would expect: every series
// carries job, instance and the static labels (the drain labelled them); the families of
// all targets are merged, one HELP and one TYPE per family name, all series of a family
// together, families sorted by name and, within a family, targets by job then instance.
// Each target's scrape-health families (streams_scrape_*) are served like any other
// family, so they merge across targets too.
//
// A family name means one type on the endpoint. The first type established for a name
// wins, and holds for as long as some target serves that family with that type; a
// target's family of another type is left out (the target's other families are still
// served), counted in prometheus_streams_drain_expose_conflicts_total and logged once
// per target and family. Once no target holds the first type any more, the next scrape
// that brings the name establishes it afresh. A family a target exposes under a
// scrape-health name is left out the same way: the health family wins.
//
// HELP (and the OpenMetrics UNIT) is likewise the one first seen for the name, kept for
// as long as the name is held: targets disagreeing on a help text is common (exporter
// versions) and harmless, and a text that changed with every scrape would churn.
//
// With Options.Timestamps every sample is stamped with its scrape's start, as
// Prometheus's /federate does, so a Prometheus scraping the endpoint stores each value
// at the time it was scraped at the edge, not when it was fetched from the drain; a
// sample that carried its own timestamp keeps it.
//
// A target whose last scrape is older than Options.MaxAge is left out of the endpoint
// at once (the check is made on every request) and forgotten at the next Sweep.
//
// As for a Push Gateway or /federate, the Prometheus scraping the endpoint needs
// honor_labels: true, or the series' job and instance become exported_job and
// exported_instance.
//
// # How
//
// A scrape is encoded when it is delivered, not when it is served: each family's sample
// lines are written by expfmt's text encoder, without HELP and TYPE, into one byte slice
// per target, and the target's immutable snapshot (families in name order, each with its
// bytes) replaces the previous one under a lock. A request takes the set of snapshots
// at once and concatenates bytes, writing each family's HELP and TYPE once, so it never
// sees half of one scrape and half of another, and it costs a memory copy per series
// rather than an encoding.
//
// OpenMetrics is encoded per target too, with expfmt's OpenMetrics encoder. It is done
// at delivery from the sink's start, since Prometheus asks for OpenMetrics first by
// default, and for as long as OpenMetrics keeps being asked for. Ten minutes without
// an OpenMetrics request, deliveries encode the text format only, halving the memory
// held for scrapers that only read text; should OpenMetrics be asked for again, the
// request encodes what it lacks from the text encoding, once per snapshot (some
// seconds for a million series), and deliveries encode both again. Families with
// exemplars, which only OpenMetrics can carry, are always encoded at delivery. A
// family OpenMetrics 1.0 cannot carry (a histogram with float counts) is served in
// the text format only. _created lines are not written, as client_golang does not by
// default.
//
// The delimited protobuf format, which a Prometheus asks for first when it scrapes
// native histograms, is encoded per target too, as each family's MetricFamily.metric
// fields: a request writes one MetricFamily per name, its header fields then every
// target's metric fields, which is the message the merged family marshals to. Families
// carrying what the text format cannot give back (native histograms, exemplars,
// created timestamps) are always encoded at delivery; the others are encoded at
// delivery for ten minutes after a protobuf request and otherwise, like OpenMetrics,
// from the text encoding at the first request that needs them.
//
// Negotiation is expfmt.NegotiateAccept's over the text format 0.0.4 and 1.0.0,
// OpenMetrics 1.0.0 and 0.0.1 and the protobuf format, as client_golang's promhttp
// does (which has no text 1.0.0), and Content-Type names the format and escaping
// chosen.
//
// Names outside the legacy character set are stored unescaped. A request whose Accept
// header asks for another escaping (or none: model.NameEscapingScheme applies) gets
// the families and labels that need it re-encoded, escaped, on the fly; a family whose
// escaped name collides with another family's name is then left out of that response.
package endpoint

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// Options configure a Sink.
type Options struct {
	// Timestamps: true (the default the caller passes) stamps every sample with its scrape's start time (a sample that
	// carried its own timestamp keeps it), as Prometheus's /federate does; false serves samples without timestamps.
	Timestamps bool
	// MaxAge: a target whose last scrape is older disappears from the endpoint. Zero
	// keeps every target until Sweep removes it.
	MaxAge time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// openMetricsDemand is how long after an OpenMetrics request (or the sink's start)
// scrapes are encoded in OpenMetrics as they are delivered. Encoding at delivery
// spreads the work over the drain's workers and keeps requests fast, at the price of
// holding both encodings; without demand, OpenMetrics is encoded at the first request
// that needs it.
const openMetricsDemand = 10 * time.Minute

// Sink is the exposition sink. It implements sink.Sink and sink.Sweeper; Handler
// serves what it holds. Its methods are safe for concurrent use.
type Sink struct {
	opts    Options
	logger  *slog.Logger
	metrics *metrics

	formats  []expfmt.Format // served, as NegotiateAccept takes them
	encoders sync.Pool       // *encoder
	writers  sync.Pool       // *responseWriter

	// omWanted is when (opts.Now, Unix nanoseconds) OpenMetrics was last asked for,
	// or the sink started; pbWanted when the protobuf format was (zero: never).
	omWanted atomic.Int64
	pbWanted atomic.Int64

	mu      sync.Mutex
	targets map[string]*target // by sink.Scrape.Key
	order   []*target          // sorted by job, then instance
	// families is the registry of family names: which type a name has on the endpoint,
	// and its HELP, as long as some target's snapshot holds the family.
	families map[string]*family
	// names is families sorted by name, rebuilt when families changed (nil until
	// then). Requests keep the slice they took, so it is replaced, never modified.
	names  []*family
	series int // sample lines held, all targets
	bytes  int // encoded bytes held, all targets
}

// target is the sink's state for one job/instance.
type target struct {
	key           string // sink.Scrape.Key
	job, instance string
	snap          *snapshot
	// clashes are the families of the target left out of its last scrape, logged
	// when they first were.
	clashes map[string]bool
}

// snapshot is one scrape of one target as served. Immutable once published, except
// for the OpenMetrics encodings omOnce fills in.
type snapshot struct {
	start  time.Time
	blocks []block // sorted by family name
	series int     // sample lines
	bytes  int     // encoded bytes
	// escape says whether some family or label name is outside the legacy character
	// set, so that a request asking for escaping must re-encode some blocks.
	escape bool
	// omOnce encodes, at the first request for OpenMetrics, the blocks delivery did
	// not; omReady tells requests they need not wait for it.
	omOnce  sync.Once
	omReady atomic.Bool
	// pbOnce and pbReady are the same for the protobuf format.
	pbOnce  sync.Once
	pbReady atomic.Bool
	// released is set, under Sink.mu, once the snapshot is no longer served.
	released bool
}

// block is one family's samples in one snapshot.
type block struct {
	fam  *family
	text []byte // the text format's sample lines
	// om is the OpenMetrics sample lines: encoded at delivery, or nil until omOnce
	// has run; empty (not nil) when the family cannot be written in OpenMetrics.
	om []byte
	// pb is the protobuf encoding of the family's metrics (MetricFamily.metric
	// fields), nil until it is encoded.
	pb []byte
	// escape says whether a label name is outside the legacy character set.
	escape bool
}

// family is a registered family name. Everything but holders is immutable, so that
// requests can read it without the lock.
type family struct {
	name       string
	typ        dto.MetricType
	help, unit *string
	textHeader []byte // HELP and TYPE lines as expfmt writes them
	textType   []byte // the TYPE line alone, the tail of textHeader
	omHeader   []byte // HELP, TYPE and UNIT lines as expfmt writes them
	pbHeader   []byte // a MetricFamily's name, help, type and unit fields, marshalled
	escape     bool   // the name is outside the legacy character set
	holders    int    // snapshots holding the family; guarded by Sink.mu
	// by names the target that established the family, for the conflict log.
	by string
}

// New returns a Sink. Options.Timestamps is taken as given: the caller passes true for
// the default.
func New(o Options, logger *slog.Logger, reg prometheus.Registerer) *Sink {
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Sink{
		opts:     o,
		logger:   logger,
		metrics:  newMetrics(reg),
		formats:  acceptedFormats(),
		targets:  map[string]*target{},
		families: map[string]*family{},
	}
	s.encoders.New = func() any { return new(encoder) }
	// As if OpenMetrics had just been asked for: Prometheus asks for it first, and
	// its first scrape should not have to encode every target.
	s.omWanted.Store(o.Now().UnixNano())
	return s
}

// Name implements sink.Sink.
func (s *Sink) Name() string { return "expose" }

// clash is a family of a delivered scrape left out, for the log.
type clash struct {
	family string
	typ    dto.MetricType
	held   *family // the family that holds the name; nil for a scrape-health name
}

// Kind: the endpoint holds each target's newest scrape.
func (s *Sink) Kind() sink.Kind { return sink.State }

// Volatile: the endpoint holds its scrapes in the drain's memory, so a restarted drain
// restores them from the stream before it is ready.
func (s *Sink) Volatile() {}

// Deliver implements sink.Sink: the scrape replaces the target's previous one on the
// endpoint. It returns sink.ErrSuperseded if the sink holds a scrape of the target at
// least as new, and an error wrapping sink.ErrRejected if the scrape cannot be encoded.
func (s *Sink) Deliver(ctx context.Context, sc *sink.Scrape) error {
	key, start := sc.Key(), sc.Envelope.Start
	if s.newest(key, start) {
		return sink.ErrSuperseded
	}

	// The families to serve, in name order: the health families, and the target's own
	// except any that takes a health family's name. A family without metrics (which
	// Parse never returns) has nothing to serve.
	var clashes []clash
	src := make([]*dto.MetricFamily, 0, len(sc.Families)+len(sc.Health))
	for _, mf := range sc.Health {
		if len(mf.GetMetric()) > 0 {
			src = append(src, mf)
		}
	}
	for _, mf := range sc.Families {
		switch {
		case len(mf.GetMetric()) == 0:
		case exposition.IsHealthName(mf.GetName()):
			clashes = append(clashes, clash{family: mf.GetName(), typ: mf.GetType()})
		default:
			src = append(src, mf)
		}
	}
	slices.SortFunc(src, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })

	// The expensive part, outside the lock: deliveries of different targets encode
	// in parallel.
	e := s.encoders.Get().(*encoder)
	blocks, err := e.encode(src, s.opts.Timestamps, start, s.omHot(), s.pbHot())
	s.encoders.Put(e)
	if err != nil {
		return fmt.Errorf("%w: expose %s: %w", sink.ErrRejected, key, err)
	}

	s.mu.Lock()
	t := s.targets[key]
	if t != nil && t.snap != nil && !start.After(t.snap.start) {
		s.mu.Unlock()
		return sink.ErrSuperseded
	}
	if t == nil {
		t = &target{key: strings.Clone(key), job: strings.Clone(sc.Envelope.Job), instance: strings.Clone(sc.Envelope.Instance)}
		s.targets[key] = t
		i, _ := slices.BinarySearchFunc(s.order, t, compareTargets)
		s.order = slices.Insert(s.order, i, t)
	}
	old := t.snap
	snap := &snapshot{start: start, blocks: blocks[:0]}
	for i := range blocks {
		b := blocks[i]
		mf := src[i]
		f, c := s.register(mf, old, key)
		if c != nil {
			clashes = append(clashes, *c)
			continue
		}
		if f == nil {
			continue // its header could not be encoded: logged
		}
		b.fam = f
		snap.blocks = append(snap.blocks, b)
		snap.series += lines(b.text)
		snap.bytes += len(b.text) + len(b.om) + len(b.pb)
		snap.escape = snap.escape || b.escape || f.escape
	}
	clear(blocks[len(snap.blocks):]) // unreferenced bytes of left-out families
	snap.omReady.Store(!slices.ContainsFunc(snap.blocks, func(b block) bool { return b.om == nil }))
	snap.pbReady.Store(!slices.ContainsFunc(snap.blocks, func(b block) bool { return b.pb == nil }))
	if old != nil {
		s.release(old)
	}
	t.snap = snap
	s.series += snap.series
	s.bytes += snap.bytes
	fresh := t.noteClashes(clashes)
	s.metrics.targets.Set(float64(len(s.targets)))
	s.metrics.series.Set(float64(s.series))
	s.metrics.bytes.Set(float64(s.bytes))
	s.mu.Unlock()

	s.metrics.conflicts.Add(float64(len(clashes)))
	for _, c := range fresh {
		s.logClash(ctx, t, c)
	}
	return nil
}

// newest reports whether the sink holds a scrape of key started at or after start.
func (s *Sink) newest(key string, start time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.targets[key]
	return t != nil && t.snap != nil && !start.After(t.snap.start)
}

// register finds or establishes the family mf of a scrape of key, whose previous
// snapshot is old, and takes a hold on it. It returns a clash instead when the name is
// held with another type. Called with s.mu held.
func (s *Sink) register(mf *dto.MetricFamily, old *snapshot, key string) (*family, *clash) {
	name, typ := mf.GetName(), mf.GetType()
	f := s.families[name]
	switch {
	case f != nil && f.typ == typ:
	case f != nil && !(f.holders == 1 && old.holds(f)):
		return nil, &clash{family: name, typ: typ, held: f}
	default:
		// A new name, or one only this target's previous scrape holds, with another
		// type: the family changed type at its only source. That snapshot's hold is
		// released after the swap, and leaves the registry alone as its family is no
		// longer the registered one.
		nf, err := newFamily(mf, key)
		if err != nil {
			s.logger.Warn("family left out: cannot encode its header", "target", key, "family", name, "err", err)
			return nil, nil
		}
		f = nf
		s.families[name] = f
		s.names = nil
	}
	f.holders++
	return f, nil
}

// release drops the holds of a snapshot that is no longer served, and takes its series
// and bytes off the totals. Called with s.mu held.
func (s *Sink) release(sn *snapshot) {
	sn.released = true
	s.series -= sn.series
	s.bytes -= sn.bytes
	for i := range sn.blocks {
		f := sn.blocks[i].fam
		f.holders--
		if f.holders == 0 && s.families[f.name] == f {
			delete(s.families, f.name)
			s.names = nil
		}
	}
}

// holds reports whether the snapshot (possibly nil) serves family f.
func (sn *snapshot) holds(f *family) bool {
	if sn == nil {
		return false
	}
	_, ok := sn.find(f)
	return ok
}

// noteClashes records the families left out of the target's latest scrape and returns
// those that were not left out of the one before, to be logged: a clash is logged
// when it starts, not at every scrape. Called with s.mu held.
func (t *target) noteClashes(cs []clash) []clash {
	var fresh []clash
	var now map[string]bool
	for _, c := range cs {
		if now == nil {
			now = make(map[string]bool, len(cs))
		}
		now[c.family] = true
		if !t.clashes[c.family] {
			fresh = append(fresh, c)
		}
	}
	t.clashes = now
	return fresh
}

func (s *Sink) logClash(ctx context.Context, t *target, c clash) {
	if c.held == nil {
		s.logger.WarnContext(ctx, "family left out: the name is that of a scrape-health family",
			"job", t.job, "instance", t.instance, "family", c.family)
		return
	}
	s.logger.WarnContext(ctx, "family left out: another target serves it with another type",
		"job", t.job, "instance", t.instance, "family", c.family,
		"type", typeName(c.typ), "served_type", typeName(c.held.typ), "served_by", c.held.by)
}

// Sweep implements sink.Sweeper: targets whose last scrape started more than maxAge
// before now are forgotten.
func (s *Sink) Sweep(_ context.Context, now time.Time, maxAge time.Duration) error {
	var gone []*target
	s.mu.Lock()
	s.order = slices.DeleteFunc(s.order, func(t *target) bool {
		if now.Sub(t.snap.start) <= maxAge {
			return false
		}
		gone = append(gone, t)
		delete(s.targets, t.key)
		s.release(t.snap)
		return true
	})
	s.metrics.targets.Set(float64(len(s.targets)))
	s.metrics.series.Set(float64(s.series))
	s.metrics.bytes.Set(float64(s.bytes))
	s.mu.Unlock()

	s.metrics.expired.Add(float64(len(gone)))
	for _, t := range gone {
		s.logger.Debug("target expired", "job", t.job, "instance", t.instance, "last_scrape_age", now.Sub(t.snap.start).Round(time.Second))
	}
	if len(gone) > 0 {
		s.logger.Info("targets expired from the exposition", "targets", len(gone), "max_age", maxAge)
	}
	return nil
}

// view returns what a request serves: the snapshots of all targets, in order, taken
// at once, and the family names sorted.
func (s *Sink) view() ([]*snapshot, []*family) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names == nil {
		names := make([]*family, 0, len(s.families))
		for _, f := range s.families {
			names = append(names, f)
		}
		slices.SortFunc(names, func(a, b *family) int { return strings.Compare(a.name, b.name) })
		s.names = names
	}
	snaps := make([]*snapshot, len(s.order))
	for i, t := range s.order {
		snaps[i] = t.snap
	}
	return snaps, s.names
}

func compareTargets(a, b *target) int {
	return cmp.Or(strings.Compare(a.job, b.job), strings.Compare(a.instance, b.instance))
}

// omHot reports whether OpenMetrics was asked for recently enough to be encoded at
// delivery.
func (s *Sink) omHot() bool {
	return s.opts.Now().UnixNano()-s.omWanted.Load() < int64(openMetricsDemand)
}

// pbHot reports whether the protobuf format was asked for recently enough to be
// encoded at delivery.
func (s *Sink) pbHot() bool {
	return s.opts.Now().UnixNano()-s.pbWanted.Load() < int64(openMetricsDemand)
}

func typeName(t dto.MetricType) string { return strings.ToLower(t.String()) }
