package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The central Prometheus's files in config/prometheus/, checked with Debian's promtool
// (package prometheus; its service need not run: promtool only reads files).
const promDir = "../config/prometheus"

func TestPrometheusConfig(t *testing.T) {
	promtool := requireTool(t, "promtool", "prometheus")
	cfg, err := filepath.Abs(filepath.Join(promDir, "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	// promtool check config also loads and checks the rule_files it names, relative to
	// the config file: run it from elsewhere so that a path relative to the working
	// directory would not be found.
	cmd := exec.Command(promtool, "check", "config", cfg)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	rules, _ := filepath.Abs(filepath.Join(promDir, "prometheus-streams.rules.yml"))
	mustContain(t, "promtool check config", string(out), "SUCCESS: 1 rule files found", "Checking "+rules)

	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The three scrape jobs the README describes; the rules use the drain's job name.
	mustContain(t, "prometheus.yml", string(b), "job_name: pushgateway", "job_name: prometheus-streams\n",
		"job_name: prometheus-streams-drain", "honor_labels: true", "honor_timestamps: true")
}

func TestPrometheusRules(t *testing.T) {
	promtool := requireTool(t, "promtool", "prometheus")
	rules := filepath.Join(promDir, "prometheus-streams.rules.yml")
	out, err := exec.Command(promtool, "check", "rules", rules).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}

	// Every alert the rules define is exercised by the unit tests, firing and not.
	b, err := os.ReadFile(rules)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := os.ReadFile(filepath.Join(promDir, "prometheus-streams.rules.test.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var alerts int
	for _, line := range strings.Split(string(b), "\n") {
		name, ok := strings.CutPrefix(strings.TrimSpace(line), "- alert: ")
		if !ok {
			continue
		}
		alerts++
		tests := strings.Count(string(tb), "alertname: "+name+"\n")
		if tests < 2 {
			t.Errorf("alert %s has %d unit test evaluations, want one firing and one not", name, tests)
		}
	}
	if alerts < 10 {
		t.Errorf("%d alerts in %s, want the 10 the deployment relies on", alerts, rules)
	}

	cmd := exec.Command(promtool, "test", "rules", "prometheus-streams.rules.test.yml")
	cmd.Dir = promDir
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	mustContain(t, "promtool test rules", string(out), "SUCCESS")
}
