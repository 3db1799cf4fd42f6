package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// keyLines maps key paths (jobs.choria.targets[0].url) to the line they stand on, and lines
// back to paths, so that every error names both.
type keyLines struct {
	lines map[string]int
	paths map[int][]string // line -> key paths of the keys on it
}

func newKeyLines(root *yaml.Node) *keyLines {
	kl := &keyLines{lines: map[string]int{}, paths: map[int][]string{}}
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		kl.walk("", root.Content[0])
	}
	return kl
}

func (kl *keyLines) walk(path string, n *yaml.Node) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			kl.lines[p] = k.Line
			kl.paths[k.Line] = append(kl.paths[k.Line], p)
			kl.walk(p, v)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			kl.lines[p] = c.Line
			kl.walk(p, c)
		}
	}
}

// line returns the line of path or, failing that, of its nearest ancestor present in the
// file (a required key that is missing is reported at its parent).
func (kl *keyLines) line(path string) int {
	for p := path; p != ""; {
		if l, ok := kl.lines[p]; ok {
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
func (kl *keyLines) annotate(errs []error) error {
	out := make([]error, 0, len(errs))
	for _, err := range errs {
		var p problem
		if errors.As(err, &p) {
			if l := kl.line(p.path); l > 0 {
				err = fmt.Errorf("line %d: %w", l, err)
			}
		}
		out = append(out, err)
	}
	return errors.Join(out...)
}

var (
	reLine    = regexp.MustCompile(`(?s)^line (\d+): (.*)$`)
	reUnknown = regexp.MustCompile(`^field (\S+) not found in type`)
)

// explain rewrites yaml.v3's decoding errors so they name the key as well as the line:
// "line 7: unknown key poller_stream.clusterid" rather than a Go type name.
func (kl *keyLines) explain(err error) error {
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
			for _, p := range kl.paths[line] {
				if strings.HasSuffix(p, "."+u[1]) || p == u[1] {
					key = p
				}
			}
			out = append(out, fmt.Errorf("line %d: %s: unknown key", line, key))
			continue
		}
		if keys := kl.paths[line]; len(keys) > 0 {
			// Go type names mean nothing to an operator; the key does.
			rest = strings.ReplaceAll(rest, "into config.Duration", "into a duration")
			key, rest := kl.keyOf(line, rest)
			out = append(out, fmt.Errorf("line %d: %s: %s", line, key, rest))
			continue
		}
		out = append(out, errors.New(msg))
	}
	return errors.Join(out...)
}

// keyOf is the key an error on line is about: the key that msg starts with (as
// "regex: ..."), for a line that holds several (a flow mapping), else the line's last
// key; and msg without that key.
func (kl *keyLines) keyOf(line int, msg string) (string, string) {
	keys := kl.paths[line]
	for _, p := range keys {
		name := p[strings.LastIndexAny(p, ".")+1:]
		if rest, ok := strings.CutPrefix(msg, name+": "); ok {
			return p, rest
		}
	}
	return keys[len(keys)-1], msg
}

// named adds the key to an error that names only its line.
func (kl *keyLines) named(err error) error {
	m := reLine.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	line, _ := strconv.Atoi(m[1])
	if len(kl.paths[line]) == 0 {
		return err
	}
	key, rest := kl.keyOf(line, m[2])
	return fmt.Errorf("line %d: %s: %s", line, key, rest)
}

// failedKeys are the keys of the values a decoding error is about: every key on the
// line of each value that did not decode, but not an unknown key (which leaves the
// others as they are).
func (kl *keyLines) failedKeys(te *yaml.TypeError) []string {
	var keys []string
	for _, msg := range te.Errors {
		m := reLine.FindStringSubmatch(msg)
		if m == nil || reUnknown.MatchString(m[2]) {
			continue
		}
		line, _ := strconv.Atoi(m[1])
		keys = append(keys, kl.paths[line]...)
	}
	return keys
}
