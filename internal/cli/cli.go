// Package cli is what the command lines of scrape-once and the drain share: their exit
// codes (sysexits, which systemd and cron read) and the parsing of their flags, with
// --help, usage errors and --version answered alike.
package cli

import (
	"fmt"
	"io"

	flags "github.com/jessevdk/go-flags"

	"github.com/prometheus-streams/prometheus-streams/internal/version"
)

// Exit codes of both binaries.
const (
	ExitOK          = 0
	ExitFailure     = 1
	ExitUsage       = 64 // EX_USAGE: a bad flag, an unknown or ambiguous --target
	ExitUnavailable = 69 // EX_UNAVAILABLE: the stream is unreachable
	ExitTempFail    = 75 // EX_TEMPFAIL: acks missing or partial at the deadline
	ExitConfig      = 78 // EX_CONFIG
)

// Common are the flags both binaries take.
type Common struct {
	Config      string `short:"c" long:"config" default:"/etc/prometheus-streams/prometheus-streams.yaml" description:"configuration file"`
	CheckConfig bool   `long:"check-config" description:"validate the configuration, print it with secrets hidden, and exit"`
	Version     bool   `long:"version" description:"print the version and exit"`
}

// Parse parses args into opts, a struct of go-flags options that embeds Common, for
// the program name. When it has answered the command line itself (--help, --version,
// a usage error), done is true and code is the exit code; otherwise it returns the
// arguments that are not flags.
func Parse(name string, opts any, common *Common, args []string, stdout, stderr io.Writer) (rest []string, code int, done bool) {
	parser := flags.NewParser(opts, flags.HelpFlag|flags.PassDoubleDash)
	parser.Name = name
	rest, err := parser.ParseArgs(args)
	if err != nil {
		if flags.WroteHelp(err) {
			fmt.Fprintln(stdout, err)
			return nil, ExitOK, true
		}
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return nil, ExitUsage, true
	}
	if common.Version {
		fmt.Fprintln(stdout, version.Info(name))
		return nil, ExitOK, true
	}
	return rest, ExitOK, false
}
