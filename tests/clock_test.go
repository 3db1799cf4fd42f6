package tests

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestClockAhead: a publisher whose clock is an hour ahead publishes a target's scrape
// (its envelope stamped as such a host stamps it); the drain refuses it, logs the
// publisher and the offset, shows it on /targets and counts it, and the genuine scrapes
// of the target that follow are served, not hidden behind it.
func TestClockAhead(t *testing.T) {
	natsAddr, exposeAddr, mon := freeAddr(t), freeAddr(t), freeAddr(t)
	d := startDrain(t, writeConfig(t, centralConfig(natsAddr, exposeAddr, mon, "")), mon)
	nats := embeddedServer(natsAddr)
	publishTo(t, nats, encode(t, "j", "a", time.Now().Add(time.Hour), "m 99\n"))
	waitFor(t, 10*time.Second, "the scrape from the future refused", func() bool {
		return d.metric("prometheus_streams_drain_messages_rejected_total", "reason", "clock_ahead") == 1
	})
	var page struct {
		Targets []struct {
			Instance, State string
			Sinks           []struct{ Fate, Error string }
		}
	}
	_, b := fetch(t, "http://"+mon+"/targets?format=json", "")
	if err := json.Unmarshal(b, &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Targets) != 1 || page.Targets[0].State != "rejected" || !strings.Contains(page.Targets[0].Sinks[0].Error, "ahead of the drain's clock") {
		t.Errorf("/targets: %s", b)
	}
	mustContain(t, "drain log", d.logs(), "scrape stamped in the future", "publisher=test", "ahead=59m5")

	for i, v := range []string{"m 1\n", "m 2\n"} {
		publishTo(t, nats, encode(t, "j", "a", time.Now().Add(-time.Duration(2-i)*time.Second), v))
	}
	waitFor(t, 10*time.Second, "the genuine scrapes served", func() bool {
		_, b := fetch(t, "http://"+exposeAddr+"/metrics", "")
		v, ok := groupValue(parseBody(t, b), "m", "j", "a")
		return ok && v == 2
	})
	if v := d.metric("prometheus_streams_drain_messages_superseded_total"); v != 0 {
		t.Errorf("%v genuine scrapes superseded", v)
	}
}
