package config

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// parseErr parses yaml, which must fail, and returns the error's text, which must be
// valid UTF-8 (it is printed and logged).
func parseErr(t *testing.T, yaml string) string {
	t.Helper()
	_, err := Parse([]byte(yaml))
	if err == nil {
		t.Fatalf("no error for\n%s", yaml)
	}
	msg := err.Error()
	if !utf8.ValidString(msg) {
		t.Errorf("error is not valid UTF-8: %q", msg)
	}
	return msg
}

func contains(t *testing.T, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%q does not contain %q", s, sub)
		}
	}
}

// TestInvalidUTF8 refuses, with the key, every value that would travel in a message
// and is not UTF-8: identity, site, job, instance, static labels. Such bytes get in
// raw (a YAML file that is not UTF-8) or as !!binary.
func TestInvalidUTF8(t *testing.T) {
	const target = "    targets: [{name: a, url: 'http://h:1/'}]\n"
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"raw byte", "verbose: true\nidentity: edge\xff1\n", []string{"line 2: identity: byte 0xff at column 15 is not UTF-8"}},
		{"raw bytes on two lines", "site: \xfe\nidentity: \xc3\n", []string{"line 1: site: byte 0xfe", "line 2: identity: byte 0xc3"}},
		{"raw byte in a job name", "jobs:\n  j\xff:\n" + target, []string{"line 2", "byte 0xff at column 4"}},
		{"identity", "identity: !!binary ZWRnZf8=\n", []string{"line 1: identity: \"edge\\xff\" is not valid UTF-8"}},
		{"site", "site: !!binary /w==\n", []string{"site: \"\\xff\" is not valid UTF-8"}},
		{"job name", "jobs:\n  ? !!binary av8=\n  : targets: [{name: a, url: 'http://h:1/'}]\n", []string{`jobs.j\xff: "j\xff" is not valid UTF-8`}},
		{"instance", "jobs:\n  j:\n    targets: [{name: !!binary Yf8=, url: 'http://h:1/'}]\n", []string{"line 3", `jobs.j.targets[0].name: "a\xff" is not valid UTF-8`}},
		{"job label", "jobs:\n  j:\n    labels: {dc: !!binary /w==}\n" + target, []string{"line 3", `jobs.j.labels.dc: "\xff" is not valid UTF-8`}},
		{"target label", "jobs:\n  j:\n    targets: [{name: a, url: 'http://h:1/', labels: {rack: !!binary /w==}}]\n", []string{`jobs.j.targets[0].labels.rack: "\xff" is not valid UTF-8`}},
		{"label name", "jobs:\n  j:\n    labels: {? !!binary /w== : x}\n" + target, []string{`jobs.j.labels.\xff: "\xff" is not a valid label name`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			contains(t, parseErr(t, tt.yaml), tt.want...)
		})
	}
	// A job name with a control character but valid UTF-8 is another matter.
	if _, err := Parse([]byte("identity: \"caf\\u00e9\"\njobs:\n  j:\n" + target)); err != nil {
		t.Errorf("valid UTF-8 refused: %v", err)
	}
}

// TestOnePass reports every problem of a file at once: values that do not decode,
// and what validation finds in the rest, without a second report of a key that did
// not decode.
func TestOnePass(t *testing.T) {
	msg := parseErr(t, `scrape_interval: 6x0s
poller_stream: {cluster_id: c, urls: {a: b}}
jobs:
  j:
    scrape_timeout: -1
    metric_relabel_configs:
      - source_labels: [a]
        regex: 'foo('
        action: keep
      - {source_labels: [a], regex: 'a)b', action: drop}
    targets:
      - {name: a, url: 'http://h:1/'}
      - {name: a, url: 'http://h:2/'}
`)
	contains(t, msg,
		`line 1: scrape_interval: "6x0s" is neither`,
		"line 2: poller_stream",
		`line 5: jobs.j.scrape_timeout: duration "-1" is negative`,
		`line 8: jobs.j.metric_relabel_configs[0].regex: "foo(" is not a valid regular expression: missing closing )`,
		`line 10: jobs.j.metric_relabel_configs[1].regex: "a)b" is not a valid regular expression: unexpected )`,
		`line 13: jobs.j.targets[1].name: duplicate target "a"`,
	)
	if strings.Contains(msg, "urls: required") {
		t.Errorf("urls, which did not decode, reported again as missing:\n%s", msg)
	}
	if strings.Contains(msg, "^(?s:") {
		t.Errorf("a pattern quoted as Prometheus anchors it, not as written:\n%s", msg)
	}
	// What Prometheus accepts once anchored is accepted.
	if _, err := Parse([]byte("jobs:\n  j:\n    targets: [{url: 'http://h:1/'}]\n    metric_relabel_configs: [{source_labels: [a], regex: 'a)|(b', action: keep}]\n")); err != nil {
		t.Errorf("regex valid once anchored refused: %v", err)
	}
}
