// Package edge is one scrape-once run: scrape the selected targets concurrently, wrap
// each outcome in an envelope, publish every envelope while the others still scrape, and
// wait for the server's acks within the run's deadline. A failed scrape travels as a
// message like any other, so the central side can alert on it.
package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus-streams/prometheus-streams/edge/scrape"
	"github.com/prometheus-streams/prometheus-streams/internal/version"
	"github.com/prometheus-streams/prometheus-streams/stream"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// Errors Run returns, for the caller to map onto exit codes.
var (
	// ErrUnreachable: no connection to the stream could be made before the deadline,
	// or the JetStream stream does not exist (and create_stream is false).
	ErrUnreachable = errors.New("stream unreachable")
	// ErrIncompatible: the JetStream stream exists but cannot take the run's messages
	// (it does not capture <topic>.>, is sealed, or does not acknowledge publishes).
	ErrIncompatible = errors.New("stream incompatible")
	// ErrAcksMissing: some messages were not acknowledged by the deadline, or failed.
	ErrAcksMissing = errors.New("stream acks missing")
)

// Dialer connects to the stream; a run calls it once, while its scrapes run.
// ctx is the run's: the publisher tries a publish again until it ends.
type Dialer func(ctx context.Context) (stream.Publisher, error)

// Runner runs scrape-once. Build one per process.
type Runner struct {
	opts   Options
	codec  *envelope.Codec
	dial   Dialer
	logger *slog.Logger
	ver    string // build version: in the User-Agent and in every envelope
	ua     string
}

// New returns a Runner. dial may be nil for a dry run. buildVersion is the binary's
// version: the User-Agent names it and every envelope carries it.
func New(o Options, codec *envelope.Codec, dial Dialer, logger *slog.Logger, buildVersion string) *Runner {
	return &Runner{opts: o, codec: codec, dial: dial, logger: logger, ver: buildVersion, ua: version.UserAgentOf(buildVersion)}
}

// Summary describes one run, for its one log line.
type Summary struct {
	Targets, OK, Failed int
	Series              int
	RawBytes            int // exposition bytes as published, uncompressed
	WireBytes           int // envelope bytes as published
	Published, Acked    int
	AckFailed, Pending  int
	Oversized           int // scrapes replaced by a failure message: too large even in parts
	Split               int // scrapes published in several parts, each fitting the server
	Retried             int // publishes tried again (JetStream: no ack in time, connection or leader lost)
	ScrapeTime          time.Duration
	Duration            time.Duration
}

// LogAttrs renders the summary as structured log attributes.
func (s Summary) LogAttrs() []any {
	return []any{
		"targets", s.Targets, "ok", s.OK, "failed", s.Failed, "series", s.Series,
		"raw_bytes", s.RawBytes, "wire_bytes", s.WireBytes,
		"published", s.Published, "acked", s.Acked, "ack_failed", s.AckFailed, "pending", s.Pending,
		"oversized", s.Oversized, "split", s.Split, "retried", s.Retried,
		"scrape_seconds", s.ScrapeTime.Seconds(), "duration_seconds", s.Duration.Seconds(),
	}
}

// Scrape scrapes the selected targets concurrently, at most scrape_concurrency at once,
// and calls each(result) as each finishes, from the scraping goroutine.
func (r *Runner) Scrape(ctx context.Context, sel []Selected, each func(Selected, *scrape.Result)) error {
	scrapers := map[string]*scrape.Scraper{}
	for _, s := range sel {
		if _, ok := scrapers[s.Job.Name]; ok {
			continue
		}
		sc, err := scrape.New(s.Job.Job, r.ua)
		if err != nil {
			return err
		}
		scrapers[s.Job.Name] = sc
	}
	limit := r.opts.ScrapeConcurrency
	if limit <= 0 || limit > len(sel) {
		limit = len(sel)
	}
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for _, s := range sel {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			each(s, scrapers[s.Job.Name].Scrape(ctx, s.Target))
		}()
	}
	wg.Wait()
	return nil
}

// Envelope wraps a scrape result for the wire.
func (r *Runner) Envelope(s Selected, res *scrape.Result) *envelope.Envelope {
	e := &envelope.Envelope{
		Publisher:   r.opts.Identity,
		Site:        r.opts.Site,
		Job:         s.Job.Name,
		Instance:    s.Target.Name,
		Labels:      staticLabels(s),
		HonorLabels: s.Job.HonorLabels,
		Start:       res.Start,
		Duration:    res.Duration,
		HTTPStatus:  res.HTTPStatus,
		ContentType: res.ContentType,
		Body:        res.Body,
		Series:      res.Series,

		PublisherVersion: r.ver,
		Histograms:       envelope.Histograms(s.Job.Histograms),
	}
	if res.Err != nil {
		// The reason may quote what the target sent (a status line, a header): the
		// drain shows it, so it must be UTF-8 whatever the target sent.
		e.Error = strings.ToValidUTF8(res.Err.Error(), "\uFFFD")
		e.Body, e.ContentType = nil, ""
	}
	return e
}

// staticLabels merges the job's and the target's labels (the target's win), sorted.
func staticLabels(s Selected) []envelope.Label {
	m := make(map[string]string, len(s.Job.Labels)+len(s.Target.Labels))
	for k, v := range s.Job.Labels {
		m[k] = v
	}
	for k, v := range s.Target.Labels {
		m[k] = v
	}
	out := make([]envelope.Label, 0, len(m))
	for k, v := range m {
		out = append(out, envelope.Label{Name: k, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

type encoded struct {
	env  *envelope.Envelope
	data []byte
}

// Run scrapes and publishes the selected targets and waits for the server's acks, all
// within the run's timeout.
func (r *Runner) Run(ctx context.Context, sel []Selected) (Summary, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, r.opts.RunTimeout)
	defer cancel()
	sum := Summary{Targets: len(sel)}

	// Connect while the scrapes run: neither waits for the other.
	type dialed struct {
		conn stream.Publisher
		err  error
	}
	connCh := make(chan dialed, 1)
	go func() {
		c, err := r.dial(ctx)
		connCh <- dialed{c, err}
	}()

	results := make(chan encoded, len(sel))
	var mu sync.Mutex
	var encErr error
	scrapeErr := make(chan error, 1)
	go func() {
		defer close(results)
		scrapeErr <- r.Scrape(ctx, sel, func(s Selected, res *scrape.Result) {
			e := r.Envelope(s, res)
			data, err := r.codec.Encode(e)
			if err != nil {
				mu.Lock()
				encErr = errors.Join(encErr, fmt.Errorf("encode %s: %w", s.Key(), err))
				mu.Unlock()
				return
			}
			results <- encoded{env: e, data: data}
		})
	}()

	var d dialed
	select {
	case d = <-connCh:
	case <-ctx.Done():
		d = <-connCh // the dialer honours ctx, so this returns promptly
	}
	if d.err != nil {
		cancel()
		for range results {
		}
		sum.Duration = time.Since(start)
		if errors.Is(d.err, stream.ErrStreamMismatch) {
			return sum, fmt.Errorf("%w: %w", ErrIncompatible, d.err)
		}
		return sum, fmt.Errorf("%w: %w", ErrUnreachable, d.err)
	}
	defer d.conn.Close()

	var acks stream.Acks
	var sendErr error
	var unsent int
	var ackedTargets atomic.Int64 // targets whose every part the server acknowledged
	for m := range results {
		subject := d.conn.Subject(m.env.Job, m.env.Instance)
		msgs := [][]byte{m.data}
		if maxPayload := d.conn.MaxPayload(subject); len(m.data) > maxPayload {
			// Too large for one message: split into parts that each fit, which the drain
			// reassembles; a failed-scrape notice only when even that cannot be done.
			parts, err := r.codec.EncodeSplit(m.env, maxPayload)
			if err != nil {
				m = r.oversized(m, maxPayload, err)
				msgs = [][]byte{m.data}
				sum.Oversized++
			} else {
				msgs = parts
				sum.Split++
				r.logger.Info("scrape split into parts", "job", m.env.Job, "instance", m.env.Instance,
					"bytes", len(m.data), "parts", len(parts), "max_payload", maxPayload)
			}
		}
		sum.count(m.env)
		if m.env.Error != "" {
			// Failures get a line each; successes only count towards the summary, and
			// get a line of their own at debug (scrape-once -v).
			r.logger.Warn("scrape failed", "job", m.env.Job, "instance", m.env.Instance, "err", m.env.Error)
		} else {
			r.logger.Debug("scrape done", "job", m.env.Job, "instance", m.env.Instance, "series", m.env.Series,
				"raw_bytes", len(m.env.Body), "wire_bytes", len(m.data), "parts", len(msgs),
				"scrape_seconds", m.env.Duration.Seconds())
		}
		parts := new(atomic.Int64)
		parts.Store(int64(len(msgs)))
		acked := func(err error) {
			if err == nil && parts.Add(-1) == 0 {
				ackedTargets.Add(1)
			}
		}
		for i, data := range msgs {
			id := stream.MsgID(m.env.Job, m.env.Instance, m.env.Start, i, len(msgs))
			if err := acks.Publish(d.conn, subject, data, id, acked); err != nil {
				sendErr = errors.Join(sendErr, fmt.Errorf("publish %s/%s part %d of %d: %w", m.env.Job, m.env.Instance, i, len(msgs), err))
				unsent++
				continue
			}
			sum.Published++
			sum.WireBytes += len(data)
		}
		sum.RawBytes += len(m.env.Body)
	}
	sum.ScrapeTime = time.Since(start)
	if err := <-scrapeErr; err != nil {
		return sum, err
	}
	sum.Acked, sum.AckFailed, sum.Pending = acks.Wait(ctx)
	sum.Retried = d.conn.Retried()
	sum.Duration = time.Since(start)

	mu.Lock()
	defer mu.Unlock()
	if encErr != nil {
		return sum, encErr
	}
	if sendErr != nil || sum.AckFailed > 0 || sum.Pending > 0 || sum.Acked != sum.Published || sum.OK+sum.Failed != sum.Targets {
		// Counted against all the run had to send, not only what it sent: a run cut
		// short must not read as complete.
		err := fmt.Errorf("%w: %d of %d targets acknowledged; of %d messages, %d acknowledged, %d failed, %d unanswered at the deadline, %d not sent",
			ErrAcksMissing, ackedTargets.Load(), sum.Targets, sum.Published+unsent, sum.Acked, sum.AckFailed, sum.Pending, unsent)
		if first := acks.Err(); first != nil {
			err = fmt.Errorf("%w (first failure: %w)", err, first)
		}
		return sum, errors.Join(err, sendErr)
	}
	return sum, nil
}

func (s *Summary) count(e *envelope.Envelope) {
	if e.Error == "" {
		s.OK++
		s.Series += e.Series
	} else {
		s.Failed++
	}
}

// oversized replaces a scrape too large for the server with a failed scrape that says
// so: never a silent drop, never a disconnect.
func (r *Runner) oversized(m encoded, maxPayload int, why error) encoded {
	f := *m.env
	f.Error = fmt.Sprintf("scrape of %d series (%d bytes, %d compressed) does not fit the stream server's max payload of %d bytes, even in parts: %v",
		m.env.Series, len(m.env.Body), len(m.data), maxPayload, why)
	f.Body, f.ContentType = nil, ""
	data, err := r.codec.Encode(&f)
	if err != nil {
		// Encoding an envelope without a body cannot fail short of a bug; keep the
		// original so the publish reports the size.
		r.logger.Error("encode oversize notice", "job", f.Job, "instance", f.Instance, "err", err)
		return m
	}
	r.logger.Warn("scrape too large for the stream", "job", f.Job, "instance", f.Instance,
		"bytes", len(m.data), "max_payload", maxPayload)
	return encoded{env: &f, data: data}
}
