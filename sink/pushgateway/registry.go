package pushgateway

import (
	"context"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// A drain's registry of claimed families (see claims.go), as it is written and read.

// registry is another drain's (or this one's) registry, as a listing shows it.
type registry struct {
	id      string
	written time.Time // its push_time_seconds: when its drain last wrote it (gateway clock)
	mark    float64   // the mark of that write
	entries []claimEntry
}

// registryOf returns the registry of the drain id in a listing, or nil.
func registryOf(groups []listedGroup, id string) *registry {
	for _, lg := range groups {
		if lg.registry != nil && lg.registry.id == id {
			return lg.registry
		}
	}
	return nil
}

// sameClaims reports whether a listed registry holds exactly content.
func sameClaims(listed, content []claimEntry) bool {
	if len(listed) != len(content) {
		return false
	}
	want := make(map[famKey]float64, len(content))
	for _, c := range content {
		want[c.key] = c.at
	}
	for _, l := range listed {
		if at, ok := want[l.key]; !ok || at != l.at {
			return false
		}
	}
	return true
}

// parseRegistry reads a registry group of a listing.
func parseRegistry(gr Group) *registry {
	r := &registry{id: gr.Grouping["instance"], written: gr.PushTime}
	if m := gr.Families[ClaimsWrittenFamily].Metrics; len(m) > 0 {
		r.mark = m[0].Value
	}
	for _, m := range gr.Families[ClaimFamily].Metrics {
		t, ok := dto.MetricType_value[strings.ToUpper(m.Labels["type"])]
		if name := m.Labels["family"]; ok && name != "" {
			r.entries = append(r.entries, claimEntry{key: famKey{name, dto.MetricType(t)}, at: m.Value})
		}
	}
	return r
}

// registryGrouping is the group of this sink's registry.
func (s *Sink) registryGrouping() Grouping {
	return Grouping{{Name: "job", Value: ClaimsJob}, {Name: "instance", Value: s.id}}
}

// writeRegistry replaces the sink's registry with content, and returns the write's
// mark. The caller holds roundSem, so that writes reach the gateway in the order the
// sink decided them.
func (s *Sink) writeRegistry(ctx context.Context, content []claimEntry) (float64, error) {
	s.ledger.holdRegistry()
	mark := s.nextMark()
	if err := s.client.Push(ctx, s.registryGrouping(), append(claimFamilies(content), markFamily(mark))); err != nil {
		return mark, err
	}
	s.claimed.Set(float64(len(content)))
	return mark, nil
}

// markRegistry marks the sink's registry as written now, keeping the claims it
// holds (or creating it without any), and returns the mark. The caller holds roundSem.
func (s *Sink) markRegistry(ctx context.Context) (float64, error) {
	s.ledger.holdRegistry()
	mark := s.nextMark()
	return mark, s.client.add(ctx, s.registryGrouping(), []*dto.MetricFamily{markFamily(mark)})
}

// nextMark returns the time as Unix seconds, or just after the last mark.
func (s *Sink) nextMark() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mark = max(float64(time.Now().UnixNano())/1e9, s.mark+1e-6)
	return s.mark
}

func markFamily(mark float64) *dto.MetricFamily {
	return &dto.MetricFamily{Name: ptr(ClaimsWrittenFamily), Help: ptr(writtenHelp), Type: dto.MetricType_GAUGE.Enum(),
		Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: ptr(mark)}}}}
}

// claimFamilies is a registry's content as the families to push.
func claimFamilies(content []claimEntry) []*dto.MetricFamily {
	if len(content) == 0 {
		return nil
	}
	f := &dto.MetricFamily{Name: ptr(ClaimFamily), Help: ptr(claimHelp), Type: dto.MetricType_GAUGE.Enum()}
	for _, c := range content {
		f.Metric = append(f.Metric, &dto.Metric{
			Label: []*dto.LabelPair{{Name: ptr("family"), Value: ptr(c.key.name)}, {Name: ptr("type"), Value: ptr(typeName(c.key.typ))}},
			Gauge: &dto.Gauge{Value: ptr(c.at)},
		})
	}
	return []*dto.MetricFamily{f}
}

func ptr[T any](v T) *T { return &v }

// refresh rewrites the registry when it is due, unless a round (which writes it) runs.
func (s *Sink) refresh(ctx context.Context) {
	if written := s.lastWrite(); !written.IsZero() && time.Since(written) < s.times.refresh || !s.ledger.hasClaims() {
		return
	}
	select {
	case s.roundSem <- struct{}{}:
	default:
		return
	}
	defer func() { <-s.roundSem }()
	if written := s.lastWrite(); !written.IsZero() && time.Since(written) < s.times.refresh {
		return
	}
	w := time.Now()
	if _, err := s.writeRegistry(ctx, s.ledger.registryContent()); err != nil {
		s.logger.Debug("could not rewrite the registry of claimed families", "err", err)
		return
	}
	s.setLastWrite(w)
}

// adopt takes back the registry that this drain (its identity) wrote before a restart,
// which load marked (mark, at marked) before it read groups. Claims that nothing in the
// gateway conflicts with are vouched at once; the others are withdrawn or left for a
// round to judge.
func (s *Sink) adopt(ctx context.Context, st gatewayState, groups []listedGroup, mark float64, marked time.Time) {
	mine := registryOf(groups, s.id)
	if mine == nil || len(mine.entries) == 0 {
		return
	}
	adopted, epoch := s.ledger.adoptClaims(mine.entries)
	if len(adopted) == 0 || mine.mark != mark || !st.start.IsZero() && s.watch.uptime(marked) < s.times.grace {
		// The listing may miss claims submitted before the mark, or pushes confirmed
		// before a restart of the gateway may be on their way: the first round
		// judges the claims.
		return
	}
	now, _, err := s.watch.confirm(ctx, time.Now())
	if err != nil || !now.start.Equal(st.start) {
		return // unvouched: the first round judges them
	}
	lost, waiting := s.classify(adopted, groups, mine.written)
	won, lostKeys := verdicts(adopted, lost, waiting)
	if !s.ledger.settleClaims(epoch, won, lostKeys) {
		return
	}
	s.setLastWrite(marked)
	s.logger.Info("took back the metric families this drain had claimed in the push gateway", "identity", s.id, "families", len(won), "withdrawn", len(lostKeys))
	if len(lostKeys) > 0 {
		s.roundSem <- struct{}{}
		defer func() { <-s.roundSem }()
		if _, err := s.writeRegistry(ctx, s.ledger.registryContent()); err != nil {
			s.logger.Warn("could not withdraw claims from the push gateway", "families", len(lostKeys), "err", err)
		}
	}
}

// expiredRegistries returns the registries of a listing that are gone drains': not
// written for ttl, by the newest push the listing shows (which is no later than the
// gateway's now).
func (s *Sink) expiredRegistries(groups []listedGroup) []Grouping {
	var now time.Time
	for _, lg := range groups {
		if lg.pushed.After(now) {
			now = lg.pushed
		}
	}
	var out []Grouping
	for _, lg := range groups {
		if r := lg.registry; r != nil && r.id != s.id && now.Sub(r.written) > s.times.ttl {
			out = append(out, lg.grouping)
		}
	}
	return out
}

func (s *Sink) lastWrite() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.written
}

func (s *Sink) setLastWrite(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.written = t
}
