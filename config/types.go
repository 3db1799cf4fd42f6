package config

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"
	"gopkg.in/yaml.v3"
)

// Duration is a time span written either as a bare number of seconds (`80`, `1.5`) or as a
// Prometheus duration string (`80s`, `1m30s`, `2h`).
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeError(n, "want a number of seconds or a duration such as 60s, got a %s", kindName(n.Kind))
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return typeError(n, "%v", err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler, writing the duration as Prometheus does.
func (d Duration) MarshalYAML() (any, error) {
	return model.Duration(d).String(), nil
}

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return model.Duration(d).String() }

func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 {
			return 0, fmt.Errorf("duration %q is negative", s)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	// Prometheus's own parser first (it knows d, w, y), then Go's for fractions like 1.5s.
	if v, err := model.ParseDuration(s); err == nil {
		return time.Duration(v), nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is neither a number of seconds nor a duration such as 60s or 1m30s", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	return v, nil
}

// URLList is a list of server URLs written either as a YAML list or as one comma-separated
// string, as NATS clients accept them.
type URLList []string

// UnmarshalYAML implements yaml.Unmarshaler.
func (u *URLList) UnmarshalYAML(n *yaml.Node) error {
	var parts []string
	switch n.Kind {
	case yaml.ScalarNode:
		parts = strings.Split(n.Value, ",")
	case yaml.SequenceNode:
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return typeError(c, "want a URL string, got a %s", kindName(c.Kind))
			}
			parts = append(parts, strings.Split(c.Value, ",")...)
		}
	default:
		return typeError(n, "want a comma-separated string or a list of URLs, got a %s", kindName(n.Kind))
	}
	out := (*u)[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	*u = out
	return nil
}

// String joins the URLs as nats.Connect takes them.
func (u URLList) String() string { return strings.Join(u, ",") }

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "scalar"
	case yaml.AliasNode:
		return "alias"
	default:
		return "document"
	}
}

// typeError reports a bad value the way yaml.v3 reports its own, with the line, so that
// Parse can name the key too.
func typeError(n *yaml.Node, format string, args ...any) *yaml.TypeError {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: ", n.Line) + fmt.Sprintf(format, args...)}}
}

// RelabelConfigs are Prometheus metric_relabel_configs. The type exists so that a bad
// entry is reported with its line and unknown keys inside an entry are errors too, which
// Prometheus's own unmarshaller cannot do under yaml.v3.
type RelabelConfigs []*relabel.Config

// UnmarshalYAML implements yaml.Unmarshaler. Every entry is decoded, so that one pass
// reports every bad one.
func (r *RelabelConfigs) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return typeError(n, "want a list of relabel configs, got a %s", kindName(n.Kind))
	}
	out := make(RelabelConfigs, 0, len(n.Content))
	var errs []string
	for _, item := range n.Content {
		rc, err := decodeRelabel(item)
		if err != nil {
			errs = append(errs, err.Errors...)
			continue
		}
		out = append(out, rc)
	}
	*r = out
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	return nil
}

func decodeRelabel(item *yaml.Node) (*relabel.Config, *yaml.TypeError) {
	// Prometheus's own message for a bad regex names the key of the entry's first
	// line and quotes the pattern as it anchored it; this one names the regex key, on
	// its own line, and quotes the pattern as written.
	if re := mappingValue(item, "regex"); re != nil && re.Kind == yaml.ScalarNode {
		if _, err := regexp.Compile("^(?s:" + re.Value + ")$"); err != nil { // as Prometheus compiles it
			if _, alone := regexp.Compile(re.Value); alone != nil {
				err = alone // the same fault, said of the pattern as written
			}
			msg := err.Error()
			if se, ok := errors.AsType[*syntax.Error](err); ok {
				msg = se.Code.String()
				if se.Expr != re.Value {
					msg += " at `" + se.Expr + "`"
				}
			}
			return nil, typeError(re, "regex: %q is not a valid regular expression: %s", re.Value, msg)
		}
	}
	raw, err := yaml.Marshal(item)
	if err != nil {
		return nil, typeError(item, "%v", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	rc := &relabel.Config{}
	if err := dec.Decode(rc); err != nil {
		msg := err.Error()
		if te, ok := err.(*yaml.TypeError); ok {
			// Lines inside the re-encoded entry are not the file's lines: drop them.
			msg = ""
			for _, e := range te.Errors {
				if i := bytes.IndexByte([]byte(e), ':'); i > 0 && bytes.HasPrefix([]byte(e), []byte("line ")) {
					e = e[i+2:]
				}
				msg += e
			}
		}
		return nil, typeError(item, "relabel config: %s", msg)
	}
	return rc, nil
}

// mappingValue is the value of key in the mapping n, nil if there is none.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	n = resolveAlias(n)
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return resolveAlias(n.Content[i+1])
		}
	}
	return nil
}
