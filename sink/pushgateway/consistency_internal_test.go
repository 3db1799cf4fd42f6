package pushgateway

import (
	"context"
	"errors"
	"hash/maphash"
	"maps"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/pgwtest"
)

// gatewayOwn returns the families the gateway serves with at least one series of its
// own (pushed series all carry a job label).
func gatewayOwn(t *testing.T, s *pgwtest.Server) map[string]*dto.MetricFamily {
	t.Helper()
	own := map[string]*dto.MetricFamily{}
	for name, f := range s.Scrape(t) {
		for _, m := range f.GetMetric() {
			if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == model.JobLabel }) {
				own[name] = f
			}
		}
	}
	return own
}

// TestOwnFamilies checks ownFamilies against the gateway binary: its own families and
// their types once it has taken a push, and which of them refuse a pushed family of
// another help (the others get the gateway's help).
func TestOwnFamilies(t *testing.T) {
	s := pgwtest.Start(t)
	c, err := New(Options{URL: s.URL()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Push(ctx, Grouping{{"job", "j"}}, nil); err != nil {
		t.Fatal(err)
	}
	own := gatewayOwn(t, s)
	if got, want := slices.Sorted(maps.Keys(own)), slices.Sorted(maps.Keys(ownFamilies)); !slices.Equal(got, want) {
		t.Errorf("the gateway's own families:\n%v\nownFamilies:\n%v", got, want)
	}
	for name, f := range own {
		o := ownFamilies[name]
		if o.typ != f.GetType() {
			t.Errorf("%s: the gateway's is a %v, ownFamilies says %v", name, f.GetType(), o.typ)
		}
		if o.help != "" && o.help != f.GetHelp() {
			t.Errorf("%s: the gateway's help is %q, ownFamilies says %q", name, f.GetHelp(), o.help)
		}
		m := &dto.Metric{}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			m.Counter = &dto.Counter{Value: proto.Float64(1)}
		case dto.MetricType_GAUGE:
			m.Gauge = &dto.Gauge{Value: proto.Float64(1)}
		case dto.MetricType_SUMMARY:
			m.Summary = &dto.Summary{SampleCount: proto.Uint64(1), SampleSum: proto.Float64(1)}
		default:
			t.Fatalf("%s: a %v: extend the test", name, f.GetType())
		}
		pushed := &dto.MetricFamily{Name: proto.String(name), Help: proto.String("not the gateway's"), Type: f.Type, Metric: []*dto.Metric{m}}
		err := c.Push(ctx, Grouping{{"job", "help"}}, []*dto.MetricFamily{pushed})
		if refused := err != nil; refused != (o.help != "") {
			t.Errorf("%s of another help: the gateway refused it: %v (%v); ownFamilies enforces %q", name, refused, err, o.help)
		}
	}
}

func gauge(name string, labels ...string) *dto.MetricFamily {
	m := &dto.Metric{Gauge: &dto.Gauge{Value: proto.Float64(1)}}
	for i := 0; i+1 < len(labels); i += 2 {
		m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(labels[i]), Value: proto.String(labels[i+1])})
	}
	return &dto.MetricFamily{Name: proto.String(name), Help: proto.String("h"), Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{m}}
}

func counter(name string) *dto.MetricFamily {
	return &dto.MetricFamily{Name: proto.String(name), Help: proto.String("h"), Type: dto.MetricType_COUNTER.Enum(),
		Metric: []*dto.Metric{{Counter: &dto.Counter{Value: proto.Float64(1)}}}}
}

func (x *ledger) empty() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.fams) == 0 && len(x.groups) == 0 && len(x.shapes) == 0
}

// TestLedgerAccounting: whatever happens to pushes (taken, refused, of unknown outcome),
// forgetting every group leaves the ledger empty, and groups of the same families share
// one shape.
func TestLedgerAccounting(t *testing.T) {
	x := newLedger()
	fams := []*dto.MetricFamily{gauge("a"), gauge("b")}
	for _, p := range []string{"/1", "/2", "/3"} {
		res, _, err := x.reserve(p, p, fams)
		if err != nil {
			t.Fatal(err)
		}
		x.commit(p, res)
	}
	if n := len(x.shapes); n != 1 {
		t.Errorf("%d shapes for groups of the same families", n)
	}
	if e := x.fams["a"]; e == nil || e.held[dto.MetricType_GAUGE] != 3 {
		t.Errorf("a: %+v, want held by 3 groups", e)
	}

	// Another type for b elsewhere is refused; in the group itself, it replaces.
	if _, _, err := x.reserve("/4", "/4", []*dto.MetricFamily{counter("b")}); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("counter b beside gauges: %v", err)
	}
	if x.groups["/4"] != nil {
		t.Error("a refused push left a holding")
	}
	for _, p := range []string{"/1", "/2"} {
		x.forget(p)
	}
	res, _, err := x.reserve("/3", "/3", []*dto.MetricFamily{counter("b")})
	if err != nil {
		t.Fatalf("counter b in the only group of gauge b: %v", err)
	}
	// While that push is in flight, neither type can come in elsewhere.
	for _, f := range []*dto.MetricFamily{gauge("b"), counter("b")} {
		if _, _, err := x.reserve("/5", "/5", []*dto.MetricFamily{f}); !errors.Is(err, ErrInconsistent) {
			t.Errorf("%v b while the type changes: %v", f.GetType(), err)
		} else if !strings.Contains(err.Error(), "/3") {
			t.Errorf("error %q does not name the group", err)
		}
	}
	// Its outcome is unknown: the group counts as holding both.
	x.unsure("/3", res)
	if _, _, err := x.reserve("/5", "/5", []*dto.MetricFamily{gauge("b")}); err == nil {
		t.Error("gauge b accepted while the group may hold a counter b")
	}
	res, _, err = x.reserve("/3", "/3", []*dto.MetricFamily{counter("b")})
	if err != nil {
		t.Fatal(err)
	}
	x.unsure("/3", res) // the same families again
	if n := len(x.groups["/3"].shapes); n != 2 {
		t.Errorf("%d shapes held after the same push of unknown outcome twice", n)
	}
	res, _, err = x.reserve("/3", "/3", []*dto.MetricFamily{counter("c")})
	if err != nil {
		t.Fatal(err)
	}
	x.cancel("/3", res)
	if _, ok := x.fams["c"]; ok {
		t.Error("a cancelled push left its family")
	}
	x.forget("/3")
	if !x.empty() {
		t.Errorf("ledger not empty: %d families, %d groups, %d shapes", len(x.fams), len(x.groups), len(x.shapes))
	}

	// A listed group is learned unless a push of the sink's own knows better.
	learned := x.internListed(x.newShape([]famMeta{{name: "b", typ: dto.MetricType_COUNTER}}))
	x.learn("/6", "/6", learned)
	res, _, err = x.reserve("/7", "/7", []*dto.MetricFamily{gauge("b")})
	if err == nil || !strings.Contains(err.Error(), "/6") {
		t.Fatalf("gauge b beside a listed counter b: %v", err)
	}
	stale := x.internListed(x.newShape([]famMeta{{name: "z", typ: dto.MetricType_GAUGE}}))
	x.learn("/6", "/6", stale)
	if _, ok := x.fams["z"]; ok {
		t.Error("a listing replaced what the ledger knew of a group")
	}
	x.forget("/6")
	if !x.empty() {
		t.Error("ledger not empty after forgetting the listed group")
	}
}

// TestCheckSeries covers how series are labelled before they are compared.
func TestCheckSeries(t *testing.T) {
	seed := maphash.MakeSeed()
	for _, tc := range []struct {
		name     string
		grouping Grouping
		fams     []*dto.MetricFamily
		reason   string // "" for none
	}{
		{"distinct", Grouping{{"job", "j"}, {"instance", "i"}}, []*dto.MetricFamily{{Name: proto.String("m"), Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{
			gauge("m", "x", "1").Metric[0], gauge("m", "x", "2").Metric[0]}}}, ""},
		{"alike once job is set", Grouping{{"job", "j"}, {"instance", "i"}}, []*dto.MetricFamily{{Name: proto.String("m"), Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{
			gauge("m", "job", "a").Metric[0], gauge("m", "job", "b").Metric[0]}}}, ReasonDuplicateSeries},
		// Without an instance in the grouping, a series' own instance is kept, and an
		// empty one added where it has none.
		{"own instance kept", Grouping{{"job", "j"}}, []*dto.MetricFamily{{Name: proto.String("m"), Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{
			gauge("m", "instance", "a").Metric[0], gauge("m", "instance", "b").Metric[0]}}}, ""},
		{"empty instance added", Grouping{{"job", "j"}}, []*dto.MetricFamily{{Name: proto.String("m"), Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{
			gauge("m", "instance", "").Metric[0], gauge("m").Metric[0]}}}, ReasonDuplicateSeries},
		{"unsorted labels", Grouping{{"job", "j"}}, []*dto.MetricFamily{{Name: proto.String("m"), Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{
			gauge("m", "z", "1", "a", "1").Metric[0], gauge("m", "a", "1", "z", "1").Metric[0]}}}, ReasonDuplicateSeries},
		{"a grouping value that is not UTF-8", Grouping{{"job", "\xff"}}, []*dto.MetricFamily{gauge("m")}, ReasonInvalidSeries},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkSeries(tc.fams, tc.grouping, seed, false)
			var ie *InconsistentError
			switch {
			case tc.reason == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.reason != "" && (!errors.As(err, &ie) || ie.Reason != tc.reason):
				t.Errorf("got %v, want reason %s", err, tc.reason)
			}
		})
	}
}
