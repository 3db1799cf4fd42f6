package proctest

import (
	"strings"
	"testing"
)

func TestLogKeepsTheNewest(t *testing.T) {
	l := &Log{Max: 32}
	l.Printf("first line\n")
	mark := l.Mark()
	for i := range 10 {
		l.Printf("line %d\n", i)
	}
	s := l.String()
	if !strings.HasPrefix(s, "[") || !strings.Contains(s, "earlier bytes dropped") || !strings.HasSuffix(s, "line 9\n") {
		t.Errorf("log = %q, want the newest lines after a note of what was dropped", s)
	}
	if since := l.Since(mark); strings.Contains(since, "first line") || !strings.HasSuffix(since, "line 9\n") {
		t.Errorf("Since = %q", since)
	}
}

func TestFreeAddr(t *testing.T) {
	a, err := FreeAddr()
	if err != nil || !strings.HasPrefix(a, "127.0.0.1:") {
		t.Errorf("FreeAddr = %q, %v", a, err)
	}
}
