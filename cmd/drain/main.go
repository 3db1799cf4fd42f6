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

	flags "github.com/jessevdk/go-flags"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/lib/logging"
	"github.com/prometheus-streams/prometheus-streams/lib/version"
)

// Exit codes, as scrape-once's (sysexits).
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 64
	exitConfig  = 78
)

type options struct {
	Config      string `short:"c" long:"config" default:"/etc/prometheus-streams/prometheus-streams.yaml" description:"configuration file"`
	CheckConfig bool   `long:"check-config" description:"validate the configuration, print it with secrets hidden, and exit"`
	Version     bool   `long:"version" description:"print the version and exit"`
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var opts options
	parser := flags.NewParser(&opts, flags.HelpFlag|flags.PassDoubleDash)
	parser.Name = "drain"
	rest, err := parser.ParseArgs(args)
	if err != nil {
		if flags.WroteHelp(err) {
			fmt.Fprintln(stdout, err)
			return exitOK
		}
		fmt.Fprintf(stderr, "drain: %v\n", err)
		return exitUsage
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "drain: unexpected argument %q: the drain takes only flags (the config file is -c FILE)\n", rest[0])
		return exitUsage
	}
	if opts.Version {
		fmt.Fprintln(stdout, version.Info("drain"))
		return exitOK
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
