package edge

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/prometheus-streams/prometheus-streams/edge/scrape"
)

// ErrUsage marks a selection that names no target, or more than one: a usage error.
var ErrUsage = errors.New("usage")

// Selected is one target of one job.
type Selected struct {
	Job    *Job
	Target scrape.Target
}

// Key is job/instance, the name --target accepts.
func (s Selected) Key() string { return s.Job.Name + "/" + s.Target.Name }

// Select returns the targets of from that a run scrapes: all of them, in from's order,
// or those of the named jobs, or the named targets (a target name, or job/name). A name
// that matches no target or matches targets in two jobs is an ErrUsage error listing
// what it could mean.
func Select(from []*Job, jobs, targets []string) ([]Selected, error) {
	var all []Selected
	names := make([]string, 0, len(from))
	for _, j := range from {
		names = append(names, j.Name)
		for _, t := range j.Targets {
			all = append(all, Selected{Job: j, Target: t})
		}
	}
	for _, jn := range jobs {
		if !slices.Contains(names, jn) {
			return nil, fmt.Errorf("%w: unknown job %q; known jobs: %s", ErrUsage, jn, strings.Join(names, ", "))
		}
	}
	if len(jobs) > 0 {
		keep := map[string]bool{}
		for _, jn := range jobs {
			keep[jn] = true
		}
		var in []Selected
		for _, s := range all {
			if keep[s.Job.Name] {
				in = append(in, s)
			}
		}
		all = in
	}
	if len(targets) == 0 {
		return all, nil
	}
	var out []Selected
	seen := map[string]bool{}
	for _, name := range targets {
		var match []Selected
		for _, s := range all {
			if s.Key() == name || s.Target.Name == name {
				match = append(match, s)
			}
		}
		switch {
		case len(match) == 0:
			known := make([]string, 0, len(all))
			for _, s := range all {
				known = append(known, s.Key())
			}
			sort.Strings(known)
			return nil, fmt.Errorf("%w: unknown target %q; known targets: %s", ErrUsage, name, strings.Join(known, ", "))
		case len(match) > 1:
			cands := make([]string, 0, len(match))
			for _, s := range match {
				cands = append(cands, s.Key())
			}
			return nil, fmt.Errorf("%w: target %q is ambiguous: name one of %s", ErrUsage, name, strings.Join(cands, ", "))
		}
		if !seen[match[0].Key()] {
			seen[match[0].Key()] = true
			out = append(out, match[0])
		}
	}
	return out, nil
}
