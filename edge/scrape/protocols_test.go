package scrape

import (
	"testing"

	"github.com/prometheus-streams/prometheus-streams/config"
)

// TestAcceptHeader: the Accept header of each list of scrape protocols is the one
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
		if got := AcceptHeader(c.sps); got != c.want {
			t.Errorf("%v:\n got %s\nwant %s", c.sps, got, c.want)
		}
	}
}
