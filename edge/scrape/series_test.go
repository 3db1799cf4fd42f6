package scrape

import (
	"context"
	"errors"
	"io"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// shapeAgrees reads body with the parser check uses and holds seriesShape to the
// parser's own label set on every series: where seriesShape answers, the series is one
// validSeries accepts, with the same name and number of labels. It returns how many
// series seriesShape answered and how many it left to the parser.
func shapeAgrees(t *testing.T, body []byte, mt string) (answered, left int) {
	t.Helper()
	p, err := textparse.New(body, mt, labels.NewSymbolTable(), textparse.ParserOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var lset labels.Labels
	for {
		e, err := p.Next()
		if errors.Is(err, io.EOF) || err != nil {
			return answered, left
		}
		if e != textparse.EntrySeries {
			continue
		}
		series, _, _ := p.Series()
		name, n, ok := seriesShape(series)
		if !ok {
			left++
			continue
		}
		answered++
		p.Labels(&lset)
		if err := validSeries(lset); err != nil {
			t.Fatalf("series %q: seriesShape passed what validSeries refuses: %v", series, err)
		}
		if got, want := string(name), lset.Get(labels.MetricName); got != want {
			t.Fatalf("series %q: name %q, parser's %q", series, got, want)
		}
		if n != lset.Len() {
			t.Fatalf("series %q: %d labels, parser's %d", series, n, lset.Len())
		}
	}
}

// TestSeriesShapeCaptures: on every captured exposition, seriesShape agrees with the
// parser on each series it answers, and answers all of them (they are plain).
func TestSeriesShapeCaptures(t *testing.T) {
	for _, name := range []string{fixture.NodeExporter, fixture.Prometheus, fixture.PushGateway, fixture.Prometheus3Text} {
		answered, left := shapeAgrees(t, fixture.Read(t, name), fixture.TextContentType)
		if answered == 0 || left != 0 {
			t.Errorf("%s: answered %d series, left %d to the parser", name, answered, left)
		}
	}
}

// TestSeriesShapeLeaves: what is not plain is left to the parser's Labels, so that it
// is refused or read as Prometheus reads it.
func TestSeriesShapeLeaves(t *testing.T) {
	for _, s := range []string{
		`m{a="1",a="2"}`,
		`m{a="1", b="x", "a"="2"}`,
		`m{__name__="n"}`,
		`{a="1"}`,
		`{"m\"x",a="1"}`,
		`m{"a\\b"="1"}`,
		`m{""="1"}`,
		`m{a="1"`,
		`m{a=1}`,
		`m{a="1\"}`,
		`m{"x"}`,
		"m{a=\"\\\x00\\\",a=\"}\"}",
		"m{a=\"1\"\x00a=\"2\"}",
		`m{a="1"}x`,
	} {
		if name, n, ok := seriesShape([]byte(s)); ok {
			t.Errorf("%s: read as %q with %d labels, want it left to the parser", s, name, n)
		}
	}
	for s, want := range map[string]int{
		`m`:                              1,
		`m{}`:                            1,
		`m{a="1"}`:                       2,
		`m { a = "x\"}" , b="" }`:        3,
		`{"my.metric","some.label"="x"}`: 2,
		`{"my.metric"}`:                  1,
		`m{a="1",}`:                      2,
	} {
		if _, n, ok := seriesShape([]byte(s)); !ok || n != want {
			t.Errorf("%s: %d labels, ok %v; want %d", s, n, ok, want)
		}
	}
}

// FuzzSeriesShape: on any UTF-8 body the parser reads, seriesShape never passes a series the
// parser's label set would refuse, nor misreads its name or label count.
func FuzzSeriesShape(f *testing.F) {
	f.Add([]byte(fixture.Read(f, fixture.PushGateway)), false)
	for _, s := range []string{
		"m{a=\"1\",a=\"2\"} 1\n",
		"{\"my.metric\",\"some.label\"=\"x\"} 1\n",
		"m { a = \"x\\\"}\" , \"b\"=\"\" } 1\n",
		"m{__name__=\"x\"} 1\n",
		"# TYPE c counter\nc_total{a=\"1\"} 1 # {t=\"x\"} 1\n# EOF\n",
		"m{a=\"\\\x00\\\",b=\"}\",c=\"1\",__name__=\"x\"} 1\n",
		"m{a=\"1\"\x00a=\"2\"} 1\n",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, om bool) {
		if !utf8.Valid(body) {
			return // Process refuses it before check reads it
		}
		mt := fixture.TextContentType
		if om {
			mt = omType
		}
		shapeAgrees(t, body, mt)
	})
}

// TestSeriesShapeNUL: a NUL byte, which the parser's lexers skip inside a label value,
// cannot hide labels from label_limit or a label named twice from validation.
func TestSeriesShapeNUL(t *testing.T) {
	for _, c := range []struct {
		body string
		lim  Limits
		want error
	}{
		{"m{a=\"\\\x00\\\",b=\"}\",c=\"1\",d=\"2\",e=\"3\"} 1\n", Limits{LabelLimit: 3}, ErrLabelLimit},
		{"m{a=\"\\\x00\\\",b=\"}\",__name__=\"x\"} 1\n", Limits{}, ErrInvalidBody},
		{"m{a=\"1\"\x00a=\"2\"} 1\n", Limits{}, ErrInvalidBody},
	} {
		if _, _, err := Process(context.Background(), []byte(c.body), fixture.TextContentType, c.lim, Relabel{}); !errors.Is(err, c.want) {
			t.Errorf("%q: err = %v, want %v", c.body, err, c.want)
		}
	}
}
