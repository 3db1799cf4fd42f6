package exposition

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// parseOpenMetrics reads an OpenMetrics 1.0 body with Prometheus's parser and
// assembles its samples into families. expfmt's OpenMetrics decoder is partial
// (no exemplars, _created or units), and Prometheus's parser is the one the edge
// validated the body with.
func parseOpenMetrics(body []byte) ([]*dto.MetricFamily, error) {
	a := newAssembler(textparse.NewOpenMetricsParser(body, labels.NewSymbolTable()), body)
	if err := a.run(); err != nil {
		return nil, err
	}
	return a.families(), nil
}

// role is what a sample contributes to its metric.
type role uint8

const (
	roleValue   role = iota // counter, gauge, unknown, info or stateset value; summary quantile
	roleBucket              // histogram or gauge histogram _bucket
	roleCount               // _count, _gcount
	roleSum                 // _sum, _gsum
	roleCreated             // _created
)

// roleOf tells the role of a sample of a family of type t whose name is the family's
// name followed by suffix, and false if such a sample is no part of such a family.
func roleOf(t model.MetricType, suffix string) (role, bool) {
	switch t {
	case model.MetricTypeCounter:
		switch suffix {
		case "_total", "": // "": counter samples without the suffix, which Prometheus accepts
			return roleValue, true
		case "_created":
			return roleCreated, true
		}
	case model.MetricTypeHistogram:
		switch suffix {
		case "_bucket":
			return roleBucket, true
		case "_count":
			return roleCount, true
		case "_sum":
			return roleSum, true
		case "_created":
			return roleCreated, true
		}
	case model.MetricTypeGaugeHistogram:
		switch suffix {
		case "_bucket":
			return roleBucket, true
		case "_gcount":
			return roleCount, true
		case "_gsum":
			return roleSum, true
		}
	case model.MetricTypeSummary:
		switch suffix {
		case "":
			return roleValue, true
		case "_count":
			return roleCount, true
		case "_sum":
			return roleSum, true
		case "_created":
			return roleCreated, true
		}
	case model.MetricTypeInfo:
		switch suffix {
		case "_info", "":
			return roleValue, true
		}
	default: // gauge, stateset, unknown
		if suffix == "" {
			return roleValue, true
		}
	}
	return 0, false
}

// dtoType maps an OpenMetrics type to the client_model type its family gets.
func dtoType(t model.MetricType) dto.MetricType {
	switch t {
	case model.MetricTypeCounter:
		return dto.MetricType_COUNTER
	case model.MetricTypeGauge, model.MetricTypeInfo, model.MetricTypeStateset:
		return dto.MetricType_GAUGE
	case model.MetricTypeHistogram:
		return dto.MetricType_HISTOGRAM
	case model.MetricTypeGaugeHistogram:
		return dto.MetricType_GAUGE_HISTOGRAM
	case model.MetricTypeSummary:
		return dto.MetricType_SUMMARY
	}
	return dto.MetricType_UNTYPED
}

// omFamily is the OpenMetrics family being read: its metadata, and the client_model
// family its samples go to once the first one has named it.
type omFamily struct {
	name       string
	typ        model.MetricType
	help, unit *string
	fb         *familyBuilder
}

// familyBuilder is a client_model family under construction.
type familyBuilder struct {
	mf *dto.MetricFamily
	// byKey finds the metric of a label set (without the name and le or quantile)
	// in families whose metrics have several samples: counters (_total, _created),
	// histograms and summaries. Like expfmt's text parser, it does not require the
	// samples of a metric to be adjacent. A counter family builds it only at its first
	// sample that may add to an earlier metric (a _created one): until then each
	// sample is a metric of its own, and most counters never have one.
	byKey   map[string]*dto.Metric
	indexed bool // byKey holds every metric of mf
}

// newAssembler returns an assembler of what p reads of body. Its family map and its
// slabs of metrics and values are sized from body's lines (counted, not parsed) rather
// than grown: comment lines are about two a family (HELP and TYPE), the others a
// sample each.
func newAssembler(p textparse.Parser, body []byte) *omAssembler {
	comments := bytes.Count(body, []byte{'#'})
	samples := max(bytes.Count(body, []byte{'\n'})-comments, 0)
	n := min(comments/2, 1<<12)
	a := &omAssembler{p: p, order: make([]*familyBuilder, 0, n)}
	a.metrics.expect(samples)
	a.floats.expect(samples)
	return a
}

// slab hands out zeroed values from chunks it allocates many at a time: a parse makes
// a handful of small objects per sample, and allocating them one by one dominated
// its cost. A chunk lives as long as any value from it; all belong to one parse
// result. Chunks grow from 16 to 1024 values so that a small body stays small.
type slab[T any] struct {
	free []T
	size int // of the last chunk
}

func (s *slab[T]) new() *T {
	if len(s.free) == 0 {
		s.size = min(max(2*s.size, 16), 1024)
		s.free = make([]T, s.size)
	}
	p := &s.free[0]
	s.free = s.free[1:]
	return p
}

// expect sizes the first chunk for n values (at most 1024).
func (s *slab[T]) expect(n int) {
	if s.size == 0 {
		s.size = min(n, 1024) / 2
	}
}

// grow returns s with room for at least one more element: a slice of a chunk of n
// elements shared with other slices, each with its own part of the chunk (so appends
// to one never reach another's). Like slab, it makes few allocations for many small
// slices that grow.
type chunk[T any] struct{ free []T }

func (c *chunk[T]) grow(s []T, n int) []T {
	want := max(2*cap(s), 4)
	if want > n/4 {
		return slices.Grow(s, 1) // a large slice: its own allocation
	}
	if len(c.free) < want {
		c.free = make([]T, n)
	}
	out := append(c.free[:0:want], s...)
	c.free = c.free[want:]
	return out
}

// take returns an empty slice of capacity n from the chunk, with the same guarantee.
func (c *chunk[T]) take(n, size int) []T {
	if n > size/4 {
		return make([]T, 0, n)
	}
	if len(c.free) < n {
		c.free = make([]T, size)
	}
	out := c.free[:0:n]
	c.free = c.free[n:]
	return out
}

// allocs are the slabs of one parse.
type allocs struct {
	builders slab[familyBuilder]
	mfs      slab[dto.MetricFamily]
	types    slab[dto.MetricType]
	labels   chunk[*dto.LabelPair]
	list     chunk[*dto.Metric]
	pairs    slab[dto.LabelPair]
	strings  slab[string]
	floats   slab[float64]
	metrics  slab[dto.Metric]
	gauges   slab[dto.Gauge]
	counters slab[dto.Counter]
	untyped  slab[dto.Untyped]
}

func (al *allocs) pair(name, value string) *dto.LabelPair {
	p := al.pairs.new()
	p.Name, p.Value = al.string(name), al.string(value)
	return p
}

func (al *allocs) string(s string) *string {
	p := al.strings.new()
	*p = s
	return p
}

func (al *allocs) float(v float64) *float64 {
	p := al.floats.new()
	*p = v
	return p
}

type omAssembler struct {
	allocs
	p    textparse.Parser
	line int // lines read; every OpenMetrics entry is one line
	// fams finds a family by name. It is made only once a family's name is not
	// greater than the last one's: while the names come sorted (as in most
	// expositions), a name is new if it is greater than the last, with no map.
	fams map[string]*familyBuilder
	// order is the families in the order they came: sorted by name already in most
	// expositions, which then need no sorting.
	order []*familyBuilder
	cur   omFamily

	lset labels.Labels
	ex   exemplar.Exemplar
	key  []byte
}

func (a *omAssembler) run() error {
	for {
		e, err := a.p.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		a.line++
		if err != nil {
			return fmt.Errorf("%w: line %d: %w", ErrInvalid, a.line, err)
		}
		switch e {
		case textparse.EntryType:
			name, t := a.p.Type()
			a.meta(name).typ = t
		case textparse.EntryHelp:
			name, help := a.p.Help()
			a.meta(name).help = a.string(string(help))
		case textparse.EntryUnit:
			name, unit := a.p.Unit()
			m := a.meta(name)
			m.unit = nil
			if len(unit) > 0 {
				m.unit = a.string(string(unit))
			}
		case textparse.EntrySeries:
			if err := a.sample(); err != nil {
				return fmt.Errorf("%w: line %d: %w", ErrInvalid, a.line, err)
			}
		case textparse.EntryHistogram:
			// The OpenMetrics 1.0 parser has no native histograms; guard anyway.
			return fmt.Errorf("%w: line %d: unexpected native histogram", ErrInvalid, a.line)
		}
	}
}

// meta returns the family a metadata line is about, starting a new one unless the
// line is about the family whose metadata is being read.
func (a *omAssembler) meta(name []byte) *omFamily {
	if a.cur.fb != nil || a.cur.name != string(name) {
		a.cur = omFamily{name: string(name), typ: model.MetricTypeUnknown}
	}
	return &a.cur
}

func (a *omAssembler) sample() error {
	_, ts, v := a.p.Series()
	a.p.Labels(&a.lset)
	name := a.lset.Get(labels.MetricName)

	c := &a.cur
	r, ok := role(0), false
	if c.name != "" && strings.HasPrefix(name, c.name) {
		r, ok = roleOf(c.typ, name[len(c.name):])
	}
	if !ok {
		// A sample outside the family whose metadata came last: a family of its own
		// without metadata, as the text format reads a line without a TYPE.
		a.cur = omFamily{name: name, typ: model.MetricTypeUnknown}
		r = roleValue
	}
	if c.fb == nil {
		if err := a.resolve(name); err != nil {
			return err
		}
	}
	fb := c.fb
	switch fb.mf.GetType() {
	case dto.MetricType_COUNTER:
		return a.counterSample(fb, r, ts, v)
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return a.histogramSample(fb, r, ts, v)
	case dto.MetricType_SUMMARY:
		return a.summarySample(fb, r, ts, v)
	case dto.MetricType_GAUGE:
		m, err := a.newMetric(fb, "", ts)
		if err != nil {
			return err
		}
		m.Gauge = a.gauges.new()
		m.Gauge.Value = a.float(v)
	default:
		m, err := a.newMetric(fb, "", ts)
		if err != nil {
			return err
		}
		m.Untyped = a.untyped.new()
		m.Untyped.Value = a.float(v)
	}
	return nil
}

// resolve finds or creates the client_model family of the current OpenMetrics family
// at its first sample, whose name decides the family name of counters and infos (see
// the package documentation).
func (a *omAssembler) resolve(sampleName string) error {
	c := &a.cur
	name := c.name
	switch c.typ {
	case model.MetricTypeCounter:
		if sampleName != c.name {
			name = c.name + "_total"
		}
	case model.MetricTypeInfo:
		if sampleName != c.name {
			name = c.name + "_info"
		}
	}
	t := dtoType(c.typ)
	fb := a.family(name)
	if fb == nil {
		fb = a.builders.new()
		fb.mf = a.mfs.new()
		typ := a.types.new()
		*typ = t
		fb.mf.Name, fb.mf.Type, fb.mf.Help, fb.mf.Unit = a.string(name), typ, c.help, c.unit
		if a.fams != nil {
			a.fams[name] = fb
		}
		a.order = append(a.order, fb)
		c.fb = fb
		return nil
	}
	// The same family again, split or repeated: Prometheus would store it, so merge;
	// a family of another type of the same name cannot be represented.
	if fb.mf.GetType() != t {
		return fmt.Errorf("family %q of type %s: a family of that name was already read as %s",
			name, strings.ToLower(t.String()), strings.ToLower(fb.mf.GetType().String()))
	}
	if fb.mf.Help == nil {
		fb.mf.Help = c.help
	}
	if fb.mf.Unit == nil {
		fb.mf.Unit = c.unit
	}
	c.fb = fb
	return nil
}

// family returns the family of name read so far, or nil.
func (a *omAssembler) family(name string) *familyBuilder {
	if a.fams == nil {
		n := len(a.order)
		if n == 0 || a.order[n-1].mf.GetName() < name {
			return nil // sorted so far, and greater than every name so far
		}
		a.fams = make(map[string]*familyBuilder, 2*n)
		for _, fb := range a.order {
			a.fams[fb.mf.GetName()] = fb
		}
	}
	return a.fams[name]
}

func (a *omAssembler) counterSample(fb *familyBuilder, r role, ts *int64, v float64) error {
	var (
		m   *dto.Metric
		err error
	)
	if r == roleValue && !fb.indexed {
		// Every metric so far has its value: this sample's is a new one.
		m, err = a.newMetric(fb, "", ts)
		if err == nil {
			m.Counter = a.counters.new()
		}
	} else {
		var taken func(*dto.Metric) bool
		if r == roleValue {
			taken = func(m *dto.Metric) bool { return m.Counter.Value != nil }
		}
		m, err = a.metric(fb, "", ts, r == roleValue, taken)
	}
	if err != nil {
		return err
	}
	if m.Counter == nil {
		m.Counter = a.counters.new()
	}
	switch r {
	case roleValue:
		m.Counter.Value = a.float(v)
		if e := a.exemplar(); e != nil {
			m.Counter.Exemplar = e
		}
	case roleCreated:
		m.Counter.CreatedTimestamp = created(v)
	}
	return nil
}

func (a *omAssembler) histogramSample(fb *familyBuilder, r role, ts *int64, v float64) error {
	m, err := a.metric(fb, model.BucketLabel, ts, r != roleCreated, nil)
	if err != nil {
		return err
	}
	if m.Histogram == nil {
		m.Histogram = &dto.Histogram{}
	}
	h := m.Histogram
	switch r {
	case roleBucket:
		ub, ok, err := a.boundLabel(fb, model.BucketLabel)
		if !ok || err != nil {
			return err // as expfmt, a bucket line without le is ignored
		}
		b := &dto.Bucket{UpperBound: proto.Float64(ub)}
		if u, ok := asCount(v); ok {
			b.CumulativeCount = proto.Uint64(u)
		} else {
			b.CumulativeCountFloat = proto.Float64(v)
		}
		b.Exemplar = a.exemplar()
		h.Bucket = append(h.Bucket, b)
	case roleCount:
		if u, ok := asCount(v); ok {
			h.SampleCount, h.SampleCountFloat = proto.Uint64(u), nil
		} else {
			h.SampleCount, h.SampleCountFloat = nil, proto.Float64(v)
		}
	case roleSum:
		h.SampleSum = proto.Float64(v)
	case roleCreated:
		h.CreatedTimestamp = created(v)
	}
	return nil
}

// boundLabel is the number in the sample's label name (le or quantile); ok is false
// when the sample has no such label.
func (a *omAssembler) boundLabel(fb *familyBuilder, name string) (v float64, ok bool, err error) {
	s, ok := a.lset.Get(name), a.lset.Has(name)
	if !ok {
		return 0, false, nil
	}
	v, err = strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, true, fmt.Errorf("%s: %s=%q is not a number", fb.mf.GetName(), name, s)
	}
	return v, true, nil
}

func (a *omAssembler) summarySample(fb *familyBuilder, r role, ts *int64, v float64) error {
	m, err := a.metric(fb, model.QuantileLabel, ts, r != roleCreated, nil)
	if err != nil {
		return err
	}
	if m.Summary == nil {
		m.Summary = &dto.Summary{}
	}
	s := m.Summary
	switch r {
	case roleValue:
		q, ok, err := a.boundLabel(fb, model.QuantileLabel)
		if !ok || err != nil {
			return err // as expfmt, a summary line without quantile is ignored
		}
		s.Quantile = append(s.Quantile, &dto.Quantile{Quantile: proto.Float64(q), Value: proto.Float64(v)})
	case roleCount:
		s.SampleCount = proto.Uint64(uint64(v)) // as expfmt's text parser does
	case roleSum:
		s.SampleSum = proto.Float64(v)
	case roleCreated:
		s.CreatedTimestamp = created(v)
	}
	return nil
}

// metric returns the metric of the current sample's label set (without skip) in a
// family whose metrics have several samples, creating it if there is none or if
// taken says the existing one already has what this sample brings: a repeated
// series then becomes a metric of its own, as expfmt's text parser keeps duplicates.
// stamp says whether the sample's timestamp is the metric's (a _created sample's is
// not).
func (a *omAssembler) metric(fb *familyBuilder, skip string, ts *int64, stamp bool, taken func(*dto.Metric) bool) (*dto.Metric, error) {
	if !fb.indexed {
		// The metrics made before the index: a counter's, by their labels, which are
		// the label sets they were made from without the name (newMetric). The
		// latest of a label set is the one its key finds, as when indexed at once.
		fb.indexed = true
		fb.byKey = make(map[string]*dto.Metric, len(fb.mf.Metric))
		for _, m := range fb.mf.Metric {
			a.key = a.key[:0]
			for _, p := range m.Label {
				a.key = appendKey(a.key, p.GetName(), p.GetValue())
			}
			fb.byKey[string(a.key)] = m
		}
	}
	a.key = a.key[:0]
	a.lset.Range(func(l labels.Label) {
		if l.Name == labels.MetricName || l.Name == skip {
			return
		}
		a.key = appendKey(a.key, l.Name, l.Value)
	})
	m := fb.byKey[string(a.key)]
	if m == nil || (taken != nil && taken(m)) {
		var err error
		if m, err = a.newMetric(fb, skip, nil); err != nil {
			return nil, err
		}
		fb.byKey[string(a.key)] = m
	}
	if stamp && ts != nil && m.TimestampMs == nil {
		m.TimestampMs = proto.Int64(*ts)
	}
	return m, nil
}

// appendKey appends a label to a key of byKey.
func appendKey(key []byte, name, value string) []byte {
	key = append(key, name...)
	key = append(key, 0xff)
	key = append(key, value...)
	return append(key, 0xff)
}

// newMetric appends a metric with the current sample's labels, except the name and
// skip, to the family.
func (a *omAssembler) newMetric(fb *familyBuilder, skip string, ts *int64) (*dto.Metric, error) {
	m := a.metrics.new()
	if n := a.lset.Len() - 1; n > 0 {
		m.Label = a.labels.take(n, 1024)
	}
	var err error
	a.lset.Range(func(l labels.Label) {
		if l.Name == labels.MetricName || l.Name == skip {
			return
		}
		// The parser sorts labels, so a repeated name is adjacent. The text format
		// refuses one (expfmt), and Prometheus would refuse the series.
		if k := len(m.Label); k > 0 && m.Label[k-1].GetName() == l.Name && err == nil {
			err = fmt.Errorf("%s: duplicate label name %q", fb.mf.GetName(), l.Name)
		}
		m.Label = append(m.Label, a.pair(l.Name, l.Value))
	})
	if err != nil {
		return nil, err
	}
	if ts != nil {
		m.TimestampMs = proto.Int64(*ts)
	}
	if len(fb.mf.Metric) == cap(fb.mf.Metric) {
		fb.mf.Metric = a.list.grow(fb.mf.Metric, 1024)
	}
	fb.mf.Metric = append(fb.mf.Metric, m)
	return m, nil
}

// exemplar returns the current sample's exemplar, or nil.
func (a *omAssembler) exemplar() *dto.Exemplar {
	if !a.p.Exemplar(&a.ex) {
		return nil
	}
	e := &dto.Exemplar{Value: proto.Float64(a.ex.Value)}
	if n := a.ex.Labels.Len(); n > 0 {
		e.Label = make([]*dto.LabelPair, 0, n)
	}
	a.ex.Labels.Range(func(l labels.Label) {
		e.Label = append(e.Label, &dto.LabelPair{Name: proto.String(l.Name), Value: proto.String(l.Value)})
	})
	if a.ex.HasTs {
		e.Timestamp = timestamppb.New(time.UnixMilli(a.ex.Ts))
	}
	return e
}

// families finishes the families: it drops metrics that got no value (a _created
// sample alone) and families left without metrics, as expfmt drops families without
// samples, and sorts them by name.
func (a *omAssembler) families() []*dto.MetricFamily {
	fams := make([]*dto.MetricFamily, 0, len(a.order))
	for _, fb := range a.order {
		ms := fb.mf.Metric[:0]
		for _, m := range fb.mf.Metric {
			if hasValue(fb.mf.GetType(), m) {
				if m.Histogram != nil {
					normalizeHistogram(m.Histogram)
				}
				ms = append(ms, m)
			}
		}
		clear(fb.mf.Metric[len(ms):])
		fb.mf.Metric = ms
		if len(ms) > 0 {
			fams = append(fams, fb.mf)
		}
	}
	sortFamilies(fams)
	return fams
}

func hasValue(t dto.MetricType, m *dto.Metric) bool {
	switch t {
	case dto.MetricType_COUNTER:
		return m.Counter.Value != nil
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		h := m.Histogram
		return h.SampleCount != nil || h.SampleCountFloat != nil || h.SampleSum != nil || len(h.Bucket) > 0
	case dto.MetricType_SUMMARY:
		s := m.Summary
		return s.SampleCount != nil || s.SampleSum != nil || len(s.Quantile) > 0
	}
	return true
}

// asCount returns v as an integer count if it is one, as expfmt's text parser stores
// histogram counts: integers where they are, floats otherwise. Unlike expfmt it keeps
// a negative count (as a float) rather than failing: the edge's OpenMetrics
// validation accepted it, and Prometheus would store it.
func asCount(v float64) (uint64, bool) {
	if v < 0 || v >= 1<<64 || v != math.Trunc(v) {
		return 0, false
	}
	return uint64(v), true
}

// normalizeHistogram makes a histogram's counts all integers or all floats, as
// expfmt's text parser does (its function is unexported).
func normalizeHistogram(h *dto.Histogram) {
	anyFloats := h.SampleCountFloat != nil
	for _, b := range h.Bucket {
		anyFloats = anyFloats || b.CumulativeCountFloat != nil
	}
	if !anyFloats {
		return
	}
	if h.SampleCount != nil {
		h.SampleCountFloat, h.SampleCount = proto.Float64(float64(h.GetSampleCount())), nil
	}
	for _, b := range h.Bucket {
		if b.CumulativeCount != nil {
			b.CumulativeCountFloat, b.CumulativeCount = proto.Float64(float64(b.GetCumulativeCount())), nil
		}
	}
}

// created turns the value of a _created sample (Unix seconds) into a timestamp, or nil
// if it is not a usable time.
func created(v float64) *timestamppb.Timestamp {
	// The range of a protobuf Timestamp: years 1 to 9999.
	if !(v >= -62135596800 && v < 253402300800) {
		return nil
	}
	sec, frac := math.Modf(v)
	return timestamppb.New(time.Unix(int64(sec), int64(math.Round(frac*1e9))))
}
