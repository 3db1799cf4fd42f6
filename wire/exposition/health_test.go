package exposition

import (
	"bytes"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
)

func TestHealth(t *testing.T) {
	tgt := Target{Job: "node", Instance: "host:9100", Labels: []Label{{"dc", "fra"}, {"empty", ""}}}
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) // fractions: TestUnixSeconds
	for _, tc := range []struct {
		name string
		o    Outcome
		want string
	}{
		{"up", Outcome{Up: true, Start: start, Duration: 1500 * time.Millisecond, Samples: 507}, `
# HELP streams_scrape_duration_seconds Duration of the edge's last scrape of the target, in seconds.
# TYPE streams_scrape_duration_seconds gauge
streams_scrape_duration_seconds{dc="fra",instance="host:9100",job="node"} 1.5
# HELP streams_scrape_samples Samples in the target's exposition at the edge's last scrape, as the edge counted them.
# TYPE streams_scrape_samples gauge
streams_scrape_samples{dc="fra",instance="host:9100",job="node"} 507
# HELP streams_scrape_timestamp_seconds Unix time in seconds at which the edge started its last scrape of the target.
# TYPE streams_scrape_timestamp_seconds gauge
streams_scrape_timestamp_seconds{dc="fra",instance="host:9100",job="node"} 1.767323045e+09
# HELP streams_scrape_up 1 if the edge's last scrape of the target succeeded, 0 if it failed.
# TYPE streams_scrape_up gauge
streams_scrape_up{dc="fra",instance="host:9100",job="node"} 1
`},
		{"failed", Outcome{Start: start, Duration: 10 * time.Second}, `
# HELP streams_scrape_duration_seconds Duration of the edge's last scrape of the target, in seconds.
# TYPE streams_scrape_duration_seconds gauge
streams_scrape_duration_seconds{dc="fra",instance="host:9100",job="node"} 10
# HELP streams_scrape_samples Samples in the target's exposition at the edge's last scrape, as the edge counted them.
# TYPE streams_scrape_samples gauge
streams_scrape_samples{dc="fra",instance="host:9100",job="node"} 0
# HELP streams_scrape_timestamp_seconds Unix time in seconds at which the edge started its last scrape of the target.
# TYPE streams_scrape_timestamp_seconds gauge
streams_scrape_timestamp_seconds{dc="fra",instance="host:9100",job="node"} 1.767323045e+09
# HELP streams_scrape_up 1 if the edge's last scrape of the target succeeded, 0 if it failed.
# TYPE streams_scrape_up gauge
streams_scrape_up{dc="fra",instance="host:9100",job="node"} 0
`},
		{"no start", Outcome{}, `
# HELP streams_scrape_duration_seconds Duration of the edge's last scrape of the target, in seconds.
# TYPE streams_scrape_duration_seconds gauge
streams_scrape_duration_seconds{dc="fra",instance="host:9100",job="node"} 0
# HELP streams_scrape_samples Samples in the target's exposition at the edge's last scrape, as the edge counted them.
# TYPE streams_scrape_samples gauge
streams_scrape_samples{dc="fra",instance="host:9100",job="node"} 0
# HELP streams_scrape_timestamp_seconds Unix time in seconds at which the edge started its last scrape of the target.
# TYPE streams_scrape_timestamp_seconds gauge
streams_scrape_timestamp_seconds{dc="fra",instance="host:9100",job="node"} 0
# HELP streams_scrape_up 1 if the edge's last scrape of the target succeeded, 0 if it failed.
# TYPE streams_scrape_up gauge
streams_scrape_up{dc="fra",instance="host:9100",job="node"} 0
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fams := Health(tgt, tc.o)
			checkSorted(t, fams)
			if got := "\n" + asText(t, fams); got != tc.want {
				t.Errorf("got:%s\nwant:%s", got, tc.want)
			}
			for _, mf := range fams {
				if !IsHealthName(mf.GetName()) {
					t.Errorf("IsHealthName(%q) is false", mf.GetName())
				}
			}
			// The families must survive a sink's text round trip.
			var b bytes.Buffer
			if err := Encode(&b, fams, expfmt.NewFormat(expfmt.TypeTextPlain)); err != nil {
				t.Fatal(err)
			}
			back, err := Parse(b.Bytes(), "")
			if err != nil || len(back) != len(fams) {
				t.Fatalf("round trip: %d families, %v", len(back), err)
			}
		})
	}
	for _, n := range []string{"up", "scrape_duration_seconds", "streams_scrape_upx", ""} {
		if IsHealthName(n) {
			t.Errorf("IsHealthName(%q) is true", n)
		}
	}
}

func TestUnixSeconds(t *testing.T) {
	for _, tm := range []time.Time{
		time.Unix(1767323045, 123456789), time.Unix(1700000000, 1), time.Unix(0, 999999999),
		time.Date(3000, 1, 1, 0, 0, 0, 500_000_000, time.UTC),
	} {
		want := float64(tm.Unix()) + float64(tm.Nanosecond())/1e9
		if tm.Year() < 2262 {
			want = float64(tm.UnixNano()) / 1e9
		}
		if got := unixSeconds(tm); got != want {
			t.Errorf("%v: %v, want %v", tm, got, want)
		}
	}
	if got := unixSeconds(time.Time{}); got != 0 {
		t.Errorf("zero time: %v", got)
	}
}

// TestHealthLabelsShared checks that appending to one health metric's labels, as a sink
// might, leaves the others alone.
func TestHealthLabelsShared(t *testing.T) {
	fams := Health(Target{Job: "j", Instance: "i"}, Outcome{Up: true})
	fams[0].Metric[0].Label = append(fams[0].Metric[0].Label, pairsOf("x", "y")...)
	for _, mf := range fams[1:] {
		if got := render(mf.Metric[0].Label); got != `{instance="i",job="j"}` {
			t.Errorf("%s: %s", mf.GetName(), got)
		}
	}
}
