package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/drain"
	"github.com/prometheus-streams/prometheus-streams/internal/logging"
)

// reloader applies a new config on SIGHUP: a bad one is refused and the running one kept.
// The log level and the trusted publishers change at once; a change to anything else
// the drain reads (streams, sinks, remote_write, listeners, max_age) is reported as
// taking effect at the next restart, at every reload until then, so that what the drain
// holds (the expose sink's scrapes, in-flight deliveries) is kept.
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

// appliedAtOnce are the keys a reload applies; edgeOnly those the drain does not read.
// Every other key of the config takes effect at the next restart.
var (
	appliedAtOnce = map[string]bool{"verbose": true, "debug": true, "trust": true}
	edgeOnly      = map[string]bool{
		"poller_stream": true, "jobs": true, "scrape_interval": true, "scrape_timeout": true,
		"run_timeout": true, "scrape_concurrency": true, "signing": true, "site": true,
	}
)

// changed lists the top-level keys of the config whose values differ between a and b,
// read from the config's own fields, so that no key can be forgotten.
func changed(a, b *config.Config) []string {
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	var keys []string
	for i := range va.NumField() {
		f := va.Type().Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "" || key == "-" || !f.IsExported() {
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			keys = append(keys, key)
		}
	}
	return keys
}

func (r *reloader) reload() {
	cfg, err := config.Load(r.path)
	if err == nil {
		err = cfg.RequireCentral()
	}
	var trust *drain.Trust
	if err == nil {
		trust, err = drain.NewTrust(trustedKeys(cfg.Trust))
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
	for _, key := range changed(r.current, cfg) {
		switch {
		case appliedAtOnce[key]:
		case edgeOnly[key]:
			r.logger.Debug("config changed; not used by the drain", "key", key)
		default:
			r.logger.Warn("config changed; takes effect at the next restart", "key", key)
		}
	}
	// What runs is the config the drain started with, plus what a reload applies: a
	// change that waits for a restart is reported again at the next reload.
	running := *r.current
	running.Verbose, running.Debug, running.Trust = cfg.Verbose, cfg.Debug, cfg.Trust
	r.current = &running
	r.ok.Set(1)
	r.last.Set(float64(time.Now().UnixNano()) / 1e9)
	r.logger.Info("config reloaded", "file", r.path, "trusted_keys", len(cfg.Trust))
}
