// Package stantest starts a real, in-process NATS Streaming server on loopback for tests.
//
// Start gives a server with a memory store on 127.0.0.1 and a random port that is shut
// down when the test ends. Options select a file store (for restart tests), a cluster
// ID, a small NATS max payload (for oversize-message tests), a fixed port (to restart on
// the same address), and a NATS server separate from the streaming server (so a test can
// stop the streaming part while NATS stays up, leaving publishes unacknowledged).
// Channel and Client show the server's view of a channel's subscriptions and of a
// client, so a test can await server-side state (acks processed, a durable offline).
//
// The servers log nothing unless WithServerLog is given.
package stantest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	natsd "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats-streaming-server/server"
	"github.com/nats-io/nats-streaming-server/stores"
)

// DefaultClusterID is the cluster ID of a server started without WithClusterID.
const DefaultClusterID = "test-cluster"

// Option configures Start.
type Option func(*config)

type config struct {
	clusterID    string
	fileStoreDir string
	maxPayload   int32
	port         int
	separateNATS bool
	log          bool
}

// WithFileStore makes the server keep channels in a file store in dir instead of memory,
// so that a server started again on the same dir finds the messages published before.
func WithFileStore(dir string) Option {
	return func(c *config) { c.fileStoreDir = dir }
}

// WithClusterID sets the streaming cluster ID (default DefaultClusterID).
func WithClusterID(id string) Option {
	return func(c *config) { c.clusterID = id }
}

// WithMaxPayload sets the NATS server's max_payload in bytes (NATS default: 1 MiB).
func WithMaxPayload(n int32) Option {
	return func(c *config) { c.maxPayload = n }
}

// WithPort makes the NATS server listen on port instead of a random one, e.g. to
// restart a server at the address clients already know (see Server.Port).
func WithPort(port int) Option {
	return func(c *config) { c.port = port }
}

// WithSeparateNATS runs the NATS server apart from the streaming server, which then
// connects to it as a client. Server.ShutdownStreaming can then stop the streaming
// server alone, as when it crashes behind a healthy NATS.
func WithSeparateNATS() Option {
	return func(c *config) { c.separateNATS = true }
}

// WithServerLog sends the streaming server's log to tb.Logf (until the test ends).
func WithServerLog() Option {
	return func(c *config) { c.log = true }
}

// Server is a running NATS Streaming server. Its methods are safe for concurrent use.
type Server struct {
	clusterID string
	url       string
	port      int

	mu   sync.Mutex
	stan *server.StanServer
	nats *natsd.Server // only WithSeparateNATS
	log  *tbLogger
}

// Start starts a NATS Streaming server on 127.0.0.1 and registers its shutdown with
// tb.Cleanup. It fails the test if the server does not start.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	c := config{clusterID: DefaultClusterID, port: natsd.RANDOM_PORT}
	for _, o := range opts {
		o(&c)
	}

	nopts := server.DefaultNatsServerOptions // a copy: Host 127.0.0.1, NoLog, NoSigs
	nopts.Host = "127.0.0.1"
	nopts.Port = c.port
	if c.maxPayload > 0 {
		nopts.MaxPayload = c.maxPayload
	}

	sopts := server.GetDefaultOptions()
	sopts.ID = c.clusterID
	if c.fileStoreDir != "" {
		sopts.StoreType = stores.TypeFile
		sopts.FilestoreDir = c.fileStoreDir
	}

	s := &Server{clusterID: c.clusterID}
	tb.Cleanup(s.Shutdown)
	if c.log {
		s.log = &tbLogger{tb: tb}
		sopts.CustomLogger = s.log
	}

	if c.separateNATS {
		ns, err := natsd.NewServer(&nopts)
		if err != nil {
			tb.Fatalf("stantest: NATS server options: %v", err)
		}
		go ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			ns.Shutdown()
			tb.Fatalf("stantest: NATS server on %s:%d did not start", nopts.Host, nopts.Port)
		}
		s.nats = ns
		sopts.NATSServerURL = ns.ClientURL()
	}

	ss, err := server.RunServerWithOpts(sopts, &nopts)
	if err != nil {
		tb.Fatalf("stantest: start NATS Streaming server: %v", err)
	}
	s.stan = ss
	if s.nats != nil {
		s.url = s.nats.ClientURL()
	} else {
		s.url = ss.ClientURL()
	}
	u, err := url.Parse(s.url)
	if err == nil {
		var p int
		p, err = strconv.Atoi(u.Port())
		s.port = p
	}
	if err != nil {
		tb.Fatalf("stantest: server URL %q: %v", s.url, err)
	}
	return s
}

// URL is the nats:// URL clients connect to.
func (s *Server) URL() string { return s.url }

// Port is the NATS server's TCP port (for WithPort on a restart).
func (s *Server) Port() int { return s.port }

// ClusterID is the streaming cluster ID clients must name.
func (s *Server) ClusterID() string { return s.clusterID }

// StanServer is the underlying server, nil once shut down.
func (s *Server) StanServer() *server.StanServer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stan
}

// ShutdownStreaming stops the streaming server but leaves NATS running, so clients stay
// connected to NATS while nothing answers their streaming requests. Only meaningful with
// WithSeparateNATS; otherwise it stops both, like Shutdown.
func (s *Server) ShutdownStreaming() {
	s.mu.Lock()
	ss := s.stan
	s.stan = nil
	s.mu.Unlock()
	if ss != nil {
		ss.Shutdown()
	}
}

// Shutdown stops the server(s). It is idempotent and is also run by tb.Cleanup.
func (s *Server) Shutdown() {
	s.ShutdownStreaming()
	s.mu.Lock()
	ns := s.nats
	s.nats = nil
	s.mu.Unlock()
	if ns != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
	if s.log != nil {
		s.log.stop()
	}
}

// ErrNotFound is returned by Channel and Client for what the server does not know.
var ErrNotFound = errors.New("stantest: not found")

// Channel is the server's view of a channel, as its /streaming/channelsz monitoring
// endpoint reports it (asked in-process, no HTTP port needed), with its subscriptions:
// online and offline durables, queue members, each with its last sent sequence and
// its count of messages awaiting an ack. A test can await a condition on it, e.g. that
// the acks it sent were processed before it restarts the server.
func (s *Server) Channel(name string) (*server.Channelz, error) {
	var cz server.Channelz
	if err := s.monitor(server.ChannelsPath+"?subs=1&channel="+url.QueryEscape(name), (*server.StanServer).HandleChannelsz, &cz); err != nil {
		return nil, fmt.Errorf("stantest: channel %q: %w", name, err)
	}
	return &cz, nil
}

// Client is the server's view of a registered client (/streaming/clientsz), with its
// subscriptions by channel.
func (s *Server) Client(id string) (*server.Clientz, error) {
	var cz server.Clientz
	if err := s.monitor(server.ClientsPath+"?subs=1&client="+url.QueryEscape(id), (*server.StanServer).HandleClientsz, &cz); err != nil {
		return nil, fmt.Errorf("stantest: client %q: %w", id, err)
	}
	return &cz, nil
}

func (s *Server) monitor(target string, handler func(*server.StanServer, http.ResponseWriter, *http.Request), v any) error {
	ss := s.StanServer()
	if ss == nil {
		return errors.New("server shut down")
	}
	w := httptest.NewRecorder()
	handler(ss, w, httptest.NewRequest(http.MethodGet, target, nil))
	switch w.Code {
	case http.StatusOK:
		return json.Unmarshal(w.Body.Bytes(), v)
	case http.StatusNotFound:
		return ErrNotFound
	default:
		return fmt.Errorf("%s: %d %s", target, w.Code, w.Body.String())
	}
}

// String describes the server for test messages.
func (s *Server) String() string {
	return fmt.Sprintf("stantest server %s (cluster %q)", s.url, s.clusterID)
}

// tbLogger adapts testing.TB to the streaming server's logger; it goes quiet once the
// server is shut down, since logging to a finished test panics.
type tbLogger struct {
	tb      testing.TB
	mu      sync.Mutex
	stopped bool
}

func (l *tbLogger) stop() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
}

func (l *tbLogger) logf(level, format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.tb.Logf("stan-server "+level+": "+format, v...)
	}
}

func (l *tbLogger) Noticef(format string, v ...any) { l.logf("INF", format, v...) }
func (l *tbLogger) Warnf(format string, v ...any)   { l.logf("WRN", format, v...) }
func (l *tbLogger) Fatalf(format string, v ...any)  { l.logf("FTL", format, v...) }
func (l *tbLogger) Errorf(format string, v ...any)  { l.logf("ERR", format, v...) }
func (l *tbLogger) Debugf(format string, v ...any)  { l.logf("DBG", format, v...) }
func (l *tbLogger) Tracef(format string, v ...any)  { l.logf("TRC", format, v...) }
