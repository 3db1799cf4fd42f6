package exposition

import (
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// Names of the scrape-health families. They stay clear of Prometheus's own `up` and
// `scrape_*` series, which a Prometheus scraping a sink adds itself.
const (
	HealthUp        = "streams_scrape_up"
	HealthDuration  = "streams_scrape_duration_seconds"
	HealthSamples   = "streams_scrape_samples"
	HealthTimestamp = "streams_scrape_timestamp_seconds"
)

// IsHealthName reports whether name is that of a scrape-health family, so that a sink
// merging a target's families with its health can refuse or rename a clash.
func IsHealthName(name string) bool {
	switch name {
	case HealthUp, HealthDuration, HealthSamples, HealthTimestamp:
		return true
	}
	return false
}

// Outcome is what the edge reported about one scrape.
type Outcome struct {
	Up       bool          // the scrape succeeded
	Start    time.Time     // when the scrape started
	Duration time.Duration // how long it took
	Samples  int           // samples in the exposition, as the edge counted them
}

// Health returns the scrape-health families every sink shows for a target, sorted by
// name, each with one gauge labelled with job, instance and the static labels (sorted,
// empty values left out, as Attach adds them). All four are always there, so a sink
// may rely on any of them (the Push Gateway sink recognises its groups by
// HealthTimestamp); a zero Start is reported as 0.
func Health(t Target, o Outcome) []*dto.MetricFamily {
	ls := slices.Clip(t.pairs()) // shared by the four metrics: an append to one must not reach the others
	gauge := func(name, help string, v float64) *dto.MetricFamily {
		return &dto.MetricFamily{
			Name:   proto.String(name),
			Help:   proto.String(help),
			Type:   dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{Label: ls, Gauge: &dto.Gauge{Value: proto.Float64(v)}}},
		}
	}
	up := 0.0
	if o.Up {
		up = 1
	}
	return []*dto.MetricFamily{
		gauge(HealthDuration, "Duration of the edge's last scrape of the target, in seconds.", o.Duration.Seconds()),
		gauge(HealthSamples, "Samples in the target's exposition at the edge's last scrape, as the edge counted them.", float64(o.Samples)),
		gauge(HealthTimestamp, "Unix time in seconds at which the edge started its last scrape of the target.", unixSeconds(o.Start)),
		gauge(HealthUp, "1 if the edge's last scrape of the target succeeded, 0 if it failed.", up),
	}
}

// unixSeconds returns t as Unix seconds with fractions, 0 for the zero time. It rounds
// as float64(t.UnixNano())/1e9 does, the expression client_golang's
// Gauge.SetToCurrentTime uses, so that a sink or test computing it the usual way finds
// the very same float; outside the years UnixNano can represent it adds the parts.
func unixSeconds(t time.Time) float64 {
	switch y := t.Year(); {
	case t.IsZero():
		return 0
	case y > 1678 && y < 2262:
		return float64(t.UnixNano()) / 1e9
	default:
		return float64(t.Unix()) + float64(t.Nanosecond())/1e9
	}
}
