// Command drain consumes the scrapes scrape-once publishes, with a durable subscription,
// and delivers each target's metrics to its sinks, acknowledging a message only once its
// fate is final.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	flags "github.com/jessevdk/go-flags"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/lib/drain"
	"github.com/prometheus-streams/prometheus-streams/lib/envelope"
	"github.com/prometheus-streams/prometheus-streams/lib/logging"
	"github.com/prometheus-streams/prometheus-streams/lib/monitor"
	"github.com/prometheus-streams/prometheus-streams/lib/pushgateway"
	"github.com/prometheus-streams/prometheus-streams/lib/stream"
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
	if _, err := parser.ParseArgs(args); err != nil {
		if flags.WroteHelp(err) {
			fmt.Fprintln(stdout, err)
			return exitOK
		}
		fmt.Fprintf(stderr, "drain: %v\n", err)
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
		out, err := cfg.Redacted()
		if err != nil {
			fmt.Fprintf(stderr, "drain: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "%s# %s: valid for the drain\n", out, opts.Config)
		return exitOK
	}
	logger, closer, err := logging.New(logging.Level(cfg.Verbose, cfg.Debug), cfg.LogFile, stderr)
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
	if err := serve(ctx, cfg, logger); err != nil {
		logger.Error("drain failed", "err", err)
		return exitFailure
	}
	return exitOK
}

// serve runs the drain until ctx ends.
func serve(ctx context.Context, cfg *config.Config, logger *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	codec, err := envelope.NewCodec()
	if err != nil {
		return err
	}
	defer codec.Close()

	pg := cfg.PushGateway
	client, err := pushgateway.New(pushgateway.Options{
		URL: pg.URL, HTTPClientConfig: pg.HTTPClientConfig, Timeout: pg.Timeout.D(), UserAgent: version.UserAgent(),
	})
	if err != nil {
		return err
	}
	sink := pushgateway.NewSink(client, pg.PublisherLabel, logger, reg)
	if err := sink.Load(ctx); err != nil {
		// Not fatal: the gateway may be down now and up later. Until a sweep lists its
		// groups, only this process's own pushes guard against older scrapes.
		logger.Warn("could not read the push gateway's groups at start", "err", err)
	}
	d := drain.New(drain.Options{MaxAge: cfg.MaxAge.D(), Workers: pg.Workers}, codec, []drain.Sink{sink}, logger, reg)

	mon, err := monitor.Listen(cfg.Monitor.Listen, monitor.Handler(reg, d.Ready), logger)
	if err != nil {
		return err
	}
	logger.Info("drain started", "version", version.Version, "monitor", mon.Addr(), "push_gateway", pg.URL)

	// At shutdown the workers abandon what they are delivering: the connection closes
	// with the consumer, so no ack could follow anyway, and the stream redelivers those
	// messages to the next drain (whose sinks take a scrape they already hold at no harm).
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.Run(ctx)
	}()

	rs := cfg.ReceiverStream
	err = stream.Consume(ctx, stream.SubscribeOptions{
		STANOptions: stream.STANOptions{
			URLs: rs.URLs, ClusterID: rs.ClusterID, ClientID: rs.ClientID,
			Name: "drain " + cfg.Identity, ConnectTimeout: rs.ConnectTimeout.D(), Logger: logger,
		},
		Subject:     rs.Topic,
		DurableName: rs.DurableName,
		QueueGroup:  rs.QueueGroup,
		MaxInflight: rs.MaxInflight,
		AckWait:     rs.AckWait.D(),
	}, func(m *stream.Msg) {
		d.Handle(m.Data, m.Sequence, m.Ack)
	}, func(s stream.State) {
		d.StreamState(s.Connected, s.Err)
	})
	logger.Info("stopping")
	wg.Wait()

	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return errors.Join(err, mon.Shutdown(shutCtx))
}
