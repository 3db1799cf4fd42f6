package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
)

// TestExtraArguments: a word left on the command line is a usage error, never ignored
// (`scrape-once -c FILE node1` would otherwise publish every target).
func TestExtraArguments(t *testing.T) {
	srv := stantest.Start(t)
	a := fixture.ServeCapture(t, fixture.PushGateway)
	cfg := writeConfig(t, edgeConfig(srv.URL(), srv.ClusterID(), fmt.Sprintf("  j:\n    targets: [{name: node1, url: '%s'}]\n", a.URL)))

	for _, args := range [][]string{
		{"-c", cfg, "node1"},
		{"-c", cfg, "--dry-run", "node1"},
		{"-c", cfg, "--check-config", "node1"},
		{"-c", cfg, "--", "node1"},
	} {
		r := runBin(t, "scrape-once", args...)
		if r.code != 64 {
			t.Errorf("scrape-once %q: exit %d, want 64\n%s", args, r.code, r.stderr)
		}
		mustContain(t, "stderr", r.stderr, `unexpected argument "node1"`, "--target node1")
		if r.stdout != "" {
			t.Errorf("scrape-once %q printed %q", args, r.stdout)
		}
	}
	if got := readChannel(t, srv, "prometheus"); len(got) != 0 {
		t.Errorf("published %d messages", len(got))
	}

	r := runBin(t, "drain", "-c", cfg, "extra")
	if r.code != 64 {
		t.Errorf("drain extra: exit %d, want 64\n%s", r.code, r.stderr)
	}
	mustContain(t, "stderr", r.stderr, `unexpected argument "extra"`)
}

// sharedConfig is one file for both binaries, its streams at natsURLs with streamExtra
// in both sections, and extra (top-level keys, jobs included) appended.
func sharedConfig(t *testing.T, natsURLs, streamExtra, extra string) string {
	return fmt.Sprintf(`identity: edge1
scrape_interval: 10s
poller_stream: {cluster_id: c, urls: '%[1]s', connect_timeout: 1s%[2]s}
receiver_stream: {cluster_id: c, client_id: d, urls: '%[1]s'%[2]s}
expose: {listen: '%[3]s'}
monitor: {listen: '%[4]s'}
%[5]s`, natsURLs, streamExtra, freeAddr(t), freeAddr(t), extra)
}

// TestCheckConfigAgreesWithRun: what a run refuses as a config error, --check-config
// refuses too, both with 78, before any network I/O, and no secret shows in either.
func TestCheckConfigAgreesWithRun(t *testing.T) {
	const secret = "pa55w0rd-in-clear"
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not a creds file "+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	nats := closedURL(t, "nats")
	target := "jobs:\n  j:\n    targets: [{name: a, url: 'http://127.0.0.1:1/m'}]\n"
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"push gateway URL with a password", sharedConfig(t, nats, "", target+"push_gateway: {url: 'http://u:"+secret+"@127.0.0.1:9091'}\n"),
			[]string{"push_gateway.url", "http://u:xxxxx@127.0.0.1:9091", "has credentials"}},
		{"target URL with a password", sharedConfig(t, nats, "", "jobs:\n  j:\n    targets: [{url: 'http://u:"+secret+"@127.0.0.1:1/m'}]\n"),
			[]string{"jobs.j.targets[0].url", "http://u:xxxxx@127.0.0.1:1/m", "has credentials"}},
		{"garbage credentials file", sharedConfig(t, nats, ", credentials_file: "+garbage, target),
			[]string{"poller_stream.credentials_file", "receiver_stream.credentials_file", "no NKey user seed"}},
		{"garbage nkey seed file", sharedConfig(t, nats, ", nkey_seed_file: "+garbage, target),
			[]string{"poller_stream.nkey_seed_file", "receiver_stream.nkey_seed_file", "no NKey seed"}},
		{"logfile in a missing directory", sharedConfig(t, nats, "", target+"logfile: "+filepath.Join(dir, "missing", "log")),
			[]string{"logfile", "no such file or directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := writeConfig(t, tt.yaml)
			for _, bin := range []string{"scrape-once", "drain"} {
				for _, args := range [][]string{{"-c", cfg, "--check-config"}, {"-c", cfg}} {
					r := runBin(t, bin, args...)
					if r.code != 78 {
						t.Errorf("%s %q: exit %d, want 78\n%s", bin, args[2:], r.code, r.stderr)
					}
					mustContain(t, bin+" stderr", r.stderr, tt.want...)
					if strings.Contains(r.stdout+r.stderr, secret) {
						t.Errorf("%s %q shows the secret:\n%s%s", bin, args[2:], r.stdout, r.stderr)
					}
				}
			}
		})
	}
}

// TestCheckConfigChangesNothing: --check-config of a good file exits 0, hides every
// secret (a NATS URL's password as Prometheus does, xxxxx) and creates no logfile.
func TestCheckConfigChangesNothing(t *testing.T) {
	const secret = "pa55w0rd-in-clear"
	logfile := filepath.Join(t.TempDir(), "prometheus-streams.log")
	cfg := writeConfig(t, sharedConfig(t, "nats://edge:"+secret+"@127.0.0.1:1", "",
		"logfile: "+logfile+"\njobs:\n  j:\n    basic_auth: {username: u, password: "+secret+"}\n    targets: [{name: a, url: 'http://127.0.0.1:1/m'}]\n"))
	for _, bin := range []string{"scrape-once", "drain"} {
		r := runBin(t, bin, "-c", cfg, "--check-config")
		if r.code != 0 {
			t.Fatalf("%s --check-config: exit %d\n%s", bin, r.code, r.stderr)
		}
		mustContain(t, bin+" stdout", r.stdout, "nats://edge:xxxxx@127.0.0.1:1", "<secret>", "valid for")
		mustContain(t, bin+" stderr", r.stderr, "basic_auth.password is inline")
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Errorf("%s --check-config shows the secret:\n%s%s", bin, r.stdout, r.stderr)
		}
		if _, err := os.Stat(logfile); !os.IsNotExist(err) {
			t.Errorf("%s --check-config created the logfile (%v)", bin, err)
		}
	}
	// A target the run would not find is the run's usage error.
	if r := runBin(t, "scrape-once", "-c", cfg, "--check-config", "--target", "nope"); r.code != 64 {
		t.Errorf("--check-config --target nope: exit %d, want 64\n%s", r.code, r.stderr)
	}
}
