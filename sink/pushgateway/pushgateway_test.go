package pushgateway_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	promcfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/pgwtest"
	"github.com/prometheus-streams/prometheus-streams/sink/pushgateway"
)

const (
	textType  = "text/plain; version=0.0.4"
	protoType = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
)

func newClient(t testing.TB, url string) *pushgateway.Client {
	t.Helper()
	c, err := pushgateway.New(pushgateway.Options{URL: url, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// families parses a text exposition into families, in name order.
func families(t testing.TB, text string) []*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	m, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	var fams []*dto.MetricFamily
	for _, name := range slices.Sorted(maps.Keys(m)) {
		fams = append(fams, m[name])
	}
	return fams
}

func labelsOf(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

// series returns the metric of family name whose labels are exactly want.
func series(fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	for _, m := range fams[name].GetMetric() {
		got := labelsOf(m)
		if len(got) != len(want) {
			continue
		}
		match := true
		for k, v := range want {
			if got[k] != v {
				match = false
			}
		}
		if match {
			return m
		}
	}
	return nil
}

func with(base map[string]string, kv ...string) map[string]string {
	m := map[string]string{}
	for k, v := range base {
		m[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

var ctx = context.Background()

func TestPushScrape(t *testing.T) {
	s := pgwtest.Start(t)
	c := newClient(t, s.URL())
	g := pushgateway.Grouping{{"job", "node"}, {"instance", "host:9100"}, {"site", "dc1"}}
	err := c.Push(ctx, g, families(t, `
# HELP temp_celsius Temperature.
# TYPE temp_celsius gauge
temp_celsius{sensor="a"} 21.5
temp_celsius{sensor="b"} -3
# TYPE reqs_total counter
reqs_total{code="200"} 1027
# TYPE lat_seconds histogram
lat_seconds_bucket{le="0.1"} 3
lat_seconds_bucket{le="+Inf"} 5
lat_seconds_sum 1.25
lat_seconds_count 5
# TYPE up untyped
up 1
`))
	if err != nil {
		t.Fatal(err)
	}
	fams := s.Scrape(t)
	gl := map[string]string{"job": "node", "instance": "host:9100", "site": "dc1"}
	if m := series(fams, "temp_celsius", with(gl, "sensor", "a")); m.GetGauge().GetValue() != 21.5 {
		t.Errorf("temp_celsius{sensor=a}: %v", m)
	}
	if m := series(fams, "temp_celsius", with(gl, "sensor", "b")); m.GetGauge().GetValue() != -3 {
		t.Errorf("temp_celsius{sensor=b}: %v", m)
	}
	if fams["temp_celsius"].GetHelp() != "Temperature." {
		t.Errorf("help %q", fams["temp_celsius"].GetHelp())
	}
	if m := series(fams, "reqs_total", with(gl, "code", "200")); m.GetCounter().GetValue() != 1027 {
		t.Errorf("reqs_total: %v", m)
	}
	if m := series(fams, "lat_seconds", gl); m.GetHistogram().GetSampleCount() != 5 || m.GetHistogram().GetSampleSum() != 1.25 {
		t.Errorf("lat_seconds: %v", m)
	}
	if m := series(fams, "up", gl); m.GetUntyped().GetValue() != 1 {
		t.Errorf("up: %v", m)
	}
	if series(fams, "push_time_seconds", gl) == nil {
		t.Error("no push_time_seconds for the group")
	}
}

func TestPushReplaces(t *testing.T) {
	s := pgwtest.Start(t)
	c := newClient(t, s.URL())
	g := pushgateway.Grouping{{"job", "j"}, {"instance", "i"}}
	if err := c.Push(ctx, g, families(t, "a 1\nb 2\n")); err != nil {
		t.Fatal(err)
	}
	if err := c.Push(ctx, g, families(t, "a 3\n")); err != nil {
		t.Fatal(err)
	}
	fams := s.Scrape(t)
	gl := map[string]string{"job": "j", "instance": "i"}
	if m := series(fams, "a", gl); m.GetUntyped().GetValue() != 3 {
		t.Errorf("a: %v, want 3", m)
	}
	if _, ok := fams["b"]; ok {
		t.Error("b survived a replacing push")
	}
	// A push of nothing keeps the group, empty but for the gateway's own series.
	if err := c.Push(ctx, g, nil); err != nil {
		t.Fatal(err)
	}
	fams = s.Scrape(t)
	if _, ok := fams["a"]; ok {
		t.Error("a survived an empty push")
	}
	if series(fams, "push_time_seconds", gl) == nil {
		t.Error("empty push dropped the group")
	}
}

func TestDelete(t *testing.T) {
	s := pgwtest.Start(t)
	c := newClient(t, s.URL())
	g := pushgateway.Grouping{{"job", "j"}, {"instance", "gone"}}
	keep := pushgateway.Grouping{{"job", "j"}, {"instance", "kept"}}
	for _, gr := range []pushgateway.Grouping{g, keep} {
		if err := c.Push(ctx, gr, families(t, "x 1\n")); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Delete(ctx, g); err != nil {
		t.Fatal(err)
	}
	// The gateway answers a DELETE with 202 and applies it in its write loop: await it.
	var fams map[string]*dto.MetricFamily
	eventually(t, "the group deleted", func() bool {
		fams = s.Scrape(t)
		return series(fams, "x", map[string]string{"job": "j", "instance": "gone"}) == nil
	})
	if series(fams, "x", map[string]string{"job": "j", "instance": "kept"}) == nil {
		t.Error("other group deleted too")
	}
	// Again, and a group that never was: both success.
	if err := c.Delete(ctx, g); err != nil {
		t.Errorf("delete of a deleted group: %v", err)
	}
	if err := c.Delete(ctx, pushgateway.Grouping{{"job", "never"}}); err != nil {
		t.Errorf("delete of a missing group: %v", err)
	}
}

func TestGroups(t *testing.T) {
	s := pgwtest.Start(t)
	c := newClient(t, s.URL())
	g := pushgateway.Grouping{{"job", "node"}, {"instance", "h:9100"}, {"publisher", "edge1"}}
	before := time.Now()
	err := c.Push(ctx, g, families(t, `
# TYPE streams_scrape_timestamp_seconds gauge
streams_scrape_timestamp_seconds 1.7000000125e+09
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.5"} 0.2
rpc_seconds_sum 9
rpc_seconds_count 30
`))
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	s.PushRaw(t, "/metrics/job/other", textType, []byte("other_metric 1\n"))

	gs, err := c.Groups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 2 {
		t.Fatalf("%d groups, want 2: %+v", len(gs), gs)
	}
	got := gs[0] // sorted: {job="node",…} before {job="other"}
	if want := map[string]string{"job": "node", "instance": "h:9100", "publisher": "edge1"}; !equalMaps(got.Grouping, want) {
		t.Errorf("grouping %v, want %v", got.Grouping, want)
	}
	if pushgateway.GroupingOf(got.Grouping).String() != `{job="node",instance="h:9100",publisher="edge1"}` {
		t.Errorf("GroupingOf: %v", pushgateway.GroupingOf(got.Grouping))
	}
	if got.PushTime.Before(before.Add(-time.Millisecond)) || got.PushTime.After(after.Add(time.Millisecond)) {
		t.Errorf("push time %v not within [%v, %v]", got.PushTime, before, after)
	}
	if !got.LastPushSuccessful {
		t.Error("last push not successful")
	}
	f := got.Families["streams_scrape_timestamp_seconds"]
	if f.Type != "GAUGE" || len(f.Metrics) != 1 || f.Metrics[0].Value != 1.7000000125e+09 {
		t.Errorf("marker family %+v", f)
	}
	if l := f.Metrics[0].Labels; l["job"] != "node" || l["publisher"] != "edge1" {
		t.Errorf("metric labels %v lack the grouping labels", l)
	}
	if m := got.Families["rpc_seconds"].Metrics[0]; m.Value != 30 || m.Sum != 9 {
		t.Errorf("summary %+v, want count 30, sum 9", m)
	}
	if gs[1].Grouping["job"] != "other" || gs[1].Families["other_metric"].Type != "UNTYPED" {
		t.Errorf("other group %+v", gs[1])
	}

	// Naming families keeps those and the gateway's own.
	gs, err = c.Groups(ctx, "streams_scrape_timestamp_seconds")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range gs[0].Families {
		names = append(names, n)
	}
	slices.Sort(names)
	if want := []string{"push_failure_time_seconds", "push_time_seconds", "streams_scrape_timestamp_seconds"}; !slices.Equal(names, want) {
		t.Errorf("filtered families %v, want %v", names, want)
	}
	if gs[0].PushTime.IsZero() {
		t.Error("filtered listing lost the push time")
	}

	// Deleting by a listed grouping works.
	for _, gr := range gs {
		if err := c.Delete(ctx, pushgateway.GroupingOf(gr.Grouping)); err != nil {
			t.Fatal(err)
		}
	}
	if gs, err = c.Groups(ctx); err != nil || len(gs) != 0 {
		t.Errorf("after deleting all: %v, %v", gs, err)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Grouping values that are not plain path segments survive the trip through the
// URL: into the series' labels, back out of the listing, and into a Delete.
func TestGroupingRoundTrip(t *testing.T) {
	s := pgwtest.Start(t)
	c := newClient(t, s.URL())
	cases := []pushgateway.Grouping{
		{{"job", "colon"}, {"instance", "[::1]:9100"}},
		{{"job", "slash"}, {"instance", "http://host:8080/metrics?x=1"}},
		{{"job", "unicode"}, {"instance", "Ünïcödé/日本:1"}},
		{{"job", "escapes"}, {"instance", "a b+c%d?e#f;g&h=i@j\\k\"l"}},
		{{"job", "dots"}, {"instance", ".."}, {"other", "."}},
		{{"job", "empty"}, {"instance", ""}},
		{{"job", "job/with/slashes"}, {"instance", "i"}},
		{{"job", "base64-like"}, {"instance", "="}, {"x", "YQ=="}},
	}
	for _, g := range cases {
		if err := c.Push(ctx, g, families(t, "round_trip 1\n")); err != nil {
			t.Fatalf("%v: %v", g, err)
		}
	}
	fams := s.Scrape(t)
	gs, err := c.Groups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, gr := range gs {
		listed[pushgateway.GroupingOf(gr.Grouping).String()] = true
	}
	if len(gs) != len(cases) {
		t.Errorf("%d groups listed, want %d", len(gs), len(cases))
	}
	for _, g := range cases {
		want := map[string]string{"instance": ""}
		for _, l := range g {
			want[l.Name] = l.Value
		}
		if series(fams, "round_trip", want) == nil {
			t.Errorf("%v (%s): no series with labels %v in %v", g, g.Path(), want, fams["round_trip"])
		}
		key := map[string]string{}
		for _, l := range g {
			key[l.Name] = l.Value
		}
		if !listed[pushgateway.GroupingOf(key).String()] {
			t.Errorf("%v not listed; listed %v", g, listed)
		}
		if err := c.Delete(ctx, g); err != nil {
			t.Errorf("delete %v: %v", g, err)
		}
	}
	if gs, err := c.Groups(ctx); err != nil || len(gs) != 0 {
		t.Errorf("after deleting all: %d groups, %v", len(gs), err)
	}
}

func TestRejectedTypeConflict(t *testing.T) {
	s := pgwtest.Start(t)
	if st := s.PushRaw(t, "/metrics/job/other", textType, []byte("# TYPE shared gauge\nshared 1\n")); st != http.StatusOK {
		t.Fatalf("other push: %d", st)
	}
	c := newClient(t, s.URL())
	g := pushgateway.Grouping{{"job", "mine"}, {"instance", "i"}}
	err := c.Push(ctx, g, families(t, "# TYPE shared counter\nshared 2\n"))
	if !errors.Is(err, pushgateway.ErrRejected) || errors.Is(err, pushgateway.ErrUnavailable) {
		t.Fatalf("got %v, want ErrRejected", err)
	}
	var pe *pushgateway.Error
	if !errors.As(err, &pe) || pe.Status != http.StatusBadRequest || pe.Op != "push" || pe.Path != g.Path() {
		t.Fatalf("error %#v", pe)
	}
	// Which of the two is "not a" GAUGE or COUNTER depends on map order in the gateway.
	if !regexp.MustCompile(`collected metric "shared" .* is not a (GAUGE|COUNTER)`).MatchString(err.Error()) {
		t.Errorf("error %q lacks the gateway's reason", err)
	}
	for _, want := range []string{"inconsistent with existing metrics", `{job="mine",instance="i"}`, "PUT /metrics/job/mine/instance/i", "400 Bad Request"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// The refused push leaves a group behind with no successful push.
	gs, err := c.Groups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, gr := range gs {
		if gr.Grouping["job"] == "mine" && (gr.LastPushSuccessful || !gr.PushTime.IsZero()) {
			t.Errorf("refused group listed as %+v", gr)
		}
	}
}

func TestRejectedTimestamp(t *testing.T) {
	s := pgwtest.Start(t)
	c := newClient(t, s.URL())
	err := c.Push(ctx, pushgateway.Grouping{{"job", "j"}}, families(t, "stamped 1 1700000000000\n"))
	if !errors.Is(err, pushgateway.ErrRejected) {
		t.Fatalf("got %v, want ErrRejected", err)
	}
	if !strings.Contains(err.Error(), "pushed metrics must not have timestamps") {
		t.Errorf("error %q lacks the gateway's reason", err)
	}
}

// Push refuses UTF-8 names itself: Push Gateway 1.5 takes a UTF-8 metric name
// and then serves a /metrics that does not parse.
func TestRefusedUTF8Names(t *testing.T) {
	s := pgwtest.Start(t)
	c := newClient(t, s.URL())
	for text, want := range map[string]string{
		`{"my.metric"} 1` + "\n":             `metric name "my.metric"`,
		`ok_metric{"my.label"="x"} 1` + "\n": `label name "my.label"`,
	} {
		err := c.Push(ctx, pushgateway.Grouping{{"job", "j"}}, families(t, text))
		var pe *pushgateway.Error
		if !errors.As(err, &pe) || !errors.Is(err, pushgateway.ErrRejected) || pe.Status != 0 || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want a refusal naming %s", text, err, want)
		}
	}
	if gs, err := c.Groups(ctx); err != nil || len(gs) != 0 {
		t.Errorf("refused pushes reached the gateway: %v, %v", gs, err)
	}

	// What the check prevents.
	var body bytes.Buffer
	enc := expfmt.NewEncoder(&body, expfmt.FmtProtoDelim+"; escaping=allow-utf-8")
	if err := enc.Encode(families(t, `{"my.metric"} 1`+"\n")[0]); err != nil {
		t.Fatal(err)
	}
	if st := s.PushRaw(t, "/metrics/job/utf8", protoType, body.Bytes()); st != http.StatusOK {
		t.Fatalf("gateway refused a UTF-8 metric name: %d", st)
	}
	st, scraped := s.Do(t, http.MethodGet, "/metrics", "", nil)
	if st != http.StatusOK || !bytes.Contains(scraped, []byte("\nmy.metric{")) {
		t.Fatalf("GET /metrics: %d, no unquoted my.metric", st)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	if _, err := p.TextToMetricFamilies(bytes.NewReader(scraped)); err == nil {
		t.Error("the gateway's /metrics parsed after all")
	}
}

// With the consistency check off the gateway answers before checking: the
// same conflict is accepted, and then breaks the gateway's /metrics.
func TestUncheckedGatewayAccepts(t *testing.T) {
	s := pgwtest.Start(t, pgwtest.WithoutConsistencyCheck())
	s.PushRaw(t, "/metrics/job/other", textType, []byte("# TYPE shared gauge\nshared 1\n"))
	c := newClient(t, s.URL())
	if err := c.Push(ctx, pushgateway.Grouping{{"job", "mine"}}, families(t, "# TYPE shared counter\nshared 2\n")); err != nil {
		t.Fatalf("unchecked gateway refused: %v", err)
	}
	if st, body := s.Do(t, http.MethodGet, "/metrics", "", nil); st != http.StatusInternalServerError {
		t.Errorf("GET /metrics after an inconsistent push: %d %s", st, body)
	}
	// A timestamped push "succeeds" too, and is dropped; only the listing tells.
	g := pushgateway.Grouping{{"job", "stamped"}}
	if err := c.Push(ctx, g, families(t, "stamped 1 1700000000000\n")); err != nil {
		t.Fatalf("unchecked gateway refused: %v", err)
	}
	waitFor(t, func() bool {
		gs, err := c.Groups(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, gr := range gs {
			if gr.Grouping["job"] == "stamped" {
				return !gr.LastPushSuccessful
			}
		}
		return false
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A group with instance="" and one without instance give the same series. The
// second is refused, and the group its refusal leaves behind collides with the
// first, so the gateway refuses every push until it is deleted.
func TestEmptyInstanceCollision(t *testing.T) {
	s := pgwtest.Start(t)
	c := newClient(t, s.URL())
	bare := pushgateway.Grouping{{"job", "e"}}
	empty := pushgateway.Grouping{{"job", "e"}, {"instance", ""}}
	unrelated := pushgateway.Grouping{{"job", "unrelated"}}
	if err := c.Push(ctx, bare, families(t, "v 1\n")); err != nil {
		t.Fatal(err)
	}
	err := c.Push(ctx, empty, families(t, "v 2\n"))
	if !errors.Is(err, pushgateway.ErrRejected) || !strings.Contains(err.Error(), "was collected before with the same name and label values") {
		t.Fatalf("got %v, want a duplicate-series refusal", err)
	}
	if err := c.Push(ctx, unrelated, families(t, "w 1\n")); !errors.Is(err, pushgateway.ErrRejected) {
		t.Fatalf("unrelated push: got %v, want it refused while the collision lasts", err)
	}
	if err := c.Delete(ctx, empty); err != nil {
		t.Fatal(err)
	}
	if err := c.Push(ctx, unrelated, families(t, "w 1\n")); err != nil {
		t.Fatalf("after deleting the colliding group: %v", err)
	}
}

func TestRefusedBeforeSending(t *testing.T) {
	c := newClient(t, "http://127.0.0.1:1") // nothing listens: a request would fail differently
	for _, tc := range []struct {
		g    pushgateway.Grouping
		fams []*dto.MetricFamily
		want string
	}{
		{pushgateway.Grouping{{"instance", "i"}}, nil, "job"},
		{pushgateway.Grouping{{"job", "j"}, {"dotted.name", "x"}}, nil, "legacy"},
		{pushgateway.Grouping{{"job", "j"}}, append(families(t, "d 1\n"), families(t, "d 2\n")...), "given twice"},
	} {
		err := c.Push(ctx, tc.g, tc.fams)
		var pe *pushgateway.Error
		if !errors.As(err, &pe) || !errors.Is(err, pushgateway.ErrRejected) || pe.Status != 0 ||
			!strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), ": not sent: ") {
			t.Errorf("%v: got %v, want a refusal mentioning %q", tc.g, err, tc.want)
		}
	}
	if err := c.Delete(ctx, pushgateway.Grouping{{"job", ""}}); !errors.Is(err, pushgateway.ErrRejected) {
		t.Errorf("delete of an empty job: %v", err)
	}
}

func TestUnavailableAndBack(t *testing.T) {
	s := pgwtest.Start(t)
	c := newClient(t, s.URL())
	g := pushgateway.Grouping{{"job", "j"}}
	if err := c.Push(ctx, g, families(t, "x 1\n")); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	for name, call := range map[string]func() error{
		"push":   func() error { return c.Push(ctx, g, families(t, "x 2\n")) },
		"delete": func() error { return c.Delete(ctx, g) },
		"groups": func() error { _, err := c.Groups(ctx); return err },
	} {
		start := time.Now()
		err := call()
		// The first request may find a kept-alive connection the gateway closed (EOF)
		// rather than a refused one: either is a gateway that is down, to retry.
		if !errors.Is(err, pushgateway.ErrUnavailable) || !(errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			t.Errorf("%s with the gateway down: got %v, want ErrUnavailable from a refused or closed connection", name, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s took %v to fail", name, d)
		}
		if strings.Contains(err.Error(), s.URL()) {
			t.Errorf("%s error %q names the base URL", name, err)
		}
	}
	s.Restart()
	if err := c.Push(ctx, g, families(t, "x 3\n")); err != nil {
		t.Fatalf("push after restart: %v", err)
	}
	if m := series(s.Scrape(t), "x", map[string]string{"job": "j", "instance": ""}); m.GetUntyped().GetValue() != 3 {
		t.Errorf("x after restart: %v", m)
	}
}

func TestRoutePrefix(t *testing.T) {
	s := pgwtest.Start(t, pgwtest.WithRoutePrefix("/pgw"))
	c := newClient(t, s.URL()+"/") // a trailing slash is fine
	g := pushgateway.Grouping{{"job", "j"}}
	if err := c.Push(ctx, g, families(t, "p 1\n")); err != nil {
		t.Fatal(err)
	}
	gs, err := c.Groups(ctx)
	if err != nil || len(gs) != 1 {
		t.Fatalf("groups: %v, %v", gs, err)
	}
	err = c.Push(ctx, g, families(t, "p 1 1000\n"))
	var pe *pushgateway.Error
	if !errors.As(err, &pe) || pe.Path != "/pgw/metrics/job/j" {
		t.Errorf("error path: %v", err)
	}
}

// hang answers nothing until the request is abandoned or the test ends.
func hang(t *testing.T) *httptest.Server {
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-done:
		}
	}))
	t.Cleanup(func() { close(done); srv.Close() })
	return srv
}

func TestTimeout(t *testing.T) {
	srv := hang(t)
	c, err := pushgateway.New(pushgateway.Options{URL: srv.URL, Timeout: 200 * time.Millisecond, ListTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = c.Push(ctx, pushgateway.Grouping{{"job", "j"}}, families(t, "x 1\n"))
	if !errors.Is(err, pushgateway.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want ErrUnavailable and DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("timeout of 200ms took %v", d)
	}
	if !strings.Contains(err.Error(), "timed out after 200ms") {
		t.Errorf("error %q does not say it timed out", err)
	}

	// A listing has its own timeout.
	_, err = c.Groups(ctx)
	if !errors.Is(err, pushgateway.ErrUnavailable) || !strings.Contains(err.Error(), "timed out after 300ms") {
		t.Errorf("listing: got %v, want ErrUnavailable after 300ms", err)
	}

	// The caller's context ending is reported as such.
	c = newClient(t, srv.URL)
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = c.Groups(cctx)
	if !errors.Is(err, pushgateway.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: got %v, want ErrUnavailable and Canceled", err)
	}
}

func TestBasicAuth(t *testing.T) {
	const user, pass = "drain", "s3cr3t-pa55"
	file := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(file, []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var gotUA string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotUA = r.Header.Get("User-Agent")
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != pass {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if r.Header.Get("Content-Type") != "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited" {
			http.Error(w, "bad content type "+r.Header.Get("Content-Type"), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusAccepted) // as older gateways answer
	}))
	defer srv.Close()

	opts := pushgateway.Options{
		URL:       srv.URL,
		UserAgent: "test-agent/1",
		HTTPClientConfig: promcfg.HTTPClientConfig{
			BasicAuth: &promcfg.BasicAuth{Username: user, PasswordFile: file},
		},
	}
	c, err := pushgateway.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Push(ctx, pushgateway.Grouping{{"job", "j"}}, families(t, "x 1\n")); err != nil {
		t.Fatalf("push with basic auth: %v", err)
	}
	if gotUA != "test-agent/1" {
		t.Errorf("User-Agent %q", gotUA)
	}

	// Wrong password: refused, and the error does not show either password.
	opts.HTTPClientConfig.BasicAuth = &promcfg.BasicAuth{Username: user, Password: "wrong-pa55"}
	c, err = pushgateway.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Push(ctx, pushgateway.Grouping{{"job", "j"}}, families(t, "x 1\n"))
	var pe *pushgateway.Error
	if !errors.As(err, &pe) || pe.Status != http.StatusUnauthorized || !errors.Is(err, pushgateway.ErrRejected) {
		t.Fatalf("got %v, want a 401 ErrRejected", err)
	}
	if strings.Contains(err.Error(), pass) || strings.Contains(err.Error(), "wrong-pa55") {
		t.Errorf("error %q shows a password", err)
	}
}

// Statuses the real gateway does not give on demand.
func TestStatusClasses(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics/job/503":
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
		case "/metrics/job/408":
			http.Error(w, "too slow", http.StatusRequestTimeout)
		case "/metrics/job/429":
			http.Error(w, "slow down", http.StatusTooManyRequests)
		case "/metrics/job/404":
			http.Error(w, "no such route", http.StatusNotFound)
		case "/metrics/job/301":
			http.Redirect(w, r, "https://elsewhere.example/metrics/job/301", http.StatusMovedPermanently)
		case "/metrics/job/long":
			http.Error(w, strings.Repeat("é", 1000), http.StatusBadRequest)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer srv.Close()
	c := newClient(t, srv.URL)
	for _, tc := range []struct {
		job  string
		want error
		msg  string
	}{
		{"503", pushgateway.ErrUnavailable, "overloaded"},
		{"429", pushgateway.ErrUnavailable, "slow down"},
		{"408", pushgateway.ErrUnavailable, "too slow"},
		{"404", pushgateway.ErrRejected, "no such route"},
		{"301", pushgateway.ErrRejected, "redirect not followed (to https://elsewhere.example/metrics/job/301): fix the gateway URL"},
		{"long", pushgateway.ErrRejected, strings.Repeat("é", 256)},
		{"204", nil, ""},
	} {
		err := c.Push(ctx, pushgateway.Grouping{{"job", tc.job}}, nil)
		if tc.want == nil {
			if err != nil {
				t.Errorf("%s: %v", tc.job, err)
			}
			continue
		}
		var pe *pushgateway.Error
		if !errors.Is(err, tc.want) || !errors.As(err, &pe) || pe.Message != tc.msg {
			t.Errorf("%s: got %v (message %q), want %v with message %q", tc.job, err, pe.Message, tc.want, tc.msg)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	for _, u := range []string{"", "ftp://h", "http://", "http://user:hunter2@h:9091", "http://h/?x=1", "%zz"} {
		_, err := pushgateway.New(pushgateway.Options{URL: u})
		if err == nil {
			t.Errorf("New(%q) accepted", u)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("New error %q shows the password", err)
		}
	}
	if _, err := pushgateway.New(pushgateway.Options{URL: "http://h", Timeout: -time.Second}); err == nil {
		t.Error("negative timeout accepted")
	}
	if _, err := pushgateway.New(pushgateway.Options{URL: "http://h", ListTimeout: -time.Second}); err == nil {
		t.Error("negative list timeout accepted")
	}
}

// A NaN, an infinity and a big counter come back exactly through the listing.
func TestGroupsSpecialValues(t *testing.T) {
	s := pgwtest.Start(t)
	c := newClient(t, s.URL())
	fams := []*dto.MetricFamily{{
		Name: proto.String("special"),
		Type: dto.MetricType_GAUGE.Enum(),
		Metric: []*dto.Metric{
			{Label: []*dto.LabelPair{{Name: proto.String("v"), Value: proto.String("nan")}}, Gauge: &dto.Gauge{Value: proto.Float64(math.NaN())}},
			{Label: []*dto.LabelPair{{Name: proto.String("v"), Value: proto.String("inf")}}, Gauge: &dto.Gauge{Value: proto.Float64(math.Inf(-1))}},
			{Label: []*dto.LabelPair{{Name: proto.String("v"), Value: proto.String("big")}}, Gauge: &dto.Gauge{Value: proto.Float64(1.2345678901234567e+300)}},
		},
	}}
	if err := c.Push(ctx, pushgateway.Grouping{{"job", "j"}}, fams); err != nil {
		t.Fatal(err)
	}
	gs, err := c.Groups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, m := range gs[0].Families["special"].Metrics {
		got[m.Labels["v"]] = m.Value
	}
	if !math.IsNaN(got["nan"]) || !math.IsInf(got["inf"], -1) || got["big"] != 1.2345678901234567e+300 {
		t.Errorf("values %v", got)
	}
}

// eventually polls cond until it holds, failing the test after 10s: for what the
// gateway applies asynchronously (a DELETE answered 202).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStatus reads the gateway's start time and whether it checks pushes; an answer
// that is not the gateway's status is refused for good.
func TestStatus(t *testing.T) {
	checked, unchecked := pgwtest.Start(t), pgwtest.Start(t, pgwtest.WithoutConsistencyCheck())
	for _, tc := range []struct {
		s     *pgwtest.Server
		check bool
	}{{checked, true}, {unchecked, false}} {
		st, err := newClient(t, tc.s.URL()).Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.ConsistencyCheck != tc.check || st.Start.IsZero() || st.Now.Before(st.Start.Truncate(time.Second)) {
			t.Errorf("status %+v, want consistency check %v, a start time and the gateway's clock", st, tc.check)
		}
	}
	c := newClient(t, unchecked.URL())
	before, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	unchecked.Restart()
	after, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Start.Equal(before.Start) {
		t.Errorf("start time %v unchanged by a restart", after.Start)
	}

	for name, handler := range map[string]http.HandlerFunc{
		"a page":    func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "<html>hello</html>") },
		"not found": http.NotFound,
	} {
		srv := httptest.NewServer(handler)
		_, err := newClient(t, srv.URL).Status(ctx)
		srv.Close()
		if !errors.Is(err, pushgateway.ErrRejected) {
			t.Errorf("%s: %v, want ErrRejected", name, err)
		}
	}
}
