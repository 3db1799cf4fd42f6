package envelope

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
)

// EncodeSplit returns e as messages of at most maxSize bytes each: the one message
// Encode returns, byte for byte, when it fits; else the fewest parts that do. The body
// is compressed once and the compressed bytes cut into Parts chunks of equal length
// (give or take a byte), one per part; every part carries the whole header and is
// signed on its own when the Codec signs, so the drain checks each as it comes and
// Join puts the body back together. Errors wrap ErrTooLarge when maxSize cannot hold
// a part's header and a byte of body, or when the scrape would take more than MaxParts
// parts: the caller then publishes a failed scrape instead. Like Encode, it refuses an
// envelope that Encode refuses.
func (c *Codec) EncodeSplit(e *Envelope, maxSize int) ([][]byte, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if err := c.check(e); err != nil {
		return nil, err
	}
	comp, payload, buf := c.compress(e.Body)
	defer c.release(buf)
	if whole := wholeFields(e, comp, payload); c.size(e, whole) <= maxSize {
		msg, err := c.frame(nil, e, whole)
		if err != nil {
			return nil, err
		}
		return [][]byte{msg}, nil
	}
	k, err := c.plan(e, comp, len(payload), maxSize)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(payload)
	msgs := make([][]byte, k)
	q, r := len(payload)/k, len(payload)%k
	for i, off := 0, 0; i < k; i++ {
		n := q
		if i < r {
			n++
		}
		bf := bodyFields{comp: comp, rawSize: len(e.Body), payload: payload[off : off+n], key: digest[:], part: i, parts: k}
		off += n
		msg, err := c.frame(nil, e, bf)
		if err != nil {
			return nil, err
		}
		if len(msg) > maxSize {
			// plan accounts for every byte; this would be a bug in it.
			return nil, fmt.Errorf("envelope: split %s/%s: part %d of %d is %d bytes, over the %d planned",
				e.Job, e.Instance, i, k, len(msg), maxSize)
		}
		msgs[i] = msg
	}
	return msgs, nil
}

// plan returns the fewest parts a compressed body of n bytes splits into with every
// message at most maxSize bytes. A part's size is its fields but the chunk, which
// depend on the cut only through the lengths of the part and parts varints, plus the
// chunk with its tag and length; fits computes the largest exactly.
func (c *Codec) plan(e *Envelope, comp Compression, n, maxSize int) (int, error) {
	var key [sha256.Size]byte
	// size is that of part i of k with a chunk of m bytes.
	size := func(i, k, m int) int {
		bf := bodyFields{comp: comp, rawSize: len(e.Body), key: key[:], part: i, parts: k}
		return c.size(e, bf) + protowire.SizeTag(fieldBody) + protowire.SizeVarint(uint64(m)) + m
	}
	// fits reports whether the cut in k parts fits: the first n%k parts carry a byte
	// more than the others, and a part is larger the larger its index.
	fits := func(k int) bool {
		q, r := n/k, n%k
		return q > 0 && size(k-1, k, q) <= maxSize && (r == 0 || size(r-1, k, q+1) <= maxSize)
	}
	// Part 0 carries the longest chunk, ceil(n/k), and no part field, and the fewest
	// parts have the shortest parts field: so no cut in fewer than n/room parts fits.
	room := maxSize - size(0, 2, 0) + protowire.SizeVarint(0)
	first := 0
	if room > 1 {
		chunk := room - protowire.SizeVarint(uint64(room)) // longest whose length prefix and bytes fit room
		if next := chunk + 1; next+protowire.SizeVarint(uint64(next)) <= room {
			chunk = next
		}
		if chunk > 0 && n > 0 {
			first = max(2, (n+chunk-1)/chunk)
		}
	}
	if first == 0 {
		return 0, fmt.Errorf("%w: split %s/%s: a part takes %d bytes besides its chunk, which leaves no room for one in %d bytes",
			ErrTooLarge, e.Job, e.Instance, size(0, 2, 0)-1, maxSize)
	}
	for k := first; k <= MaxParts; k++ {
		if fits(k) {
			return k, nil
		}
	}
	return 0, fmt.Errorf("%w: split %s/%s: body of %d bytes (%d on the wire) would take %d parts or more of at most %d bytes, over the limit of %d parts",
		ErrTooLarge, e.Job, e.Instance, len(e.Body), n, max(first, MaxParts+1), maxSize, MaxParts)
}

// decodeChunk checks what a part says of the whole body, without decompressing
// anything, and keeps the part's chunk for Join.
func (c *Codec) decodeChunk(e *Envelope, w *wireFields) error {
	switch w.compression {
	case uint64(CompressionNone), uint64(CompressionZstd), uint64(CompressionZstdDict):
	default:
		return unknownCompression(w.compression)
	}
	switch {
	case w.rawSize > uint64(c.maxBody):
		return fmt.Errorf("%w: part %d of %d: body declares %d bytes, limit %d", ErrTooLarge, w.part, w.parts, w.rawSize, c.maxBody)
	case len(w.body) == 0:
		return fmt.Errorf("%w: part %d of %d has no chunk", ErrCorrupt, w.part, w.parts)
	case uint64(len(w.body)) > w.rawSize:
		// The chunks together are at most the raw body: compressed only when smaller.
		return fmt.Errorf("%w: part %d of %d: chunk of %d bytes, more than the whole body's %d",
			ErrCorrupt, w.part, w.parts, len(w.body), w.rawSize)
	case len(w.key) != sha256.Size:
		return fmt.Errorf("%w: part %d of %d: scrape key of %d bytes, want %d", ErrCorrupt, w.part, w.parts, len(w.key), sha256.Size)
	}
	wb := &wholeBody{comp: Compression(w.compression), rawSize: int(w.rawSize)}
	copy(wb.digest[:], w.key)
	e.Chunk = bytes.Clone(w.body)
	e.whole = wb
	return nil
}

// SameScrape returns nil when a and b, as Decode returned them, are parts of the same
// split scrape: every header field, the signer, the part count and what they say of
// the whole body are equal. Otherwise it says what differs. It does not compare Part.
func SameScrape(a, b *Envelope) error {
	if a.Parts < 2 || a.whole == nil || b.Parts < 2 || b.whole == nil {
		return fmt.Errorf("not both parts of a split scrape as Decode returns them")
	}
	differ := func(field string, x, y any) error {
		return fmt.Errorf("%s differs: %v and %v", field, x, y)
	}
	switch {
	case a.Job != b.Job:
		return differ("job", a.Job, b.Job)
	case a.Instance != b.Instance:
		return differ("instance", a.Instance, b.Instance)
	case !a.Start.Equal(b.Start):
		return differ("start", a.Start, b.Start)
	case a.Parts != b.Parts:
		return differ("part count", a.Parts, b.Parts)
	case a.Publisher != b.Publisher:
		return differ("publisher", a.Publisher, b.Publisher)
	case a.Signer != b.Signer:
		return differ("signer", a.Signer, b.Signer)
	case a.Site != b.Site:
		return differ("site", a.Site, b.Site)
	case !slices.Equal(a.Labels, b.Labels):
		return differ("labels", a.Labels, b.Labels)
	case a.HonorLabels != b.HonorLabels:
		return differ("honor_labels", a.HonorLabels, b.HonorLabels)
	case a.Duration != b.Duration:
		return differ("duration", a.Duration, b.Duration)
	case a.Error != b.Error:
		return differ("error", a.Error, b.Error)
	case a.HTTPStatus != b.HTTPStatus:
		return differ("HTTP status", a.HTTPStatus, b.HTTPStatus)
	case a.ContentType != b.ContentType:
		return differ("content type", a.ContentType, b.ContentType)
	case a.Histograms != b.Histograms:
		return differ("histogram settings", a.Histograms, b.Histograms)
	case a.PublisherVersion != b.PublisherVersion:
		return differ("publisher version", a.PublisherVersion, b.PublisherVersion)
	case a.Series != b.Series:
		return differ("series", a.Series, b.Series)
	case a.whole.comp != b.whole.comp:
		return differ("compression", a.whole.comp, b.whole.comp)
	case a.whole.rawSize != b.whole.rawSize:
		return differ("raw size", a.whole.rawSize, b.whole.rawSize)
	case a.whole.digest != b.whole.digest:
		return differ("scrape key", fmt.Sprintf("%x", a.whole.digest[:8]), fmt.Sprintf("%x", b.whole.digest[:8]))
	}
	return nil
}

// Join makes the whole scrape from all the parts of a split one, as Decode returned
// them, in any order: it checks they belong together (SameScrape) and that each index
// is there once, joins the chunks, checks them against the scrape key (the SHA-256 of
// the compressed body, which every part carries) and decompresses them under the same
// limits as Decode. The result is a whole scrape with Part 0 and Parts 1, equal to the
// envelope given to EncodeSplit but for those two. It neither retains nor modifies the
// parts. Errors wrap ErrInvalid (parts that do not make one scrape), ErrCorrupt (a body
// that does not check or decompress) or ErrTooLarge (or are ErrClosed).
func (c *Codec) Join(parts []*Envelope) (*Envelope, error) {
	return c.join(parts, false)
}

// JoinPacked is Join but leaves the joined body compressed, as DecodePacked does: Body
// is nil and AppendBody decompresses it. It checks the chunks against the scrape key
// and the body's frame header, not whether the body decompresses.
func (c *Codec) JoinPacked(parts []*Envelope) (*Envelope, error) {
	return c.join(parts, true)
}

func (c *Codec) join(parts []*Envelope, packed bool) (*Envelope, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if len(parts) == 0 || parts[0] == nil {
		return nil, fmt.Errorf("%w: join: no parts", ErrInvalid)
	}
	first := parts[0]
	k := first.Parts
	if k < 2 || first.whole == nil {
		return nil, fmt.Errorf("%w: join %s/%s: part %d of %d is not a part of a split scrape as Decode returns it",
			ErrInvalid, first.Job, first.Instance, first.Part, first.Parts)
	}
	if len(parts) != k {
		return nil, fmt.Errorf("%w: join %s/%s: %d parts of %d", ErrInvalid, first.Job, first.Instance, len(parts), k)
	}
	ordered := make([]*Envelope, k)
	total := 0
	for _, p := range parts {
		if p == nil {
			return nil, fmt.Errorf("%w: join %s/%s: nil part", ErrInvalid, first.Job, first.Instance)
		}
		if err := SameScrape(first, p); err != nil {
			return nil, fmt.Errorf("%w: join %s/%s: parts of different scrapes: %v", ErrInvalid, first.Job, first.Instance, err)
		}
		if p.Part < 0 || p.Part >= k {
			return nil, fmt.Errorf("%w: join %s/%s: part %d of %d", ErrInvalid, first.Job, first.Instance, p.Part, k)
		}
		if ordered[p.Part] != nil {
			return nil, fmt.Errorf("%w: join %s/%s: part %d twice", ErrInvalid, first.Job, first.Instance, p.Part)
		}
		ordered[p.Part] = p
		total += len(p.Chunk)
	}
	wb := first.whole
	if wb.rawSize > c.maxBody {
		return nil, fmt.Errorf("%w: join %s/%s: body declares %d bytes, limit %d", ErrTooLarge, first.Job, first.Instance, wb.rawSize, c.maxBody)
	}
	if total > wb.rawSize {
		// Checked before allocating: the chunks of a genuine scrape are at most its raw size.
		return nil, fmt.Errorf("%w: join %s/%s: chunks of %d bytes, more than the body's %d",
			ErrCorrupt, first.Job, first.Instance, total, wb.rawSize)
	}
	stream := make([]byte, 0, total)
	for _, p := range ordered {
		stream = append(stream, p.Chunk...)
	}
	if sha256.Sum256(stream) != wb.digest {
		return nil, fmt.Errorf("%w: join %s/%s: the chunks do not hash to the scrape key the parts carry",
			ErrCorrupt, first.Job, first.Instance)
	}
	e := *first
	e.Labels = slices.Clone(first.Labels)
	e.Part, e.Parts, e.Chunk, e.whole = 0, 1, nil, nil
	if wb.comp == CompressionNone {
		// The joined chunks are the body: no second copy.
		if len(stream) != wb.rawSize {
			return nil, fmt.Errorf("%w: join %s/%s: body is %d bytes, raw size says %d", ErrCorrupt, e.Job, e.Instance, len(stream), wb.rawSize)
		}
		if len(stream) > 0 {
			e.Body = stream
		}
		return &e, nil
	}
	w := wireFields{compression: uint64(wb.comp), rawSize: uint64(wb.rawSize), body: stream}
	decode := c.decodeBody
	if packed {
		decode = c.packBody
	}
	if err := decode(&e, &w); err != nil {
		return nil, fmt.Errorf("join %s/%s: %w", e.Job, e.Instance, err)
	}
	return &e, nil
}
