package stream

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// MsgID identifies part part of parts of the scrape of job/instance started at start,
// as its message's Nats-Msg-Id: the same scrape published again (a retry after a lost
// ack) has the same ID, so the server stores it once; another scrape, target or part
// has another. A whole scrape is part 0 of 1. The ID is a hash of job and instance
// (which may hold anything), the start in Unix nanoseconds and the part: at most 64
// bytes of [0-9a-f-].
func MsgID(job, instance string, start time.Time, part, parts int) string {
	h := sha256.New()
	// Length-prefixed, so no two (job, instance) pairs hash the same input.
	for _, s := range []string{job, instance} {
		h.Write(strconv.AppendInt(nil, int64(len(s)), 10))
		h.Write([]byte{':'})
		h.Write([]byte(s))
	}
	b := make([]byte, 0, 64)
	b = hex.AppendEncode(b, h.Sum(nil)[:12])
	b = append(b, '-')
	b = strconv.AppendInt(b, start.UnixNano(), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(part), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(parts), 10)
	return string(b)
}
