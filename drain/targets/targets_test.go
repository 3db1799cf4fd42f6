package targets

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/drain"
)

var t0 = time.Date(2025, 3, 4, 5, 6, 7, 891_000_000, time.UTC)

// fleet is a few targets in every state the page shows, with hostile labels and errors.
func fleet() []drain.TargetStatus {
	sinks := func(fates ...drain.Fate) []drain.SinkStatus {
		out := make([]drain.SinkStatus, len(fates))
		for i, f := range fates {
			out[i] = drain.SinkStatus{Sink: []string{"pushgateway", "expose"}[i], Fate: f, At: t0.Add(time.Second), Attempts: 1}
			if f == drain.FateDelivered {
				out[i].LastSuccess = t0.Add(time.Second)
			}
		}
		return out
	}
	rejected := sinks(drain.FateRejected, drain.FateDelivered)
	rejected[0].Error = `rejected: 400 <b>bad</b> "labels"`
	retrying := sinks(drain.FateRetrying, drain.FateDelivered)
	retrying[0].Error, retrying[0].Attempts = "503 unavailable", 7
	return []drain.TargetStatus{
		{Job: "node", Instance: "a:9100", Publisher: "edge1", Version: "1.2.0", Site: "dc1", State: drain.StateUp, Start: t0,
			Duration: 120 * time.Millisecond, Series: 512, Received: t0.Add(800 * time.Millisecond), Seq: 41, Age: 12500 * time.Millisecond,
			Sinks: sinks(drain.FateDelivered, drain.FateDelivered)},
		{Job: "node", Instance: "b:9100", Publisher: "edge2", State: drain.StateDown, Start: t0,
			Error: `Get "http://b:9100/metrics": <script>alert(1)</script>`, Received: t0.Add(time.Second), Seq: 42, Age: time.Minute,
			Sinks: sinks(drain.FateDelivered, drain.FateDelivered)},
		{Job: "node", Instance: "c:9100", Publisher: "edge1", State: drain.StateRejected, Start: t0, Series: 3, Received: t0, Seq: 43, Sinks: rejected},
		{Job: "snmp", Instance: `x"><img src=x onerror=alert(2)>`, Publisher: "edge2", State: drain.StateRetrying, Start: t0,
			Received: t0, Seq: 44, Sinks: retrying},
		{Job: "snmp", Instance: "y", Publisher: "edge3", State: drain.StateStale, Start: t0, Received: t0, Seq: 45,
			Sinks: sinks(drain.FatePending, drain.FatePending)},
	}
}

func get(t *testing.T, h http.Handler, target string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func decode(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q, status %d: %s", ct, rec.Code, rec.Body)
	}
	var doc map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestJSON(t *testing.T) {
	h := Handler(fleet)
	for _, c := range []struct{ target, accept string }{
		{"/targets?format=json", "text/html"},
		{"/targets", "application/json"},
		{"/targets", "text/plain;q=0.5, application/json;q=0.9"},
	} {
		doc := decode(t, get(t, h, c.target, "Accept", c.accept))
		if doc["total"] != 5.0 || doc["shown"] != 5.0 || len(doc["targets"].([]any)) != 5 {
			t.Errorf("%+v: total %v shown %v", c, doc["total"], doc["shown"])
		}
		if _, err := time.Parse(time.RFC3339, doc["generated_at"].(string)); err != nil {
			t.Error(err)
		}
	}

	rec := get(t, h, "/targets?format=json")
	var raw struct{ Targets []json.RawMessage }
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	// The documented shape: every field present, in a stable order.
	want := `{"job":"node","instance":"a:9100","publisher":"edge1","publisher_version":"1.2.0","site":"dc1","state":"up","up":true,"scrape_error":"",` +
		`"scrape_start":"2025-03-04T05:06:07.891Z","scrape_duration_seconds":0.12,"series":512,` +
		`"received":"2025-03-04T05:06:08.691Z","lag_seconds":0.8,"age_seconds":12.5,"seq":41,` +
		`"sinks":[{"sink":"pushgateway","fate":"delivered","error":"","at":"2025-03-04T05:06:08.891Z","attempts":1,"last_success":"2025-03-04T05:06:08.891Z"},` +
		`{"sink":"expose","fate":"delivered","error":"","at":"2025-03-04T05:06:08.891Z","attempts":1,"last_success":"2025-03-04T05:06:08.891Z"}]}`
	if got := string(raw.Targets[0]); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	doc := decode(t, rec)
	retrying := doc["targets"].([]any)[3].(map[string]any)
	s := retrying["sinks"].([]any)[0].(map[string]any)
	if s["fate"] != "retrying" || s["error"] != "503 unavailable" || s["attempts"] != 7.0 || s["last_success"] != nil {
		t.Errorf("retrying sink %v", s)
	}
	if down := doc["targets"].([]any)[1].(map[string]any); down["up"] != false || !strings.Contains(down["scrape_error"].(string), "<script>") {
		t.Errorf("down target %v", down)
	}
}

func TestJSONEmpty(t *testing.T) {
	rec := get(t, Handler(func() []drain.TargetStatus { return nil }), "/targets?format=json")
	if !strings.Contains(rec.Body.String(), `"targets":[]`) {
		t.Errorf("body %s", rec.Body)
	}
}

var rowRE = regexp.MustCompile(`<tr data-job="([^"]*)" data-publisher="([^"]*)" data-state="([^"]*)"`)

func rows(body string) []string {
	var out []string
	for _, m := range rowRE.FindAllStringSubmatch(body, -1) {
		out = append(out, m[1]+"|"+m[2]+"|"+m[3])
	}
	return out
}

func TestFilters(t *testing.T) {
	h := Handler(fleet)
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"", []string{"node|edge1|up", "node|edge2|down", "node|edge1|rejected", "snmp|edge2|retrying", "snmp|edge3|stale"}},
		{"job=snmp", []string{"snmp|edge2|retrying", "snmp|edge3|stale"}},
		{"publisher=edge1", []string{"node|edge1|up", "node|edge1|rejected"}},
		{"state=down&state=stale", []string{"node|edge2|down", "snmp|edge3|stale"}},
		{"job=node&publisher=edge2", []string{"node|edge2|down"}},
		{"instance=9100", []string{"node|edge1|up", "node|edge2|down", "node|edge1|rejected"}},
		{"job=nope", nil},
	} {
		rec := get(t, h, "/targets?"+c.query)
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "text/html; charset=utf-8" {
			t.Fatalf("%s: %d %s", c.query, rec.Code, rec.Header().Get("Content-Type"))
		}
		if got := rows(rec.Body.String()); strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("html %q: rows %v, want %v", c.query, got, c.want)
		}
		doc := decode(t, get(t, h, "/targets?format=json&"+c.query))
		var got []string
		for _, x := range doc["targets"].([]any) {
			m := x.(map[string]any)
			got = append(got, fmt.Sprint(m["job"], "|", m["publisher"], "|", m["state"]))
		}
		if strings.Join(got, " ") != strings.Join(c.want, " ") || doc["shown"] != float64(len(c.want)) || doc["total"] != 5.0 {
			t.Errorf("json %q: %v, shown %v total %v", c.query, got, doc["shown"], doc["total"])
		}
	}
	body := get(t, h, "/targets?job=snmp").Body.String()
	if !strings.Contains(body, `the query (job=&#34;snmp&#34;) kept 2 of the drain's 5 targets`) {
		t.Errorf("the page does not say the query filtered it:\n%s", body)
	}
}

func TestBadRequests(t *testing.T) {
	h := Handler(fleet)
	for _, target := range []string{"/targets?state=sideways", "/targets?format=xml"} {
		if rec := get(t, h, target); rec.Code != http.StatusBadRequest {
			t.Errorf("%s: %d", target, rec.Code)
		}
	}
	req := httptest.NewRequest(http.MethodPost, "/targets", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", rec.Code)
	}
}

// TestEscaping: labels and error texts come from the edges: none may become markup.
func TestEscaping(t *testing.T) {
	body := get(t, Handler(fleet), "/targets").Body.String()
	for _, raw := range []string{"<script>alert", "<img", "<b>bad</b>"} {
		if strings.Contains(body, raw) {
			t.Errorf("page contains %q unescaped", raw)
		}
	}
	for _, escaped := range []string{
		`&lt;script&gt;alert(1)&lt;/script&gt;`,
		`<td>x&#34;&gt;&lt;img src=x onerror=alert(2)&gt;</td>`,
		`&lt;b&gt;bad&lt;/b&gt; &#34;labels&#34;`,
	} {
		if !strings.Contains(body, escaped) {
			t.Errorf("page lacks %q", escaped)
		}
	}
	// The only script is the page's own.
	if n := strings.Count(body, "<script"); n != 1 {
		t.Errorf("%d script elements", n)
	}
}

// TestCSP: the policy allows the page's own script and style, and they are what the
// page carries byte for byte.
func TestCSP(t *testing.T) {
	rec := get(t, Handler(fleet), "/targets")
	csp := rec.Header().Get("Content-Security-Policy")
	body := rec.Body.String()
	for _, tag := range []string{"script", "style"} {
		m := regexp.MustCompile(`(?s)<` + tag + `>(.*?)</` + tag + `>`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no %s", tag)
		}
		sum := sha256.Sum256([]byte(m[1]))
		if h := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(csp, tag+"-src "+h) {
			t.Errorf("%s hash %s not in %q", tag, h, csp)
		}
	}
	if !strings.HasPrefix(csp, "default-src 'none'") {
		t.Errorf("csp %q", csp)
	}
}

func TestPageContent(t *testing.T) {
	body := get(t, Handler(fleet), "/targets").Body.String()
	for _, want := range []string{
		`<span id="shown">5</span> of <span id="total">5</span>`,
		`<th data-key="sink0"><button type="button">pushgateway</button></th>`,
		`<th data-key="sink1-ok" data-type="num"><button type="button">expose last ok</button></th>`,
		`<option value="edge3">edge3</option>`,
		`<option value="retrying">retrying (1)</option>`,
		`<td class="f-retrying" title="retrying at 2025-03-04T05:06:08.891Z, attempts 7: 503 unavailable">retrying <span class="err">503 unavailable</span></td><td data-v="">never</td>`,
		`<td data-v="1741064767891" title="2025-03-04T05:06:07.891Z">05:06:07.891</td>`,
		`<td data-v="0.800">800ms</td><td data-v="12.500">12.5s</td><td>41</td>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	empty := get(t, Handler(func() []drain.TargetStatus { return nil }), "/targets").Body.String()
	if !strings.Contains(empty, "No targets") || strings.Contains(empty, "<table") {
		t.Errorf("empty page:\n%s", empty)
	}
}

func TestGzip(t *testing.T) {
	h := Handler(fleet)
	for _, c := range []struct {
		accept string
		gzip   bool
	}{{"gzip, deflate, br", true}, {"br;q=1.0, gzip;q=0.8", true}, {"gzip;q=0", false}, {"", false}} {
		rec := get(t, h, "/targets", "Accept-Encoding", c.accept)
		if got := rec.Header().Get("Content-Encoding") == "gzip"; got != c.gzip {
			t.Errorf("%q: gzip %v", c.accept, got)
			continue
		}
		var r io.Reader = rec.Body
		if c.gzip {
			zr, err := gzip.NewReader(rec.Body)
			if err != nil {
				t.Fatal(err)
			}
			r = zr
		}
		b, err := io.ReadAll(r)
		if err != nil || !strings.HasSuffix(string(b), "</html>\n") {
			t.Errorf("%q: %v, %d bytes", c.accept, err, len(b))
		}
	}
}

// synthetic is n targets as a large fleet looks: many jobs, dozens of publishers.
func synthetic(n int) []drain.TargetStatus {
	out := make([]drain.TargetStatus, n)
	for i := range out {
		st := drain.StateUp
		var scrapeErr string
		if i%50 == 0 {
			st, scrapeErr = drain.StateDown, "Get \"http://host/metrics\": context deadline exceeded"
		}
		out[i] = drain.TargetStatus{
			Job: fmt.Sprint("job", i%20), Instance: fmt.Sprintf("host%05d.dc%d.example.net:9100", i, i%30), Publisher: fmt.Sprint("edge", i%30),
			Site: fmt.Sprint("dc", i%30), State: st, Start: t0, Duration: 80 * time.Millisecond, Error: scrapeErr, Series: i,
			Received: t0.Add(time.Second), Seq: uint64(i), Age: 20 * time.Second,
			Sinks: []drain.SinkStatus{
				{Sink: "pushgateway", Fate: drain.FateDelivered, At: t0.Add(time.Second), Attempts: 1, LastSuccess: t0.Add(time.Second)},
				{Sink: "expose", Fate: drain.FateDelivered, At: t0.Add(time.Second), Attempts: 1, LastSuccess: t0.Add(time.Second)},
			},
		}
	}
	return out
}

func benchmarkPage(b *testing.B, target string, header ...string) {
	ts := synthetic(10000)
	h := Handler(func() []drain.TargetStatus { return ts })
	var size int
	b.ReportAllocs()
	for range b.N {
		rec := get(&testing.T{}, h, target, header...)
		size = rec.Body.Len()
	}
	b.ReportMetric(float64(size), "bytes")
}

// BenchmarkPage10k renders the page of 10,000 targets.
func BenchmarkPage10k(b *testing.B)     { benchmarkPage(b, "/targets") }
func BenchmarkPage10kGzip(b *testing.B) { benchmarkPage(b, "/targets", "Accept-Encoding", "gzip") }
func BenchmarkJSON10k(b *testing.B)     { benchmarkPage(b, "/targets?format=json") }
