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
// Security options make the NATS server require TLS (WithTLS, optionally verifying client
// certificates) and authentication: users with passwords (WithUser), a token (WithToken),
// NKey users (WithNKeyUser) or decentralised JWT auth (WithOperator, with UserCreds to
// make .creds files). The streaming server is itself a NATS client of that server and is
// given what it needs to get in; NATSOptions (and Connect) give a test client the same.
//
// WithJetStream also enables JetStream (file store) on the same NATS server and port.
//
// The servers log nothing unless WithServerLog is given.
package stantest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	natsd "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats-streaming-server/server"
	"github.com/nats-io/nats-streaming-server/stores"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/nats-io/stan.go"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/certtest"
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
	jetStreamDir string // WithJetStream

	tlsCA     *certtest.CA // WithTLS
	tlsVerify bool
	users     []*natsd.User // WithUser
	token     string        // WithToken
	nkeys     []string      // WithNKeyUser
	operator  bool          // WithOperator
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

// WithJetStream also enables JetStream on the NATS server, with its file store in dir
// (give the same dir again to restart with the streams and consumers of a previous
// server). The one port then serves NATS Streaming and JetStream clients alike. Only
// for servers without users or operator (WithUser, WithNKeyUser, WithOperator): their
// accounts would need JetStream enabled too.
func WithJetStream(dir string) Option {
	return func(c *config) { c.jetStreamDir = dir }
}

// WithServerLog sends the streaming server's log to tb.Logf (until the test ends).
func WithServerLog() Option {
	return func(c *config) { c.log = true }
}

// WithTLS makes the NATS server require TLS, with a server certificate of ca valid for
// 127.0.0.1, ::1 and localhost. With verifyClients it also requires a client certificate
// signed by ca, verified (TLSVerify), and refuses connections without one. The streaming
// server's own connection trusts ca and, with verifyClients, presents a client
// certificate of ca.
func WithTLS(ca *certtest.CA, verifyClients bool) Option {
	return func(c *config) { c.tlsCA, c.tlsVerify = ca, verifyClients }
}

// WithUser adds a NATS user with a password; the server then refuses clients that do not
// present a known user or NKey. It may be given more than once, and combined with
// WithNKeyUser, but not with WithToken or WithOperator.
func WithUser(user, password string) Option {
	return func(c *config) { c.users = append(c.users, &natsd.User{Username: user, Password: password}) }
}

// WithToken makes the NATS server require the token (alone: not with users or NKeys).
func WithToken(token string) Option {
	return func(c *config) { c.token = token }
}

// WithNKeyUser adds an NKey user, by its public key (U...); see WithUser.
func WithNKeyUser(publicKey string) Option {
	return func(c *config) { c.nkeys = append(c.nkeys, publicKey) }
}

// WithOperator runs the NATS server in decentralised JWT auth mode: it trusts a fresh
// operator with one account, whose users, made by Server.UserCreds, authenticate with a
// .creds file. It excludes WithUser, WithNKeyUser and WithToken.
func WithOperator() Option {
	return func(c *config) { c.operator = true }
}

// Server is a running NATS Streaming server. Its methods are safe for concurrent use.
type Server struct {
	clusterID string
	url       string
	port      int

	clientOpts []nats.Option // what the streaming server's own connections use
	account    nkeys.KeyPair // WithOperator: signs user JWTs
	dir        string        // for generated secrets

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
	if c.jetStreamDir != "" {
		if len(c.users) > 0 || len(c.nkeys) > 0 || c.operator {
			tb.Fatal("stantest: WithJetStream excludes WithUser, WithNKeyUser and WithOperator")
		}
		nopts.JetStream = true
		nopts.StoreDir = c.jetStreamDir
	}

	sopts := server.GetDefaultOptions()
	sopts.ID = c.clusterID
	if c.fileStoreDir != "" {
		sopts.StoreType = stores.TypeFile
		sopts.FilestoreDir = c.fileStoreDir
	}

	s := &Server{clusterID: c.clusterID}
	s.secure(tb, &c, &nopts, sopts)
	tb.Cleanup(s.Shutdown)
	if c.log {
		s.log = &tbLogger{tb: tb}
		sopts.CustomLogger = s.log
	}

	if c.separateNATS {
		nsOpts := nopts // a copy: the streaming server's is left to it
		if c.tlsCA != nil {
			// The streaming server builds its embedded server's tls.Config from the file
			// options; a server started here needs it built.
			var err error
			nsOpts.TLSConfig, err = natsd.GenTLSConfig(&natsd.TLSConfigOpts{
				CertFile: nopts.TLSCert, KeyFile: nopts.TLSKey, CaFile: nopts.TLSCaCert, Verify: nopts.TLSVerify,
			})
			if err != nil {
				tb.Fatalf("stantest: NATS server TLS: %v", err)
			}
		}
		ns, err := natsd.NewServer(&nsOpts)
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

// internalUser is the NATS user the streaming server connects as when the NATS server
// has users (WithUser, WithNKeyUser, WithOperator).
const internalUser = "stantest-streaming"

// secure applies the security options to the NATS server's options and gives the
// streaming server, whose connections to NATS are ordinary clients, what it needs to
// connect; s.clientOpts records the same for NATSOptions.
func (s *Server) secure(tb testing.TB, c *config, nopts *natsd.Options, sopts *server.Options) {
	tb.Helper()
	switch {
	case c.operator && (len(c.users) > 0 || len(c.nkeys) > 0 || c.token != ""):
		tb.Fatal("stantest: WithOperator excludes WithUser, WithNKeyUser and WithToken")
	case c.token != "" && (len(c.users) > 0 || len(c.nkeys) > 0):
		tb.Fatal("stantest: WithToken excludes WithUser and WithNKeyUser")
	}
	if c.operator {
		s.dir = tb.TempDir()
	}
	if ca := c.tlsCA; ca != nil {
		// Names of their own: certtest writes a certificate to a file named after it,
		// and another server of the same CA may be reading its own.
		id := randomHex(tb)[:8]
		srv := ca.Server("stantest-nats-" + id)
		nopts.TLSCert, nopts.TLSKey = srv.CertFile, srv.KeyFile
		nopts.TLSTimeout = 5 // seconds; the default 2s is tight under -race
		// The streaming server turns these file options into the embedded server's
		// tls.Config (configureNATSServerTLS).
		sopts.Secure = true
		sopts.ClientCA = ca.CertFile
		s.clientOpts = append(s.clientOpts, nats.RootCAs(ca.CertFile))
		if c.tlsVerify {
			nopts.TLSCaCert = ca.CertFile
			nopts.TLSVerify = true
			cl := ca.Client(internalUser + "-" + id)
			sopts.ClientCert, sopts.ClientKey = cl.CertFile, cl.KeyFile
			s.clientOpts = append(s.clientOpts, nats.ClientCert(cl.CertFile, cl.KeyFile))
		}
	}
	switch {
	case c.token != "":
		// The streaming server connects with its NATS server's Authorization on its own.
		nopts.Authorization = c.token
		s.clientOpts = append(s.clientOpts, nats.Token(c.token))
	case len(c.users) > 0 || len(c.nkeys) > 0:
		// With a users list the streaming server does not find its way in alone (it only
		// borrows the NATS server's single Username/Password or Authorization): it
		// connects as a user of its own, given in its options.
		password := randomHex(tb)
		nopts.Users = append(append([]*natsd.User(nil), c.users...), &natsd.User{Username: internalUser, Password: password})
		for _, k := range c.nkeys {
			nopts.Nkeys = append(nopts.Nkeys, &natsd.NkeyUser{Nkey: k})
		}
		sopts.Username, sopts.Password = internalUser, password
		s.clientOpts = append(s.clientOpts, nats.UserInfo(internalUser, password))
	case c.operator:
		s.operatorMode(tb, nopts)
		creds := s.UserCreds(tb, internalUser)
		sopts.NATSCredentials = creds
		s.clientOpts = append(s.clientOpts, nats.UserCredentials(creds))
	}
}

// operatorMode makes the NATS server trust a fresh operator with one account, kept in
// memory.
func (s *Server) operatorMode(tb testing.TB, nopts *natsd.Options) {
	tb.Helper()
	must := func(err error) {
		if err != nil {
			tb.Helper()
			tb.Fatalf("stantest: operator setup: %v", err)
		}
	}
	operator, err := nkeys.CreateOperator()
	must(err)
	opub, err := operator.PublicKey()
	must(err)
	account, err := nkeys.CreateAccount()
	must(err)
	apub, err := account.PublicKey()
	must(err)

	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "stantest"
	ojwt, err := oc.Encode(operator)
	must(err)
	oc, err = jwt.DecodeOperatorClaims(ojwt)
	must(err)
	ac := jwt.NewAccountClaims(apub)
	ac.Name = "stantest"
	ajwt, err := ac.Encode(operator)
	must(err)
	resolver := &natsd.MemAccResolver{}
	must(resolver.Store(apub, ajwt))

	nopts.TrustedOperators = []*jwt.OperatorClaims{oc}
	nopts.AccountResolver = resolver
	s.account = account
}

// UserCreds writes a .creds file (user JWT and NKey seed) for a new user called name of
// the server's account, and returns its path. Only with WithOperator.
func (s *Server) UserCreds(tb testing.TB, name string) string {
	tb.Helper()
	if s.account == nil {
		tb.Fatal("stantest: UserCreds needs WithOperator")
	}
	user, err := nkeys.CreateUser()
	if err != nil {
		tb.Fatal(err)
	}
	upub, err := user.PublicKey()
	if err != nil {
		tb.Fatal(err)
	}
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	ujwt, err := uc.Encode(s.account)
	if err != nil {
		tb.Fatal(err)
	}
	seed, err := user.Seed()
	if err != nil {
		tb.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(ujwt, seed)
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(s.dir, name+"-"+randomHex(tb)[:8]+".creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// NATSOptions are the nats.go options a test client needs to get into this server: the
// TLS material and credentials the streaming server's own connections use (none for a
// server without security options).
func (s *Server) NATSOptions() []nats.Option {
	return append([]nats.Option(nil), s.clientOpts...)
}

// Connect opens a streaming session as clientID with NATSOptions, closed (with its NATS
// connection) when the test ends. It fails the test if it cannot.
func (s *Server) Connect(tb testing.TB, clientID string) stan.Conn {
	tb.Helper()
	nc, err := nats.Connect(s.url, append(s.NATSOptions(), nats.Timeout(5*time.Second))...)
	if err != nil {
		tb.Fatalf("stantest: connect to %s: %v", s, err)
	}
	sc, err := stan.Connect(s.clusterID, clientID, stan.NatsConn(nc), stan.ConnectWait(5*time.Second))
	if err != nil {
		nc.Close()
		tb.Fatalf("stantest: streaming session on %s: %v", s, err)
	}
	tb.Cleanup(func() {
		_ = sc.Close()
		nc.Close()
	})
	return sc
}

func randomHex(tb testing.TB) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}
