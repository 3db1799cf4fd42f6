package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/prometheus-streams/prometheus-streams/stream"
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
	waitFor(t, 10*time.Second, "the refusal logged", func() bool {
		l := d.logs()
		return strings.Contains(l, "scrape stamped in the future") && strings.Contains(l, "publisher=test") && strings.Contains(l, "ahead=59m5")
	})

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

// TestWrongSubject: on JetStream a message whose envelope names another target than the
// subject it was published on (a publisher allowed one subject speaking for another
// target) is rejected by the drain binary, with the subject in its log.
func TestWrongSubject(t *testing.T) {
	srv := jsTransport.start(t)
	exposeAddr, mon := freeAddr(t), freeAddr(t)
	cfg := jsTransport.drainConfig(srv, "http://127.0.0.1:1", mon, fmt.Sprintf("expose:\n  listen: %s\n", exposeAddr))
	cfg = strings.Replace(cfg, "push_gateway:\n  url: http://127.0.0.1:1\n", "", 1)
	d := startDrain(t, writeConfig(t, cfg), mon)
	waitFor(t, 10*time.Second, "the drain subscribed", func() bool { return d.healthz() == http.StatusOK })
	jsPublish(t, srv, &nats.Msg{Subject: stream.Subject("prometheus", "j", "b"), Data: encode(t, "j", "a", time.Now(), "m 1\n")})
	waitFor(t, 10*time.Second, "the message rejected", func() bool {
		return d.metric("prometheus_streams_drain_messages_rejected_total", "reason", "wrong_subject") == 1
	})
	waitFor(t, 10*time.Second, "the rejection logged", func() bool {
		return strings.Contains(d.logs(), "reason=wrong_subject") && strings.Contains(d.logs(), "subject=prometheus.j.b")
	})
}
