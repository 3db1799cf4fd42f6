package exposition

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/proto"
)

// pairsOf builds label pairs from name, value, name, value...
func pairsOf(kv ...string) []*dto.LabelPair {
	ps := make([]*dto.LabelPair, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		ps = append(ps, &dto.LabelPair{Name: proto.String(kv[i]), Value: proto.String(kv[i+1])})
	}
	return ps
}

// render writes label pairs as {a="1",b="2"}, in their order.
func render(ps []*dto.LabelPair) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", p.GetName(), p.GetValue())
	}
	b.WriteByte('}')
	return b.String()
}

func TestAttach(t *testing.T) {
	base := Target{Job: "node", Instance: "host:9100", Labels: []Label{{"dc", "fra"}, {"env", "prod"}}}
	honor := base
	honor.HonorLabels = true
	for _, tc := range []struct {
		name    string
		target  Target
		exposed []string
		want    string
	}{
		{"no labels", base, nil,
			`{dc="fra",env="prod",instance="host:9100",job="node"}`},
		{"no clash", base, []string{"a", "1", "zz", "2"},
			`{a="1",dc="fra",env="prod",instance="host:9100",job="node",zz="2"}`},
		{"clash with job", base, []string{"job", "mine"},
			`{dc="fra",env="prod",exported_job="mine",instance="host:9100",job="node"}`},
		{"clash with instance and a static label", base, []string{"dc", "ber", "instance", "x:1"},
			`{dc="fra",env="prod",exported_dc="ber",exported_instance="x:1",instance="host:9100",job="node"}`},
		{"exported_job already exposed", base, []string{"exported_job", "old", "job", "mine"},
			`{dc="fra",env="prod",exported_exported_job="mine",exported_job="old",instance="host:9100",job="node"}`},
		{"exported_ and exported_exported_ already exposed", base,
			[]string{"exported_exported_job", "older", "exported_job", "old", "job", "mine"},
			`{dc="fra",env="prod",exported_exported_exported_job="mine",exported_exported_job="older",exported_job="old",instance="host:9100",job="node"}`},
		{"empty exported_job is free", base, []string{"exported_job", "", "job", "mine"},
			`{dc="fra",env="prod",exported_job="mine",instance="host:9100",job="node"}`},
		{"shorter names first", // Prometheus renames job before exported_job, whatever their order
			Target{Job: "node", Labels: []Label{{"exported_job", "static"}}},
			[]string{"exported_job", "b", "job", "a"},
			`{exported_exported_exported_job="b",exported_exported_job="a",exported_job="static",job="node"}`},
		{"honor_labels keeps exposed values", honor, []string{"job", "mine", "dc", "ber", "a", "1"},
			`{a="1",dc="ber",env="prod",instance="host:9100",job="mine"}`},
		{"honor_labels, empty exposed value removes the label", honor, []string{"instance", ""},
			`{dc="fra",env="prod",job="node"}`},
		{"empty exposed value is no label", base, []string{"a", "", "job", ""},
			`{dc="fra",env="prod",instance="host:9100",job="node"}`},
		{"empty target values are no labels",
			Target{Job: "node", Labels: []Label{{"dc", ""}}},
			[]string{"dc", "ber", "instance", "mine"},
			`{dc="ber",instance="mine",job="node"}`},
		{"unsorted exposed labels", base, []string{"zz", "2", "a", "1", "job", "mine"},
			`{a="1",dc="fra",env="prod",exported_job="mine",instance="host:9100",job="node",zz="2"}`},
		{"static job label wins over Job",
			Target{Job: "node", Instance: "i", Labels: []Label{{"job", "static"}}}, nil,
			`{instance="i",job="static"}`},
		{"UTF-8 names", base, []string{"some.label", "x"},
			`{dc="fra",env="prod",instance="host:9100",job="node",some.label="x"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fams := []*dto.MetricFamily{{
				Name:   proto.String("m"),
				Type:   dto.MetricType_GAUGE.Enum(),
				Metric: []*dto.Metric{{Label: pairsOf(tc.exposed...), Gauge: &dto.Gauge{Value: proto.Float64(1)}}},
			}}
			Attach(fams, tc.target)
			ls := fams[0].Metric[0].Label
			if got := render(ls); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
			if !labelsSorted(ls) {
				t.Errorf("labels not sorted: %s", render(ls))
			}
		})
	}
}

// TestAttachManyMetrics checks that metrics sharing Attach's backing array stay apart,
// also when one of them takes the conflict path, and that appending to one metric's
// labels afterwards leaves its neighbours alone.
func TestAttachManyMetrics(t *testing.T) {
	mf := &dto.MetricFamily{Name: proto.String("m"), Type: dto.MetricType_UNTYPED.Enum()}
	for i := range 50 {
		kv := []string{"i", fmt.Sprint(i)}
		if i%7 == 3 {
			kv = append(kv, "job", "mine")
		}
		mf.Metric = append(mf.Metric, &dto.Metric{Label: pairsOf(kv...), Untyped: &dto.Untyped{Value: proto.Float64(1)}})
	}
	Attach([]*dto.MetricFamily{mf}, Target{Job: "j", Instance: "in"})
	mf.Metric[0].Label = append(mf.Metric[0].Label, pairsOf("zzz", "appended")...)
	for i, m := range mf.Metric {
		want := fmt.Sprintf(`{i="%d",instance="in",job="j"}`, i)
		if i%7 == 3 {
			want = fmt.Sprintf(`{exported_job="mine",i="%d",instance="in",job="j"}`, i)
		}
		if i == 0 {
			want = `{i="0",instance="in",job="j",zzz="appended"}`
		}
		if got := render(m.Label); got != want {
			t.Errorf("metric %d: got %s, want %s", i, got, want)
		}
	}
}

// mutateSampleLabels restates Prometheus v0.316.0's scrape.mutateSampleLabels and
// resolveConflictingExposedLabels (scrape/scrape.go, Apache-2.0, without relabelling),
// followed by the WithoutEmpty of the TSDB head's getOrCreate: the reference Attach is
// checked against.
func mutateSampleLabels(lset, target labels.Labels, honor bool) labels.Labels {
	lb := labels.NewBuilder(lset)
	if honor {
		target.Range(func(l labels.Label) {
			if !lset.Has(l.Name) {
				lb.Set(l.Name, l.Value)
			}
		})
	} else {
		var conflicting []labels.Label
		target.Range(func(l labels.Label) {
			if v := lset.Get(l.Name); v != "" {
				conflicting = append(conflicting, labels.Label{Name: l.Name, Value: v})
			}
			lb.Set(l.Name, l.Value)
		})
		slices.SortStableFunc(conflicting, func(a, b labels.Label) int { return len(a.Name) - len(b.Name) })
		for _, l := range conflicting {
			name := l.Name
			for {
				name = model.ExportedLabelPrefix + name
				if lb.Get(name) == "" {
					lb.Set(name, l.Value)
					break
				}
			}
		}
	}
	return lb.Labels().WithoutEmpty()
}

// TestAttachMatchesPrometheus compares Attach with Prometheus's own rules on random
// label sets drawn from names that clash in every way.
func TestAttachMatchesPrometheus(t *testing.T) {
	names := []string{"a", "dc", "exported_dc", "exported_exported_job", "exported_instance", "exported_job", "instance", "job", "z"}
	values := []string{"", "", "x", "y"}
	rnd := rand.New(rand.NewPCG(1, 2))
	pick := func(n int) []string {
		var kv []string
		for _, i := range rnd.Perm(len(names))[:n] {
			kv = append(kv, names[i], values[rnd.IntN(len(values))])
		}
		return kv
	}
	for i := range 20000 {
		exposed := pick(rnd.IntN(6))
		static := pick(rnd.IntN(3))
		tgt := Target{HonorLabels: rnd.IntN(2) == 0}
		if rnd.IntN(4) > 0 {
			tgt.Job = values[rnd.IntN(len(values))]
		}
		if rnd.IntN(4) > 0 {
			tgt.Instance = values[rnd.IntN(len(values))]
		}
		for j := 0; j < len(static); j += 2 {
			tgt.Labels = append(tgt.Labels, Label{static[j], static[j+1]})
		}

		// The target's labels as Prometheus would hold them (scrape/target.go,
		// PopulateDiscoveredLabels): group labels, then the job and address where
		// those left them unset or empty.
		tl := labels.NewBuilder(labels.EmptyLabels())
		for _, l := range tgt.Labels {
			tl.Set(l.Name, l.Value)
		}
		for _, l := range [][2]string{{model.JobLabel, tgt.Job}, {model.InstanceLabel, tgt.Instance}} {
			if tl.Get(l[0]) == "" {
				tl.Set(l[0], l[1])
			}
		}
		want := mutateSampleLabels(labels.FromStrings(exposed...), tl.Labels(), tgt.HonorLabels)

		fams := []*dto.MetricFamily{{Name: proto.String("m"), Metric: []*dto.Metric{{Label: pairsOf(exposed...)}}}}
		Attach(fams, tgt)
		var got []string
		for _, p := range fams[0].Metric[0].Label {
			got = append(got, p.GetName(), p.GetValue())
		}
		if g := labels.FromStrings(got...); !labels.Equal(g, want) || !labelsSorted(fams[0].Metric[0].Label) {
			t.Fatalf("case %d: exposed %q, target %+v:\ngot  %s\nwant %s", i, exposed, tgt, render(fams[0].Metric[0].Label), want)
		}
	}
}

func TestStripTimestamps(t *testing.T) {
	fams, err := Parse([]byte("a 1 1700000000000\nb{x=\"y\"} 2\nb{x=\"z\"} 3 1700000000001\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range fams {
		for _, m := range mf.Metric {
			n += len(m.GetLabel())
			if m.TimestampMs != nil {
				n += 10
			}
		}
	}
	if n != 22 {
		t.Fatalf("fixture: want 2 timestamps and 2 labels, got %d", n)
	}
	StripTimestamps(fams)
	for _, mf := range fams {
		for _, m := range mf.Metric {
			if m.TimestampMs != nil {
				t.Errorf("%s%s still has a timestamp", mf.GetName(), render(m.Label))
			}
		}
	}
}
