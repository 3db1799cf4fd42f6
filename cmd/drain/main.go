// Command drain consumes the scrapes scrape-once publishes, with a durable subscription,
// and delivers each target's metrics to its sinks, acknowledging a message only once its
// fate is final.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/internal/cli"
	"github.com/prometheus-streams/prometheus-streams/internal/logging"
)

// Exit codes: the binaries' shared ones.
const (
	exitOK      = cli.ExitOK
	exitFailure = cli.ExitFailure
	exitUsage   = cli.ExitUsage
	exitConfig  = cli.ExitConfig
)

type options struct {
	cli.Common
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var opts options
	rest, code, done := cli.Parse("drain", &opts, &opts.Common, args, stdout, stderr)
	if done {
		return code
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "drain: unexpected argument %q: the drain takes only flags (the config file is -c FILE)\n", rest[0])
		return exitUsage
	}
	cfg, err := config.Load(opts.Config)
	if err == nil {
		err = cfg.RequireCentral()
	}
	if err != nil {
		fmt.Fprintf(stderr, "drain: config: %v\n", err)
		return exitConfig
	}
	if opts.CheckConfig {
		// Nothing changes on disk: the logfile is checked, not created.
		if err := logging.Check(cfg.LogFile); err != nil {
			fmt.Fprintf(stderr, "drain: config: logfile: %v\n", err)
			return exitConfig
		}
		for _, w := range cfg.Warnings {
			slog.New(slog.NewTextHandler(stderr, nil)).Warn("config: " + w)
		}
		out, err := cfg.Redacted()
		if err != nil {
			fmt.Fprintf(stderr, "drain: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "%s", out)
		for _, line := range cfg.DescribeReceivers() {
			fmt.Fprintf(stdout, "# %s\n", line)
		}
		fmt.Fprintf(stdout, "# %s: valid for the drain\n", opts.Config)
		return exitOK
	}
	level := new(slog.LevelVar) // a reload may change it
	level.Set(logging.Level(cfg.Verbose, cfg.Debug))
	logger, closer, err := logging.New(level, cfg.LogFile, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "drain: %v\n", err)
		return exitConfig
	}
	defer closer.Close()
	for _, w := range cfg.Warnings {
		logger.Warn("config: " + w)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, opts.Config, cfg, level, logger); err != nil {
		logger.Error("drain failed", "err", err)
		return exitFailure
	}
	return exitOK
}
