package promtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

// APIError is an answer of the HTTP API with "status":"error", e.g. Type
// "bad_data" for a query that does not parse.
type APIError struct {
	StatusCode int    // HTTP status
	Type       string // errorType
	Message    string // error
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.StatusCode, e.Type, e.Message)
}

// Metadata is what a scrape target exposed about a metric family.
type Metadata struct {
	Type model.MetricType `json:"type"`
	Help string           `json:"help"`
	Unit string           `json:"unit"`
}

// Query evaluates promql at ts (the server's now if ts is zero) and returns the
// instant vector. Each sample's Timestamp is ts, not the time of the sample
// stored: query timestamp(m) for that. A result of another type is an error.
func (s *Server) Query(ctx context.Context, promql string, ts time.Time) (model.Vector, error) {
	q := url.Values{"query": {promql}}
	if !ts.IsZero() {
		q.Set("time", model.TimeFromUnixNano(ts.UnixNano()).String())
	}
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := s.get(ctx, "/api/v1/query", q, &data); err != nil {
		return nil, fmt.Errorf("query %q: %w", promql, err)
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result is a %s, not a vector", promql, data.ResultType)
	}
	var v model.Vector
	if err := json.Unmarshal(data.Result, &v); err != nil {
		return nil, fmt.Errorf("query %q: %w", promql, err)
	}
	return v, nil
}

// Samples returns the raw samples of the series selector matches within window before
// at (a range-vector query), each at its stored time: the history as written.
func (s *Server) Samples(ctx context.Context, selector string, at time.Time, window time.Duration) (model.Matrix, error) {
	promql := fmt.Sprintf("%s[%s]", selector, model.Duration(window))
	q := url.Values{"query": {promql}, "time": {model.TimeFromUnixNano(at.UnixNano()).String()}}
	var data struct {
		ResultType string       `json:"resultType"`
		Result     model.Matrix `json:"result"`
	}
	if err := s.get(ctx, "/api/v1/query", q, &data); err != nil {
		return nil, fmt.Errorf("query %q: %w", promql, err)
	}
	if data.ResultType != "matrix" {
		return nil, fmt.Errorf("query %q: result is a %s, not a matrix", promql, data.ResultType)
	}
	return data.Result, nil
}

// QueryRange evaluates promql from start to end every step.
func (s *Server) QueryRange(ctx context.Context, promql string, start, end time.Time, step time.Duration) (model.Matrix, error) {
	q := url.Values{
		"query": {promql},
		"start": {model.TimeFromUnixNano(start.UnixNano()).String()},
		"end":   {model.TimeFromUnixNano(end.UnixNano()).String()},
		"step":  {model.Duration(step).String()},
	}
	var data struct {
		Result model.Matrix `json:"result"`
	}
	if err := s.get(ctx, "/api/v1/query_range", q, &data); err != nil {
		return nil, fmt.Errorf("query range %q: %w", promql, err)
	}
	return data.Result, nil
}

// Series returns the label sets of all series that match any of the selectors,
// at any time the TSDB holds.
func (s *Server) Series(ctx context.Context, match ...string) ([]model.LabelSet, error) {
	if len(match) == 0 {
		return nil, errors.New("series: no selector")
	}
	var data []model.LabelSet
	if err := s.get(ctx, "/api/v1/series", url.Values{"match[]": match}, &data); err != nil {
		return nil, fmt.Errorf("series %q: %w", match, err)
	}
	return data, nil
}

// Metadata returns the metadata of the metric family metric from
// /api/v1/metadata. Both versions answer it from their scrape targets only:
// metadata received by remote write (1.0's metadata field, 2.0's per-series
// metadata) never appears here.
func (s *Server) Metadata(ctx context.Context, metric string) ([]Metadata, error) {
	var data map[string][]Metadata
	if err := s.get(ctx, "/api/v1/metadata", url.Values{"metric": {metric}}, &data); err != nil {
		return nil, fmt.Errorf("metadata %q: %w", metric, err)
	}
	return data[metric], nil
}

// Version is the server's version from /api/v1/status/buildinfo: 2.42.0+ds for
// Debian's, "" for the Prometheus 3 built by systemd/tools.sh (go install sets
// no version; it is the module version in go.mod).
func (s *Server) Version(ctx context.Context) (string, error) {
	var data struct {
		Version string `json:"version"`
	}
	if err := s.get(ctx, "/api/v1/status/buildinfo", nil, &data); err != nil {
		return "", fmt.Errorf("build info: %w", err)
	}
	return data.Version, nil
}

// WaitFor evaluates promql at the server's now until cond accepts the result,
// and returns that result. It fails the test if that does not happen within 30s
// (the last result, or error, is in the message).
func (s *Server) WaitFor(tb testing.TB, promql string, cond func(model.Vector) bool) model.Vector {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var (
		v   model.Vector
		err error
	)
	for {
		v, err = s.Query(ctx, promql, time.Time{})
		if err == nil && cond(v) {
			return v
		}
		select {
		case <-ctx.Done():
			if err != nil {
				tb.Fatalf("promtest: wait for %s: %v", promql, err)
			}
			tb.Fatalf("promtest: wait for %s: not within %v; last result:\n%v", promql, waitTimeout, v)
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitForSeries waits until promql returns n series; see WaitFor.
func (s *Server) WaitForSeries(tb testing.TB, promql string, n int) model.Vector {
	tb.Helper()
	return s.WaitFor(tb, promql, func(v model.Vector) bool { return len(v) == n })
}

// get calls the HTTP API at path and decodes its data into data.
func (s *Server) get(ctx context.Context, path string, q url.Values, data any) error {
	u := s.URL() + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	var r struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if r.Status != "success" {
		return &APIError{StatusCode: resp.StatusCode, Type: r.ErrorType, Message: r.Error}
	}
	if err := json.Unmarshal(r.Data, data); err != nil {
		return fmt.Errorf("decode data: %w", err)
	}
	return nil
}

// Exemplar is one exemplar the server holds, as /api/v1/query_exemplars answers it.
type Exemplar struct {
	Labels    model.LabelSet `json:"labels"`
	Value     string         `json:"value"`
	Timestamp float64        `json:"timestamp"` // seconds
}

// SeriesExemplars are the exemplars of one series.
type SeriesExemplars struct {
	Series    model.LabelSet `json:"seriesLabels"`
	Exemplars []Exemplar     `json:"exemplars"`
}

// Exemplars returns the exemplars of the series promql selects between start and end.
// The server holds exemplars only with --enable-feature=exemplar-storage.
func (s *Server) Exemplars(ctx context.Context, promql string, start, end time.Time) ([]SeriesExemplars, error) {
	q := url.Values{
		"query": {promql},
		"start": {model.TimeFromUnixNano(start.UnixNano()).String()},
		"end":   {model.TimeFromUnixNano(end.UnixNano()).String()},
	}
	var data []SeriesExemplars
	if err := s.get(ctx, "/api/v1/query_exemplars", q, &data); err != nil {
		return nil, fmt.Errorf("exemplars %q: %w", promql, err)
	}
	return data, nil
}
