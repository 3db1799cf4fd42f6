package edge

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/prometheus-streams/prometheus-streams/lib/scrape"
)

// DryRun scrapes the selected targets and writes, for each in selection order, a header
// line with its outcome and then the exposition that would be published. It touches no
// stream and reports how many scrapes failed.
func (r *Runner) DryRun(ctx context.Context, sel []Selected, w io.Writer) (failed int, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RunTimeout.D())
	defer cancel()
	results := make([]*scrape.Result, len(sel))
	index := make(map[string]int, len(sel))
	for i, s := range sel {
		index[s.Key()] = i
	}
	var mu sync.Mutex
	if err := r.Scrape(ctx, sel, func(s Selected, res *scrape.Result) {
		mu.Lock()
		results[index[s.Key()]] = res
		mu.Unlock()
	}); err != nil {
		return 0, err
	}
	for i, s := range sel {
		res := results[i]
		e := r.Envelope(s, res)
		if res.Err != nil {
			failed++
			_, err = fmt.Fprintf(w, "# %s: FAILED after %s (HTTP status %d): %s\n", s.Key(), res.Duration, res.HTTPStatus, res.Err)
		} else {
			_, err = fmt.Fprintf(w, "# %s: ok, %d series, %d bytes of %s in %s, labels %v\n%s",
				s.Key(), res.Series, len(res.Body), res.ContentType, res.Duration, e.Labels, res.Body)
		}
		if err != nil {
			return failed, fmt.Errorf("write output: %w", err)
		}
	}
	return failed, nil
}
