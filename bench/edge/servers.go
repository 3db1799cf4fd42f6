package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	natsd "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// streamName is the JetStream stream scrape-once creates and publishes to.
const streamName = "PROMETHEUS"

// targets serves the same exposition on n paths of one loopback listener, gzipped when
// the client accepts it (as node_exporter does; compressed once, so that serving costs
// the harness little), and counts the requests: Prometheus's apart, since one it sent
// before it was paused may be served during a run of the binaries.
type targets struct {
	srv        *http.Server
	base       string // http://127.0.0.1:port
	n          int
	requests   atomic.Int64 // but Prometheus's
	prometheus atomic.Int64
}

func serveTargets(body []byte, n int) (*targets, error) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(body); err != nil {
		return nil, fmt.Errorf("gzip the exposition: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip the exposition: %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for targets: %w", err)
	}
	t := &targets{base: "http://" + l.Addr().String(), n: n}
	t.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.UserAgent(), "Prometheus/") {
			t.prometheus.Add(1)
		} else {
			t.requests.Add(1)
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(gz.Bytes())
			return
		}
		_, _ = w.Write(body)
	})}
	go func() { _ = t.srv.Serve(l) }()
	return t, nil
}

// urls are the targets' URLs, one per target.
func (t *targets) urls() []string {
	out := make([]string, t.n)
	for i := range out {
		out[i] = fmt.Sprintf("%s/metrics/%d", t.base, i)
	}
	return out
}

func (t *targets) close() { _ = t.srv.Close() }

// natsServer is an in-process NATS server with JetStream's file store (its default:
// fsync every 2 minutes) in dir, on a loopback port.
type natsServer struct {
	srv *natsd.Server
	nc  *nats.Conn
	js  jetstream.JetStream
}

func startNATS(dir string) (*natsServer, error) {
	s, err := natsd.NewServer(&natsd.Options{
		Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: dir,
		JetStreamMaxMemory: 64 << 20, JetStreamMaxStore: 4 << 30,
	})
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("nats server: not ready for connections within 10s")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		s.Shutdown()
		return nil, fmt.Errorf("connect to nats server: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		s.Shutdown()
		return nil, fmt.Errorf("jetstream client: %w", err)
	}
	return &natsServer{srv: s, nc: nc, js: js}, nil
}

func (n *natsServer) url() string { return n.srv.ClientURL() }

// stored is what the stream holds: bytes and messages as the server accounts them;
// zero before scrape-once has created it.
func (n *natsServer) stored(ctx context.Context) (bytes, msgs uint64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := n.js.Stream(ctx, streamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s: %w", streamName, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s info: %w", streamName, err)
	}
	return info.State.Bytes, info.State.Msgs, nil
}

func (n *natsServer) close() {
	n.nc.Close()
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}
