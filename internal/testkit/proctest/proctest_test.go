package proctest

import (
	"errors"
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

func TestOnFreePortRetriesOnlyATakenPort(t *testing.T) {
	calls := 0
	addr, _, err := OnFreePort(5, func(string) (*Process, error) {
		calls++
		if calls < 3 {
			return nil, ErrInUse
		}
		return &Process{}, nil
	})
	if err != nil || calls != 3 || addr == "" {
		t.Errorf("OnFreePort = %q, %v after %d starts; want success at the third", addr, err, calls)
	}
	calls = 0
	boom := errors.New("no such binary")
	if _, _, err := OnFreePort(5, func(string) (*Process, error) { calls++; return nil, boom }); !errors.Is(err, boom) || calls != 1 {
		t.Errorf("OnFreePort with another failure = %v after %d starts; want it at once", err, calls)
	}
	calls = 0
	if _, err := Rebind("127.0.0.1:1", 0, func(string) (*Process, error) { calls++; return nil, ErrInUse }); !errors.Is(err, ErrInUse) || calls != 1 {
		t.Errorf("Rebind past its deadline = %v after %d starts", err, calls)
	}
}
