package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/drain"
	"github.com/prometheus-streams/prometheus-streams/drain/targets"
)

// TestTargetsPage loads the drain's /targets page in a real headless Chromium, driven
// over the DevTools protocol, and checks that its script filters and sorts the rows the
// server rendered, from the controls and from the URL's fragment, and that hostile
// labels stay text.
func TestTargetsPage(t *testing.T) {
	fleet := pageFleet(300)
	mux := http.NewServeMux()
	mux.Handle("/targets", targets.Handler(func() []drain.TargetStatus { return fleet }))
	srv := httptest.NewServer(mux) // on 127.0.0.1
	defer srv.Close()

	b := startChromium(t)
	p := b.open(t)

	p.navigate(t, srv.URL+"/targets")
	if n := p.eval(t, `document.querySelectorAll("#targets tbody tr").length`); n != float64(len(fleet)) {
		t.Fatalf("%v rows, want %d", n, len(fleet))
	}
	p.wantVisible(t, "no filter", len(fleet))

	// A filter from the job select box: only that job's rows stay visible.
	p.eval(t, `(function () {
		var s = document.querySelector("select[data-filter=job]");
		s.value = "snmp";
		s.dispatchEvent(new Event("change", {bubbles: true}));
	})()`)
	snmp := instances(fleet, func(ts *drain.TargetStatus) bool { return ts.Job == "snmp" })
	p.wantVisible(t, "job=snmp", len(snmp))
	if jobs := p.visible(t, "job"); slices.ContainsFunc(jobs, func(j string) bool { return j != "snmp" }) {
		t.Errorf("job filter shows jobs %v", jobs)
	}

	// A click on a header sorts by that column, a second click reverses it.
	p.click(t, `th[data-key=instance] button`)
	slices.Sort(snmp) // the instances are zero-padded: byte order is the page's order
	if got := p.visible(t, "instance"); !slices.Equal(got, snmp) {
		t.Errorf("sorted by instance:\n got %v\nwant %v", got, snmp)
	}
	p.click(t, `th[data-key=instance] button`)
	if got := p.visible(t, "instance"); !slices.Equal(got, reversed(snmp)) {
		t.Errorf("sorted by instance, descending:\n got %v\nwant %v", got, reversed(snmp))
	}
	// A numeric column sorts as numbers, negative ones (an edge clock ahead) included.
	p.click(t, `th[data-key=lag] button`)
	var lags []time.Duration
	for _, s := range p.visible(t, "lag") {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		lags = append(lags, d)
	}
	if !slices.IsSorted(lags) || lags[0] >= 0 {
		t.Errorf("lags not in numeric order: %v", lags)
	}

	// Typing into the instance box narrows further.
	p.eval(t, `document.querySelector("input[data-filter=instance]").focus()`)
	p.call(t, "Input.insertText", map[string]any{"text": "host-01"}, nil)
	want := instances(fleet, func(ts *drain.TargetStatus) bool {
		return ts.Job == "snmp" && strings.Contains(ts.Instance, "host-01")
	})
	p.wantVisible(t, "job=snmp instance~host-01", len(want))
	if hash := p.eval(t, `location.hash`); hash != "#job=snmp&instance=host-01&sort=lag" {
		t.Errorf("the fragment does not keep the view: %v", hash)
	}

	// The fragment applies the filters and the sort on load: a view can be shared.
	p.navigate(t, srv.URL+"/targets?format=html#publisher=edge-b&state=down&sort=instance&desc=1")
	want = instances(fleet, func(ts *drain.TargetStatus) bool { return ts.Publisher == "edge-b" && ts.State == drain.StateDown })
	slices.Sort(want)
	slices.Reverse(want)
	if len(want) == 0 {
		t.Fatal("the fleet has no down target of edge-b")
	}
	p.wantVisible(t, "publisher=edge-b state=down from the fragment", len(want))
	if got := p.visible(t, "instance"); !slices.Equal(got, want) {
		t.Errorf("from the fragment:\n got %v\nwant %v", got, want)
	}

	// The server filters too; the page says so.
	p.navigate(t, srv.URL+"/targets?job=blackbox")
	blackbox := instances(fleet, func(ts *drain.TargetStatus) bool { return ts.Job == "blackbox" })
	if n := p.eval(t, `document.querySelectorAll("#targets tbody tr").length`); n != float64(len(blackbox)) {
		t.Errorf("server-side filter: %v rows, want %d", n, len(blackbox))
	}
	p.wantVisible(t, "server-side job=blackbox", len(blackbox))

	// Labels and error texts are data, never markup: the hostile row's script did not
	// run, and its text shows as written.
	p.navigate(t, srv.URL+"/targets")
	if pwned := p.eval(t, `String(window.pwned)`); pwned != "undefined" {
		t.Errorf("a target's text ran as script: window.pwned = %v", pwned)
	}
	if text := p.eval(t, `document.querySelector("tr[data-job=evil] td.err").textContent`); text != hostile {
		t.Errorf("error text shows as %q", text)
	}
	p.wantNoErrors(t)
}

// hostile is an error text that would run script if the page did not escape it.
const hostile = `<script>window.pwned=1</script><img src=x onerror="window.pwned=2">`

// pageFleet is n synthetic targets over three jobs and three publishers, in every state,
// plus one whose labels and error are hostile; sorted by job and instance as
// drain.Targets returns them.
func pageFleet(n int) []drain.TargetStatus {
	start := time.Now().Add(-20 * time.Second)
	states := []drain.State{drain.StateUp, drain.StateUp, drain.StateDown, drain.StateRetrying, drain.StateStale, drain.StateUp, drain.StateRejected}
	var out []drain.TargetStatus
	for i := range n {
		st := states[i%len(states)]
		ts := drain.TargetStatus{
			Job: []string{"node", "snmp", "blackbox"}[i%3], Instance: fmt.Sprintf("host-%03d:9100", (i*7)%n),
			Publisher: []string{"edge-a", "edge-b", "edge-c"}[(i/3)%3], Site: "dc1", State: st,
			Start: start, Duration: 50 * time.Millisecond, Series: (i * 37) % 1000,
			Received: start.Add(time.Duration(i%11-3) * 250 * time.Millisecond), Seq: uint64(i), Age: 20 * time.Second,
			Sinks: []drain.SinkStatus{{Sink: "pushgateway", Fate: drain.FateDelivered, At: start.Add(time.Second), Attempts: 1, LastSuccess: start.Add(time.Second)}},
		}
		if st == drain.StateDown {
			ts.Error = "connection refused"
		}
		out = append(out, ts)
	}
	out = append(out, drain.TargetStatus{Job: "evil", Instance: `"><script>window.pwned=3</script>`, Publisher: "edge-a",
		State: drain.StateDown, Error: hostile, Start: start, Received: start})
	slices.SortFunc(out, func(a, b drain.TargetStatus) int {
		if c := strings.Compare(a.Job, b.Job); c != 0 {
			return c
		}
		return strings.Compare(a.Instance, b.Instance)
	})
	return out
}

func instances(fleet []drain.TargetStatus, keep func(*drain.TargetStatus) bool) []string {
	var out []string
	for i := range fleet {
		if keep(&fleet[i]) {
			out = append(out, fleet[i].Instance)
		}
	}
	return out
}

func reversed(s []string) []string {
	r := slices.Clone(s)
	slices.Reverse(r)
	return r
}

// chromium is a headless Chromium driven over --remote-debugging-pipe: the DevTools
// protocol as NUL-terminated JSON messages on file descriptors 3 (to the browser) and
// 4 (from it), which needs nothing beyond the standard library.
type chromium struct {
	cmd    *exec.Cmd
	out    io.WriteCloser
	stderr *limitedWriter

	mu      sync.Mutex
	nextID  int
	waiting map[int]chan cdpMessage
	events  []cdpMessage
	notify  chan struct{} // signalled on each event
	closed  chan struct{} // the pipe from the browser ended
}

type cdpMessage struct {
	ID        int             `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// startChromium starts the browser; the test fails if there is none.
func startChromium(t *testing.T) *chromium {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Fatal("chromium not found in PATH: apt-get install -y chromium")
	}
	toBrowser, browserIn, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	browserOut, fromBrowser, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--disable-extensions", "--mute-audio", "--user-data-dir="+t.TempDir(), "--remote-debugging-pipe", "about:blank")
	cmd.ExtraFiles = []*os.File{toBrowser, fromBrowser} // fds 3 and 4
	b := &chromium{cmd: cmd, out: browserIn, stderr: &limitedWriter{n: 64 << 10}, waiting: map[int]chan cdpMessage{},
		notify: make(chan struct{}, 1), closed: make(chan struct{})}
	cmd.Stderr = b.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	toBrowser.Close()
	fromBrowser.Close()
	go b.read(browserOut)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b.send(ctx, "", "Browser.close", nil, nil) // the browser may exit before it answers
		exited := make(chan struct{})
		go func() {
			cmd.Wait()
			close(exited)
		}()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		browserIn.Close()
		browserOut.Close()
		if t.Failed() {
			t.Logf("chromium stderr:\n%s", b.stderr)
		}
	})
	return b
}

func (b *chromium) read(r io.Reader) {
	defer close(b.closed)
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		data, err := br.ReadBytes(0)
		if err != nil {
			return
		}
		var m cdpMessage
		if json.Unmarshal(data[:len(data)-1], &m) != nil {
			continue
		}
		b.mu.Lock()
		if m.ID != 0 {
			if ch := b.waiting[m.ID]; ch != nil {
				ch <- m
				delete(b.waiting, m.ID)
			}
		} else {
			b.events = append(b.events, m)
			select {
			case b.notify <- struct{}{}:
			default:
			}
		}
		b.mu.Unlock()
	}
}

// send calls method in session ("" for the browser) and decodes its result into result.
func (b *chromium) send(ctx context.Context, session, method string, params, result any) error {
	raw, err := json.Marshal(params)
	if err != nil {
		return err
	}
	if params == nil {
		raw = nil
	}
	ch := make(chan cdpMessage, 1)
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	b.waiting[id] = ch
	b.mu.Unlock()
	msg, err := json.Marshal(cdpMessage{ID: id, Method: method, Params: raw, SessionID: session})
	if err != nil {
		return err
	}
	if _, err := b.out.Write(append(msg, 0)); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return fmt.Errorf("%s: %d %s", method, m.Error.Code, m.Error.Message)
		}
		if result != nil {
			return json.Unmarshal(m.Result, result)
		}
		return nil
	case <-b.closed:
		return fmt.Errorf("%s: chromium exited", method)
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// tab is one page of the browser.
type tab struct {
	b       *chromium
	session string
}

func (b *chromium) open(t *testing.T) *tab {
	t.Helper()
	var target struct {
		TargetID string `json:"targetId"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.send(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		t.Fatalf("%v\nchromium stderr:\n%s", err, b.stderr)
	}
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.send(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached); err != nil {
		t.Fatal(err)
	}
	p := &tab{b: b, session: attached.SessionID}
	p.call(t, "Page.enable", nil, nil)
	p.call(t, "Runtime.enable", nil, nil)
	p.call(t, "Log.enable", nil, nil)
	return p
}

func (p *tab) call(t *testing.T, method string, params, result any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.b.send(ctx, p.session, method, params, result); err != nil {
		t.Fatal(err)
	}
}

// navigate loads url and waits for its load event (the page's script has run by then).
func (p *tab) navigate(t *testing.T, url string) {
	t.Helper()
	p.b.mu.Lock()
	seen := len(p.b.events)
	p.b.mu.Unlock()
	var nav struct {
		ErrorText string `json:"errorText"`
	}
	p.call(t, "Page.navigate", map[string]any{"url": url}, &nav)
	if nav.ErrorText != "" {
		t.Fatalf("navigate %s: %s", url, nav.ErrorText)
	}
	deadline := time.After(30 * time.Second)
	for {
		p.b.mu.Lock()
		for _, e := range p.b.events[seen:] {
			if e.Method == "Page.loadEventFired" && e.SessionID == p.session {
				p.b.mu.Unlock()
				return
			}
		}
		seen = len(p.b.events)
		p.b.mu.Unlock()
		select {
		case <-p.b.notify:
		case <-p.b.closed:
			t.Fatalf("chromium exited loading %s\n%s", url, p.b.stderr)
		case <-deadline:
			t.Fatalf("%s did not load", url)
		}
	}
}

// eval evaluates a JavaScript expression in the page and returns its value as JSON
// decodes it.
func (p *tab) eval(t *testing.T, expr string) any {
	t.Helper()
	var res struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	p.call(t, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &res)
	if e := res.ExceptionDetails; e != nil {
		t.Fatalf("%s: %s %s", expr, e.Text, e.Exception.Description)
	}
	return res.Result.Value
}

// click clicks the centre of the element selector finds, as a user's mouse does.
func (p *tab) click(t *testing.T, selector string) {
	t.Helper()
	rect, ok := p.eval(t, `(function () {
		var r = document.querySelector(`+jsString(selector)+`).getBoundingClientRect();
		return [r.left + r.width / 2, r.top + r.height / 2];
	})()`).([]any)
	if !ok || len(rect) != 2 {
		t.Fatalf("no %s to click", selector)
	}
	for _, typ := range []string{"mouseMoved", "mousePressed", "mouseReleased"} {
		p.call(t, "Input.dispatchMouseEvent", map[string]any{"type": typ, "x": rect[0], "y": rect[1],
			"button": "left", "clickCount": 1}, nil)
	}
}

// visible returns, for the rows not hidden and in their order, the text of column key.
func (p *tab) visible(t *testing.T, key string) []string {
	t.Helper()
	v := p.eval(t, `(function () {
		var heads = Array.from(document.querySelectorAll("#targets thead th"));
		var col = heads.findIndex(function (h) { return h.dataset.key === `+jsString(key)+`; });
		return Array.from(document.querySelectorAll("#targets tbody tr"))
			.filter(function (r) { return !r.hidden && r.getClientRects().length > 0; })
			.map(function (r) { return r.cells[col].textContent; });
	})()`).([]any)
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = x.(string)
	}
	return out
}

// wantVisible checks that n rows are visible and that the page's count says so.
func (p *tab) wantVisible(t *testing.T, what string, n int) {
	t.Helper()
	if got := len(p.visible(t, "job")); got != n {
		t.Errorf("%s: %d rows visible, want %d", what, got, n)
	}
	if shown := p.eval(t, `document.getElementById("shown").textContent`); shown != fmt.Sprint(n) {
		t.Errorf("%s: the page counts %v shown, want %d", what, shown, n)
	}
}

// wantNoErrors checks that no script threw and nothing was refused by the page's
// Content-Security-Policy (which would mean the page's own script or style was blocked).
func (p *tab) wantNoErrors(t *testing.T) {
	t.Helper()
	p.b.mu.Lock()
	defer p.b.mu.Unlock()
	for _, e := range p.b.events {
		switch e.Method {
		case "Runtime.exceptionThrown":
			t.Errorf("script error: %s", e.Params)
		case "Runtime.consoleAPICalled", "Log.entryAdded":
			if bytes.Contains(e.Params, []byte(`"type":"error"`)) || bytes.Contains(e.Params, []byte(`"level":"error"`)) {
				t.Errorf("console error: %s", e.Params)
			}
		}
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// limitedWriter keeps the first n bytes written to it and discards the rest.
type limitedWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
	n  int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (l *limitedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
