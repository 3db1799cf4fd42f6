package exposition

import (
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
)

// Label is a label name and value.
type Label struct{ Name, Value string }

// Target identifies the scraped target and the labels the central side attaches.
type Target struct {
	Job, Instance string
	Labels        []Label // static labels, sorted by name
	HonorLabels   bool
}

// pairs returns the labels Attach adds, sorted by name: job, instance and the static
// labels. A label with an empty value is no label, as a Prometheus target never has
// one (its labels are built with labels.Builder, whose Set deletes on ""). A static
// job or instance label with a value takes the place of Job or Instance, as in
// Prometheus the job name and the address fill those labels only where the target's
// own labels leave them empty (scrape/target.go, PopulateDiscoveredLabels and
// PopulateLabels); the configuration refuses such static labels anyway.
func (t Target) pairs() []*dto.LabelPair {
	// The pairs and their strings live in two arrays: a fixed number of allocations
	// per call, whatever the number of labels. Both are sized up front, so the
	// pointers into them stay valid.
	n := len(t.Labels) + 2
	store := make([]dto.LabelPair, 0, n)
	strs := make([]string, 0, 2*n)
	ps := make([]*dto.LabelPair, 0, n)
	add := func(name, value string) {
		strs = append(strs, name, value)
		store = store[:len(store)+1]
		p := &store[len(store)-1]
		p.Name, p.Value = &strs[len(strs)-2], &strs[len(strs)-1]
		ps = append(ps, p)
	}
	var hasJob, hasInstance bool
	for _, l := range t.Labels {
		if l.Name == "" || l.Value == "" {
			continue
		}
		hasJob = hasJob || l.Name == model.JobLabel
		hasInstance = hasInstance || l.Name == model.InstanceLabel
		add(l.Name, l.Value)
	}
	if t.Job != "" && !hasJob {
		add(model.JobLabel, t.Job)
	}
	if t.Instance != "" && !hasInstance {
		add(model.InstanceLabel, t.Instance)
	}
	slices.SortStableFunc(ps, compareLabels)
	// A repeated static label: the first one wins.
	return slices.CompactFunc(ps, func(a, b *dto.LabelPair) bool { return a.GetName() == b.GetName() })
}

// Attach adds job, instance and the static labels to every metric, as a Prometheus
// scrape does (scrape/scrape.go, mutateSampleLabels, then the TSDB head dropping empty
// labels in getOrCreate):
//
//   - honor_labels false: a target label replaces an exposed label of the same name,
//     whose value is kept as exported_<name>, or exported_exported_<name> if that is
//     taken, and so on (resolveConflictingExposedLabels: shorter names first, a name
//     is taken if it has a non-empty value by then).
//   - honor_labels true: an exposed label wins over the target label of its name,
//     even with an empty value, which then leaves the metric without that label
//     (mutateSampleLabels checks lset.Has, and the head drops the empty label).
//   - An empty value is no label: exposed labels with empty values are dropped, and a
//     target label with an empty value is not added.
//
// The labels of every metric end up sorted by name. Attach shares the label pairs it
// adds between all the metrics it is given, so the result must be treated as
// read-only; the exposed label pairs are kept.
func Attach(fams []*dto.MetricFamily, t Target) {
	add := t.pairs()
	// One backing array for all the merged label slices: one allocation per call
	// rather than per metric. Each metric gets a capacity-limited window of it, so an
	// append to one metric's labels cannot overwrite the next one's.
	n := 0
	for _, mf := range fams {
		for _, m := range mf.GetMetric() {
			n += len(m.Label) + len(add)
		}
	}
	buf := make([]*dto.LabelPair, 0, n)
	for _, mf := range fams {
		for _, m := range mf.GetMetric() {
			sortLabels(m.Label)
			start := len(buf)
			var ok bool
			if buf, ok = merge(buf, m.Label, add, t.HonorLabels); ok {
				m.Label = buf[start:len(buf):len(buf)]
				continue
			}
			buf = buf[:start]
			m.Label = attachConflicting(m.Label, add)
		}
	}
}

// merge appends the union of the sorted exposed and target labels to out in one pass,
// dropping empty values. It reports false, having appended part of it, if honor is
// false and a target label clashes with an exposed one: that rare case is for
// attachConflicting.
func merge(out, exposed, add []*dto.LabelPair, honor bool) ([]*dto.LabelPair, bool) {
	i, j := 0, 0
	for i < len(exposed) || j < len(add) {
		var c int
		switch {
		case j == len(add):
			c = -1
		case i == len(exposed):
			c = 1
		default:
			c = strings.Compare(exposed[i].GetName(), add[j].GetName())
		}
		switch {
		case c < 0:
			if exposed[i].GetValue() != "" {
				out = append(out, exposed[i])
			}
			i++
		case c > 0:
			out = append(out, add[j])
			j++
		default:
			switch {
			case honor:
				// The exposed label wins, and an empty one means no label.
				if exposed[i].GetValue() != "" {
					out = append(out, exposed[i])
				}
			case exposed[i].GetValue() == "":
				// An empty exposed label is no label: nothing to keep as exported_.
				out = append(out, add[j])
			default:
				return out, false
			}
			i++
			j++
		}
	}
	return out, true
}

// attachConflicting is Attach for honor_labels false with clashing labels, in the
// order Prometheus's resolveConflictingExposedLabels takes them.
func attachConflicting(exposed, add []*dto.LabelPair) []*dto.LabelPair {
	out := make([]*dto.LabelPair, 0, len(exposed)+len(add)+2)
	var conflicts []*dto.LabelPair
	i, j := 0, 0
	for i < len(exposed) || j < len(add) {
		switch {
		case j == len(add) || (i < len(exposed) && exposed[i].GetName() < add[j].GetName()):
			if exposed[i].GetValue() != "" {
				out = append(out, exposed[i])
			}
			i++
		case i == len(exposed) || exposed[i].GetName() > add[j].GetName():
			out = append(out, add[j])
			j++
		default:
			if exposed[i].GetValue() != "" {
				conflicts = append(conflicts, exposed[i])
			}
			out = append(out, add[j])
			i++
			j++
		}
	}
	// Conflicts are in target label order (by name), as Prometheus collects them;
	// it then takes the shorter names first, keeping that order among equal lengths.
	slices.SortStableFunc(conflicts, func(a, b *dto.LabelPair) int {
		return len(a.GetName()) - len(b.GetName())
	})
	for _, c := range conflicts {
		name := c.GetName()
		for {
			name = model.ExportedLabelPrefix + name
			k, found := slices.BinarySearchFunc(out, name, func(l *dto.LabelPair, name string) int {
				return strings.Compare(l.GetName(), name)
			})
			if found {
				continue // taken: out holds no empty values
			}
			out = slices.Insert(out, k, &dto.LabelPair{Name: proto.String(name), Value: c.Value})
			break
		}
	}
	return out
}

// StripTimestamps removes sample timestamps, which the Push Gateway refuses.
// Exemplar and created timestamps are kept.
func StripTimestamps(fams []*dto.MetricFamily) {
	for _, mf := range fams {
		for _, m := range mf.GetMetric() {
			m.TimestampMs = nil
		}
	}
}
