// Command drain consumes the scrapes scrape-once publishes, with a durable subscription,
// and delivers each target's metrics to its sinks, acknowledging a message only once its
// fate is final.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	flags "github.com/jessevdk/go-flags"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/lib/drain"
	"github.com/prometheus-streams/prometheus-streams/lib/envelope"
	"github.com/prometheus-streams/prometheus-streams/lib/expose"
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

	if es := cfg.EmbeddedStream; es != nil {
		storeDir := es.StoreDir
		if storeDir == "memory" {
			storeDir = ""
		}
		srv, err := stream.StartEmbedded(stream.EmbeddedOptions{
			Listen: es.Listen, ClusterID: es.ClusterID, StoreDir: storeDir,
			MaxAge: es.MaxAge.D(), MaxMsgs: es.MaxMsgs, MaxBytes: int64(es.MaxBytes), Logger: logger,
		})
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		logger.Info("embedded stream started", "listen", es.Listen, "cluster_id", es.ClusterID, "store_dir", es.StoreDir, "max_age", es.MaxAge)
	}

	var sinks []drain.Sink
	var servers []*monitor.Server
	defer func() {
		shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, s := range servers {
			if err := s.Shutdown(shutCtx); err != nil {
				logger.Warn("http shutdown", "err", err)
			}
		}
	}()
	if pg := cfg.PushGateway; pg != nil {
		client, err := pushgateway.New(pushgateway.Options{
			URL: pg.URL, HTTPClientConfig: pg.HTTPClientConfig, Timeout: pg.Timeout.D(), UserAgent: version.UserAgent(),
		})
		if err != nil {
			return err
		}
		sink := pushgateway.NewSink(client, pg.PublisherLabel, logger, reg)
		if err := sink.Load(ctx); err != nil {
			// Not fatal: the gateway may be down now and up later. Until a sweep lists
			// its groups, only this process's own pushes guard against older scrapes.
			logger.Warn("could not read the push gateway's groups at start", "err", err)
		}
		sinks = append(sinks, sink)
	}
	if e := cfg.Expose; e != nil {
		sink := expose.New(expose.Options{Timestamps: e.KeepTimestamps(), MaxAge: cfg.MaxAge.D()}, logger, reg)
		mux := http.NewServeMux()
		mux.Handle(e.Path, sink.Handler())
		srv, err := monitor.Listen(e.Listen, e.WebConfigFile, mux, logger)
		if err != nil {
			return fmt.Errorf("expose: %w", err)
		}
		servers = append(servers, srv)
		sinks = append(sinks, sink)
		logger.Info("serving the federated metrics", "address", srv.Addr(), "path", e.Path)
	}
	workers := config.DefaultPushWorkers
	if cfg.PushGateway != nil {
		workers = cfg.PushGateway.Workers
	}
	trust, err := drain.NewTrust(cfg.Trust)
	if err != nil {
		return fmt.Errorf("trust: %w", err)
	}
	if trust != nil {
		logger.Info("accepting signed messages only, from the trusted keys", "keys", trust.Keys())
	} else {
		logger.Info("no trust configured: unsigned messages and any key's are accepted; bad signatures are still rejected")
	}
	d := drain.New(drain.Options{MaxAge: cfg.MaxAge.D(), Workers: workers, Trust: trust}, codec, sinks, logger, reg)

	mon, err := monitor.Listen(cfg.Monitor.Listen, cfg.Monitor.WebConfigFile, monitor.Handler(reg, d.Ready), logger)
	if err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	servers = append(servers, mon)
	logger.Info("drain started", "version", version.Version, "monitor", mon.Addr(), "sinks", len(sinks))
	// systemd (Type=notify): ready once the listeners are bound; the status line says
	// whether the drain is subscribed. Without NOTIFY_SOCKET these do nothing.
	notify(logger, daemon.SdNotifyReady, "STATUS=connecting to the stream")
	defer notify(logger, daemon.SdNotifyStopping, "STATUS=stopping")

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
	sec := stream.Security{
		User: rs.User, PasswordFile: rs.PasswordFile, TokenFile: rs.TokenFile,
		NKeySeedFile: rs.NKeySeedFile, CredentialsFile: rs.CredentialsFile,
	}
	if t := rs.TLS; t != nil { // the top-level tls when the section sets none
		sec.CAFile, sec.CertFile, sec.KeyFile = t.CA, t.Cert, t.Key
		sec.ServerName, sec.InsecureSkipVerify = t.ServerName, t.InsecureSkipVerify
	}
	err = stream.Consume(ctx, stream.SubscribeOptions{
		STANOptions: stream.STANOptions{
			URLs: rs.URLs, ClusterID: rs.ClusterID, ClientID: rs.ClientID,
			Name: "drain " + cfg.Identity, ConnectTimeout: rs.ConnectTimeout.D(), Logger: logger,
			Security: sec,
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
		if s.Connected {
			notify(logger, "STATUS=subscribed to "+rs.Topic)
		} else if s.Err != nil {
			notify(logger, "STATUS=not subscribed: "+s.Err.Error())
		}
	})
	logger.Info("stopping")
	wg.Wait()
	return err
}

// notify tells systemd about the service's state.
func notify(logger *slog.Logger, states ...string) {
	if _, err := daemon.SdNotify(false, strings.Join(states, "\n")); err != nil {
		logger.Warn("systemd notify", "err", err)
	}
}
