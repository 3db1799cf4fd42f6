package pushgateway

import (
	"strings"
	"testing"
)

func TestPath(t *testing.T) {
	for _, c := range []struct {
		g    Grouping
		want string
	}{
		{Grouping{{"job", "node"}}, "/metrics/job/node"},
		{Grouping{{"job", "node"}, {"instance", "host:9100"}}, "/metrics/job/node/instance/host:9100"},
		// '/' would split the value; URL-safe base64 keeps the path one segment.
		{Grouping{{"job", "a/b"}, {"instance", "http://h/x?"}}, "/metrics/job@base64/YS9i/instance@base64/aHR0cDovL2gveD8"},
		// Empty, "." and ".." would be cleaned away by the gateway's ServeMux.
		{Grouping{{"job", "j"}, {"instance", ""}}, "/metrics/job/j/instance@base64/="},
		{Grouping{{"job", "j"}, {"a", "."}, {"b", ".."}}, "/metrics/job/j/a@base64/Lg/b@base64/Li4"},
		// Path escaping, which the gateway decodes back: '+' is not a space.
		{Grouping{{"job", "j"}, {"instance", "a b+c%d?e#f;g"}}, "/metrics/job/j/instance/a%20b+c%25d%3Fe%23f%3Bg"},
		{Grouping{{"job", "j"}, {"instance", "héllo"}}, "/metrics/job/j/instance/h%C3%A9llo"},
	} {
		if got := c.g.Path(); got != c.want {
			t.Errorf("%v.Path() = %s, want %s", c.g, got, c.want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		g    Grouping
		want string // in the error; "" for valid
	}{
		{Grouping{{"job", "j"}, {"instance", ""}, {"dc", "x"}}, ""},
		{nil, "start with the job"},
		{Grouping{{"instance", "i"}, {"job", "j"}}, "start with the job"},
		{Grouping{{"job", ""}}, "job label must not be empty"},
		{Grouping{{"job", "j"}, {"__x", "1"}}, "reserved"},
		{Grouping{{"job", "j"}, {"site.name", "1"}}, "not a legacy label name"},
		{Grouping{{"job", "j"}, {"a", "1"}, {"a", "2"}}, "twice"},
		{Grouping{{"job", "j"}, {"job", "k"}}, "twice"},
	} {
		err := c.g.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%v: %v", c.g, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%v: got %v, want an error containing %q", c.g, err, c.want)
		}
	}
}

func TestGroupingString(t *testing.T) {
	g := Grouping{{"job", "node"}, {"instance", `a"b`}}
	if got, want := g.String(), `{job="node",instance="a\"b"}`; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
	if g.Job() != "node" || (Grouping{{"instance", "x"}}).Job() != "" {
		t.Error("Job()")
	}
}

func TestGroupingOf(t *testing.T) {
	got := GroupingOf(map[string]string{"zone": "z", "instance": "i", "job": "j"})
	if want := (Grouping{{"job", "j"}, {"instance", "i"}, {"zone", "z"}}); got.String() != want.String() {
		t.Errorf("GroupingOf = %v, want %v", got, want)
	}
}

func TestDecodeGroupsShadowedKeys(t *testing.T) {
	// A family named "labels" shares the group object with the grouping
	// labels and, coming later, replaces them.
	const answer = `{"status":"success","data":[{
		"last_push_successful": true,
		"labels": {"type": "GAUGE", "metrics": [{"labels": {"job": "j", "instance": ""}, "value": "2"}]},
		"push_time_seconds": {"type": "GAUGE", "metrics": [{"labels": {"job": "j", "instance": ""}, "value": "1.5e+09"}]},
		"h": {"type": "HISTOGRAM", "metrics": [{"labels": {}, "buckets": {"1": "3"}, "count": "4", "sum": "NaN"}]},
		"ignored": {"type": "GAUGE", "metrics": []}
	}]}`
	gs, err := decodeGroups(strings.NewReader(answer), func(n string) bool { return n != "ignored" })
	if err != nil {
		t.Fatal(err)
	}
	g := gs[0]
	if g.Grouping["job"] != "j" || !g.LastPushSuccessful || g.PushTime.Unix() != 1.5e9 {
		t.Errorf("group %+v", g)
	}
	if f := g.Families["labels"]; f.Type != "GAUGE" || f.Metrics[0].Value != 2 {
		t.Errorf("family labels = %+v", f)
	}
	if m := g.Families["h"].Metrics[0]; m.Value != 4 || m.Sum == m.Sum {
		t.Errorf("histogram = %+v, want count 4 and NaN sum", m)
	}
	if _, ok := g.Families["ignored"]; ok {
		t.Error("family not filtered")
	}

	// Type and help only, as the Sink lists: the shadowing family too, and the
	// push time still in full.
	err = decodeEach(strings.NewReader(answer), func(string) detail { return familyMeta }, func(g Group) error {
		if g.Grouping["job"] != "j" || g.PushTime.Unix() != 1.5e9 {
			t.Errorf("group %+v", g)
		}
		if f := g.Families["labels"]; f.Type != "GAUGE" || f.Metrics != nil {
			t.Errorf("family labels = %+v, want its type alone", f)
		}
		if f := g.Families["h"]; f.Type != "HISTOGRAM" || f.Metrics != nil {
			t.Errorf("family h = %+v, want its type alone", f)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDecodeGroupsError(t *testing.T) {
	for _, answer := range []string{
		`{"status":"error","error":"boom"}`,
		`{"status":"success","data":[{"x": {"metrics": [{"value": "one"}]}}]}`,
		`{"status":"success","data":[`,
		`<html>`,
	} {
		if _, err := decodeGroups(strings.NewReader(answer), func(string) bool { return true }); err == nil {
			t.Errorf("%s: no error", answer)
		}
	}
}
