package promtest

import (
	"io"
	"net/http"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// ReadWriteRequest reads a remote-write 1.0 request as a receiver does: for the tests'
// own receivers, which keep or judge what a sink sends rather than store it.
func ReadWriteRequest(r *http.Request) (*prompb.WriteRequest, error) {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	if raw, err = snappy.Decode(nil, raw); err != nil {
		return nil, err
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		return nil, err
	}
	return &req, nil
}
