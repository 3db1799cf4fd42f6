package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/lib/drain"
	"github.com/prometheus-streams/prometheus-streams/lib/logging"
)

// reloader applies a new config on SIGHUP: a bad one is refused and the running one kept.
// The log level and the trusted publishers change at once; a change to anything else
// (streams, sinks, listeners, max_age) is reported as taking effect at the next restart,
// so that what the drain holds (the expose sink's scrapes, in-flight deliveries) is kept.
type reloader struct {
	path    string
	current *config.Config
	level   *slog.LevelVar
	drain   *drain.Drain
	logger  *slog.Logger
	ok      prometheus.Gauge
	last    prometheus.Gauge
}

func newReloader(path string, cfg *config.Config, level *slog.LevelVar, d *drain.Drain, logger *slog.Logger, reg prometheus.Registerer) *reloader {
	r := &reloader{
		path: path, current: cfg, level: level, drain: d, logger: logger,
		ok: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "prometheus_streams", Subsystem: "drain",
			Name: "config_last_reload_successful", Help: "1 if the last configuration reload (SIGHUP) succeeded."}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "prometheus_streams", Subsystem: "drain",
			Name: "config_last_reload_success_timestamp_seconds", Help: "When the configuration was last loaded successfully."}),
	}
	reg.MustRegister(r.ok, r.last)
	r.ok.Set(1)
	r.last.SetToCurrentTime()
	return r
}

// run reloads on every SIGHUP until ctx ends.
func (r *reloader) run(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.reload()
		}
	}
}

func (r *reloader) reload() {
	cfg, err := config.Load(r.path)
	if err == nil {
		err = cfg.RequireCentral()
	}
	var trust *drain.Trust
	if err == nil {
		trust, err = drain.NewTrust(cfg.Trust)
	}
	if err != nil {
		r.ok.Set(0)
		r.logger.Error("config reload refused; the running config stays", "file", r.path, "err", err)
		return
	}
	for _, w := range cfg.Warnings {
		r.logger.Warn("config: " + w)
	}
	r.level.Set(logging.Level(cfg.Verbose, cfg.Debug))
	r.drain.SetTrust(trust)
	old := r.current
	for key, same := range map[string]bool{
		"receiver_stream": reflect.DeepEqual(old.ReceiverStreams, cfg.ReceiverStreams),
		"embedded_stream": reflect.DeepEqual(old.EmbeddedStream, cfg.EmbeddedStream),
		"push_gateway":    reflect.DeepEqual(old.PushGateway, cfg.PushGateway),
		"expose":          reflect.DeepEqual(old.Expose, cfg.Expose),
		"monitor":         reflect.DeepEqual(old.Monitor, cfg.Monitor),
		"max_age":         old.MaxAge == cfg.MaxAge,
		"logfile":         old.LogFile == cfg.LogFile,
	} {
		if !same {
			r.logger.Warn("config changed; takes effect at the next restart", "key", key)
		}
	}
	r.current = cfg
	r.ok.Set(1)
	r.last.Set(float64(time.Now().UnixNano()) / 1e9)
	r.logger.Info("config reloaded", "file", r.path, "trusted_keys", len(cfg.Trust))
}
