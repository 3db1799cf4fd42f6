// Package targets serves the drain's /targets page: every target the drain knows, its
// newest scrape and what became of it in each sink, as one HTML page for people and as
// JSON for tools.
package targets

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus-streams/prometheus-streams/drain"
)

// Handler serves the statuses source returns (sorted by job and instance, as
// drain.Drain.Targets returns them), calling it once per request.
//
// It answers HTML by default, and JSON when the request's Accept header names
// application/json or its query has format=json (format=html forces HTML). The query
// parameters job, publisher and state keep only the targets with that exact value, and
// instance those whose instance contains the value; a parameter given more than once
// keeps any of its values. The HTML page filters and sorts further in the browser.
//
// The JSON document (a field is never omitted; times are RFC 3339 in UTC with
// milliseconds, or null when unknown; durations are in seconds):
//
//	{
//	  "generated_at": "2025-01-02T03:04:05.678Z",
//	  "total": 10000,              // targets the drain knows
//	  "shown": 2,                  // of those, the ones the query's filters kept
//	  "targets": [{
//	    "job": "node", "instance": "host:9100",
//	    "publisher": "edge1",      // identity of the edge that published the scrape
//	    "site": "dc1",             // "" when the envelope carries none
//	    "state": "up",             // up, down, pending, retrying, rejected, expired or stale
//	    "up": true,                // whether the scrape itself succeeded
//	    "scrape_error": "",        // why it failed; "" when up
//	    "scrape_start": "…",       // by the edge's clock
//	    "scrape_duration_seconds": 0.123,
//	    "series": 42,
//	    "received": "…",           // when its message reached the drain
//	    "lag_seconds": 0.8,        // received minus scrape_start
//	    "age_seconds": 12.5,       // generated_at minus scrape_start
//	    "seq": 1234,               // the message's sequence on the channel
//	    "sinks": [{
//	      "sink": "pushgateway",
//	      "fate": "delivered",     // pending, delivered, rejected, superseded, retrying or expired
//	      "error": "",             // the rejection's reason or the last retry's error
//	      "at": "…",               // when the fate was decided (retrying: the last attempt)
//	      "attempts": 1,
//	      "last_success": "…"      // when the sink last took a scrape of the target
//	    }]
//	  }]
//	}
//
// See drain.TargetStatus for what each value means.
func Handler(source func() []drain.TargetStatus) http.Handler {
	p := newPage()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		q := r.URL.Query()
		f, err := parseFilter(q)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		asJSON, err := wantsJSON(q.Get("format"), r.Header.Get("Accept"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		all := source()
		now := time.Now()
		shown := f.apply(all)

		h := w.Header()
		h.Set("Vary", "Accept, Accept-Encoding")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		if asJSON {
			h.Set("Content-Type", "application/json")
		} else {
			h.Set("Content-Type", "text/html; charset=utf-8")
			h.Set("Content-Security-Policy", p.csp)
			h.Set("Referrer-Policy", "no-referrer")
		}
		out, done := compress(w, r)
		defer done()
		if asJSON {
			err = writeJSON(out, all, shown, now)
		} else {
			err = p.write(out, all, shown, f, now)
		}
		if err != nil {
			// Headers are out: all that is left is to cut the response short, which
			// the client sees as a truncated body.
			panic(http.ErrAbortHandler)
		}
	})
}

// compress wraps w in gzip when the client accepts it: the page at thousands of
// targets is megabytes of repetitive markup. done flushes and must be called.
func compress(w http.ResponseWriter, r *http.Request) (io.Writer, func()) {
	if !acceptsGzip(r.Header.Get("Accept-Encoding")) {
		bw := bufio.NewWriterSize(w, 32<<10)
		return bw, func() { bw.Flush() }
	}
	w.Header().Set("Content-Encoding", "gzip")
	w.Header().Del("Content-Length")
	gz, _ := gzip.NewWriterLevel(w, gzip.BestSpeed) // a valid level: no error
	bw := bufio.NewWriterSize(gz, 32<<10)
	return bw, func() {
		bw.Flush()
		gz.Close()
	}
}

func acceptsGzip(header string) bool {
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(part, ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		if name, v, _ := strings.Cut(params, "="); strings.TrimSpace(name) == "q" {
			q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return err == nil && q > 0
		}
		return true
	}
	return false
}

// wantsJSON decides the response's format from the format parameter, else from Accept.
func wantsJSON(format, accept string) (bool, error) {
	switch format {
	case "json":
		return true, nil
	case "html":
		return false, nil
	case "":
	default:
		return false, fmt.Errorf("format %q: want json or html", format)
	}
	for part := range strings.SplitSeq(accept, ",") {
		if mt, _, err := mime.ParseMediaType(part); err == nil && mt == "application/json" {
			return true, nil
		}
	}
	return false, nil
}

// filter is the query's narrowing of the targets: each field any of its values.
type filter struct {
	job, publisher, state, instance []string
}

var states = []drain.State{drain.StateUp, drain.StateDown, drain.StatePending, drain.StateRetrying,
	drain.StateRejected, drain.StateExpired, drain.StateStale}

func parseFilter(q map[string][]string) (filter, error) {
	f := filter{job: q["job"], publisher: q["publisher"], state: q["state"], instance: q["instance"]}
	for _, s := range f.state {
		if !slices.Contains(states, drain.State(s)) {
			return f, fmt.Errorf("state %q: want one of %s", s, stateList())
		}
	}
	return f, nil
}

func stateList() string {
	s := make([]string, len(states))
	for i, st := range states {
		s[i] = string(st)
	}
	return strings.Join(s, ", ")
}

func (f filter) empty() bool {
	return len(f.job)+len(f.publisher)+len(f.state)+len(f.instance) == 0
}

// apply returns the targets f keeps, sharing ts's backing array when f keeps all.
func (f filter) apply(ts []drain.TargetStatus) []drain.TargetStatus {
	if f.empty() {
		return ts
	}
	var out []drain.TargetStatus
	for i := range ts {
		t := &ts[i]
		if anyOf(f.job, t.Job) && anyOf(f.publisher, t.Publisher) && anyOf(f.state, string(t.State)) &&
			(len(f.instance) == 0 || slices.ContainsFunc(f.instance, func(s string) bool { return strings.Contains(t.Instance, s) })) {
			out = append(out, *t)
		}
	}
	return out
}

func anyOf(want []string, v string) bool { return len(want) == 0 || slices.Contains(want, v) }

// jsonTime is a time as the JSON shows it: RFC 3339, UTC, milliseconds; null when zero.
type jsonTime time.Time

const timeFormat = "2006-01-02T15:04:05.000Z07:00"

func (t jsonTime) MarshalJSON() ([]byte, error) {
	if time.Time(t).IsZero() {
		return []byte("null"), nil
	}
	b := make([]byte, 0, len(timeFormat)+2)
	b = append(b, '"')
	b = time.Time(t).UTC().AppendFormat(b, timeFormat)
	return append(b, '"'), nil
}

type jsonDocument struct {
	GeneratedAt jsonTime     `json:"generated_at"`
	Total       int          `json:"total"`
	Shown       int          `json:"shown"`
	Targets     []jsonTarget `json:"targets"`
}

type jsonTarget struct {
	Job            string     `json:"job"`
	Instance       string     `json:"instance"`
	Publisher      string     `json:"publisher"`
	Version        string     `json:"publisher_version"`
	Site           string     `json:"site"`
	State          string     `json:"state"`
	Up             bool       `json:"up"`
	ScrapeError    string     `json:"scrape_error"`
	ScrapeStart    jsonTime   `json:"scrape_start"`
	ScrapeDuration float64    `json:"scrape_duration_seconds"`
	Series         int        `json:"series"`
	Received       jsonTime   `json:"received"`
	Lag            float64    `json:"lag_seconds"`
	Age            float64    `json:"age_seconds"`
	Seq            uint64     `json:"seq"`
	Sinks          []jsonSink `json:"sinks"`
}

type jsonSink struct {
	Sink        string   `json:"sink"`
	Fate        string   `json:"fate"`
	Error       string   `json:"error"`
	At          jsonTime `json:"at"`
	Attempts    int      `json:"attempts"`
	LastSuccess jsonTime `json:"last_success"`
}

func writeJSON(w io.Writer, all, shown []drain.TargetStatus, now time.Time) error {
	doc := jsonDocument{GeneratedAt: jsonTime(now), Total: len(all), Shown: len(shown), Targets: make([]jsonTarget, len(shown))}
	for i := range shown {
		t := &shown[i]
		jt := jsonTarget{
			Job: t.Job, Instance: t.Instance, Publisher: t.Publisher, Version: t.Version, Site: t.Site, State: string(t.State),
			Up: t.Error == "", ScrapeError: t.Error, ScrapeStart: jsonTime(t.Start), ScrapeDuration: t.Duration.Seconds(),
			Series: t.Series, Received: jsonTime(t.Received), Lag: t.Lag().Seconds(), Age: t.Age.Seconds(), Seq: t.Seq,
			Sinks: make([]jsonSink, len(t.Sinks)),
		}
		for j, s := range t.Sinks {
			jt.Sinks[j] = jsonSink{Sink: s.Sink, Fate: string(s.Fate), Error: s.Error, At: jsonTime(s.At),
				Attempts: s.Attempts, LastSuccess: jsonTime(s.LastSuccess)}
		}
		doc.Targets[i] = jt
	}
	return json.NewEncoder(w).Encode(doc)
}
