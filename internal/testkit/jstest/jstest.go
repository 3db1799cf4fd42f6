// Package jstest starts a real JetStream cluster in-process on loopback for tests: n
// NATS servers (nats-server's own server package) routed to each other on 127.0.0.1,
// each with JetStream's file store in its own temp dir, shut down when the test ends.
//
// A test can find which server leads a stream or a consumer, or holds a client's
// connection, kill that server (Kill: its store is kept) and start it again on the same
// ports and store (Restart), and await the cluster's recovery (WaitStreamCurrent). Kill
// is the server's own Shutdown, which first hands the leadership of its raft groups to
// another server: what a server stopped by its service manager does. Its clients lose
// their connection at once, and publishes and pull requests in flight on it are lost.
// Publish publishes as a test's publisher must through that: trying again, with a
// message ID, whatever got no ack.
//
// The servers log nothing. StreamLeader and the other look-ups ask the servers
// in-process: no monitoring port is opened.
package jstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	natsd "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Account is the account clients without credentials use, whose streams the look-ups
// name.
const Account = natsd.DEFAULT_GLOBAL_ACCOUNT

// ClusterName is the NATS cluster's name.
const ClusterName = "jstest"

const (
	readyTimeout   = 10 * time.Second      // a server to accept clients
	waitTimeout    = 20 * time.Second      // the look-ups', awaits' and Publish's patience
	startTries     = 3                     // StartCluster: fresh ports to try when one is taken
	attemptTimeout = 2 * time.Second       // Publish: one attempt's wait for its ack
	retryWait      = 50 * time.Millisecond // Publish: pause before another attempt
)

// Cluster is a running JetStream cluster. Its methods are safe for concurrent use, but
// Kill and Restart of one server must not race each other.
type Cluster struct {
	tb    testing.TB
	nodes []*node
}

type node struct {
	name string
	opts natsd.Options // as first started; a copy is given to each start
	url  string        // nats://127.0.0.1:port

	mu  sync.Mutex
	srv *natsd.Server // nil while down
}

// StartCluster starts n servers (n ≥ 1; 3 for a cluster that survives the loss of
// one) named n0, n1, …, waits until each accepts clients and the cluster has elected
// its JetStream meta leader, and registers their shutdown with tb.Cleanup. It fails
// the test if the cluster does not form.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("jstest: a cluster of %d servers", n)
	}
	c := &Cluster{tb: tb}
	// Cleanups run last registered first: the stores' directory is registered for
	// removal before the shutdown, so that it is removed once no server writes to it.
	dir := tb.TempDir()
	tb.Cleanup(c.shutdown)
	var err error
	for try := 0; try < startTries; try++ {
		if err = c.start(dir, n); err == nil {
			break
		}
		c.shutdown()
		c.nodes = nil
	}
	if err != nil {
		tb.Fatalf("jstest: start a cluster of %d: %v", n, err)
	}
	c.waitMetaLeader(tb)
	return c
}

// start starts n servers on fresh ports, every server routed to every other, each
// with a new store under dir.
func (c *Cluster) start(dir string, n int) error {
	ports, err := freePorts(2 * n)
	if err != nil {
		return err
	}
	routes := make([]string, n)
	for i := range n {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", ports[n+i])
	}
	for i := range n {
		name := fmt.Sprintf("n%d", i)
		store, err := os.MkdirTemp(dir, name+"-")
		if err != nil {
			return err
		}
		o := natsd.Options{
			ServerName: name,
			Host:       "127.0.0.1",
			Port:       ports[i],
			NoLog:      true,
			NoSigs:     true,
			JetStream:  true,
			StoreDir:   store,
			// Enough for tests, and no share of the machine's memory and disk.
			JetStreamMaxMemory: 64 << 20,
			JetStreamMaxStore:  1 << 30,
			Cluster: natsd.ClusterOpts{
				Name: ClusterName,
				Host: "127.0.0.1",
				Port: ports[n+i],
			},
		}
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, r)
			}
		}
		o.Routes = natsd.RoutesFromStr(strings.Join(others, ","))
		c.nodes = append(c.nodes, &node{name: o.ServerName, opts: o, url: fmt.Sprintf("nats://127.0.0.1:%d", ports[i])})
	}
	// All at once: each waits for its routes, and JetStream for its peers.
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, nd := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = nd.start()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// freePorts returns n distinct loopback ports nothing listened on a moment ago.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (nd *node) start() error {
	o := nd.opts // NewServer keeps (and amends) the options it is given
	o.Routes = append([]*url.URL(nil), nd.opts.Routes...)
	s, err := natsd.NewServer(&o)
	if err != nil {
		return fmt.Errorf("%s: %w", nd.name, err)
	}
	go s.Start()
	if !s.ReadyForConnections(readyTimeout) {
		s.Shutdown()
		return fmt.Errorf("%s: not ready for connections on %s within %v (port taken?)", nd.name, nd.url, readyTimeout)
	}
	nd.mu.Lock()
	nd.srv = s
	nd.mu.Unlock()
	return nil
}

func (nd *node) server() *natsd.Server {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.srv
}

// Size is the number of servers, running or not.
func (c *Cluster) Size() int { return len(c.nodes) }

// URLs are the client URLs of every server, running or not, in order.
func (c *Cluster) URLs() []string {
	out := make([]string, len(c.nodes))
	for i, nd := range c.nodes {
		out[i] = nd.url
	}
	return out
}

// URL is server i's client URL.
func (c *Cluster) URL(i int) string { return c.nodes[i].url }

// Server is server i, nil while it is down.
func (c *Cluster) Server(i int) *natsd.Server { return c.nodes[i].server() }

// Kill shuts server i down and waits until it has; its store stays for Restart. A
// server already down is left so.
func (c *Cluster) Kill(i int) {
	nd := c.nodes[i]
	nd.mu.Lock()
	s := nd.srv
	nd.srv = nil
	nd.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts server i again on its ports and store, and waits until it accepts
// clients (not until it has caught up: see WaitStreamCurrent). A running server is
// left so. It fails the test if the server does not start.
func (c *Cluster) Restart(tb testing.TB, i int) {
	tb.Helper()
	nd := c.nodes[i]
	if nd.server() != nil {
		return
	}
	// The port was ours a moment ago; another process may hold it briefly.
	deadline := time.Now().Add(readyTimeout)
	for {
		err := nd.start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("jstest: restart: %v", err)
		}
	}
}

func (c *Cluster) shutdown() {
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Kill(i)
		}()
	}
	wg.Wait()
}

// await polls cond until it holds, failing the test after waitTimeout.
func await(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("jstest: timed out after %v awaiting %s", waitTimeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitMetaLeader waits until every running server knows the JetStream meta leader,
// and the leader counts every running server as an online peer: until it does, it
// refuses to place a replicated stream ("no suitable peers for placement").
func (c *Cluster) waitMetaLeader(tb testing.TB) {
	tb.Helper()
	await(tb, "the JetStream meta leader and its peers", func() bool {
		leaders, running, online := 0, 0, 0
		for _, nd := range c.nodes {
			s := nd.server()
			if s == nil {
				continue
			}
			running++
			if !s.JetStreamIsCurrent() {
				return false
			}
			if s.JetStreamIsLeader() {
				leaders++
				online = len(s.JetStreamClusterPeers())
			}
		}
		return leaders == 1 && online == running
	})
}

// StreamLeader is the index of the server leading stream (of Account), waiting until
// one is elected.
func (c *Cluster) StreamLeader(tb testing.TB, stream string) int {
	tb.Helper()
	return c.leader(tb, "the leader of stream "+stream, func(s *natsd.Server) bool {
		return s.JetStreamIsStreamLeader(Account, stream)
	})
}

// ConsumerLeader is the index of the server leading the durable consumer of stream,
// waiting until one is elected.
func (c *Cluster) ConsumerLeader(tb testing.TB, stream, consumer string) int {
	tb.Helper()
	return c.leader(tb, "the leader of consumer "+consumer, func(s *natsd.Server) bool {
		return s.JetStreamIsConsumerLeader(Account, stream, consumer)
	})
}

func (c *Cluster) leader(tb testing.TB, what string, is func(*natsd.Server) bool) int {
	tb.Helper()
	leader := -1
	await(tb, what, func() bool {
		n := 0
		for i, nd := range c.nodes {
			if s := nd.server(); s != nil && is(s) {
				leader, n = i, n+1
			}
		}
		return n == 1 // two during a hand-over: not yet
	})
	return leader
}

// ConnectedTo is the index of the server holding the client connection named name (as
// nats.Name sets it; a prefix of it will do), waiting until one does.
func (c *Cluster) ConnectedTo(tb testing.TB, name string) int {
	tb.Helper()
	at := -1
	await(tb, "a connection named "+name, func() bool {
		for i, nd := range c.nodes {
			s := nd.server()
			if s == nil {
				continue
			}
			cz, err := s.Connz(&natsd.ConnzOptions{})
			if err != nil {
				continue
			}
			for _, ci := range cz.Conns {
				if strings.HasPrefix(ci.Name, name) {
					at = i
					return true
				}
			}
		}
		return false
	})
	return at
}

// WaitStreamCurrent waits until stream has a leader and its replica on every running
// server has caught up with it.
func (c *Cluster) WaitStreamCurrent(tb testing.TB, stream string) {
	tb.Helper()
	c.waitMetaLeader(tb)
	c.StreamLeader(tb, stream)
	await(tb, "every replica of stream "+stream+" current", func() bool {
		for _, nd := range c.nodes {
			if s := nd.server(); s != nil && !s.JetStreamIsStreamCurrent(Account, stream) {
				return false
			}
		}
		return true
	})
}

// Connect is a test client of the cluster (every server's URL, reconnecting without
// end), closed when the test ends.
func (c *Cluster) Connect(tb testing.TB) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(strings.Join(c.URLs(), ","), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond), nats.Timeout(5*time.Second))
	if err != nil {
		tb.Fatalf("jstest: connect: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// JetStream is a JetStream client over Connect.
func (c *Cluster) JetStream(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	js, err := jetstream.New(c.Connect(tb))
	if err != nil {
		tb.Fatalf("jstest: %v", err)
	}
	return js
}

// Publish publishes m with js, a client of the cluster, until a stream acks it, and
// returns the ack; it fails the test after 20 s. m must carry a message ID
// (jetstream.MsgIDHeader), so that the stream stores it once however often it is tried.
//
// A publish is tried again when it fails, as while the stream elects a leader, and
// when its ack does not come: an attempt ends as soon as the connection drops, or
// after 2 s, since a request written to a server as it is killed, or routed to a
// stream leader as it is killed, is lost without an answer; the client does not
// fail it by itself. The next attempt waits until the client has reconnected.
func Publish(tb testing.TB, js jetstream.JetStream, m *nats.Msg) *jetstream.PubAck {
	tb.Helper()
	if m.Header.Get(jetstream.MsgIDHeader) == "" {
		tb.Fatalf("jstest: publish to %s without a message ID: a retry could store it twice", m.Subject)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	nc := js.Conn()
	for {
		ack, err := publishOnce(ctx, js, m)
		if err == nil {
			return ack
		}
		if !awaitConnected(ctx, nc, retryWait) {
			tb.Fatalf("jstest: publish to %s: not acked: %v", m.Subject, err)
		}
	}
}

// publishOnce publishes m and waits for its ack, until ctx ends, attemptTimeout has
// passed, or the connection drops.
func publishOnce(ctx context.Context, js jetstream.JetStream, m *nats.Msg) (*jetstream.PubAck, error) {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	nc := js.Conn()
	lost := nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	defer nc.RemoveStatusListener(lost)
	if !nc.IsConnected() {
		return nil, nats.ErrDisconnected
	}
	go func() {
		select {
		case <-lost: // also when removed: the attempt is over then
			cancel()
		case <-ctx.Done():
		}
	}()
	return js.PublishMsg(ctx, m)
}

// awaitConnected waits until nc is connected, and at least for wait; it reports false
// if ctx ends or nc is closed first.
func awaitConnected(ctx context.Context, nc *nats.Conn, wait time.Duration) bool {
	back := nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	defer nc.RemoveStatusListener(back)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return false
	}
	for !nc.IsConnected() {
		if nc.IsClosed() {
			return false
		}
		select {
		case <-back:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// Messages returns every message stream holds, in order, read from its leader. It
// retries while the cluster elects a leader.
func (c *Cluster) Messages(tb testing.TB, js jetstream.JetStream, stream string) []*jetstream.RawStreamMsg {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for {
		msgs, err := messages(ctx, js, stream)
		if err == nil {
			return msgs
		}
		if ctx.Err() != nil {
			tb.Fatalf("jstest: read stream %s: %v", stream, err)
		}
	}
}

func messages(ctx context.Context, js jetstream.JetStream, stream string) ([]*jetstream.RawStreamMsg, error) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := js.Stream(rctx, stream)
	if err != nil {
		return nil, err
	}
	state := st.CachedInfo().State
	var out []*jetstream.RawStreamMsg
	for seq := state.FirstSeq; seq > 0 && seq <= state.LastSeq; seq++ {
		m, err := st.GetMsg(rctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted
		}
		if err != nil {
			return nil, fmt.Errorf("message %d: %w", seq, err)
		}
		out = append(out, m)
	}
	return out, nil
}
