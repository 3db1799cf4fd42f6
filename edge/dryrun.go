package edge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"sync"

	"github.com/prometheus/common/expfmt"

	"github.com/prometheus-streams/prometheus-streams/edge/scrape"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// DryRun scrapes the selected targets and writes, for each, a header line with its
// outcome and then the exposition that would be published. It touches no stream and
// reports how many scrapes failed.
//
// With asDone (a person at a terminal), each target is written as soon as its scrape
// ends, so a slow target holds back nothing; otherwise all in selection order, so that
// the output of two runs compares line by line.
func (r *Runner) DryRun(ctx context.Context, sel []Selected, w io.Writer, asDone bool) (failed int, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.RunTimeout)
	defer cancel()
	results := make([]*scrape.Result, len(sel))
	index := make(map[string]int, len(sel))
	for i, s := range sel {
		index[s.Key()] = i
	}
	var mu sync.Mutex
	var writeErr error
	if err := r.Scrape(ctx, sel, func(s Selected, res *scrape.Result) {
		mu.Lock()
		defer mu.Unlock()
		if !asDone {
			results[index[s.Key()]] = res
			return
		}
		if res.Err != nil {
			failed++
		}
		if writeErr == nil {
			writeErr = r.writeDry(w, s, res)
		}
	}); err != nil {
		return 0, err
	}
	if asDone {
		return failed, writeErr
	}
	for i, s := range sel {
		if results[i].Err != nil {
			failed++
		}
		if err := r.writeDry(w, s, results[i]); err != nil {
			return failed, err
		}
	}
	return failed, nil
}

func (r *Runner) writeDry(w io.Writer, s Selected, res *scrape.Result) error {
	var err error
	if res.Err != nil {
		_, err = fmt.Fprintf(w, "# %s: FAILED after %s (HTTP status %d): %s\n", s.Key(), res.Duration, res.HTTPStatus, res.Err)
	} else {
		body, shown := dryBody(res)
		_, err = fmt.Fprintf(w, "# %s: ok, %d series, %d bytes of %s in %s, labels %v%s\n%s",
			s.Key(), res.Series, len(res.Body), res.ContentType, res.Duration, staticLabels(s), shown, body)
	}
	if err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// dryBody is the body as a person can read it: a protobuf body is shown in the text
// format (which has no room for native histograms' buckets), the others as they are.
func dryBody(res *scrape.Result) ([]byte, string) {
	if mt, _, _ := mime.ParseMediaType(res.ContentType); mt != exposition.ProtoType {
		return res.Body, ""
	}
	fams, err := exposition.Parse(res.Body, res.ContentType)
	if err != nil {
		return nil, fmt.Sprintf(" (cannot be shown: %v)", err)
	}
	var b bytes.Buffer
	if err := exposition.Encode(&b, fams, expfmt.NewFormat(expfmt.TypeTextPlain)); err != nil {
		return nil, fmt.Sprintf(" (cannot be shown: %v)", err)
	}
	return b.Bytes(), ", shown in the text format"
}
