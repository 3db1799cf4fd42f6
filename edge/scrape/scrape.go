// Package scrape fetches one target's exposition as Prometheus would (content negotiation,
// gzip, a timeout and a body size cap), validates it, applies the job's limits and
// metric_relabel_configs, and reports the outcome. A failed scrape is a result with a
// precise reason, never a panic or a hang; one target never affects another.
package scrape

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/gzip"
	promcfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"

	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// Errors a caller may branch on; a Result's Err wraps one of them where it applies.
var (
	ErrHTTPStatus    = errors.New("server returned HTTP status")
	ErrBodyTooLarge  = errors.New("body size limit exceeded")
	ErrInvalidBody   = errors.New("invalid exposition")
	ErrSampleLimit   = errors.New("sample_limit exceeded")
	ErrLabelLimit    = errors.New("label_limit exceeded")
	ErrContentType   = errors.New("unsupported Content-Type")
	ErrScrapeTimeout = errors.New("scrape timed out")
)

// Result is the outcome of one scrape.
type Result struct {
	Job      string
	Instance string
	URL      string
	Start    time.Time
	Duration time.Duration
	// HTTPStatus is 0 when no response arrived.
	HTTPStatus int
	// ContentType is the media type of Body as the target served it.
	ContentType string
	// Body is the validated exposition, uncompressed; relabelled when the job says so.
	Body []byte
	// RawSize is the size of the uncompressed body the target served.
	RawSize int
	// Series counts the samples of the exposition after relabelling, as Prometheus counts
	// them for sample_limit (a histogram counts its buckets, _sum and _count).
	Series int
	// Err is nil when the scrape succeeded.
	Err error
}

// Job is how the targets of one job are scraped: its config section, resolved.
type Job struct {
	Name string
	// HTTPClient is the job's Prometheus HTTP client settings (TLS, auth, proxy).
	HTTPClient promcfg.HTTPClientConfig
	// Accept is the Accept header of each scrape (config.AcceptHeader of the job's
	// scrape_protocols).
	Accept string
	// Timeout bounds each scrape, fetch and validation together.
	Timeout time.Duration
	// BodySizeLimit bounds the uncompressed body; 0: none.
	BodySizeLimit int64
	// Compression asks for gzip; off, for the body as it is (Accept-Encoding: identity).
	Compression bool
	// SampleLimit and LabelLimit fail a scrape that exceeds them; 0: none.
	SampleLimit int
	LabelLimit  int
	Histograms  Histograms
	// Labels are the job's static labels.
	Labels               map[string]string
	MetricRelabelConfigs []*relabel.Config
}

// Target is one endpoint of a job.
type Target struct {
	Name   string // the instance label
	URL    string
	Labels map[string]string // the target's static labels
}

// Scraper scrapes the targets of one job. It is safe for concurrent use.
type Scraper struct {
	job    Job
	client *http.Client
	ua     string
}

// New builds the job's HTTP client from its Prometheus HTTP client settings.
func New(job Job, userAgent string) (*Scraper, error) {
	client, err := promcfg.NewClientFromConfig(job.HTTPClient, job.Name, promcfg.WithUserAgent(userAgent))
	if err != nil {
		return nil, fmt.Errorf("job %s: http client: %w", job.Name, err)
	}
	return &Scraper{job: job, client: client, ua: userAgent}, nil
}

// Scrape scrapes t within the job's scrape_timeout (or ctx's deadline, if sooner).
func (s *Scraper) Scrape(ctx context.Context, t Target) *Result {
	r := &Result{Job: s.job.Name, Instance: t.Name, URL: t.URL, Start: time.Now()}
	timeout := s.job.Timeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		timeout = time.Until(d)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// One buffer per scrape: scrape-once scrapes each target once per process, so there
	// is nothing for a pool to reuse.
	buf := new(bytes.Buffer)
	r.Err = s.fetch(ctx, t, r, buf, timeout)
	r.Duration = time.Since(r.Start)
	if r.Err != nil {
		return r
	}
	r.RawSize = buf.Len()
	// Validation is bounded by the same timeout as the fetch: a body that takes long
	// to read fails alone, whatever it holds.
	body, series, err := Process(ctx, buf.Bytes(), r.ContentType, Limits{
		SampleLimit: s.job.SampleLimit,
		LabelLimit:  s.job.LabelLimit,
		ExtraLabels: 2 + staticCount(s.job.Labels, t.Labels), // job, instance and static labels
		Histograms:  s.job.Histograms,
	}, Relabel{Configs: s.job.MetricRelabelConfigs, Target: s.targetLabels(t)})
	r.Series = series
	if errors.Is(err, context.DeadlineExceeded) {
		err = timeoutError(ctx, timeout, err)
	}
	if err != nil {
		r.Err = err
		r.Duration = time.Since(r.Start)
		return r
	}
	r.Body = body
	r.Duration = time.Since(r.Start)
	return r
}

// staticCount is how many static labels a target's series carry: the job's and the
// target's, a name both set counted once (the target's value wins).
func staticCount(job, target map[string]string) int {
	n := len(job)
	for k := range target {
		if _, ok := job[k]; !ok {
			n++
		}
	}
	return n
}

// targetLabels are the labels the target's series carry centrally: job, instance, and
// the static labels (the target's own win over the job's).
func (s *Scraper) targetLabels(t Target) labels.Labels {
	if len(s.job.MetricRelabelConfigs) == 0 {
		return labels.EmptyLabels()
	}
	b := labels.NewScratchBuilder(2 + len(s.job.Labels) + len(t.Labels))
	m := map[string]string{model.JobLabel: s.job.Name, model.InstanceLabel: t.Name}
	for k, v := range s.job.Labels {
		m[k] = v
	}
	for k, v := range t.Labels {
		m[k] = v
	}
	for k, v := range m {
		b.Add(k, v)
	}
	b.Sort()
	return b.Labels()
}

func (s *Scraper) fetch(ctx context.Context, t Target, r *Result, buf *bytes.Buffer, timeout time.Duration) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", s.job.Accept)
	if s.job.Compression {
		req.Header.Set("Accept-Encoding", "gzip")
	} else {
		req.Header.Set("Accept-Encoding", "identity")
	}
	req.Header.Set("User-Agent", s.ua)
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", strconv.FormatFloat(timeout.Seconds(), 'f', -1, 64))

	resp, err := s.client.Do(req)
	if err != nil {
		return timeoutError(ctx, timeout, err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
	}()
	r.HTTPStatus = resp.StatusCode
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%w %s", ErrHTTPStatus, resp.Status)
	}
	r.ContentType = resp.Header.Get("Content-Type")
	if !utf8.ValidString(r.ContentType) {
		// It travels in the message: only what a drain can show.
		ct := r.ContentType
		r.ContentType = ""
		return fmt.Errorf("%w %q: not UTF-8", ErrContentType, ct)
	}
	if _, err := mediaType(r.ContentType); err != nil {
		return err
	}

	limit := s.job.BodySizeLimit
	var body io.Reader = resp.Body
	gzipped, whole := resp.Header.Get("Content-Encoding") == "gzip", false
	if gzipped {
		z, err := readGzip(resp, limit)
		if err != nil {
			return timeoutError(ctx, timeout, err)
		}
		// A longer stream (of many members) is decompressed as it arrives, read
		// behind what was read already.
		whole = z.whole
		zr := io.Reader(bytes.NewReader(z.b))
		if !whole {
			zr = io.MultiReader(zr, resp.Body)
		}
		gz, err := gzip.NewReader(zr)
		if err != nil {
			return timeoutError(ctx, timeout, fmt.Errorf("%w: gzip: %v", ErrInvalidBody, err))
		}
		defer gz.Close()
		body = gz
		if whole {
			// ReadFrom reads into at least MinRead free bytes: without them at the
			// end, it would grow the buffer once more only to see EOF.
			buf.Grow(gzipSize(z.b, limit) + bytes.MinRead)
		}
	} else if resp.ContentLength > 0 && (limit <= 0 || resp.ContentLength <= limit) {
		buf.Grow(int(resp.ContentLength) + bytes.MinRead)
	}
	if limit > 0 {
		if resp.ContentLength > limit && resp.Header.Get("Content-Encoding") == "" {
			return fmt.Errorf("%w: Content-Length %d > %d bytes", ErrBodyTooLarge, resp.ContentLength, limit)
		}
		body = io.LimitReader(body, limit+1)
	}
	if _, err := buf.ReadFrom(body); err != nil {
		if whole {
			// Read whole already: what fails now is the stream itself.
			return fmt.Errorf("%w: gzip: %v", ErrInvalidBody, err)
		}
		return timeoutError(ctx, timeout, fmt.Errorf("read body: %w", err))
	}
	if limit > 0 && int64(buf.Len()) > limit {
		return fmt.Errorf("%w: more than %d bytes", ErrBodyTooLarge, limit)
	}
	return nil
}

// compressed is the start of a gzip response's body; whole when it is all of it.
type compressed struct {
	b     []byte
	whole bool
}

// readGzip reads a gzip response's compressed body whole, so that its trailer can size
// the uncompressed one (gzipSize) before it is decompressed: growing the body's buffer
// as it decompresses cost as much as the decompression. It stops at the longest a
// single gzip member of at most limit bytes can be; a longer body (many members) is
// left to be read as it is decompressed, which body_size_limit bounds as ever.
func readGzip(resp *http.Response, limit int64) (compressed, error) {
	var z bytes.Buffer
	var r io.Reader = resp.Body
	var most int64
	if limit > 0 {
		// Deflate's stored blocks add 5 bytes a 64 KiB; gzip's header and trailer 18
		// and more: a generous bound.
		most = limit + limit/1024 + 4096
		r = io.LimitReader(r, most)
	}
	if resp.ContentLength > 0 && (most == 0 || resp.ContentLength <= most) {
		z.Grow(int(resp.ContentLength) + bytes.MinRead)
	}
	if _, err := z.ReadFrom(r); err != nil {
		return compressed{}, fmt.Errorf("read body: %w", err)
	}
	return compressed{b: z.Bytes(), whole: most == 0 || int64(z.Len()) < most}, nil
}

// gzipSize is the uncompressed size the trailer of the gzip stream z states (of its
// last member, modulo 2^32), bounded by limit and by the most deflate can expand z to:
// the buffer to grow to before decompressing. A wrong trailer only costs a regrowth.
func gzipSize(z []byte, limit int64) int {
	if len(z) < 18 {
		return 0
	}
	size := int64(binary.LittleEndian.Uint32(z[len(z)-4:]))
	size = min(size, 1032*int64(len(z))) // deflate's largest ratio
	if limit > 0 {
		size = min(size, limit+1)
	}
	return int(size)
}

// timeoutError names a timeout as such: "context deadline exceeded" from deep inside
// net/http tells an operator less than the timeout that was hit.
func timeoutError(ctx context.Context, timeout time.Duration, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w after %s: %v", ErrScrapeTimeout, timeout.Round(time.Millisecond), err)
	}
	return err
}

// mediaType reduces a Content-Type to the formats this package parses. A missing
// Content-Type is read as the text format, as Prometheus 2 did.
func mediaType(contentType string) (string, error) {
	if contentType == "" {
		return exposition.TextType, nil
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return "", fmt.Errorf("%w %q: %v", ErrContentType, contentType, err)
	}
	switch mt {
	case exposition.TextType, exposition.OpenMetricsType:
		return mt, nil
	case exposition.ProtoType:
		// Prometheus reads the media type alone; a parameter that names another
		// message or encoding is refused rather than misread.
		if proto, enc := params["proto"], params["encoding"]; proto != "" && proto != "io.prometheus.client.MetricFamily" || enc != "" && enc != "delimited" {
			return "", fmt.Errorf("%w %q: want proto=io.prometheus.client.MetricFamily and encoding=delimited", ErrContentType, contentType)
		}
		return mt, nil
	}
	return "", fmt.Errorf("%w %q: want OpenMetrics, the text format or Prometheus's protobuf format", ErrContentType, contentType)
}
