// Command scrape-once scrapes the configured targets once, publishes one message per
// target scrape to the stream, waits for the server's acks and exits. A systemd timer (or
// cron) starts it every scrape_interval.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nkeys"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/edge"
	"github.com/prometheus-streams/prometheus-streams/internal/cli"
	"github.com/prometheus-streams/prometheus-streams/internal/logging"
	"github.com/prometheus-streams/prometheus-streams/internal/version"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// Exit codes, from sysexits.h so that systemd and cron report them meaningfully.
const (
	exitOK          = cli.ExitOK
	exitFailure     = cli.ExitFailure
	exitUsage       = cli.ExitUsage
	exitUnavailable = cli.ExitUnavailable
	exitTempFail    = cli.ExitTempFail
	exitConfig      = cli.ExitConfig // also a JetStream stream that does not fit the config
)

type options struct {
	Target  []string `long:"target" value-name:"NAME" description:"scrape only this target: its name or job/name (repeatable)"`
	Job     []string `long:"job" value-name:"NAME" description:"scrape only the targets of this job (repeatable)"`
	DryRun  bool     `long:"dry-run" description:"scrape and print each target's outcome and exposition; publish nothing"`
	Verbose bool     `short:"v" long:"verbose" description:"log each target's scrape too, not only the run's summary"`
	cli.Common
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var opts options
	rest, code, done := cli.Parse("scrape-once", &opts, &opts.Common, args, stdout, stderr)
	if done {
		return code
	}
	if len(rest) > 0 {
		// Most likely a target meant as one: running every target instead would
		// publish what the user did not ask for.
		fmt.Fprintf(stderr, "scrape-once: unexpected argument %q: to scrape only some targets, use --target %s (or --job NAME)\n", rest[0], rest[0])
		return exitUsage
	}

	cfg, err := config.Load(opts.Config)
	if err == nil && !opts.DryRun {
		err = cfg.RequireEdge()
	}
	if err != nil {
		fmt.Fprintf(stderr, "scrape-once: config: %v\n", err)
		return exitConfig
	}
	// The signing key is loaded at start, so a bad one is a config error, found by
	// --check-config too. A dry run publishes nothing and needs none.
	var signer nkeys.KeyPair
	var looseSeed bool
	if cfg.Signing != nil && !opts.DryRun {
		if signer, looseSeed, err = edge.LoadSigner(cfg.Signing.NKeySeedFile); err != nil {
			fmt.Fprintf(stderr, "scrape-once: config: signing.nkey_seed_file: %v\n", err)
			return exitConfig
		}
		defer signer.Wipe()
	}
	if opts.CheckConfig {
		return checkConfig(opts, cfg, looseSeed, stdout, stderr)
	}
	logger, closer, err := logging.New(logLevel(cfg, opts.Verbose), cfg.LogFile, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "scrape-once: %v\n", err)
		return exitConfig
	}
	defer closer.Close()
	for _, w := range cfg.Warnings {
		logger.Warn("config: " + w)
	}
	if looseSeed {
		warnLooseSeed(logger, cfg)
	}
	eo := edgeOptions(cfg)
	sel, err := edge.Select(eo.Jobs, opts.Job, opts.Target)
	if err != nil {
		fmt.Fprintf(stderr, "scrape-once: %v\n", err)
		return exitUsage
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	codecOpts, err := codecOptions(cfg.PollerStream, signer)
	if err != nil {
		fmt.Fprintf(stderr, "scrape-once: %v\n", err)
		return exitConfig
	}
	codec, err := envelope.NewCodec(codecOpts...)
	if err != nil {
		logger.Error("envelope codec", "err", err)
		return exitFailure
	}
	defer codec.Close()
	runner := edge.New(eo, codec, dialer(cfg, eo, logger), logger, version.Version)

	if opts.DryRun {
		failed, err := runner.DryRun(ctx, sel, stdout, isTerminal(stdout))
		if err != nil || failed > 0 {
			if err != nil {
				logger.Error("dry run", "err", err)
			}
			return exitFailure
		}
		return exitOK
	}

	sum, err := runner.Run(ctx, sel)
	switch {
	case errors.Is(err, edge.ErrUnreachable):
		logger.Error("run failed", append(sum.LogAttrs(), "err", err)...)
		return exitUnavailable
	case errors.Is(err, edge.ErrIncompatible):
		// The JetStream stream exists but does not fit poller_stream (subjects, sealed,
		// no acks): retrying cannot help until the config or the stream is changed,
		// which is a configuration matter, not an outage. A missing stream is 69
		// instead: someone (a drain with create_stream, provisioning) may create it
		// before the next run.
		logger.Error("run failed", append(sum.LogAttrs(), "err", err)...)
		return exitConfig
	case errors.Is(err, edge.ErrAcksMissing):
		logger.Error("run failed", append(sum.LogAttrs(), "err", err)...)
		return exitTempFail
	case err != nil:
		logger.Error("run failed", append(sum.LogAttrs(), "err", err)...)
		return exitFailure
	case sum.Failed > 0:
		logger.Warn("run done, some scrapes failed", sum.LogAttrs()...)
	default:
		logger.Info("run done", sum.LogAttrs()...)
	}
	return exitOK
}

// logLevel is the config's level, but never above info: the run's summary line is
// logged at info and is wanted on every run (in the journal, in cron's mail). -v adds a
// line per target (debug).
func logLevel(cfg *config.Config, verbose bool) slog.Level {
	level := min(logging.Level(cfg.Verbose, cfg.Debug), slog.LevelInfo)
	if verbose {
		level = slog.LevelDebug
	}
	return level
}

// isTerminal reports whether w is a terminal, where a person waits for each line.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
