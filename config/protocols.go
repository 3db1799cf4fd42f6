package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
)

// ScrapeProtocol is a format a scrape asks a target for, by Prometheus's name for it.
type ScrapeProtocol string

// The scrape protocols, with Prometheus's names and media types (its config package's
// ScrapeProtocolsHeaders, v0.316.0), which is not imported for them: it would bring
// every remote-write client of Prometheus's into scrape-once.
const (
	PrometheusProto      ScrapeProtocol = "PrometheusProto"
	PrometheusText0_0_4  ScrapeProtocol = "PrometheusText0.0.4"
	PrometheusText1_0_0  ScrapeProtocol = "PrometheusText1.0.0"
	OpenMetricsText0_0_1 ScrapeProtocol = "OpenMetricsText0.0.1"
	OpenMetricsText1_0_0 ScrapeProtocol = "OpenMetricsText1.0.0"
	OpenMetricsText2_0_0 ScrapeProtocol = "OpenMetricsText2.0.0"
)

// ScrapeProtocolsHeaders are the protocols' media types, as Prometheus's.
var ScrapeProtocolsHeaders = map[ScrapeProtocol]string{
	PrometheusProto:      "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
	PrometheusText0_0_4:  "text/plain;version=0.0.4",
	PrometheusText1_0_0:  "text/plain;version=1.0.0",
	OpenMetricsText0_0_1: "application/openmetrics-text;version=0.0.1",
	OpenMetricsText1_0_0: "application/openmetrics-text;version=1.0.0",
	OpenMetricsText2_0_0: "application/openmetrics-text;version=2.0.0",
}

// AcceptHeader is the Accept header of a scrape asking for the formats sps in that
// order, built as Prometheus builds it (scrape.acceptHeader): a weight per format,
// descending from the number of formats Prometheus names, the escaping scheme on the
// newer text formats, and */* last. Names are asked for as they are
// (escaping=allow-utf-8), as Prometheus 3 asks: the drain reads UTF-8 names.
func AcceptHeader(sps []ScrapeProtocol) string {
	vals := make([]string, 0, len(sps)+1)
	weight := len(ScrapeProtocolsHeaders) + 1
	for _, sp := range sps {
		val := ScrapeProtocolsHeaders[sp]
		if sp == PrometheusText1_0_0 || sp == OpenMetricsText1_0_0 || sp == OpenMetricsText2_0_0 {
			val += ";" + model.EscapingKey + "=" + model.AllowUTF8
		}
		val += fmt.Sprintf(";q=0.%d", weight)
		vals = append(vals, val)
		weight--
	}
	vals = append(vals, fmt.Sprintf("*/*;q=0.%d", weight))
	return strings.Join(vals, ",")
}

// Prometheus 3's default scrape protocols: without native histograms, and with.
var (
	DefaultScrapeProtocols           = []ScrapeProtocol{OpenMetricsText1_0_0, OpenMetricsText0_0_1, PrometheusText1_0_0, PrometheusText0_0_4}
	DefaultProtoFirstScrapeProtocols = []ScrapeProtocol{PrometheusProto, OpenMetricsText1_0_0, OpenMetricsText0_0_1, PrometheusText1_0_0, PrometheusText0_0_4}
)

// Histograms are the keys of Prometheus's scrape config that say what a scrape takes
// of a target's histograms, with Prometheus's meaning; set at the top level for every
// job, and per job. Prometheus applies them as it ingests a scrape; here the body
// travels as the target sent it, the envelope carries them, and the drain applies them
// where it ingests (remote_write).
type Histograms struct {
	// ScrapeProtocols is the order of formats asked of a target (the Accept header),
	// by Prometheus's names: PrometheusProto, OpenMetricsText1.0.0,
	// OpenMetricsText0.0.1, PrometheusText1.0.0, PrometheusText0.0.4. The default is
	// Prometheus 3's: its DefaultScrapeProtocols, or PrometheusProto first when
	// scrape_native_histograms is on.
	ScrapeProtocols []ScrapeProtocol `yaml:"scrape_protocols,omitempty"`
	// ScrapeNativeHistograms takes a target's native histograms (off by default, as in
	// Prometheus 3); without it, their classic buckets are taken.
	ScrapeNativeHistograms *bool `yaml:"scrape_native_histograms,omitempty"`
	// AlwaysScrapeClassicHistograms keeps a histogram's classic buckets too when it
	// also has native ones (or when it is converted to custom buckets).
	AlwaysScrapeClassicHistograms *bool `yaml:"always_scrape_classic_histograms,omitempty"`
	// ConvertClassicHistogramsToNHCB writes classic histograms as native histograms
	// with custom buckets.
	ConvertClassicHistogramsToNHCB *bool `yaml:"convert_classic_histograms_to_nhcb,omitempty"`
}

// NativeHistograms reports scrape_native_histograms as resolved.
func (h *Histograms) NativeHistograms() bool {
	return h.ScrapeNativeHistograms != nil && *h.ScrapeNativeHistograms
}

// AlwaysClassic reports always_scrape_classic_histograms as resolved.
func (h *Histograms) AlwaysClassic() bool {
	return h.AlwaysScrapeClassicHistograms != nil && *h.AlwaysScrapeClassicHistograms
}

// ConvertToNHCB reports convert_classic_histograms_to_nhcb as resolved.
func (h *Histograms) ConvertToNHCB() bool {
	return h.ConvertClassicHistogramsToNHCB != nil && *h.ConvertClassicHistogramsToNHCB
}

// inherit fills what h leaves unset from the top level g, then the protocols from
// Prometheus's defaults, as Prometheus resolves a scrape config against its global one.
func (h *Histograms) inherit(g *Histograms) {
	if h.ScrapeNativeHistograms == nil {
		h.ScrapeNativeHistograms = g.ScrapeNativeHistograms
	}
	if h.AlwaysScrapeClassicHistograms == nil {
		h.AlwaysScrapeClassicHistograms = g.AlwaysScrapeClassicHistograms
	}
	if h.ConvertClassicHistogramsToNHCB == nil {
		h.ConvertClassicHistogramsToNHCB = g.ConvertClassicHistogramsToNHCB
	}
	if h.ScrapeProtocols == nil {
		switch {
		case g.ScrapeProtocols != nil:
			h.ScrapeProtocols = g.ScrapeProtocols
		case h.NativeHistograms():
			h.ScrapeProtocols = slices.Clone(DefaultProtoFirstScrapeProtocols)
		default:
			h.ScrapeProtocols = slices.Clone(DefaultScrapeProtocols)
		}
	}
}

// validProtocols checks a scrape_protocols list as Prometheus does (not empty, no
// name twice, every name known), and refuses the one format Prometheus knows that the
// drain does not read.
func validProtocols(ps *problems, key string, sps []ScrapeProtocol) {
	if sps == nil {
		return
	}
	if len(sps) == 0 {
		ps.add(key, "must not be empty")
		return
	}
	seen := map[ScrapeProtocol]bool{}
	for _, sp := range sps {
		if _, ok := ScrapeProtocolsHeaders[sp]; !ok {
			known := make([]string, 0, len(ScrapeProtocolsHeaders))
			for k := range ScrapeProtocolsHeaders {
				known = append(known, string(k))
			}
			slices.Sort(known)
			ps.add(key, "unknown scrape protocol %q, supported: %s", sp, strings.Join(known, ", "))
			continue
		}
		if sp == OpenMetricsText2_0_0 {
			ps.add(key, "%s is not read by this build (Prometheus itself reads it only behind a feature flag); use %s", sp, OpenMetricsText1_0_0)
		}
		if seen[sp] {
			ps.add(key, "%s twice", sp)
		}
		seen[sp] = true
	}
}

// String is the resolved settings, for logs and --check-config.
func (h *Histograms) String() string {
	return fmt.Sprintf("scrape_protocols %v, scrape_native_histograms %t, always_scrape_classic_histograms %t, convert_classic_histograms_to_nhcb %t",
		h.ScrapeProtocols, h.NativeHistograms(), h.AlwaysClassic(), h.ConvertToNHCB())
}

// sameProtocols reports whether a and b are the same list (a job's inherited from the
// top level), not merely equal.
func sameProtocols(a, b []ScrapeProtocol) bool {
	return len(a) > 0 && len(b) > 0 && &a[0] == &b[0]
}
