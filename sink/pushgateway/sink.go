package pushgateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"

	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// Sink delivers each target's scrapes to one Push Gateway group,
// /metrics/job/<job>/instance/<instance> (plus /<publisher_label>/<publisher> when set),
// replaced by every scrape so that series a target stopped exposing disappear. It
// implements sink.Sink and sink.Sweeper.
//
// The groups it owns are those that carry exposition.HealthTimestamp: every group it
// pushes does, and no other pusher's group would. Ownership therefore survives a drain
// restart, and groups pushed by anyone else are never deleted.
//
// Before each push the sink checks it against the families of every group it owns, as
// the gateway's consistency check would, so that a gateway run with
// --push.disable-consistency-check never takes a push that would break its /metrics:
// a push the check refuses fails with an InconsistentError (and sink.ErrRejected). The
// sink learns those groups from the gateway before its first push (Load), and keeps
// account of them with every push, delete and sweep, per family name. Against what
// other drains push into the same gateway meanwhile, it claims every family before
// its first push (see claims.go).
type Sink struct {
	client         *Client
	publisherLabel string
	logger         *slog.Logger
	deleted        prometheus.Counter
	refused        *prometheus.CounterVec
	dropped        *prometheus.CounterVec
	ledger         *ledger

	// The claims of families (claims.go).
	id            string // this drain's identity: its registry group's instance
	times         claimTimes
	watch         *watch
	roundSem      chan struct{} // held by a claim round or a registry write
	batchMu       sync.Mutex
	next          *batch // the pushes waiting for the next round
	claimed       prometheus.Gauge
	roundDuration prometheus.Histogram

	loadMu sync.Mutex  // serialises Load
	loaded atomic.Bool // a Load succeeded: the ledger knows the gateway's groups

	mu       sync.Mutex
	groups   map[string]*group // by Grouping.Path()
	listed   time.Time         // when the gateway's groups were last read
	leftover map[string]bool   // paths of groups whose first push the gateway refused
	noted    map[string]bool   // causes of refusals already logged
	written  time.Time         // when the registry was last written (the request sent)
	mark     float64           // the mark of the newest registry write
}

// SinkOption configures a Sink.
type SinkOption func(*Sink)

// WithIdentity names the drain to the other drains sharing the gateway: the instance
// of its registry group, /metrics/job/prometheus_streams_families/instance/<id>. It
// must be unique among the drains that push into the gateway at the same time, and
// should stay the same across a drain's restarts, which then take back its registry
// rather than claiming every family anew. By default it is the host name and a
// random suffix, new with every Sink.
func WithIdentity(id string) SinkOption {
	return func(s *Sink) {
		if id != "" {
			s.id = id
		}
	}
}

// maxNoted bounds Sink.noted: past it, causes are logged anew.
const maxNoted = 1024

// relistInterval is how often a sweep reads the gateway's groups even when the sink's
// own state shows nothing stale: to learn groups another drain pushed. Listing is dear
// (the gateway answers with every series it holds), so sweeps otherwise list only when
// some group looks stale, to confirm before deleting.
const relistInterval = 10 * time.Minute

// group is what the sink knows of one group. Its mutex serialises pushes and deletes of
// the group, so that a sweep never deletes a scrape pushed after it listed the group.
type group struct {
	mu sync.Mutex
	// newest is the start of the newest scrape the gateway holds for the group, from this
	// sink's pushes or from the gateway's own API.
	newest time.Time
	// dropped are the families left out of the group's last push, logged when they
	// first were.
	dropped map[drop]bool
}

// NewSink returns a Sink pushing through c. publisherLabel, when not empty, adds the
// publisher's identity as a grouping label.
func NewSink(c *Client, publisherLabel string, logger *slog.Logger, reg prometheus.Registerer, opts ...SinkOption) *Sink {
	host, _ := os.Hostname()
	s := &Sink{
		client:         c,
		publisherLabel: publisherLabel,
		logger:         logger,
		groups:         map[string]*group{},
		leftover:       map[string]bool{},
		noted:          map[string]bool{},
		ledger:         newLedger(),
		id:             fmt.Sprintf("%s-%08x", host, rand.Uint32()),
		times:          defaultClaimTimes,
		roundSem:       make(chan struct{}, 1),
		claimed: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "prometheus_streams", Subsystem: "drain", Name: "pushgateway_families_claimed",
			Help: "Metric families this drain claims in its registry on the Push Gateway (job " + ClaimsJob + "), as last written.",
		}),
		roundDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "prometheus_streams", Subsystem: "drain", Name: "pushgateway_claim_round_duration_seconds",
			Help:    "Rounds claiming metric families new to this drain before pushing them to a Push Gateway without its consistency check: write the claims, read the gateway, decide.",
			Buckets: []float64{.01, .05, .1, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "prometheus_streams", Subsystem: "drain", Name: "pushgateway_groups_deleted_total",
			Help: "Push Gateway groups deleted because their target's last scrape was older than max_age.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "prometheus_streams", Subsystem: "drain", Name: "pushgateway_pushes_refused_total",
			Help: "Pushes to the Push Gateway refused as inconsistent with what it holds or invalid, by reason: " +
				"by the sink's own check before sending, or by the gateway itself (reason gateway).",
		}, []string{"reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "prometheus_streams", Subsystem: "drain", Name: "pushgateway_families_dropped_total",
			Help: "Metric families of a scrape left out of its push to the Push Gateway, which cannot serve them, by reason; " +
				"the scrape's other families are pushed.",
		}, []string{"reason"}),
	}
	for _, o := range opts {
		o(s)
	}
	s.watch = &watch{
		client: c, logger: logger, restarted: s.ledger.voidClaims,
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "prometheus_streams", Subsystem: "drain", Name: "pushgateway_restarts_total",
			Help: "Restarts of the Push Gateway the drain noticed (its start time changed).",
		}),
	}
	reg.MustRegister(s.deleted, s.refused, s.dropped, s.claimed, s.roundDuration, s.watch.restarts)
	for _, r := range []string{ReasonTypeConflict, ReasonHelpConflict, ReasonNameCollision, ReasonDuplicateSeries, ReasonInvalidSeries, ReasonGateway} {
		s.refused.WithLabelValues(r)
	}
	for _, r := range []string{DropEscapedNameCollision, DropEscapedLabelCollision} {
		s.dropped.WithLabelValues(r)
	}
	return s
}

// Name implements sink.Sink.
func (s *Sink) Name() string { return "pushgateway" }

// Grouping is the group a scrape goes to.
func (s *Sink) Grouping(sc *sink.Scrape) Grouping {
	g := Grouping{{Name: "job", Value: sc.Envelope.Job}, {Name: "instance", Value: sc.Envelope.Instance}}
	if s.publisherLabel != "" {
		g = append(g, Label{Name: s.publisherLabel, Value: sc.Envelope.Publisher})
	}
	// Canonical order, job first and the rest by name, as GroupingOf builds it: the
	// path is also the key of the sink's own state.
	sort.Slice(g[1:], func(i, j int) bool { return g[1+i].Name < g[1+j].Name })
	return g
}

func (s *Sink) group(path string) *group {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[path]
	if g == nil {
		g = &group{}
		s.groups[path] = g
	}
	return g
}

// Load learns, from the gateway's API, every group the sink owns: the newest scrape of
// each, so that after a restart a redelivered older scrape does not replace a newer
// one, and its families, against which the sink checks every push. Deliver calls it
// before the first push if nobody did, or if it failed.
func (s *Sink) Load(ctx context.Context) error {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	return s.load(ctx)
}

func (s *Sink) load(ctx context.Context) error {
	start := time.Now()
	st, _, err := s.watch.confirm(ctx, start)
	if err != nil {
		return fmt.Errorf("load push gateway groups: %w", err)
	}
	claims := !st.checked && !s.ledger.hasClaims()
	var mark float64
	var marked time.Time
	if claims {
		// Mark the registry this drain had before a restart as written now, before
		// reading it: from now on the other drains respect its claims, and what they
		// did before shows in the listing.
		marked = time.Now()
		s.roundSem <- struct{}{}
		mark, err = s.markRegistry(ctx)
		<-s.roundSem
		if err != nil {
			return fmt.Errorf("load push gateway groups: %w", err)
		}
	}
	groups, err := s.list(ctx)
	if err != nil {
		return fmt.Errorf("load push gateway groups: %w", err)
	}
	s.mu.Lock()
	s.listed = start
	s.mu.Unlock()
	for _, gr := range groups {
		if gr.shape == nil {
			continue
		}
		g := s.group(gr.path)
		g.mu.Lock()
		if gr.scraped.After(g.newest) {
			g.newest = gr.scraped
		}
		s.ledger.learn(gr.path, gr.grouping.String(), gr.shape)
		g.mu.Unlock()
	}
	if claims {
		s.adopt(ctx, st, groups, mark, marked)
	}
	s.loaded.Store(true)
	return nil
}

// ensureLoaded loads the gateway's groups unless that was done: the sink cannot vouch
// for a push without knowing what the gateway holds.
func (s *Sink) ensureLoaded(ctx context.Context) error {
	if s.loaded.Load() {
		return nil
	}
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	if s.loaded.Load() {
		return nil
	}
	return s.load(ctx)
}

// listedGroup is what a listing tells the sink of one group.
type listedGroup struct {
	grouping Grouping
	path     string
	// scraped is the scrape time of an owned group; shape (with a reference to
	// release) its families. Both are zero for a group the sink does not own.
	scraped time.Time
	shape   *shape
	// empty: no push to the group succeeded and it holds nothing but the gateway's
	// push-time series, as a refused first push leaves it.
	empty bool
	// pushed is its push_time_seconds (gateway clock).
	pushed time.Time
	// registry is set for a drain's registry of claimed families.
	registry *registry
}

// list reads the gateway's groups, decoding of each family no more than its type and
// help, but for the scrape time, so that the sink never holds more than one group's
// families at a time. The caller must hand every shape to the ledger.
func (s *Sink) list(ctx context.Context) ([]listedGroup, error) {
	var out []listedGroup
	err := s.client.eachGroup(ctx, func(name string) detail {
		if name == exposition.HealthTimestamp || name == ClaimFamily || name == ClaimsWrittenFamily {
			return fullFamily
		}
		return familyMeta
	}, func(gr Group) error {
		gk := GroupingOf(gr.Grouping)
		lg := listedGroup{grouping: gk, path: gk.Path(), empty: !gr.LastPushSuccessful && gr.PushTime.IsZero(), pushed: gr.PushTime}
		if gk.Job() == ClaimsJob {
			lg.registry = parseRegistry(gr)
		}
		for name := range gr.Families {
			if name != PushTimeFamily && name != PushFailureTimeFamily {
				lg.empty = false
				break
			}
		}
		if ts, ok := scrapeTime(gr); ok {
			lg.scraped = ts
			fams := make([]famMeta, 0, len(gr.Families))
			for name, f := range gr.Families {
				if t, ok := dto.MetricType_value[f.Type]; ok {
					fams = append(fams, famMeta{name: name, typ: dto.MetricType(t), help: f.Help})
				}
			}
			lg.shape = s.ledger.internListed(s.ledger.newShape(fams))
		}
		out = append(out, lg)
		return nil
	})
	if err != nil {
		s.releaseListing(out)
		return nil, err
	}
	return out, nil
}

// releaseListing releases the shapes of a listing not handed to the ledger.
func (s *Sink) releaseListing(groups []listedGroup) {
	for _, lg := range groups {
		if lg.shape != nil {
			s.ledger.releaseListed(lg.shape)
		}
	}
}

// Kind: the gateway holds each target's newest scrape.
func (s *Sink) Kind() sink.Kind { return sink.State }

// Deliver implements sink.Sink: check the scrape's families and health series against
// the groups the sink owns, then PUT them.
func (s *Sink) Deliver(ctx context.Context, sc *sink.Scrape) error {
	gk := s.Grouping(sc)
	if err := s.ensureLoaded(ctx); err != nil {
		return fmt.Errorf("push %s: cannot check it against the gateway's groups: %w", gk, err)
	}
	path := gk.Path()
	g := s.group(path)
	g.mu.Lock()
	defer g.mu.Unlock()
	if !sc.Envelope.Start.After(g.newest) && !g.newest.IsZero() {
		return sink.ErrSuperseded
	}
	fams := make([]*dto.MetricFamily, 0, len(sc.Families)+len(sc.Health))
	own, drops := forGateway(sc.Families)
	fams = append(fams, own...)
	fams = append(fams, sc.Health...)
	s.noteDrops(gk, g, drops)

	res, err := s.check(gk, path, fams)
	if err != nil {
		return fmt.Errorf("push %s: %w: %w", gk, sink.ErrRejected, err)
	}
	st, confirmed, err := s.vouch(ctx, res)
	if err != nil {
		s.ledger.cancel(path, res)
		var ie *InconsistentError
		if errors.As(err, &ie) {
			s.noteRefusal(gk, ie)
			return fmt.Errorf("push %s: %w: %w", gk, sink.ErrRejected, err)
		}
		return fmt.Errorf("push %s: %w", gk, err)
	}
	if err := s.client.Push(ctx, gk, fams); err != nil {
		if !errors.Is(err, ErrRejected) {
			// It may have reached the gateway: count both what the group held
			// and this push until a push settles it.
			s.ledger.unsure(path, res)
			return err
		}
		s.ledger.cancel(path, res)
		var pe *Error
		if errors.As(err, &pe) && pe.Status != 0 {
			s.refused.WithLabelValues(ReasonGateway).Inc()
		}
		if g.newest.IsZero() {
			// The gateway keeps an empty group for a refused first push: the
			// next sweep removes it.
			s.mu.Lock()
			s.leftover[path] = true
			s.mu.Unlock()
		}
		return fmt.Errorf("%w: %w", sink.ErrRejected, err)
	}
	s.ledger.commit(path, res)
	g.newest = sc.Envelope.Start
	if !st.start.IsZero() && time.Since(confirmed) > s.times.grace {
		return s.afterSlowPush(ctx, gk, path, g, st)
	}
	return nil
}

// afterSlowPush checks that a push answered more than grace after the gateway's start
// time was last confirmed went to the same gateway process: after a restart, a round
// of another drain may have trusted the new process before the push was applied,
// without seeing it. If the process changed, or cannot be confirmed, the push's group
// is deleted and the push tried again (with its families claimed anew). The caller
// holds g.mu.
func (s *Sink) afterSlowPush(ctx context.Context, gk Grouping, path string, g *group, st gatewayState) error {
	now, _, err := s.watch.confirm(ctx, time.Now())
	if err == nil && now.start.Equal(st.start) {
		return nil
	}
	if err := s.client.Delete(ctx, gk); err != nil {
		return fmt.Errorf("push %s: the gateway may have restarted while the push was answered, and the group could not be deleted: %w", gk, err)
	}
	s.ledger.forget(path)
	g.newest = time.Time{}
	return fmt.Errorf("push %s: %w: the gateway restarted while the push was answered: group deleted, to be pushed again", gk, ErrUnavailable)
}

// check runs the consistency check on a push of fams to the group gk (at path) and
// reserves its families; the caller holds the group's lock. A refusal is counted, and
// logged once per cause: the same conflict comes back with every scrape.
func (s *Sink) check(gk Grouping, path string, fams []*dto.MetricFamily) (*shape, error) {
	err := checkSeries(fams, gk, s.ledger.seed, s.ledger.exists(path))
	var res *shape
	var helpDiffers []string
	if err == nil {
		res, helpDiffers, err = s.ledger.reserve(path, gk.String(), fams)
	}
	for _, name := range helpDiffers {
		if s.firstTime("help " + name) {
			s.logger.Info("metric family has another help in another group: the push gateway serves one of them",
				"family", name, "group", gk.String())
		}
	}
	var ie *InconsistentError
	if errors.As(err, &ie) {
		s.noteRefusal(gk, ie)
	}
	return res, err
}

// noteDrops counts the families left out of a push of group g, and logs those that
// were not left out of its previous push: a family that cannot be pushed comes back
// with every scrape. The caller holds g.mu.
func (s *Sink) noteDrops(gk Grouping, g *group, drops []drop) {
	var now map[drop]bool
	for _, d := range drops {
		s.dropped.WithLabelValues(d.reason).Inc()
		if now == nil {
			now = make(map[drop]bool, len(drops))
		}
		now[d] = true
		if !g.dropped[d] {
			s.logger.Warn("metric family left out of the push: the push gateway cannot serve it (logged once per target)",
				"group", gk.String(), "family", d.family, "reason", d.reason)
		}
	}
	g.dropped = now
}

// noteRefusal counts a push refused as inconsistent, and logs it once per cause: the
// same conflict comes back with every scrape.
func (s *Sink) noteRefusal(gk Grouping, ie *InconsistentError) {
	s.refused.WithLabelValues(ie.Reason).Inc()
	if s.firstTime(ie.cause) {
		s.logger.Warn("push refused: the push gateway could not serve it beside what it holds (logged once per cause)",
			"group", gk.String(), "reason", ie.Reason, "family", ie.Family, "err", ie)
	}
}

// firstTime reports whether cause is new to the log.
func (s *Sink) firstTime(cause string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.noted[cause] {
		return false
	}
	if len(s.noted) >= maxNoted {
		clear(s.noted)
	}
	s.noted[cause] = true
	return true
}

// Sweep implements sink.Sweeper: delete every owned group whose last scrape is older
// than maxAge, so a target whose scrapes stopped arriving is not served forever.
func (s *Sink) Sweep(ctx context.Context, now time.Time, maxAge time.Duration) error {
	s.refresh(ctx)
	if !s.mustList(now, maxAge) {
		return nil
	}
	groups, err := s.list(ctx)
	if err != nil {
		return fmt.Errorf("list push gateway groups: %w", err)
	}
	s.mu.Lock()
	s.listed = now
	s.mu.Unlock()
	var errs []error
	for _, gk := range s.expiredRegistries(groups) {
		if err := s.client.Delete(ctx, gk); err != nil {
			errs = append(errs, err)
		} else {
			s.logger.Info("deleted the registry of a drain gone for long", "group", gk.String())
		}
	}
	for _, gr := range groups {
		if gr.shape == nil {
			if err := s.removeLeftover(ctx, gr); err != nil {
				errs = append(errs, err)
			}
			continue // not ours
		}
		g := s.group(gr.path)
		g.mu.Lock()
		if gr.scraped.After(g.newest) {
			g.newest = gr.scraped // pushed by another drain of the same queue group
		}
		s.ledger.learn(gr.path, gr.grouping.String(), gr.shape)
		if age := now.Sub(g.newest); age > maxAge {
			if err := s.client.Delete(ctx, gr.grouping); err != nil {
				errs = append(errs, err)
			} else {
				s.ledger.forget(gr.path)
				s.deleted.Inc()
				s.logger.Info("deleted stale push gateway group", "group", gr.path, "last_scrape_age", age.Round(time.Second))
			}
		}
		g.mu.Unlock()
	}
	// Forget groups gone from the gateway whose state is older than maxAge: their
	// targets are gone, and memory must not grow with every target ever seen.
	present := make(map[string]bool, len(groups))
	for _, gr := range groups {
		present[gr.path] = true
	}
	s.mu.Lock()
	for p, g := range s.groups {
		if !present[p] && g.mu.TryLock() {
			if now.Sub(g.newest) > maxAge {
				delete(s.groups, p)
				s.ledger.forget(p)
			}
			g.mu.Unlock()
		}
	}
	s.mu.Unlock()
	return errors.Join(errs...)
}

// mustList reports whether a sweep must read the gateway: some group the sink knows looks
// stale, a refused push left a group behind, or the last listing is old.
func (s *Sink) mustList(now time.Time, maxAge time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.leftover) > 0 || now.Sub(s.listed) > relistInterval {
		return true
	}
	for _, g := range s.groups {
		if g.mu.TryLock() {
			stale := !g.newest.IsZero() && now.Sub(g.newest) > maxAge
			g.mu.Unlock()
			if stale {
				return true
			}
		}
	}
	return false
}

// removeLeftover deletes a group the gateway kept for a first push of ours it refused:
// it holds nothing but the gateway's own push-time series.
func (s *Sink) removeLeftover(ctx context.Context, gr listedGroup) error {
	s.mu.Lock()
	ours := s.leftover[gr.path]
	s.mu.Unlock()
	if !ours || !gr.empty {
		return nil // not a leftover of ours, or someone pushed to it since
	}
	if err := s.client.Delete(ctx, gr.grouping); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.leftover, gr.path)
	s.mu.Unlock()
	s.logger.Info("deleted the empty group a refused push left behind", "group", gr.grouping.String())
	return nil
}

// scrapeTime returns the scrape time recorded in an owned group.
func scrapeTime(gr Group) (time.Time, bool) {
	f, ok := gr.Families[exposition.HealthTimestamp]
	if !ok || len(f.Metrics) == 0 {
		return time.Time{}, false
	}
	v := f.Metrics[0].Value
	sec, frac := math.Modf(v)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// Reasons a family of a scrape is left out of its push, counted in
// prometheus_streams_drain_pushgateway_families_dropped_total. The rest of the
// scrape's families are pushed.
const (
	// DropEscapedNameCollision: the family's name is outside the legacy character set
	// and, escaped, is the name of another family of the scrape.
	DropEscapedNameCollision = "escaped_name_collision"
	// DropEscapedLabelCollision: two label names of one of the family's series escape
	// to the same name.
	DropEscapedLabelCollision = "escaped_label_collision"
)

// drop is a family left out of a push, and why.
type drop struct{ family, reason string }

// forGateway returns fams as Push Gateway 1.5 takes them, copying only the families that
// need a change (the originals are shared with other sinks): sample timestamps removed,
// since the gateway refuses them, and names outside the legacy character set escaped
// with underscores, since the gateway would accept them but then serve an exposition no
// scraper can parse. A family that escaping would make clash with another, or whose
// series it would give two labels of one name, is left out, and returned in drops:
// pushed, it would make the gateway (or the sink's own check) refuse the whole push.
// Of two families whose names escape alike, the one whose name needs no escaping is
// kept, else the first.
func forGateway(fams []*dto.MetricFamily) (out []*dto.MetricFamily, drops []drop) {
	out, copied := fams, false
	var names map[string]bool // the names pushed, once some family needs escaping
	for i, f := range fams {
		stamped, utf8 := needsChange(f)
		if utf8 && names == nil {
			names = make(map[string]bool, len(fams))
			for _, g := range fams {
				if model.LegacyValidation.IsValidMetricName(g.GetName()) {
					names[g.GetName()] = true
				}
			}
		}
		if !stamped && !utf8 {
			continue
		}
		if !copied {
			out, copied = append([]*dto.MetricFamily(nil), fams...), true
		}
		// A deep copy first: EscapeMetricFamily shares the metrics it need not escape,
		// and those are the other sinks' too.
		c := proto.Clone(f).(*dto.MetricFamily)
		if utf8 {
			c = model.EscapeMetricFamily(c, model.UnderscoreEscaping)
			switch {
			case c.GetName() != f.GetName() && names[c.GetName()]:
				drops = append(drops, drop{f.GetName(), DropEscapedNameCollision})
				out[i] = nil
				continue
			case duplicateLabels(c):
				drops = append(drops, drop{f.GetName(), DropEscapedLabelCollision})
				out[i] = nil
				continue
			}
			names[c.GetName()] = true
		}
		exposition.StripTimestamps([]*dto.MetricFamily{c})
		out[i] = c
	}
	if len(drops) > 0 {
		out = slices.DeleteFunc(out, func(f *dto.MetricFamily) bool { return f == nil })
	}
	return out, drops
}

// duplicateLabels reports whether a series of f has two labels of one name.
func duplicateLabels(f *dto.MetricFamily) bool {
	for _, m := range f.GetMetric() {
		ls := m.GetLabel()
		for i := range ls {
			for j := range i {
				if ls[i].GetName() == ls[j].GetName() {
					return true
				}
			}
		}
	}
	return false
}

func needsChange(f *dto.MetricFamily) (stamped, utf8 bool) {
	utf8 = !model.LegacyValidation.IsValidMetricName(f.GetName())
	for _, m := range f.GetMetric() {
		if m.TimestampMs != nil {
			stamped = true
		}
		for _, l := range m.GetLabel() {
			if !model.LegacyValidation.IsValidLabelName(l.GetName()) {
				utf8 = true
			}
		}
	}
	return stamped, utf8
}
