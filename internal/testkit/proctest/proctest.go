// Package proctest runs a real server binary for a test harness (internal/testkit/pgwtest's Push
// Gateway, internal/testkit/promtest's Prometheus): on a loopback port, its output kept in a Log, ready
// once it says it listens and answers its readiness URL, stopped with SIGTERM, and killed
// by the kernel if the test binary dies first.
package proctest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrInUse is a start that failed because another process took the port.
var ErrInUse = errors.New("address already in use")

// Process is one run of a server binary.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	err  error         // Wait's result, set before done is closed
}

// Start runs binary with args, its output into log, and waits until it is ready: it
// has logged "Listening on" (or has run for listenWait without exiting, for a binary
// that does not log it) and readyURL answers 200, within timeout. A server of another
// test that took the port would answer too, hence the log. name prefixes the log lines.
func Start(name, binary string, args []string, log *Log, client *http.Client, readyURL string, timeout, listenWait time.Duration) (*Process, error) {
	cmd := exec.Command(binary, args...)
	mark := log.Mark()
	log.Printf("%s: %s %s\n", name, binary, strings.Join(args, " "))
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		log.Printf("%s: exited: %v\n", name, p.err)
		close(p.done)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	started := time.Now()
	for {
		ours := strings.Contains(log.Since(mark), "Listening on") || time.Since(started) > listenWait
		if ours && Ready(ctx, client, readyURL) {
			select {
			case <-p.done: // lost the port after all
			default:
				return p, nil
			}
		}
		select {
		case <-p.done:
			if strings.Contains(log.Since(mark), "address already in use") {
				return nil, fmt.Errorf("%w: %s", ErrInUse, strings.Join(args, " "))
			}
			return nil, fmt.Errorf("%s exited before it was ready (%v); its output:\n%s", name, p.err, log.Since(mark))
		case <-ctx.Done():
			p.Stop(5 * time.Second)
			return nil, fmt.Errorf("%s not ready within %v", name, timeout)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Signal sends sig to the process, e.g. SIGSTOP and SIGCONT to pause it between a
// harness's measurements.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop sends SIGTERM and waits for the exit, killing the process after timeout.
func (p *Process) Stop(timeout time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Ready reports whether url answers 200 within a second.
func Ready(ctx context.Context, c *http.Client, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// handedOut is every address FreeAddr returned in this process: the kernel may give a
// port just closed to the next listen on :0, so that two calls in a row (a drain's
// stream and its monitor) would get the same one.
var handedOut = struct {
	sync.Mutex
	addrs map[string]bool
}{addrs: map[string]bool{}}

// FreeAddr returns a loopback address with a port nobody listened on a moment ago, and
// that no earlier call in this process returned.
func FreeAddr() (string, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("find a free port: %w", err)
		}
		addr := l.Addr().String()
		if err := l.Close(); err != nil {
			return "", fmt.Errorf("find a free port: %w", err)
		}
		if !handedOut.addrs[addr] {
			handedOut.addrs[addr] = true
			return addr, nil
		}
	}
	return "", errors.New("find a free port: every port the kernel offered was handed out before")
}

// Log collects a server's output across runs, keeping the newest Max bytes (1 MiB when
// zero).
type Log struct {
	Max int

	mu      sync.Mutex
	b       []byte
	dropped int
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	limit := l.Max
	if limit <= 0 {
		limit = 1 << 20
	}
	if over := len(l.b) - limit; over > 0 {
		// Drop whole lines from the front, in one copy.
		cut := over
		if i := bytes.IndexByte(l.b[cut:], '\n'); i >= 0 {
			cut += i + 1
		}
		l.dropped += cut
		l.b = append(l.b[:0], l.b[cut:]...)
	}
	return len(p), nil
}

// Mark returns how many bytes have been written so far, for Since.
func (l *Log) Mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped + len(l.b)
}

// Since returns what was written after mark (as much as is still kept).
func (l *Log) Since(mark int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := max(mark-l.dropped, 0)
	return string(l.b[i:])
}

// Printf writes a line of the harness's own into the log.
func (l *Log) Printf(format string, args ...any) {
	_, _ = fmt.Fprintf(l, format, args...)
}

func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dropped > 0 {
		return "[" + strconv.Itoa(l.dropped) + " earlier bytes dropped]\n" + string(l.b)
	}
	return string(l.b)
}

// OnFreePort runs start on a free loopback address and returns the address with the
// process. Another process may take the port between the probe and the server's bind,
// so a start that fails with ErrInUse is tried again on another port, tries times in all.
func OnFreePort(tries int, start func(addr string) (*Process, error)) (string, *Process, error) {
	var lastErr error
	for range max(tries, 1) {
		addr, err := FreeAddr()
		if err != nil {
			return "", nil, err
		}
		p, err := start(addr)
		if err == nil {
			return addr, p, nil
		}
		lastErr = err
		if !errors.Is(err, ErrInUse) {
			break
		}
	}
	return "", nil, lastErr
}

// Rebind runs start on addr again, for a restart on the same port: while the port is
// briefly held (e.g. by a client's connection given it as its local port), it tries
// again every 100ms for up to d.
func Rebind(addr string, d time.Duration, start func(addr string) (*Process, error)) (*Process, error) {
	deadline := time.Now().Add(d)
	for {
		p, err := start(addr)
		if err == nil || !errors.Is(err, ErrInUse) || time.Now().After(deadline) {
			return p, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
