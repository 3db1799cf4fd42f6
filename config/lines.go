package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// index maps key paths (jobs.choria.targets[0].url) to the line they stand on, and lines
// back to paths, so that every error names both.
type index struct {
	lines map[string]int
	paths map[int][]string // line -> key paths of the keys on it
}

func newIndex(root *yaml.Node) *index {
	ix := &index{lines: map[string]int{}, paths: map[int][]string{}}
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		ix.walk("", root.Content[0])
	}
	return ix
}

func (ix *index) walk(path string, n *yaml.Node) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			ix.lines[p] = k.Line
			ix.paths[k.Line] = append(ix.paths[k.Line], p)
			ix.walk(p, v)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			ix.lines[p] = c.Line
			ix.walk(p, c)
		}
	}
}

// line returns the line of path or, failing that, of its nearest ancestor present in the
// file (a required key that is missing is reported at its parent).
func (ix *index) line(path string) int {
	for p := path; p != ""; {
		if l, ok := ix.lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

// annotate prefixes each problem with its line.
func (ix *index) annotate(errs []error) error {
	out := make([]error, 0, len(errs))
	for _, err := range errs {
		var p problem
		if errors.As(err, &p) {
			if l := ix.line(p.path); l > 0 {
				err = fmt.Errorf("line %d: %w", l, err)
			}
		}
		out = append(out, err)
	}
	return errors.Join(out...)
}

var (
	reLine    = regexp.MustCompile(`^line (\d+): (.*)$`)
	reUnknown = regexp.MustCompile(`^field (\S+) not found in type`)
)

// explain rewrites yaml.v3's decoding errors so they name the key as well as the line:
// "line 7: unknown key poller_stream.clusterid" rather than a Go type name.
func (ix *index) explain(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("parse yaml: %w", err)
	}
	out := make([]error, 0, len(te.Errors))
	for _, msg := range te.Errors {
		m := reLine.FindStringSubmatch(msg)
		if m == nil {
			out = append(out, errors.New(msg))
			continue
		}
		line, _ := strconv.Atoi(m[1])
		rest := m[2]
		if u := reUnknown.FindStringSubmatch(rest); u != nil {
			key := u[1]
			for _, p := range ix.paths[line] {
				if strings.HasSuffix(p, "."+u[1]) || p == u[1] {
					key = p
				}
			}
			out = append(out, fmt.Errorf("line %d: %s: unknown key", line, key))
			continue
		}
		if keys := ix.paths[line]; len(keys) > 0 {
			// Go type names mean nothing to an operator; the key does.
			rest = strings.ReplaceAll(rest, "into config.Duration", "into a duration")
			out = append(out, fmt.Errorf("line %d: %s: %s", line, keys[len(keys)-1], rest))
			continue
		}
		out = append(out, errors.New(msg))
	}
	return errors.Join(out...)
}
