package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nkeys"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/edge"
	"github.com/prometheus-streams/prometheus-streams/edge/scrape"
	"github.com/prometheus-streams/prometheus-streams/stream"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// edgeOptions are the config's run as the edge takes it: its jobs in name order, each
// mapped onto the scraper's options once.
func edgeOptions(cfg *config.Config) edge.Options {
	o := edge.Options{
		Identity:          cfg.Identity,
		Site:              cfg.Site,
		RunTimeout:        cfg.RunTimeout.D(),
		ScrapeConcurrency: cfg.ScrapeConcurrency,
	}
	for _, name := range cfg.JobNames() {
		j := cfg.Jobs[name]
		job := &edge.Job{Job: scrapeJob(j), HonorLabels: j.HonorLabels}
		for _, t := range j.Targets {
			job.Targets = append(job.Targets, scrapeTarget(t))
		}
		o.Jobs = append(o.Jobs, job)
	}
	return o
}

// scrapeJob is how the scraper scrapes the config's job j.
func scrapeJob(j *config.Job) scrape.Job {
	return scrape.Job{
		Name:          j.Name,
		HTTPClient:    j.HTTPClientConfig,
		Accept:        config.AcceptHeader(j.ScrapeProtocols),
		Timeout:       j.ScrapeTimeout.D(),
		BodySizeLimit: int64(j.BodySizeLimit),
		Compression:   j.Compression(),
		SampleLimit:   j.SampleLimit,
		LabelLimit:    j.LabelLimit,
		Histograms: scrape.Histograms{
			Native: j.NativeHistograms(), AlwaysClassic: j.AlwaysClassic(), ConvertToNHCB: j.ConvertToNHCB(),
		},
		Labels:               j.Labels,
		MetricRelabelConfigs: j.MetricRelabelConfigs,
	}
}

// scrapeTarget is the config's target t as the scraper takes it.
func scrapeTarget(t *config.Target) scrape.Target {
	return scrape.Target{Name: t.Name, URL: t.URL, Labels: t.Labels}
}

// dialer connects a run of o to poller_stream. A dry run, which needs none, never
// calls it.
func dialer(cfg *config.Config, o edge.Options, logger *slog.Logger) edge.Dialer {
	if cfg.PollerStream == nil {
		return func(context.Context) (stream.Publisher, error) {
			return nil, errors.New("no poller_stream configured")
		}
	}
	return edge.Dial(streamOptions(cfg, logger), o)
}

// streamOptions are the stream options of poller_stream.
func streamOptions(cfg *config.Config, logger *slog.Logger) stream.Options {
	return cfg.StreamOptions(cfg.PollerStream, "scrape-once "+cfg.Identity, logger)
}

// codecOptions are the envelope codec's options: poller_stream's body_compression,
// and the signer, if any.
func codecOptions(ps *config.Stream, signer nkeys.KeyPair) ([]envelope.Option, error) {
	comp, err := bodyCompression(ps)
	if err != nil {
		return nil, err
	}
	opts := []envelope.Option{envelope.BodyCompression(comp)}
	if signer != nil {
		opts = append(opts, envelope.WithSigner(signer))
	}
	return opts, nil
}

// bodyCompression is the compression poller_stream's body_compression asks for.
func bodyCompression(ps *config.Stream) (envelope.Compression, error) {
	if ps == nil {
		return envelope.CompressionZstd, nil
	}
	switch c := ps.BodyCompression; c {
	case "", config.BodyCompressionZstd:
		return envelope.CompressionZstd, nil
	case config.BodyCompressionZstdDictionary:
		return envelope.CompressionZstdDict, nil
	default:
		return 0, fmt.Errorf("poller_stream.body_compression: unknown %q", c)
	}
}
