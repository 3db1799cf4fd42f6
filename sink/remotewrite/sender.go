package remotewrite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	remote "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"
	promcfg "github.com/prometheus/common/config"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/prometheus-streams/prometheus-streams/internal/version"
	"github.com/prometheus-streams/prometheus-streams/sink"
)

// Options describe one remote-write endpoint.
type Options struct {
	// Name identifies the endpoint in metrics and logs; it must not hold a secret.
	Name string
	URL  string
	// Message is remote.WriteV1MessageType (the default) or remote.WriteV2MessageType.
	Message          remote.WriteMessageType
	HTTPClientConfig promcfg.HTTPClientConfig
	Headers          map[string]string
	// Timeout bounds one attempt of a request.
	Timeout time.Duration
	// MaxSamplesPerSend bounds one request.
	MaxSamplesPerSend int
	// BatchSendDeadline is how long a sender waits for a request to fill, as a
	// Prometheus shard does; 0 sends at once.
	BatchSendDeadline time.Duration
	// MaxShards is how many requests are in flight at once.
	MaxShards int
	// MinBackoff and MaxBackoff bound the wait before a retry on 5xx, 429 and network
	// errors, shared by all the senders of the receiver (see pace). A request is tried
	// 1+MaxRetries times (3 retries by default) before the drain takes it back.
	MinBackoff, MaxBackoff time.Duration
	MaxRetries             int
	// RetryOnRateLimit retries on 429 as on a 5xx; without it a 429 goes back to the
	// drain at once, which retries the scrapes with its own backoff.
	RetryOnRateLimit bool
	// SampleAgeLimit, when positive, refuses for good the scrapes older than it rather
	// than write them (Prometheus's sample_age_limit).
	SampleAgeLimit time.Duration
	// Metadata is how remote-write 1.0 requests carry the families' metadata.
	Metadata Metadata
	// Writers is how many scrapes the drain hands the sink at once at most (its
	// workers): once that many wait in the senders no more can come before some are
	// sent, so the senders send what they hold rather than wait out the deadline.
	// 0: unknown.
	Writers int
	// Now is the clock; time.Now by default.
	Now func() time.Time
}

// Metadata is Prometheus's metadata_config, for remote-write 1.0: a family's metadata
// rides on the first request with its samples, and again once Interval has passed,
// at most MaxPerSend entries a request. Remote-write 2.0 carries it on every series.
type Metadata struct {
	Off        bool
	Interval   time.Duration // 1m by default
	MaxPerSend int           // 500 by default
}

// sender batches the scrapes of many targets into requests and sends them.
type sender struct {
	o      Options
	api    *remote.API
	logger *slog.Logger
	queue  chan *entry
	pace   *pace
	// waiting counts the entries queued or in a request being filled; flush tells the
	// senders filling a request that every writer waits (see Options.Writers).
	waiting atomic.Int64
	flush   chan struct{}
	// saturated: the drain can take no more from its streams (sink.Pressured), so
	// nothing more comes while a request waits to fill: it goes with what it has.
	saturated atomic.Bool
	cancel    context.CancelFunc

	metaMu   sync.Mutex
	metaSent map[string]time.Time // family name -> when its 1.0 metadata was last written
	bufs     sync.Pool            // of *buffers
	wg       sync.WaitGroup

	requests *prometheus.CounterVec
	samples  prometheus.Counter
	rejected *prometheus.CounterVec
	duration prometheus.Histogram
	batch    prometheus.Histogram
}

// entry is the samples of one write waiting for a request: one scrape's, or a target's
// scrapes that joined it while it waited (see join).
type entry struct {
	done chan error

	mu     sync.Mutex
	sealed bool // taken into a request being sent: nothing joins it any more
	series []series
	metas  []meta
}

// size is how many samples e holds now.
func (e *entry) size() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.series)
}

// join calls grow with e held unless e is sealed, and replaces e's samples with what
// grow returns: the same samples and more after them. It reports whether e was open.
func (e *entry) join(grow func([]series, []meta) ([]series, []meta)) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.sealed {
		return false
	}
	e.series, e.metas = grow(e.series, e.metas)
	return true
}

// seal ends e's joining: its request is about to be sent.
func (e *entry) seal() {
	e.mu.Lock()
	e.sealed = true
	e.mu.Unlock()
}

// statusKey carries, in a request's context, where the transport records the status
// code and Retry-After of the last response: the client reports a 4xx only as text.
type statusKey struct{}

type answer struct {
	code       int
	retryAfter time.Duration
}

type statusTransport struct{ next http.RoundTripper }

func (t statusTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if p, ok := r.Context().Value(statusKey{}).(*answer); ok && err == nil {
		p.code = resp.StatusCode
		p.retryAfter = 0
		if v := resp.Header.Get("Retry-After"); v != "" {
			if secs, err := strconv.Atoi(v); err == nil && secs > 0 {
				p.retryAfter = time.Duration(secs) * time.Second
			} else if at, err := http.ParseTime(v); err == nil {
				p.retryAfter = time.Until(at)
			}
		}
	}
	return resp, err
}

type headerTransport struct {
	next    http.RoundTripper
	headers map[string]string
}

func (t headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range t.headers {
		r.Header.Set(k, v)
	}
	return t.next.RoundTrip(r)
}

func newSender(o Options, logger *slog.Logger, reg prometheus.Registerer) (*sender, error) {
	if o.Message == "" {
		o.Message = remote.WriteV1MessageType
	}
	if err := o.Message.Validate(); err != nil {
		return nil, fmt.Errorf("remote write %s: %w", o.Name, err)
	}
	if o.MaxSamplesPerSend <= 0 {
		o.MaxSamplesPerSend = 2000
	}
	if o.MaxShards <= 0 {
		o.MaxShards = 4
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 30 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(5*time.Second, o.MinBackoff)
	}
	if o.MaxRetries <= 0 {
		o.MaxRetries = 3
	}
	if o.Metadata.Interval <= 0 {
		o.Metadata.Interval = time.Minute
	}
	if o.Metadata.MaxPerSend <= 0 {
		o.Metadata.MaxPerSend = 500
	}
	hc, err := promcfg.NewClientFromConfig(o.HTTPClientConfig, "remote_write", promcfg.WithUserAgent(version.UserAgent()))
	if err != nil {
		return nil, fmt.Errorf("remote write %s: HTTP client: %w", o.Name, err)
	}
	var rt http.RoundTripper = statusTransport{hc.Transport}
	if len(o.Headers) > 0 {
		rt = headerTransport{rt, o.Headers}
	}
	hc.Transport = rt
	// The client's own retries never run (see attempt): the pace retries instead, shared
	// by all senders of the receiver.
	api, err := remote.NewAPI(o.URL,
		remote.WithAPIHTTPClient(hc),
		remote.WithAPIPath(""), // the URL is the whole endpoint, as in Prometheus's config
		remote.WithAPIBackoff(remote.BackoffConfig{Min: o.MinBackoff, Max: o.MaxBackoff, MaxRetries: 1}),
	)
	if err != nil {
		return nil, fmt.Errorf("remote write %s: %w", o.Name, err)
	}
	cl := prometheus.Labels{"remote": o.Name}
	s := &sender{
		o: o, api: api, logger: logger,
		queue: make(chan *entry, o.MaxShards),
		pace:  newPace(o.MinBackoff, o.MaxBackoff),
		flush: make(chan struct{}, o.MaxShards),

		metaSent: map[string]time.Time{},
		bufs:     sync.Pool{New: newBuffers},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prometheus_streams_remote_write_requests_total", ConstLabels: cl,
			Help: "Remote-write requests, by HTTP status code (0: no answer): every attempt, retries included.",
		}, []string{"code"}),
		samples: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "prometheus_streams_remote_write_samples_total", ConstLabels: cl,
			Help: "Samples the receiver accepted, staleness markers included.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prometheus_streams_remote_write_rejected_scrapes_total", ConstLabels: cl,
			Help: "Scrapes the receiver refused for good, by reason: out_of_order (it holds newer samples), too_old (out of bounds), or the HTTP status.",
		}, []string{"reason"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "prometheus_streams_remote_write_request_duration_seconds", ConstLabels: cl,
			Help:    "Time of one attempt of a request.",
			Buckets: prometheus.ExponentialBuckets(0.002, 2, 14),
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "prometheus_streams_remote_write_request_samples", ConstLabels: cl,
			Help:    "Samples per request.",
			Buckets: prometheus.ExponentialBuckets(10, 2, 14),
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.requests, s.samples, s.rejected, s.duration, s.batch} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("remote write %s: register metrics: %w", o.Name, err)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	for range o.MaxShards {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.run(ctx)
		}()
	}
	return s, nil
}

func (s *sender) close() {
	s.cancel()
	s.wg.Wait()
}

// saturatedLinger is how long a request waiting to fill waits for one more scrape
// while the drain is saturated (sink.Pressured): about what a worker takes to prepare
// a scrape, so that those under way join it.
const saturatedLinger = 5 * time.Millisecond

// flushGrace bounds the sending of what the senders hold when the sink closes.
const flushGrace = 5 * time.Second

// errClosed fails what is queued when the sink closes: the drain leaves it unacknowledged.
var errClosed = errors.New("remote write: sink closed")

// write sends one scrape's samples, sharing a request with other scrapes when several
// wait, and returns once the receiver has them or refused them.
func (s *sender) write(ctx context.Context, ss []series, metas []meta) error {
	e, err := s.enqueue(ctx, ss, metas)
	if err != nil {
		return err
	}
	return e.wait(ctx)
}

// enqueue queues samples for a request and returns their entry, which more samples may
// join until its request is sent; its outcome comes on e.done.
func (s *sender) enqueue(ctx context.Context, ss []series, metas []meta) (*entry, error) {
	e := &entry{series: ss, metas: metas, done: make(chan error, 1)}
	select {
	case s.queue <- e:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if n := s.waiting.Add(1); s.o.Writers > 0 && n >= int64(s.o.Writers) {
		s.flushAll()
	}
	return e, nil
}

// flushAll tells every sender filling a request to send it now.
func (s *sender) flushAll() {
	for range s.o.MaxShards {
		select {
		case s.flush <- struct{}{}:
		default:
		}
	}
}

// wait returns e's outcome once its request is answered, or ctx's error first.
func (e *entry) wait(ctx context.Context) error {
	select {
	case err := <-e.done:
		return err
	case <-ctx.Done():
		return ctx.Err() // the request goes on; a retry of the scrape is harmless
	}
}

// run is one sender: it takes what is queued, up to MaxSamplesPerSend samples, and sends it.
func (s *sender) run(ctx context.Context) {
	var carry *entry
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-s.queue:
			case <-ctx.Done():
				return
			}
		}
		batch, n := []*entry{first}, first.size()
		var deadline <-chan time.Time
		var timer *time.Timer
		if wait := s.fillTime(); wait > 0 {
			timer = time.NewTimer(wait)
			deadline = timer.C
		}
		var linger *time.Timer // one per request, while the drain is saturated
	fill:
		for n < s.o.MaxSamplesPerSend {
			e, ok := s.nextEntry(ctx, deadline, &linger)
			if !ok {
				break fill
			}
			size := e.size()
			if n+size > s.o.MaxSamplesPerSend {
				carry = e
				break
			}
			batch, n = append(batch, e), n+size
		}
		if timer != nil {
			timer.Stop()
		}
		if linger != nil {
			linger.Stop()
		}
		for _, e := range batch {
			e.seal()
		}
		s.waiting.Add(-int64(len(batch)))
		if ctx.Err() != nil {
			// Closing: what the sender holds goes out now, as Prometheus flushes its
			// queues at shutdown, within a bounded grace. (The drain acknowledges none
			// of it once stopping: a restart writes it again, harmlessly.)
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(s.o.Timeout, flushGrace))
			s.send(fctx, batch)
			cancel()
		} else {
			s.send(ctx, batch)
		}
		if ctx.Err() != nil {
			if carry != nil {
				carry.done <- errClosed
			}
			return
		}
	}
}

// nextEntry waits for one more entry for a request being filled: until deadline (nil:
// it does not wait), or, while the drain is saturated, a moment, timed by *linger
// (made on first use, reset at each). It returns false when the request should go: the
// wait is over, every writer waits, the drain became full, or ctx ended.
func (s *sender) nextEntry(ctx context.Context, deadline <-chan time.Time, linger **time.Timer) (*entry, bool) {
	if deadline == nil {
		select {
		case e := <-s.queue:
			return e, true
		default:
			return nil, false
		}
	}
	if s.saturated.Load() {
		// Nothing more comes from the stream: only what the drain's workers are still
		// preparing, which is worth a moment, not the deadline.
		if *linger == nil {
			*linger = time.NewTimer(saturatedLinger)
		} else {
			(*linger).Reset(saturatedLinger)
		}
		deadline = (*linger).C
	}
	select {
	case e := <-s.queue:
		return e, true
	case <-deadline:
	case <-s.flush:
	case <-ctx.Done():
	}
	return nil, false
}

// fillTime is how long a sender waits for its request to fill: batch_send_deadline, but
// while the receiver fails only until the backoff lets the next request go (which then
// takes what came meanwhile), not a deadline more.
func (s *sender) fillTime() time.Duration {
	if until, failing := s.pace.next(); failing {
		return min(s.o.BatchSendDeadline, time.Until(until))
	}
	return s.o.BatchSendDeadline
}

// send writes a batch and tells each of its entries the outcome. A batch refused for
// good is sent again entry by entry, so that one bad scrape fails alone.
func (s *sender) send(ctx context.Context, batch []*entry) {
	err := s.request(ctx, batch)
	if err == nil || len(batch) == 1 || !errors.Is(err, errFinal) {
		for _, e := range batch {
			e.done <- s.outcome(err)
		}
		return
	}
	for _, e := range batch {
		e.done <- s.outcome(s.request(ctx, []*entry{e}))
	}
}

// errLater marks an answer that asks to retry, not at once but later (a 429 without
// retry_on_http_429).
var errLater = errors.New("rate limited")

// errFinal marks an answer that retrying the same request cannot change.
var errFinal = errors.New("refused")

// outcome turns a request's error into what the drain makes of it, counting refusals.
func (s *sender) outcome(err error) error {
	var f *finalError
	if !errors.As(err, &f) {
		return err
	}
	s.rejected.WithLabelValues(f.reason).Inc()
	if f.reason == "out_of_order" {
		return fmt.Errorf("%w: %w", sink.ErrSuperseded, err)
	}
	return fmt.Errorf("%w: %w", sink.ErrRejected, err)
}

type finalError struct {
	reason string
	err    error
}

func (e *finalError) Error() string { return e.err.Error() }
func (e *finalError) Unwrap() []error {
	return []error{errFinal, e.err}
}

// request sends the entries' samples, in requests of at most MaxSamplesPerSend (one
// scrape can be larger than that), all of which must succeed.
func (s *sender) request(ctx context.Context, batch []*entry) error {
	var parts []part
	n := 0
	for _, e := range batch {
		for ss := e.series; len(ss) > 0; {
			k := min(len(ss), s.o.MaxSamplesPerSend-n)
			parts = append(parts, part{ss: ss[:k], metas: e.metas})
			ss, n = ss[k:], n+k
			if n == s.o.MaxSamplesPerSend {
				if err := s.post(ctx, parts, n); err != nil {
					return err
				}
				parts, n = parts[:0], 0
			}
		}
	}
	if n > 0 {
		return s.post(ctx, parts, n)
	}
	return nil
}

// part is some series of one entry, taken into a request as they are, with the metas
// their indexes refer to.
type part struct {
	ss    []series
	metas []meta
}

// post sends one request, retrying it under the pace while the receiver fails (5xx,
// 429 with RetryOnRateLimit, no answer), up to MaxRetries times: then the drain takes
// the scrapes back, to retry them later.
func (s *sender) post(ctx context.Context, parts []part, n int) error {
	var msg any
	var sent []string
	b := s.bufs.Get().(*buffers)
	defer s.bufs.Put(b)
	defer b.reset()
	if s.o.Message == remote.WriteV2MessageType {
		msg = buildV2(b, parts, n)
	} else {
		req := buildV1(b, parts, n)
		req.Metadata, sent = s.dueMetadata(req.Metadata)
		msg = req
	}
	s.batch.Observe(float64(n))
	held := false
	defer func() { s.pace.release(held) }()
	for retries := 0; ; retries++ {
		var err error
		if held, err = s.pace.wait(ctx, held); err != nil {
			return err
		}
		retryAfter, err := s.attempt(ctx, msg)
		if err == nil {
			s.pace.answered()
			s.samples.Add(float64(n))
			s.metadataSent(sent)
			return nil
		}
		var fe *finalError
		if errors.As(err, &fe) || ctx.Err() != nil {
			s.pace.answered() // it answers, if only to refuse
			return err
		}
		if errors.Is(err, errLater) {
			s.pace.answered()
			return err
		}
		s.pace.failed(retryAfter)
		if retries >= s.o.MaxRetries {
			return err
		}
		// The next wait takes the turn: no other request of the receiver goes before
		// this one's retries.
	}
}

// dueMetadata keeps of ms the entries due: not sent within the interval, at most
// MaxPerSend; it returns them and their names.
func (s *sender) dueMetadata(ms []prompb.MetricMetadata) ([]prompb.MetricMetadata, []string) {
	if s.o.Metadata.Off {
		return nil, nil
	}
	now := time.Now()
	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	out := ms[:0]
	var names []string
	for _, m := range ms {
		if len(out) == s.o.Metadata.MaxPerSend {
			break
		}
		if at, ok := s.metaSent[m.MetricFamilyName]; ok && now.Sub(at) < s.o.Metadata.Interval {
			continue
		}
		out = append(out, m)
		names = append(names, m.MetricFamilyName)
	}
	return out, names
}

// metadataSent records that the receiver has the metadata of names. Entries older than
// the interval are forgotten, so that families gone do not pile up.
func (s *sender) metadataSent(names []string) {
	if len(names) == 0 {
		return
	}
	now := time.Now()
	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	for _, n := range names {
		s.metaSent[n] = now
	}
	if len(s.metaSent) > 4*len(names)+1024 {
		for n, at := range s.metaSent {
			if now.Sub(at) >= s.o.Metadata.Interval {
				delete(s.metaSent, n)
			}
		}
	}
}

// attempt sends one request once. The client would retry a 5xx itself, with its own
// backoff: its retry callback ends the attempt instead, so that the pace decides.
func (s *sender) attempt(ctx context.Context, msg any) (time.Duration, error) {
	var a answer
	actx, cancel := context.WithTimeout(context.WithValue(ctx, statusKey{}, &a), s.o.Timeout)
	defer cancel()
	var again error
	start := time.Now()
	_, err := s.api.Write(actx, s.o.Message, msg, remote.WithWriteRetryCallback(func(e error) {
		again = e
		cancel()
	}))
	s.duration.Observe(time.Since(start).Seconds())
	s.requests.WithLabelValues(strconv.Itoa(a.code)).Inc()
	if err == nil {
		return 0, nil
	}
	if again != nil && ctx.Err() == nil {
		err = again
	}
	err = fmt.Errorf("remote write %s: %w", s.o.Name, err)
	code := a.code
	switch {
	case ctx.Err() != nil:
		return 0, err
	case code == http.StatusTooManyRequests:
		if s.o.RetryOnRateLimit {
			return a.retryAfter, err
		}
		// No quick retry, but no refusal either: the drain retries the scrapes later,
		// with its own backoff, and nothing is dropped.
		return 0, fmt.Errorf("%w: %w", errLater, err)
	case code >= 500:
		return a.retryAfter, err
	case code == http.StatusBadRequest && onlyExemplarsRefused(err.Error()):
		// Prometheus 3 wrote everything else of the request: its samples are there.
		s.logger.Debug("receiver dropped exemplars older than those it holds", "err", err)
		return 0, nil
	case code >= 400:
		return 0, &finalError{reason: reason(code, err.Error()), err: err}
	case code >= 200 && code < 300:
		// A 2.0 request answered 2xx without saying what it wrote: a 1.0-only receiver.
		return 0, &finalError{reason: "not_written", err: err}
	default:
		return 0, err // no answer, or a timeout: try again later
	}
}

// onlyExemplarsRefused tells whether a 400 from Prometheus names nothing but exemplars
// older than those it holds: it commits the rest of the request, and says so in one
// line per refusal.
func onlyExemplarsRefused(msg string) bool {
	n := 0
	for line := range strings.Lines(msg) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if !strings.Contains(line, "out of order exemplar") {
			return false
		}
		n++
	}
	return n > 0
}

// reason names a 4xx answer for the rejected counter. Prometheus names the samples it
// cannot take in its answer; for the others the status code is the reason.
func reason(code int, msg string) string {
	switch {
	case strings.Contains(msg, "out of order"), strings.Contains(msg, "duplicate sample for timestamp"):
		return "out_of_order"
	case strings.Contains(msg, "out of bounds"), strings.Contains(msg, "too old"):
		return "too_old"
	}
	return strconv.Itoa(code)
}

// buildV1 makes a remote-write 1.0 request, with the families' metadata. A native
// histogram goes as a 1.0 histogram, and exemplars with their series, as Prometheus
// writes them; 1.0 has no room for start timestamps.
func buildV1(b *buffers, parts []part, n int) *prompb.WriteRequest {
	req := &prompb.WriteRequest{Timeseries: grow(&b.v1, n)}
	samples := grow(&b.samples1, n)
	var later []prompb.TimeSeries
	seen := map[string]bool{}
	i := 0
	for _, p := range parts {
		used := make([]bool, len(p.metas))
		for _, s := range p.ss {
			ts := prompb.TimeSeries{Labels: s.labels}
			switch {
			case s.h != nil:
				ts.Histograms = []prompb.Histogram{prompb.FromIntHistogram(s.t, s.h)}
			case s.fh != nil:
				ts.Histograms = []prompb.Histogram{prompb.FromFloatHistogram(s.t, s.fh)}
			default:
				samples[i] = prompb.Sample{Value: s.v, Timestamp: s.t}
				ts.Samples = samples[i : i+1 : i+1]
			}
			var ex []prompb.Exemplar
			for _, e := range s.exemplars {
				ex = append(ex, prompb.Exemplar{Labels: e.labels, Value: e.v, Timestamp: e.t})
			}
			if len(ts.Histograms) > 0 && len(ex) > 0 {
				// A histogram's exemplars go in an entry of their own after it, as
				// Prometheus sends exemplars: a receiver that appends an entry's
				// exemplars before its histograms (Prometheus 2) finds the series only
				// then.
				later = append(later, prompb.TimeSeries{Labels: s.labels, Exemplars: ex})
			} else {
				ts.Exemplars = ex
			}
			req.Timeseries[i] = ts
			i++
			if s.meta >= 0 {
				used[s.meta] = true
			}
		}
		for j, m := range p.metas {
			if !used[j] || m.name == "" || seen[m.name] {
				continue
			}
			seen[m.name] = true
			req.Metadata = append(req.Metadata, prompb.MetricMetadata{
				Type: prompb.FromMetadataType(m.typ), MetricFamilyName: m.name, Help: m.help, Unit: m.unit,
			})
		}
	}
	req.Timeseries = append(req.Timeseries, later...)
	return req
}

// buildV2 makes a remote-write 2.0 request: labels as references into one symbol table,
// each series' metadata on the series, native histograms (custom buckets included),
// exemplars, and the start timestamp of each sample, as Prometheus writes them.
func buildV2(b *buffers, parts []part, n int) *writev2.Request {
	st := &b.symbols
	req := &writev2.Request{Timeseries: grow(&b.v2, n)}
	samples := grow(&b.samples2, n)
	refs := b.refs[:0]
	i := 0
	for _, p := range parts {
		for _, s := range p.ss {
			start := len(refs)
			for _, l := range s.labels {
				refs = append(refs, st.Symbolize(l.Name), st.Symbolize(l.Value))
			}
			ts := writev2.TimeSeries{LabelsRefs: refs[start:len(refs):len(refs)]}
			switch {
			case s.h != nil:
				ts.Histograms = []writev2.Histogram{writev2.FromIntHistogram(s.st, s.t, s.h)}
			case s.fh != nil:
				ts.Histograms = []writev2.Histogram{writev2.FromFloatHistogram(s.st, s.t, s.fh)}
			default:
				samples[i] = writev2.Sample{Value: s.v, Timestamp: s.t, StartTimestamp: s.st}
				ts.Samples = samples[i : i+1 : i+1]
			}
			for _, e := range s.exemplars {
				var lr []uint32
				for _, l := range e.labels {
					lr = append(lr, st.Symbolize(l.Name), st.Symbolize(l.Value))
				}
				ts.Exemplars = append(ts.Exemplars, writev2.Exemplar{LabelsRefs: lr, Value: e.v, Timestamp: e.t})
			}
			if s.meta >= 0 {
				m := p.metas[s.meta]
				ts.Metadata = writev2.Metadata{
					Type: writev2.FromMetadataType(m.typ), HelpRef: st.Symbolize(m.help), UnitRef: st.Symbolize(m.unit),
				}
			}
			req.Timeseries[i] = ts
			i++
		}
	}
	b.refs = refs
	req.Symbols = st.Symbols()
	return req
}

// buffers are what building a request takes, kept from one request to the next: a
// request of max_samples_per_send series needs as many entries of each.
type buffers struct {
	v1       []prompb.TimeSeries
	samples1 []prompb.Sample
	v2       []writev2.TimeSeries
	samples2 []writev2.Sample
	refs     []uint32
	symbols  writev2.SymbolsTable
}

func newBuffers() any { return &buffers{symbols: writev2.NewSymbolTable()} }

// reset lets go of what the last request referred to (label sets, histograms), keeping
// the room.
func (b *buffers) reset() {
	clear(b.v1[:cap(b.v1)]) // past len too: a histogram's exemplars are appended there
	clear(b.v2[:cap(b.v2)])
	b.symbols.Reset()
}

// grow makes *buf n entries long, reusing its room, and returns it.
func grow[T any](buf *[]T, n int) []T {
	*buf = slices.Grow((*buf)[:0], n)[:n]
	return *buf
}
