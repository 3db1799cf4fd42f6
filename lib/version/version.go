// Package version holds the version and commit stamped into the binaries at build time
// (go build -ldflags "-X .../lib/version.Version=... -X .../lib/version.Commit=...").
package version

import "fmt"

// Set by the linker; the defaults name an unstamped build.
var (
	Version = "0.0.0-dev"
	Commit  = "unknown"
)

// Info is the one-line --version text of a binary.
func Info(program string) string {
	return fmt.Sprintf("%s %s (commit %s)", program, Version, Commit)
}

// UserAgent is the User-Agent of every HTTP request the project makes.
func UserAgent() string { return "prometheus-streams/" + Version }
