package endpoint

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/gzip"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// fmtText1 is the text format 1.0.0, which Prometheus 3 asks for: the text format
// whose names may be UTF-8, quoted, as expfmt writes them for every version. expfmt
// has no Format for it.
const fmtText1 expfmt.Format = `text/plain; version=1.0.0; charset=utf-8`

// acceptedFormats returns the formats served, in the order of preference that decides
// a wildcard Accept: the text format first, as it is the default and the cheapest to
// serve. OpenMetrics 0.0.1 and 1.0.0 are written alike by expfmt. The protobuf
// format is the delimited one, the only one Prometheus reads.
func acceptedFormats() []expfmt.Format {
	return []expfmt.Format{expfmt.FmtText, fmtText1, expfmt.FmtOpenMetrics_1_0_0, expfmt.FmtOpenMetrics_0_0_1, expfmt.FmtProtoDelim}
}

// formatType is format.FormatType, which knows no text format but 0.0.4.
func formatType(format expfmt.Format) expfmt.FormatType {
	if strings.HasPrefix(string(format), string(fmtText1)) {
		return expfmt.TypeTextPlain
	}
	return format.FormatType()
}

// gzipLevel trades ratio for speed: the response of a large drain is a hundred MB and
// more, and a slow compressor would make the scrape slower than the network it saves.
const gzipLevel = gzip.BestSpeed

// bufferSize is the write buffer of a response: big enough that writes to the
// connection or the compressor are few and large.
const bufferSize = 64 << 10

// eof ends an OpenMetrics exposition.
const eof = "# EOF\n"

// Handler serves the merged exposition of every target the sink holds, in the text
// format (0.0.4 or 1.0.0), OpenMetrics or the delimited protobuf format as the
// request's Accept header negotiates (the text format by default), with the name
// escaping it asks for, gzipped if its Accept-Encoding allows. Negotiation and
// Content-Type are those of expfmt.NegotiateAccept, as in client_golang's promhttp.
func (s *Sink) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

func (s *Sink) serveHTTP(w http.ResponseWriter, r *http.Request) {
	begin := time.Now()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	// NegotiateAccept adds the escaping the request asked for, or
	// model.NameEscapingScheme when it did not: a scraper that does not say it
	// reads UTF-8 names gets them escaped.
	format := expfmt.NegotiateAccept(r.Header, s.formats...)
	kind := formatType(format)
	label := "text"
	now := s.opts.Now()
	switch kind {
	case expfmt.TypeOpenMetrics:
		label = "openmetrics"
		s.omWanted.Store(now.UnixNano())
	case expfmt.TypeProtoDelim:
		label = "protobuf"
		s.pbWanted.Store(now.UnixNano())
	}

	h := w.Header()
	h.Set("Content-Type", string(format))
	h.Add("Vary", "Accept")
	h.Add("Vary", "Accept-Encoding")
	gz := acceptsGzip(r.Header.Get("Accept-Encoding"))
	if gz {
		h.Set("Content-Encoding", "gzip")
	}
	if r.Method == http.MethodHead {
		return
	}

	snaps, names := s.view()
	if s.opts.MaxAge > 0 {
		// The drain sweeps periodically; in between, a target past max age is left
		// out here.
		snaps = slices.DeleteFunc(snaps, func(sn *snapshot) bool { return now.Sub(sn.start) > s.opts.MaxAge })
	}
	if kind != expfmt.TypeTextPlain {
		s.prepare(snaps, kind)
	}

	rw := s.responseWriter(w, gz)
	scheme := format.ToEscapingScheme()
	switch {
	case scheme != model.NoEscaping && needsEscaping(snaps, names):
		s.writeEscaped(rw.buf, snaps, names, kind, scheme)
	case kind == expfmt.TypeProtoDelim:
		writeProto(rw.buf, snaps, names)
	default:
		writeMerged(rw.buf, snaps, names, kind)
	}
	if kind == expfmt.TypeOpenMetrics {
		_, _ = rw.buf.WriteString(eof)
	}
	if err := rw.finish(); err != nil {
		// The scraper went away, or timed out: nothing to tell it.
		s.logger.Debug("serving the exposition failed", "remote", r.RemoteAddr, "err", err)
	}
	s.writers.Put(rw)
	s.metrics.serve.WithLabelValues(label).Observe(time.Since(begin).Seconds())
}

// writeMerged writes the snapshots' families, merged by name. Each snapshot's blocks
// are in name order, and every family they refer to is in names (both were taken
// under the sink's lock), so one cursor per snapshot walks them all in a single pass.
// Write errors stay in w.
func writeMerged(w *bufio.Writer, snaps []*snapshot, names []*family, kind expfmt.FormatType) {
	cur := make([]int, len(snaps))
	for _, f := range names {
		head := false
		for i, sn := range snaps {
			c := cur[i]
			if c == len(sn.blocks) || sn.blocks[c].fam != f {
				continue
			}
			cur[i] = c + 1
			b := sn.blocks[c].samples(kind)
			if len(b) == 0 {
				continue
			}
			if !head {
				_, _ = w.Write(f.header(kind))
				head = true
			}
			_, _ = w.Write(b)
		}
	}
}

// writeProto is writeMerged in the delimited protobuf format: one MetricFamily
// message per name, its header fields followed by the metric fields of every
// snapshot's block, which is what marshalling the merged family would write.
func writeProto(w *bufio.Writer, snaps []*snapshot, names []*family) {
	cur := make([]int, len(snaps))
	var parts [][]byte
	var prefix []byte
	for _, f := range names {
		parts = parts[:0]
		size := len(f.pbHeader)
		for i, sn := range snaps {
			c := cur[i]
			if c == len(sn.blocks) || sn.blocks[c].fam != f {
				continue
			}
			cur[i] = c + 1
			if b := sn.blocks[c].pb; len(b) > 0 {
				parts = append(parts, b)
				size += len(b)
			}
		}
		if len(parts) == 0 {
			continue
		}
		prefix = protowire.AppendVarint(prefix[:0], uint64(size))
		_, _ = w.Write(prefix)
		_, _ = w.Write(f.pbHeader)
		for _, b := range parts {
			_, _ = w.Write(b)
		}
	}
}

// writeEscaped is writeMerged for a request whose escaping changes some names: those
// families and blocks are re-encoded, escaped, and the families are merged by their
// escaped names. Of families whose escaped names collide, one is served: the one
// whose name escaping leaves alone if there is one, else the first by name.
func (s *Sink) writeEscaped(w *bufio.Writer, snaps []*snapshot, names []*family, kind expfmt.FormatType, scheme model.EscapingScheme) {
	type served struct {
		name string
		f    *family
	}
	order := make([]served, len(names))
	for i, f := range names {
		order[i] = served{model.EscapeName(f.name, scheme), f}
	}
	slices.SortStableFunc(order, func(a, b served) int { return strings.Compare(a.name, b.name) })
	order = slices.CompactFunc(order, func(a, b served) bool { return a.name == b.name })
	for i := range order {
		// CompactFunc kept the first of each run; prefer a name escaping leaves alone.
		if !order[i].f.escape {
			continue
		}
		if j, ok := slices.BinarySearchFunc(names, order[i].name, func(f *family, name string) int { return strings.Compare(f.name, name) }); ok {
			order[i].f = names[j]
		}
	}
	if kind == expfmt.TypeProtoDelim {
		for _, o := range order {
			s.writeProtoEscaped(w, snaps, o.f, scheme)
		}
		return
	}
	for _, o := range order {
		f := o.f
		head := false
		for _, sn := range snaps {
			i, ok := sn.find(f)
			if !ok {
				continue
			}
			b := &sn.blocks[i]
			header, samples := f.header(kind), b.samples(kind)
			if f.escape || b.escape {
				var err error
				if header, samples, err = reencode(f, b.text, kind, scheme); err != nil {
					s.logger.Debug("family left out of an escaped response", "family", f.name, "err", err)
					continue
				}
			}
			if len(samples) == 0 {
				continue
			}
			if !head {
				_, _ = w.Write(header)
				head = true
			}
			_, _ = w.Write(samples)
		}
	}
}

// writeProtoEscaped writes family f of the snapshots as one delimited MetricFamily,
// its names escaped by scheme if they need it: decoded, escaped and marshalled again.
// A family that needs no escaping is written as writeProto writes it.
func (s *Sink) writeProtoEscaped(w *bufio.Writer, snaps []*snapshot, f *family, scheme model.EscapingScheme) {
	var parts [][]byte
	size := len(f.pbHeader)
	escape := f.escape
	for _, sn := range snaps {
		if i, ok := sn.find(f); ok && len(sn.blocks[i].pb) > 0 {
			parts = append(parts, sn.blocks[i].pb)
			size += len(sn.blocks[i].pb)
			escape = escape || sn.blocks[i].escape
		}
	}
	if len(parts) == 0 {
		return
	}
	if !escape {
		_, _ = w.Write(protowire.AppendVarint(nil, uint64(size)))
		_, _ = w.Write(f.pbHeader)
		for _, b := range parts {
			_, _ = w.Write(b)
		}
		return
	}
	msg := make([]byte, 0, size)
	msg = append(msg, f.pbHeader...)
	for _, b := range parts {
		msg = append(msg, b...)
	}
	var mf dto.MetricFamily
	if err := proto.Unmarshal(msg, &mf); err != nil {
		s.logger.Debug("family left out of an escaped response", "family", f.name, "err", err)
		return
	}
	msg, err := proto.Marshal(model.EscapeMetricFamily(&mf, scheme))
	if err != nil {
		s.logger.Debug("family left out of an escaped response", "family", f.name, "err", err)
		return
	}
	_, _ = w.Write(protowire.AppendVarint(nil, uint64(len(msg))))
	_, _ = w.Write(msg)
}

// needsEscaping reports whether some family or label name served would change under
// an escaping scheme.
func needsEscaping(snaps []*snapshot, names []*family) bool {
	return slices.ContainsFunc(snaps, func(sn *snapshot) bool { return sn.escape }) ||
		slices.ContainsFunc(names, func(f *family) bool { return f.escape })
}

// find returns the index of f's block in the snapshot.
func (sn *snapshot) find(f *family) (int, bool) {
	i, ok := slices.BinarySearchFunc(sn.blocks, f.name, func(b block, name string) int { return strings.Compare(b.fam.name, name) })
	return i, ok && sn.blocks[i].fam == f
}

func (b *block) samples(kind expfmt.FormatType) []byte {
	switch kind {
	case expfmt.TypeOpenMetrics:
		return b.om
	case expfmt.TypeProtoDelim:
		return b.pb
	}
	return b.text
}

// later returns, for a format encoded at delivery only on demand, where a block
// holds it (nil until encoded).
func later(kind expfmt.FormatType) func(b *block) *[]byte {
	if kind == expfmt.TypeProtoDelim {
		return func(b *block) *[]byte { return &b.pb }
	}
	return func(b *block) *[]byte { return &b.om }
}

// ready returns the once and the flag of the snapshot's encoding in kind.
func (sn *snapshot) ready(kind expfmt.FormatType) (*sync.Once, *atomic.Bool) {
	if kind == expfmt.TypeProtoDelim {
		return &sn.pbOnce, &sn.pbReady
	}
	return &sn.omOnce, &sn.omReady
}

func (f *family) header(kind expfmt.FormatType) []byte {
	if kind == expfmt.TypeOpenMetrics {
		return f.omHeader
	}
	return f.textHeader
}

// prepare makes sure every snapshot has its encoding in kind (OpenMetrics or
// protobuf), encoding those that lack it in parallel.
func (s *Sink) prepare(snaps []*snapshot, kind expfmt.FormatType) {
	var todo []*snapshot
	for _, sn := range snaps {
		if _, ready := sn.ready(kind); !ready.Load() {
			todo = append(todo, sn)
		}
	}
	if len(todo) == 0 {
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(todo)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(todo) {
					return
				}
				s.encodeLater(todo[i], kind)
			}
		})
	}
	wg.Wait()
}

// encodeLater encodes, once, the blocks of a snapshot that delivery left without an
// encoding in kind (OpenMetrics or protobuf), from their text encoding. What the
// text format does not carry (exemplars, native histograms, created timestamps) was
// encoded at delivery.
func (s *Sink) encodeLater(sn *snapshot, kind expfmt.FormatType) {
	once, ready := sn.ready(kind)
	field := later(kind)
	once.Do(func() {
		var buf bytes.Buffer
		spans := make([][2]int, len(sn.blocks))
		ok := make([]bool, len(sn.blocks))
		fams := s.reparseAll(sn, field)
		for i := range sn.blocks {
			b := &sn.blocks[i]
			if *field(b) != nil {
				continue
			}
			if mf := fams[b.fam.name]; mf != nil {
				mf.Type = b.fam.typ.Enum() // the text format writes a gauge histogram as a histogram
				var err error
				spans[i], err = encodeSamples(&buf, mf, kind)
				ok[i] = err == nil
			}
		}
		enc := pack(buf.Bytes(), len(sn.blocks), func(i int) ([2]int, bool) { return spans[i], ok[i] })
		added := 0
		for i := range sn.blocks {
			b := &sn.blocks[i]
			switch p := field(b); {
			case *p != nil:
			case ok[i] && enc[i] != nil:
				*p = enc[i]
				added += len(*p)
			default:
				*p = []byte{}
			}
		}
		ready.Store(true)

		s.mu.Lock()
		if !sn.released {
			sn.bytes += added
			s.bytes += added
			s.metrics.bytes.Set(float64(s.bytes))
		}
		s.mu.Unlock()
	})
}

// reparseAll reads back the text encoding of the blocks of sn that lack an encoding
// (field nil), in one parse: parsing them one by one costs a parser and its buffer
// each.
func (s *Sink) reparseAll(sn *snapshot, field func(*block) *[]byte) map[string]*dto.MetricFamily {
	var doc bytes.Buffer
	for i := range sn.blocks {
		if b := &sn.blocks[i]; *field(b) == nil {
			doc.Write(b.fam.textType)
			doc.Write(b.text)
		}
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(&doc)
	if err == nil {
		return fams
	}
	// Cannot happen with what expfmt wrote; if it does, lose only the family at fault.
	s.logger.Debug("reparsing a snapshot failed; reparsing family by family", "err", err)
	fams = map[string]*dto.MetricFamily{}
	for i := range sn.blocks {
		if b := &sn.blocks[i]; *field(b) == nil {
			if mf, err := reparse(b.fam, b.text); err == nil {
				fams[b.fam.name] = mf
			}
		}
	}
	return fams
}

// responseWriter is the buffered, possibly gzipped, writer of one response.
type responseWriter struct {
	buf *bufio.Writer
	gz  *gzip.Writer // nil until a gzipped response needed one
	use *gzip.Writer // gz while gzipping, else nil
}

func (s *Sink) responseWriter(w io.Writer, gz bool) *responseWriter {
	rw, _ := s.writers.Get().(*responseWriter)
	if rw == nil {
		rw = &responseWriter{buf: bufio.NewWriterSize(nil, bufferSize)}
	}
	rw.use = nil
	if gz {
		if rw.gz == nil {
			rw.gz, _ = gzip.NewWriterLevel(w, gzipLevel) // the level is valid
		} else {
			rw.gz.Reset(w)
		}
		rw.use = rw.gz
		w = rw.gz
	}
	rw.buf.Reset(w)
	return rw
}

// finish flushes the response and drops the references to it.
func (rw *responseWriter) finish() error {
	err := rw.buf.Flush()
	if rw.use != nil {
		err = errors.Join(err, rw.use.Close())
		rw.use.Reset(io.Discard)
	}
	rw.buf.Reset(nil)
	return err
}

// acceptsGzip reports whether an Accept-Encoding header allows gzip: named with a
// non-zero q, or not named and covered by a non-zero "*".
func acceptsGzip(header string) bool {
	gz, star := -1.0, -1.0
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(part, ";")
		q := 1.0
		for p := range strings.SplitSeq(params, ";") {
			k, v, ok := strings.Cut(p, "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					q = f
				}
			}
		}
		switch strings.ToLower(strings.TrimSpace(coding)) {
		case "gzip", "x-gzip":
			gz = q
		case "*":
			star = q
		}
	}
	if gz >= 0 {
		return gz > 0
	}
	return star > 0
}
