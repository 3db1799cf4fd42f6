package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestRestartKeepsState: a drain restarted (or upgraded) reads each target's newest
// scrape younger than max_age from the stream again before /healthz says ready, so its
// expose endpoint and /targets never go empty; on both transports. The history sinks
// are not given those scrapes again.
func TestRestartKeepsState(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			srv := tr.start(t)
			exposeAddr, mon := freeAddr(t), freeAddr(t)
			// A remote-write receiver that counts the requests it is sent.
			var writes atomic.Int64
			rw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				writes.Add(1)
				w.WriteHeader(http.StatusNoContent)
			}))
			t.Cleanup(rw.Close)
			cfg := tr.drainConfig(srv, "http://127.0.0.1:1", mon, fmt.Sprintf("expose:\n  listen: %s\nremote_write:\n  - url: %s\n", exposeAddr, rw.URL))
			cfg = strings.Replace(cfg, "push_gateway:\n  url: http://127.0.0.1:1\n", "", 1)
			path := writeConfig(t, cfg)
			d := startDrain(t, path, mon)
			if tr.jetStream() {
				// The stream exists once the drain created it.
				waitFor(t, 10*time.Second, "the drain subscribed", func() bool { return d.healthz() == http.StatusOK })
			}
			now := time.Now()
			const targets = 5
			var msgs [][]byte
			for round := range 2 {
				for i := range targets {
					msgs = append(msgs, encode(t, "j", fmt.Sprintf("t%d", i), now.Add(time.Duration(round-3)*time.Second), fmt.Sprintf("m %d\n", round)))
				}
			}
			// A target whose newest scrape is older than max_age is not restored.
			msgs = append(msgs, encode(t, "j", "old", now.Add(-time.Hour), "m 7\n"))
			tr.publish(t, srv, msgs...)
			url := "http://" + exposeAddr + "/metrics"
			served := func() int {
				_, b := fetch(t, url, "")
				fams := parseBody(t, b)
				n := 0
				for i := range targets {
					if v, ok := groupValue(fams, "m", "j", fmt.Sprintf("t%d", i)); ok && v == 1 {
						n++
					}
				}
				return n
			}
			waitFor(t, 10*time.Second, "every target served", func() bool { return served() == targets })
			waitFor(t, 10*time.Second, "every scrape written", func() bool {
				return d.metric("prometheus_streams_drain_scrapes_delivered_total", "sink", "remote_write:"+rwName(t, d)) == 2*targets
			})
			d.stop()
			before := writes.Load()

			d = launchDrain(t, path, mon)
			waitFor(t, 20*time.Second, "the restarted drain ready", func() bool { return d.healthz() == http.StatusOK })
			// Ready means restored: every target is served at once, nothing new published.
			if n := served(); n != targets {
				t.Errorf("%d of %d targets served by the restarted drain once ready", n, targets)
			}
			_, b := fetch(t, "http://"+mon+"/targets?format=json", "")
			var page struct {
				Targets []struct{ Instance, State string }
			}
			if err := json.Unmarshal(b, &page); err != nil {
				t.Fatal(err)
			}
			if len(page.Targets) != targets {
				t.Errorf("/targets after the restart: %s", b)
			}
			if strings.Contains(string(b), `"old"`) {
				t.Errorf("a target older than max_age was restored: %s", b)
			}
			if v := d.metric("prometheus_streams_drain_targets_restored_total"); v != targets {
				t.Errorf("targets restored = %v, want %d", v, targets)
			}
			if n := writes.Load() - before; n != 0 {
				t.Errorf("%d remote-write requests after the restart: the restore must not write history again", n)
			}
		})
	}
}

// rwName is the name of the drain's one remote_write sink, from its metrics.
func rwName(t *testing.T, d *drainProc) string {
	t.Helper()
	for _, m := range scrapeURL(t, d.monitor+"/metrics")["prometheus_streams_drain_scrapes_delivered_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "sink" && strings.HasPrefix(l.GetValue(), "remote_write:") {
				return strings.TrimPrefix(l.GetValue(), "remote_write:")
			}
		}
	}
	t.Fatal("no remote_write sink in the drain's metrics")
	return ""
}
