package exposition

import (
	"bytes"
	"testing"

	"github.com/prometheus/common/expfmt"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// TestParseRetainsNoBody checks that the families Parse returns hold no reference to
// the body: the drain decompresses every body into a buffer it reuses for the next.
func TestParseRetainsNoBody(t *testing.T) {
	text := fixture.Read(t, fixture.NodeExporter)
	fams, err := Parse(text, fixture.TextContentType)
	if err != nil {
		t.Fatal(err)
	}
	var om bytes.Buffer
	if err := Encode(&om, fams, expfmt.NewFormat(expfmt.TypeOpenMetrics)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, contentType string
		body              []byte
	}{
		{"text", fixture.TextContentType, text},
		{"openmetrics", omType, om.Bytes()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := Parse(tc.body, tc.contentType)
			if err != nil {
				t.Fatal(err)
			}
			buf := bytes.Clone(tc.body)
			got, err := Parse(buf, tc.contentType)
			if err != nil {
				t.Fatal(err)
			}
			for i := range buf {
				buf[i] = 'x'
			}
			if g, w := asText(t, got), asText(t, want); g != w {
				t.Errorf("families changed with the body they were parsed from:\n%s", diff(g, w))
			}
		})
	}
}
