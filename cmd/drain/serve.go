package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	remote "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/drain"
	"github.com/prometheus-streams/prometheus-streams/drain/targets"
	"github.com/prometheus-streams/prometheus-streams/internal/httpserver"
	"github.com/prometheus-streams/prometheus-streams/internal/version"
	"github.com/prometheus-streams/prometheus-streams/sink"
	"github.com/prometheus-streams/prometheus-streams/sink/endpoint"
	"github.com/prometheus-streams/prometheus-streams/sink/pushgateway"
	"github.com/prometheus-streams/prometheus-streams/sink/remotewrite"
	"github.com/prometheus-streams/prometheus-streams/stream"
	"github.com/prometheus-streams/prometheus-streams/stream/embedded"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// serve runs the drain until ctx ends; SIGHUP reloads path.
func serve(ctx context.Context, path string, cfg *config.Config, level *slog.LevelVar, logger *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		version.NewCollector("prometheus_streams"))
	codec, err := envelope.NewCodec()
	if err != nil {
		return err
	}
	defer codec.Close()

	var local *embedded.Server
	if es := cfg.EmbeddedStream; es != nil {
		storeDir := es.StoreDir
		if storeDir == "memory" {
			storeDir = ""
		}
		jsDir := ""
		if storeDir != "" {
			jsDir = filepath.Join(storeDir, "jetstream")
		}
		srv, err := embedded.Start(embedded.Options{
			Listen: es.Listen, ClusterID: es.ClusterID, StoreDir: storeDir,
			MaxAge: es.MaxAge.D(), MaxMsgs: es.MaxMsgs, MaxBytes: int64(es.MaxBytes),
			JetStream: es.ServesJetStream(), JetStreamDir: jsDir, Logger: logger,
		})
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		local = srv
		logger.Info("embedded stream started", "listen", es.Listen, "cluster_id", es.ClusterID, "store_dir", es.StoreDir, "max_age", es.MaxAge, "jetstream", es.ServesJetStream())
	}

	var sinks []sink.Sink
	var servers []*httpserver.Server
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
		client, err := pushgateway.New(pushGatewayOptions(pg))
		if err != nil {
			return err
		}
		// The identity outlives restarts: a restarted drain takes back the families it
		// claimed. Host and monitor address tell apart the drains that run at once.
		host, _ := os.Hostname()
		sink := pushgateway.NewSink(client, pg.PublisherLabel, logger, reg, pushgateway.WithIdentity(host+"@"+cfg.Monitor.Listen))
		if err := sink.Load(ctx); err != nil {
			// Not fatal: the gateway may be down now and up later. Until a sweep lists
			// its groups, only this process's own pushes guard against older scrapes.
			logger.Warn("could not read the push gateway's groups at start", "err", err)
		}
		sinks = append(sinks, sink)
	}
	if e := cfg.Expose; e != nil {
		sink := endpoint.New(endpoint.Options{Timestamps: e.KeepTimestamps(), MaxAge: cfg.MaxAge.D()}, logger, reg)
		mux := http.NewServeMux()
		mux.Handle(e.Path, sink.Handler())
		srv, err := httpserver.Listen(e.Listen, e.WebConfigFile, mux, logger)
		if err != nil {
			return fmt.Errorf("expose: %w", err)
		}
		servers = append(servers, srv)
		sinks = append(sinks, sink)
		logger.Info("serving the federated metrics", "address", srv.Addr(), "path", e.Path)
	}
	for _, rw := range cfg.RemoteWrite {
		q := rw.QueueConfig
		sink, err := remotewrite.New(remotewrite.Options{
			Name: rw.Name, URL: rw.URL, Message: remote.WriteMessageType(rw.ProtobufMessage),
			HTTPClientConfig: rw.HTTPClientConfig, Headers: rw.Headers, Timeout: rw.RemoteTimeout.D(),
			MaxSamplesPerSend: q.MaxSamplesPerSend, BatchSendDeadline: q.BatchSendDeadline.D(), MaxShards: q.MaxShards,
			MinBackoff: q.MinBackoff.D(), MaxBackoff: q.MaxBackoff.D(), RetryOnRateLimit: *q.RetryOnRateLimit,
			SampleAgeLimit: q.SampleAgeLimit.D(), Writers: drainWorkers(cfg),
			Metadata: remotewrite.Metadata{
				Off: !*rw.MetadataConfig.Send, Interval: rw.MetadataConfig.SendInterval.D(),
				MaxPerSend: rw.MetadataConfig.MaxSamplesPerSend,
			},
		}, logger, reg)
		if err != nil {
			return err
		}
		defer sink.Close()
		sinks = append(sinks, sink)
		logger.Info("writing to a remote-write receiver", "remote", rw.Name, "protobuf_message", rw.ProtobufMessage)
	}
	workers := drainWorkers(cfg)
	trust, err := drain.NewTrust(trustedKeys(cfg.Trust))
	if err != nil {
		return fmt.Errorf("trust: %w", err)
	}
	if trust != nil {
		logger.Info("accepting signed messages only, from the trusted keys", "keys", trust.Keys())
	} else {
		logger.Info("no trust configured: unsigned messages and any key's are accepted; bad signatures are still rejected")
	}
	for _, rs := range cfg.ReceiverStreams {
		if rs.QueueGroup != "" {
			// (With remote_write the config refuses it.)
			logger.Warn("queue_group with the push gateway or expose sink: drains of the group may deliver two scrapes of a target out of order, or expose a target on several drains; use shards instead (see the README's Several drains)", "stream", rs.Describe())
		}
	}
	rs := cfg.ReceiverStreams[0] // shards are the same in every receiver stream
	if rs.Shards > 1 {
		logger.Info("taking one shard of the targets", "shard", rs.Shard, "shards", rs.Shards)
	}
	d := drain.New(drain.Options{
		MaxAge: cfg.MaxAge.D(), MaxClockSkew: cfg.MaxClockSkew.D(), Workers: workers, Trust: trust,
		MaxInflight: maxInflight(cfg),
		Streams:     len(cfg.ReceiverStreams), Shards: rs.Shards, Shard: rs.Shard,
	}, codec, sinks, logger, reg)

	monHandler := httpserver.MonitorHandler(reg, d.Ready, httpserver.Page{
		Path: "/targets", About: "every target's last scrape and its fate in each sink", Handler: targets.Handler(d.Targets),
	})
	mon, err := httpserver.Listen(cfg.Monitor.Listen, cfg.Monitor.WebConfigFile, monHandler, logger)
	if err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	servers = append(servers, mon)
	logger.Info("drain started", "version", version.Version, "monitor", mon.Addr(), "sinks", len(sinks))
	go newReloader(path, cfg, level, d, logger, reg).run(ctx)
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

	// Restored while the consumers subscribe (both may have a silent server to get past
	// first): the drain is ready once both are done. A scrape the consumers deliver
	// meanwhile is newer than or the same as what is restored, which never replaces it.
	r := d.NewRestore()
	wg.Add(1)
	go func() {
		defer wg.Done()
		restore(ctx, cfg, local, r, logger)
	}()

	// One consumer per receiver stream (receiver_stream may be a list: a STAN channel
	// and a JetStream stream while the edges move), all feeding the one drain.
	var cwg sync.WaitGroup
	errs := make([]error, len(cfg.ReceiverStreams))
	for i, rs := range cfg.ReceiverStreams {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			errs[i] = consume(ctx, cfg, rs, d, logger)
		}()
	}
	cwg.Wait()
	err = errors.Join(errs...)
	logger.Info("stopping")
	wg.Wait()
	return err
}

// consume feeds the drain from one receiver stream until ctx ends.
func consume(ctx context.Context, cfg *config.Config, rs *config.Stream, d *drain.Drain, logger *slog.Logger) error {
	t, err := transport(cfg, rs, nil, logger)
	if err != nil {
		return err
	}
	name := t.Name()
	// Where the transport can terminate poison and redeliver after a delay (JetStream),
	// the message carries Term and Nak: the drain then backs off a failing delivery
	// through the server instead of holding it.
	handle := func(m *stream.Msg) {
		d.HandleMessage(drain.Message{Data: m.Data, Stream: name, Subject: m.Subject, Want: t.Subject,
			Handle: drain.Handle{Seq: m.Sequence, Ack: m.Ack, Term: m.Term, Nak: m.Nak}})
	}
	state := func(s stream.State) {
		if ctx.Err() != nil {
			return // stopping: the consumers' ends are no fault to report
		}
		d.StreamState(name, s.Connected, s.Err)
		notify(logger, "STATUS="+d.Status()) // every stream's, not the last one's to report
	}
	return t.Consume(ctx, stream.ConsumeOptions{
		Durable:     rs.Durable(),
		QueueGroup:  rs.QueueGroup,
		MaxInflight: rs.MaxInflight,
		AckWait:     rs.AckWait.D(),
		// What a previous drain left unacknowledged comes again after AckWait: the
		// history sinks wait for it, so that a target's scrapes stay in order.
		Unacknowledged: func(upTo uint64, n int) {
			d.HoldHistory(name, upTo, n, rs.AckWait.D()+5*time.Second)
		},
	}, handle, state)
}

// restoreTimeout bounds the reading of the streams at start: a stream that cannot be
// read must not keep the drain from consuming.
const restoreTimeout = 30 * time.Second

// restore reads each receiver stream again for every target's newest scrape younger
// than max_age, for /targets and the expose endpoint, before the drain consumes. The
// streams are read at once, side by side; a channel of the embedded server says where
// it ends, so that its replay need not wait for it to go quiet.
func restore(ctx context.Context, cfg *config.Config, local *embedded.Server, r *drain.Restore, logger *slog.Logger) {
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, restoreTimeout)
	defer cancel()
	since := start.Add(-cfg.MaxAge.D())
	var wg sync.WaitGroup
	for _, rs := range cfg.ReceiverStreams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t, err := transport(cfg, rs, local, logger)
			if err == nil {
				err = t.Replay(rctx, since, r.Add)
			}
			if err != nil {
				logger.Warn("could not read the stream again at start: /targets and the expose endpoint fill as scrapes arrive", "stream", rs.Describe(), "err", err)
			}
			logger.Debug("read the stream again", "stream", rs.Describe(), "took", time.Since(start).Round(time.Millisecond))
		}()
	}
	wg.Wait()
	targets, read := r.Apply(ctx)
	logger.Info("restored each target's newest scrape from the stream", "targets", targets, "messages_read", read, "took", time.Since(start).Round(time.Millisecond))
}

// transport is the drain's view of receiver stream rs. A NATS Streaming channel of
// the embedded server, when there is one, says where it ends.
func transport(cfg *config.Config, rs *config.Stream, local *embedded.Server, logger *slog.Logger) (stream.Transport, error) {
	o := cfg.StreamOptions(rs, "drain "+cfg.Identity, logger)
	if local != nil && cfg.AtEmbedded(rs) {
		o.LastSeq = local.LastSeq
	}
	return stream.Open(o)
}

// maxInflight is the most messages a receiver stream hands the drain unacknowledged:
// the smallest max_inflight of the receiver streams.
func maxInflight(cfg *config.Config) int {
	n := 0
	for i, rs := range cfg.ReceiverStreams {
		if i == 0 || rs.MaxInflight < n {
			n = rs.MaxInflight
		}
	}
	return n
}

// drainWorkers is how many targets the drain delivers at once: the gateway's workers,
// and enough for every remote-write sender to find a few scrapes to share a request.
func drainWorkers(cfg *config.Config) int {
	workers := config.DefaultPushWorkers
	if cfg.PushGateway != nil {
		workers = cfg.PushGateway.Workers
	}
	rw := 0
	for _, r := range cfg.RemoteWrite {
		rw += 4 * r.QueueConfig.MaxShards
	}
	return max(workers, rw)
}

// notify tells systemd about the service's state.
func notify(logger *slog.Logger, states ...string) {
	if _, err := daemon.SdNotify(false, strings.Join(states, "\n")); err != nil {
		logger.Warn("systemd notify", "err", err)
	}
}
