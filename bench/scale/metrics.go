package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The drain's self-metrics the harness reads (drain/metrics.go).
const (
	mReceived       = "prometheus_streams_drain_messages_received_total"
	mExpired        = "prometheus_streams_drain_messages_expired_total"
	mSuperseded     = "prometheus_streams_drain_messages_superseded_total"
	mRejected       = "prometheus_streams_drain_messages_rejected_total"
	mDelivered      = "prometheus_streams_drain_scrapes_delivered_total"
	mSinkRejected   = "prometheus_streams_drain_scrapes_rejected_total"
	mSinkSuperseded = "prometheus_streams_drain_scrapes_superseded_total"
	mRetries        = "prometheus_streams_drain_delivery_retries_total"
	mLag            = "prometheus_streams_drain_delivery_lag_seconds"
)

var scrapeClient = &http.Client{Timeout: 10 * time.Second}

// scrape reads url's text exposition.
func scrape(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := scrapeClient.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", url, err)
	}
	return fams, nil
}

// scrapeLines reads url's text exposition line by line and sums the samples of name
// whose labels match, parsing nothing else: for an exposition too large to parse.
func scrapeLines(url, name string, match ...string) (float64, error) {
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var lines bytes.Buffer
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if rest, ok := bytes.CutPrefix(line, []byte(name)); ok && len(rest) > 0 && (rest[0] == '{' || rest[0] == ' ') ||
			bytes.HasPrefix(line, []byte("# TYPE "+name+" ")) {
			lines.Write(line)
			lines.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(&lines)
	if err != nil {
		return 0, fmt.Errorf("parse %s from %s: %w", name, url, err)
	}
	return sum(fams, name, match...), nil
}

// sum adds the values of every series of name whose labels include match (name, value
// pairs; a value ending in "*" matches by prefix).
func sum(fams map[string]*dto.MetricFamily, name string, match ...string) float64 {
	total := 0.0
	for _, m := range fams[name].GetMetric() {
		if !matches(m, match...) {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Untyped != nil:
			total += m.Untyped.GetValue()
		}
	}
	return total
}

func matches(m *dto.Metric, match ...string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		want, prefix := match[i+1], false
		if strings.HasSuffix(want, "*") {
			want, prefix = strings.TrimSuffix(want, "*"), true
		}
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() != match[i] {
				continue
			}
			found = lp.GetValue() == want || prefix && strings.HasPrefix(lp.GetValue(), want)
		}
		if !found {
			return false
		}
	}
	return true
}

// drainCounts are the drain's counters at one moment.
type drainCounts struct {
	Received, Delivered, Superseded, Expired, Rejected float64
	SinkRejected, SinkSuperseded, Retries              float64
	Lag                                                histogram
}

// final is how many messages have a final fate: delivered or acknowledged without.
func (c drainCounts) final() float64 {
	return c.Delivered + c.Superseded + c.Expired + c.Rejected + c.SinkRejected + c.SinkSuperseded
}

func (c drainCounts) minus(o drainCounts) drainCounts {
	return drainCounts{
		Received: c.Received - o.Received, Delivered: c.Delivered - o.Delivered,
		Superseded: c.Superseded - o.Superseded, Expired: c.Expired - o.Expired, Rejected: c.Rejected - o.Rejected,
		SinkRejected: c.SinkRejected - o.SinkRejected, SinkSuperseded: c.SinkSuperseded - o.SinkSuperseded,
		Retries: c.Retries - o.Retries, Lag: c.Lag.minus(o.Lag),
	}
}

func readDrain(monitorURL string) (drainCounts, error) {
	fams, err := scrape(monitorURL + "/metrics")
	if err != nil {
		return drainCounts{}, err
	}
	return drainCounts{
		Received: sum(fams, mReceived), Delivered: sum(fams, mDelivered),
		Superseded: sum(fams, mSuperseded), Expired: sum(fams, mExpired), Rejected: sum(fams, mRejected),
		SinkRejected: sum(fams, mSinkRejected), SinkSuperseded: sum(fams, mSinkSuperseded),
		Retries: sum(fams, mRetries), Lag: histogramOf(fams, mLag),
	}, nil
}

// histogram is a cumulative histogram: counts of observations ≤ each upper bound.
type histogram struct {
	Bounds []float64 // ascending, +Inf last
	Counts []float64 // cumulative
}

func histogramOf(fams map[string]*dto.MetricFamily, name string) histogram {
	var h histogram
	for _, m := range fams[name].GetMetric() {
		if m.Histogram == nil {
			continue
		}
		for _, b := range m.Histogram.GetBucket() {
			h.Bounds = append(h.Bounds, b.GetUpperBound())
			h.Counts = append(h.Counts, float64(b.GetCumulativeCount()))
		}
		if len(h.Bounds) == 0 || !math.IsInf(h.Bounds[len(h.Bounds)-1], 1) {
			h.Bounds = append(h.Bounds, math.Inf(1))
			h.Counts = append(h.Counts, float64(m.Histogram.GetSampleCount()))
		}
		break
	}
	return h
}

// minus is the histogram of the observations made since o (same buckets).
func (h histogram) minus(o histogram) histogram {
	if len(o.Counts) != len(h.Counts) {
		return h
	}
	d := histogram{Bounds: h.Bounds, Counts: make([]float64, len(h.Counts))}
	for i := range h.Counts {
		d.Counts[i] = h.Counts[i] - o.Counts[i]
	}
	return d
}

func (h histogram) total() float64 {
	if len(h.Counts) == 0 {
		return 0
	}
	return h.Counts[len(h.Counts)-1]
}

// quantile estimates the q-quantile as PromQL's histogram_quantile does: linear
// interpolation inside the bucket that holds it, the lowest bucket starting at 0. It
// is +Inf when the quantile lies beyond the last finite bound, NaN without data.
func (h histogram) quantile(q float64) float64 {
	total := h.total()
	if total == 0 {
		return math.NaN()
	}
	rank := q * total
	i := sort.Search(len(h.Counts), func(i int) bool { return h.Counts[i] >= rank })
	if i >= len(h.Bounds) || math.IsInf(h.Bounds[i], 1) {
		return math.Inf(1)
	}
	lo, below := 0.0, 0.0
	if i > 0 {
		lo, below = h.Bounds[i-1], h.Counts[i-1]
	}
	in := h.Counts[i] - below
	if in == 0 {
		return h.Bounds[i]
	}
	return lo + (h.Bounds[i]-lo)*(rank-below)/in
}

// lastFiniteBound is the histogram's largest finite bucket bound.
func (h histogram) lastFiniteBound() float64 {
	for i := len(h.Bounds) - 1; i >= 0; i-- {
		if !math.IsInf(h.Bounds[i], 1) {
			return h.Bounds[i]
		}
	}
	return 0
}
