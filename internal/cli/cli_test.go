package cli

import (
	"bytes"
	"strings"
	"testing"
)

type testOptions struct {
	Only []string `long:"only"`
	Common
}

// TestParse: --help and --version are answered with 0, a bad flag with 64 and its
// reason, and flags land in the options, the common ones included.
func TestParse(t *testing.T) {
	for _, c := range []struct {
		args     []string
		code     int
		done     bool
		out, err string
	}{
		{[]string{"--help"}, ExitOK, true, "Usage:", ""},
		{[]string{"--version"}, ExitOK, true, "prog ", ""},
		{[]string{"--bogus"}, ExitUsage, true, "", "prog: unknown flag `bogus'"},
		{[]string{"-c", "/x.yaml", "--only", "a", "rest"}, ExitOK, false, "", ""},
	} {
		var opts testOptions
		var stdout, stderr bytes.Buffer
		rest, code, done := Parse("prog", &opts, &opts.Common, c.args, &stdout, &stderr)
		if code != c.code || done != c.done || !strings.Contains(stdout.String(), c.out) || !strings.Contains(stderr.String(), c.err) {
			t.Errorf("%v: code %d done %t stdout %q stderr %q", c.args, code, done, stdout.String(), stderr.String())
		}
		if !done && (opts.Config != "/x.yaml" || len(opts.Only) != 1 || len(rest) != 1) {
			t.Errorf("%v: options %+v, rest %v", c.args, opts, rest)
		}
	}
}
