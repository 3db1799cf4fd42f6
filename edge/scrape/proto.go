package scrape

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// relabelProto applies metric_relabel_configs to a protobuf body and writes the
// survivors back in the same format, so that native histograms, exemplars and created
// timestamps stay as the target sent them. The rules see each metric once, named by
// its family, as Prometheus sees a native histogram series; a metric whose name a rule
// changes moves to a family of that name (with the family's type and help).
func relabelProto(ctx context.Context, body []byte, rl Relabel) ([]byte, error) {
	out := bytes.NewBuffer(make([]byte, 0, len(body)))
	var (
		order []string
		fams  = map[string]*dto.MetricFamily{}
		lb    = labels.NewBuilder(labels.EmptyLabels())
	)
	err := exposition.EachDelimited(body, func(mf *dto.MetricFamily) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("relabel body: %w", err)
		}
		for _, m := range mf.GetMetric() {
			lb.Reset(labels.EmptyLabels())
			lb.Set(labels.MetricName, mf.GetName())
			for _, l := range m.GetLabel() {
				lb.Set(l.GetName(), l.GetValue())
			}
			rl.Target.Range(func(l labels.Label) {
				if lb.Get(l.Name) == "" {
					lb.Set(l.Name, l.Value)
				}
			})
			if !relabel.ProcessBuilder(lb, rl.Configs...) {
				continue
			}
			own := map[string]string{}
			for _, l := range m.GetLabel() {
				own[l.GetName()] = l.GetValue()
			}
			rl.Target.Range(func(l labels.Label) {
				if v, ok := own[l.Name]; lb.Get(l.Name) == l.Value && (!ok || v != l.Value) {
					lb.Del(l.Name)
				}
			})
			name := lb.Get(labels.MetricName)
			lb.Del(labels.MetricName)
			m.Label = m.Label[:0]
			lb.Labels().Range(func(l labels.Label) {
				m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(l.Name), Value: proto.String(l.Value)})
			})
			dst := fams[name]
			if dst != nil && dst.GetType() != mf.GetType() {
				// Its value would be read as the other type's (a counter's as a
				// gauge's 0): refused, as a text body with two types is.
				return fmt.Errorf("%w: after metric_relabel_configs, family %s would hold a %v (from %s) and a %v",
					ErrInvalidBody, quote(name), mf.GetType(), quote(mf.GetName()), dst.GetType())
			}
			if dst == nil {
				dst = &dto.MetricFamily{Name: proto.String(name), Help: mf.Help, Type: mf.Type, Unit: mf.Unit}
				fams[name] = dst
				order = append(order, name)
			}
			dst.Metric = append(dst.Metric, m)
		}
		return nil
	})
	if errors.Is(err, exposition.ErrInvalid) {
		// The same words, as this package's error.
		return nil, fmt.Errorf("%w%s", ErrInvalidBody, strings.TrimPrefix(err.Error(), exposition.ErrInvalid.Error()))
	}
	if err != nil {
		return nil, err
	}
	for _, name := range order {
		if _, err := protodelim.MarshalTo(out, fams[name]); err != nil {
			return nil, fmt.Errorf("relabel body: write %s: %w", name, err)
		}
	}
	return out.Bytes(), nil
}
