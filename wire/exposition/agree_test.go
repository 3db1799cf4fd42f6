package exposition

import (
	"bytes"
	"fmt"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// TestTextParsersAgree: the text format read by Prometheus's own parser (the drain's,
// as the edge validates with it) gives exactly the families expfmt's parser gives, on
// every capture: names, types, help, labels, values, timestamps.
func TestTextParsersAgree(t *testing.T) {
	bodies := map[string][]byte{}
	for _, name := range captures {
		bodies[name] = fixture.Read(t, name)
	}
	bodies["escapes and specials"] = []byte("# HELP e a \\\\ backslash\\nand newline\n# TYPE e gauge\ne{l=\"q\\\"uote\\\\ \\n\"} NaN\ne{l=\"b\"} +Inf 1700000000000\ne{l=\"c\"} -Inf\n" +
		"# TYPE u untyped\nu 1\nnotype 2\n# TYPE c counter\nc 3\n# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 2\ns_count 3\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n")
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			got, err := parseText(body)
			if err != nil {
				t.Fatal(err)
			}
			want, err := parseTextExpfmt(body)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d families, expfmt %d", len(got), len(want))
			}
			for i := range got {
				if !proto.Equal(got[i], want[i]) {
					g, w := got[i].String(), want[i].String()
					if len(g) > 600 {
						g, w = g[:600], w[:600]
					}
					t.Errorf("family %s differs:\n got %s\nwant %s", got[i].GetName(), g, w)
				}
			}
		})
	}
}

// parseTextExpfmt is how the text format was read before: expfmt's parser.
func parseTextExpfmt(body []byte) ([]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	byName, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		// expfmt's ParseError already names the line.
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	fams := make([]*dto.MetricFamily, 0, len(byName))
	for _, mf := range byName {
		// expfmt keeps labels in exposition order; Attach and the encoders want them
		// sorted, as Prometheus keeps every label set.
		for _, m := range mf.GetMetric() {
			sortLabels(m.Label)
		}
		fams = append(fams, mf)
	}
	sortFamilies(fams)
	return fams, nil
}

// wide is one series with n labels.
func wide(n int) []byte {
	var b bytes.Buffer
	b.WriteString("# TYPE w gauge\nw{")
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "l%d=\"v%d\"", i, i)
	}
	b.WriteString("} 1\n")
	return b.Bytes()
}

// TestParseWide: a series of 30,000 labels (a hostile target; 311 KB) is read whole.
// expfmt's parser took seconds on it, quadratic in the labels; BenchmarkTextParsers shows the
// cost now.
func TestParseWide(t *testing.T) {
	fams, err := Parse(wide(30000), fixture.TextContentType)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(fams[0].GetMetric()[0].GetLabel()); n != 30000 {
		t.Errorf("%d labels", n)
	}
}

// BenchmarkTextParsers compares the drain's text parse (Prometheus's parser, assembled into
// families) with expfmt's, on the node_exporter capture and on one series of 2,000
// labels.
func BenchmarkTextParsers(b *testing.B) {
	node := fixture.Read(b, fixture.NodeExporter)
	w := wide(2000)
	for _, bc := range []struct {
		name  string
		body  []byte
		parse func([]byte) ([]*dto.MetricFamily, error)
	}{
		{"node_exporter/textparse", node, parseText},
		{"node_exporter/expfmt", node, parseTextExpfmt},
		{"wide2000/textparse", w, parseText},
		{"wide2000/expfmt", w, parseTextExpfmt},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.parse(bc.body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
