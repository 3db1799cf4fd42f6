package remotewrite

import (
	"encoding/binary"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
)

// staleNaN is Prometheus's staleness marker: a sample with this value ends a series.
var staleNaN = math.Float64frombits(value.StaleNaN)

// series is one sample of one series, as a remote-write request carries it.
type series struct {
	labels []prompb.Label // sorted by name, __name__ included
	t      int64          // milliseconds
	v      float64
	meta   int32 // index into the scrape's metas; -1 for none
	// stamped: the target gave this sample its own timestamp. As in Prometheus's scrape
	// loop, such series get no staleness marker when they disappear.
	stamped bool
}

// meta is a family's metadata.
type meta struct {
	name, help, unit string
	typ              model.MetricType
}

// flatten turns families into samples, the way Prometheus's scrape loop stores an
// exposition: a histogram becomes its _bucket (le), _sum and _count series, a summary its
// quantile, _sum and _count series. A sample without a timestamp of its own gets ts.
func flatten(out []series, metas []meta, fams []*dto.MetricFamily, ts int64) ([]series, []meta) {
	for _, mf := range fams {
		name := mf.GetName()
		mi := int32(len(metas))
		metas = append(metas, meta{name: name, help: mf.GetHelp(), unit: mf.GetUnit(), typ: metricType(mf.GetType())})
		for _, m := range mf.Metric {
			t, stamped := ts, false
			if m.TimestampMs != nil {
				t, stamped = m.GetTimestampMs(), true
			}
			add := func(suffix string, v float64, extra ...string) {
				out = append(out, series{labels: labelsOf(name+suffix, m.Label, extra...), t: t, v: v, meta: mi, stamped: stamped})
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				add("", m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add("", m.GetGauge().GetValue())
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				for _, q := range s.GetQuantile() {
					add("", q.GetValue(), model.QuantileLabel, formatFloat(q.GetQuantile()))
				}
				add("_sum", s.GetSampleSum())
				add("_count", float64(s.GetSampleCount()))
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				h := m.GetHistogram()
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
					add("_bucket", c, model.BucketLabel, formatFloat(b.GetUpperBound()))
				}
				if !inf {
					add("_bucket", count, model.BucketLabel, "+Inf")
				}
				sum, cnt := "_sum", "_count"
				if mf.GetType() == dto.MetricType_GAUGE_HISTOGRAM {
					sum, cnt = "_gsum", "_gcount" // as OpenMetrics names them
				}
				add(sum, h.GetSampleSum())
				add(cnt, count)
			default: // untyped, and whatever a future parser adds
				add("", m.GetUntyped().GetValue())
			}
		}
	}
	return out, metas
}

// labelsOf builds a series' sorted label set: __name__, the metric's labels (job,
// instance and the static ones attached) and extra name-value pairs (le, quantile).
func labelsOf(name string, pairs []*dto.LabelPair, extra ...string) []prompb.Label {
	ls := make([]prompb.Label, 0, 1+len(pairs)+len(extra)/2)
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

// hashLabels identifies a label set within this process.
func hashLabels(d *xxhash.Digest, ls []prompb.Label) uint64 {
	d.Reset()
	for _, l := range ls {
		_, _ = d.WriteString(l.Name)
		_, _ = d.Write(sep)
		_, _ = d.WriteString(l.Value)
		_, _ = d.Write(sep)
	}
	return d.Sum64()
}

var sep = []byte{0xff}

// ended is a series to end with a staleness marker: its labels, and the type and unit
// it was written with, which a receiver may hold as part of its identity (Prometheus 3
// with type-and-unit-labels makes them __type__ and __unit__ labels).
type ended struct {
	labels []prompb.Label
	typ    model.MetricType
	unit   string
}

// appendTracked encodes a series compactly: a label count, each name and value with its
// length, then its type and unit.
func appendTracked(b []byte, ls []prompb.Label, m meta) []byte {
	b = binary.AppendUvarint(b, uint64(len(ls)))
	for _, l := range ls {
		b = appendString(b, l.Name)
		b = appendString(b, l.Value)
	}
	b = appendString(b, string(m.typ))
	return appendString(b, m.unit)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// readTracked decodes what appendTracked wrote, returning the rest of b.
func readTracked(b []byte) (ended, []byte, bool) {
	n, b, ok := readUvarint(b)
	if !ok || n > uint64(len(b)) {
		return ended{}, nil, false
	}
	e := ended{labels: make([]prompb.Label, n)}
	for i := range e.labels {
		var name, val string
		if name, b, ok = readString(b); !ok {
			return ended{}, nil, false
		}
		if val, b, ok = readString(b); !ok {
			return ended{}, nil, false
		}
		e.labels[i] = prompb.Label{Name: name, Value: val}
	}
	var typ string
	if typ, b, ok = readString(b); !ok {
		return ended{}, nil, false
	}
	e.typ = model.MetricType(typ)
	if e.unit, b, ok = readString(b); !ok {
		return ended{}, nil, false
	}
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
