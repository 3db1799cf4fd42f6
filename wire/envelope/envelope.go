package envelope

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Version is the format version this build writes, and the only one it reads.
const Version = 1

// DefaultMaxBodySize is the largest uncompressed body a Codec accepts unless MaxBodySize
// says otherwise. It is far above any real exposition (node_exporter's is ~60 KB, and
// a target with 100k series is some MB) and exists to stop decompression bombs.
const DefaultMaxBodySize = 256 << 20

// maxMaxBodySize keeps a whole envelope inside the 32-bit length in the header.
const maxMaxBodySize = 1 << 30

// Sentinel errors. Every error Decode returns wraps exactly one of ErrNotEnvelope,
// ErrUnknownVersion, ErrTruncated, ErrCorrupt, ErrTooLarge, ErrUnsupported and
// ErrBadSignature (or is ErrClosed), so a drain can count and log rejects by cause with
// errors.Is; the text after the sentinel says what exactly was wrong.
var (
	// ErrNotEnvelope: the message does not start with the envelope magic; it is not
	// something this package wrote (for example JSON from the pre-envelope system).
	ErrNotEnvelope = errors.New("envelope: not an envelope")
	// ErrUnknownVersion: an envelope of a format version this build cannot read.
	ErrUnknownVersion = errors.New("envelope: unknown format version")
	// ErrTruncated: the message is shorter than the length its header declares.
	ErrTruncated = errors.New("envelope: truncated")
	// ErrCorrupt: the checksum does not match, or the content is malformed.
	ErrCorrupt = errors.New("envelope: corrupt")
	// ErrTooLarge: the body is (or declares itself) larger than the Codec's MaxBodySize.
	ErrTooLarge = errors.New("envelope: body too large")

	// ErrUnsupported: a well-formed envelope using a feature of the format this build
	// does not implement: an unknown body compression, a zstd dictionary, or a scrape
	// split over more than MaxParts messages. Builds before split scrapes return it for
	// every part of one.
	ErrUnsupported = errors.New("envelope: unsupported")
	// ErrBadSignature: the envelope is signed, but the signature does not verify
	// against the signer key it carries, or the signing fields are malformed: a
	// message changed or forged after signing. Decode returns a *SignatureError.
	ErrBadSignature = errors.New("envelope: bad signature")
	// ErrInvalid: Encode was given an envelope that breaks the contract of its fields,
	// or Join parts that do not make one whole scrape.
	ErrInvalid = errors.New("envelope: invalid envelope")
	// ErrClosed: the Codec was used after Close.
	ErrClosed = errors.New("envelope: codec closed")
)

// Histograms are a job's scrape_native_histograms, always_scrape_classic_histograms
// and convert_classic_histograms_to_nhcb, with Prometheus's meaning. All false (the
// zero value, and what a message from a build that did not carry them says) is
// Prometheus 3's default.
type Histograms struct {
	Native, AlwaysClassic, ConvertToNHCB bool
}

// Label is one static label of the scrape target, from configuration.
type Label struct{ Name, Value string }

// Envelope is one scrape of one target, as published by scrape-once and consumed by
// drain. The zero value of each field is a valid "absent" value.
type Envelope struct {
	Publisher   string        // edge host identity
	Site        string        // optional site/DC label
	Job         string        // job name of the target
	Instance    string        // instance of the target, usually host:port
	Labels      []Label       // static labels, sorted by name, names unique and non-empty
	HonorLabels bool          // honor_labels of the scrape config
	Start       time.Time     // scrape start; decoded as UTC with nanosecond precision
	Duration    time.Duration // scrape duration
	Error       string        // "" when the scrape succeeded
	HTTPStatus  int           // 0 when there was no response, else 100 to 999
	ContentType string        // media type of Body, e.g. "text/plain; version=0.0.4; charset=utf-8"
	Body        []byte        // exposition, uncompressed; nil after Decode when empty
	Series      int           // number of series in Body, as counted by the publisher

	// PublisherVersion is the build version of the scrape-once that published the
	// message ("" from builds before it was carried).
	PublisherVersion string

	// Histograms are the job's histogram settings, which the drain applies where it
	// ingests the body (it travels as the target sent it).
	Histograms Histograms

	// Signer is the NKey user public key (U...) whose signature over the message
	// Decode verified; "" when the message is unsigned. Encode ignores it: a Codec
	// made WithSigner signs with its own key.
	Signer string

	// Part and Parts place a message in a scrape split over several (EncodeSplit):
	// Part is 0-based, of Parts. A whole scrape has Part 0 and Parts 0 or 1, which
	// round-trip as given; Join returns Part 0 and Parts 1.
	Part, Parts int

	// Chunk is, in a part as Decode returns it (Parts above 1), this part's slice of
	// the scrape's compressed body; Body is then nil, and Join makes the whole scrape
	// from all the parts. nil in a whole scrape. Encode ignores it.
	Chunk []byte

	// whole describes, in a part as Decode returns it, the body the parts make
	// together: what Join needs and checks.
	whole *wholeBody

	// packed is, in a whole scrape from DecodePacked or JoinPacked, its body as it
	// travelled, compressed; Body is then nil and AppendBody decompresses it.
	packed *packedBody
}

// packedBody is a body checked against its declared size but not decompressed.
type packedBody struct {
	comp    Compression
	rawSize int
	data    []byte
}

// BodySize is the size of e's body decompressed: len(Body), or what a packed body
// declares.
func (e *Envelope) BodySize() int {
	if e.packed != nil {
		return e.packed.rawSize
	}
	return len(e.Body)
}

// Packed reports whether e's body is held compressed (DecodePacked, JoinPacked), for
// AppendBody to decompress.
func (e *Envelope) Packed() bool { return e.packed != nil }

// PackedSize is how many bytes e's body takes as it is held: the compressed size of a
// packed body, else len(Body).
func (e *Envelope) PackedSize() int {
	if e.packed != nil {
		return len(e.packed.data)
	}
	return len(e.Body)
}

// wholeBody is what every part of a split scrape says about the whole body.
type wholeBody struct {
	comp    Compression
	rawSize int
	digest  [sha256.Size]byte // of the compressed body: all the chunks in order
}

// MaxParts is the most parts EncodeSplit splits a scrape into, and Decode accepts: at
// NATS's default max payload of 1 MB, a gigabyte compressed, four times
// DefaultMaxBodySize even uncompressed.
const MaxParts = 1024

// Compression is how the body is compressed on the wire. It is recorded in each
// envelope, so the publisher's choice can change without a format version bump as long
// as the drains were built with support for it.
type Compression uint8

// Body compressions. The values are wire values: never renumber.
const (
	CompressionNone Compression = 0
	CompressionZstd Compression = 1
	// CompressionZstdDict is zstd with the embedded exposition dictionary
	// (DictionaryID): about a quarter fewer bytes than CompressionZstd on a
	// node_exporter scrape, for some more encoding CPU (see the package doc). Builds
	// before it refuse it with ErrUnsupported, so an edge uses it only once every
	// drain reads it.
	CompressionZstdDict Compression = 2
)

func (c Compression) String() string {
	switch c {
	case CompressionNone:
		return "none"
	case CompressionZstd:
		return "zstd"
	case CompressionZstdDict:
		return "zstd-dict"
	}
	return "compression(" + strconv.Itoa(int(c)) + ")"
}

// Option configures a Codec.
type Option func(*Codec) error

// MaxBodySize sets the largest uncompressed body, in bytes, that Decode accepts (and
// Encode, so an edge fails early on what its drains would reject). Default
// DefaultMaxBodySize, at most 1 GiB.
func MaxBodySize(n int) Option {
	return func(c *Codec) error {
		if n <= 0 || n > maxMaxBodySize {
			return fmt.Errorf("envelope: MaxBodySize %d: must be between 1 and %d", n, maxMaxBodySize)
		}
		c.maxBody = n
		return nil
	}
}

// BodyCompression sets the compression Encode uses; default CompressionZstd. Bodies
// that would not shrink (tiny ones) are sent uncompressed whatever the setting. Decode
// reads every compression this build knows regardless of the setting.
func BodyCompression(comp Compression) Option {
	return func(c *Codec) error {
		switch comp {
		case CompressionNone, CompressionZstd, CompressionZstdDict:
			c.compression = comp
			return nil
		}
		return fmt.Errorf("envelope: BodyCompression: unknown compression %v", comp)
	}
}

// Codec compresses and frames envelopes. It is safe for concurrent use; build one per
// process, because it holds the compressor's tables (a few MB once used) and reusable
// buffers. A Codec must not be copied.
type Codec struct {
	compression Compression
	maxBody     int
	signer      *signer // nil: Encode does not sign
	crc         *crc32.Table
	zenc        *zstd.Encoder
	zdec        *zstd.Decoder
	// scratch holds *[]byte buffers that bodies are compressed into before being
	// copied into an exactly sized message; see Append.
	scratch sync.Pool
	closed  atomic.Bool
}

// NewCodec returns a Codec configured by opts.
func NewCodec(opts ...Option) (*Codec, error) {
	c := &Codec{
		compression: CompressionZstd,
		maxBody:     DefaultMaxBodySize,
		crc:         crc32.MakeTable(crc32.Castagnoli),
	}
	c.scratch.New = func() any { return new([]byte) }
	for _, opt := range opts {
		if err := opt(c); err != nil {
			return nil, err
		}
	}
	// The encoder allocates its tables on first use, one set per concurrent Encode,
	// so a drain that never encodes pays nothing for it.
	eopts := []zstd.EOption{
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		// The envelope's CRC-32C already covers the compressed bytes; zstd's own
		// checksum would cost 4 bytes and a second pass over the body.
		zstd.WithEncoderCRC(false),
		// Always record the content size in the frame header, so Decode can check it
		// against the envelope's raw size before allocating anything.
		zstd.WithSingleSegment(true),
	}
	if c.compression == CompressionZstdDict {
		eopts = append(eopts, zstd.WithEncoderDictRaw(DictionaryID, dictionary))
	}
	var err error
	c.zenc, err = zstd.NewWriter(nil, eopts...)
	if err != nil {
		return nil, fmt.Errorf("envelope: zstd encoder: %w", err)
	}
	c.zdec, err = zstd.NewReader(nil,
		// Frames without a dictionary ID decode as before; frames naming this one use it.
		zstd.WithDecoderDictRaw(DictionaryID, dictionary),
		zstd.WithDecoderConcurrency(0), // GOMAXPROCS concurrent Decodes
		zstd.WithDecoderMaxMemory(uint64(c.maxBody)),
		// Never decode past cap(dst), which Decode sets to the declared raw size.
		zstd.WithDecodeAllCapLimit(true),
	)
	if err != nil {
		_ = c.zenc.Close()
		return nil, fmt.Errorf("envelope: zstd decoder: %w", err)
	}
	return c, nil
}

// Close releases the compressor's resources. Encode and Decode return ErrClosed
// afterwards. Close must not be called concurrently with Encode or Decode; calling it
// again does nothing.
func (c *Codec) Close() {
	if !c.closed.CompareAndSwap(false, true) {
		return
	}
	_ = c.zenc.Close()
	c.zdec.Close()
}

// Encode returns e as a message: a new slice of exactly the message's length. e is a
// whole scrape (Part 0, Parts 0 or 1); EncodeSplit splits one that may not fit.
func (c *Codec) Encode(e *Envelope) ([]byte, error) {
	return c.Append(nil, e)
}

// maxPooledScratch bounds the compression buffers kept between calls, so one huge
// scrape does not pin its buffer for the life of the process.
const maxPooledScratch = 4 << 20

// Append appends e as a message to dst and returns the extended slice. It grows dst at
// most once. On error dst is returned unchanged.
func (c *Codec) Append(dst []byte, e *Envelope) ([]byte, error) {
	if c.closed.Load() {
		return dst, ErrClosed
	}
	if err := c.check(e); err != nil {
		return dst, err
	}
	comp, payload, buf := c.compress(e.Body)
	defer c.release(buf)
	return c.frame(dst, e, wholeFields(e, comp, payload))
}

// compress returns body as it goes on the wire, and the pooled buffer it may live in,
// for release once it has been copied into messages.
func (c *Codec) compress(body []byte) (Compression, []byte, *[]byte) {
	if c.compression == CompressionNone || len(body) == 0 {
		return CompressionNone, body, nil
	}
	// Compress into a pooled buffer rather than into the message: the compressed size
	// is not known beforehand, and writing the body's length prefix first would
	// otherwise mean over-allocating the message by the raw size or moving the body.
	buf := c.scratch.Get().(*[]byte)
	*buf = c.zenc.EncodeAll(body, (*buf)[:0])
	// Tiny or incompressible bodies go as they are: smaller, and cheaper to read.
	if len(*buf) >= len(body) {
		return CompressionNone, body, buf
	}
	return c.compression, *buf, buf
}

// release returns a buffer compress took to the pool.
func (c *Codec) release(buf *[]byte) {
	if buf == nil {
		return
	}
	if cap(*buf) > maxPooledScratch {
		*buf = nil
	}
	c.scratch.Put(buf)
}

// Decode parses and checks a message and returns its envelope, with the body
// decompressed. A part of a split scrape (Parts above 1) is returned as a part: its
// header checked and its signature verified like any message's, its Chunk copied but
// not decompressed, Body nil; Join makes the scrape from all its parts. A signed
// message's signature is verified, over the bytes as received,
// before its content is checked or its body decompressed; Signer then names the key.
// Decode does not decide whether that key is trusted: that is the caller's policy. It
// never retains b. Errors wrap one of ErrNotEnvelope, ErrUnknownVersion, ErrTruncated,
// ErrCorrupt, ErrTooLarge, ErrUnsupported or ErrBadSignature (or are ErrClosed).
func (c *Codec) Decode(b []byte) (*Envelope, error) {
	return c.decode(b, false)
}

// DecodePacked is Decode but for the body of a whole scrape, which it checks as Decode
// does (its declared size against the limit, its compression's frame header) but leaves
// compressed: Body is nil and AppendBody decompresses it when it is needed. A scrape
// that waits takes the few kilobytes it took on the wire rather than the tens it takes
// decompressed. Unlike Decode, it retains b, which the caller must not modify while it
// holds the envelope. A body that does not decompress is found by AppendBody.
func (c *Codec) DecodePacked(b []byte) (*Envelope, error) {
	return c.decode(b, true)
}

func (c *Codec) decode(b []byte, packed bool) (*Envelope, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	fields, err := c.unframe(b)
	if err != nil {
		return nil, err
	}
	var (
		w      wireFields
		buf    [8][2][]byte
		labels [][2][]byte
	)
	if labels, err = parseFields(fields, &w, buf[:0]); err != nil {
		return nil, err
	}
	if err := w.verify(b); err != nil {
		return nil, err
	}
	e := new(Envelope)
	if err := w.envelope(e, labels); err != nil {
		return nil, err
	}
	switch {
	case e.Parts > 1:
		err = c.decodeChunk(e, &w)
	case packed:
		err = c.packBody(e, &w)
	default:
		err = c.decodeBody(e, &w)
	}
	if err != nil {
		return nil, err
	}
	return e, nil
}

// AppendBody appends e's body, decompressed, to dst and returns the extended slice: the
// body DecodePacked or JoinPacked left compressed, else Body. It grows dst at most once,
// so a caller that reuses dst decompresses without allocating. Errors wrap ErrCorrupt
// (or are ErrClosed); dst is then returned unchanged.
func (c *Codec) AppendBody(dst []byte, e *Envelope) ([]byte, error) {
	if e.packed == nil {
		return append(dst, e.Body...), nil
	}
	if c.closed.Load() {
		return dst, ErrClosed
	}
	return c.unpack(dst, e.packed)
}

// Target reads a message's job and instance, checking its frame and checksum but neither
// its signature nor its body, which it does not decompress: enough to route the message
// (a drain skips the targets of other shards), never to trust it.
func (c *Codec) Target(b []byte) (job, instance string, err error) {
	if c.closed.Load() {
		return "", "", ErrClosed
	}
	fields, err := c.unframe(b)
	if err != nil {
		return "", "", err
	}
	var (
		w   wireFields
		buf [8][2][]byte
	)
	if _, err := parseFields(fields, &w, buf[:0]); err != nil {
		return "", "", err
	}
	return string(w.strs[strJob]), string(w.strs[strInstance]), nil
}

// Range of Start in Unix seconds: years 1 to 9999, the years time.Time formats and
// parses. Checked against time.Date in the tests.
const (
	minStartUnix = -62135596800 // 0001-01-01T00:00:00Z
	maxStartUnix = 253402300799 // 9999-12-31T23:59:59Z
)

// check enforces on e what Decode enforces on the wire, so every envelope Encode
// accepts decodes to an equal one.
func (c *Codec) check(e *Envelope) error {
	if e == nil {
		return fmt.Errorf("%w: nil", ErrInvalid)
	}
	if e.packed != nil {
		return fmt.Errorf("%w: body still packed: AppendBody it into Body first", ErrInvalid)
	}
	if err := checkLabels(e.Labels); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if !e.Start.IsZero() {
		if s := e.Start.Unix(); s < minStartUnix || s > maxStartUnix {
			return fmt.Errorf("%w: start %v is outside years 1 to 9999", ErrInvalid, e.Start)
		}
	}
	if e.HTTPStatus < 0 || !validStatus(uint64(e.HTTPStatus)) {
		return fmt.Errorf("%w: HTTP status %d is neither 0 nor 100 to 999", ErrInvalid, e.HTTPStatus)
	}
	if e.Series < 0 {
		return fmt.Errorf("%w: negative series count %d", ErrInvalid, e.Series)
	}
	if e.Part != 0 || e.Parts < 0 || e.Parts > 1 {
		return fmt.Errorf("%w: part %d of %d: Encode writes a whole scrape (part 0 of 0 or 1); EncodeSplit splits one",
			ErrInvalid, e.Part, e.Parts)
	}
	if len(e.Body) > c.maxBody {
		return fmt.Errorf("%w: body is %d bytes, limit %d", ErrTooLarge, len(e.Body), c.maxBody)
	}
	return nil
}

// validStatus reports whether s is a valid HTTPStatus: 0 (no response) or a
// three-digit code.
func validStatus(s uint64) bool { return s == 0 || (s >= 100 && s <= 999) }

// checkLabels reports whether labels are sorted by name with unique, non-empty names.
// Both ends check it: a drain must never have to choose between two values of a label.
func checkLabels(labels []Label) error {
	for i, l := range labels {
		if l.Name == "" {
			return fmt.Errorf("label %d has an empty name", i)
		}
		if i > 0 && labels[i-1].Name >= l.Name {
			if labels[i-1].Name == l.Name {
				return fmt.Errorf("label %q appears twice", l.Name)
			}
			return fmt.Errorf("labels not sorted by name: %q before %q", labels[i-1].Name, l.Name)
		}
	}
	return nil
}
