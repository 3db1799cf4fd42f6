package stream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/stan.go"
	"github.com/nats-io/stan.go/pb"
	"google.golang.org/protobuf/encoding/protowire"
)

// Defaults for zero STANOptions fields.
const (
	DefaultConnectTimeout     = 5 * time.Second
	DefaultPubAckWait         = stan.DefaultAckWait            // 30s
	DefaultMaxPubAcksInflight = stan.DefaultMaxPubAcksInflight // 16384
)

// STANOptions configures DialSTAN. Zero fields take the defaults noted.
type STANOptions struct {
	// URLs of the NATS servers, e.g. nats://host:4222; at least one. Credentials in a
	// URL (nats://user:pass@host:4222) are used but never shown in errors or logs.
	URLs []string
	// ClusterID is the NATS Streaming cluster ID; required.
	ClusterID string
	// ClientID identifies the streaming session and must be unique among live
	// connections: build it with ClientID. Only [A-Za-z0-9_-] is allowed; required.
	ClientID string
	// Name is the NATS connection name shown in monitoring (default: ClientID).
	Name string
	// ConnectTimeout bounds each connection attempt to one server (a share of it when
	// there are several URLs, so that one that accepts connections but never answers
	// leaves time for the others; see serverTimeout), the streaming handshake and the
	// close request (default DefaultConnectTimeout). DialSTAN also stops when its ctx
	// ends, whichever is first.
	ConnectTimeout time.Duration
	// PubAckWait is how long a published message waits for its ack before done gets
	// ErrAckTimeout (default DefaultPubAckWait).
	PubAckWait time.Duration
	// MaxPubAcksInflight is how many publishes may await their ack; PublishAsync
	// blocks while that many are outstanding (default DefaultMaxPubAcksInflight).
	MaxPubAcksInflight int
	// Security: TLS and authentication to NATS (none by default).
	Security Security
	// Logger receives connection events (disconnects, reconnects, loss); nil: discard.
	Logger *slog.Logger
}

// ClientID returns a STAN client ID unique to this run: prefix, host and a random part
// joined by "-", with every character outside [A-Za-z0-9_-] replaced by "_" (STAN client
// IDs allow only those). Empty prefix or host are left out. A fixed client ID would
// collide with a previous run's connection that the server has not yet dropped.
func ClientID(prefix, host string) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	parts := make([]string, 0, 3)
	for _, p := range []string{prefix, host} {
		if p != "" {
			parts = append(parts, sanitizeClientID(p))
		}
	}
	return strings.Join(append(parts, hex.EncodeToString(b[:])), "-")
}

// sanitizeClientID replaces each character (rune, or byte of invalid UTF-8) outside
// [A-Za-z0-9_-] with "_".
func sanitizeClientID(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if validClientIDRune(r) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func validClientIDRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-'
}

// STAN is a connection to a NATS Streaming server: a NATS connection (which reconnects
// on its own) carrying one streaming session. Its methods are safe for concurrent use.
type STAN struct {
	log      *slog.Logger
	clientID string
	where    string // redacted URLs, for errors
	nc       *nats.Conn
	sc       stan.Conn

	done    chan struct{} // closed when the session ends (Close or loss)
	endOnce sync.Once
	err     atomic.Pointer[error] // why the session ended

	onConnChange func() // see dialHooks; nil for DialSTAN
}

// DialSTAN connects to NATS (o.URLs, each tried once) and opens a streaming session on
// that connection. It returns when connected, on failure, or as soon as ctx ends. Failure
// to reach NATS, no streaming server answering for o.ClusterID, and ctx ending all give
// an error wrapping ErrUnreachable that names the URLs tried; a client ID held by a
// live connection gives ErrClientIDInUse. A server refusing the credentials, or TLS
// failing (either side not trusting the other's certificate, TLS on one side only),
// gives an error wrapping both ErrAuth and ErrUnreachable that says why (see
// AuthReason). The files of o.Security are read now; one that cannot be read or holds
// no usable material gives an error naming it.
//
// Once connected, the NATS connection reconnects without limit; publishes made while it
// is disconnected fail at once with ErrUnreachable rather than being buffered. The
// session itself is lost (see Done) when the streaming server stops answering its pings
// or no longer knows the client.
func DialSTAN(ctx context.Context, o STANOptions) (*STAN, error) {
	if err := o.normalize(); err != nil {
		return nil, err
	}
	return dialWith(ctx, o, dialHooks{})
}

// dialHooks is what a caller inside the package (Consume) adds to a connection.
type dialHooks struct {
	// stanOpts are appended to the stan.Connect options (e.g. stan.Pings).
	stanOpts []stan.Option
	// onConnChange, if set, is called after each NATS disconnect and reconnect, on
	// nats.go's callback goroutine; it must not block.
	onConnChange func()
}

// dialWith is DialSTAN for normalized options, with hooks.
func dialWith(ctx context.Context, o STANOptions, h dialHooks) (*STAN, error) {
	where := redactURLs(o.URLs)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: connect to %s (cluster %q): %w", ErrUnreachable, where, o.ClusterID, err)
	}
	type result struct {
		s   *STAN
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := dialSTAN(ctx, o, where, h)
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-ctx.Done():
		// nats.Connect does not take a context: let the attempt finish (bounded by
		// ConnectTimeout per server; the streaming handshake aborts with ctx) in the
		// background, and close what it produced.
		go func() {
			if r := <-ch; r.s != nil {
				_ = r.s.Close()
			}
		}()
		return nil, fmt.Errorf("%w: connect to %s (cluster %q): %w", ErrUnreachable, where, o.ClusterID, ctx.Err())
	}
}

func (o *STANOptions) normalize() error {
	if len(o.URLs) == 0 {
		return errors.New("stream: no NATS server URL")
	}
	if o.ClusterID == "" {
		return errors.New("stream: no NATS Streaming cluster ID")
	}
	if o.ClientID == "" {
		return errors.New("stream: no NATS Streaming client ID")
	}
	if err := o.Security.validate(); err != nil {
		return err
	}
	if sanitizeClientID(o.ClientID) != o.ClientID {
		return fmt.Errorf("stream: invalid client ID %q: only [A-Za-z0-9_-] allowed", o.ClientID)
	}
	if o.Name == "" {
		o.Name = o.ClientID
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.PubAckWait <= 0 {
		o.PubAckWait = DefaultPubAckWait
	}
	if o.MaxPubAcksInflight <= 0 {
		o.MaxPubAcksInflight = DefaultMaxPubAcksInflight
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

func dialSTAN(ctx context.Context, o STANOptions, where string, h dialHooks) (*STAN, error) {
	s := &STAN{
		log:          o.Logger.With("client_id", o.ClientID),
		clientID:     o.ClientID,
		where:        where,
		done:         make(chan struct{}),
		onConnChange: h.onConnChange,
	}
	nc, err := connectNATS(o.URLs, o.Name, o.ConnectTimeout, &o.Security, where, connEvents{log: s.log, onChange: s.onConnChange})
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("%w: connect to %s: %w", ErrUnreachable, where, err)
	}
	// stan.Connect does not take a context either, but returns at once (with
	// nats.ErrConnectionClosed) when its NATS connection is closed.
	stop := context.AfterFunc(ctx, nc.Close)
	sc, err := stan.Connect(o.ClusterID, o.ClientID, append([]stan.Option{
		stan.NatsConn(nc),
		stan.ConnectWait(o.ConnectTimeout),
		stan.PubAckWait(o.PubAckWait),
		stan.MaxPubAcksInflight(o.MaxPubAcksInflight),
		stan.SetConnectionLostHandler(s.onLost),
	}, h.stanOpts...)...)
	if !stop() {
		if sc != nil {
			_ = sc.Close()
		}
		nc.Close()
		return nil, fmt.Errorf("%w: connect to %s (cluster %q): %w", ErrUnreachable, where, o.ClusterID, ctx.Err())
	}
	if err != nil {
		nc.Close()
		switch {
		case errors.Is(err, stan.ErrConnectReqTimeout):
			return nil, fmt.Errorf("%w: no NATS Streaming server for cluster %q answered at %s: %w", ErrUnreachable, o.ClusterID, where, err)
		case strings.Contains(err.Error(), "clientID already registered"): // server's ErrInvalidClient
			return nil, fmt.Errorf("%w: %q on cluster %q at %s: %w", ErrClientIDInUse, o.ClientID, o.ClusterID, where, err)
		case errors.Is(err, stan.ErrBadConnection), errors.Is(err, nats.ErrConnectionClosed):
			return nil, fmt.Errorf("%w: connect to cluster %q at %s: %w", ErrUnreachable, o.ClusterID, where, err)
		default:
			return nil, fmt.Errorf("stream: connect to cluster %q at %s as %q: %w", o.ClusterID, where, o.ClientID, err)
		}
	}
	s.nc, s.sc = nc, sc
	s.log.Debug("connected to NATS Streaming", "url", nc.ConnectedUrlRedacted(), "cluster_id", o.ClusterID)
	return s, nil
}

// ClientID is the session's client ID.
func (s *STAN) ClientID() string { return s.clientID }

// pubIDLen is the length of the NUIDs stan.go puts in each PubMsg (Guid and ConnID).
const pubIDLen = 22

// MaxPayload is the largest body PublishAsync accepts on subject: the NATS server's max
// payload less the STAN PubMsg wrapper around the body (client ID, message GUID,
// subject, connection ID, and the body's own tag and length). It is exact up to the
// few bytes by which the body's length prefix could be shorter than assumed.
func (s *STAN) MaxPayload(subject string) int {
	max := s.nc.MaxPayload()
	n := max - int64(pubMsgOverhead(s.clientID, subject, max))
	if n < 0 {
		return 0
	}
	return int(n)
}

// pubMsgOverhead bounds the bytes stan.go's PubMsg adds around a body of at most
// maxPayload bytes.
func pubMsgOverhead(clientID, subject string, maxPayload int64) int {
	m := pb.PubMsg{
		ClientID: clientID,
		Guid:     strings.Repeat("x", pubIDLen),
		Subject:  subject,
		ConnID:   make([]byte, pubIDLen),
	}
	const dataField = 5 // pb.PubMsg.Data
	return m.Size() + protowire.SizeTag(dataField) + protowire.SizeVarint(uint64(maxPayload))
}

// PublishAsync publishes data on subject and calls done exactly once with the server's
// ack result: nil when persisted, else an error wrapping ErrAckTimeout, ErrClosed (the
// connection closed first: the message may still have been persisted) or ErrRejected.
// done runs on a transport goroutine, possibly after Close returns; it must not block
// and must not publish. A nil done ignores the result.
//
// PublishAsync returns an error instead, and never calls done, when the message cannot
// be sent: ErrTooLarge (len(data) > MaxPayload(subject); the connection is unaffected),
// ErrClosed, or ErrUnreachable (NATS disconnected). It blocks while MaxPubAcksInflight
// publishes await their acks.
func (s *STAN) PublishAsync(subject string, data []byte, done func(error)) error {
	if max := s.MaxPayload(subject); len(data) > max {
		return fmt.Errorf("%w: %d bytes to %q, server accepts %d", ErrTooLarge, len(data), subject, max)
	}
	// stan.go either returns an error or calls the handler; claimed makes
	// "exactly once" hold here whatever the interleaving.
	var claimed atomic.Bool
	_, err := s.sc.PublishAsync(subject, data, func(_ string, err error) {
		if claimed.CompareAndSwap(false, true) && done != nil {
			done(s.ackError(subject, err))
		}
	})
	if err == nil || !claimed.CompareAndSwap(false, true) {
		return nil
	}
	switch {
	case errors.Is(err, nats.ErrMaxPayload): // server's limit changed under us
		return fmt.Errorf("%w: %d bytes to %q: %w", ErrTooLarge, len(data), subject, err)
	case errors.Is(err, stan.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionClosed):
		return fmt.Errorf("stream: publish to %q: %w", subject, s.closedError(err))
	case errors.Is(err, nats.ErrReconnectBufExceeded):
		return fmt.Errorf("%w: publish to %q while disconnected from %s: %w", ErrUnreachable, subject, s.where, err)
	default:
		return fmt.Errorf("stream: publish to %q: %w", subject, err)
	}
}

func (s *STAN) ackError(subject string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, stan.ErrTimeout):
		return fmt.Errorf("%w: publish to %q: %w", ErrAckTimeout, subject, err)
	case errors.Is(err, stan.ErrConnectionClosed):
		return fmt.Errorf("stream: publish to %q: awaiting ack: %w", subject, s.closedError(err))
	default:
		return fmt.Errorf("%w: publish to %q: %w", ErrRejected, subject, err)
	}
}

// closedError explains a stan.go "connection closed" with why the session ended.
func (s *STAN) closedError(err error) error {
	if why := s.Err(); why != nil && !errors.Is(why, err) {
		return fmt.Errorf("%w: %w", why, err)
	}
	return fmt.Errorf("%w: %w", ErrClosed, err)
}

// Done is closed when the session ends: on Close, or when the streaming server is lost
// for good (it stopped answering pings, or forgot the client after a restart without
// its store). A long-running caller then closes this STAN and dials again.
func (s *STAN) Done() <-chan struct{} { return s.done }

// Err is nil while the session is up. After Done is closed it says why: ErrClosed after
// Close; an error wrapping ErrClosed and ErrUnreachable after a loss.
func (s *STAN) Err() error {
	if p := s.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *STAN) end(err error) bool {
	ended := false
	s.endOnce.Do(func() {
		s.err.Store(&err)
		close(s.done)
		ended = true
	})
	return ended
}

// Close ends the streaming session (a close, not an unsubscribe: durable subscriptions
// are kept) and closes the NATS connection. Publishes still awaiting their ack are
// reported to their done with ErrClosed, asynchronously. Close waits at most
// ConnectTimeout for the server to answer the close request (no wait while NATS is
// disconnected). Close is idempotent; its error says the server may not have released
// the client ID (e.g. it was unreachable).
func (s *STAN) Close() error {
	s.end(ErrClosed)
	err := s.sc.Close()
	s.nc.Close()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, nats.ErrReconnectBufExceeded):
		return fmt.Errorf("%w: close session %q while disconnected from %s: %w", ErrUnreachable, s.clientID, s.where, err)
	default:
		return fmt.Errorf("stream: close session %q: %w", s.clientID, err)
	}
}

func (s *STAN) onLost(_ stan.Conn, err error) {
	if s.end(fmt.Errorf("%w: %w: session lost: %w", ErrClosed, ErrUnreachable, err)) {
		s.log.Warn("NATS Streaming session lost", "err", err)
	}
}

// abandon ends a session that was lost: it closes the NATS connection without
// sending the close request, which the server may not be there to answer, and which,
// answered late, could close a newer session of the same client ID (a close request
// names only the client ID). The server drops the abandoned session when a new one
// with the same client ID connects, or on its own client heartbeat timeout.
func (s *STAN) abandon() {
	s.end(ErrClosed)
	s.nc.Close()
}

// redactURLs joins the URLs for messages, hiding any password or token in them.
func redactURLs(urls []string) string {
	out := make([]string, len(urls))
	for i, raw := range urls {
		out[i] = raw
		if !strings.Contains(raw, "@") {
			continue
		}
		u, err := url.Parse(raw)
		switch {
		case err != nil || u.User == nil:
			out[i] = "<redacted>@" + raw[strings.LastIndex(raw, "@")+1:]
		case hasPassword(u.User):
			out[i] = u.Redacted()
		default: // a token or a user name alone
			u.User = url.User("redacted")
			out[i] = u.String()
		}
	}
	return strings.Join(out, ",")
}

func hasPassword(u *url.Userinfo) bool {
	_, ok := u.Password()
	return ok
}

// PublishAsyncMsg is PublishAsync: NATS Streaming has no message IDs, so msgID is
// ignored.
func (s *STAN) PublishAsyncMsg(subject string, data []byte, _ string, done func(error)) error {
	return s.PublishAsync(subject, data, done)
}
