package pushgateway

import (
	"bytes"
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
	want := func(string) detail { return fullFamily }
	if len(families) > 0 {
		keep := make(map[string]bool, len(families)+2)
		for _, f := range families {
			keep[f] = true
		}
		keep[PushTimeFamily] = true
		keep[PushFailureTimeFamily] = true
		want = func(name string) detail {
			if keep[name] {
				return fullFamily
			}
			return skipFamily
		}
	}
	var groups []Group
	err := c.eachGroup(ctx, want, func(g Group) error {
		groups = append(groups, g)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Sort(byKey(groups))
	return groups, nil
}

// detail is how much of a family a listing decodes.
type detail int

const (
	skipFamily detail = iota
	familyMeta        // type and help only: Family.Metrics is nil
	fullFamily
)

// eachGroup lists the gateway's groups as Groups does, handing each to fn as soon
// as it is decoded, so that a listing of a large gateway never holds more than one
// group's families; want says how much of each family to decode.
// push_time_seconds is always decoded in full, for Group.PushTime.
func (c *Client) eachGroup(ctx context.Context, want func(name string) detail, fn func(Group) error) error {
	r := request{op: "list groups", method: http.MethodGet, path: "/api/v1/metrics", accept: "application/json", timeout: c.list}
	var fnErr error
	_, err := c.do(ctx, r, func(body io.Reader) error {
		return decodeEach(body, want, func(g Group) error {
			if err := fn(g); err != nil {
				fnErr = err
				return err
			}
			return nil
		})
	})
	if fnErr != nil {
		return fnErr
	}
	return err
}

// byKey sorts groups by their grouping's String, computed anew per comparison:
// listings are small next to the JSON they came from.
type byKey []Group

func (s byKey) Len() int      { return len(s) }
func (s byKey) Swap(i, j int) { s[i], s[j] = s[j], s[i] }
func (s byKey) Less(i, j int) bool {
	return GroupingOf(s[i].Grouping).String() < GroupingOf(s[j].Grouping).String()
}

// decodeGroups decodes a whole answer, keeping the families keep names in full.
func decodeGroups(r io.Reader, keep func(string) bool) ([]Group, error) {
	var groups []Group
	err := decodeEach(r, func(name string) detail {
		if keep(name) {
			return fullFamily
		}
		return skipFamily
	}, func(g Group) error {
		groups = append(groups, g)
		return nil
	})
	return groups, err
}

// decodeEach reads the API's answer one family at a time, so that skipped
// families cost only a transient copy, and hands fn each group:
//
//	{"status": "success", "data": [
//	  {"labels": {"job": "…", …}, "last_push_successful": true,
//	   "<family>": {"time_stamp": "…", "type": "GAUGE", "help": "…",
//	     "metrics": [{"labels": {…}, "value": "1.5"}]},   // "count", "sum" and
//	   …},                                               // "buckets"/"quantiles"
//	  …]}                                                // for histograms, summaries
func decodeEach(r io.Reader, want func(string) detail, fn func(Group) error) error {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	var status, apiErr string
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return err
		}
		switch key {
		case "status":
			err = dec.Decode(&status)
		case "error":
			err = dec.Decode(&apiErr)
		case "data":
			err = decodeData(dec, want, fn)
		default:
			err = dec.Decode(&json.RawMessage{})
		}
		if err != nil {
			return fmt.Errorf("%v: %w", key, err)
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return err
	}
	if status != "success" {
		return fmt.Errorf("API status %q: %s", status, apiErr)
	}
	return nil
}

func decodeData(dec *json.Decoder, want func(string) detail, fn func(Group) error) error {
	if err := expectDelim(dec, '['); err != nil {
		return err
	}
	for n := 0; dec.More(); n++ {
		g, err := decodeGroup(dec, want)
		if err != nil {
			return fmt.Errorf("group %d: %w", n, err)
		}
		if err := fn(g); err != nil {
			return err
		}
	}
	return expectDelim(dec, ']')
}

func decodeGroup(dec *json.Decoder, want func(string) detail) (Group, error) {
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
		d := want(name)
		switch {
		case name == PushTimeFamily:
			d = fullFamily
		case name == "labels" || name == "last_push_successful":
			d = fullFamily // read whole: it may be one of the group's own keys
		}
		if d == familyMeta {
			// Straight from the stream: a family's series are read once, to skip them.
			f, err := decodeMeta(dec)
			if err != nil {
				return g, fmt.Errorf("family %q: %w", name, err)
			}
			g.Families[name] = f
			continue
		}
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
			d = want(name)
		case "last_push_successful":
			if json.Unmarshal(raw, &g.LastPushSuccessful) == nil {
				continue
			}
			d = want(name)
		}
		if d == skipFamily {
			continue
		}
		f, err := decodeFamily(raw, d == fullFamily)
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

// decodeFamily decodes one family of a listing, its metrics only when full.
func decodeFamily(raw json.RawMessage, full bool) (Family, error) {
	if !full {
		return decodeMeta(json.NewDecoder(bytes.NewReader(raw)))
	}
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

// decodeMeta reads a family object's type and help from dec, skipping the rest.
func decodeMeta(dec *json.Decoder) (Family, error) {
	var f Family
	if err := expectDelim(dec, '{'); err != nil {
		return f, err
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return f, err
		}
		switch key {
		case "type":
			err = dec.Decode(&f.Type)
		case "help":
			err = dec.Decode(&f.Help)
		default:
			err = dec.Decode(&json.RawMessage{})
		}
		if err != nil {
			return f, fmt.Errorf("%v: %w", key, err)
		}
	}
	return f, expectDelim(dec, '}')
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
