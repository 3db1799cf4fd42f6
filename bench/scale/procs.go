package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultPushGateway is Debian's prometheus-pushgateway, as internal/testkit/pgwtest runs it.
const DefaultPushGateway = "/usr/bin/prometheus-pushgateway"

// proc is a subprocess the harness started: the drain, a Push Gateway, a Prometheus.
// Its output goes to a file in the run's directory, named in errors so a failure can
// be read there.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // path of its output
	done chan struct{}
	err  error // Wait's result, set before done is closed
}

// procs tracks every running subprocess so that an interrupt stops them all.
type procs struct {
	mu  sync.Mutex
	all map[*proc]bool
}

func newProcs() *procs { return &procs{all: map[*proc]bool{}} }

// start runs bin with args, its output in dir/name.log, with env added to the harness's
// environment. The kernel kills it if the harness dies without cleaning up.
func (ps *procs) start(dir, name, bin string, env []string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.all[p] = true
	ps.mu.Unlock()
	return p, nil
}

// stop ends p: SIGTERM, then SIGKILL after grace. It is idempotent.
func (ps *procs) stop(p *proc, grace time.Duration) {
	if p == nil {
		return
	}
	ps.mu.Lock()
	delete(ps.all, p)
	ps.mu.Unlock()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// stopAll ends every subprocess still running, at exit or on an interrupt.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	var all []*proc
	for p := range ps.all {
		all = append(all, p)
	}
	ps.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ps.stop(p, 5*time.Second)
		}()
	}
	wg.Wait()
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// bindAttempts is how often a server is started on a fresh port when its port was taken.
const bindAttempts = 4

// errInUse: a server exited because its port was taken meanwhile.
var errInUse = errors.New("address already in use")

// exited returns an error naming p's log if p has exited, else nil. It wraps errInUse
// when p could not bind its port.
func (p *proc) exited() error {
	select {
	case <-p.done:
	default:
		return nil
	}
	out := tail(p.log, 20)
	err := fmt.Errorf("%s exited (%v); its output: %s\n%s", p.name, p.err, p.log, out)
	if strings.Contains(out, "address already in use") {
		err = fmt.Errorf("%w: %w", errInUse, err)
	}
	return err
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitHTTP polls url until it answers 200, p exits, ctx ends or timeout passes.
func waitHTTP(ctx context.Context, p *proc, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		if err := p.exited(); err != nil {
			return err
		}
		if resp, err := client.Get(url); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s not answering 200 after %v; its output: %s\n%s", p.name, url, timeout, p.log, tail(p.log, 20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// moduleRoot is the nearest directory at or above the working directory holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod at or above the working directory: run from the repository")
		}
		dir = parent
	}
}

// pprofOverlay is added to cmd/drain through go build -overlay when -pprof is set, so
// the drain serves net/http/pprof without a change to its source.
const pprofOverlay = `package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	if addr := os.Getenv("BENCH_DRAIN_PPROF"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
`

// buildDrain builds cmd/drain into dir, without -race, and returns the binary's path.
func buildDrain(ctx context.Context, root, dir string, withPprof bool) (string, error) {
	bin := filepath.Join(dir, "drain")
	args := []string{"build", "-o", bin}
	if withPprof {
		src := filepath.Join(dir, "pprof_overlay.go")
		if err := os.WriteFile(src, []byte(pprofOverlay), 0o644); err != nil {
			return "", err
		}
		overlay := filepath.Join(dir, "overlay.json")
		target := filepath.Join(root, "cmd", "drain", "zz_bench_pprof.go")
		js := fmt.Sprintf(`{"Replace": {%q: %q}}`, target, src)
		if err := os.WriteFile(overlay, []byte(js), 0o644); err != nil {
			return "", err
		}
		args = append(args, "-overlay", overlay)
	}
	args = append(args, "./cmd/drain")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/drain: %v\n%s", err, stderr.String())
	}
	return bin, nil
}

// pushGatewayBinary is Debian's gateway, or $PUSHGATEWAY_BIN.
func pushGatewayBinary() (string, error) {
	bin := os.Getenv("PUSHGATEWAY_BIN")
	if bin == "" {
		bin = DefaultPushGateway
	}
	if _, err := exec.LookPath(bin); err != nil {
		return "", fmt.Errorf("Push Gateway binary %s: %v: apt-get install prometheus-pushgateway (or set $PUSHGATEWAY_BIN)", bin, err)
	}
	return bin, nil
}

// prometheus3Binary is the Prometheus 3 systemd/tools.sh built, or $PROMETHEUS3_BINARY.
// It never builds (about 10 minutes): it says how to.
func prometheus3Binary(root string) (string, error) {
	if p := os.Getenv("PROMETHEUS3_BINARY"); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			return "", fmt.Errorf("$PROMETHEUS3_BINARY: %w", err)
		}
		return p, nil
	}
	cmd := exec.Command(filepath.Join(root, "systemd", "tools.sh"), "--check", "prometheus")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("no Prometheus 3 built (%v: %s): run systemd/tools.sh prometheus or make tools (once per machine, about 10 min), or set $PROMETHEUS3_BINARY",
			err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every Linux
// architecture Go supports.
const clockTick = 100

// cpuSeconds is the user plus system CPU time pid has used, from /proc/<pid>/stat.
func cpuSeconds(pid int) (float64, error) {
	path := "/proc/self/stat"
	if pid > 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: unexpected format", path)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: too few fields", path)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return (ut + st) / clockTick, nil
}

// memory is a process's resident memory from /proc/<pid>/status, in bytes.
type memory struct {
	RSS  int64 // VmRSS: now
	Peak int64 // VmHWM: the high-water mark since the process started
}

func readMemory(pid int) (memory, error) {
	path := "/proc/self/status"
	if pid > 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	f, err := os.Open(path)
	if err != nil {
		return memory{}, err
	}
	defer f.Close()
	var m memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch name {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.Peak
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return m, fmt.Errorf("%s: %s: %w", path, name, err)
		}
		*dst = kb << 10
	}
	return m, sc.Err()
}

// machineBusy is the CPU seconds all CPUs together have spent busy since boot, from
// /proc/stat: to tell what else ran on the shared machine during a step.
func machineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	busy := 0.0
	// user nice system idle iowait irq softirq steal (guest time is inside user).
	for i, v := range f[1:9] {
		if i == 3 || i == 4 {
			continue
		}
		x, _ := strconv.ParseFloat(v, 64)
		busy += x
	}
	return busy / clockTick
}

// loadAverage is the one-minute load average: how busy the shared machine was.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
