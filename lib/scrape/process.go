package scrape

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/model/textparse"
)

// Limits are a job's per-scrape limits, as in Prometheus: exceeding one fails the scrape.
type Limits struct {
	SampleLimit int
	LabelLimit  int
	// ExtraLabels counts the labels the central side adds to every series (job, instance,
	// static labels), which Prometheus's label_limit counts too.
	ExtraLabels int
}

// Relabel is a job's metric_relabel_configs and the labels the target's series will
// carry (job, instance, static labels), which the rules see as Prometheus's do.
type Relabel struct {
	Configs []*relabel.Config
	Target  labels.Labels
}

// Process validates an exposition of the given Content-Type, applies the relabel configs
// and enforces the limits. It returns the body to publish, which is body itself unless
// relabelling changed it, and the number of samples. Each media type is read with a
// parser that fully supports it: expfmt for the text format, Prometheus's own textparse
// for OpenMetrics (exemplars, _created series, units).
func Process(body []byte, contentType string, lim Limits, rl Relabel) ([]byte, int, error) {
	mt, err := mediaType(contentType)
	if err != nil {
		return nil, 0, err
	}
	if len(rl.Configs) > 0 {
		if body, err = relabelBody(body, mt, rl); err != nil {
			return nil, 0, err
		}
	}
	var st stats
	if mt == OpenMetricsType {
		st, err = checkOpenMetrics(body)
	} else {
		st, err = checkText(body)
	}
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

func checkText(body []byte) (stats, error) {
	var st stats
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return st, fmt.Errorf("%w: %v", ErrInvalidBody, err)
	}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			st.samples += samplesOf(f.GetType(), m)
			st.labels(name, len(m.GetLabel())+1)
		}
	}
	return st, nil
}

// samplesOf counts the samples a metric stands for, as its text-format lines.
func samplesOf(t dto.MetricType, m *dto.Metric) int {
	switch t {
	case dto.MetricType_SUMMARY:
		return len(m.GetSummary().GetQuantile()) + 2
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		b := m.GetHistogram().GetBucket()
		n := len(b) + 2
		if len(b) == 0 || !math.IsInf(b[len(b)-1].GetUpperBound(), +1) {
			n++ // the +Inf bucket, which the parser folds into the count
		}
		return n
	default:
		return 1
	}
}

func checkOpenMetrics(body []byte) (stats, error) {
	var st stats
	p := textparse.NewOpenMetricsParser(body, labels.NewSymbolTable())
	var lset labels.Labels
	for {
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			return st, nil
		}
		if err != nil {
			return st, fmt.Errorf("%w: %v", ErrInvalidBody, err)
		}
		if e == textparse.EntrySeries || e == textparse.EntryHistogram {
			p.Labels(&lset)
			st.samples++
			st.labels(lset.Get(labels.MetricName), lset.Len())
		}
	}
}

// relabelBody applies metric_relabel_configs to every sample as Prometheus does: each
// sample on its own name and labels, with the target's labels present (rules may match
// job, instance or a static label). The target's labels are then taken off again, unless
// a rule changed them (the central side adds them to every series), and the survivors
// are written back in the same format.
func relabelBody(body []byte, mt string, rl Relabel) ([]byte, error) {
	st := labels.NewSymbolTable()
	var p textparse.Parser
	om := mt == OpenMetricsType
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
					writeLabels(out, ex.Labels, "")
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

func writeLabels(out *bytes.Buffer, lset labels.Labels, skip string) {
	out.WriteByte('{')
	first := true
	lset.Range(func(l labels.Label) {
		if l.Name == skip {
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
