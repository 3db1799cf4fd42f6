package remotewrite

import (
	"errors"
	"io"
	"math"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/prompb"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// TestFlattenMatchesPrometheus: the samples the sink sends for a capture are those
// Prometheus's own parser, the one its scrape loop uses, reads from it.
func TestFlattenMatchesPrometheus(t *testing.T) {
	for _, name := range []string{fixture.NodeExporter, fixture.Prometheus, fixture.PushGateway} {
		t.Run(name, func(t *testing.T) {
			body := fixture.Read(t, name)
			fams, err := exposition.Parse(body, fixture.TextContentType)
			if err != nil {
				t.Fatal(err)
			}
			const ts = 1_700_000_000_000
			got, metas := flatten(nil, nil, fams, ts, 0, false, false)

			want := map[string]float64{}
			p := textparse.NewPromParser(body, labels.NewSymbolTable(), false)
			var ls labels.Labels
			for {
				e, err := p.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if e != textparse.EntrySeries {
					continue
				}
				_, _, v := p.Series()
				p.Labels(&ls)
				// As the scrape loop stores it: a label with an empty value is no label.
				want[labels.NewBuilder(ls).Labels().String()] = v
			}
			if len(got) != len(want) {
				t.Errorf("%d samples, Prometheus reads %d", len(got), len(want))
			}
			for _, s := range got {
				b := labels.NewScratchBuilder(len(s.labels))
				for _, l := range s.labels {
					b.Add(l.Name, l.Value)
				}
				key := b.Labels().String()
				v, ok := want[key]
				switch {
				case !ok:
					t.Errorf("%s: not in Prometheus's reading", key)
				case v != s.v && !(math.IsNaN(v) && math.IsNaN(s.v)):
					t.Errorf("%s = %v, Prometheus reads %v", key, s.v, v)
				case s.t != ts || s.stamped:
					t.Errorf("%s: timestamp %d (stamped %v), want the scrape's %d", key, s.t, s.stamped, ts)
				}
				if s.meta < 0 || metas[s.meta].name == "" {
					t.Errorf("%s: no metadata", key)
				}
			}
		})
	}
}

func TestFlattenTypesAndTimestamps(t *testing.T) {
	body := []byte(`# HELP h A histogram.
# TYPE h histogram
h_bucket{le="0.5"} 1
h_bucket{le="1"} 3
h_bucket{le="+Inf"} 4
h_sum 2.5
h_count 4
# HELP s A summary.
# TYPE s summary
s{quantile="0.9"} 7
s_sum 10
s_count 2
# TYPE c_total counter
c_total{a="x"} 5 1600000000000
`)
	fams, err := exposition.Parse(body, fixture.TextContentType)
	if err != nil {
		t.Fatal(err)
	}
	got, metas := flatten(nil, nil, fams, 42, 0, false, false)
	byName := map[string]series{}
	for _, s := range got {
		byName[render(s.labels)] = s
	}
	for key, want := range map[string]float64{
		`c_total{a="x"}`: 5, `h_bucket{le="0.5"}`: 1, `h_bucket{le="1.0"}`: 3, `h_bucket{le="+Inf"}`: 4,
		`h_sum`: 2.5, `h_count`: 4, `s{quantile="0.9"}`: 7, `s_sum`: 10, `s_count`: 2,
	} {
		s, ok := byName[key]
		if !ok || s.v != want {
			t.Errorf("%s = %v (present %v), want %v", key, s.v, ok, want)
		}
	}
	if c := byName[`c_total{a="x"}`]; c.t != 1600000000000 || !c.stamped {
		t.Errorf("c_total: t=%d stamped=%v, want the target's own timestamp", c.t, c.stamped)
	}
	if h := byName["h_sum"]; h.t != 42 || h.stamped {
		t.Errorf("h_sum: t=%d stamped=%v, want the scrape's time", h.t, h.stamped)
	}
	types := map[string]model.MetricType{}
	for _, m := range metas {
		types[m.name] = m.typ
	}
	if types["h"] != model.MetricTypeHistogram || types["s"] != model.MetricTypeSummary || types["c_total"] != model.MetricTypeCounter {
		t.Errorf("metadata types: %v", types)
	}
}

func render(ls []prompb.Label) string {
	name, out := "", ""
	for _, l := range ls {
		if l.Name == model.MetricNameLabel {
			name = l.Value
			continue
		}
		if out != "" {
			out += ","
		}
		out += l.Name + `="` + l.Value + `"`
	}
	if out == "" {
		return name
	}
	return name + "{" + out + "}"
}

func TestTrackedCodec(t *testing.T) {
	sets := []ended{
		{labels: []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "a"}}, typ: model.MetricTypeGauge},
		{labels: []prompb.Label{{Name: "__name__", Value: "x"}, {Name: "v", Value: "ünïcode \xff"}}, typ: model.MetricTypeCounter, unit: "seconds"},
		{labels: []prompb.Label{{Name: "__name__", Value: "x"}, {Name: "v", Value: "other"}, {Name: "w", Value: "1"}}, typ: model.MetricTypeCounter, unit: "seconds"},
		{labels: []prompb.Label{{Name: "__name__", Value: "x"}, {Name: "v", Value: "other"}}, typ: model.MetricTypeCounter},
		{labels: []prompb.Label{{Name: "__name__", Value: "h"}}, typ: model.MetricTypeHistogram, kind: kindFloatHistogram},
		{typ: model.MetricTypeUnknown},
	}
	var b []byte
	var prev []prompb.Label
	for _, s := range sets {
		b = appendTracked(b, prev, s.labels, meta{typ: s.typ, unit: s.unit}, s.kind)
		prev = s.labels
	}
	prev = nil
	for i, want := range sets {
		got, rest, ok := readTracked(b, prev)
		if !ok || render(got.labels) != render(want.labels) || got.typ != want.typ || got.unit != want.unit || got.kind != want.kind {
			t.Fatalf("series %d: got %+v (ok %v), want %+v", i, got, ok, want)
		}
		b, prev = rest, got.labels
	}
	if len(b) != 0 {
		t.Errorf("%d bytes left", len(b))
	}
	if _, _, ok := readTracked([]byte{5, 1}, nil); ok {
		t.Error("a truncated series reads")
	}
	if _, _, ok := readTracked([]byte{1, labelSame, 0, 0, 0}, nil); ok {
		t.Error("a label the same as a previous series' reads without one")
	}
}
