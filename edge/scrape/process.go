package scrape

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/model/textparse"

	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// Limits are a job's per-scrape limits, as in Prometheus: exceeding one fails the scrape.
type Limits struct {
	SampleLimit int
	LabelLimit  int
	// ExtraLabels counts the labels the central side adds to every series (job, instance,
	// static labels), which Prometheus's label_limit counts too.
	ExtraLabels int
	// Histograms says which parts of histograms count as samples, as Prometheus
	// counts what it ingests.
	Histograms Histograms
}

// Histograms are a job's scrape_native_histograms, always_scrape_classic_histograms
// and convert_classic_histograms_to_nhcb.
type Histograms struct {
	Native, AlwaysClassic, ConvertToNHCB bool
}

// Relabel is a job's metric_relabel_configs and the labels the target's series will
// carry (job, instance, static labels), which the rules see as Prometheus's do.
type Relabel struct {
	Configs []*relabel.Config
	Target  labels.Labels
}

// Process validates an exposition of the given Content-Type, applies the relabel configs
// and enforces the limits, within ctx. It returns the body to publish, which is body
// itself unless relabelling changed it, and the number of samples.
//
// Both formats are UTF-8 text: a body with a byte that is not is refused whole, wherever
// it stands (name, label, HELP, UNIT, exemplar, comment), since the central side serves
// it again to Prometheus, whose parsers refuse it. The body is then read with
// Prometheus's own streaming parsers (textparse), in time linear in its size, and held
// to what Prometheus's scrape loop accepts (UTF-8 names allowed, none empty, no label
// twice in a series). When ctx ends first, the error wraps ctx's.
func Process(ctx context.Context, body []byte, contentType string, lim Limits, rl Relabel) ([]byte, int, error) {
	mt, err := mediaType(contentType)
	if err != nil {
		return nil, 0, err
	}
	// On the body as served, so that the line and column are the target's; what
	// relabelling writes from a UTF-8 body is UTF-8 too. A protobuf body's strings are
	// checked one by one (validSeries, checkProtoMeta).
	if mt != exposition.ProtoType {
		if err := validUTF8(body); err != nil {
			return nil, 0, err
		}
	}
	if len(rl.Configs) > 0 {
		if body, err = relabelBody(ctx, body, mt, rl); err != nil {
			return nil, 0, err
		}
	}
	st, err := check(ctx, body, mt, lim.Histograms)
	if err != nil {
		return nil, st.samples, err
	}
	if lim.SampleLimit > 0 && st.samples > lim.SampleLimit {
		return nil, st.samples, fmt.Errorf("%w: %d samples, limit %d", ErrSampleLimit, st.samples, lim.SampleLimit)
	}
	if lim.LabelLimit > 0 && st.maxLabels+lim.ExtraLabels > lim.LabelLimit {
		return nil, st.samples, fmt.Errorf("%w: metric %.50s has %d labels, limit %d",
			ErrLabelLimit, st.maxLabelsMetric, st.maxLabels+lim.ExtraLabels, lim.LabelLimit)
	}
	return body, st.samples, nil
}

type stats struct {
	samples         int
	maxLabels       int // including __name__
	maxLabelsMetric string
}

func (s *stats) labels(metric string, n int) {
	if n > s.maxLabels {
		s.maxLabels, s.maxLabelsMetric = n, metric
	}
}

// check reads every entry of body, as Prometheus's scrape loop would, counting samples
// and labels; it stops at the first entry Prometheus would refuse, or when ctx ends.
//
// The parser is the one Prometheus's scrape loop picks for the media type, with the
// job's histogram settings, so that samples are counted as Prometheus counts what it
// ingests: a native histogram is one sample, classic buckets count when they are kept.
func check(ctx context.Context, body []byte, mt string, h Histograms) (stats, error) {
	var st stats
	p, err := textparse.New(body, mt, labels.NewSymbolTable(), textparse.ParserOptions{
		IgnoreNativeHistograms:                  !h.Native,
		ConvertClassicHistogramsToNHCB:          h.ConvertToNHCB,
		KeepClassicOnClassicAndNativeHistograms: h.AlwaysClassic,
		OpenMetricsSkipSTSeries:                 false,
	})
	if p == nil {
		return st, fmt.Errorf("%w: no parser for %q: %v", ErrInvalidBody, mt, err)
	}
	proto := mt == exposition.ProtoType
	var (
		lset  labels.Labels
		ex    exemplar.Exemplar
		types map[string]model.MetricType // protobuf: a family's type, by name
	)
	if proto {
		types = map[string]model.MetricType{}
	}
	for {
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("validate body: stopped after %d samples: %w", st.samples, err)
		}
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			return st, nil
		}
		if err != nil {
			return st, fmt.Errorf("%w: %s", ErrInvalidBody, strings.ToValidUTF8(err.Error(), "\uFFFD"))
		}
		if proto && (e == textparse.EntryHelp || e == textparse.EntryUnit) {
			if err := checkProtoMeta(p, e); err != nil {
				return st, err
			}
		}
		if proto && e == textparse.EntryType {
			// A protobuf body may split a family over messages (the drain joins
			// them); with two types it cannot be one family.
			name, t := p.Type()
			if prev, ok := types[string(name)]; ok && prev != t {
				return st, fmt.Errorf("%w: family %s is both %s and %s", ErrInvalidBody, quote(string(name)), prev, t)
			}
			types[string(name)] = t
		}
		if e != textparse.EntrySeries && e != textparse.EntryHistogram {
			continue
		}
		if e == textparse.EntrySeries && !proto {
			// The common case needs no label set built: most of what the parser's
			// Labels costs.
			series, _, _ := p.Series()
			if name, n, ok := seriesShape(series); ok {
				st.samples++
				if n > st.maxLabels {
					st.labels(string(name), n)
				}
				continue
			}
		}
		if e == textparse.EntryHistogram {
			// Reading it is what makes the protobuf parser go over its classic
			// buckets next, when they are kept.
			p.Histogram()
		}
		p.Labels(&lset)
		if proto {
			if err := validUTF8Labels(lset); err != nil {
				return st, err
			}
			for p.Exemplar(&ex) {
				if err := validUTF8Labels(ex.Labels); err != nil {
					return st, fmt.Errorf("exemplar of %w", err)
				}
			}
		}
		if err := validSeries(lset); err != nil {
			return st, err
		}
		st.samples++
		st.labels(lset.Get(labels.MetricName), lset.Len())
	}
}

// validUTF8 refuses a body that is not UTF-8, naming the first line and byte that are
// not.
func validUTF8(body []byte) error {
	if utf8.Valid(body) {
		return nil
	}
	line, start := 1, 0
	for i := 0; i < len(body); {
		r, n := utf8.DecodeRune(body[i:])
		switch {
		case r == '\n':
			line, start = line+1, i+1
		case r == utf8.RuneError && n == 1:
			end := bytes.IndexByte(body[start:], '\n')
			if end < 0 {
				end = len(body) - start
			}
			return fmt.Errorf("%w: line %d: byte %#x at column %d is not UTF-8: %s", ErrInvalidBody, line, body[i], i-start+1, quote(string(body[start:start+end])))
		}
		i += n
	}
	return nil
}

// validSeries refuses a series Prometheus's scrape loop would: an empty name or label
// name, a label twice.
func validSeries(lset labels.Labels) error {
	if !lset.IsValid(model.UTF8Validation) {
		return fmt.Errorf("%w: series %s: empty metric or label name", ErrInvalidBody, quote(lset.String()))
	}
	if dup, ok := lset.HasDuplicateLabelNames(); ok {
		return fmt.Errorf("%w: series %s: label %s twice", ErrInvalidBody, quote(lset.Get(labels.MetricName)), quote(dup))
	}
	return nil
}

// quote quotes a line or name from a body for a message, with Go escapes for bytes
// that are not UTF-8, and at most its first 100 bytes (a series of 30,000 labels is
// 300 KB).
func quote(s string) string {
	const max = 100
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// relabelBody applies metric_relabel_configs to every sample as Prometheus does: each
// sample on its own name and labels, with the target's labels present (rules may match
// job, instance or a static label). The target's labels are then taken off again, unless
// a rule changed them (the central side adds them to every series), and the survivors
// are written back in the same format.
func relabelBody(ctx context.Context, body []byte, mt string, rl Relabel) ([]byte, error) {
	if mt == exposition.ProtoType {
		return relabelProto(ctx, body, rl)
	}
	st := labels.NewSymbolTable()
	var p textparse.Parser
	om := mt == exposition.OpenMetricsType
	if om {
		p = textparse.NewOpenMetricsParser(body, st)
	} else {
		p = textparse.NewPromParser(body, st, false)
	}
	out := bytes.NewBuffer(make([]byte, 0, len(body)))
	var (
		pending     []byte // metadata lines not yet written: written before the first kept sample
		pendingName string
		lset        labels.Labels
		lb          = labels.NewBuilder(labels.EmptyLabels())
		ex          exemplar.Exemplar
	)
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("relabel body: %w", err)
		}
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidBody, err)
		}
		switch e {
		case textparse.EntryType:
			name, t := p.Type()
			pending, pendingName = resetMeta(pending, pendingName, name)
			pending = appendMeta(pending, "TYPE", name, []byte(typeName(t, om)))
		case textparse.EntryHelp:
			name, help := p.Help()
			pending, pendingName = resetMeta(pending, pendingName, name)
			pending = appendMeta(pending, "HELP", name, []byte(escapeHelp(string(help))))
		case textparse.EntryUnit:
			name, unit := p.Unit()
			pending, pendingName = resetMeta(pending, pendingName, name)
			pending = appendMeta(pending, "UNIT", name, unit)
		case textparse.EntrySeries:
			_, ts, v := p.Series()
			p.Labels(&lset)
			lb.Reset(lset)
			rl.Target.Range(func(l labels.Label) {
				if lb.Get(l.Name) == "" {
					lb.Set(l.Name, l.Value)
				}
			})
			if !relabel.ProcessBuilder(lb, rl.Configs...) {
				continue
			}
			rl.Target.Range(func(l labels.Label) {
				if lb.Get(l.Name) == l.Value && lset.Get(l.Name) != l.Value {
					lb.Del(l.Name)
				}
			})
			out.Write(pending)
			pending = pending[:0]
			writeSeries(out, lb.Labels())
			out.WriteByte(' ')
			out.WriteString(formatFloat(v))
			if ts != nil {
				out.WriteByte(' ')
				out.WriteString(formatTimestamp(*ts, om))
			}
			if om {
				for p.Exemplar(&ex) {
					out.WriteString(" # ")
					writeLabels(out, ex.Labels)
					out.WriteByte(' ')
					out.WriteString(formatFloat(ex.Value))
					if ex.HasTs {
						out.WriteByte(' ')
						out.WriteString(formatTimestamp(ex.Ts, true))
					}
				}
			}
			out.WriteByte('\n')
		case textparse.EntryHistogram:
			return nil, fmt.Errorf("%w: native histograms cannot be relabelled in a text body", ErrInvalidBody)
		}
	}
	if om {
		out.WriteString("# EOF\n")
	}
	return out.Bytes(), nil
}

// resetMeta drops metadata of a family none of whose samples survived relabelling.
func resetMeta(pending []byte, pendingName string, name []byte) ([]byte, string) {
	if string(name) != pendingName {
		return pending[:0], string(name)
	}
	return pending, pendingName
}

func typeName(t model.MetricType, om bool) string {
	if !om && (t == model.MetricTypeUnknown || t == "") {
		return "untyped"
	}
	return string(t)
}

func appendMeta(b []byte, kind string, name, text []byte) []byte {
	b = append(b, "# "...)
	b = append(b, kind...)
	b = append(b, ' ')
	b = appendName(b, string(name))
	b = append(b, ' ')
	b = append(b, text...)
	return append(b, '\n')
}

func appendName(b []byte, name string) []byte {
	if model.LegacyValidation.IsValidMetricName(name) {
		return append(b, name...)
	}
	return strconv.AppendQuote(b, name)
}

func writeSeries(out *bytes.Buffer, lset labels.Labels) {
	name := lset.Get(labels.MetricName)
	legacy := model.LegacyValidation.IsValidMetricName(name)
	if legacy {
		out.WriteString(name)
	}
	if lset.Len() == 1 && legacy {
		return
	}
	out.WriteByte('{')
	first := true
	if !legacy {
		out.WriteString(strconv.Quote(name))
		first = false
	}
	lset.Range(func(l labels.Label) {
		if l.Name == labels.MetricName {
			return
		}
		if !first {
			out.WriteByte(',')
		}
		first = false
		writeLabel(out, l)
	})
	out.WriteByte('}')
}

func writeLabels(out *bytes.Buffer, lset labels.Labels) {
	out.WriteByte('{')
	first := true
	lset.Range(func(l labels.Label) {
		if !first {
			out.WriteByte(',')
		}
		first = false
		writeLabel(out, l)
	})
	out.WriteByte('}')
}

func writeLabel(out *bytes.Buffer, l labels.Label) {
	if model.LegacyValidation.IsValidLabelName(l.Name) {
		out.WriteString(l.Name)
	} else {
		out.WriteString(strconv.Quote(l.Name))
	}
	out.WriteString(`="`)
	out.WriteString(escapeLabelValue(l.Value))
	out.WriteByte('"')
}

func escapeLabelValue(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\', '"', '\n':
			if b == nil {
				b = append(make([]byte, 0, len(s)+4), s[:i]...)
			}
			if c == '\n' {
				b = append(b, `\n`...)
			} else {
				b = append(b, '\\', c)
			}
		default:
			if b != nil {
				b = append(b, c)
			}
		}
	}
	if b == nil {
		return s
	}
	return string(b)
}

func escapeHelp(s string) string {
	var b bytes.Buffer
	for _, c := range []byte(s) {
		switch c {
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, +1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	case math.IsNaN(f):
		return "NaN"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// formatTimestamp writes a millisecond timestamp as the format wants it: milliseconds in
// the text format, seconds in OpenMetrics.
func formatTimestamp(ms int64, om bool) string {
	if !om {
		return strconv.FormatInt(ms, 10)
	}
	return strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64)
}

// validUTF8Labels checks that every label name and value of a series read from a
// protobuf body is UTF-8: protobuf does not check it, and the central side serves the
// strings to Prometheus, whose parsers refuse what is not.
func validUTF8Labels(lset labels.Labels) error {
	var bad string
	lset.Range(func(l labels.Label) {
		if bad == "" && (!utf8.ValidString(l.Name) || !utf8.ValidString(l.Value)) {
			bad = l.Name
		}
	})
	if bad != "" {
		return fmt.Errorf("%w: series %s: label %s is not UTF-8", ErrInvalidBody, quote(lset.Get(labels.MetricName)), quote(bad))
	}
	return nil
}

// checkProtoMeta checks that a protobuf family's help or unit is UTF-8.
func checkProtoMeta(p textparse.Parser, e textparse.Entry) error {
	var name, text []byte
	if e == textparse.EntryHelp {
		name, text = p.Help()
	} else {
		name, text = p.Unit()
	}
	if !utf8.Valid(name) || !utf8.Valid(text) {
		return fmt.Errorf("%w: family %s: name, help or unit is not UTF-8", ErrInvalidBody, quote(string(name)))
	}
	return nil
}
