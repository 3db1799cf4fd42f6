package pushgateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"time"
)

// The gateway's own families, which it adds to every group.
const (
	PushTimeFamily        = "push_time_seconds"
	PushFailureTimeFamily = "push_failure_time_seconds"
)

// Group is a group the gateway holds, as its JSON API reports it.
type Group struct {
	// Grouping holds the grouping labels, job included. GroupingOf turns it
	// back into the key Delete needs.
	Grouping map[string]string
	// PushTime is the last successful push (push_time_seconds), zero when
	// none has succeeded: the gateway keeps a group for a refused first push,
	// holding only its push_time_seconds (0) and push_failure_time_seconds.
	PushTime time.Time
	// LastPushSuccessful is false when the latest push was refused.
	LastPushSuccessful bool
	// Families are the group's families by name, the gateway's
	// push_time_seconds and push_failure_time_seconds included.
	Families map[string]Family
}

// Family is one metric family of a group.
type Family struct {
	Type    string // the client_model type name: COUNTER, GAUGE, UNTYPED, SUMMARY, HISTOGRAM…
	Help    string
	Metrics []Metric
}

// Metric is one metric of a family. Its labels include the grouping labels and
// an instance label (empty when neither the push nor the grouping had one), as
// the gateway adds them. For a summary or histogram, Value is the sample count
// and Sum the sample sum; quantiles and buckets are not kept. For other types,
// Value is the value and Sum is zero.
type Metric struct {
	Labels map[string]string
	Value  float64
	Sum    float64
}

// Groups lists every group the gateway holds (GET /api/v1/metrics), sorted by
// grouping key. The answer holds every series of every group, so on a gateway
// of many large groups, name the families wanted: the others are skipped while
// decoding (which saves the client memory, not the gateway time).
// push_time_seconds and push_failure_time_seconds are always kept.
//
// Options.ListTimeout bounds the listing as a whole, reading included.
func (c *Client) Groups(ctx context.Context, families ...string) ([]Group, error) {
	keep := func(string) bool { return true }
	if len(families) > 0 {
		want := make(map[string]bool, len(families)+2)
		for _, f := range families {
			want[f] = true
		}
		want[PushTimeFamily] = true
		want[PushFailureTimeFamily] = true
		keep = func(name string) bool { return want[name] }
	}
	var groups []Group
	r := request{op: "list groups", method: http.MethodGet, path: "/api/v1/metrics", accept: "application/json", timeout: c.list}
	_, err := c.do(ctx, r, func(body io.Reader) error {
		var err error
		groups, err = decodeGroups(body, keep)
		return err
	})
	if err != nil {
		return nil, err
	}
	sort.Sort(byKey(groups))
	return groups, nil
}

// byKey sorts groups by their grouping's String, computed anew per comparison:
// listings are small next to the JSON they came from.
type byKey []Group

func (s byKey) Len() int      { return len(s) }
func (s byKey) Swap(i, j int) { s[i], s[j] = s[j], s[i] }
func (s byKey) Less(i, j int) bool {
	return GroupingOf(s[i].Grouping).String() < GroupingOf(s[j].Grouping).String()
}

// decodeGroups reads the API's answer one family at a time, so that skipped
// families cost only a transient copy:
//
//	{"status": "success", "data": [
//	  {"labels": {"job": "…", …}, "last_push_successful": true,
//	   "<family>": {"time_stamp": "…", "type": "GAUGE", "help": "…",
//	     "metrics": [{"labels": {…}, "value": "1.5"}]},   // "count", "sum" and
//	   …},                                               // "buckets"/"quantiles"
//	  …]}                                                // for histograms, summaries
func decodeGroups(r io.Reader, keep func(string) bool) ([]Group, error) {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return nil, err
	}
	var (
		status, apiErr string
		groups         []Group
	)
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return nil, err
		}
		switch key {
		case "status":
			err = dec.Decode(&status)
		case "error":
			err = dec.Decode(&apiErr)
		case "data":
			groups, err = decodeData(dec, keep)
		default:
			err = dec.Decode(&json.RawMessage{})
		}
		if err != nil {
			return nil, fmt.Errorf("%v: %w", key, err)
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, err
	}
	if status != "success" {
		return nil, fmt.Errorf("API status %q: %s", status, apiErr)
	}
	return groups, nil
}

func decodeData(dec *json.Decoder, keep func(string) bool) ([]Group, error) {
	if err := expectDelim(dec, '['); err != nil {
		return nil, err
	}
	var groups []Group
	for dec.More() {
		g, err := decodeGroup(dec, keep)
		if err != nil {
			return nil, fmt.Errorf("group %d: %w", len(groups), err)
		}
		groups = append(groups, g)
	}
	return groups, expectDelim(dec, ']')
}

func decodeGroup(dec *json.Decoder, keep func(string) bool) (Group, error) {
	g := Group{Families: map[string]Family{}}
	if err := expectDelim(dec, '{'); err != nil {
		return g, err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return g, err
		}
		name, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return g, fmt.Errorf("%q: %w", name, err)
		}
		// The group's own keys share the object with its families, so a
		// family named "labels" or "last_push_successful" replaces them; the
		// value's shape tells which it is.
		switch name {
		case "labels":
			var labels map[string]string
			if json.Unmarshal(raw, &labels) == nil {
				g.Grouping = labels
				continue
			}
		case "last_push_successful":
			if json.Unmarshal(raw, &g.LastPushSuccessful) == nil {
				continue
			}
		}
		if !keep(name) {
			continue
		}
		f, err := decodeFamily(raw)
		if err != nil {
			return g, fmt.Errorf("family %q: %w", name, err)
		}
		g.Families[name] = f
	}
	if err := expectDelim(dec, '}'); err != nil {
		return g, err
	}

	if pt, ok := g.Families[PushTimeFamily]; ok && len(pt.Metrics) > 0 {
		if g.Grouping == nil {
			// Shadowed by a family named "labels": the gateway gives its
			// own series exactly the grouping labels (and instance).
			g.Grouping = pt.Metrics[0].Labels
		}
		g.PushTime = unixTime(pt.Metrics[0].Value)
	}
	if g.Grouping == nil {
		return g, errors.New("no grouping labels")
	}
	return g, nil
}

type jsonFamily struct {
	Type    string `json:"type"`
	Help    string `json:"help"`
	Metrics []struct {
		Labels map[string]string `json:"labels"`
		Value  *string           `json:"value"`
		Count  *string           `json:"count"`
		Sum    *string           `json:"sum"`
	} `json:"metrics"`
}

func decodeFamily(raw json.RawMessage) (Family, error) {
	var jf jsonFamily
	if err := json.Unmarshal(raw, &jf); err != nil {
		return Family{}, err
	}
	f := Family{Type: jf.Type, Help: jf.Help, Metrics: make([]Metric, len(jf.Metrics))}
	for i, jm := range jf.Metrics {
		m := Metric{Labels: jm.Labels}
		var err error
		// The gateway writes numbers as Go's fmt.Sprint does ("1e+06",
		// "NaN", "+Inf"), which ParseFloat reads back exactly.
		switch {
		case jm.Value != nil:
			m.Value, err = strconv.ParseFloat(*jm.Value, 64)
		case jm.Count != nil:
			m.Value, err = strconv.ParseFloat(*jm.Count, 64)
			if err == nil && jm.Sum != nil {
				m.Sum, err = strconv.ParseFloat(*jm.Sum, 64)
			}
		}
		if err != nil {
			return f, fmt.Errorf("metric %d: %w", i, err)
		}
		f.Metrics[i] = m
	}
	return f, nil
}

// unixTime converts the gateway's float seconds; 0 is "never".
func unixTime(sec float64) time.Time {
	if sec == 0 || math.IsNaN(sec) || math.IsInf(sec, 0) {
		return time.Time{}
	}
	s, frac := math.Modf(sec)
	return time.Unix(int64(s), int64(math.Round(frac*1e9)))
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("unexpected %v, want %v", tok, want)
	}
	return nil
}
