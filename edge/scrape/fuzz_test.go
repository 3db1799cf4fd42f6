package scrape

import (
	"context"
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// FuzzProcess checks the edge's parse-and-validate path on whatever a target serves:
// Process never panics, its errors wrap ErrInvalidBody, and what it accepts is what the
// edge publishes, so it must be UTF-8 and pass Process again with the same number of
// samples (relabelled or not: relabelling rewrites the body).
//
// The seeds (captures, the formats' features, hostile bytes) run with `go test`; fuzz
// with, for example,
//
//	go test -run '^$' -fuzz FuzzProcess -fuzzminimizetime 2s ./edge/scrape/
func FuzzProcess(f *testing.F) {
	for _, name := range []string{fixture.NodeExporter, fixture.PushGateway} {
		f.Add(fixture.Read(f, name), false, false)
	}
	for _, seed := range []struct {
		body string
		om   bool
	}{
		{"# HELP m caf\xff\n# TYPE m gauge\nm 1\n", false},
		{"m{a=\"\xfe\"} 1\n", false},
		{"{\"my.metric\",\"some.label\"=\"x\"} 1\n", false},
		{"m{a=\"1\",a=\"2\"} 1\n", false},
		{"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 1\ns_count 1\n", false},
		{"m{a=\"x\\\\y\\\"z\\n\"} 1 1700000000000\n", false},
		{"# TYPE c counter\n# HELP c Requests.\n# UNIT c requests\nc_total{a=\"1\"} 1.5 # {trace_id=\"t\"} 1 1700000000\nc_created{a=\"1\"} 1699999999.25\n# EOF\n", true},
		{"# TYPE m_seconds gauge\n# UNIT m_seconds sec\xffonds\nm_seconds 1\n# EOF\n", true},
		{"# TYPE i info\ni_info{v=\"1\"} 1\n# TYPE st stateset\nst{st=\"a\"} 1\n# EOF\n", true},
	} {
		f.Add([]byte(seed.body), seed.om, false)
		f.Add([]byte(seed.body), seed.om, true)
	}
	rules := relabels(f, `- {source_labels: [__name__], regex: 'drop_.*', action: drop}
- {source_labels: [a], target_label: b, replacement: 'b-$1'}
- {regex: 'c', action: labeldrop}`)
	f.Fuzz(func(t *testing.T, body []byte, om, relabel bool) {
		ct := fixture.TextContentType
		if om {
			ct = omType
		}
		rl := Relabel{Target: labels.FromStrings("job", "j", "instance", "i")}
		if relabel {
			rl.Configs = rules
		}
		out, n, err := Process(context.Background(), body, ct, Limits{}, rl)
		if err != nil {
			if !errors.Is(err, ErrInvalidBody) {
				t.Fatalf("error does not wrap ErrInvalidBody: %v", err)
			}
			if !utf8.ValidString(err.Error()) {
				t.Fatalf("reason is not UTF-8: %q", err)
			}
			return
		}
		if !utf8.Valid(out) {
			t.Fatalf("accepted a body that is not UTF-8: %q", out)
		}
		again, n2, err := Process(context.Background(), out, ct, Limits{}, Relabel{})
		if err != nil {
			t.Fatalf("the published body does not validate again: %v\n%q", err, out)
		}
		if n2 != n || (!relabel && string(again) != string(out)) {
			t.Fatalf("validated again: %d samples, want %d", n2, n)
		}
	})
}

// FuzzProcessProto is FuzzProcess for Prometheus's protobuf format: no panic, errors
// that wrap ErrInvalidBody, and a published body (relabelled or not) that validates
// again with the same number of samples.
func FuzzProcessProto(f *testing.F) {
	f.Add(fixture.Read(f, fixture.Prometheus3Proto), false)
	f.Add(fixture.Read(f, fixture.Prometheus3Proto), true)
	f.Add([]byte{0x05, 0x0a, 0x01, 'a', 0x10, 0x01}, false)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, true)
	rules := relabels(f, `- {source_labels: [__name__], regex: 'go_.*', action: drop}
- {source_labels: [handler], target_label: h, replacement: 'h-$1'}`)
	f.Fuzz(func(t *testing.T, body []byte, relabel bool) {
		rl := Relabel{Target: labels.FromStrings("job", "j", "instance", "i")}
		if relabel {
			rl.Configs = rules
		}
		lim := Limits{Histograms: Histograms{Native: true}}
		out, n, err := Process(context.Background(), body, protoCT, lim, rl)
		if err != nil {
			if !errors.Is(err, ErrInvalidBody) {
				t.Fatalf("error does not wrap ErrInvalidBody: %v", err)
			}
			if !utf8.ValidString(err.Error()) {
				t.Fatalf("reason is not UTF-8: %q", err)
			}
			return
		}
		_, n2, err := Process(context.Background(), out, protoCT, lim, Relabel{})
		if err != nil {
			t.Fatalf("the published body does not validate again: %v", err)
		}
		if n2 != n {
			t.Fatalf("validated again: %d samples, want %d", n2, n)
		}
	})
}
