package tests

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

const pkgConfig = "/etc/prometheus-streams/prometheus-streams.yaml"

// pkgFiles are the files both packages ship, with their modes.
var pkgFiles = map[string]string{
	"/usr/bin/prometheus-streams-scrape-once":                                          "-rwxr-xr-x",
	"/usr/bin/prometheus-streams-drain":                                                "-rwxr-xr-x",
	"/usr/lib/systemd/system/prometheus-streams-scrape-once.service":                   "-rw-r--r--",
	"/usr/lib/systemd/system/prometheus-streams-scrape-once.timer":                     "-rw-r--r--",
	"/usr/lib/systemd/system/prometheus-streams-scrape-once@.service":                  "-rw-r--r--",
	"/usr/lib/systemd/system/prometheus-streams-scrape-once@.timer":                    "-rw-r--r--",
	"/usr/lib/systemd/system/prometheus-streams-drain.service":                         "-rw-r--r--",
	"/etc/prometheus-streams/prometheus-streams.yaml":                                  "-rw-r-----", // it may be edited to hold credentials
	"/usr/share/doc/prometheus-streams/README.md":                                      "-rw-r--r--",
	"/usr/share/doc/prometheus-streams/examples/scrape-once.cron":                      "-rw-r--r--",
	"/usr/share/doc/prometheus-streams/examples/prometheus.yml":                        "-rw-r--r--",
	"/usr/share/doc/prometheus-streams/examples/prometheus-streams.rules.yml":          "-rw-r--r--",
	"/usr/share/doc/prometheus-streams/examples/grafana/prometheus-streams-drain.json": "-rw-r--r--",
	"/usr/share/doc/prometheus-streams/examples/grafana/prometheus-streams-fleet.json": "-rw-r--r--",
}

// requireTool returns the path of a command the test needs, failing (not skipping) with
// the Debian package that provides it when it is missing.
func requireTool(t *testing.T, tool, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("%s not found in PATH: apt-get install %s", tool, debianPackage)
	}
	return p
}

// run runs a command and returns its stdout, failing the test with its stderr.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// packageEnv is the environment for systemd/package.sh: the test's own, less an outer
// make's (make test runs this test) so the inner make build starts afresh.
func packageEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VERSION", "COMMIT", "DIST", "MAINTAINER", "GOARCH":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// buildPackage runs systemd/package.sh FORMAT into a temp dir, as make deb/rpm do, and
// returns the package's path. The first run on a machine builds nfpm from the Go module
// proxy (under a minute here); make build and nfpm then take seconds. Like make build,
// it leaves this checkout's binaries in bin/.
func buildPackage(t *testing.T, format string) string {
	t.Helper()
	requireTool(t, "make", "make")
	requireTool(t, "git", "git")
	timeout := 10 * time.Minute
	if d, ok := t.Deadline(); ok && time.Until(d)-30*time.Second < timeout {
		timeout = time.Until(d) - 30*time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	dist := t.TempDir()
	cmd := exec.CommandContext(ctx, "../systemd/package.sh", format)
	cmd.Env = packageEnv("DIST=" + dist)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("systemd/package.sh %s: %v (after %s)\n%s", format, err, time.Since(start).Round(time.Second), errb.String())
	}
	t.Logf("systemd/package.sh %s: %s", format, time.Since(start).Round(100*time.Millisecond))
	path := strings.TrimSpace(out.String())
	if filepath.Dir(path) != dist {
		t.Fatalf("package.sh printed %q, want a package in %s", path, dist)
	}
	if fi, err := os.Stat(path); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("%s: %d bytes", filepath.Base(path), fi.Size())
	}
	return path
}

// checkFiles compares a package's listing (path to mode) with pkgFiles.
func checkFiles(t *testing.T, got map[string]string) {
	t.Helper()
	for p, mode := range pkgFiles {
		m, ok := got[p]
		switch {
		case !ok:
			t.Errorf("package lacks %s", p)
		case m != mode:
			t.Errorf("%s has mode %s, want %s", p, m, mode)
		}
	}
}

// checkFileName checks that a package's file is named after its version and
// architecture: prometheus-streams_<version>_<arch>.deb|.rpm.
func checkFileName(t *testing.T, path, format, version string) {
	t.Helper()
	arch := runtime.GOARCH
	if format == "rpm" {
		arch = map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[arch]
	}
	if got, want := filepath.Base(path), "prometheus-streams_"+version+"_"+arch+"."+format; got != want {
		t.Errorf("package file %s, want %s", got, want)
	}
}

// checkBinaries runs the packaged binaries, extracted into root, with --version: both
// name the package's own version, and this checkout's commit.
func checkBinaries(t *testing.T, root, pkgVersion string) {
	t.Helper()
	commit := strings.TrimSpace(run(t, "git", "rev-parse", "--short", "HEAD"))
	for _, b := range []string{"scrape-once", "drain"} {
		out := strings.TrimSpace(run(t, filepath.Join(root, "usr/bin/prometheus-streams-"+b), "--version"))
		if want := b + " " + pkgVersion + " (commit " + commit + ")"; out != want {
			t.Errorf("packaged %s --version: %q, want %q", b, out, want)
		}
	}
}

func TestPackageDeb(t *testing.T) {
	dpkgDeb := requireTool(t, "dpkg-deb", "dpkg")
	deb := buildPackage(t, "deb")

	// Contents: every file at its path with its mode.
	files := map[string]string{}
	for _, line := range strings.Split(run(t, dpkgDeb, "-c", deb), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 {
			files[strings.TrimPrefix(f[len(f)-1], ".")] = f[0]
		}
	}
	checkFiles(t, files)

	// Control fields.
	info := run(t, dpkgDeb, "-I", deb)
	version := strings.TrimSpace(run(t, dpkgDeb, "-f", deb, "Version"))
	checkFileName(t, deb, "deb", version)
	mustContain(t, "dpkg-deb -I", info,
		"Package: prometheus-streams\n",
		"Version: "+version+"\n",
		"Architecture: "+runtime.GOARCH+"\n",
		"Homepage: https://github.com/prometheus-streams/prometheus-streams\n",
		"Maintainer: ")
	if m := strings.TrimSpace(run(t, dpkgDeb, "-f", deb, "Maintainer")); m == "" || strings.Contains(m, "unset") {
		t.Errorf("Maintainer %q", m)
	}

	// The example config is a conffile: an upgrade never overwrites an edited one.
	conffiles, err := exec.Command(dpkgDeb, "-I", deb, "conffiles").Output()
	if err != nil {
		t.Errorf("the package has no conffiles (dpkg-deb -I %s conffiles: %v)", deb, err)
	} else if !strings.Contains("\n"+string(conffiles), "\n"+pkgConfig+"\n") {
		t.Errorf("conffiles lacks %s:\n%s", pkgConfig, conffiles)
	}

	// The postinst is systemd/postinstall.sh.
	want, err := os.ReadFile("../systemd/postinstall.sh")
	if err != nil {
		t.Fatal(err)
	}
	if got := run(t, dpkgDeb, "-I", deb, "postinst"); got != string(want) {
		t.Errorf("postinst differs from systemd/postinstall.sh:\n%s", got)
	}

	// The binaries are stamped with the version and commit.
	root := t.TempDir()
	run(t, dpkgDeb, "-x", deb, root)
	checkBinaries(t, root, version)
}

func TestPackageRPM(t *testing.T) {
	rpm := requireTool(t, "rpm", "rpm")
	rpm2archive := requireTool(t, "rpm2archive", "rpm")
	pkg := buildPackage(t, "rpm")

	// Contents: every file at its path with its mode, and the flags of each.
	files, flags := map[string]string{}, map[string]string{}
	out := run(t, rpm, "-qp", "--queryformat", "[%{FILEMODES:perms} %{FILENAMES} %{FILEFLAGS:fflags}\n]", pkg)
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			files[f[1]] = f[0]
			if len(f) == 3 {
				flags[f[1]] = f[2]
			}
		}
	}
	checkFiles(t, files)
	listed := run(t, rpm, "-qlp", pkg)
	for p := range pkgFiles {
		if !strings.Contains("\n"+listed, "\n"+p+"\n") {
			t.Errorf("rpm -qlp lacks %s", p)
		}
	}

	// The example config is %config(noreplace): an upgrade leaves an edited one and
	// writes the new one beside it as .rpmnew.
	if got := strings.TrimSpace(run(t, rpm, "-qcp", pkg)); got != pkgConfig {
		t.Errorf("rpm -qcp: %q, want %q", got, pkgConfig)
	}
	if f := flags[pkgConfig]; !strings.Contains(f, "c") || !strings.Contains(f, "n") {
		t.Errorf("%s has flags %q, want config (c) and noreplace (n)", pkgConfig, f)
	}

	// Header.
	header := run(t, rpm, "-qp", "--queryformat",
		"%{NAME}|%{VERSION}|%{LICENSE}|%{URL}|%{VENDOR}|%{PACKAGER}", pkg)
	f := strings.Split(header, "|")
	if len(f) != 6 {
		t.Fatalf("rpm header: %q", header)
	}
	checkFileName(t, pkg, "rpm", f[1])
	for i, want := range []string{"prometheus-streams", f[1], "Apache-2.0",
		"https://github.com/prometheus-streams/prometheus-streams", "prometheus-streams"} {
		if f[i] != want {
			t.Errorf("rpm header field %d: %q, want %q", i, f[i], want)
		}
	}
	if f[5] == "" || f[5] == "(none)" {
		t.Errorf("rpm has no packager (maintainer)")
	}

	// The postinstall scriptlet creates the user.
	scripts := run(t, rpm, "-qp", "--scripts", pkg)
	mustContain(t, "rpm --scripts", scripts, "postinstall scriptlet", "useradd --system --no-create-home")

	// The binaries are stamped with the version and commit.
	root := t.TempDir()
	extractRPM(t, rpm2archive, pkg, root)
	checkBinaries(t, root, f[1])
}

// extractRPM unpacks an rpm's payload into root: rpm2archive turns it into a tar.gz.
func extractRPM(t *testing.T, rpm2archive, pkg, root string) {
	t.Helper()
	in, err := os.Open(pkg)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	cmd := exec.Command(rpm2archive, "-")
	cmd.Stdin = in
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("rpm2archive: %v\n%s", err, errb.String())
	}
	zr, err := gzip.NewReader(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := filepath.Join(root, filepath.FromSlash(strings.TrimPrefix(h.Name, "./")))
		if !strings.HasPrefix(name, root+string(filepath.Separator)) {
			t.Fatalf("rpm payload path %q escapes", h.Name)
		}
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o777)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, tr); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPackageVersion checks package.sh's mapping of git describe to a package version:
// dpkg and rpm both accept every form and order them as releases are ordered.
func TestPackageVersion(t *testing.T) {
	dpkg := requireTool(t, "dpkg", "dpkg")
	rpm := requireTool(t, "rpm", "rpm")
	requireTool(t, "git", "git")
	// In release order.
	cases := []struct{ raw, want string }{
		{"abc1234", "0.0.0~git"},       // no tag yet: 0.0.0~git<commits>.gabc1234
		{"abc1234-dirty", "0.0.0~git"}, // ... .dirty
		{"v0.1.0-rc.1", "0.1.0~rc.1"},  // a pre-release sorts before its release
		{"v0.1.0-rc.1-2-gabc1234", "0.1.0~rc.1+git2.gabc1234"},
		{"v0.1.0", "0.1.0"},
		{"v0.1.0-dirty", "0.1.0+dirty"},
		{"v0.1.0-4-gabc1234", "0.1.0+git4.gabc1234"},
		{"v0.1.0-4-gabc1234-dirty", "0.1.0+git4.gabc1234.dirty"},
		{"v0.1.1", "0.1.1"},
	}
	var versions []string
	for _, c := range cases {
		got := strings.TrimSpace(run(t, "../systemd/package.sh", "version", c.raw))
		if !strings.HasPrefix(got, c.want) || (!strings.HasSuffix(c.want, "~git") && got != c.want) {
			t.Errorf("package.sh version %s: %q, want %q", c.raw, got, c.want)
		}
		versions = append(versions, got)
	}
	// This checkout's own version (git describe) is valid too.
	versions = append([]string{strings.TrimSpace(run(t, "../systemd/package.sh", "version"))}, versions...)
	for _, v := range versions {
		// dpkg refuses a version of bad syntax with an error.
		run(t, dpkg, "--compare-versions", v, "eq", v)
	}
	for i := 2; i < len(versions); i++ { // versions[0] is this checkout's, not in order
		a, b := versions[i-1], versions[i]
		if err := exec.Command(dpkg, "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("dpkg: %s is not before %s", a, b)
		}
		if got := strings.TrimSpace(run(t, rpm, "--eval", "%{lua: print(rpm.vercmp('"+a+"', '"+b+"'))}")); got != "-1" {
			t.Errorf("rpm: vercmp(%s, %s) = %s, want -1", a, b, got)
		}
	}
	// A tag that is no version is refused rather than packaged under a wrong one.
	if err := exec.Command("../systemd/package.sh", "version", "release-one").Run(); err == nil {
		t.Error("package.sh version release-one: want an error")
	}
}
