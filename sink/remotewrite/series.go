package remotewrite

import (
	"cmp"
	"encoding/binary"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/util/convertnhcb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// staleNaN is Prometheus's staleness marker: a sample with this value ends a series.
var staleNaN = math.Float64frombits(value.StaleNaN)

// series is one sample of one series, as a remote-write request carries it: a float
// value, or a native histogram (h or fh) in its place.
type series struct {
	labels []prompb.Label // sorted by name, __name__ included
	t      int64          // milliseconds
	v      float64
	h      *histogram.Histogram
	fh     *histogram.FloatHistogram
	// st is the start (created) timestamp of a counter, histogram or summary sample in
	// milliseconds, 0 when unknown: remote-write 2.0 carries it, 1.0 has no room for it.
	st        int64
	exemplars []exemplar
	meta      int32 // index into the scrape's metas; -1 for none
	// stamped: the target gave this sample its own timestamp. As in Prometheus's scrape
	// loop, such series get no staleness marker when they disappear.
	stamped bool
}

// kind is what a series' samples are: its staleness marker is of the same kind, as
// Prometheus's TSDB writes it (StaleNaN as the value, or as a histogram's sum).
func (s *series) kind() sampleKind {
	switch {
	case s.h != nil:
		return kindHistogram
	case s.fh != nil:
		return kindFloatHistogram
	}
	return kindFloat
}

type sampleKind uint8

const (
	kindFloat sampleKind = iota
	kindHistogram
	kindFloatHistogram
)

// exemplar is one exemplar of a series.
type exemplar struct {
	labels []prompb.Label // sorted by name
	v      float64
	t      int64 // milliseconds
}

// meta is a family's metadata.
type meta struct {
	name, help, unit string
	typ              model.MetricType
}

// flatten turns families into samples, the way Prometheus's scrape loop stores an
// exposition: a classic histogram becomes its _bucket (le), _sum and _count series, a
// summary its quantile, _sum and _count series, a native histogram one histogram sample
// (next to its classic series when the family has both). A histogram with custom buckets
// (schema -53, its bounds the classic buckets' upper bounds) is one histogram sample
// when nhcb is set (remote-write 2.0 carries it; with keepClassic its classic series
// too) and its classic series otherwise, as Prometheus's convert_nhcb_to_classic writes
// it to 1.0. A sample without a timestamp of
// its own gets ts; counters, histograms and summaries carry their created timestamp, and
// counters and histogram buckets their exemplars, but none at or before seen (the
// target's previous scrape, which wrote them; 0: none seen).
func flatten(out []series, metas []meta, fams []*dto.MetricFamily, ts, seen int64, nhcb, keepClassic bool) ([]series, []meta) {
	var ar arena
	for _, mf := range fams {
		name := mf.GetName()
		mi := int32(len(metas))
		metas = append(metas, meta{name: name, help: mf.GetHelp(), unit: mf.GetUnit(), typ: metricType(mf.GetType())})
		for _, m := range mf.Metric {
			t, stamped := ts, false
			if m.TimestampMs != nil {
				t, stamped = m.GetTimestampMs(), true
			}
			var st int64
			add := func(suffix string, v float64, ex []*dto.Exemplar, extra ...string) *series {
				out = append(out, series{labels: ar.labels(name+suffix, m.Label, extra...), t: t, v: v, st: st, exemplars: exemplarsOf(ex, t, seen), meta: mi, stamped: stamped})
				return &out[len(out)-1]
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				c := m.GetCounter()
				st = millis(c.GetCreatedTimestamp())
				add("", c.GetValue(), exemplarOf(c.GetExemplar()))
			case dto.MetricType_GAUGE:
				add("", m.GetGauge().GetValue(), nil)
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				st = millis(s.GetCreatedTimestamp())
				for _, q := range s.GetQuantile() {
					add("", q.GetValue(), nil, model.QuantileLabel, formatFloat(q.GetQuantile()))
				}
				add("_sum", s.GetSampleSum(), nil)
				add("_count", float64(s.GetSampleCount()), nil)
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				h := m.GetHistogram()
				st = millis(h.GetCreatedTimestamp())
				gauge := mf.GetType() == dto.MetricType_GAUGE_HISTOGRAM
				nh, nfh := nativeHistogram(h, gauge)
				custom := nh != nil && nh.Schema == histogram.CustomBucketsSchema || nfh != nil && nfh.Schema == histogram.CustomBucketsSchema
				switch {
				case nh == nil && nfh == nil:
					addClassic(h, gauge, add)
				case custom && !nhcb:
					addCustomAsClassic(h, nh, nfh, gauge, add)
				default:
					ex := h.GetExemplars()
					if custom || len(h.GetBucket()) == 0 {
						// No classic series to carry the buckets' exemplars: the
						// histogram does, as Prometheus's scrape loop attaches them.
						for _, b := range h.GetBucket() {
							ex = append(ex, b.GetExemplar())
						}
					}
					s := add("", 0, ex)
					s.h, s.fh = nh, nfh
					if (!custom || keepClassic) && len(h.GetBucket()) > 0 {
						// A histogram converted to custom buckets keeps its classic
						// series too with always_scrape_classic_histograms, as in
						// Prometheus.
						addClassic(h, gauge, add)
					}
				}
			default: // untyped, and whatever a future parser adds
				add("", m.GetUntyped().GetValue(), nil)
			}
		}
	}
	return out, metas
}

type adder func(suffix string, v float64, ex []*dto.Exemplar, extra ...string) *series

// addClassic adds a histogram's classic series: _bucket (le), _sum and _count.
func addClassic(h *dto.Histogram, gauge bool, add adder) {
	count := float64(h.GetSampleCount())
	if h.SampleCountFloat != nil {
		count = h.GetSampleCountFloat()
	}
	inf := false
	for _, b := range h.GetBucket() {
		c := float64(b.GetCumulativeCount())
		if b.CumulativeCountFloat != nil {
			c = b.GetCumulativeCountFloat()
		}
		inf = inf || math.IsInf(b.GetUpperBound(), 1)
		add("_bucket", c, exemplarOf(b.GetExemplar()), model.BucketLabel, formatFloat(b.GetUpperBound()))
	}
	if !inf {
		add("_bucket", count, nil, model.BucketLabel, "+Inf")
	}
	sum, cnt := "_sum", "_count"
	if gauge {
		sum, cnt = "_gsum", "_gcount" // as OpenMetrics names them
	}
	add(sum, h.GetSampleSum(), nil)
	add(cnt, count, nil)
}

// addCustomAsClassic adds the classic series of a histogram with custom buckets, from
// its native form (which holds the counts even when the classic buckets hold only the
// bounds), with Prometheus's own conversion.
func addCustomAsClassic(h *dto.Histogram, nh *histogram.Histogram, nfh *histogram.FloatHistogram, gauge bool, add adder) {
	var counts []float64
	var count, sum float64
	var err error
	if nh != nil {
		counts, count, sum, err = histogram.ClassicBucketCounts(nh, nil)
	} else {
		counts, count, sum, err = histogram.ClassicBucketCounts(nfh, nil)
	}
	if err != nil {
		addClassic(h, gauge, add) // what the target wrote, as it wrote it
		return
	}
	var cv []float64
	if nh != nil {
		cv = nh.CustomValues
	} else {
		cv = nfh.CustomValues
	}
	exemplars := map[float64]*dto.Exemplar{}
	for _, b := range h.GetBucket() {
		exemplars[b.GetUpperBound()] = b.GetExemplar()
	}
	for i, c := range counts {
		le := math.Inf(1)
		if i < len(cv) {
			le = cv[i]
		}
		add("_bucket", c, exemplarOf(exemplars[le]), model.BucketLabel, formatFloat(le))
	}
	suffix := [2]string{"_sum", "_count"}
	if gauge {
		suffix = [2]string{"_gsum", "_gcount"}
	}
	add(suffix[0], sum, nil)
	add(suffix[1], count, nil)
}

// nativeHistogram is h's native histogram, integer or float, or neither when h is a
// classic histogram only. It tells a native histogram from a classic one as
// Prometheus's protobuf parser does. A histogram with custom buckets (schema -53) takes
// its bounds from the classic buckets' finite upper bounds, and its counts from its
// spans when it has them, from the classic buckets otherwise. One that does not hold
// together (spans and buckets disagree, counts do not add up), which a receiver would
// refuse with the whole request, is left out: its classic series, if any, remain.
func nativeHistogram(h *dto.Histogram, gauge bool) (*histogram.Histogram, *histogram.FloatHistogram) {
	hint := histogram.UnknownCounterReset
	if gauge {
		hint = histogram.GaugeType
	}
	custom := h.Schema != nil && h.GetSchema() == histogram.CustomBucketsSchema
	if custom && len(h.GetPositiveSpan()) == 0 {
		return customFromClassic(h, hint)
	}
	if !custom && !exposition.IsNative(h) {
		return nil, nil
	}
	var cv []float64
	if custom {
		for _, b := range h.GetBucket() {
			if !math.IsInf(b.GetUpperBound(), 1) {
				cv = append(cv, b.GetUpperBound())
			}
		}
	}
	if h.GetSampleCountFloat() > 0 || h.GetZeroCountFloat() > 0 || len(h.GetPositiveCount()) > 0 || len(h.GetNegativeCount()) > 0 {
		fh := &histogram.FloatHistogram{
			CounterResetHint: hint,
			Schema:           h.GetSchema(),
			ZeroThreshold:    h.GetZeroThreshold(),
			ZeroCount:        h.GetZeroCountFloat(),
			Count:            h.GetSampleCountFloat(),
			Sum:              h.GetSampleSum(),
			PositiveSpans:    spansOf(h.GetPositiveSpan()),
			PositiveBuckets:  h.GetPositiveCount(),
			NegativeSpans:    spansOf(h.GetNegativeSpan()),
			NegativeBuckets:  h.GetNegativeCount(),
			CustomValues:     cv,
		}
		if fh.Validate() != nil {
			return nil, nil
		}
		return nil, fh
	}
	nh := &histogram.Histogram{
		CounterResetHint: hint,
		Schema:           h.GetSchema(),
		ZeroThreshold:    h.GetZeroThreshold(),
		ZeroCount:        h.GetZeroCount(),
		Count:            h.GetSampleCount(),
		Sum:              h.GetSampleSum(),
		PositiveSpans:    spansOf(h.GetPositiveSpan()),
		PositiveBuckets:  h.GetPositiveDelta(),
		NegativeSpans:    spansOf(h.GetNegativeSpan()),
		NegativeBuckets:  h.GetNegativeDelta(),
		CustomValues:     cv,
	}
	if nh.Validate() != nil {
		return nil, nil
	}
	return nh, nil
}

// customFromClassic builds a histogram with custom buckets from classic buckets, with
// the conversion Prometheus's scrape loop uses (convert_classic_histograms_to_nhcb).
func customFromClassic(h *dto.Histogram, hint histogram.CounterResetHint) (*histogram.Histogram, *histogram.FloatHistogram) {
	th := convertnhcb.NewTempHistogram()
	for _, b := range h.GetBucket() {
		c := float64(b.GetCumulativeCount())
		if b.CumulativeCountFloat != nil {
			c = b.GetCumulativeCountFloat()
		}
		_ = th.SetBucketCount(b.GetUpperBound(), c)
	}
	count := float64(h.GetSampleCount())
	if h.SampleCountFloat != nil {
		count = h.GetSampleCountFloat()
	}
	_ = th.SetCount(count)
	_ = th.SetSum(h.GetSampleSum())
	nh, nfh, err := th.Convert()
	if err != nil {
		return nil, nil // not a valid histogram: its classic series, as written
	}
	if nh != nil {
		nh.CounterResetHint = hint
	}
	if nfh != nil {
		nfh.CounterResetHint = hint
	}
	return nh, nfh
}

func spansOf(ss []*dto.BucketSpan) []histogram.Span {
	if len(ss) == 0 {
		return nil
	}
	out := make([]histogram.Span, len(ss))
	for i, s := range ss {
		out[i] = histogram.Span{Offset: s.GetOffset(), Length: s.GetLength()}
	}
	return out
}

// exemplarOf is e as a sample's exemplars: nil, allocating nothing, when there is none
// (most buckets).
func exemplarOf(e *dto.Exemplar) []*dto.Exemplar {
	if e == nil {
		return nil
	}
	return []*dto.Exemplar{e}
}

// exemplarsOf converts a sample's exemplars, but those at or before seen, which the
// target's previous scrape wrote; one without a timestamp gets the sample's.
func exemplarsOf(ex []*dto.Exemplar, t, seen int64) []exemplar {
	var out []exemplar
	for _, e := range ex {
		if e == nil {
			continue
		}
		et := t
		if e.Timestamp != nil {
			et = e.GetTimestamp().AsTime().UnixMilli()
		}
		if seen > 0 && et <= seen {
			continue
		}
		ls := make([]prompb.Label, 0, len(e.GetLabel()))
		for _, p := range e.GetLabel() {
			ls = append(ls, prompb.Label{Name: p.GetName(), Value: p.GetValue()})
		}
		slices.SortFunc(ls, compareLabel)
		out = append(out, exemplar{labels: ls, v: e.GetValue(), t: et})
	}
	slices.SortStableFunc(out, func(a, b exemplar) int { return cmp.Compare(a.t, b.t) })
	return out
}

// millis is a created timestamp in milliseconds, 0 when absent.
func millis(ts *timestamppb.Timestamp) int64 {
	if ts == nil {
		return 0
	}
	return ts.AsTime().UnixMilli()
}

// arena hands out the label sets of one scrape's series from a few large blocks rather
// than one allocation each: they live and die together, with the request that carries
// them (and, while its series are tracked for staleness, with the target).
type arena struct{ free []prompb.Label }

// arenaFirst is how many labels an arena's first block holds; each next block holds
// twice as many as the last, up to arenaMax: a scrape of a few series wastes little, a
// large one takes few blocks.
const (
	arenaFirst = 64
	arenaMax   = 8192
)

// labels builds a series' sorted label set: __name__, the metric's labels (job,
// instance and the static ones attached) and extra name-value pairs (le, quantile).
func (a *arena) labels(name string, pairs []*dto.LabelPair, extra ...string) []prompb.Label {
	n := 1 + len(pairs) + len(extra)/2
	if cap(a.free)-len(a.free) < n {
		a.free = make([]prompb.Label, 0, max(n, min(2*cap(a.free), arenaMax), arenaFirst))
	}
	// The set's room is cut off at n: appending to one set never writes into the next.
	ls := a.free[len(a.free) : len(a.free) : len(a.free)+n]
	a.free = a.free[:len(a.free)+n]
	ls = append(ls, prompb.Label{Name: model.MetricNameLabel, Value: name})
	for _, p := range pairs {
		if p.GetValue() != "" { // an empty label is no label, in Prometheus
			ls = append(ls, prompb.Label{Name: p.GetName(), Value: p.GetValue()})
		}
	}
	for i := 0; i+1 < len(extra); i += 2 {
		ls = append(ls, prompb.Label{Name: extra[i], Value: extra[i+1]})
	}
	if !slices.IsSortedFunc(ls, compareLabel) {
		slices.SortFunc(ls, compareLabel)
	}
	return ls
}

func compareLabel(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) }

// formatFloat writes a bucket bound or quantile as Prometheus 3's scrape loop stores it:
// in OpenMetrics' canonical form, where a whole number has ".0" (le="1" is stored as
// le="1.0"), so that queries find the series under the same labels either way.
func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	case math.IsNaN(f):
		return "NaN"
	}
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if f == math.Trunc(f) && !strings.ContainsAny(s, "e.") {
		s += ".0"
	}
	return s
}

func metricType(t dto.MetricType) model.MetricType {
	switch t {
	case dto.MetricType_COUNTER:
		return model.MetricTypeCounter
	case dto.MetricType_GAUGE:
		return model.MetricTypeGauge
	case dto.MetricType_HISTOGRAM:
		return model.MetricTypeHistogram
	case dto.MetricType_GAUGE_HISTOGRAM:
		return model.MetricTypeGaugeHistogram
	case dto.MetricType_SUMMARY:
		return model.MetricTypeSummary
	default:
		return model.MetricTypeUnknown
	}
}

// hashLabels identifies a label set within this process: the hash of its names and
// values, each ended by 0xff, written into *buf (kept for the next call).
func hashLabels(buf *[]byte, ls []prompb.Label) uint64 {
	b := (*buf)[:0]
	for _, l := range ls {
		b = append(b, l.Name...)
		b = append(b, 0xff)
		b = append(b, l.Value...)
		b = append(b, 0xff)
	}
	*buf = b
	return xxhash.Sum64(b)
}

// ended is a series to end with a staleness marker: its labels, and the type and unit
// it was written with, which a receiver may hold as part of its identity (Prometheus 3
// with type-and-unit-labels makes them __type__ and __unit__ labels).
type ended struct {
	labels []prompb.Label
	typ    model.MetricType
	unit   string
	kind   sampleKind
}

// Each label appendTracked writes starts with one of these.
const (
	labelSame  byte = iota // the previous series' label at this place, name and value
	labelValue             // the previous series' name at this place, a new value
	labelNew               // a name and a value of its own
)

// appendTracked encodes a series compactly, after prev, the series written before it
// (nil for the first): a label count; each label as the previous series' label at the
// same place, or its name with a value, or a name and a value, strings with their
// lengths; then its type and unit, then the kind of its samples. Series in the order
// of their exposition share most labels with the one before (job, instance, the family
// name), so a set takes about half the bytes, and compresses in half the time.
func appendTracked(b []byte, prev, ls []prompb.Label, m meta, k sampleKind) []byte {
	b = binary.AppendUvarint(b, uint64(len(ls)))
	for i, l := range ls {
		switch {
		case i < len(prev) && prev[i].Name == l.Name && prev[i].Value == l.Value:
			b = append(b, labelSame)
		case i < len(prev) && prev[i].Name == l.Name:
			b = append(b, labelValue)
			b = appendString(b, l.Value)
		default:
			b = append(b, labelNew)
			b = appendString(b, l.Name)
			b = appendString(b, l.Value)
		}
	}
	b = appendString(b, string(m.typ))
	b = appendString(b, m.unit)
	return append(b, byte(k))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// readTracked decodes what appendTracked wrote after prev, returning the rest of b.
func readTracked(b []byte, prev []prompb.Label) (ended, []byte, bool) {
	n, b, ok := readUvarint(b)
	if !ok || n > uint64(len(b)) {
		return ended{}, nil, false
	}
	e := ended{labels: make([]prompb.Label, n)}
	for i := range e.labels {
		if len(b) == 0 {
			return ended{}, nil, false
		}
		how := b[0]
		b = b[1:]
		var l prompb.Label
		switch {
		case how == labelSame && i < len(prev):
			l = prev[i]
		case how == labelValue && i < len(prev):
			l.Name = prev[i].Name
			if l.Value, b, ok = readString(b); !ok {
				return ended{}, nil, false
			}
		case how == labelNew:
			if l.Name, b, ok = readString(b); !ok {
				return ended{}, nil, false
			}
			if l.Value, b, ok = readString(b); !ok {
				return ended{}, nil, false
			}
		default:
			return ended{}, nil, false
		}
		e.labels[i] = l
	}
	var typ string
	if typ, b, ok = readString(b); !ok {
		return ended{}, nil, false
	}
	e.typ = model.MetricType(typ)
	if e.unit, b, ok = readString(b); !ok || len(b) == 0 {
		return ended{}, nil, false
	}
	e.kind, b = sampleKind(b[0]), b[1:]
	return e, b, true
}

func readUvarint(b []byte) (uint64, []byte, bool) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, false
	}
	return v, b[n:], true
}

func readString(b []byte) (string, []byte, bool) {
	n, b, ok := readUvarint(b)
	if !ok || n > uint64(len(b)) {
		return "", nil, false
	}
	return string(b[:n]), b[n:], true
}
