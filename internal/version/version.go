// Package version holds the version and commit stamped into the binaries at build time
// (go build -ldflags "-X .../internal/version.Version=... -X .../internal/version.Commit=..."). The
// Makefile stamps the package's version (systemd/package.sh version), so that --version,
// build_info and the package name one version alike.
package version

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
)

// Set by the linker; the defaults name an unstamped build.
var (
	Version = "0.0.0~dev"
	Commit  = "unknown"
)

// Info is the one-line --version text of a binary.
func Info(program string) string {
	return fmt.Sprintf("%s %s (commit %s)", program, Version, Commit)
}

// UserAgent is the User-Agent of every HTTP request the project makes.
func UserAgent() string { return UserAgentOf(Version) }

// UserAgentOf is the User-Agent of a build of version v.
func UserAgentOf(v string) string { return "prometheus-streams/" + v }

// NewCollector exports <namespace>_build_info as every Prometheus component does
// (client_golang's version collector: goversion, goos, goarch, tags from the build),
// with this binary's version and commit.
func NewCollector(namespace string) prometheus.Collector {
	return versioncollector.NewCollector(namespace, versioncollector.WithExtraConstLabels(prometheus.Labels{
		"version": Version, "revision": Commit,
	}))
}
