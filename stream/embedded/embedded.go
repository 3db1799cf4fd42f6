// Package embedded runs a NATS server in process, serving NATS Streaming and, when asked,
// JetStream on one port: the stream of a drain that needs no separate server. Only the
// drain imports it, so that scrape-once does not carry a server.
package embedded

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"time"

	natsd "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats-streaming-server/server"
	"github.com/nats-io/nats-streaming-server/stores"
)

// Options configure an in-process NATS Streaming server.
type Options struct {
	// Listen is the host:port NATS clients (scrape-once, the drain) connect to.
	Listen    string
	ClusterID string
	// StoreDir holds the channels in a file store; empty keeps them in memory (lost on
	// restart).
	StoreDir string
	// Channel limits. NATS Streaming's defaults (1M messages, 1 GB) silently drop the
	// oldest messages of a full channel; a scrape older than max_age is worth nothing,
	// so MaxAge bounds the channel by time. Zero leaves a limit unset (unlimited).
	MaxAge   time.Duration
	MaxMsgs  int
	MaxBytes int64
	// JetStream also serves JetStream on the same port, its file store in
	// JetStreamDir (a temporary directory, removed at Shutdown, when empty).
	JetStream    bool
	JetStreamDir string
	Logger       *slog.Logger
}

// Server is a running in-process NATS Streaming server.
type Server struct {
	s      *server.StanServer
	url    string
	tmpDir string // JetStream's store when none was given: removed at Shutdown
}

// Start starts a NATS Streaming server in this process.
func Start(o Options) (*Server, error) {
	host, portStr, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded stream: listen %q: %w", o.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded stream: listen %q: bad port", o.Listen)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	// The server logs a failed listen and then waits 10s for a readiness that cannot
	// come, to return "unable to start a NATS Server" without the reason: find it first.
	// (Another process may still take the port in between; that rare case keeps the
	// server's own error.)
	if port != 0 {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, portStr))
		if err != nil {
			return nil, fmt.Errorf("embedded stream: %w", err)
		}
		ln.Close()
	}
	nopts := server.DefaultNatsServerOptions // a copy
	nopts.Host = host
	nopts.Port = port
	nopts.NoSigs = true
	var tmpDir string
	if o.JetStream {
		dir := o.JetStreamDir
		if dir == "" {
			if tmpDir, err = os.MkdirTemp("", "prometheus-streams-jetstream-"); err != nil {
				return nil, fmt.Errorf("embedded stream: JetStream store: %w", err)
			}
			dir = tmpDir
		}
		nopts.JetStream = true
		nopts.StoreDir = dir
	}

	sopts := server.GetDefaultOptions()
	sopts.ID = o.ClusterID
	if o.StoreDir != "" {
		sopts.StoreType = stores.TypeFile
		sopts.FilestoreDir = o.StoreDir
	}
	sopts.StoreLimits.MaxAge = o.MaxAge
	sopts.StoreLimits.MaxMsgs = o.MaxMsgs
	sopts.StoreLimits.MaxBytes = o.MaxBytes
	if o.Logger != nil {
		sopts.EnableLogging = true
		sopts.CustomLogger = slogAdapter{o.Logger.With("component", "embedded-stream")}
		nopts.NoLog = false
	}
	s, err := server.RunServerWithOpts(sopts, &nopts)
	if err != nil {
		if tmpDir != "" {
			_ = os.RemoveAll(tmpDir)
		}
		return nil, fmt.Errorf("embedded stream: start on %s: %w", o.Listen, err)
	}
	return &Server{s: s, url: s.ClientURL(), tmpDir: tmpDir}, nil
}

// URL is the nats:// URL clients in this process use to reach the server.
func (e *Server) URL() string { return e.url }

// LastSeq is the sequence of the newest message of channel (0: none), asked of the
// server in process, as its monitoring endpoint would answer: a replay of the channel
// knows where it ends without waiting for it to go quiet.
func (e *Server) LastSeq(channel string) (uint64, error) {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/streaming/channelsz?channel="+url.QueryEscape(channel), nil)
	e.s.HandleChannelsz(rec, req)
	if rec.Code == http.StatusNotFound {
		return 0, nil // no message was ever published on it
	}
	if rec.Code != http.StatusOK {
		return 0, fmt.Errorf("embedded stream: channel %q: %d %s", channel, rec.Code, rec.Body.String())
	}
	var cz server.Channelz
	if err := json.Unmarshal(rec.Body.Bytes(), &cz); err != nil {
		return 0, fmt.Errorf("embedded stream: channel %q: %w", channel, err)
	}
	return cz.LastSeq, nil
}

// Shutdown stops the server; a file store keeps its channels for the next start.
func (e *Server) Shutdown() {
	e.s.Shutdown()
	if e.tmpDir != "" {
		_ = os.RemoveAll(e.tmpDir)
	}
}

// slogAdapter gives the server's logger interface a slog.Logger.
type slogAdapter struct{ l *slog.Logger }

var _ natsd.Logger = slogAdapter{}

func (a slogAdapter) Noticef(format string, v ...any) { a.l.Info(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Tracef(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
