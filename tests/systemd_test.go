package tests

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// installUnits copies systemd/ units into dir under their installed names, with ExecStart
// pointing at the binaries this test run built.
func installUnits(t *testing.T, dir string) []string {
	t.Helper()
	files, _ := filepath.Glob("../systemd/*.service")
	timers, _ := filepath.Glob("../systemd/*.timer")
	files = append(files, timers...)
	if len(files) < 5 {
		t.Fatalf("want the units in systemd/, found %v", files)
	}
	var names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		unit := strings.ReplaceAll(string(b), "/usr/bin/prometheus-streams-", binDir+"/")
		name := "prometheus-streams-" + filepath.Base(f)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	return names
}

// TestSystemdUnitsVerify runs systemd-analyze verify over every unit (template units as
// an instance); any finding fails the test, not only errors.
func TestSystemdUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze missing: apt-get install systemd")
	}
	dir := t.TempDir()
	var args []string
	for _, n := range installUnits(t, dir) {
		n = strings.Replace(n, "@.", "@dc1.", 1)
		args = append(args, filepath.Join(dir, n))
	}
	cmd := exec.Command(analyze, append([]string{"verify", "--man=no"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	// The settings operators rely on.
	for unit, want := range map[string][]string{
		"prometheus-streams-scrape-once.timer":   {"AccuracySec=1s", "Persistent=false", "OnCalendar=*:*:00"},
		"prometheus-streams-scrape-once.service": {"Type=oneshot", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "CapabilityBoundingSet=", "User=prometheus-streams"},
		"prometheus-streams-drain.service":       {"Type=notify", "Restart=on-failure", "TimeoutStopSec=30s", "NoNewPrivileges=yes", "ProtectSystem=strict", "StateDirectory=prometheus-streams"},
	} {
		text, err := os.ReadFile(filepath.Join(dir, unit))
		if err != nil {
			t.Fatal(err)
		}
		lines := map[string]bool{}
		for _, l := range strings.Split(string(text), "\n") {
			lines[strings.TrimSpace(l)] = true
		}
		for _, w := range want {
			if !lines[w] {
				t.Errorf("%s: no %s", unit, w)
			}
		}
	}
}

// TestDrainNotifiesSystemd plays systemd's side of Type=notify: the drain sends READY=1
// once it serves, a status line, and STOPPING=1 on SIGTERM.
func TestDrainNotifiesSystemd(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 20)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	natsAddr, exposeAddr, mon := freeAddr(t), freeAddr(t), freeAddr(t)
	t.Setenv("NOTIFY_SOCKET", sock)
	d := startDrain(t, writeConfig(t, centralConfig(natsAddr, exposeAddr, mon, "")), mon)
	var got []string
	wait := func(want string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			for _, m := range got {
				if strings.Contains(m, want) {
					return
				}
			}
			select {
			case m := <-msgs:
				got = append(got, m)
			case <-deadline:
				t.Fatalf("no %q from the drain; got %q", want, got)
			}
		}
	}
	wait("READY=1")
	wait("STATUS=subscribed")
	if code := d.stop(); code != 0 {
		t.Errorf("exit %d", code)
	}
	wait("STOPPING=1")
}

// TestCronNoOverlap runs the cron example's command twice at once: the second exits at
// once instead of overlapping the first.
func TestCronNoOverlap(t *testing.T) {
	b, err := os.ReadFile("../systemd/scrape-once.cron")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l != "" && !strings.HasPrefix(l, "#") && !strings.Contains(l, "=") {
			line = l
		}
	}
	f := strings.Fields(line)
	if len(f) < 8 || strings.Join(f[:5], " ") != "* * * * *" || f[5] != "prometheus-streams" || f[6] != "flock" || f[7] != "-n" {
		t.Fatalf("cron line %q: want every minute, as prometheus-streams, under flock -n", line)
	}
	command := strings.Join(f[6:], " ")
	command, _, _ = strings.Cut(command, " 2>&1") // the test reads the output itself
	lock := filepath.Join(t.TempDir(), "lock")
	scraping := make(chan struct{}, 1) // the first run is scraping: it holds the lock
	slow := fixture.Serve(t, []byte("up 1\n"), fixture.TextContentType)
	slow.Config.Handler = slowHandler(2*time.Second, scraping)
	cfg := writeConfig(t, fmt.Sprintf("scrape_interval: 10s\njobs:\n  j:\n    targets: [{name: slow, url: '%s'}]\n", slow.URL))
	command = strings.NewReplacer(
		"/run/lock/prometheus-streams-scrape-once.lock", lock,
		"/usr/bin/prometheus-streams-scrape-once", filepath.Join(binDir, "scrape-once"),
		"/etc/prometheus-streams/prometheus-streams.yaml", cfg+" --dry-run",
	).Replace(command)

	first := exec.Command("/bin/sh", "-c", command)
	first.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-scraping:
	case <-time.After(30 * time.Second):
		t.Fatal("the first run never scraped")
	}
	start := time.Now()
	second := exec.Command("/bin/sh", "-c", command)
	err = second.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("second run: %v, want exit 1 from flock", err)
	}
	if time.Since(start) > time.Second {
		t.Errorf("second run waited %s: it should give up at once", time.Since(start))
	}
	if err := first.Wait(); err != nil {
		t.Errorf("first run: %v", err)
	}
}

// slowHandler answers after d, or when the client gives up, and signals each request
// on started without blocking.
func slowHandler(d time.Duration, started chan<- struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case started <- struct{}{}:
		default:
		}
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", fixture.TextContentType)
		_, _ = w.Write([]byte("up 1\n"))
	})
}
