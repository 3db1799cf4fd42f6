package edge

import (
	"reflect"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/edge/scrape"
)

// TestAcceptHeader: the Accept header of a job's scrapes, for each list of scrape
// protocols, is the one
// Prometheus v0.316.0 sends for it with UTF-8 names allowed (scrape.acceptHeader with
// model.UTF8Validation's escaping, allow-utf-8), strings taken from Prometheus's own.
func TestAcceptHeader(t *testing.T) {
	for _, c := range []struct {
		sps  []config.ScrapeProtocol
		want string
	}{
		{config.DefaultScrapeProtocols,
			"application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.7,application/openmetrics-text;version=0.0.1;q=0.6," +
				"text/plain;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.3"},
		{config.DefaultProtoFirstScrapeProtocols,
			"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7," +
				"application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5," +
				"text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"},
		{[]config.ScrapeProtocol{config.PrometheusText0_0_4}, "text/plain;version=0.0.4;q=0.7,*/*;q=0.6"},
		{[]config.ScrapeProtocol{config.PrometheusText1_0_0, config.PrometheusProto},
			"text/plain;version=1.0.0;escaping=allow-utf-8;q=0.7,application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,*/*;q=0.5"},
	} {
		j := &config.Job{Name: "j", Histograms: config.Histograms{ScrapeProtocols: c.sps}}
		if got := ScrapeJob(j).Accept; got != c.want {
			t.Errorf("%v:\n got %s\nwant %s", c.sps, got, c.want)
		}
	}
}

// TestScrapeJobSetsEveryField: a job whose every key is set, each to a value of its
// own, reaches the scraper whole: each field of scrape.Job holds its key's value.
func TestScrapeJobSetsEveryField(t *testing.T) {
	c, err := config.Parse([]byte(`jobs:
  node:
    scrape_timeout: 3s
    sample_limit: 10
    label_limit: 5
    body_size_limit: 1MiB
    enable_compression: false
    labels: {site: a}
    scrape_protocols: [PrometheusText0.0.4]
    scrape_native_histograms: false
    always_scrape_classic_histograms: true
    convert_classic_histograms_to_nhcb: true
    metric_relabel_configs: [{source_labels: [__name__], regex: 'go_.*', action: drop}]
    basic_auth: {username: u, password: p}
    targets: [{url: 'http://127.0.0.1:9100/metrics', labels: {rack: r1}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	j := c.Jobs["node"]
	got := ScrapeJob(j)
	want := scrape.Job{
		Name: "node", HTTPClient: j.HTTPClientConfig, Accept: "text/plain;version=0.0.4;q=0.7,*/*;q=0.6",
		Timeout: 3 * time.Second, BodySizeLimit: 1 << 20, Compression: false, SampleLimit: 10, LabelLimit: 5,
		Histograms: scrape.Histograms{Native: false, AlwaysClassic: true, ConvertToNHCB: true},
		Labels:     map[string]string{"site": "a"}, MetricRelabelConfigs: j.MetricRelabelConfigs,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ScrapeJob:\n got %+v\nwant %+v", got, want)
	}
	if got.HTTPClient.BasicAuth == nil || got.HTTPClient.BasicAuth.Username != "u" || len(got.MetricRelabelConfigs) != 1 {
		t.Errorf("HTTP client or relabel rules not carried: %+v", got)
	}
	// Every field is checked above: a field added to scrape.Job fails this until the
	// test (and the mapping) know it.
	if n := reflect.TypeOf(want).NumField(); n != 11 {
		t.Errorf("scrape.Job has %d fields; this test checks 11", n)
	}
	j.EnableCompression = nil
	if !ScrapeJob(j).Compression {
		t.Error("enable_compression unset does not ask for gzip")
	}
	if tg := ScrapeTarget(j.Targets[0]); tg.Name != "127.0.0.1:9100" || tg.URL != j.Targets[0].URL || tg.Labels["rack"] != "r1" {
		t.Errorf("target %+v", tg)
	}
}
