package logtest

import (
	"strings"
	"sync"
	"testing"
)

// TestBufferConcurrent: writes from many goroutines all land, whole, while the buffer
// is read (go test -race checks the locking).
func TestBufferConcurrent(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				b.Logger().Info("line", "k", "v")
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if n := strings.Count(b.String(), "msg=line k=v\n"); n != 800 {
		t.Errorf("%d whole lines of 800", n)
	}
	if b.Len() != len(b.String()) {
		t.Errorf("Len %d, String %d bytes", b.Len(), len(b.String()))
	}
}
