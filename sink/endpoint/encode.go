package endpoint

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// encoder is the scratch space of one delivery's encoding. Sinks pool them: a delivery
// encodes a thousand series or so, and the buffers are worth keeping between them.
type encoder struct {
	text, om, pb bytes.Buffer
	spans        []span
	// fam, metrics and ptrs are the family handed to expfmt: the delivered family with
	// its metrics copied where they need a timestamp, as the Scrape is read-only.
	fam     dto.MetricFamily
	metrics []dto.Metric
	ptrs    []*dto.Metric
	ts      int64
}

// span locates one family's encodings in the encoder's buffers.
type span struct {
	text, om, pb [2]int // [start, end) of the sample lines, or of the protobuf metrics
	omState      int8
	pbState      int8
	escape       bool
}

// OpenMetrics (and protobuf) states of a span.
const (
	omLater       int8 = iota // encode when first asked for
	omEncoded                 // span.om holds it
	omUnavailable             // the family cannot be written in OpenMetrics
)

// errNoMetrics: a family without metrics has nothing to serve, and expfmt's text
// encoder refuses it.
var errNoMetrics = errors.New("family has no metrics")

// encode returns one block per family of src, in the same order, holding the text
// format's sample lines; if openMetrics or the family carries exemplars, the
// OpenMetrics ones; and if protobuf or the family carries what the text format
// cannot give back (native histograms, exemplars, created timestamps), its metrics
// in protobuf. All the bytes of the blocks are in one allocation per format: a
// snapshot lives for a scrape interval, and a thousand small slices would cost the
// collector more than one large one. With stamp, samples without a timestamp get
// start's.
func (e *encoder) encode(src []*dto.MetricFamily, stamp bool, start time.Time, openMetrics, protobuf bool) ([]block, error) {
	e.text.Reset()
	e.om.Reset()
	e.pb.Reset()
	e.spans = e.spans[:0]
	e.ts = start.UnixMilli()
	defer e.forget()
	for _, mf := range src {
		f := e.family(mf, stamp)
		var sp span
		var err error
		if sp.text, err = encodeSamples(&e.text, f, expfmt.TypeTextPlain); err != nil {
			return nil, fmt.Errorf("family %q: %w", mf.GetName(), err)
		}
		if openMetrics || hasExemplars(mf) {
			sp.omState = omEncoded
			if sp.om, err = encodeSamples(&e.om, f, expfmt.TypeOpenMetrics); err != nil {
				// The text format can carry what OpenMetrics 1.0 cannot (float
				// histograms): serve the family in text only.
				sp.omState = omUnavailable
			}
		}
		if protobuf || needsProtobuf(mf) {
			sp.pbState = omEncoded
			if sp.pb, err = encodeSamples(&e.pb, f, expfmt.TypeProtoDelim); err != nil {
				// Not expected of a family expfmt could write as text; should it
				// happen, the family is left out of protobuf responses only.
				sp.pbState = omUnavailable
			}
		}
		sp.escape = labelsNeedEscaping(mf)
		e.spans = append(e.spans, sp)
	}

	blocks := make([]block, len(e.spans))
	text := pack(e.text.Bytes(), len(e.spans), func(i int) ([2]int, bool) { return e.spans[i].text, true })
	om := pack(e.om.Bytes(), len(e.spans), func(i int) ([2]int, bool) { return e.spans[i].om, e.spans[i].omState == omEncoded })
	var pb [][]byte
	if e.pb.Len() > 0 {
		pb = pack(e.pb.Bytes(), len(e.spans), func(i int) ([2]int, bool) { return e.spans[i].pb, e.spans[i].pbState == omEncoded })
	}
	for i, sp := range e.spans {
		b := &blocks[i]
		b.text = text[i]
		switch sp.pbState {
		case omEncoded:
			if pb != nil {
				b.pb = pb[i]
			}
			if b.pb == nil {
				b.pb = []byte{} // encoded, and empty: pack leaves a nil for that
			}
		case omUnavailable:
			b.pb = []byte{}
		}
		switch sp.omState {
		case omEncoded:
			b.om = om[i]
		case omUnavailable:
			b.om = []byte{}
		}
		b.escape = sp.escape
	}
	return blocks, nil
}

// pack copies the spans of buf that span(i) returns for i < n (when it says ok) into
// one allocation, leaving out the TYPE lines between them, and returns their copies:
// capacity-limited, so that no append can reach the next one. The others are nil.
func pack(buf []byte, n int, span func(i int) ([2]int, bool)) [][]byte {
	out := make([][]byte, n)
	size := 0
	for i := range n {
		if sp, ok := span(i); ok {
			size += sp[1] - sp[0]
		}
	}
	if size == 0 {
		return out
	}
	store := make([]byte, 0, size)
	for i := range n {
		if sp, ok := span(i); ok {
			start := len(store)
			store = append(store, buf[sp[0]:sp[1]]...)
			out[i] = store[start:len(store):len(store)]
		}
	}
	return out
}

// forget drops the encoder's references to the delivered scrape, which must not
// outlive the delivery in the pool.
func (e *encoder) forget() {
	clear(e.metrics)
	clear(e.ptrs)
	e.fam.Name, e.fam.Type, e.fam.Metric = nil, nil, nil
}

// family returns mf as it is to be encoded: without HELP and UNIT, which the endpoint
// writes once per family name, and with stamp, every metric without a timestamp
// copied with the scrape's.
func (e *encoder) family(mf *dto.MetricFamily, stamp bool) *dto.MetricFamily {
	f := &e.fam
	f.Name, f.Type, f.Help, f.Unit = mf.Name, mf.Type, nil, nil
	if !stamp {
		f.Metric = mf.Metric
		return f
	}
	n := len(mf.Metric)
	if cap(e.metrics) < n {
		e.metrics = make([]dto.Metric, max(n, 2*cap(e.metrics)))
		e.ptrs = make([]*dto.Metric, len(e.metrics))
	}
	ms, ps := e.metrics[:n], e.ptrs[:n]
	for i, m := range mf.Metric {
		if m.TimestampMs != nil {
			ps[i] = m
			continue
		}
		c := &ms[i]
		c.Label, c.Gauge, c.Counter, c.Summary, c.Untyped, c.Histogram = m.Label, m.Gauge, m.Counter, m.Summary, m.Untyped, m.Histogram
		c.TimestampMs = &e.ts
		ps[i] = c
	}
	f.Metric = ps
	return f
}

// encodeSamples appends f, which has no HELP or UNIT, to buf in the given format with
// expfmt's encoder, and returns where its sample lines are: all it wrote but the TYPE
// line. In protobuf it appends the family's metric fields alone, which a request
// concatenates after the family's header fields into one MetricFamily message. On
// error buf is as it was.
func encodeSamples(buf *bytes.Buffer, f *dto.MetricFamily, format expfmt.FormatType) ([2]int, error) {
	start := buf.Len()
	if format == expfmt.TypeProtoDelim {
		out, err := appendMetrics(buf.AvailableBuffer(), f.Metric)
		if err != nil {
			return [2]int{}, err
		}
		buf.Write(out)
		return [2]int{start, buf.Len()}, nil
	}
	var err error
	if format == expfmt.TypeOpenMetrics {
		_, err = expfmt.MetricFamilyToOpenMetrics(buf, f)
	} else {
		_, err = expfmt.MetricFamilyToText(buf, f)
	}
	if err != nil {
		buf.Truncate(start)
		return [2]int{}, err
	}
	// The TYPE line ends at the first newline: a name is quoted and escaped by then.
	nl := bytes.IndexByte(buf.Bytes()[start:], '\n')
	return [2]int{start + nl + 1, buf.Len()}, nil
}

// metricField is the field number of MetricFamily.metric in client_model's
// metrics.proto.
const metricField protowire.Number = 4

// appendMetrics appends ms to b as MetricFamily.metric fields.
func appendMetrics(b []byte, ms []*dto.Metric) ([]byte, error) {
	opts := proto.MarshalOptions{UseCachedSize: true}
	for _, m := range ms {
		b = protowire.AppendTag(b, metricField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(proto.Size(m)))
		var err error
		if b, err = opts.MarshalAppend(b, m); err != nil {
			return b, fmt.Errorf("marshal metric: %w", err)
		}
	}
	return b, nil
}

// needsProtobuf reports whether mf carries what the protobuf format serves and the
// text format cannot give back, so that its protobuf encoding must be made from it
// at delivery: native histograms, exemplars, created timestamps.
func needsProtobuf(mf *dto.MetricFamily) bool {
	for _, m := range mf.GetMetric() {
		if m.GetCounter().GetCreatedTimestamp() != nil || m.GetSummary().GetCreatedTimestamp() != nil {
			return true
		}
		// A native histogram and its own exemplars: only protobuf carries them.
		if h := m.GetHistogram(); h != nil && (h.CreatedTimestamp != nil || exposition.IsNative(h) || len(h.Exemplars) > 0) {
			return true
		}
	}
	return hasExemplars(mf)
}

// hasExemplars reports whether mf carries exemplars OpenMetrics serves (a counter's, a
// bucket's), which the text encoding therefore cannot give back.
func hasExemplars(mf *dto.MetricFamily) bool {
	for _, m := range mf.GetMetric() {
		if m.GetCounter().GetExemplar() != nil {
			return true
		}
		for _, b := range m.GetHistogram().GetBucket() {
			if b.GetExemplar() != nil {
				return true
			}
		}
	}
	return false
}

// labelsNeedEscaping reports whether some label name of mf would change under a name
// escaping scheme, by the test model.EscapeMetricFamily applies.
func labelsNeedEscaping(mf *dto.MetricFamily) bool {
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if !model.IsValidLegacyMetricName(l.GetName()) {
				return true
			}
		}
	}
	return false
}

// newFamily registers mf's name, type, HELP and UNIT, with the header lines expfmt
// writes for them. It copies what it keeps: nothing of the delivered scrape may stay
// referenced.
func newFamily(mf *dto.MetricFamily, by string) (*family, error) {
	f := &family{
		name: strings.Clone(mf.GetName()),
		typ:  mf.GetType(),
		by:   strings.Clone(by),
	}
	f.escape = !model.IsValidLegacyMetricName(f.name)
	if mf.Help != nil {
		h := strings.Clone(mf.GetHelp())
		f.help = &h
	}
	if mf.Unit != nil {
		u := strings.Clone(mf.GetUnit())
		f.unit = &u
	}
	if len(mf.GetMetric()) == 0 {
		return nil, errNoMetrics
	}
	var err error
	if f.textHeader, f.omHeader, err = headers(&dto.MetricFamily{Name: &f.name, Help: f.help, Type: mf.Type, Unit: f.unit, Metric: mf.Metric[:1]}); err != nil {
		return nil, err
	}
	f.textType = f.textHeader[len(f.textHeader)-typeLineLen(f.textHeader):]
	if f.pbHeader, err = proto.Marshal(&dto.MetricFamily{Name: &f.name, Help: f.help, Type: mf.Type, Unit: f.unit}); err != nil {
		return nil, fmt.Errorf("marshal family %q: %w", f.name, err)
	}
	return f, nil
}

// headers returns the HELP, TYPE (and, in OpenMetrics, UNIT) lines expfmt writes for
// mf, which has one metric: the text encoder refuses a family without.
func headers(mf *dto.MetricFamily) (text, om []byte, err error) {
	var b bytes.Buffer
	if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
		return nil, nil, err
	}
	n := 1
	if mf.Help != nil {
		n++
	}
	text = bytes.Clone(b.Bytes()[:lineEnd(b.Bytes(), n)])
	b.Reset()
	meta := &dto.MetricFamily{Name: mf.Name, Help: mf.Help, Type: mf.Type, Unit: mf.Unit}
	if _, err := expfmt.MetricFamilyToOpenMetrics(&b, meta); err != nil {
		return nil, nil, err
	}
	return text, bytes.Clone(b.Bytes()), nil
}

// lineEnd returns the offset just past the n-th newline of b, or len(b).
func lineEnd(b []byte, n int) int {
	off := 0
	for range n {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			return len(b)
		}
		off += i + 1
	}
	return off
}

// typeLineLen returns the length of the last line of a text header, its TYPE line.
func typeLineLen(h []byte) int {
	return len(h) - (bytes.LastIndexByte(h[:len(h)-1], '\n') + 1)
}

// reparse reads a block's text encoding back into a family of f, for the encodings made
// from it: escaped names, and OpenMetrics on demand.
func reparse(f *family, text []byte) (*dto.MetricFamily, error) {
	doc := make([]byte, 0, len(f.textType)+len(text))
	doc = append(append(doc, f.textType...), text...)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(doc))
	if err != nil {
		return nil, fmt.Errorf("reparse family %q: %w", f.name, err)
	}
	mf := fams[f.name]
	if mf == nil || len(fams) != 1 {
		return nil, fmt.Errorf("reparse family %q: got %d families", f.name, len(fams))
	}
	// The text format writes a gauge histogram as a histogram.
	mf.Type = f.typ.Enum()
	return mf, nil
}

// reencode encodes a block of f with its names escaped by scheme, for a request that
// asked for it, and returns the family's header lines and the block's sample lines.
// Exemplars, which the text encoding does not keep, are not in it.
func reencode(f *family, text []byte, format expfmt.FormatType, scheme model.EscapingScheme) (header, samples []byte, err error) {
	mf, err := reparse(f, text)
	if err != nil {
		return nil, nil, err
	}
	mf.Help, mf.Unit = f.help, f.unit
	esc := model.EscapeMetricFamily(mf, scheme)
	var b bytes.Buffer
	n := 1
	if esc.Help != nil {
		n++
	}
	if format == expfmt.TypeOpenMetrics {
		if esc.Unit != nil {
			n++
		}
		_, err = expfmt.MetricFamilyToOpenMetrics(&b, esc)
	} else {
		_, err = expfmt.MetricFamilyToText(&b, esc)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("encode family %q escaped: %w", f.name, err)
	}
	out := b.Bytes()
	end := lineEnd(out, n)
	return out[:end], out[end:], nil
}

// lines counts the sample lines of an encoding: the series it serves.
func lines(b []byte) int { return bytes.Count(b, []byte{'\n'}) }
