package pushgateway

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Several drains may push into one gateway (shards, a queue group, the drains of
// several sites), and each checks its pushes only against the groups it knows: what
// another drain pushed since it last read the gateway, it cannot see. Two drains could
// then push one family with two types, which a gateway without its consistency check
// takes, and then fails every scrape of its /metrics. So the drains coordinate through
// the one thing they all share, the gateway:
//
//   - Each drain keeps a registry group, /metrics/job/<ClaimsJob>/instance/<identity>,
//     listing every family (name and type) that it holds in the gateway or is about to
//     push: one ClaimFamily series per family, valued with when the drain claimed it.
//     A family stays in the registry as long as a group the sink knows holds it. Every
//     write of the registry is marked (ClaimsWrittenFamily), so that the drain knows
//     when a listing shows it, and with it every write submitted before.
//   - A push whose families are all confirmed in the registry (the steady state: a
//     target sends the families it sent last time, or another of the drain's targets
//     did) goes at once. Any other drain that would introduce one of them with another
//     type must first see the claim.
//   - A family not yet confirmed is claimed in a round: the sink writes it to its
//     registry (PUT), reads the gateway (GET /api/v1/metrics) and pushes only if nothing
//     there conflicts with it, as the gateway's check would judge it: no group of another
//     drain, no other drain's claim. Of two drains claiming conflicting families at the
//     same moment, at least one sees the other's claim, since each reads once its own
//     claim shows and the gateway applies writes in the order it takes them. The
//     earlier claim (claim time, then identity) wins: the later drain withdraws its
//     claim and refuses its push (type_conflict or name_collision, counted), the earlier
//     waits for that (or for the later drain's group, having lost) before it decides.
//     The gateway thus never holds two conflicting families, not even for a moment.
//   - A round reads all the gateway holds, seconds for 1,000 node_exporter-sized groups,
//     so the pushes waiting for one share it.
//   - A gateway that restarts comes back empty, or with what it last persisted. While it
//     pushes, the sink reads the gateway's start time (GET /api/v1/status) at least every
//     grace/2, and after a restart pushes nothing unclaimed before a new round. A round
//     trusts what it reads only from a gateway up for grace: any push confirmed before
//     the restart was applied by then, or it is checked after its answer (and its group
//     deleted when the answer came too late to tell).
//   - A registry not written for ttl is a gone drain's: rounds ignore it and sweeps delete
//     it. The sink rewrites its own every refresh, and a claim it wrote more than ttl/2
//     ago is claimed anew before it is relied on.
//   - A drain's identity outlives its restarts (cmd/drain: host and monitor address), so a
//     restarted drain takes its registry back (marking it first, then checking it
//     against the listing it reads at start anyway) instead of claiming every family
//     anew.
//   - A gateway with its own consistency check (as /api/v1/status says) refuses conflicts
//     itself: the sink then keeps no registry and claims nothing.

const (
	// ClaimsJob is the job of the drains' registry groups.
	ClaimsJob = "prometheus_streams_families"
	// ClaimFamily holds a drain's claims: one gauge per family, labelled with the
	// family's name and type, valued with when the drain claimed it (Unix seconds).
	ClaimFamily = "prometheus_streams_family_claimed_timestamp_seconds"
	// ClaimsWrittenFamily marks every write of a registry: one gauge, valued with when
	// the drain wrote it (Unix seconds, its own clock, unique per write).
	ClaimsWrittenFamily = "prometheus_streams_family_claims_written_timestamp_seconds"

	claimHelp = "A metric family that a prometheus-streams drain holds in this gateway or is about to push, with its type, " +
		"valued with when the drain claimed it: drains sharing the gateway check every family they introduce against these."
	writtenHelp = "When the prometheus-streams drain last wrote its registry of claimed metric families, by its clock."
)

// registryFamily reports whether name is a family of the drains' registry groups,
// all gauges, beside the gateway's own push_time_seconds and push_failure_time_seconds.
func registryFamily(name string) bool {
	switch name {
	case PushTimeFamily, PushFailureTimeFamily, ClaimFamily, ClaimsWrittenFamily:
		return true
	}
	return false
}

// claimTimes are the protocol's durations; tests shorten them.
type claimTimes struct {
	grace   time.Duration // a round trusts a gateway up this long; pushes confirm its start within grace/2
	refresh time.Duration // how often the sink rewrites its registry
	ttl     time.Duration // a registry not written for this long is a gone drain's
	wait    time.Duration // how long a round waits for a later, conflicting claim to be withdrawn
	visible time.Duration // how long (and at least three listings) a round waits for its registry write to show
}

var defaultClaimTimes = claimTimes{
	grace:   2 * time.Second,
	refresh: 30 * time.Second,
	ttl:     10 * time.Minute,
	wait:    10 * time.Second,
	visible: 5 * time.Second,
}

// famKey is a family name with a type: what a registry entry claims.
type famKey struct {
	name string
	typ  dto.MetricType
}

func (k famKey) meta() famMeta { return famMeta{name: k.name, typ: k.typ} }

// claim is the sink's state of one registry entry.
type claim struct {
	at float64 // when claimed, Unix seconds: unique within the sink
	// vouched: a round (or the check of a registry taken back) found nothing in the
	// gateway conflicting with it, and the gateway has not restarted since.
	vouched bool
}

// claimEntry is a registry entry as written and read.
type claimEntry struct {
	key famKey
	at  float64
}

// exempt reports whether f is a family that every gateway has with its type, which no
// drain can introduce with another: nothing to claim.
func exempt(f famMeta) bool {
	if own, ok := ownFamilies[f.name]; ok {
		return own.typ == f.typ
	}
	return registryFamily(f.name) && f.typ == dto.MetricType_GAUGE
}

// unvouched returns the families of s that the sink may not push before a round
// claims them. A shape found all vouched is remembered as such until a claim is lost.
func (x *ledger) unvouched(s *shape) []famKey {
	x.mu.Lock()
	defer x.mu.Unlock()
	if s.vouched == x.claimsGen {
		return nil
	}
	var out []famKey
	for _, f := range s.fams {
		if exempt(f) {
			continue
		}
		k := famKey{f.name, f.typ}
		if c := x.claims[k]; c == nil || !c.vouched {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		s.vouched = x.claimsGen
	}
	return out
}

// held reports whether a group the ledger knows holds k, or a push reserves it. Called
// with x.mu held.
func (x *ledger) held(k famKey) bool {
	e := x.fams[k.name]
	return e != nil && e.held[typeSlot(k.typ)] > 0
}

// prune forgets the claims no group holds any more. Called with x.mu held.
func (x *ledger) prune() {
	for k := range x.claims {
		if !x.held(k) {
			delete(x.claims, k)
			x.claimsGen++
		}
	}
}

// contentLocked is the registry as the sink writes it, sorted. Called with x.mu held.
func (x *ledger) contentLocked() []claimEntry {
	out := make([]claimEntry, 0, len(x.claims))
	for k, c := range x.claims {
		out = append(out, claimEntry{key: k, at: c.at})
	}
	slices.SortFunc(out, func(a, b claimEntry) int {
		if c := strings.Compare(a.key.name, b.key.name); c != 0 {
			return c
		}
		return int(a.key.typ) - int(b.key.typ)
	})
	return out
}

// registryContent returns the registry to write, without the claims no group holds.
func (x *ledger) registryContent() []claimEntry {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.prune()
	return x.contentLocked()
}

// prepareRound claims, as of now, every family that a push waits to push and that is
// not claimed, forgets the claims nobody holds, and returns the registry to write,
// the claims the round must decide (all unvouched ones) and the epoch they belong to.
func (x *ledger) prepareRound(now time.Time) (content, open []claimEntry, epoch uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.prune()
	for _, h := range x.groups {
		if h.pending == nil {
			continue
		}
		for _, f := range h.pending.fams {
			k := famKey{f.name, f.typ}
			if exempt(f) || x.claims[k] != nil {
				continue
			}
			x.claims[k] = &claim{at: x.nextClaimTime(now)}
		}
	}
	for k, c := range x.claims {
		if !c.vouched {
			open = append(open, claimEntry{key: k, at: c.at})
		}
	}
	return x.contentLocked(), open, x.epoch
}

// nextClaimTime returns now as Unix seconds, or just after the last claim's time:
// a claim's time tells this sink's registry writes apart. Called with x.mu held.
func (x *ledger) nextClaimTime(now time.Time) float64 {
	at := float64(now.UnixNano()) / 1e9
	if at <= x.lastClaim {
		at = x.lastClaim + 1e-6
	}
	x.lastClaim = at
	return at
}

// adoptClaims takes back the entries of the sink's registry as a listing shows them
// (the drain restarted), unvouched, unless the sink has claims of its own. It returns
// the entries taken and their epoch.
func (x *ledger) adoptClaims(entries []claimEntry) (adopted []claimEntry, epoch uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.claims) > 0 {
		return nil, x.epoch
	}
	for _, e := range entries {
		if x.claims[e.key] == nil {
			x.claims[e.key] = &claim{at: e.at}
			x.lastClaim = max(x.lastClaim, e.at)
			adopted = append(adopted, e)
		}
	}
	return adopted, x.epoch
}

// settleClaims records a round's verdicts, unless the gateway restarted since the round
// began (epoch): won claims become vouched, lost ones are forgotten. It reports whether
// it recorded them.
func (x *ledger) settleClaims(epoch uint64, won, lost []famKey) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if epoch != x.epoch {
		return false
	}
	for _, k := range won {
		if c := x.claims[k]; c != nil {
			c.vouched = true
		}
	}
	for _, k := range lost {
		if x.claims[k] != nil {
			delete(x.claims, k)
			x.claimsGen++
		}
	}
	return true
}

// voidClaims unvouches every claim: the gateway restarted, or the registry was not
// written for too long. Rounds begun before do not count.
func (x *ledger) voidClaims() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.epoch++
	x.claimsGen++
	for _, c := range x.claims {
		c.vouched = false
	}
}

// holdRegistry records that the gateway holds a registry group.
func (x *ledger) holdRegistry() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.registry = true
}

// hasClaims reports whether the sink has a registry to keep.
func (x *ledger) hasClaims() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.claims) > 0
}

// own reports whether the group at path is one this sink pushed (or pushes now): its
// families are the ledger's to judge, not a listing's.
func (x *ledger) own(path string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	h := x.groups[path]
	return h != nil && h.own
}

// errRestarted ends a round during which the gateway restarted (or the claims lapsed).
var errRestarted = fmt.Errorf("%w: the push gateway restarted during a claim round", ErrUnavailable)

// batch is the pushes waiting for one round.
type batch struct {
	done chan struct{}
	lost map[famKey]*InconsistentError // the round's lost claims
	err  error                         // why it decided nothing, or not everything
}

// vouch makes sure that every family of res, a push's reserved families, may be pushed:
// the gateway checks pushes itself, or the sink's registry holds them, vouched. It
// returns the gateway's state the push relies on and when it was confirmed.
func (s *Sink) vouch(ctx context.Context, res *shape) (gatewayState, time.Time, error) {
	for round := 0; ; round++ {
		st, sent, err := s.watch.confirm(ctx, time.Now().Add(-s.times.grace/2))
		if err != nil {
			return st, sent, err
		}
		if st.checked {
			return st, sent, nil
		}
		if written := s.lastWrite(); !written.IsZero() && time.Since(written) > s.times.ttl/2 {
			// Other drains may soon take the registry for a gone drain's: its
			// claims are judged anew.
			s.ledger.voidClaims()
		}
		keys := s.ledger.unvouched(res)
		if len(keys) == 0 {
			s.refresh(ctx)
			return st, sent, nil
		}
		if round == 2 {
			return st, sent, fmt.Errorf("%w: metric family %q: not claimed after two rounds", ErrUnavailable, keys[0].name)
		}
		b, err := s.awaitRound(ctx)
		if err != nil {
			return st, sent, err
		}
		for _, k := range keys {
			if e := b.lost[k]; e != nil {
				return st, sent, e
			}
		}
		if b.err != nil {
			return st, sent, b.err
		}
	}
}

// awaitRound waits for a round that begins after the call: its own, or one another
// push runs for every push waiting.
func (s *Sink) awaitRound(ctx context.Context) (*batch, error) {
	s.batchMu.Lock()
	if s.next == nil {
		s.next = &batch{done: make(chan struct{})}
	}
	b := s.next
	s.batchMu.Unlock()
	for {
		select {
		case <-b.done:
			return b, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case s.roundSem <- struct{}{}:
			s.batchMu.Lock()
			run := s.next
			s.next = nil
			s.batchMu.Unlock()
			if run != nil {
				run.lost, run.err = s.round(ctx)
				close(run.done)
			}
			<-s.roundSem
		}
	}
}

// round claims what the pushes waiting need and decides each claim. The caller holds
// roundSem.
func (s *Sink) round(ctx context.Context) (map[famKey]*InconsistentError, error) {
	start := time.Now()
	st, _, err := s.watch.confirm(ctx, start)
	if err != nil || st.checked {
		return nil, err
	}
	content, open, epoch := s.ledger.prepareRound(start)
	if len(open) == 0 {
		return nil, nil
	}
	defer func() { s.roundDuration.Observe(time.Since(start).Seconds()) }()
	if up := s.watch.uptime(time.Now()); !st.start.IsZero() && up < s.times.grace {
		// Pushes confirmed before a restart may still be on their way.
		if err := sleep(ctx, s.times.grace-up); err != nil {
			return nil, err
		}
	}
	written := time.Now()
	mark, err := s.writeRegistry(ctx, content)
	if err != nil {
		return nil, fmt.Errorf("claim %d metric families: %w", len(open), err)
	}
	for listings := 1; ; listings++ {
		groups, err := s.list(ctx)
		if err != nil {
			return nil, fmt.Errorf("claim %d metric families: %w", len(open), err)
		}
		lost, waiting, pause, err := s.judge(ctx, st, content, mark, open, groups, written, listings)
		s.releaseListing(groups)
		if err != nil {
			return nil, err
		}
		if pause == 0 && len(waiting) > 0 && time.Since(start) < s.times.wait {
			pause = s.times.wait / 50
		}
		if pause > 0 {
			if err := sleep(ctx, pause); err != nil {
				return nil, err
			}
			continue
		}
		won, lostKeys := verdicts(open, lost, waiting)
		if !s.ledger.settleClaims(epoch, won, lostKeys) {
			return nil, errRestarted
		}
		s.setLastWrite(written)
		if len(lostKeys) > 0 {
			// Withdraw them: another drain may be waiting for it.
			w := time.Now()
			if _, err := s.writeRegistry(ctx, s.ledger.registryContent()); err != nil {
				s.logger.Warn("could not withdraw lost claims from the push gateway", "families", len(lostKeys), "err", err)
			} else {
				s.setLastWrite(w)
			}
		}
		if len(waiting) > 0 {
			return lost, fmt.Errorf("%w: metric family %q: another drain claims it with another type at this moment", ErrUnavailable, waiting[0].name)
		}
		return lost, nil
	}
}

// judge decides a round's open claims from a listing (the round's listings-th) read
// after the registry was written (content, with mark, at written): lost ones, with
// why, and those waiting for a later, conflicting claim to be withdrawn. A pause says
// to read the gateway again after it: the listing does not show the registry write
// yet (the gateway answers a push before it applies it, and a busy one applies it
// later).
func (s *Sink) judge(ctx context.Context, st gatewayState, content []claimEntry, mark float64, open []claimEntry, groups []listedGroup, written time.Time, listings int) (lost map[famKey]*InconsistentError, waiting []famKey, pause time.Duration, err error) {
	now, _, err := s.watch.confirm(ctx, time.Now())
	if err != nil {
		return nil, nil, 0, err
	}
	if !now.start.Equal(st.start) {
		return nil, nil, 0, errRestarted
	}
	mine := registryOf(groups, s.id)
	if mine == nil || mine.mark != mark || !sameClaims(mine.entries, content) {
		if time.Since(written) > s.times.visible && listings >= 3 {
			return nil, nil, 0, fmt.Errorf("%w: the push gateway does not show the families this drain claimed in %s: does another drain run with identity %q?",
				ErrUnavailable, s.registryGrouping(), s.id)
		}
		return nil, nil, 20 * time.Millisecond, nil
	}
	lost, waiting = s.classify(open, groups, mine.written)
	return lost, waiting, 0, nil
}

// source is a family held or claimed elsewhere, that a claim may conflict with.
type source struct {
	fam   famMeta
	where string
	group bool    // held by a group; else claimed in a registry
	at    float64 // the claim's time
	id    string  // the claiming drain
}

// verdicts sorts claims by classify's findings: those lost to another drain, and those
// won (neither lost nor still waiting for the gateway to show them).
func verdicts(claims []claimEntry, lost map[famKey]*InconsistentError, waiting []famKey) (won, lostKeys []famKey) {
	for _, c := range claims {
		switch {
		case lost[c.key] != nil:
			lostKeys = append(lostKeys, c.key)
		case !slices.Contains(waiting, c.key):
			won = append(won, c.key)
		}
	}
	return won, lostKeys
}

// classify judges claims against a listing read at now (gateway clock): a claim is
// lost to a conflicting family that a group of another drain holds, or that another
// drain claimed earlier; it waits for one claimed later.
func (s *Sink) classify(claims []claimEntry, groups []listedGroup, now time.Time) (lost map[famKey]*InconsistentError, waiting []famKey) {
	// The names a claim can conflict with: its own, the histogram or summary whose
	// samples it would shadow, the samples' names of its own histogram or summary.
	related := func(name string) []string {
		out := []string{name}
		if base, _ := summarySuffix(name); base != "" {
			out = append(out, base)
		}
		return append(out, name+"_count", name+"_sum", name+"_bucket")
	}
	wanted := map[string]bool{}
	for _, c := range claims {
		for _, n := range related(c.key.name) {
			wanted[n] = true
		}
	}
	by := map[string][]source{}
	for _, lg := range groups {
		if lg.shape != nil && !s.ledger.own(lg.path) {
			for n := range wanted {
				if f, ok := lg.shape.find(n); ok {
					by[n] = append(by[n], source{fam: f, where: lg.grouping.String(), group: true})
				}
			}
		}
		if r := lg.registry; r != nil && r.id != s.id && now.Sub(r.written) <= s.times.ttl {
			for _, e := range r.entries {
				if wanted[e.key.name] {
					by[e.key.name] = append(by[e.key.name], source{fam: e.key.meta(), at: e.at, id: r.id,
						where: fmt.Sprintf("the families drain %q claims (to push at this moment, or held)", r.id)})
				}
			}
		}
	}
	lost = map[famKey]*InconsistentError{}
	for _, c := range claims {
		var byGroup, earlier *InconsistentError
		later := false
		for _, n := range related(c.key.name) {
			for _, src := range by[n] {
				e := conflict(c.key.meta(), src.fam, src.where)
				switch {
				case e == nil:
				case src.group:
					byGroup = cmpOr(byGroup, e)
				case src.at < c.at || src.at == c.at && src.id < s.id:
					earlier = cmpOr(earlier, e)
				default:
					later = true
				}
			}
		}
		switch {
		case byGroup != nil:
			lost[c.key] = byGroup
		case earlier != nil:
			lost[c.key] = earlier
		case later:
			waiting = append(waiting, c.key)
		}
	}
	return lost, waiting
}

func cmpOr(a, b *InconsistentError) *InconsistentError {
	if a != nil {
		return a
	}
	return b
}

// conflict returns why the gateway could not gather f beside other (held in where), or
// nil: the rules of ledger.check, between two families.
func conflict(f, other famMeta, where string) *InconsistentError {
	shadows := func(t dto.MetricType, suffix string) bool {
		return t == dto.MetricType_HISTOGRAM || t == dto.MetricType_SUMMARY && suffix != "_bucket"
	}
	switch {
	case f.name == other.name:
		if f.typ != other.typ {
			return typeConflict(f, other.typ, where).(*InconsistentError)
		}
	case strings.HasPrefix(f.name, other.name):
		if base, suffix := summarySuffix(f.name); base == other.name && shadows(other.typ, suffix) {
			return &InconsistentError{Reason: ReasonNameCollision, Family: f.name,
				Detail: fmt.Sprintf("collides with the %s samples of the %s %q in %s", suffix, typeName(other.typ), base, where),
				cause:  ReasonNameCollision + " " + f.name + " " + base}
		}
	case strings.HasPrefix(other.name, f.name):
		if base, suffix := summarySuffix(other.name); base == f.name && shadows(f.typ, suffix) {
			return &InconsistentError{Reason: ReasonNameCollision, Family: f.name,
				Detail: fmt.Sprintf("is a %s whose %s samples collide with the %s %q in %s", typeName(f.typ), suffix, typeName(other.typ), other.name, where),
				cause:  ReasonNameCollision + " " + other.name + " " + f.name}
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
