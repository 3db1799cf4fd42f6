// Package httpserver serves a binary's HTTP listeners — its monitoring endpoints
// (self-metrics, health, an index page: MonitorHandler), or the drain's exposition
// endpoint — with optional TLS and basic auth from a Prometheus exporter-toolkit web
// config file, as exporters do (Listen).
package httpserver

import (
	"context"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/prometheus-streams/prometheus-streams/internal/version"
)

// Page is one more page a binary serves beside /metrics and /healthz, linked from the
// index at /.
type Page struct {
	Path    string // e.g. "/targets"
	About   string // what the index says it shows
	Handler http.Handler
}

// MonitorHandler serves /metrics from g, /healthz from ready (200 when ready, else 503), the
// pages, and at / an index that links to them all, so that a person who opens the bare
// address finds their way.
func MonitorHandler(g prometheus.Gatherer, ready func() bool, pages ...Page) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not subscribed to the stream", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	index := append([]Page{
		{Path: "/metrics", About: "this process's own metrics, for Prometheus"},
	}, pages...)
	index = append(index, Page{Path: "/healthz", About: "ok once subscribed to the stream, else 503 and why"})
	for _, p := range pages {
		mux.Handle(p.Path, p.Handler)
	}
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		var b strings.Builder
		fmt.Fprintf(&b, "<!DOCTYPE html>\n<html><head><title>prometheus-streams</title></head><body>\n<h1>prometheus-streams %s</h1>\n<ul>\n",
			html.EscapeString(version.Version))
		for _, p := range index {
			// Relative links, so that the index works behind a proxy's path prefix.
			href := strings.TrimPrefix(p.Path, "/")
			fmt.Fprintf(&b, "<li><a href=\"%s\">%s</a>: %s</li>\n", html.EscapeString(href), html.EscapeString(p.Path), html.EscapeString(p.About))
		}
		b.WriteString("</ul>\n</body></html>\n")
		_, _ = w.Write([]byte(b.String()))
	})
	return mux
}

// Server is a running listener.
type Server struct {
	srv *http.Server
	ln  net.Listener
	err chan error
}

// Listen binds addr and serves h until Shutdown. webConfigFile, when not empty, is an
// exporter-toolkit web config (TLS, basic auth), checked before anything is served.
// Binding happens before Listen returns, so a port in use is an error at start.
func Listen(addr, webConfigFile string, h http.Handler, logger *slog.Logger) (*Server, error) {
	if webConfigFile != "" {
		if err := web.Validate(webConfigFile); err != nil {
			return nil, fmt.Errorf("web config %s: %w", webConfigFile, err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	s := &Server{
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)},
		ln:  ln,
		err: make(chan error, 1),
	}
	go func() {
		err := web.Serve(ln, s.srv, &web.FlagConfig{WebConfigFile: &webConfigFile}, logger)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.err <- err
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Shutdown stops the server within ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown %s: %w", s.Addr(), err)
	}
	return <-s.err
}
