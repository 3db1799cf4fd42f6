package edge

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/edge/scrape"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// testJob is job name scraping targets in the text format, each within 5 s.
func testJob(name string, targets ...scrape.Target) *Job {
	return &Job{
		Job:     scrape.Job{Name: name, Accept: "text/plain;version=0.0.4", Timeout: 5 * time.Second, Compression: true},
		Targets: targets,
	}
}

func testJobs() []*Job {
	a := testJob("a",
		scrape.Target{Name: "t1", URL: "http://127.0.0.1:1/", Labels: map[string]string{"team": "y"}},
		scrape.Target{Name: "shared", URL: "http://127.0.0.1:2/"})
	a.Labels = map[string]string{"dc": "one", "team": "x"}
	b := testJob("b", scrape.Target{Name: "t2", URL: "http://127.0.0.1:3/"}, scrape.Target{Name: "shared", URL: "http://127.0.0.1:4/"})
	return []*Job{a, b}
}

func keys(sel []Selected) string {
	var k []string
	for _, s := range sel {
		k = append(k, s.Key())
	}
	return strings.Join(k, " ")
}

func TestSelect(t *testing.T) {
	jobs := testJobs()
	tests := []struct {
		jobs, targets []string
		want          string
		err           string
	}{
		{nil, nil, "a/t1 a/shared b/t2 b/shared", ""},
		{[]string{"b"}, nil, "b/t2 b/shared", ""},
		{nil, []string{"t2", "a/shared"}, "b/t2 a/shared", ""},
		{nil, []string{"t1", "a/t1"}, "a/t1", ""},
		{[]string{"b"}, []string{"shared"}, "b/shared", ""},
		{nil, []string{"shared"}, "", `target "shared" is ambiguous: name one of a/shared, b/shared`},
		{nil, []string{"nope"}, "", `unknown target "nope"; known targets: a/shared, a/t1, b/shared, b/t2`},
		{[]string{"c"}, nil, "", `unknown job "c"; known jobs: a, b`},
		{[]string{"b"}, []string{"t1"}, "", `unknown target "t1"`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.jobs, tt.targets), func(t *testing.T) {
			sel, err := Select(jobs, tt.jobs, tt.targets)
			if tt.err != "" {
				if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("err = %v, want usage error containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := keys(sel); got != tt.want {
				t.Errorf("selected %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEnvelope(t *testing.T) {
	o := Options{Identity: "edge1", Site: "dc9", Jobs: testJobs()}
	o.Jobs[0].HonorLabels = true
	o.Jobs[0].Histograms = scrape.Histograms{AlwaysClassic: true}
	sel, _ := Select(o.Jobs, nil, []string{"t1"})
	r := New(o, nil, nil, nil, "build1")
	ok := &scrape.Result{Body: []byte("up 1\n"), ContentType: "text/plain", Series: 1, HTTPStatus: 200}
	e := r.Envelope(sel[0], ok)
	if e.Job != "a" || e.Instance != "t1" || e.Publisher != "edge1" || e.Site != "dc9" || string(e.Body) != "up 1\n" || e.Error != "" ||
		!e.HonorLabels || e.Histograms != (envelope.Histograms{AlwaysClassic: true}) || e.PublisherVersion != "build1" {
		t.Errorf("envelope = %+v", e)
	}
	// The target's labels win over the job's; the result is sorted by name.
	if fmt.Sprint(e.Labels) != "[{dc one} {team y}]" {
		t.Errorf("labels = %v", e.Labels)
	}
	failed := &scrape.Result{Err: errors.New("boom"), HTTPStatus: 500, Body: []byte("partial"), Series: 3}
	e = r.Envelope(sel[0], failed)
	if e.Error != "boom" || e.Body != nil || e.ContentType != "" || e.HTTPStatus != 500 {
		t.Errorf("failed envelope = %+v", e)
	}
}
