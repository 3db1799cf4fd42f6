package exposition

import (
	"fmt"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
)

// Valid checks what a parsed exposition holds for what every reader of it requires:
// names, help, unit, label names and values in valid UTF-8. A parser may let invalid
// bytes through where a reader later refuses them (Prometheus fails a whole scrape of an
// endpoint on one such byte), so a body that fails is refused where it enters. The
// error names the family and what is wrong.
func Valid(fams []*dto.MetricFamily) error {
	for _, mf := range fams {
		name := mf.GetName()
		switch {
		case !utf8.ValidString(name):
			return fmt.Errorf("%w: metric name %q is not valid UTF-8", ErrInvalid, name)
		case !utf8.ValidString(mf.GetHelp()):
			return fmt.Errorf("%w: help of %s is not valid UTF-8", ErrInvalid, name)
		case !utf8.ValidString(mf.GetUnit()):
			return fmt.Errorf("%w: unit of %s is not valid UTF-8", ErrInvalid, name)
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if !utf8.ValidString(l.GetName()) {
					return fmt.Errorf("%w: %s: label name %q is not valid UTF-8", ErrInvalid, name, l.GetName())
				}
				if !utf8.ValidString(l.GetValue()) {
					return fmt.Errorf("%w: %s: value of label %s is not valid UTF-8", ErrInvalid, name, l.GetName())
				}
			}
			for _, e := range exemplarsOf(m) {
				for _, l := range e.GetLabel() {
					if !utf8.ValidString(l.GetName()) || !utf8.ValidString(l.GetValue()) {
						return fmt.Errorf("%w: %s: an exemplar's label is not valid UTF-8", ErrInvalid, name)
					}
				}
			}
		}
	}
	return nil
}

// exemplarsOf lists the exemplars a metric carries.
func exemplarsOf(m *dto.Metric) []*dto.Exemplar {
	var out []*dto.Exemplar
	if e := m.GetCounter().GetExemplar(); e != nil {
		out = append(out, e)
	}
	for _, b := range m.GetHistogram().GetBucket() {
		if e := b.GetExemplar(); e != nil {
			out = append(out, e)
		}
	}
	out = append(out, m.GetHistogram().GetExemplars()...)
	return out
}
