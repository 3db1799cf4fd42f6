package stantest

import (
	"net"
	"sync"
	"testing"
)

// Silent starts a listener on 127.0.0.1 that accepts TCP connections and never writes a
// byte, as a hung NATS server (or a proxy in front of one that is down) does, and returns
// its nats:// URL: the server a client must fail over from.
func Silent(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	tb.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return "nats://" + l.Addr().String()
}
