package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults for zero JetStreamOptions fields.
const (
	// DefaultDuplicateWindow is the Nats-Msg-Id dedup window of a stream DialJetStream
	// creates (the server's default).
	DefaultDuplicateWindow = 2 * time.Minute
	// DefaultMaxPubAcksPending is how many JetStream publishes may await their ack.
	DefaultMaxPubAcksPending = 4096
)

// Errors of DialJetStream (and of ConsumeJetStream's attempts) about the stream itself,
// for the caller to tell apart from an unreachable server: retrying does not help until
// someone creates or changes the stream, or the caller's configuration.
var (
	// ErrNoStream: the stream does not exist, and Create was not set. The error says
	// how to create it with the nats CLI (StreamAddCommand).
	ErrNoStream = errors.New("stream: no such JetStream stream")
	// ErrStreamMismatch: the stream exists but cannot serve: it does not capture
	// Subject+".>", or (for publishing) it is sealed or does not acknowledge
	// publishes. The error says which.
	ErrStreamMismatch = errors.New("stream: JetStream stream does not fit")
)

// MaxReplicas is the most replicas a JetStream stream may have.
const MaxReplicas = 5

// MaxMsgIDLen is the longest Nats-Msg-Id PublishAsyncMsg accepts; MaxPayload leaves
// room for a header carrying one this long.
const MaxMsgIDLen = 128

// msgIDHeaderOverhead is the size of the NATS header block "NATS/1.0\r\nNats-Msg-Id:
// <id>\r\n\r\n" less the id itself; NATS counts headers against max_payload.
const msgIDHeaderOverhead = len("NATS/1.0\r\n") + len(jetstream.MsgIDHeader) + len(": \r\n") + len("\r\n")

// JetStreamOptions configures DialJetStream. Zero fields take the defaults noted.
type JetStreamOptions struct {
	// URLs of the NATS servers, e.g. nats://host:4222; at least one. Credentials in a
	// URL are used but never shown in errors or logs.
	URLs []string
	// Name is the NATS connection name shown in monitoring (default "prometheus-streams").
	Name string
	// Stream is the JetStream stream name; required, no '.', '*', '>' or white space.
	Stream string
	// Subject is the subject prefix: the stream must capture Subject+".>", and
	// messages are published on subjects built by Subject(prefix, job, instance);
	// required, dot-separated tokens without wildcards or white space.
	Subject string
	// Create makes DialJetStream create the stream (file storage, subjects
	// Subject+".>", MaxAge, DuplicateWindow, Replicas) when it does not exist. Without
	// it the stream must exist. Either way an existing stream must capture
	// Subject+".>"; it is never modified.
	Create bool
	// Replicas is how many servers of a JetStream cluster hold a created stream, 1 to
	// MaxReplicas (default 1). Consumers of the stream have as many.
	Replicas int
	// MaxAge is how long a created stream keeps messages (0: no limit).
	MaxAge time.Duration
	// DuplicateWindow is how long a created stream remembers Nats-Msg-Id values to
	// drop duplicates (default DefaultDuplicateWindow; at most MaxAge, as the server
	// requires).
	DuplicateWindow time.Duration
	// ConnectTimeout bounds each connection attempt to one server (a share of it when
	// there are several URLs, as for STANOptions) and each JetStream API request
	// (default DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// PubAckWait is how long a published message waits for its ack before done gets
	// ErrAckTimeout; it also bounds how long PublishAsync blocks while
	// MaxPubAcksPending publishes await their acks (default DefaultPubAckWait).
	PubAckWait time.Duration
	// MaxPubAcksPending is how many publishes may await their ack (default
	// DefaultMaxPubAcksPending).
	MaxPubAcksPending int
	// Security: TLS and authentication to NATS (none by default).
	Security Security
	// Logger receives connection events; nil: discard.
	Logger *slog.Logger
}

func (o *JetStreamOptions) normalize() error {
	switch {
	case len(o.URLs) == 0:
		return errors.New("stream: no NATS server URL")
	case o.Stream == "":
		return errors.New("stream: no JetStream stream name")
	case strings.ContainsAny(o.Stream, ".*>/\\") || strings.ContainsFunc(o.Stream, isSpace):
		return fmt.Errorf("stream: invalid JetStream stream name %q", o.Stream)
	case o.MaxAge < 0 || o.DuplicateWindow < 0:
		return errors.New("stream: negative MaxAge or DuplicateWindow")
	case o.Replicas < 0 || o.Replicas > MaxReplicas:
		return fmt.Errorf("stream: %d replicas: want 1 to %d", o.Replicas, MaxReplicas)
	}
	if err := validChannel(o.Subject); err != nil {
		return err
	}
	if err := o.Security.validate(); err != nil {
		return err
	}
	if o.Name == "" {
		o.Name = "prometheus-streams"
	}
	o.DuplicateWindow = o.duplicateWindow()
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.PubAckWait <= 0 {
		o.PubAckWait = DefaultPubAckWait
	}
	if o.MaxPubAcksPending <= 0 {
		o.MaxPubAcksPending = DefaultMaxPubAcksPending
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// duplicateWindow is DuplicateWindow, defaulted and capped at MaxAge.
func (o *JetStreamOptions) duplicateWindow() time.Duration {
	return DuplicateWindow(o.DuplicateWindow, o.MaxAge)
}

// DuplicateWindow is the duplicate window a stream created with the window want (0:
// DefaultDuplicateWindow) and the max age maxAge (0: none) gets: at most maxAge, as the
// server refuses a longer one.
func DuplicateWindow(want, maxAge time.Duration) time.Duration {
	if want == 0 {
		want = DefaultDuplicateWindow
	}
	if maxAge > 0 && want > maxAge {
		want = maxAge
	}
	return want
}

// StreamAddCommand is the nats CLI command creating the stream as DialJetStream does
// with Create (file storage, limits retention, subjects Subject+".>", MaxAge,
// DuplicateWindow, Replicas), for operators who create streams themselves.
func (o JetStreamOptions) StreamAddCommand() string {
	cmd := fmt.Sprintf("nats stream add %s --subjects %s --storage file --retention limits --discard old",
		shellQuote(o.Stream), shellQuote(o.Subject+".>"))
	if o.MaxAge > 0 {
		cmd += " --max-age " + shortDuration(o.MaxAge)
	}
	return cmd + fmt.Sprintf(" --dupe-window %s --replicas %d --defaults", shortDuration(o.duplicateWindow()), max(o.Replicas, 1))
}

// suggestedReplicas is the replicas StreamAddCommand proposes for a stream that is
// missing: Replicas if set, else 3 on a cluster of at least three servers (which then
// rides through the loss of any one), else 1.
func (o JetStreamOptions) suggestedReplicas(nc *nats.Conn) int {
	switch {
	case o.Replicas > 0:
		return o.Replicas
	case nc.ConnectedClusterName() != "" && len(nc.Servers()) >= 3:
		return 3
	default:
		return 1
	}
}

// shortDuration writes d as Go does, without its zero minutes and seconds: "2m", "1h".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_-.:/=@%+,", r))
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// JetStream is a connection to a NATS server with JetStream, bound to one stream. Its
// methods are safe for concurrent use.
type JetStream struct {
	log    *slog.Logger
	o      JetStreamOptions
	where  string
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream

	mu      sync.Mutex
	pending map[*nats.Msg]func(error) // publishes awaiting their ack
	closed  bool

	onConnChange func() // ConsumeJetStream's; nil for DialJetStream
}

// DialJetStream connects to NATS (o.URLs, each tried once) and looks up o.Stream,
// creating it with o.Create. It returns when ready, on failure, or as soon as ctx ends.
// Failure to reach NATS and ctx ending give an error wrapping ErrUnreachable; refused
// credentials or failed TLS wrap ErrAuth too (see AuthReason). A missing stream
// (without Create) gives ErrNoStream; one that does not capture o.Subject+".>", is
// sealed or does not acknowledge publishes gives ErrStreamMismatch, saying which; JetStream
// not being enabled gives a plain error. Retrying those does not help until the server
// or the options change. An existing stream is never modified.
//
// Once connected, the NATS connection reconnects without limit; publishes made while
// it is disconnected fail at once with ErrUnreachable rather than being buffered.
func DialJetStream(ctx context.Context, o JetStreamOptions) (*JetStream, error) {
	if err := o.normalize(); err != nil {
		return nil, err
	}
	j, err := dialJetStream(ctx, o, nil)
	if err != nil {
		return nil, err
	}
	// What a consumer does not mind but a publisher cannot work with.
	cfg := j.StreamConfig()
	switch {
	case cfg.Sealed:
		err = fmt.Errorf("%w: %q at %s is sealed: it takes no more messages", ErrStreamMismatch, o.Stream, j.where)
	case cfg.NoAck:
		err = fmt.Errorf("%w: %q at %s does not acknowledge publishes (no_ack): a publisher cannot know what it stored", ErrStreamMismatch, o.Stream, j.where)
	}
	if err != nil {
		_ = j.Close()
		return nil, err
	}
	return j, nil
}

// StreamConfig is the stream's configuration, as the server gave it at dial time.
func (j *JetStream) StreamConfig() jetstream.StreamConfig { return j.stream.CachedInfo().Config }

func dialJetStream(ctx context.Context, o JetStreamOptions, onConnChange func()) (*JetStream, error) {
	where := redactURLs(o.URLs)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: connect to %s: %w", ErrUnreachable, where, err)
	}
	type result struct {
		j   *JetStream
		err error
	}
	ch := make(chan result, 1)
	go func() {
		j, err := connectJetStream(ctx, o, where, onConnChange)
		ch <- result{j, err}
	}()
	select {
	case r := <-ch:
		return r.j, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.j != nil {
				_ = r.j.Close()
			}
		}()
		return nil, fmt.Errorf("%w: connect to %s: %w", ErrUnreachable, where, ctx.Err())
	}
}

func connectJetStream(ctx context.Context, o JetStreamOptions, where string, onConnChange func()) (*JetStream, error) {
	j := &JetStream{
		log:          o.Logger.With("stream", o.Stream),
		o:            o,
		where:        where,
		pending:      make(map[*nats.Msg]func(error)),
		onConnChange: onConnChange,
	}
	nc, err := connectNATS(o.URLs, o.Name, o.ConnectTimeout, &o.Security, where, connEvents{log: j.log, onChange: j.onConnChange})
	if err != nil {
		return nil, err
	}
	j.nc = nc
	js, err := jetstream.New(nc,
		jetstream.WithDefaultTimeout(o.ConnectTimeout),
		jetstream.WithPublishAsyncMaxPending(o.MaxPubAcksPending),
		jetstream.WithPublishAsyncTimeout(o.PubAckWait),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
			// A duplicate (ack.Duplicate) was persisted before: success too.
			j.finish(m, nil)
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			j.finish(m, j.ackError(m.Subject, err))
		}),
	)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("stream: JetStream at %s: %w", where, err)
	}
	j.js = js
	actx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	if err := j.bindStream(actx); err != nil {
		nc.Close()
		return nil, err
	}
	j.log.Debug("connected to JetStream", "url", nc.ConnectedUrlRedacted())
	return j, nil
}

// bindStream looks up (or creates) the stream and checks it captures the subjects. It
// asks again, until ctx ends, while the answer may change by itself: no answer in time
// or no responder (a cluster electing the stream's leader), JetStream temporarily
// unavailable, or the connection lost mid-request (the client reconnects to another
// server).
func (j *JetStream) bindStream(ctx context.Context) error {
	wait := 20 * time.Millisecond
	for {
		st, err := j.findStream(ctx)
		if err != nil && transientAPIError(err) && ctx.Err() == nil && j.awaitRetry(ctx, wait) {
			j.log.Debug("JetStream stream not available yet; asking again", "err", err)
			wait = min(2*wait, 500*time.Millisecond)
			continue
		}
		return j.bind(st, err)
	}
}

// bind makes st the stream, if it captures the subjects; or says why not.
func (j *JetStream) bind(st jetstream.Stream, err error) error {
	o := j.o
	switch {
	case err == nil:
	case errors.Is(err, jetstream.ErrStreamNotFound):
		hint := o
		hint.Replicas = o.suggestedReplicas(j.nc)
		return fmt.Errorf("%w %q at %s; create it with: %s", ErrNoStream, o.Stream, j.where, hint.StreamAddCommand())
	case transientAPIError(err):
		return fmt.Errorf("%w: JetStream stream %q at %s: %w", ErrUnreachable, o.Stream, j.where, err)
	default:
		return fmt.Errorf("stream: JetStream stream %q at %s: %w", o.Stream, j.where, err)
	}
	subjects := st.CachedInfo().Config.Subjects
	if !slices.ContainsFunc(subjects, func(p string) bool { return coversPrefix(p, o.Subject) }) {
		return fmt.Errorf("%w: %q at %s captures %q, not %q: add %q to its subjects, or publish under a prefix it captures",
			ErrStreamMismatch, o.Stream, j.where, subjects, o.Subject+".>", o.Subject+".>")
	}
	j.stream = st
	return nil
}

// findStream looks up (or creates) the stream once, within a quarter of the connect
// timeout (while a cluster elects the stream's leader, a request may get no answer at
// all: better ask again), giving up early when the connection drops.
func (j *JetStream) findStream(ctx context.Context) (jetstream.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, max(j.o.ConnectTimeout/4, 250*time.Millisecond))
	defer cancel()
	ctx, stop := j.untilDisconnected(ctx)
	defer stop()
	o := j.o
	st, err := j.js.Stream(ctx, o.Stream)
	replicas := max(o.Replicas, 1)
	if errors.Is(err, jetstream.ErrStreamNotFound) && o.Create {
		st, err = j.js.CreateStream(ctx, jetstream.StreamConfig{
			Name:       o.Stream,
			Subjects:   []string{o.Subject + ".>"},
			Storage:    jetstream.FileStorage,
			MaxAge:     o.MaxAge,
			Duplicates: o.DuplicateWindow,
			Replicas:   replicas,
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // created meanwhile
			st, err = j.js.Stream(ctx, o.Stream)
		}
		if err == nil {
			j.log.Info("created JetStream stream", "subjects", o.Subject+".>", "max_age", o.MaxAge, "replicas", replicas)
		}
	} else if err == nil && o.Create && st.CachedInfo().Config.Replicas != replicas {
		// Never changed (see Create), but the operator asked for other replicas.
		j.log.Warn("the JetStream stream exists with other replicas than create_stream asks for; it is left as it is",
			"replicas", st.CachedInfo().Config.Replicas, "create_replicas", replicas)
	}
	return st, err
}

// untilDisconnected is ctx, also cancelled when the connection drops: a request in
// flight then would only wait for its timeout, its answer lost with the server.
func (j *JetStream) untilDisconnected(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	lost := j.nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	go func() {
		defer j.nc.RemoveStatusListener(lost)
		select {
		case <-lost:
			cancel()
		case <-ctx.Done():
		}
	}()
	if !j.nc.IsConnected() {
		cancel()
	}
	return ctx, cancel
}

// awaitRetry waits before a request is made again: until the connection is back if it
// is down, else for wait. It reports false if ctx ended first.
func (j *JetStream) awaitRetry(ctx context.Context, wait time.Duration) bool {
	back := j.nc.StatusChanged(nats.CONNECTED)
	defer j.nc.RemoveStatusListener(back)
	var again <-chan time.Time
	if j.nc.IsConnected() {
		t := time.NewTimer(wait)
		defer t.Stop()
		again = t.C
	}
	select {
	case <-again:
	case <-back:
	case <-ctx.Done():
		return false
	}
	return true
}

// transientAPIError reports whether a JetStream API request that failed so may succeed
// when made again: no answer in time or no responder, the cluster saying JetStream is
// temporarily unavailable, or the connection lost or being re-established.
func transientAPIError(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected) || leaderless(err)
}

// coversPrefix reports whether the subject pattern matches every subject prefix+".>"
// matches: its tokens equal prefix's or are '*', up to a final '>'.
func coversPrefix(pattern, prefix string) bool {
	pt := strings.Split(pattern, ".")
	st := strings.Split(prefix, ".")
	for i, p := range pt {
		switch {
		case p == ">":
			return i <= len(st)
		case i >= len(st):
			return false
		case p != "*" && p != st[i]:
			return false
		}
	}
	return false
}

// Stream is the name of the stream.
func (j *JetStream) Stream() string { return j.o.Stream }

// MaxPayload is the largest body PublishAsync and PublishAsyncMsg accept: the NATS
// server's max payload less a header with a Nats-Msg-Id of MaxMsgIDLen bytes. (The
// stream's own max message size, if configured smaller, is not checked: such a
// message is rejected by the server with ErrRejected.)
func (j *JetStream) MaxPayload(subject string) int {
	n := j.nc.MaxPayload() - int64(msgIDHeaderOverhead+MaxMsgIDLen)
	if n < 0 {
		return 0
	}
	return int(n)
}

// PublishAsync is PublishAsyncMsg without a message ID: the server does not
// deduplicate a retry of it.
func (j *JetStream) PublishAsync(subject string, data []byte, done func(error)) error {
	return j.PublishAsyncMsg(subject, data, "", done)
}

// PublishAsyncMsg publishes data on subject (one the stream captures, e.g. built by
// Subject) with the Nats-Msg-Id header msgID, unless empty, and calls done exactly once
// with the server's ack: nil when persisted (also when the server dropped it as a
// duplicate of a message with the same msgID stored within the stream's duplicate
// window: so a retry after an unanswered publish is stored once), else an error
// wrapping ErrAckTimeout, ErrUnreachable (the connection dropped before the ack: the
// message may have been persisted; or no stream leader answered, as while a cluster
// elects one, or when no stream captures subject: it was not), ErrClosed (Close came
// first: it may have been persisted) or ErrRejected (the stream refused it, e.g. a
// store limit). done runs on a transport goroutine,
// possibly after Close returns; it must not block and must not publish. A nil done
// ignores the result.
//
// It returns an error instead, and never calls done, when the message cannot be sent:
// ErrTooLarge, ErrClosed, ErrUnreachable (NATS disconnected), ErrAckTimeout (still
// MaxPubAcksPending publishes awaiting acks after PubAckWait), or an invalid msgID
// (longer than MaxMsgIDLen, or with control characters).
func (j *JetStream) PublishAsyncMsg(subject string, data []byte, msgID string, done func(error)) error {
	if max := j.MaxPayload(subject); len(data) > max {
		return fmt.Errorf("%w: %d bytes to %q, server accepts %d", ErrTooLarge, len(data), subject, max)
	}
	if len(msgID) > MaxMsgIDLen || strings.ContainsFunc(msgID, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return fmt.Errorf("stream: invalid message ID %q: at most %d bytes, no control characters", msgID, MaxMsgIDLen)
	}
	if done == nil {
		done = func(error) {}
	}
	m := &nats.Msg{Subject: subject, Data: data}
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return fmt.Errorf("stream: publish to %q: %w", subject, ErrClosed)
	}
	j.pending[m] = done // before publishing: the ack can precede the return
	j.mu.Unlock()
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	opts = append(opts, jetstream.WithStallWait(j.o.PubAckWait))
	_, err := j.js.PublishMsgAsync(m, opts...)
	if err == nil || !j.claim(m) {
		return nil
	}
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		return fmt.Errorf("%w: %d bytes to %q: %w", ErrTooLarge, len(data), subject, err)
	case errors.Is(err, nats.ErrConnectionClosed):
		return fmt.Errorf("stream: publish to %q: %w: %w", subject, ErrClosed, err)
	case errors.Is(err, nats.ErrReconnectBufExceeded):
		return fmt.Errorf("%w: publish to %q while disconnected from %s: %w", ErrUnreachable, subject, j.where, err)
	case errors.Is(err, jetstream.ErrTooManyStalledMsgs):
		return fmt.Errorf("%w: publish to %q: %w", ErrAckTimeout, subject, err)
	default:
		return fmt.Errorf("stream: publish to %q: %w", subject, err)
	}
}

// claim removes m from the pending publishes and reports whether it was there.
func (j *JetStream) claim(m *nats.Msg) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.pending[m]; !ok {
		return false
	}
	delete(j.pending, m)
	return true
}

// finish reports the ack of m, if it is still pending.
func (j *JetStream) finish(m *nats.Msg, err error) {
	j.mu.Lock()
	done, ok := j.pending[m]
	delete(j.pending, m)
	j.mu.Unlock()
	if ok {
		done(err)
	}
}

func (j *JetStream) ackError(subject string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		return fmt.Errorf("%w: publish to %q: %w", ErrAckTimeout, subject, err)
	case errors.Is(err, nats.ErrDisconnected):
		return fmt.Errorf("%w: publish to %q: disconnected awaiting ack: %w", ErrUnreachable, subject, err)
	case errors.Is(err, nats.ErrConnectionClosed):
		return fmt.Errorf("stream: publish to %q: awaiting ack: %w: %w", subject, ErrClosed, err)
	case leaderless(err):
		return fmt.Errorf("%w: publish to %q: no stream leader answered: %w", ErrUnreachable, subject, err)
	case inProcess(err):
		return fmt.Errorf("%w: publish to %q: a message of this ID is still being stored: %w", ErrAckTimeout, subject, err)
	default:
		return fmt.Errorf("%w: publish to %q: %w", ErrRejected, subject, err)
	}
}

// inProcess reports whether err says that the stream is storing a message of the same
// ID right now (a publish tried again before the first try's ack): asked again later,
// the stream acks it as a duplicate, or stores it if the first try failed.
func inProcess(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrCodeDuplicateInProcess
}

// Error codes of the server's that nats.go does not name.
const (
	jsErrCodeClusterNotAvailable jetstream.ErrorCode = 10008 // JSClusterNotAvailErr
	jsErrCodeDuplicateInProcess  jetstream.ErrorCode = 10158 // JSStreamDuplicateMessageConflict
)

// leaderless reports whether err says that, for now, no server serves the stream: no
// one listens on the subject (a cluster electing the stream's leader), or the cluster
// says JetStream is temporarily unavailable. The message was not stored.
func leaderless(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrCodeClusterNotAvailable
}

// Close closes the NATS connection. Publishes still awaiting their ack are reported to
// their done with ErrClosed (they may nevertheless have been persisted). Idempotent.
func (j *JetStream) Close() error {
	j.mu.Lock()
	j.closed = true
	j.mu.Unlock()
	j.nc.Close()
	j.mu.Lock()
	left := j.pending
	j.pending = make(map[*nats.Msg]func(error))
	j.mu.Unlock()
	for m, done := range left {
		done(fmt.Errorf("stream: publish to %q: awaiting ack: %w", m.Subject, ErrClosed))
	}
	return nil
}

// Subject returns prefix.<job>.<instance> with job and instance escaped into single
// subject tokens, so that whatever they hold cannot add tokens, wildcards or white
// space to the subject. The escaping keeps ASCII letters, digits, '_', '-' and ':'
// and replaces every other byte (notably '.', '*', '>', '%', white space, and each byte
// of non-ASCII UTF-8) with '%' and two upper-case hex digits; an empty string becomes
// "%" alone. It is reversible (UnescapeToken), so distinct values give distinct
// tokens.
func Subject(prefix, job, instance string) string {
	return prefix + "." + EscapeToken(job) + "." + EscapeToken(instance)
}

// EscapeToken escapes s into one subject token, as Subject does.
func EscapeToken(s string) string {
	if s == "" {
		return "%"
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == ':' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// UnescapeToken reverses EscapeToken; it fails on a token EscapeToken cannot produce.
func UnescapeToken(tok string) (string, error) {
	if tok == "%" {
		return "", nil
	}
	var b strings.Builder
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c != '%' {
			if EscapeToken(string(c)) != string(c) {
				return "", fmt.Errorf("stream: invalid escaped token %q", tok)
			}
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(tok) {
			return "", fmt.Errorf("stream: invalid escaped token %q", tok)
		}
		hi, lo := unhex(tok[i+1]), unhex(tok[i+2])
		if hi < 0 || lo < 0 {
			return "", fmt.Errorf("stream: invalid escaped token %q", tok)
		}
		d := byte(hi<<4 | lo)
		if EscapeToken(string(d)) == string(d) { // would not have been escaped
			return "", fmt.Errorf("stream: invalid escaped token %q", tok)
		}
		b.WriteByte(d)
		i += 2
	}
	if b.Len() == 0 {
		return "", fmt.Errorf("stream: invalid escaped token %q", tok)
	}
	return b.String(), nil
}

// unhex decodes an upper-case hex digit, or returns -1.
func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func isSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\f' || r == '\v'
}
