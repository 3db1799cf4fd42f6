package pushgateway

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/prometheus/common/model"
)

// Label is one label of a grouping key.
type Label struct{ Name, Value string }

// Grouping is a group's key: job first, then the other grouping labels in order
// (e.g. instance, then a publisher label). The gateway keys a group by the set of
// these labels, so their order only matters for Path and String. It sets them on
// every series of the group, replacing a series label of the same name.
//
// An empty value is a distinct key from an absent label (the gateway stores
// {job="a",instance=""} apart from {job="a"}), yet the gateway gives both groups'
// series the same labels, because it adds instance="" to every series without an
// instance label. The two then collide in the gateway's consistency check and
// every later push, to any group, is refused until one is deleted. Callers should
// not mix the two forms for one job.
type Grouping []Label

// Job returns the job label's value (the first label's, when it is the job).
func (g Grouping) Job() string {
	if len(g) == 0 || g[0].Name != model.JobLabel {
		return ""
	}
	return g[0].Value
}

// Validate reports whether the gateway can hold a group with this key: the job
// comes first and is not empty, and every name is a legacy (pre-UTF-8) label name,
// not reserved (no "__" prefix), given once. Push Gateway 1.5 parses grouping label
// names from the URL path with the legacy pattern, so a UTF-8 name that Prometheus 3
// accepts elsewhere is refused here.
func (g Grouping) Validate() error {
	if len(g) == 0 || g[0].Name != model.JobLabel {
		return errors.New("grouping key must start with the job label")
	}
	if g[0].Value == "" {
		return errors.New("job label must not be empty")
	}
	seen := make(map[string]struct{}, len(g))
	for _, l := range g {
		if !model.LegacyValidation.IsValidLabelName(l.Name) {
			return fmt.Errorf("grouping label name %q is not a legacy label name ([a-zA-Z_][a-zA-Z0-9_]*)", l.Name)
		}
		if strings.HasPrefix(l.Name, model.ReservedLabelPrefix) {
			return fmt.Errorf("grouping label name %q is reserved", l.Name)
		}
		if _, dup := seen[l.Name]; dup {
			return fmt.Errorf("grouping label %q given twice", l.Name)
		}
		seen[l.Name] = struct{}{}
	}
	return nil
}

// Path returns the group's URL path below the gateway's base URL:
// /metrics/job/<job>/<name>/<value>...
//
// The gateway splits the path on '/' after decoding it, and Go's ServeMux in
// front of its router answers a path with "." or ".." elements or an empty one
// ("//") with a redirect to the cleaned path. So a value that contains '/', is
// "." or "..", or is empty is written in the gateway's @base64 form
// (<name>@base64/<RFC 4648 URL-safe base64, unpadded>; the empty value as "=",
// which the gateway reads as padding around nothing, as client_golang writes it).
// Other values are escaped with url.PathEscape, which the gateway decodes back
// exactly ('+' stays '+', unlike url.QueryEscape).
//
// Path does not validate: see Validate.
func (g Grouping) Path() string {
	var b strings.Builder
	b.WriteString("/metrics")
	for _, l := range g {
		b.WriteByte('/')
		b.WriteString(l.Name)
		switch {
		case l.Value == "":
			b.WriteString("@base64/=")
		case l.Value == "." || l.Value == ".." || strings.Contains(l.Value, "/"):
			b.WriteString("@base64/")
			b.WriteString(base64.RawURLEncoding.EncodeToString([]byte(l.Value)))
		default:
			b.WriteByte('/')
			b.WriteString(url.PathEscape(l.Value))
		}
	}
	return b.String()
}

// String returns the grouping as {job="…",instance="…"}, in the grouping's order.
func (g Grouping) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, l := range g {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.Name)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(l.Value))
	}
	b.WriteByte('}')
	return b.String()
}

// GroupingOf returns the Grouping of a label set as the gateway reports it (see
// Group.Grouping): job first, then the other labels sorted by name. Deleting a
// listed group needs it.
func GroupingOf(labels map[string]string) Grouping {
	g := make(Grouping, 0, len(labels))
	if job, ok := labels[model.JobLabel]; ok {
		g = append(g, Label{model.JobLabel, job})
	}
	rest := make([]string, 0, len(labels))
	for n := range labels {
		if n != model.JobLabel {
			rest = append(rest, n)
		}
	}
	sort.Strings(rest)
	for _, n := range rest {
		g = append(g, Label{n, labels[n]})
	}
	return g
}
