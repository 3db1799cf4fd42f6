package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/snappy"
	remote "github.com/prometheus/client_golang/exp/api/remote"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/protobuf/encoding/protowire"
)

// receiver is a remote-write 1.0 receiver that only counts: it decodes each request
// (snappy, protobuf) as any receiver must, counts the samples per scrape — a scrape is
// its instance label and sample time, which the harness sets to the publish time — and
// answers at once. It can play an outage (503 to every request) and keep, per target,
// the order its scrapes arrived in. As a relay (startRelay) it forwards every request
// to a real receiver instead and counts what that one accepted. Its methods are safe
// for concurrent use.
type receiver struct {
	srv      *http.Server
	ln       net.Listener
	upstream string // relay: the real receiver's write URL

	requests atomic.Int64
	samples  atomic.Int64
	down     atomic.Bool  // answer 503 to everything
	refused  atomic.Int64 // requests answered 503 while down

	mu      sync.Mutex
	scrapes map[scrapeKey]*arrival
	history *arrivals // nil unless keepHistory was called
}

type scrapeKey struct {
	instance string
	ts       int64 // milliseconds
}

// arrival is what reached the receiver of one scrape.
type arrival struct {
	samples int
	last    time.Time
}

func startReceiver() (*receiver, error) {
	return listenReceiver("")
}

// startRelay is a receiver that forwards each request to upstream, a real receiver's
// write URL, answers what upstream answered, and counts the requests upstream took.
func startRelay(upstream string) (*receiver, error) {
	return listenReceiver(upstream)
}

func listenReceiver(upstream string) (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &receiver{ln: ln, upstream: upstream, scrapes: map[scrapeKey]*arrival{}}
	var h http.Handler = remote.NewWriteHandler(r, remote.MessageTypes{remote.WriteV1MessageType})
	if upstream != "" {
		h = http.HandlerFunc(r.relay)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/v1/write", r.gate(h))
	r.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// URL is where the drain writes.
func (r *receiver) URL() string { return "http://" + r.ln.Addr().String() + "/api/v1/write" }

func (r *receiver) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
}

// keepHistory has the receiver keep every target's scrapes in the order they arrive,
// for check; a whole scrape has perScrape samples.
func (r *receiver) keepHistory(perScrape int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.history = newArrivals(perScrape)
}

// setDown starts (true) or ends an outage: while down, every request is answered 503
// Service Unavailable, a status a remote-write sender retries.
func (r *receiver) setDown(down bool) { r.down.Store(down) }

// gate answers 503 while the receiver is down, after reading the request as a real
// server would, so the client's connection stays usable.
func (r *receiver) gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.down.Load() {
			_, _ = io.Copy(io.Discard, req.Body)
			r.refused.Add(1)
			http.Error(w, "bench receiver: down for the outage", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, req)
	})
}

// relay forwards one request to the upstream receiver and answers as it did; a request
// it took (2xx) is counted.
func (r *receiver) relay(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out, err := http.NewRequestWithContext(req.Context(), http.MethodPost, r.upstream, bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out.Header = req.Header.Clone()
	resp, err := relayClient.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		if raw, err := snappy.Decode(nil, body); err == nil {
			if n, err := r.take(raw); err == nil {
				r.requests.Add(1)
				r.samples.Add(int64(n))
			}
		}
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
}

var relayClient = floorClient(16)

// Store is called by remote.NewWriteHandler with the body already snappy-decoded.
func (r *receiver) Store(req *http.Request, _ remote.WriteMessageType) (*remote.WriteResponse, error) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	n, err := r.take(body)
	if err != nil {
		resp := remote.NewWriteResponse()
		resp.SetStatusCode(http.StatusBadRequest)
		return resp, err
	}
	r.requests.Add(1)
	r.samples.Add(int64(n))
	resp := remote.NewWriteResponse()
	resp.Add(remote.WriteResponseStats{Samples: n})
	return resp, nil
}

// take counts the samples of a decoded request per scrape. It walks the protobuf rather
// than building the request: a receiver that only counts should cost as little as
// possible of the CPU the drain shares with it.
func (r *receiver) take(body []byte) (int, error) {
	now := time.Now()
	n := 0
	r.mu.Lock()
	defer r.mu.Unlock()
	var key scrapeKey
	var cur *arrival
	run := 0 // samples of key not yet in the history
	flush := func() {
		if r.history != nil && run > 0 {
			r.history.observe(key.instance, key.ts, run)
		}
		run = 0
	}
	err := walkWriteRequest(body, func(inst []byte, ts int64) {
		n++
		// Consecutive series mostly belong to one scrape: look it up on change only.
		if cur == nil || string(inst) != key.instance || ts != key.ts {
			flush()
			key = scrapeKey{string(inst), ts}
			cur = r.scrapes[key]
			if cur == nil {
				cur = &arrival{}
				r.scrapes[key] = cur
			}
		}
		cur.samples++
		cur.last = now
		run++
	})
	flush()
	return n, err
}

// historyState runs f on the history under the receiver's lock.
func (r *receiver) historyState(f func(a *arrivals)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.history != nil {
		f(r.history)
	}
}

// Field numbers of remote-write 1.0 (prompb).
const (
	fieldWriteTimeseries = 1 // WriteRequest.timeseries
	fieldSeriesLabels    = 1 // TimeSeries.labels
	fieldSeriesSamples   = 2 // TimeSeries.samples
	fieldLabelName       = 1
	fieldLabelValue      = 2
	fieldSampleTimestamp = 2
)

// maxSamplesPerSeries samples of a series are kept on the stack; more are reported in
// several calls.
const maxSamplesPerSeries = 16

const errMalformedWriteBody = "malformed remote-write request"

// walkWriteRequest calls each with the instance label and the timestamp of every
// sample of a remote-write 1.0 request, without allocating.
func walkWriteRequest(b []byte, each func(instance []byte, ts int64)) error {
	return walkFields(b, func(num protowire.Number, v []byte) error {
		if num != fieldWriteTimeseries {
			return nil
		}
		var inst []byte
		var stamps [maxSamplesPerSeries]int64
		k := 0
		err := walkFields(v, func(num protowire.Number, v []byte) error {
			switch num {
			case fieldSeriesLabels:
				var name, value []byte
				if err := walkFields(v, func(num protowire.Number, v []byte) error {
					switch num {
					case fieldLabelName:
						name = v
					case fieldLabelValue:
						value = v
					}
					return nil
				}); err != nil {
					return err
				}
				if string(name) == model.InstanceLabel {
					inst = value
				}
			case fieldSeriesSamples:
				ts := int64(0)
				if err := walkVarints(v, fieldSampleTimestamp, func(x uint64) { ts = int64(x) }); err != nil {
					return err
				}
				if k == len(stamps) {
					for _, t := range stamps {
						each(inst, t)
					}
					k = 0
				}
				stamps[k] = ts
				k++
			}
			return nil
		})
		for _, t := range stamps[:k] {
			each(inst, t)
		}
		return err
	})
}

// walkFields calls f with each length-delimited field of the message b; other fields
// are skipped.
func walkFields(b []byte, f func(num protowire.Number, v []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%s: %w", errMalformedWriteBody, protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%s: %w", errMalformedWriteBody, protowire.ParseError(n))
			}
			if err := f(num, v); err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return fmt.Errorf("%s: %w", errMalformedWriteBody, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return nil
}

// walkVarints calls f with the value of each varint field numbered want in b.
func walkVarints(b []byte, want protowire.Number, f func(uint64)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%s: %w", errMalformedWriteBody, protowire.ParseError(n))
		}
		b = b[n:]
		if num == want && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("%s: %w", errMalformedWriteBody, protowire.ParseError(n))
			}
			f(v)
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return fmt.Errorf("%s: %w", errMalformedWriteBody, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return nil
}

// endToEnd summarises the scrapes received since the receiver started: the time from
// each scrape's start (its publish time) to the arrival of its last sample.
type endToEnd struct {
	Scrapes    int     // distinct scrapes seen
	Samples    int     // samples of a complete scrape: the most any scrape had
	Incomplete int     // scrapes with fewer samples than that
	P50, P99   float64 // seconds
	Max        float64
}

func (r *receiver) endToEnd() endToEnd {
	r.mu.Lock()
	defer r.mu.Unlock()
	var e endToEnd
	lat := make([]float64, 0, len(r.scrapes))
	for k, a := range r.scrapes {
		e.Samples = max(e.Samples, a.samples)
		lat = append(lat, a.last.Sub(time.UnixMilli(k.ts)).Seconds())
	}
	for _, a := range r.scrapes {
		if a.samples < e.Samples {
			e.Incomplete++
		}
	}
	e.Scrapes = len(lat)
	if len(lat) == 0 {
		e.P50, e.P99, e.Max = math.NaN(), math.NaN(), math.NaN()
		return e
	}
	sort.Float64s(lat)
	e.P50, e.P99, e.Max = rank(lat, 0.5), rank(lat, 0.99), lat[len(lat)-1]
	return e
}

// rank is the q-quantile of sorted values (nearest rank).
func rank(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// capture is the node_exporter exposition every target serves.
type capture struct {
	body     []byte
	families []*dto.MetricFamily
	samples  int // samples as Prometheus stores them (buckets, quantiles, sums, counts)
}

func parseCapture(body []byte) (*capture, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	byName, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse capture: %w", err)
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	slices.Sort(names)
	c := &capture{body: body}
	for _, n := range names {
		c.families = append(c.families, byName[n])
	}
	c.samples = len(c.timeSeries(instance(0), 0))
	return c, nil
}

// timeSeries is the capture as a remote-write 1.0 sender writes it for one target:
// one sample per series, job and instance attached.
func (c *capture) timeSeries(inst string, ts int64) []prompb.TimeSeries {
	var out []prompb.TimeSeries
	for _, mf := range c.families {
		name := mf.GetName()
		for _, m := range mf.Metric {
			add := func(suffix string, v float64, extra ...string) {
				ls := []prompb.Label{{Name: model.MetricNameLabel, Value: name + suffix},
					{Name: model.JobLabel, Value: benchJob}, {Name: model.InstanceLabel, Value: inst}}
				for _, l := range m.Label {
					ls = append(ls, prompb.Label{Name: l.GetName(), Value: l.GetValue()})
				}
				for i := 0; i+1 < len(extra); i += 2 {
					ls = append(ls, prompb.Label{Name: extra[i], Value: extra[i+1]})
				}
				slices.SortFunc(ls, func(a, b prompb.Label) int {
					switch {
					case a.Name < b.Name:
						return -1
					case a.Name > b.Name:
						return 1
					}
					return 0
				})
				out = append(out, prompb.TimeSeries{Labels: ls, Samples: []prompb.Sample{{Value: v, Timestamp: ts}}})
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				add("", m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add("", m.GetGauge().GetValue())
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				for _, q := range s.GetQuantile() {
					add("", q.GetValue(), model.QuantileLabel, strconv.FormatFloat(q.GetQuantile(), 'g', -1, 64))
				}
				add("_sum", s.GetSampleSum())
				add("_count", float64(s.GetSampleCount()))
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					add("_bucket", float64(b.GetCumulativeCount()), model.BucketLabel, strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64))
				}
				if bs := h.GetBucket(); len(bs) == 0 || !math.IsInf(bs[len(bs)-1].GetUpperBound(), 1) {
					add("_bucket", float64(h.GetSampleCount()), model.BucketLabel, "+Inf")
				}
				add("_sum", h.GetSampleSum())
				add("_count", float64(h.GetSampleCount()))
			default:
				add("", m.GetUntyped().GetValue())
			}
		}
	}
	return out
}

// metadata is the capture's families' metadata, as a 1.0 sender adds it.
func (c *capture) metadata() []prompb.MetricMetadata {
	md := make([]prompb.MetricMetadata, 0, len(c.families))
	for _, mf := range c.families {
		t := prompb.MetricMetadata_UNKNOWN
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			t = prompb.MetricMetadata_COUNTER
		case dto.MetricType_GAUGE:
			t = prompb.MetricMetadata_GAUGE
		case dto.MetricType_SUMMARY:
			t = prompb.MetricMetadata_SUMMARY
		case dto.MetricType_HISTOGRAM:
			t = prompb.MetricMetadata_HISTOGRAM
		}
		md = append(md, prompb.MetricMetadata{Type: t, MetricFamilyName: mf.GetName(), Help: mf.GetHelp()})
	}
	return md
}

// writeRequests builds count snappy-compressed 1.0 requests, each of as many whole
// scrapes of distinct targets as fit in maxSamples (as the drain's sender fills them),
// and returns them with the scrapes each holds.
func (c *capture) writeRequests(count, maxSamples int) ([][]byte, int, error) {
	perRequest := max(1, maxSamples/c.samples)
	ts := time.Now().UnixMilli()
	out := make([][]byte, count)
	for i := range out {
		wr := prompb.WriteRequest{Metadata: c.metadata()}
		for j := range perRequest {
			wr.Timeseries = append(wr.Timeseries, c.timeSeries(instance(i*perRequest+j), ts)...)
		}
		raw, err := wr.Marshal()
		if err != nil {
			return nil, 0, err
		}
		out[i] = snappy.Encode(nil, raw)
	}
	return out, perRequest, nil
}

// protoDelimited is the capture in the Push Gateway's delimited protobuf, the format the
// drain pushes in.
func (c *capture) protoDelimited() ([]byte, error) {
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeProtoDelim))
	for _, mf := range c.families {
		if err := enc.Encode(mf); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// floor is a receiver's own rate: clients goroutines call do as fast as they can for d.
type floor struct {
	Clients int
	Done    int // calls that succeeded
	Failed  int
	Elapsed time.Duration
	CPU     float64 // the receiver's CPU seconds over the run
	Err     error   // the first failure
}

func (f floor) rate() float64 {
	if f.Elapsed <= 0 {
		return 0
	}
	return float64(f.Done) / f.Elapsed.Seconds()
}

func runFloor(ctx context.Context, clients int, d time.Duration, do func(ctx context.Context, i int) error) floor {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var done, failed atomic.Int64
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				err := do(ctx, int(next.Add(1)-1))
				switch {
				case err == nil:
					done.Add(1)
				case ctx.Err() == nil:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	wg.Wait()
	f := floor{Clients: clients, Done: int(done.Load()), Failed: int(failed.Load()), Elapsed: time.Since(start)}
	if p := firstErr.Load(); p != nil {
		f.Err = *p
	}
	return f
}

// post sends one request and reads the answer; any 2xx is success.
func post(ctx context.Context, client *http.Client, method, url, contentType string, headers map[string]string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// floorClient is an HTTP client with enough idle connections for the floor's clients.
func floorClient(clients int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = clients
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}
