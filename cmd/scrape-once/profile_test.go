package main

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"testing"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/edge"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// TestProfileRuns is what bench/edge profiles (go test -cpuprofile): the edge, as run
// wires it, running the config PROFILE_CONFIG names PROFILE_RUNS times, a Runner per
// run as a process per run builds one; process start and config loading aside. Each
// run must publish every target and have it acknowledged. Without PROFILE_CONFIG it is
// skipped.
func TestProfileRuns(t *testing.T) {
	path := os.Getenv("PROFILE_CONFIG")
	if path == "" {
		t.Skip("bench/edge runs it, with PROFILE_CONFIG and PROFILE_RUNS")
	}
	runs, err := strconv.Atoi(os.Getenv("PROFILE_RUNS"))
	if err != nil {
		t.Fatalf("PROFILE_RUNS: %v", err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	o := edgeOptions(cfg)
	sel, err := edge.Select(o.Jobs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	comp, err := bodyCompression(cfg.PollerStream)
	if err != nil {
		t.Fatal(err)
	}
	codec, err := envelope.NewCodec(envelope.BodyCompression(comp))
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	logger := slog.New(slog.DiscardHandler)
	for i := range runs {
		sum, err := edge.New(o, codec, dialer(cfg, o, logger), logger, "bench").Run(context.Background(), sel)
		if err == nil && sum.Acked != len(sel) {
			t.Fatalf("run %d: acked %d of %d", i, sum.Acked, len(sel))
		}
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
}
