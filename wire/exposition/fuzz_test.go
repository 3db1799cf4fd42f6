package exposition

import (
	"bytes"
	"errors"
	"testing"

	"github.com/prometheus/common/expfmt"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// omSample is an OpenMetrics body with every type and feature Parse reads.
const omSample = `# HELP c Requests.
# TYPE c counter
# UNIT c requests
c_total{a="1"} 1.5 # {trace_id="t"} 1 1700000000
c_created{a="1"} 1699999999.25
# TYPE h histogram
h_bucket{le="0.5"} 1
h_bucket{le="+Inf"} 2 # {trace_id="u"} 3
h_count 2
h_sum 1.5
h_created 1699999999
# TYPE g gaugehistogram
g_bucket{le="+Inf"} 2
g_gcount 2
g_gsum -1
# TYPE s summary
s{quantile="0.5"} 0.25 1700000001
s_sum 10
s_count 20
# TYPE i info
i_info{v="1"} 1
# TYPE st stateset
st{st="a"} 1
# TYPE u unknown
u NaN
{"my.metric","some.label"="x"} 1
# EOF
`

// FuzzParse checks that Parse never panics, that what it accepts is well formed
// (families sorted and non-empty, labels sorted), that its errors wrap ErrInvalid,
// and that Attach, StripTimestamps and Encode take whatever it returns.
//
// The captures make large seeds, whose offspring take the fuzzer long to minimize
// (execs stall at the default -fuzzminimizetime of 60s); fuzz with, for example,
//
//	go test -run '^$' -fuzz FuzzParse -fuzzminimizetime 2s ./wire/exposition/
func FuzzParse(f *testing.F) {
	for _, name := range []string{fixture.NodeExporter, fixture.Prometheus, fixture.PushGateway} {
		f.Add(fixture.Read(f, name), false)
	}
	f.Add([]byte(omSample), true)
	f.Add([]byte("{\"my.metric\",\"some.label\"=\"x\"} 1\n"), false)
	f.Add([]byte("# TYPE a counter\na_total 1\n# TYPE a_total gauge\na_total 2\n# EOF\n"), true)
	f.Fuzz(func(t *testing.T, body []byte, om bool) {
		ct := fixture.TextContentType
		if om {
			ct = "application/openmetrics-text; version=1.0.0"
		}
		fams, err := Parse(body, ct)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		checkSorted(t, fams)
		for _, mf := range fams {
			if len(mf.GetMetric()) == 0 {
				t.Fatalf("family %q has no metrics", mf.GetName())
			}
		}
		Attach(fams, Target{Job: "j", Instance: "i", Labels: []Label{{"dc", "x"}}})
		checkSorted(t, fams)
		StripTimestamps(fams)
		var b bytes.Buffer
		_ = Encode(&b, fams, expfmt.NewFormat(expfmt.TypeOpenMetrics))
	})
}

// FuzzParseProto is FuzzParse for Prometheus's protobuf format: no panic, no error that
// does not wrap ErrInvalid, families well formed, and the sinks' steps take them.
func FuzzParseProto(f *testing.F) {
	const ct = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
	f.Add(fixture.Read(f, fixture.Prometheus3Proto))
	f.Add([]byte{0x05, 0x0a, 0x01, 'a', 0x10, 0x01})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, body []byte) {
		fams, err := ParseScrape(body, ct, Histograms{Native: true, ConvertToNHCB: true})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		checkSorted(t, fams)
		for i, mf := range fams {
			if len(mf.GetMetric()) == 0 {
				t.Fatalf("family %q has no metrics", mf.GetName())
			}
			if i > 0 && fams[i-1].GetName() == mf.GetName() {
				t.Fatalf("family %q twice", mf.GetName())
			}
		}
		Attach(fams, Target{Job: "j", Instance: "i", Labels: []Label{{"dc", "x"}}})
		checkSorted(t, fams)
		var b bytes.Buffer
		_ = Encode(&b, fams, expfmt.NewFormat(expfmt.TypeProtoDelim))
		_ = Encode(&b, fams, expfmt.NewFormat(expfmt.TypeOpenMetrics))
	})
}
