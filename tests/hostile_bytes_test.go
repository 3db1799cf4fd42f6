package tests

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/promtest"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

// TestHostileBytesIsolated: a message whose HELP text holds a byte that is not UTF-8, and
// one whose instance does, reach the drain beside a good target's. A real Prometheus 3
// scraping the drain's expose endpoint keeps scraping it (up 1) and sees the good
// target; the bad messages are refused where they enter, each counted with its reason.
func TestHostileBytesIsolated(t *testing.T) {
	natsAddr, exposeAddr, mon := freeAddr(t), freeAddr(t), freeAddr(t)
	d := startDrain(t, writeConfig(t, centralConfig(natsAddr, exposeAddr, mon, "")), mon)
	prom := promtest.Start(t, promtest.Options{Binary: promtest.Prometheus3, ScrapeInterval: 500 * time.Millisecond,
		ScrapeConfigs: fmt.Sprintf("- job_name: drain\n  honor_labels: true\n  static_configs: [{targets: [%q]}]\n", exposeAddr)})

	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	now := time.Now()
	badInstance, err := codec.Encode(&envelope.Envelope{Publisher: "test", Job: "j", Instance: "bad\xffinstance", Start: now,
		ContentType: "text/plain; version=0.0.4", Body: []byte("m 1\n"), Series: 1})
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	publishTo(t, embeddedServer(natsAddr),
		encode(t, "j", "good", now, "# HELP m fine\n# TYPE m gauge\nm 1\n"),
		encode(t, "j", "badhelp", now, "# HELP m bad \xff byte\n# TYPE m gauge\nm 2\n"),
		badInstance,
	)
	waitFor(t, 10*time.Second, "both bad messages refused", func() bool {
		return d.metric("prometheus_streams_drain_messages_rejected_total", "reason", "invalid_body") == 1 &&
			d.metric("prometheus_streams_drain_messages_rejected_total", "reason", "invalid_utf8") == 1
	})
	prom.WaitFor(t, `m{job="j", instance="good"}`, func(v model.Vector) bool { return len(v) == 1 })
	v := prom.WaitFor(t, `up{job="drain"}`, func(v model.Vector) bool { return len(v) == 1 })
	if v[0].Value != 1 {
		t.Errorf("Prometheus's scrape of the expose endpoint: up = %v", v[0].Value)
	}
	waitFor(t, 10*time.Second, "both refusals logged", func() bool {
		l := d.logs()
		return strings.Contains(l, "reason=invalid_utf8") && strings.Contains(l, "field=instance") &&
			strings.Contains(l, "instance=badhelp") && strings.Contains(l, "reason=invalid_body")
	})
}
