package main

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/edge"
	"github.com/prometheus-streams/prometheus-streams/internal/logging"
)

// checkConfig is --check-config: every check a run makes before it scrapes, with the
// same exit codes, and the config printed with its secrets hidden. It changes nothing
// on disk: warnings go to stderr, and the logfile is checked, not created.
func checkConfig(opts options, cfg *config.Config, looseSeed bool, stdout, stderr io.Writer) int {
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	for _, w := range cfg.Warnings {
		logger.Warn("config: " + w)
	}
	if looseSeed {
		warnLooseSeed(logger, cfg)
	}
	if err := logging.Check(cfg.LogFile); err != nil {
		fmt.Fprintf(stderr, "scrape-once: config: logfile: %v\n", err)
		return exitConfig
	}
	sel, err := edge.Select(edgeOptions(cfg).Jobs, opts.Job, opts.Target)
	if err != nil {
		fmt.Fprintf(stderr, "scrape-once: %v\n", err)
		return exitUsage
	}
	out, err := cfg.Redacted()
	if err != nil {
		fmt.Fprintf(stderr, "scrape-once: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "%s", out)
	if ps := cfg.PollerStream; ps != nil { // --dry-run needs none
		fmt.Fprintf(stdout, "# poller_stream: %s\n", ps.Describe())
	}
	fmt.Fprintf(stdout, "# %s: valid for scrape-once, %d targets selected\n", opts.Config, len(sel))
	return exitOK
}

func warnLooseSeed(logger *slog.Logger, cfg *config.Config) {
	logger.Warn("config: signing.nkey_seed_file is readable by group or others; make it mode 0400, owned by the user scrape-once runs as",
		"file", cfg.Signing.NKeySeedFile)
}
