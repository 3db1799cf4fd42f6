package pushgateway

import (
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
)

// The Sink checks each push the way Push Gateway 1.5 does with its consistency check
// on (storage.DiskMetricStore.checkWriteRequest: a trial gather, through client_golang
// 1.14's prometheus.Gatherers, of the gateway's own metrics and of every group as the
// push would leave them). That check costs the gateway ~1.2 ms of CPU per group it
// holds, per push, so operators turn it off (--push.disable-consistency-check); the
// gateway then takes an inconsistent push and fails every scrape of its /metrics
// until the offending group goes. The sink refuses what the check refuses, among the
// groups it tracks, in time proportional to the push alone:
//
//   - Per family name, across groups and the gateway's own metrics, one type: a gauge
//     "foo" beside a counter or an untyped "foo" cannot be gathered.
//   - No family that a summary's or histogram's samples would shadow: "<h>_count",
//     "<h>_sum" and "<h>_bucket" beside a histogram <h>; "<s>_count" and "<s>_sum"
//     beside a summary <s> ("<s>_bucket", "_total" and "_created" are fine).
//   - Help may differ between groups: the gateway serves one of them and logs. A
//     family named as one of the gateway's own takes the gateway's help, except the
//     families of its push handler, which it registers after reading its help strings
//     at start: a different help for those is refused.
//   - Within the push, its series labelled as the gateway labels them (grouping
//     labels set, an empty instance label added where none is): no two alike, no two
//     labels of one name, no reserved ("__") label name, no label value that is not
//     UTF-8, no "quantile" label on a summary, and a value of the family's type.
//
// Series of two of the sink's groups never collide: the gateway gives every series its
// group's grouping labels, and the sink's groups all have the same label names.

// Reasons a push is refused: the reason label of
// prometheus_streams_drain_pushgateway_pushes_refused_total, and InconsistentError.Reason.
const (
	ReasonTypeConflict    = "type_conflict"    // the family has another type elsewhere
	ReasonHelpConflict    = "help_conflict"    // the gateway's own family of the name has another help
	ReasonNameCollision   = "name_collision"   // a summary's or histogram's samples collide with another family
	ReasonDuplicateSeries = "duplicate_series" // two series of the push alike once the gateway labels them
	ReasonInvalidSeries   = "invalid_series"   // a series the gateway cannot gather (label names, values, value type)
	ReasonGateway         = "gateway"          // the gateway itself answered 4xx
)

// ErrInconsistent is what every InconsistentError unwraps to.
var ErrInconsistent = errors.New("inconsistent with what the push gateway holds")

// InconsistentError is a push the Sink refused before sending it, because the gateway
// could not serve it beside what it holds (or with its check on, would refuse it).
type InconsistentError struct {
	Reason string // one of the Reason constants
	Family string // the family of the push at fault
	Detail string // what it conflicts with, and where
	cause  string // what makes two refusals the same, for logging once
}

func (e *InconsistentError) Error() string {
	return fmt.Sprintf("metric family %q %s", e.Family, e.Detail)
}

// Unwrap returns ErrInconsistent.
func (e *InconsistentError) Unwrap() error { return ErrInconsistent }

// ownFamily is one of the gateway's own families, which every push is gathered with.
type ownFamily struct {
	typ dto.MetricType
	// help, when not empty, is the help a pushed family of the name must have. The
	// gateway gives its own help to pushed families named as the families it had at
	// start; the families of its push handler appear only with the first push.
	help string
}

// ownFamilies are Push Gateway 1.5.1's own metrics (Debian's build: Go 1.19,
// client_golang 1.14), as its /metrics serves them once it has taken a push.
// TestOwnFamilies checks them against the binary.
var ownFamilies = map[string]ownFamily{
	"go_gc_duration_seconds":           {typ: dto.MetricType_SUMMARY},
	"go_goroutines":                    {typ: dto.MetricType_GAUGE},
	"go_info":                          {typ: dto.MetricType_GAUGE},
	"go_memstats_alloc_bytes":          {typ: dto.MetricType_GAUGE},
	"go_memstats_alloc_bytes_total":    {typ: dto.MetricType_COUNTER},
	"go_memstats_buck_hash_sys_bytes":  {typ: dto.MetricType_GAUGE},
	"go_memstats_frees_total":          {typ: dto.MetricType_COUNTER},
	"go_memstats_gc_sys_bytes":         {typ: dto.MetricType_GAUGE},
	"go_memstats_heap_alloc_bytes":     {typ: dto.MetricType_GAUGE},
	"go_memstats_heap_idle_bytes":      {typ: dto.MetricType_GAUGE},
	"go_memstats_heap_inuse_bytes":     {typ: dto.MetricType_GAUGE},
	"go_memstats_heap_objects":         {typ: dto.MetricType_GAUGE},
	"go_memstats_heap_released_bytes":  {typ: dto.MetricType_GAUGE},
	"go_memstats_heap_sys_bytes":       {typ: dto.MetricType_GAUGE},
	"go_memstats_last_gc_time_seconds": {typ: dto.MetricType_GAUGE},
	"go_memstats_lookups_total":        {typ: dto.MetricType_COUNTER},
	"go_memstats_mallocs_total":        {typ: dto.MetricType_COUNTER},
	"go_memstats_mcache_inuse_bytes":   {typ: dto.MetricType_GAUGE},
	"go_memstats_mcache_sys_bytes":     {typ: dto.MetricType_GAUGE},
	"go_memstats_mspan_inuse_bytes":    {typ: dto.MetricType_GAUGE},
	"go_memstats_mspan_sys_bytes":      {typ: dto.MetricType_GAUGE},
	"go_memstats_next_gc_bytes":        {typ: dto.MetricType_GAUGE},
	"go_memstats_other_sys_bytes":      {typ: dto.MetricType_GAUGE},
	"go_memstats_stack_inuse_bytes":    {typ: dto.MetricType_GAUGE},
	"go_memstats_stack_sys_bytes":      {typ: dto.MetricType_GAUGE},
	"go_memstats_sys_bytes":            {typ: dto.MetricType_GAUGE},
	"go_threads":                       {typ: dto.MetricType_GAUGE},
	"process_cpu_seconds_total":        {typ: dto.MetricType_COUNTER},
	"process_max_fds":                  {typ: dto.MetricType_GAUGE},
	"process_open_fds":                 {typ: dto.MetricType_GAUGE},
	"process_resident_memory_bytes":    {typ: dto.MetricType_GAUGE},
	"process_start_time_seconds":       {typ: dto.MetricType_GAUGE},
	"process_virtual_memory_bytes":     {typ: dto.MetricType_GAUGE},
	"process_virtual_memory_max_bytes": {typ: dto.MetricType_GAUGE},
	"pushgateway_build_info":           {typ: dto.MetricType_GAUGE},
	"pushgateway_http_push_duration_seconds": {typ: dto.MetricType_SUMMARY,
		help: "HTTP request duration for pushes to the Pushgateway."},
	"pushgateway_http_push_size_bytes": {typ: dto.MetricType_SUMMARY,
		help: "HTTP request size for pushes to the Pushgateway."},
	"pushgateway_http_requests_total": {typ: dto.MetricType_COUNTER,
		help: "Total HTTP requests processed by the Pushgateway, excluding scrapes."},
}

// ownPlace names where the gateway's own families are, in messages.
const ownPlace = "the push gateway's own metrics"

// registriesPlace names the drains' registry groups (claims.go), in messages.
const registriesPlace = "the registries of the drains sharing the push gateway"

// numTypes is the number of type slots an entry counts: dto.MetricType's values,
// 0 to 5 today, and one slot for any later value.
const numTypes = 7

func typeSlot(t dto.MetricType) int {
	if t < 0 || int(t) >= numTypes-1 {
		return numTypes - 1
	}
	return int(t)
}

func typeName(t dto.MetricType) string { return strings.ToLower(t.String()) }

// famMeta is what the ledger knows of a family: no series.
type famMeta struct {
	name string
	typ  dto.MetricType
	help string
}

// shape is the families one group holds. Groups that hold the same families (the
// node_exporters of a fleet, mostly) share one, so the ledger costs memory per family
// name and per distinct shape, not per group, and never per series.
type shape struct {
	key  uint64
	fams []famMeta // sorted by name; help is that of the first group of the shape
	refs int       // holdings and listings using it
	// vouched is the ledger's claimsGen when every family of the shape was found
	// claimed and vouched (see ledger.unvouched).
	vouched uint64
}

func (s *shape) find(name string) (famMeta, bool) {
	i, ok := slices.BinarySearchFunc(s.fams, name, func(f famMeta, name string) int {
		return strings.Compare(f.name, name)
	})
	if !ok {
		return famMeta{}, false
	}
	return s.fams[i], true
}

// entry is the ledger's state of one family name.
type entry struct {
	held [numTypes]int32 // shapes held (committed or reserved) with the family, by type
	help string          // the help of the shape that brought the family first
}

// holding is what the gateway holds, or is about to, for one of the sink's groups.
type holding struct {
	name    string   // the grouping, as Grouping.String, for messages
	shapes  []*shape // one; more while the outcome of a push is unknown
	pending *shape   // the families of a push in flight, reserved
	// counted: pending is counted in the entries. It is not when it is what the
	// group holds already, as when a target sends the same families as last time.
	counted bool
	// own: the sink pushed the group (or pushes it now); else it knows it from a
	// listing only.
	own bool
}

// ledger is the sink's account of the families in the groups it tracks, by name. Its
// methods are safe for concurrent use; those that take a path expect the caller to
// hold that group's lock, so that a group has at most one push in flight.
type ledger struct {
	seed maphash.Seed

	mu     sync.Mutex
	fams   map[string]*entry
	groups map[string]*holding // by Grouping.Path
	shapes map[uint64][]*shape // interned, by key

	// The sink's registry of claimed families (see claims.go). registry: the
	// gateway holds registries, whose groups have the gateway's own gauges
	// push_time_seconds and push_failure_time_seconds, and the claims' gauges.
	registry  bool
	claims    map[famKey]*claim
	claimsGen uint64  // counts the claims unvouched or forgotten, for shape.vouched
	epoch     uint64  // counts the gateway restarts noticed: a round settles in its own
	lastClaim float64 // the time of the newest claim
}

func newLedger() *ledger {
	return &ledger{
		seed:      maphash.MakeSeed(),
		fams:      map[string]*entry{},
		groups:    map[string]*holding{},
		shapes:    map[uint64][]*shape{},
		claims:    map[famKey]*claim{},
		claimsGen: 1,
	}
}

// newShape sorts fams (which it keeps) and returns them as a shape, not yet interned.
func (x *ledger) newShape(fams []famMeta) *shape {
	slices.SortFunc(fams, func(a, b famMeta) int { return strings.Compare(a.name, b.name) })
	var h maphash.Hash
	h.SetSeed(x.seed)
	for _, f := range fams {
		h.WriteString(f.name)
		h.WriteByte(0xff)
		h.WriteByte(byte(typeSlot(f.typ)))
	}
	return &shape{key: h.Sum64(), fams: fams}
}

// intern returns the shape equal to s that the ledger has, or s, with one more
// reference. Called with x.mu held.
func (x *ledger) intern(s *shape) *shape {
	for _, o := range x.shapes[s.key] {
		if slices.EqualFunc(o.fams, s.fams, func(a, b famMeta) bool { return a.name == b.name && a.typ == b.typ }) {
			o.refs++
			return o
		}
	}
	s.refs = 1
	x.shapes[s.key] = append(x.shapes[s.key], s)
	return s
}

// release drops a reference to s. Called with x.mu held.
func (x *ledger) release(s *shape) {
	s.refs--
	if s.refs > 0 {
		return
	}
	list := x.shapes[s.key]
	if i := slices.Index(list, s); i >= 0 {
		list = slices.Delete(list, i, i+1)
	}
	if len(list) == 0 {
		delete(x.shapes, s.key)
	} else {
		x.shapes[s.key] = list
	}
}

// hold counts s's families as held. Called with x.mu held.
func (x *ledger) hold(s *shape) {
	for _, f := range s.fams {
		e := x.fams[f.name]
		if e == nil {
			e = &entry{help: f.help}
			x.fams[f.name] = e
		}
		e.held[typeSlot(f.typ)]++
	}
}

// unhold undoes hold, forgetting families nobody holds any more. Called with x.mu held.
func (x *ledger) unhold(s *shape) {
	for _, f := range s.fams {
		e := x.fams[f.name]
		if e == nil {
			continue
		}
		e.held[typeSlot(f.typ)]--
		if e.held == [numTypes]int32{} {
			delete(x.fams, f.name)
		}
	}
}

// drop releases what h holds. Called with x.mu held.
func (x *ledger) drop(h *holding) {
	for _, s := range h.shapes {
		x.unhold(s)
		x.release(s)
	}
	h.shapes = nil
}

// exists reports whether the gateway holds the group at path, as far as the ledger knows.
func (x *ledger) exists(path string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	h := x.groups[path]
	return h != nil && len(h.shapes) > 0
}

// reserve checks that the gateway can take fams, the families of a PUT to the group at
// path (name is the grouping, for messages), beside everything else the ledger holds.
// If it can, reserve counts them as held by the group until commit, cancel or unsure,
// so that a concurrent push to another group cannot bring a conflicting family
// meanwhile. helpDiffers names the families whose help differs from another group's:
// accepted, as the gateway accepts them, but worth noting.
func (x *ledger) reserve(path, name string, fams []*dto.MetricFamily) (res *shape, helpDiffers []string, err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	h := x.groups[path]
	push := x.newShape(gatewayView(fams, h))
	for _, f := range push.fams {
		if err := x.check(f, push, h); err != nil {
			return nil, nil, err
		}
		if e := x.fams[f.name]; e != nil && e.help != f.help && x.others(e, f.name, h, anyType) {
			helpDiffers = append(helpDiffers, f.name)
		}
	}
	res = x.intern(push)
	if h == nil {
		h = &holding{name: name}
		x.groups[path] = h
	}
	h.pending = res
	h.own = true
	h.counted = len(h.shapes) != 1 || h.shapes[0] != res
	if h.counted {
		x.hold(res)
	}
	return res, helpDiffers, nil
}

// The help of the families the gateway adds to every group.
const (
	pushTimeHelp        = "Last Unix time when changing this group in the Pushgateway succeeded."
	pushFailureTimeHelp = "Last Unix time when changing this group in the Pushgateway failed."
)

// gatewayView returns the families the group whose holding is h (nil for a new group)
// will hold after a PUT of fams. The gateway sets push_time_seconds itself, and
// push_failure_time_seconds when the group is new; otherwise the group keeps the one
// it had, unless the push brings one (which a scraped Push Gateway's exposition does).
func gatewayView(fams []*dto.MetricFamily, h *holding) []famMeta {
	exists := h != nil && len(h.shapes) > 0
	out := make([]famMeta, 0, len(fams)+2)
	failure := famMeta{name: PushFailureTimeFamily, typ: dto.MetricType_GAUGE, help: pushFailureTimeHelp}
	if exists {
		if f, ok := h.shapes[0].find(PushFailureTimeFamily); ok {
			failure = f
		}
	}
	for _, f := range fams {
		if f == nil || replacedByGateway(f.GetName(), exists) {
			continue
		}
		if f.GetName() == PushFailureTimeFamily {
			failure = famMeta{name: f.GetName(), typ: f.GetType(), help: f.GetHelp()}
			continue
		}
		out = append(out, famMeta{name: f.GetName(), typ: f.GetType(), help: f.GetHelp()})
	}
	return append(out, famMeta{name: PushTimeFamily, typ: dto.MetricType_GAUGE, help: pushTimeHelp}, failure)
}

// replacedByGateway reports whether the gateway replaces a pushed family of the name
// with its own, in a group that exists already or not.
func replacedByGateway(name string, exists bool) bool {
	return name == PushTimeFamily || name == PushFailureTimeFamily && !exists
}

func anyType(dto.MetricType) bool { return true }

// commit records that the gateway took the push reserved as res: it replaced what the
// group held.
func (x *ledger) commit(path string, res *shape) {
	x.mu.Lock()
	defer x.mu.Unlock()
	h := x.groups[path]
	h.pending = nil
	if !h.counted {
		x.release(res)
		return
	}
	x.drop(h)
	h.shapes = append(h.shapes, res)
}

// cancel records that the gateway did not take the push reserved as res.
func (x *ledger) cancel(path string, res *shape) {
	x.mu.Lock()
	defer x.mu.Unlock()
	h := x.groups[path]
	h.pending = nil
	if h.counted {
		x.unhold(res)
	}
	x.release(res)
	if len(h.shapes) == 0 {
		delete(x.groups, path)
	}
}

// unsure records that the gateway may or may not have taken the push reserved as res
// (it failed after it was sent): until a push settles it, the group counts as holding
// both what it held and res.
func (x *ledger) unsure(path string, res *shape) {
	x.mu.Lock()
	defer x.mu.Unlock()
	h := x.groups[path]
	h.pending = nil
	if slices.Contains(h.shapes, res) {
		if h.counted {
			x.unhold(res)
		}
		x.release(res)
		return
	}
	h.shapes = append(h.shapes, res)
}

// forget records that the group at path is gone from the gateway.
func (x *ledger) forget(path string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if h := x.groups[path]; h != nil && h.pending == nil {
		x.drop(h)
		delete(x.groups, path)
	}
}

// learn records that the gateway holds s for the group at path, as a listing showed
// it, unless the ledger knows the group already (from its own pushes, which a listing
// may predate). It takes over the caller's reference to s.
func (x *ledger) learn(path, name string, s *shape) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if h := x.groups[path]; h != nil {
		x.release(s)
		return
	}
	x.hold(s)
	x.groups[path] = &holding{name: name, shapes: []*shape{s}}
}

// internListed interns a shape built from a listing; learn or releaseListed takes
// the reference.
func (x *ledger) internListed(s *shape) *shape {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.intern(s)
}

func (x *ledger) releaseListed(s *shape) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.release(s)
}

// check refuses f, a family of push to the group whose holding is h (nil if new), if
// the gateway could not gather it beside the rest. Called with x.mu held.
func (x *ledger) check(f famMeta, push *shape, h *holding) error {
	if own, ok := ownFamilies[f.name]; ok {
		if own.typ != f.typ {
			return typeConflict(f, own.typ, ownPlace)
		}
		if own.help != "" && own.help != f.help {
			return &InconsistentError{Reason: ReasonHelpConflict, Family: f.name,
				Detail: fmt.Sprintf("has help %q here but %q in %s", f.help, own.help, ownPlace),
				cause:  ReasonHelpConflict + " " + f.name}
		}
	}
	if where, typ, ok := x.locate(f.name, func(t dto.MetricType) bool { return t != f.typ }, nil, h); ok {
		return typeConflict(f, typ, where)
	}
	if base, suffix := summarySuffix(f.name); base != "" {
		shadows := func(t dto.MetricType) bool {
			return t == dto.MetricType_HISTOGRAM || t == dto.MetricType_SUMMARY && suffix != "_bucket"
		}
		if where, typ, ok := x.locate(base, shadows, push, h); ok {
			return &InconsistentError{Reason: ReasonNameCollision, Family: f.name,
				Detail: fmt.Sprintf("collides with the %s samples of the %s %q in %s", suffix, typeName(typ), base, where),
				cause:  ReasonNameCollision + " " + f.name + " " + base}
		}
	}
	if f.typ == dto.MetricType_SUMMARY || f.typ == dto.MetricType_HISTOGRAM {
		suffixes := []string{"_count", "_sum"}
		if f.typ == dto.MetricType_HISTOGRAM {
			suffixes = append(suffixes, "_bucket")
		}
		for _, suffix := range suffixes {
			if where, typ, ok := x.locate(f.name+suffix, anyType, push, h); ok {
				return &InconsistentError{Reason: ReasonNameCollision, Family: f.name,
					Detail: fmt.Sprintf("is a %s whose %s samples collide with the %s %q in %s", typeName(f.typ), suffix, typeName(typ), f.name+suffix, where),
					cause:  ReasonNameCollision + " " + f.name + suffix + " " + f.name}
			}
		}
	}
	return nil
}

func typeConflict(f famMeta, other dto.MetricType, where string) error {
	return &InconsistentError{Reason: ReasonTypeConflict, Family: f.name,
		Detail: fmt.Sprintf("is a %s here but a %s in %s", typeName(f.typ), typeName(other), where),
		cause:  ReasonTypeConflict + " " + f.name + " " + f.typ.String() + " " + other.String()}
}

// summarySuffix splits off a suffix that a summary's or histogram's samples take.
func summarySuffix(name string) (base, suffix string) {
	for _, s := range []string{"_count", "_sum", "_bucket"} {
		if b, ok := strings.CutSuffix(name, s); ok {
			return b, s
		}
	}
	return "", ""
}

// locate finds the family name with a type that match accepts, in push (if not nil),
// in the gateway's own metrics, or in a group other than h's, and says where. Called
// with x.mu held.
func (x *ledger) locate(name string, match func(dto.MetricType) bool, push *shape, h *holding) (where string, typ dto.MetricType, ok bool) {
	if push != nil {
		if f, ok := push.find(name); ok && match(f.typ) {
			return "the same push", f.typ, true
		}
	}
	if own, ok := ownFamilies[name]; ok && match(own.typ) {
		return ownPlace, own.typ, true
	}
	if x.registry && match(dto.MetricType_GAUGE) && registryFamily(name) {
		return registriesPlace, dto.MetricType_GAUGE, true
	}
	e := x.fams[name]
	if e == nil || !x.others(e, name, h, match) {
		return "", 0, false
	}
	for _, o := range x.groups {
		if o == h {
			continue
		}
		for _, s := range o.shapes {
			if f, ok := s.find(name); ok && match(f.typ) {
				return o.name, f.typ, true
			}
		}
		if o.pending != nil {
			if f, ok := o.pending.find(name); ok && match(f.typ) {
				return o.name + " (pushed at this moment)", f.typ, true
			}
		}
	}
	return "another group", 0, true // not reached: the counts say someone holds it
}

// others reports whether a group other than h's holds family e (named name) with a
// type match accepts. Called with x.mu held.
func (x *ledger) others(e *entry, name string, h *holding, match func(dto.MetricType) bool) bool {
	for slot, n := range e.held {
		if n == 0 || !match(dto.MetricType(slot)) {
			continue
		}
		if h != nil {
			for _, s := range h.shapes {
				if f, ok := s.find(name); ok && typeSlot(f.typ) == slot {
					n--
				}
			}
		}
		if n > 0 {
			return true
		}
	}
	return false
}

// checkSeries refuses, within one push to the group g, what the gateway's gather
// refuses series by series. Series are taken as the gateway stores them: the grouping
// labels replace the series' labels of their names or are added, and an empty
// instance label is added where there is none. exists says whether the gateway holds
// the group already, which decides what it replaces (see replacedByGateway). Its cost is one pass over the
// series, hashing each.
func checkSeries(fams []*dto.MetricFamily, g Grouping, seed maphash.Seed, exists bool) error {
	grouping := make([]groupingLabel, 0, len(g)+1)
	for _, l := range g {
		grouping = append(grouping, groupingLabel{Label: l, replaces: true})
	}
	if !slices.ContainsFunc(g, func(l Label) bool { return l.Name == model.InstanceLabel }) {
		grouping = append(grouping, groupingLabel{Label: Label{Name: model.InstanceLabel}})
	}
	slices.SortFunc(grouping, func(a, b groupingLabel) int { return strings.Compare(a.Name, b.Name) })

	n := 0
	for _, f := range fams {
		n += len(f.GetMetric())
	}
	// The gateway hashes each series (name and labels) and refuses a hash seen
	// before: so does the sink, with its own seed.
	seen := make(map[uint64]struct{}, n)
	var h maphash.Hash
	h.SetSeed(seed)
	for _, f := range fams {
		if f == nil || replacedByGateway(f.GetName(), exists) {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := m.GetLabel()
			if !labelsSorted(labels) {
				labels = slices.Clone(labels)
				slices.SortStableFunc(labels, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
			}
			if !hasValueOf(f.GetType(), m) {
				return invalidSeries(f, labels, grouping, "that is not a "+typeName(f.GetType()))
			}
			h.Reset()
			h.WriteString(f.GetName())
			it := labelIter{labels: labels, grouping: grouping}
			prev := ""
			for name, value, ok := it.next(); ok; name, value, ok = it.next() {
				switch {
				case name == prev:
					return invalidSeries(f, labels, grouping, "with two labels named "+strconv.Quote(name))
				case !model.LegacyValidation.IsValidLabelName(name) || strings.HasPrefix(name, model.ReservedLabelPrefix):
					return invalidSeries(f, labels, grouping, "with the invalid label name "+strconv.Quote(name))
				case name == model.QuantileLabel && f.GetType() == dto.MetricType_SUMMARY:
					return invalidSeries(f, labels, grouping, `with a "quantile" label, which a summary's samples take`)
				case !utf8.ValidString(value):
					return invalidSeries(f, labels, grouping, "whose label "+strconv.Quote(name)+" is not UTF-8")
				}
				prev = name
				h.WriteByte(0xff)
				h.WriteString(name)
				h.WriteByte(0xff)
				h.WriteString(value)
			}
			sum := h.Sum64()
			if _, dup := seen[sum]; dup {
				return &InconsistentError{Reason: ReasonDuplicateSeries, Family: f.GetName(),
					Detail: "has the series " + labelString(labels, grouping) + " twice (as the gateway labels it)",
					cause:  ReasonDuplicateSeries + " " + f.GetName()}
			}
			seen[sum] = struct{}{}
		}
	}
	return nil
}

func invalidSeries(f *dto.MetricFamily, labels []*dto.LabelPair, grouping []groupingLabel, what string) error {
	return &InconsistentError{Reason: ReasonInvalidSeries, Family: f.GetName(),
		Detail: "has a series " + labelString(labels, grouping) + " " + what,
		cause:  ReasonInvalidSeries + " " + f.GetName() + " " + what}
}

func labelsSorted(ls []*dto.LabelPair) bool {
	for i := 1; i < len(ls); i++ {
		if ls[i-1].GetName() > ls[i].GetName() {
			return false
		}
	}
	return true
}

// groupingLabel is a label the gateway sets on every series of a group: replacing the
// series' label of its name, or (the empty instance it adds when the grouping has no
// instance) only where the series has none.
type groupingLabel struct {
	Label
	replaces bool
}

// labelIter yields the labels of a series as the gateway stores them, sorted: labels
// (sorted, possibly repeating a name) merged with the grouping labels (sorted), which
// replace the series' first label of their name, or are added.
type labelIter struct {
	labels   []*dto.LabelPair
	grouping []groupingLabel
	i, j     int
}

func (it *labelIter) next() (name, value string, ok bool) {
	switch {
	case it.i == len(it.labels) && it.j == len(it.grouping):
		return "", "", false
	case it.j == len(it.grouping) || it.i < len(it.labels) && it.labels[it.i].GetName() < it.grouping[it.j].Name:
		l := it.labels[it.i]
		it.i++
		return l.GetName(), l.GetValue(), true
	case it.i == len(it.labels) || it.labels[it.i].GetName() > it.grouping[it.j].Name:
		g := it.grouping[it.j]
		it.j++
		return g.Name, g.Value, true
	default:
		l, g := it.labels[it.i], it.grouping[it.j]
		it.i++
		it.j++
		if g.replaces {
			return g.Name, g.Value, true
		}
		return l.GetName(), l.GetValue(), true
	}
}

func labelString(labels []*dto.LabelPair, grouping []groupingLabel) string {
	var b strings.Builder
	b.WriteByte('{')
	it := labelIter{labels: labels, grouping: grouping}
	for name, value, ok := it.next(); ok; name, value, ok = it.next() {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(value))
	}
	b.WriteByte('}')
	return b.String()
}

// hasValueOf reports whether m has the value its family's type calls for, as
// client_golang 1.14's gather checks it (gauge histograms are not checked).
func hasValueOf(t dto.MetricType, m *dto.Metric) bool {
	switch t {
	case dto.MetricType_GAUGE:
		return m.Gauge != nil
	case dto.MetricType_COUNTER:
		return m.Counter != nil
	case dto.MetricType_SUMMARY:
		return m.Summary != nil
	case dto.MetricType_HISTOGRAM:
		return m.Histogram != nil
	case dto.MetricType_UNTYPED:
		return m.Untyped != nil
	}
	return true
}
