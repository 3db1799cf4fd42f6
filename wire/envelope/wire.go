package envelope

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/encoding/protowire"
)

// Frame: magic, version, total length, fields, CRC-32C. See the package doc.
const (
	magic      = "PSE"
	headerLen  = len(magic) + 1 + 4
	trailerLen = 4
	minLen     = headerLen + trailerLen
)

// Field numbers of the envelope. They are wire values: never renumber or reuse one.
// Numbers 1 to 15 take one byte of tag, so they go to the fields every message has.
const (
	fieldPublisher   protowire.Number = 1   // string
	fieldSite        protowire.Number = 2   // string
	fieldJob         protowire.Number = 3   // string
	fieldInstance    protowire.Number = 4   // string
	fieldLabel       protowire.Number = 5   // message label, repeated, sorted by name
	fieldHonorLabels protowire.Number = 6   // bool
	fieldStartSec    protowire.Number = 7   // sint64 Unix seconds; present iff Start is set
	fieldStartNanos  protowire.Number = 8   // uint32 nanoseconds within the second
	fieldDuration    protowire.Number = 9   // sint64 nanoseconds
	fieldError       protowire.Number = 10  // string
	fieldHTTPStatus  protowire.Number = 11  // uint32
	fieldContentType protowire.Number = 12  // string
	fieldSeries      protowire.Number = 13  // uint64
	fieldCompression protowire.Number = 14  // enum Compression
	fieldRawSize     protowire.Number = 15  // uint64, uncompressed body length
	fieldBody        protowire.Number = 16  // bytes, compressed body
	fieldScrapeKey   protowire.Number = 17  // bytes, parts only: SHA-256 of the whole compressed body
	fieldPart        protowire.Number = 18  // uint32, 0-based part index
	fieldParts       protowire.Number = 19  // uint32, part count; 0 or 1 in a whole scrape
	fieldClassic     protowire.Number = 20  // bool, always_scrape_classic_histograms
	fieldNHCB        protowire.Number = 21  // bool, convert_classic_histograms_to_nhcb
	fieldVersion     protowire.Number = 22  // string, the publisher's build version
	fieldNative      protowire.Number = 23  // bool, scrape_native_histograms
	fieldSigner      protowire.Number = 99  // string, NKey user public key of the signer
	fieldSignature   protowire.Number = 100 // bytes, ed25519 signature, the last field
)

// Fields of the label message.
const (
	labelName  protowire.Number = 1 // string, non-empty
	labelValue protowire.Number = 2 // string
)

func fieldName(num protowire.Number) string {
	switch num {
	case fieldPublisher:
		return "publisher"
	case fieldSite:
		return "site"
	case fieldJob:
		return "job"
	case fieldInstance:
		return "instance"
	case fieldLabel:
		return "label"
	case fieldHonorLabels:
		return "honor_labels"
	case fieldStartSec:
		return "start_seconds"
	case fieldStartNanos:
		return "start_nanos"
	case fieldDuration:
		return "duration"
	case fieldError:
		return "error"
	case fieldHTTPStatus:
		return "http_status"
	case fieldContentType:
		return "content_type"
	case fieldSeries:
		return "series"
	case fieldCompression:
		return "compression"
	case fieldRawSize:
		return "raw_size"
	case fieldBody:
		return "body"
	case fieldScrapeKey:
		return "scrape_key"
	case fieldPart:
		return "part"
	case fieldParts:
		return "parts"
	case fieldVersion:
		return "publisher_version"
	case fieldClassic:
		return "always_scrape_classic_histograms"
	case fieldNHCB:
		return "convert_classic_histograms_to_nhcb"
	case fieldNative:
		return "scrape_native_histograms"
	case fieldSigner:
		return "signer"
	case fieldSignature:
		return "signature"
	}
	return "unknown"
}

// Parse error codes beyond protowire's (which are small negative numbers).
const (
	errCodeWireType = -100 - iota
	errCodeGroup
)

func parseError(n int) error {
	switch n {
	case errCodeWireType:
		return errors.New("unexpected wire type")
	case errCodeGroup:
		return errors.New("group wire type, which this format never uses")
	}
	return protowire.ParseError(n)
}

// bodyFields are the fields that say what a message carries of the body: all of it,
// or one part's chunk. The rest of the fields come from the Envelope.
type bodyFields struct {
	comp        Compression
	rawSize     int    // of the whole body
	payload     []byte // the body as compressed, or this part's chunk of it
	key         []byte // scrape_key, in parts only
	part, parts int
}

// wholeFields are the body fields of e sent whole, its body compressed to payload.
func wholeFields(e *Envelope, comp Compression, payload []byte) bodyFields {
	return bodyFields{comp: comp, rawSize: len(e.Body), payload: payload, part: e.Part, parts: e.Parts}
}

// size is the length of the message frame writes.
func (c *Codec) size(e *Envelope, bf bodyFields) int {
	size := headerLen + sizeFields(e, bf) + trailerLen
	if c.signer != nil {
		size += c.signer.size()
	}
	return size
}

// frame appends the whole message to dst: one allocation at most, of the exact size.
// With a signer, the signer's key and then the signature over everything before it end
// the fields.
func (c *Codec) frame(dst []byte, e *Envelope, bf bodyFields) ([]byte, error) {
	size := c.size(e, bf)
	if uint64(size) > math.MaxUint32 {
		return dst, fmt.Errorf("%w: envelope would be %d bytes, over the 4 GiB format limit", ErrTooLarge, size)
	}
	b := dst
	if cap(b)-len(b) < size {
		// Not slices.Grow, which rounds up: a message may sit in a publish queue a
		// while, so Encode returns one whose cap is its length.
		b = make([]byte, len(dst), len(dst)+size)
		copy(b, dst)
	}
	start := len(b)
	b = append(b, magic...)
	b = append(b, Version)
	b = binary.LittleEndian.AppendUint32(b, uint32(size))
	b = appendFields(b, e, bf)
	if c.signer != nil {
		b = c.signer.appendSignature(b, start)
	}
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], c.crc))
	return b, nil
}

// appendFields writes the fields in number order, omitting zero values as protobuf
// does. The order is canonical, so equal envelopes encode to equal bytes, which a
// signature needs.
func appendFields(b []byte, e *Envelope, bf bodyFields) []byte {
	b = appendString(b, fieldPublisher, e.Publisher)
	b = appendString(b, fieldSite, e.Site)
	b = appendString(b, fieldJob, e.Job)
	b = appendString(b, fieldInstance, e.Instance)
	for _, l := range e.Labels {
		b = protowire.AppendTag(b, fieldLabel, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizeLabel(l)))
		b = appendString(b, labelName, l.Name)
		b = appendString(b, labelValue, l.Value)
	}
	b = appendVarint(b, fieldHonorLabels, protowire.EncodeBool(e.HonorLabels))
	if !e.Start.IsZero() {
		// Written even when 0 (the Unix epoch), because presence is what tells a set
		// Start from an unset one.
		b = protowire.AppendTag(b, fieldStartSec, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(e.Start.Unix()))
		b = appendVarint(b, fieldStartNanos, uint64(e.Start.Nanosecond()))
	}
	b = appendVarint(b, fieldDuration, protowire.EncodeZigZag(int64(e.Duration)))
	b = appendString(b, fieldError, e.Error)
	b = appendVarint(b, fieldHTTPStatus, uint64(e.HTTPStatus))
	b = appendString(b, fieldContentType, e.ContentType)
	b = appendVarint(b, fieldSeries, uint64(e.Series))
	b = appendVarint(b, fieldCompression, uint64(bf.comp))
	b = appendVarint(b, fieldRawSize, uint64(bf.rawSize))
	if len(bf.payload) > 0 {
		b = protowire.AppendTag(b, fieldBody, protowire.BytesType)
		b = protowire.AppendBytes(b, bf.payload)
	}
	if len(bf.key) > 0 {
		b = protowire.AppendTag(b, fieldScrapeKey, protowire.BytesType)
		b = protowire.AppendBytes(b, bf.key)
	}
	b = appendVarint(b, fieldPart, uint64(bf.part))
	b = appendVarint(b, fieldParts, uint64(bf.parts))
	b = appendVarint(b, fieldClassic, protowire.EncodeBool(e.Histograms.AlwaysClassic))
	b = appendVarint(b, fieldNHCB, protowire.EncodeBool(e.Histograms.ConvertToNHCB))
	b = appendString(b, fieldVersion, e.PublisherVersion)
	b = appendVarint(b, fieldNative, protowire.EncodeBool(e.Histograms.Native))
	return b
}

// sizeFields is the length appendFields writes; the two must change together
// (TestEncodeExactSize checks them).
func sizeFields(e *Envelope, bf bodyFields) int {
	n := sizeString(fieldPublisher, e.Publisher) +
		sizeString(fieldSite, e.Site) +
		sizeString(fieldJob, e.Job) +
		sizeString(fieldInstance, e.Instance)
	for _, l := range e.Labels {
		ln := sizeLabel(l)
		n += protowire.SizeTag(fieldLabel) + protowire.SizeBytes(ln)
	}
	n += sizeVarint(fieldHonorLabels, protowire.EncodeBool(e.HonorLabels))
	if !e.Start.IsZero() {
		n += protowire.SizeTag(fieldStartSec) + protowire.SizeVarint(protowire.EncodeZigZag(e.Start.Unix()))
		n += sizeVarint(fieldStartNanos, uint64(e.Start.Nanosecond()))
	}
	n += sizeVarint(fieldDuration, protowire.EncodeZigZag(int64(e.Duration))) +
		sizeString(fieldError, e.Error) +
		sizeVarint(fieldHTTPStatus, uint64(e.HTTPStatus)) +
		sizeString(fieldContentType, e.ContentType) +
		sizeVarint(fieldSeries, uint64(e.Series)) +
		sizeVarint(fieldCompression, uint64(bf.comp)) +
		sizeVarint(fieldRawSize, uint64(bf.rawSize))
	if len(bf.payload) > 0 {
		n += protowire.SizeTag(fieldBody) + protowire.SizeBytes(len(bf.payload))
	}
	if len(bf.key) > 0 {
		n += protowire.SizeTag(fieldScrapeKey) + protowire.SizeBytes(len(bf.key))
	}
	n += sizeVarint(fieldPart, uint64(bf.part)) + sizeVarint(fieldParts, uint64(bf.parts))
	n += sizeVarint(fieldClassic, protowire.EncodeBool(e.Histograms.AlwaysClassic)) +
		sizeVarint(fieldNHCB, protowire.EncodeBool(e.Histograms.ConvertToNHCB)) +
		sizeString(fieldVersion, e.PublisherVersion) +
		sizeVarint(fieldNative, protowire.EncodeBool(e.Histograms.Native))
	return n
}

func sizeLabel(l Label) int {
	return sizeString(labelName, l.Name) + sizeString(labelValue, l.Value)
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func sizeString(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func sizeVarint(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

// unframe checks the frame of message b and returns its fields. The checks run in the
// order that gives the most useful error: what the bytes are, then which version,
// then whether they are all there, then whether they are intact. The version comes
// before the checksum because a later version may frame its messages differently.
func (c *Codec) unframe(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty message", ErrNotEnvelope)
	}
	if n := min(len(b), len(magic)); string(b[:n]) != magic[:n] {
		return nil, notEnvelope(b)
	}
	if len(b) <= len(magic) {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrTruncated, len(b), headerLen)
	}
	if v := b[len(magic)]; v != Version {
		advice := ""
		if v > Version {
			advice = "; upgrade the drain"
		}
		return nil, fmt.Errorf("%w: message is version %d, this build reads version %d%s",
			ErrUnknownVersion, v, Version, advice)
	}
	if len(b) < headerLen {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrTruncated, len(b), headerLen)
	}
	size := binary.LittleEndian.Uint32(b[len(magic)+1:])
	switch {
	case size < uint32(minLen):
		return nil, fmt.Errorf("%w: header declares %d bytes, less than the minimum %d", ErrCorrupt, size, minLen)
	case uint64(len(b)) < uint64(size):
		return nil, fmt.Errorf("%w: have %d of the %d bytes the header declares", ErrTruncated, len(b), size)
	case uint64(len(b)) > uint64(size):
		return nil, fmt.Errorf("%w: %d bytes beyond the %d the header declares", ErrCorrupt, uint64(len(b))-uint64(size), size)
	}
	content := b[:len(b)-trailerLen]
	want := binary.LittleEndian.Uint32(b[len(b)-trailerLen:])
	if got := crc32.Checksum(content, c.crc); got != want {
		return nil, fmt.Errorf("%w: CRC-32C of the content is %08x, trailer says %08x", ErrCorrupt, got, want)
	}
	return content[headerLen:], nil
}

// notEnvelope explains a message that does not start with the magic.
func notEnvelope(b []byte) error {
	head := b[:min(len(b), 16)]
	if t := bytes.TrimLeft(head, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		return fmt.Errorf("%w: starts with %q, looks like JSON from the pre-envelope publisher; "+
			"upgrade scrape-once on the edge host", ErrNotEnvelope, head)
	}
	return fmt.Errorf("%w: starts with %q, want magic %q", ErrNotEnvelope, head, magic)
}

// Indexes of the string fields in wireFields.strs.
const (
	strPublisher = iota
	strSite
	strJob
	strInstance
	strError
	strContentType
	strVersion
	strSigner
	numStrs
)

// wireFields holds the fields of a message as parsed, before they become an Envelope:
// strings as slices of the message, so they can all be copied into one allocation,
// and numbers not yet range-checked.
type wireFields struct {
	strs [numStrs][]byte
	seen uint64 // bit n: field n seen

	honorLabels                             bool
	histograms                              Histograms
	startSec, duration                      int64
	startNanos, status, series, part, parts uint64
	compression, rawSize                    uint64
	body, key                               []byte

	// The signature, and where its tag starts in the fields: it covers the message
	// up to there. hasSigner and hasSig say the fields were present.
	sig               []byte
	sigAt             int
	hasSigner, hasSig bool
}

// parseFields parses the fields of a message into w, whose slices then alias b.
// Fields may come in any order; unknown fields are skipped, so a later build can add
// fields old drains do not need; a known singular field twice is corrupt, since
// nothing this package writes does that.
//
// Labels, as name and value, are appended to labels and returned (not kept in w,
// which would move them to the heap): Decode passes a small array on its stack, so
// the usual handful of labels costs no allocation.
func parseFields(b []byte, w *wireFields, labels [][2][]byte) ([][2][]byte, error) {
	total := len(b)
	for len(b) > 0 {
		at := total - len(b)
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return labels, fmt.Errorf("%w: field tag: %v", ErrCorrupt, protowire.ParseError(n))
		}
		b = b[n:]
		if num <= fieldNative && num != fieldLabel {
			if w.seen&(1<<num) != 0 {
				return labels, fmt.Errorf("%w: field %d (%s) appears twice", ErrCorrupt, num, fieldName(num))
			}
			w.seen |= 1 << num
		}
		var v uint64
		switch num {
		case fieldPublisher:
			w.strs[strPublisher], n = consumeBytes(typ, b)
		case fieldSite:
			w.strs[strSite], n = consumeBytes(typ, b)
		case fieldJob:
			w.strs[strJob], n = consumeBytes(typ, b)
		case fieldInstance:
			w.strs[strInstance], n = consumeBytes(typ, b)
		case fieldLabel:
			var m []byte
			if m, n = consumeBytes(typ, b); n >= 0 {
				l, err := parseLabel(m)
				if err != nil {
					return labels, fmt.Errorf("%w: label %d: %v", ErrCorrupt, len(labels), err)
				}
				labels = append(labels, l)
			}
		case fieldHonorLabels:
			v, n = consumeVarint(typ, b)
			w.honorLabels = protowire.DecodeBool(v)
		case fieldStartSec:
			v, n = consumeVarint(typ, b)
			w.startSec = protowire.DecodeZigZag(v)
		case fieldStartNanos:
			w.startNanos, n = consumeVarint(typ, b)
		case fieldDuration:
			v, n = consumeVarint(typ, b)
			w.duration = protowire.DecodeZigZag(v)
		case fieldError:
			w.strs[strError], n = consumeBytes(typ, b)
		case fieldHTTPStatus:
			w.status, n = consumeVarint(typ, b)
		case fieldContentType:
			w.strs[strContentType], n = consumeBytes(typ, b)
		case fieldSeries:
			w.series, n = consumeVarint(typ, b)
		case fieldCompression:
			w.compression, n = consumeVarint(typ, b)
		case fieldRawSize:
			w.rawSize, n = consumeVarint(typ, b)
		case fieldBody:
			w.body, n = consumeBytes(typ, b)
		case fieldScrapeKey:
			w.key, n = consumeBytes(typ, b)
		case fieldPart:
			w.part, n = consumeVarint(typ, b)
		case fieldParts:
			w.parts, n = consumeVarint(typ, b)
		case fieldVersion:
			w.strs[strVersion], n = consumeBytes(typ, b)
		case fieldClassic:
			v, n = consumeVarint(typ, b)
			w.histograms.AlwaysClassic = protowire.DecodeBool(v)
		case fieldNHCB:
			v, n = consumeVarint(typ, b)
			w.histograms.ConvertToNHCB = protowire.DecodeBool(v)
		case fieldNative:
			v, n = consumeVarint(typ, b)
			w.histograms.Native = protowire.DecodeBool(v)
		case fieldSigner:
			if w.hasSigner {
				return labels, fmt.Errorf("%w: field %d (%s) appears twice", ErrCorrupt, num, fieldName(num))
			}
			w.hasSigner = true
			w.strs[strSigner], n = consumeBytes(typ, b)
		case fieldSignature:
			w.sig, n = consumeBytes(typ, b)
			w.sigAt, w.hasSig = at, true
			if n >= 0 && n < len(b) {
				// The signature covers what precedes it only: anything after it could
				// be added by anyone.
				return labels, w.badSignature("fields follow the signature, which must be the last field")
			}
		default:
			n = skipField(num, typ, b)
		}
		if n < 0 {
			return labels, fmt.Errorf("%w: field %d (%s): %v", ErrCorrupt, num, fieldName(num), parseError(n))
		}
		b = b[n:]
	}
	return labels, nil
}

// parseLabel parses a label message into its name and value.
func parseLabel(b []byte) ([2][]byte, error) {
	var (
		l    [2][]byte
		seen uint8
	)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return l, fmt.Errorf("field tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case labelName, labelValue:
			if seen&(1<<num) != 0 {
				return l, fmt.Errorf("field %d appears twice", num)
			}
			seen |= 1 << num
			l[num-labelName], n = consumeBytes(typ, b)
		default:
			n = skipField(num, typ, b)
		}
		if n < 0 {
			return l, fmt.Errorf("field %d: %v", num, parseError(n))
		}
		b = b[n:]
	}
	return l, nil
}

// envelope fills e from w, checking what the wire format cannot: ranges and label
// order. Its strings share one allocation, copied from the message, rather than one
// each: a dozen small allocations fewer per message on a drain.
func (w *wireFields) envelope(e *Envelope, labels [][2][]byte) error {
	n := 0
	for _, s := range w.strs {
		n += len(s)
	}
	for _, l := range labels {
		n += len(l[0]) + len(l[1])
	}
	var sb strings.Builder
	sb.Grow(n)
	for _, s := range w.strs {
		sb.Write(s)
	}
	for _, l := range labels {
		sb.Write(l[0])
		sb.Write(l[1])
	}
	arena := sb.String()
	take := func(b []byte) string {
		s := arena[:len(b)]
		arena = arena[len(b):]
		return s
	}
	e.Publisher = take(w.strs[strPublisher])
	e.Site = take(w.strs[strSite])
	e.Job = take(w.strs[strJob])
	e.Instance = take(w.strs[strInstance])
	e.Error = take(w.strs[strError])
	e.ContentType = take(w.strs[strContentType])
	e.PublisherVersion = take(w.strs[strVersion])
	// Set only when the signature verified: Decode calls verify first.
	e.Signer = take(w.strs[strSigner])
	if len(labels) > 0 {
		e.Labels = make([]Label, len(labels))
		for i, l := range labels {
			e.Labels[i] = Label{Name: take(l[0]), Value: take(l[1])}
		}
	}
	if err := checkLabels(e.Labels); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}

	e.HonorLabels = w.honorLabels
	e.Histograms = w.histograms
	if w.seen&(1<<fieldStartSec|1<<fieldStartNanos) != 0 {
		if w.startSec < minStartUnix || w.startSec > maxStartUnix {
			return fmt.Errorf("%w: start %d s is outside years 1 to 9999", ErrCorrupt, w.startSec)
		}
		if w.startNanos >= uint64(time.Second) {
			return fmt.Errorf("%w: start nanoseconds %d out of range", ErrCorrupt, w.startNanos)
		}
		e.Start = time.Unix(w.startSec, int64(w.startNanos)).UTC()
	}
	e.Duration = time.Duration(w.duration)
	if !validStatus(w.status) {
		return fmt.Errorf("%w: HTTP status %d", ErrCorrupt, w.status)
	}
	e.HTTPStatus = int(w.status)
	if w.series > math.MaxInt {
		return fmt.Errorf("%w: series count %d out of range", ErrCorrupt, w.series)
	}
	e.Series = int(w.series)
	switch {
	case w.parts > MaxParts:
		return fmt.Errorf("%w: part %d of a scrape split in %d; this build takes at most %d parts, upgrade the drain",
			ErrUnsupported, w.part, w.parts, MaxParts)
	case w.part != 0 && w.part >= w.parts:
		return fmt.Errorf("%w: part %d of %d", ErrCorrupt, w.part, w.parts)
	}
	e.Part, e.Parts = int(w.part), int(w.parts)
	return nil
}

// decodeBody checks the body's declared size against the limit, then decompresses it
// into a buffer of exactly that size, which the decompressor may not grow.
func (c *Codec) decodeBody(e *Envelope, w *wireFields) error {
	p, err := c.checkBody(w)
	if err != nil {
		return err
	}
	if p.rawSize == 0 {
		return nil
	}
	if p.comp == CompressionNone {
		e.Body = bytes.Clone(p.data)
		return nil
	}
	e.Body, err = c.unpack(make([]byte, 0, p.rawSize), p)
	return err
}

// packBody checks the body as decodeBody does and keeps it compressed in e, by
// reference to the message: AppendBody decompresses it.
func (c *Codec) packBody(e *Envelope, w *wireFields) error {
	p, err := c.checkBody(w)
	if err != nil {
		return err
	}
	if p.rawSize > 0 {
		e.packed = p
	}
	return nil
}

// checkBody checks what can be checked of a body without decompressing it: its
// declared size against the limit, its compression, and the zstd frame header against
// the declared size, so that decompressing it later never allocates more than that.
func (c *Codec) checkBody(w *wireFields) (*packedBody, error) {
	if w.rawSize > uint64(c.maxBody) {
		return nil, fmt.Errorf("%w: body declares %d bytes, limit %d", ErrTooLarge, w.rawSize, c.maxBody)
	}
	raw := int(w.rawSize)
	switch w.compression {
	case uint64(CompressionNone):
		if len(w.body) != raw {
			return nil, fmt.Errorf("%w: body is %d bytes, raw size says %d", ErrCorrupt, len(w.body), raw)
		}
		return &packedBody{comp: CompressionNone, rawSize: raw, data: w.body}, nil
	case uint64(CompressionZstd), uint64(CompressionZstdDict):
		if raw == 0 || len(w.body) == 0 {
			if raw != len(w.body) {
				return nil, fmt.Errorf("%w: compressed body is %d bytes, raw size says %d", ErrCorrupt, len(w.body), raw)
			}
			return &packedBody{comp: CompressionZstd}, nil
		}
		// The frame header declares the content size too; a mismatch is rejected
		// before allocating the declared size.
		var h zstd.Header
		if err := h.Decode(w.body); err != nil {
			return nil, fmt.Errorf("%w: body: zstd frame header: %v", ErrCorrupt, err)
		}
		if h.Skippable {
			return nil, fmt.Errorf("%w: body: zstd skippable frame", ErrCorrupt)
		}
		if !h.HasFCS || h.FrameContentSize != w.rawSize {
			return nil, fmt.Errorf("%w: body: zstd frame content size (%d, present %t) does not match raw size %d",
				ErrCorrupt, h.FrameContentSize, h.HasFCS, raw)
		}
		// The decoder knows DictionaryID, so the frame's ID must agree with the
		// compression field: it would otherwise decode whatever the ID names.
		switch {
		case h.DictionaryID != 0 && h.DictionaryID != DictionaryID:
			return nil, unknownDictionary(h.DictionaryID)
		case (h.DictionaryID != 0) != (w.compression == uint64(CompressionZstdDict)):
			return nil, fmt.Errorf("%w: body: zstd frame names dictionary %d, compression says %v",
				ErrCorrupt, h.DictionaryID, Compression(w.compression))
		}
		return &packedBody{comp: Compression(w.compression), rawSize: raw, data: w.body}, nil
	}
	return nil, unknownCompression(w.compression)
}

// unknownCompression is the error for a body compression this build does not read.
func unknownCompression(comp uint64) error {
	return fmt.Errorf("%w: body compression %d; this build reads %v, %v and %v, upgrade the drain",
		ErrUnsupported, comp, CompressionNone, CompressionZstd, CompressionZstdDict)
}

// unpack appends p's body, decompressed, to dst: exactly its declared size, which the
// decompressor may not exceed.
func (c *Codec) unpack(dst []byte, p *packedBody) ([]byte, error) {
	if p.comp == CompressionNone {
		return append(dst, p.data...), nil
	}
	n := len(dst)
	out, err := c.zdec.DecodeAll(p.data, slices.Grow(dst, p.rawSize)[:n:n+p.rawSize])
	if err != nil {
		return dst, fmt.Errorf("%w: body: zstd: %v", ErrCorrupt, err)
	}
	if len(out)-n != p.rawSize {
		return dst, fmt.Errorf("%w: body decompressed to %d bytes, raw size says %d", ErrCorrupt, len(out)-n, p.rawSize)
	}
	return out, nil
}

// The consume functions return protowire's negative codes, plus errCodeWireType when
// a known field arrives with a wire type other than its own.

func consumeVarint(typ protowire.Type, b []byte) (uint64, int) {
	if typ != protowire.VarintType {
		return 0, errCodeWireType
	}
	return protowire.ConsumeVarint(b)
}

func consumeBytes(typ protowire.Type, b []byte) ([]byte, int) {
	if typ != protowire.BytesType {
		return nil, errCodeWireType
	}
	return protowire.ConsumeBytes(b)
}

// skipField skips an unknown field. Groups are refused rather than skipped: this
// format never writes them and skipping them means recursion.
func skipField(num protowire.Number, typ protowire.Type, b []byte) int {
	if typ == protowire.StartGroupType || typ == protowire.EndGroupType {
		return errCodeGroup
	}
	return protowire.ConsumeFieldValue(num, typ, b)
}
