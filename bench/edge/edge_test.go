package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
)

// TestMeasure runs the harness on two targets once, and the agent for a short window
// when Debian's Prometheus is installed: both programs build and run, every message
// reaches the stream, and the report has its rows.
func TestMeasure(t *testing.T) {
	if testing.Short() {
		t.Skip("builds scrape-once")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	body, err := os.ReadFile(filepath.Join(fixture.Dir(), fixture.NodeExporter))
	if err != nil {
		t.Fatal(err)
	}
	o := options{targets: 2, runs: 1}
	if _, err := os.Stat("/usr/bin/prometheus"); err == nil {
		o.agent, o.agentFor, o.interval = "/usr/bin/prometheus", 2*time.Second, 250*time.Millisecond
	}
	res, err := measure(ctx, o, body)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.scrape) != 1 || len(res.fetch) != 1 || len(res.scrapePlain) != 1 || len(res.fetchPlain) != 1 {
		t.Fatalf("%d+%d scrape-once runs and %d+%d fetches, want 1 each", len(res.scrape), len(res.scrapePlain), len(res.fetch), len(res.fetchPlain))
	}
	if res.storedMsgs != 2 || res.storedBytes == 0 {
		t.Errorf("stored %d messages, %d bytes; want 2 messages", res.storedMsgs, res.storedBytes)
	}
	var out bytes.Buffer
	res.report(&out, o, len(body))
	rows := []string{"wall per run", "CPU per run ÷ bare", "bytes stored", "`enable_compression: false`²: CPU per run"}
	if o.agent != "" {
		if len(res.agent) != 1 || res.agent[0].cpu <= 0 {
			t.Errorf("agent windows %+v, want one with CPU", res.agent)
		}
		rows = append(rows, "Prometheus agent's CPU")
	}
	for _, row := range rows {
		if !strings.Contains(out.String(), row) {
			t.Errorf("report lacks the row %q:\n%s", row, out.String())
		}
	}
}

// TestCheckSummary: a run that did not scrape, publish and ack every target is an
// error, not a figure.
func TestCheckSummary(t *testing.T) {
	const ok = `level=INFO msg="run done" targets=2 ok=2 failed=0 series=1014 raw_bytes=1 wire_bytes=1 published=2 acked=2 ack_failed=0 pending=0 oversized=0`
	for _, tc := range []struct {
		name, log string
		wantErr   bool
	}{
		{"all there", ok, false},
		{"a scrape failed", strings.Replace(ok, " failed=0", " failed=1", 1), true},
		{"an ack missing", strings.Replace(ok, "acked=2", "acked=1", 1), true},
		{"pending", strings.Replace(ok, "pending=0", "pending=1", 1), true},
		{"no summary", "level=ERROR msg=\"run failed\"", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkSummary(tc.log, 2); (err != nil) != tc.wantErr {
				t.Errorf("checkSummary = %v, want error %v", err, tc.wantErr)
			}
		})
	}
}
