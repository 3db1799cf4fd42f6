package pushgateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"

	"github.com/prometheus-streams/prometheus-streams/lib/drain"
	"github.com/prometheus-streams/prometheus-streams/lib/exposition"
)

// Sink delivers each target's scrapes to one Push Gateway group,
// /metrics/job/<job>/instance/<instance> (plus /<publisher_label>/<publisher> when set),
// replaced by every scrape so that series a target stopped exposing disappear. It
// implements drain.Sink and drain.Sweeper.
//
// The groups it owns are those that carry exposition.HealthTimestamp: every group it
// pushes does, and no other pusher's group would. Ownership therefore survives a drain
// restart, and groups pushed by anyone else are never deleted.
type Sink struct {
	client         *Client
	publisherLabel string
	logger         *slog.Logger
	deleted        prometheus.Counter

	mu       sync.Mutex
	groups   map[string]*group // by Grouping.Path()
	listed   time.Time         // when the gateway's groups were last read
	leftover map[string]bool   // paths of groups whose first push the gateway refused
}

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
}

// NewSink returns a Sink pushing through c. publisherLabel, when not empty, adds the
// publisher's identity as a grouping label.
func NewSink(c *Client, publisherLabel string, logger *slog.Logger, reg prometheus.Registerer) *Sink {
	s := &Sink{
		client:         c,
		publisherLabel: publisherLabel,
		logger:         logger,
		groups:         map[string]*group{},
		leftover:       map[string]bool{},
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "prometheus_streams", Subsystem: "drain", Name: "pushgateway_groups_deleted_total",
			Help: "Push Gateway groups deleted because their target's last scrape was older than max_age.",
		}),
	}
	reg.MustRegister(s.deleted)
	return s
}

// Name implements drain.Sink.
func (s *Sink) Name() string { return "pushgateway" }

// Grouping is the group a scrape goes to.
func (s *Sink) Grouping(sc *drain.Scrape) Grouping {
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

// Load learns, from the gateway's API, the newest scrape of every group the sink owns,
// so that after a restart a redelivered older scrape does not replace a newer one.
func (s *Sink) Load(ctx context.Context) error {
	groups, err := s.client.Groups(ctx, exposition.HealthTimestamp)
	if err != nil {
		return fmt.Errorf("load push gateway groups: %w", err)
	}
	s.mu.Lock()
	s.listed = time.Now()
	s.mu.Unlock()
	for _, gr := range groups {
		ts, ok := scrapeTime(gr)
		if !ok {
			continue
		}
		g := s.group(GroupingOf(gr.Grouping).Path())
		g.mu.Lock()
		if ts.After(g.newest) {
			g.newest = ts
		}
		g.mu.Unlock()
	}
	return nil
}

// Deliver implements drain.Sink: PUT the scrape's families and health series.
func (s *Sink) Deliver(ctx context.Context, sc *drain.Scrape) error {
	gk := s.Grouping(sc)
	g := s.group(gk.Path())
	g.mu.Lock()
	defer g.mu.Unlock()
	if !sc.Envelope.Start.After(g.newest) && !g.newest.IsZero() {
		return drain.ErrSuperseded
	}
	fams := make([]*dto.MetricFamily, 0, len(sc.Families)+len(sc.Health))
	fams = append(fams, forGateway(sc.Families)...)
	fams = append(fams, sc.Health...)
	if err := s.client.Push(ctx, gk, fams); err != nil {
		if errors.Is(err, ErrRejected) {
			if g.newest.IsZero() {
				// The gateway keeps an empty group for a refused first push: the
				// next sweep removes it.
				s.mu.Lock()
				s.leftover[gk.Path()] = true
				s.mu.Unlock()
			}
			return fmt.Errorf("%w: %w", drain.ErrRejected, err)
		}
		return err
	}
	g.newest = sc.Envelope.Start
	return nil
}

// Sweep implements drain.Sweeper: delete every owned group whose last scrape is older
// than maxAge, so a target whose scrapes stopped arriving is not served forever.
func (s *Sink) Sweep(ctx context.Context, now time.Time, maxAge time.Duration) error {
	if !s.mustList(now, maxAge) {
		return nil
	}
	groups, err := s.client.Groups(ctx, exposition.HealthTimestamp)
	if err != nil {
		return fmt.Errorf("list push gateway groups: %w", err)
	}
	s.mu.Lock()
	s.listed = now
	s.mu.Unlock()
	var errs []error
	for _, gr := range groups {
		ts, ok := scrapeTime(gr)
		if !ok {
			if err := s.removeLeftover(ctx, gr); err != nil {
				errs = append(errs, err)
			}
			continue // not ours
		}
		gk := GroupingOf(gr.Grouping)
		g := s.group(gk.Path())
		g.mu.Lock()
		if ts.After(g.newest) {
			g.newest = ts // pushed by another drain of the same queue group
		}
		if age := now.Sub(g.newest); age > maxAge {
			if err := s.client.Delete(ctx, gk); err != nil {
				errs = append(errs, err)
			} else {
				s.deleted.Inc()
				s.logger.Info("deleted stale push gateway group", "group", gk.Path(), "last_scrape_age", age.Round(time.Second))
			}
		}
		g.mu.Unlock()
	}
	// Forget groups gone from the gateway whose state is older than maxAge: their
	// targets are gone, and memory must not grow with every target ever seen.
	present := make(map[string]bool, len(groups))
	for _, gr := range groups {
		present[GroupingOf(gr.Grouping).Path()] = true
	}
	s.mu.Lock()
	for p, g := range s.groups {
		if !present[p] && g.mu.TryLock() {
			if now.Sub(g.newest) > maxAge {
				delete(s.groups, p)
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
func (s *Sink) removeLeftover(ctx context.Context, gr Group) error {
	gk := GroupingOf(gr.Grouping)
	s.mu.Lock()
	ours := s.leftover[gk.Path()]
	s.mu.Unlock()
	if !ours {
		return nil
	}
	for name := range gr.Families {
		if name != PushTimeFamily && name != PushFailureTimeFamily {
			return nil // someone else's content: not a leftover of ours
		}
	}
	if gr.LastPushSuccessful || !gr.PushTime.IsZero() {
		return nil
	}
	if err := s.client.Delete(ctx, gk); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.leftover, gk.Path())
	s.mu.Unlock()
	s.logger.Info("deleted the empty group a refused push left behind", "group", gk.String())
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

// forGateway returns fams as Push Gateway 1.5 takes them, copying only the families that
// need a change (the originals are shared with other sinks): sample timestamps removed,
// since the gateway refuses them, and names outside the legacy character set escaped
// with underscores, since the gateway would accept them but then serve an exposition no
// scraper can parse.
func forGateway(fams []*dto.MetricFamily) []*dto.MetricFamily {
	out, copied := fams, false
	for i, f := range fams {
		stamped, utf8 := needsChange(f)
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
		}
		exposition.StripTimestamps([]*dto.MetricFamily{c})
		out[i] = c
	}
	return out
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
