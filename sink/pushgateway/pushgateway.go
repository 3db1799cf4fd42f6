// Package pushgateway talks to a Prometheus Push Gateway: replace, delete and list groups.
// Its Sink delivers the drain's scrapes there, one group per target, and checks every
// push for consistency with the groups it owns the way the gateway's own check would,
// and claims every family before it introduces it, against what other drains push
// into the same gateway (claims.go), so that the gateway can run with
// --push.disable-consistency-check.
//
// The client never logs and never retries: it returns errors that wrap ErrRejected
// (the gateway refused the request; sending it again will not help) or
// ErrUnavailable (the gateway could not be reached or failed; try again later), so
// the caller decides. Errors name the operation, the group and the URL path, but
// never the base URL, which is where credentials could hide.
//
// It is written against Push Gateway 1.5 (Debian's package), whose behaviour the
// tests check with the real binary: a successful PUT answers 200 with the
// consistency check on and 202 with it off, DELETE answers 202 even for a group
// that does not exist, and a push is refused with 400 and a plain-text reason.
// Pushes are in the delimited protobuf format, in which 1.5 takes native
// histograms, exemplars and created timestamps, keeps them, and serves them whole
// to a protobuf scrape of its /metrics.
package pushgateway

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
	promcfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/prometheus-streams/prometheus-streams/internal/version"
)

// Defaults for Options.Timeout and Options.ListTimeout.
const (
	DefaultTimeout     = 10 * time.Second
	DefaultListTimeout = 2 * time.Minute
)

// maxMessage is how much of an error response body an Error keeps: enough for
// the gateway's one-line reasons, bounded against a proxy's HTML error page.
const maxMessage = 512

// contentType is the delimited protobuf media type the gateway recognises (it
// checks proto and encoding; anything else it parses as text).
const contentType = `application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited`

// encodeFormat pins the encoder's name escaping, which would otherwise follow
// the process-wide model.NameEscapingScheme. Names are checked before encoding
// (see checkNames), so nothing is escaped.
const encodeFormat = expfmt.FmtProtoDelim + "; " + model.EscapingKey + "=" + model.AllowUTF8

var (
	// ErrRejected means the gateway refused the request as invalid (a 4xx other
	// than 408 and 429, or a redirect the client would not follow), or the client
	// refused to send it (Error.Status 0). It is permanent: the same request will
	// fail again.
	//
	// Beware that Push Gateway 1.5 checks a push against everything it holds, so
	// a 400 can also be caused by another group, e.g. one of the same family
	// with another type.
	ErrRejected = errors.New("rejected by push gateway")
	// ErrUnavailable means the request did not succeed for reasons that may pass:
	// network errors, timeouts, 5xx, 408, 429, or an unreadable answer. Retry
	// later.
	ErrUnavailable = errors.New("push gateway unavailable")
)

// Error is the error of a failed request. It unwraps to Err (ErrRejected or
// ErrUnavailable) and to Cause when there is one.
type Error struct {
	Op      string // "push", "delete", "list groups" or "status"
	Group   string // the grouping key as Grouping.String, empty for a listing
	Method  string // HTTP method
	Path    string // URL path, including the base URL's path prefix
	Status  int    // HTTP status, 0 when there was no response
	Message string // the gateway's answer (trimmed, at most 512 bytes) or what went wrong
	Err     error  // ErrRejected or ErrUnavailable
	Cause   error  // underlying error, e.g. context.DeadlineExceeded or a *net.OpError; may be nil
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("pushgateway: ")
	b.WriteString(e.Op)
	if e.Group != "" {
		b.WriteByte(' ')
		b.WriteString(e.Group)
	}
	if e.Status == 0 && errors.Is(e.Err, ErrRejected) {
		// Refused by the client: there was no request to describe.
		b.WriteString(": not sent: ")
		b.WriteString(e.Message)
		return b.String()
	}
	fmt.Fprintf(&b, ": %s %s: ", e.Method, e.Path)
	if e.Status != 0 {
		fmt.Fprintf(&b, "%d %s: ", e.Status, http.StatusText(e.Status))
	}
	b.WriteString(e.Err.Error())
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// Unwrap lets errors.Is find the sentinel and the cause.
func (e *Error) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.Cause}
}

// Options configure a Client.
type Options struct {
	// URL is the gateway's base URL, e.g. http://127.0.0.1:9091, with any path
	// prefix the gateway serves under (--web.route-prefix). Credentials belong in
	// HTTPClientConfig, not here.
	URL string
	// HTTPClientConfig holds basic auth, bearer tokens, TLS and proxy settings.
	HTTPClientConfig promcfg.HTTPClientConfig
	// Timeout bounds a push or delete; zero means DefaultTimeout.
	Timeout time.Duration
	// ListTimeout bounds a listing (Groups), reading the answer included; zero
	// means DefaultListTimeout. A listing costs the gateway time in proportion to
	// all it holds: Push Gateway 1.5 took 1.2-2 s to answer for 100
	// node_exporter-sized groups (8.7 MB of JSON) on a 2-CPU machine.
	ListTimeout time.Duration
	// UserAgent is sent with every request; empty means version.UserAgent().
	UserAgent string
}

// Client talks to one Push Gateway. It is safe for concurrent use.
type Client struct {
	base    string // scheme://host[:port][/prefix], without a trailing slash
	prefix  string // the base URL's path, for error messages
	client  *http.Client
	timeout time.Duration // for a push or delete
	list    time.Duration // for a listing
	bufs    sync.Pool     // *bytes.Buffer for encoding pushes
}

// New returns a Client for the gateway at o.URL.
func New(o Options) (*Client, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("pushgateway: URL: %w", errors.Unwrap(err))
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("pushgateway: URL %q: want an http or https URL", u.Redacted())
	case u.Host == "":
		return nil, fmt.Errorf("pushgateway: URL %q has no host", u.Redacted())
	case u.User != nil:
		// Go would send them as basic auth, but a URL ends up in messages:
		// credentials go in HTTPClientConfig, which keeps them secret.
		return nil, fmt.Errorf("pushgateway: URL %q has credentials: use basic_auth instead", u.Redacted())
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("pushgateway: URL %q: query and fragment are not allowed", u.Redacted())
	}
	if o.Timeout < 0 || o.ListTimeout < 0 {
		return nil, fmt.Errorf("pushgateway: negative timeout")
	}
	if err := o.HTTPClientConfig.Validate(); err != nil {
		return nil, fmt.Errorf("pushgateway: HTTP client config: %w", err)
	}
	ua := o.UserAgent
	if ua == "" {
		ua = version.UserAgent()
	}
	hc, err := promcfg.NewClientFromConfig(o.HTTPClientConfig, "pushgateway", promcfg.WithUserAgent(ua))
	if err != nil {
		return nil, fmt.Errorf("pushgateway: HTTP client: %w", err)
	}
	hc.CheckRedirect = keepMethod(hc.CheckRedirect)

	c := &Client{
		base:    strings.TrimSuffix(u.Scheme+"://"+u.Host+u.EscapedPath(), "/"),
		prefix:  strings.TrimSuffix(u.Path, "/"),
		client:  hc,
		timeout: cmp.Or(o.Timeout, DefaultTimeout),
		list:    cmp.Or(o.ListTimeout, DefaultListTimeout),
	}
	c.bufs.New = func() any { return new(bytes.Buffer) }
	return c, nil
}

// keepMethod wraps a redirect policy (nil: Go's default) so that a redirect
// which would turn a PUT or DELETE into a GET (301, 302, 303) is not followed:
// Go would send a body-less GET and the gateway's answer to that would hide the
// real problem, a base URL that needs fixing. The 3xx is then returned as is.
func keepMethod(next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if req.Method != via[0].Method {
			return http.ErrUseLastResponse
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
}

// Push replaces the group g with fams (HTTP PUT), sent as delimited protobuf,
// which the gateway parses fastest. Families are sent as they are, and samples
// must not carry timestamps (the gateway refuses them). Nil families are skipped.
//
// Push refuses, without sending, families the gateway would mishandle: two of
// one name (it would keep only the last), and metric or label names outside the
// legacy pattern [a-zA-Z_:][a-zA-Z0-9_:]*. Push Gateway 1.5 refuses a UTF-8 label
// name, but takes a UTF-8 metric name and then exposes it unquoted on /metrics,
// which no scraper can parse, so one such push would cost every group its
// scrapes. A caller wanting those series must escape the names first (e.g. with
// model.EscapeMetricFamily).
//
// Any 2xx is success; with its consistency check off, Push Gateway 1.5 answers
// 202 before it has checked the push, so a push it then refuses (e.g. for
// timestamps) still succeeds here and only Group.LastPushSuccessful tells.
func (c *Client) Push(ctx context.Context, g Grouping, fams []*dto.MetricFamily) error {
	return c.send(ctx, request{op: "push", method: http.MethodPut, group: g, timeout: c.timeout}, fams)
}

// add adds fams to the group g (HTTP POST): families of the same names are
// replaced, the group's others kept, or the group created.
func (c *Client) add(ctx context.Context, g Grouping, fams []*dto.MetricFamily) error {
	return c.send(ctx, request{op: "push", method: http.MethodPost, group: g, timeout: c.timeout}, fams)
}

func (c *Client) send(ctx context.Context, op request, fams []*dto.MetricFamily) error {
	g := op.group
	if err := g.Validate(); err != nil {
		return c.refuse(op, err)
	}
	buf := c.bufs.Get().(*bytes.Buffer)
	defer func() {
		// Keep buffers of ordinary groups only, so one huge push does not pin
		// its memory for the Client's life.
		if buf.Cap() <= 16<<20 {
			buf.Reset()
			c.bufs.Put(buf)
		}
	}()
	if err := encode(buf, fams); err != nil {
		return c.refuse(op, err)
	}
	op.body = buf.Bytes()
	_, err := c.do(ctx, op, nil)
	return err
}

// Delete deletes the group g (HTTP DELETE). Deleting a group the gateway does
// not hold is success: the gateway answers 202 either way.
func (c *Client) Delete(ctx context.Context, g Grouping) error {
	op := request{op: "delete", method: http.MethodDelete, group: g, timeout: c.timeout}
	if err := g.Validate(); err != nil {
		return c.refuse(op, err)
	}
	_, err := c.do(ctx, op, nil)
	return err
}

// Status is what the gateway says of itself (GET /api/v1/status).
type Status struct {
	// Start is when the gateway process started: another value than before
	// means it restarted, emptied (or back to its last persisted state).
	Start time.Time
	// ConsistencyCheck is false when the gateway runs with
	// --push.disable-consistency-check.
	ConsistencyCheck bool
	// Now is the gateway's clock when it answered (its Date header, to the
	// second, so up to a second behind); zero without one.
	Now time.Time
}

// Status reads the gateway's start time and whether it checks pushes for
// consistency.
func (c *Client) Status(ctx context.Context) (Status, error) {
	r := request{op: "status", method: http.MethodGet, path: "/api/v1/status", accept: "application/json", timeout: c.timeout}
	var st Status
	r.header = func(h http.Header) {
		st.Now, _ = http.ParseTime(h.Get("Date"))
	}
	var invalid error
	status, err := c.do(ctx, r, func(body io.Reader) error {
		var answer struct {
			Status string `json:"status"`
			Data   struct {
				Flags     map[string]string `json:"flags"`
				StartTime time.Time         `json:"start_time"`
			} `json:"data"`
		}
		b, err := io.ReadAll(io.LimitReader(body, 1<<20))
		if err != nil {
			return err
		}
		switch err := json.Unmarshal(b, &answer); {
		case err != nil:
			invalid = err
		case answer.Status != "success" || answer.Data.StartTime.IsZero():
			invalid = fmt.Errorf("API status %q, start time %v", answer.Status, answer.Data.StartTime)
		}
		st.Start = answer.Data.StartTime
		st.ConsistencyCheck = answer.Data.Flags["push.disable-consistency-check"] != "true"
		return nil
	})
	if err == nil && invalid != nil {
		// Something else answers there (a proxy's page): asking again will not help.
		return Status{}, c.newError(r, status, ErrRejected, "not the gateway's status: "+invalid.Error(), invalid)
	}
	return st, err
}

func encode(buf *bytes.Buffer, fams []*dto.MetricFamily) error {
	seen := make(map[string]struct{}, len(fams))
	enc := expfmt.NewEncoder(buf, encodeFormat)
	for _, f := range fams {
		if f == nil {
			continue
		}
		if _, dup := seen[f.GetName()]; dup {
			return fmt.Errorf("metric family %q given twice", f.GetName())
		}
		seen[f.GetName()] = struct{}{}
		if err := checkNames(f); err != nil {
			return err
		}
		if err := enc.Encode(f); err != nil {
			return fmt.Errorf("encode metric family %q: %w", f.GetName(), err)
		}
	}
	return nil
}

// checkNames refuses names that Push Gateway 1.5 cannot expose.
func checkNames(f *dto.MetricFamily) error {
	if !model.LegacyValidation.IsValidMetricName(f.GetName()) {
		return fmt.Errorf("metric name %q is not a legacy metric name: escape it first", f.GetName())
	}
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if !model.LegacyValidation.IsValidLabelName(l.GetName()) {
				return fmt.Errorf("metric %q: label name %q is not a legacy label name: escape it first", f.GetName(), l.GetName())
			}
		}
	}
	return nil
}

// request describes one call, for do and for its errors.
type request struct {
	op      string
	method  string
	group   Grouping // nil for a listing
	path    string   // below the base URL; the group's Path when empty
	accept  string
	timeout time.Duration
	body    []byte            // sent with the Content-Type of delimited protobuf, for a PUT or POST
	header  func(http.Header) // if not nil, given the headers of a 2xx answer
}

func (r *request) urlPath() string {
	if r.path != "" {
		return r.path
	}
	return r.group.Path()
}

func (c *Client) newError(r request, status int, sentinel error, msg string, cause error) *Error {
	e := &Error{
		Op:      r.op,
		Method:  r.method,
		Path:    c.prefix + r.urlPath(),
		Status:  status,
		Message: msg,
		Err:     sentinel,
		Cause:   cause,
	}
	if r.group != nil {
		e.Group = r.group.String()
	}
	return e
}

// refuse is the error for a request the client will not send.
func (c *Client) refuse(r request, err error) error {
	return c.newError(r, 0, ErrRejected, err.Error(), err)
}

// do sends r within r.timeout. On a 2xx it hands the response body to read
// (if not nil) before the timeout ends, so reading is bounded too.
func (c *Client) do(parent context.Context, r request, read func(io.Reader) error) (int, error) {
	ctx, cancel := context.WithTimeout(parent, r.timeout)
	defer cancel()

	var body io.Reader
	push := r.method == http.MethodPut || r.method == http.MethodPost
	if push {
		body = bytes.NewReader(r.body) // sets GetBody, so a 307/308 can resend it
	}
	req, err := http.NewRequestWithContext(ctx, r.method, c.base+r.urlPath(), body)
	if err != nil {
		return 0, c.refuse(r, err)
	}
	if push {
		// Even for an empty body: the gateway would read it as text, to the
		// same effect, but the request should say what it is.
		req.Header.Set("Content-Type", contentType)
	}
	if r.accept != "" {
		req.Header.Set("Accept", r.accept)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		msg, cause := transportError(parent, ctx, r.timeout, err)
		return 0, c.newError(r, 0, ErrUnavailable, msg, cause)
	}
	defer func() {
		// Drain a little so the connection can be reused; a large unread
		// rest is cheaper to drop with the connection.
		_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
		_ = resp.Body.Close()
	}()

	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		if r.header != nil {
			r.header(resp.Header)
		}
		if read == nil {
			return s, nil
		}
		if err := read(resp.Body); err != nil {
			msg, cause := transportError(parent, ctx, r.timeout, err)
			return s, c.newError(r, s, ErrUnavailable, "reading the answer: "+msg, cause)
		}
		return s, nil
	case s >= 300 && s < 400:
		msg := "redirect not followed"
		if loc, err := resp.Location(); err == nil {
			msg += " (to " + loc.Redacted() + "): fix the gateway URL"
		}
		return s, c.newError(r, s, ErrRejected, msg, nil)
	case s >= 500 || s == http.StatusTooManyRequests || s == http.StatusRequestTimeout:
		return s, c.newError(r, s, ErrUnavailable, readMessage(resp.Body), nil)
	default:
		return s, c.newError(r, s, ErrRejected, readMessage(resp.Body), nil)
	}
}

// readMessage returns the start of an error body, trimmed and valid UTF-8.
func readMessage(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, maxMessage))
	if len(b) == maxMessage {
		// Do not end on half a rune.
		for i := 1; i < utf8.UTFMax && len(b) > 0; i++ {
			if r, size := utf8.DecodeLastRune(b); r != utf8.RuneError || size != 1 {
				break
			}
			b = b[:len(b)-1]
		}
	}
	return strings.TrimSpace(strings.ToValidUTF8(string(b), "\uFFFD"))
}

// transportError describes a failed exchange and returns its cause, without
// the request URL that *url.Error would print. When a context ended, the cause
// is the context's error, and the message says whose: the client's timeout or
// the caller's context.
func transportError(parent, ctx context.Context, timeout time.Duration, err error) (string, error) {
	switch {
	case parent.Err() != nil:
		return "request abandoned: " + context.Cause(parent).Error(), parent.Err()
	case ctx.Err() != nil:
		return fmt.Sprintf("timed out after %v", timeout), ctx.Err()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error(), err
}
