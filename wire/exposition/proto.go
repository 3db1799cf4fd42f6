package exposition

import (
	"fmt"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// ProtoType is the media type of Prometheus's protobuf format: delimited
// io.prometheus.client.MetricFamily messages.
const ProtoType = "application/vnd.google.protobuf"

// Histograms are a scrape's histogram settings, with the meaning of Prometheus's
// scrape config keys of these names: what is taken of a histogram that a protobuf body
// holds both as a native histogram and with classic buckets.
type Histograms struct {
	// Native is scrape_native_histograms: without it, a histogram's native parts
	// are dropped and its classic buckets kept (only count and sum if it has none,
	// as Prometheus ingests it).
	Native bool
	// AlwaysClassic is always_scrape_classic_histograms: with Native, a histogram
	// that has both keeps its classic buckets too; otherwise only the native parts.
	AlwaysClassic bool
	// ConvertToNHCB is convert_classic_histograms_to_nhcb: a classic histogram (one
	// without native parts, after the above) is marked as one with custom buckets,
	// schema -53, its bounds and counts its classic buckets'. Sinks that store
	// native histograms (remote-write 2.0) store it so; the expositions, which have no
	// field for custom bounds, serve it as the classic histogram it is.
	ConvertToNHCB bool
}

// customBucketsSchema is the schema of native histograms with custom buckets.
const customBucketsSchema = -53

// ParseScrape is Parse with a scrape's histogram settings applied: Native and
// AlwaysClassic to what a protobuf body holds (text and OpenMetrics bodies hold no
// native histograms), ConvertToNHCB to the classic histograms of every format.
func ParseScrape(body []byte, contentType string, h Histograms) ([]*dto.MetricFamily, error) {
	mt, err := mediaType(contentType)
	if err != nil {
		return nil, err
	}
	var fams []*dto.MetricFamily
	switch mt {
	case OpenMetricsType:
		fams, err = parseOpenMetrics(body)
	case ProtoType:
		fams, err = parseProto(body, h)
	default:
		fams, err = parseText(body)
	}
	if err == nil && h.ConvertToNHCB {
		markCustomBuckets(fams)
	}
	return fams, err
}

// markCustomBuckets marks every classic histogram with buckets as one with custom
// buckets (see Histograms.ConvertToNHCB).
func markCustomBuckets(fams []*dto.MetricFamily) {
	for _, mf := range fams {
		if t := mf.GetType(); t != dto.MetricType_HISTOGRAM && t != dto.MetricType_GAUGE_HISTOGRAM {
			continue
		}
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil && !IsNative(h) && len(h.GetBucket()) > 0 {
				h.Schema = proto.Int32(customBucketsSchema)
			}
		}
	}
}

// EachDelimited calls fn with each MetricFamily message of a body in Prometheus's
// delimited protobuf format, in order, each unmarshalled where it stands in the body (no
// copy); it stops at fn's first error. A message whose declared length exceeds what is
// left of the body is refused before anything is allocated for it.
func EachDelimited(body []byte, fn func(*dto.MetricFamily) error) error {
	for i, rest := 1, body; len(rest) > 0; i++ {
		n, k := protowire.ConsumeVarint(rest)
		if k < 0 {
			return fmt.Errorf("%w: protobuf: family %d: length: %v", ErrInvalid, i, protowire.ParseError(k))
		}
		rest = rest[k:]
		if n > uint64(len(rest)) {
			return fmt.Errorf("%w: protobuf: family %d: %d bytes declared, %d left", ErrInvalid, i, n, len(rest))
		}
		mf := &dto.MetricFamily{}
		if err := proto.Unmarshal(rest[:n], mf); err != nil {
			return fmt.Errorf("%w: protobuf: family %d: %v", ErrInvalid, i, err)
		}
		rest = rest[n:]
		if err := fn(mf); err != nil {
			return err
		}
	}
	return nil
}

// parseProto reads delimited MetricFamily messages, then holds them to what the text
// formats' families promise: sorted by name, labels sorted, histograms as h says.
func parseProto(body []byte, h Histograms) ([]*dto.MetricFamily, error) {
	var fams []*dto.MetricFamily
	err := EachDelimited(body, func(mf *dto.MetricFamily) error {
		if mf.GetName() == "" {
			return fmt.Errorf("%w: protobuf: family %d has no name", ErrInvalid, len(fams)+1)
		}
		for _, m := range mf.GetMetric() {
			sortLabels(m.Label)
			if hist := m.GetHistogram(); hist != nil {
				takeHistogram(hist, h)
			}
		}
		if len(mf.GetMetric()) > 0 { // a family without metrics says nothing
			fams = append(fams, mf)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sortFamilies(fams)
	return mergeFamilies(fams)
}

// mergeFamilies joins the families of one name, which a protobuf body may split over
// several messages (the text formats cannot); a name with two types is invalid.
func mergeFamilies(fams []*dto.MetricFamily) ([]*dto.MetricFamily, error) {
	out := fams[:0]
	for _, mf := range fams {
		if n := len(out); n > 0 && out[n-1].GetName() == mf.GetName() {
			prev := out[n-1]
			if prev.GetType() != mf.GetType() {
				return nil, fmt.Errorf("%w: protobuf: family %q is both %v and %v", ErrInvalid, mf.GetName(), prev.GetType(), mf.GetType())
			}
			prev.Metric = append(prev.Metric, mf.Metric...)
			continue
		}
		out = append(out, mf)
	}
	return out, nil
}

// IsNative reports whether a histogram has native parts, as Prometheus's protobuf
// parser decides it.
func IsNative(h *dto.Histogram) bool {
	return len(h.GetPositiveSpan()) > 0 || len(h.GetNegativeSpan()) > 0 || h.GetZeroThreshold() > 0 || h.GetZeroCount() > 0
}

// takeHistogram keeps of h what a Prometheus with these settings ingests.
func takeHistogram(h *dto.Histogram, s Histograms) {
	if !IsNative(h) {
		return
	}
	if !s.Native {
		h.Schema, h.ZeroThreshold, h.ZeroCount, h.ZeroCountFloat = nil, nil, nil, nil
		h.PositiveSpan, h.PositiveDelta, h.PositiveCount = nil, nil, nil
		h.NegativeSpan, h.NegativeDelta, h.NegativeCount = nil, nil, nil
		h.Exemplars = nil // the native histogram's
		return
	}
	if !s.AlwaysClassic && len(h.Bucket) > 0 {
		// A native histogram without exemplars of its own takes the timestamped
		// exemplars of the buckets it drops, as Prometheus's protobuf parser does.
		if len(h.Exemplars) == 0 {
			for _, b := range h.Bucket {
				if e := b.GetExemplar(); e != nil && e.GetTimestamp() != nil {
					h.Exemplars = append(h.Exemplars, e)
				}
			}
		}
		h.Bucket = nil
	}
}
