package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/promtest"
)

// TestDashboardQueries runs every PromQL expression of the Grafana dashboards in
// config/grafana against a real Prometheus that scrapes a real drain and receives its
// remote writes, once the drain has delivered scrapes, a failed one among them, and
// found a message superseded and one expired: each must return data, so that no panel
// queries a metric the drain does not serve.
func TestDashboardQueries(t *testing.T) {
	exprs := dashboardExprs(t)
	if len(exprs) < 10 {
		t.Fatalf("found only %d expressions in config/grafana", len(exprs))
	}

	natsAddr, exposeAddr, mon := freeAddr(t), freeAddr(t), freeAddr(t)
	prom := promtest.Start(t, promtest.Options{Binary: promtest.Prometheus2, ScrapeConfigs: fmt.Sprintf(`
- job_name: prometheus-streams-drain
  static_configs: [{targets: ['%s']}]
`, mon)})
	d := startDrain(t, writeConfig(t, centralConfig(natsAddr, exposeAddr, mon, fmt.Sprintf(`remote_write:
  - url: %s
`, prom.RemoteWriteURL()))), mon)

	// Scrapes from an edge: one target up, one down.
	node := fixture.ServeCapture(t, fixture.NodeExporter)
	edge := writeConfig(t, edgeConfig("nats://"+natsAddr, "central", fmt.Sprintf(`  node:
    targets:
      - {name: node1, url: '%s/metrics'}
      - {name: down1, url: '%s'}
`, node.URL, closedURL(t, "http"))))
	if r := runBin(t, "scrape-once", "-c", edge); r.code != 0 {
		t.Fatalf("scrape-once: exit %d\n%s", r.code, r.stderr)
	}
	// The drain names the version of scrape-once that published, as scrape-once names it.
	f := strings.Fields(runBin(t, "scrape-once", "--version").stdout)
	if len(f) != 4 {
		t.Fatalf("scrape-once --version: %q", f)
	}
	waitFor(t, 10*time.Second, "the publisher's build_info", func() bool {
		return d.metric("prometheus_streams_drain_publisher_build_info", "version", f[1]) == 1
	})
	// A message past max_age (30s), and an older scrape of a target arriving after a newer
	// one is in every sink. (One arriving while the newer one is still on its way is
	// written before it to remote_write, which takes every scrape in order: not
	// superseded.)
	now := time.Now()
	publishTo(t, embeddedServer(natsAddr),
		encode(t, "other", "old", now.Add(-2*time.Minute), "m 1\n"),
		encode(t, "other", "s", now.Add(-2*time.Second), "m 2\n"),
	)
	rw := "remote_write:" + strings.TrimPrefix(prom.RemoteWriteURL(), "http://")
	waitFor(t, 30*time.Second, "the newer scrape in every sink", func() bool {
		const delivered = "prometheus_streams_drain_scrapes_delivered_total"
		return d.metric(delivered, "sink", "expose") >= 3 && d.metric(delivered, "sink", rw) >= 3
	})
	publishTo(t, embeddedServer(natsAddr), encode(t, "other", "s", now.Add(-4*time.Second), "m 1\n"))
	waitFor(t, 30*time.Second, "an expired and a superseded message", func() bool {
		return d.metric("prometheus_streams_drain_messages_expired_total") >= 1 &&
			d.metric("prometheus_streams_drain_messages_superseded_total")+
				d.metric("prometheus_streams_drain_scrapes_superseded_total", "sink", "expose") >= 1
	})

	// Grafana's $__rate_interval is at least four scrape intervals (here 1s).
	ctx := context.Background()
	deadline := time.Now().Add(90 * time.Second)
	for _, expr := range exprs {
		q := strings.ReplaceAll(expr, "$__rate_interval", "15s")
		var v model.Vector
		var err error
		for {
			v, err = prom.Query(ctx, q, time.Time{})
			if err == nil && len(v) > 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("%s: %v", expr, err)
		} else if len(v) == 0 {
			t.Errorf("%s: no data", expr)
		}
	}
	// And a name the drain does not serve finds nothing: the check above can fail.
	if v, err := prom.Query(ctx, "sum by (sink) (rate(prometheus_streams_drain_no_such_metric_total[15s]))", time.Time{}); err != nil || len(v) != 0 {
		t.Errorf("a metric the drain does not serve: %v, %v", v, err)
	}
	t.Logf("%d expressions return data", len(exprs))
	if t.Failed() {
		t.Logf("drain log:\n%s", d.logs())
	}
}

// dashboardExprs returns every "expr" in the dashboards' JSON.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../config/grafana/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in config/grafana: %v", err)
	}
	seen := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if e, ok := v["expr"].(string); ok {
				seen[e] = true
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		walk(v)
	}
	exprs := make([]string, 0, len(seen))
	for e := range seen {
		exprs = append(exprs, e)
	}
	sort.Strings(exprs)
	return exprs
}

// TestAlertsLinkDashboards: every alert names, in its dashboard annotation, a dashboard
// of config/grafana.
func TestAlertsLinkDashboards(t *testing.T) {
	b, err := os.ReadFile("../config/prometheus/prometheus-streams.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			uid, ok := strings.CutPrefix(r.Annotations["dashboard"], "/d/")
			if !ok {
				t.Errorf("%s: dashboard annotation %q, want /d/<uid>", r.Alert, r.Annotations["dashboard"])
				continue
			}
			if _, err := os.Stat(filepath.Join("../config/grafana", uid+".json")); err != nil {
				t.Errorf("%s: no dashboard %s: %v", r.Alert, uid, err)
			}
		}
	}
	if n == 0 {
		t.Error("no alerts found")
	}
}
