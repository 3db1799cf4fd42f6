package targets

import (
	"crypto/sha256"
	_ "embed" // the page's template, script and style
	"encoding/base64"
	"html/template"
	"io"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus-streams/prometheus-streams/drain"
)

// The page is one self-contained document: its script and style are inlined, and the
// Content-Security-Policy allows exactly those two and nothing else, so that even a
// label that slipped through escaping could not run script.
var (
	//go:embed page.html
	pageHTML string
	//go:embed page.js
	pageJS string
	//go:embed page.css
	pageCSS string
)

type page struct {
	tmpl *template.Template
	csp  string
}

func newPage() *page {
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	return &page{
		tmpl: template.Must(template.New("targets").Parse(pageHTML)),
		csp: "default-src 'none'; script-src " + hash(pageJS) + "; style-src " + hash(pageCSS) +
			"; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
	}
}

// view is what the template renders: every value already a string, so that rendering
// ten thousand rows is mostly escaping and copying.
type view struct {
	JS          template.JS
	CSS         template.CSS
	Generated   string
	Total       int  // targets the drain knows
	Filtered    bool // the query's filters dropped some
	Sinks       []string
	Jobs        []string
	Publishers  []string
	States      []stateCount
	Rows        []row
	QueryFilter string // the query's filters, said in words
}

type stateCount struct {
	State string
	N     int
}

type row struct {
	Job, Instance, Publisher, Site, State string
	Start, StartTitle, StartMs            string
	Outcome                               string // "ok" or the scrape's error
	Up                                    bool
	Series, Seq                           string
	Lag, LagS, Age, AgeS                  string
	Sinks                                 []sinkCell
}

type sinkCell struct {
	Fate, Error, Title string
	LastOK, LastOKMs   string
}

func (p *page) write(w io.Writer, all, shown []drain.TargetStatus, f filter, now time.Time) error {
	v := view{
		JS:        template.JS(pageJS),
		CSS:       template.CSS(pageCSS),
		Generated: now.UTC().Format(timeFormat),
		Total:     len(all),
		Filtered:  len(shown) != len(all),
		Rows:      make([]row, len(shown)),
	}
	jobs, publishers, counts := map[string]bool{}, map[string]bool{}, map[drain.State]int{}
	for i := range shown {
		t := &shown[i]
		jobs[t.Job], publishers[t.Publisher] = true, true
		counts[t.State]++
		if len(t.Sinks) > len(v.Sinks) {
			v.Sinks = v.Sinks[:0]
			for _, s := range t.Sinks {
				v.Sinks = append(v.Sinks, s.Sink)
			}
		}
		v.Rows[i] = newRow(t, now)
	}
	v.Jobs = slices.Sorted(maps.Keys(jobs))
	v.Publishers = slices.Sorted(maps.Keys(publishers))
	for _, s := range states {
		if counts[s] > 0 {
			v.States = append(v.States, stateCount{string(s), counts[s]})
		}
	}
	if !f.empty() {
		v.QueryFilter = f.String()
	}
	return p.tmpl.Execute(w, &v)
}

func newRow(t *drain.TargetStatus, now time.Time) row {
	r := row{
		Job: t.Job, Instance: t.Instance, Publisher: t.Publisher, Site: t.Site, State: string(t.State),
		Start: t.Start.UTC().Format("15:04:05.000"), StartTitle: t.Start.UTC().Format(timeFormat), StartMs: millis(t.Start),
		Outcome: "ok", Up: t.Error == "", Series: strconv.Itoa(t.Series), Seq: strconv.FormatUint(t.Seq, 10),
		Lag: duration(t.Lag()), LagS: seconds(t.Lag()), Age: duration(t.Age), AgeS: seconds(t.Age),
		Sinks: make([]sinkCell, len(t.Sinks)),
	}
	if !r.Up {
		r.Outcome = t.Error
	}
	for i, s := range t.Sinks {
		c := sinkCell{Fate: string(s.Fate), Error: s.Error, LastOK: "never", LastOKMs: millis(s.LastSuccess)}
		c.Title = string(s.Fate) + " at " + s.At.UTC().Format(timeFormat) + ", attempts " + strconv.Itoa(s.Attempts)
		if s.Error != "" {
			c.Title += ": " + s.Error
		}
		if !s.LastSuccess.IsZero() {
			c.LastOK = duration(now.Sub(s.LastSuccess)) + " ago"
		}
		r.Sinks[i] = c
	}
	return r
}

// millis is t as Unix milliseconds, the page's sort key for times; "" for the zero time.
func millis(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) }

// duration is d for people: milliseconds under ten seconds, tenths under a minute,
// seconds beyond.
func duration(d time.Duration) string {
	switch a := d.Abs(); {
	case a < 10*time.Second:
		return d.Round(time.Millisecond).String()
	case a < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// String says f in words for the page, e.g. `job=node state=down`.
func (f filter) String() string {
	var s []byte
	add := func(name string, vals []string) {
		for _, v := range vals {
			if len(s) > 0 {
				s = append(s, ' ')
			}
			s = append(s, name...)
			s = append(s, '=')
			s = strconv.AppendQuote(s, v)
		}
	}
	add("job", f.job)
	add("publisher", f.publisher)
	add("state", f.state)
	add("instance", f.instance)
	return string(s)
}
