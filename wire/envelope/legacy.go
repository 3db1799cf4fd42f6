package envelope

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/klauspost/compress/gzip"
)

// LegacyContentType is the media type of the earlier system's scrapes: the text format.
const LegacyContentType = "text/plain; version=0.0.4; charset=utf-8"

// legacyMessage is one message of the earlier system of this name
// (github.com/choria-legacy/prometheus-streams): JSON, the exposition gzipped and, as Go
// encodes a []byte, base64.
type legacyMessage struct {
	Job       string `json:"job"`
	Instance  string `json:"instance"`
	Time      int64  `json:"time"` // Unix seconds
	Publisher string `json:"publisher"`
	Scrape    []byte `json:"Scrape"`
}

// MaxLegacyBodySize bounds the uncompressed scrape of a message of the earlier system:
// scrape-once's own default body_size_limit.
const MaxLegacyBodySize = 32 << 20

// DecodeLegacy decodes a message of the earlier system, so a drain can take over the
// central side first and the edges can move one by one. The result has the same fields
// an envelope of a successful text-format scrape has; the earlier system knew no
// duration, site, labels or failed scrapes. Errors wrap ErrNotEnvelope (not such a
// message), ErrCorrupt (one whose scrape does not decompress) or ErrTooLarge.
//
// A legacy scrape is one gzip stream in one NATS message, which a gzip bomb can make
// 1,000 times larger than the message: it is read to at most MaxLegacyBodySize.
func (c *Codec) DecodeLegacy(b []byte) (*Envelope, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	var m legacyMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: not a legacy JSON message either: %v", ErrNotEnvelope, err)
	}
	if m.Job == "" || m.Instance == "" || m.Time <= 0 {
		return nil, fmt.Errorf("%w: legacy JSON message without job, instance or time", ErrNotEnvelope)
	}
	zr, err := gzip.NewReader(bytes.NewReader(m.Scrape))
	if err != nil {
		return nil, fmt.Errorf("%w: legacy message %s/%s: gzip: %v", ErrCorrupt, m.Job, m.Instance, err)
	}
	defer zr.Close()
	limit := min(c.maxBody, MaxLegacyBodySize)
	body, err := io.ReadAll(io.LimitReader(zr, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("%w: legacy message %s/%s: gzip: %v", ErrCorrupt, m.Job, m.Instance, err)
	}
	if len(body) > limit {
		return nil, fmt.Errorf("%w: legacy message %s/%s: scrape over %d bytes uncompressed", ErrTooLarge, m.Job, m.Instance, limit)
	}
	return &Envelope{
		Publisher:   m.Publisher,
		Job:         m.Job,
		Instance:    m.Instance,
		Start:       time.Unix(m.Time, 0).UTC(),
		HTTPStatus:  200,
		ContentType: LegacyContentType,
		Body:        body,
		Series:      sampleLines(body),
	}, nil
}

// sampleLines counts an exposition's sample lines: the edge's series count, which the
// earlier system did not send.
func sampleLines(body []byte) int {
	n := 0
	for len(body) > 0 {
		i := bytes.IndexByte(body, '\n')
		line := body
		if i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' {
			n++
		}
	}
	return n
}
