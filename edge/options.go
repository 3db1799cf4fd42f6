package edge

import (
	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/edge/scrape"
)

// ScrapeJob is how the scraper scrapes the config's job j: the config section turned
// into the scrape package's options, once.
func ScrapeJob(j *config.Job) scrape.Job {
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

// ScrapeTarget is the config's target t as the scraper takes it.
func ScrapeTarget(t *config.Target) scrape.Target {
	return scrape.Target{Name: t.Name, URL: t.URL, Labels: t.Labels}
}
