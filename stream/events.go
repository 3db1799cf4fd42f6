package stream

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// connectNATS opens the NATS connection a STAN session or a JetStream context runs on:
// every URL tried, reconnects without end, the security options of sec, events to ev.
// A refusal (credentials, TLS) wraps ErrAuth, any other failure ErrUnreachable.
func connectNATS(urls []string, name string, timeout time.Duration, sec *Security, where string, ev connEvents) (*nats.Conn, error) {
	secure, err := sec.natsOptions()
	if err != nil {
		return nil, err
	}
	perServer := serverTimeout(timeout, len(urls))
	dialer := &infoDialer{d: net.Dialer{Timeout: perServer}}
	opts := append([]nats.Option{
		nats.Name(name),
		nats.SetCustomDialer(dialer),
		nats.Timeout(perServer),
		nats.MaxReconnects(-1),
		// No reconnect buffer: a publish during a disconnect fails now instead of
		// being flushed later, after its ack wait may have expired (as stan.go does
		// with connections it owns).
		nats.ReconnectBufSize(-1),
	}, ev.options()...)
	nc, err := nats.Connect(strings.Join(urls, ","), append(opts, secure...)...)
	if err != nil {
		if r := refused(where, err, sec, dialer.lastInfo()); r != nil {
			return nil, r
		}
		return nil, fmt.Errorf("%w: connect to %s: %w", ErrUnreachable, where, err)
	}
	return nc, nil
}

// minServerTimeout is the least time one server gets to answer a connect: nats.go's
// own default per server is 2s; a healthy server answers at once, even far away.
const minServerTimeout = time.Second

// serverTimeout is how long one of servers NATS servers gets to answer a connect
// (TCP, its INFO, TLS, our CONNECT and its PONG) before nats.go tries the next: an
// equal share of timeout, which bounds the whole connect, with one share left for
// what follows it (the streaming handshake, the JetStream stream lookup), and at
// least minServerTimeout. A server that accepts connections but never answers (hung,
// or a proxy in front of one that is down) then costs a connect one share, not all of
// it: nats.go tries the servers in random order, each once.
func serverTimeout(timeout time.Duration, servers int) time.Duration {
	if servers <= 1 {
		return timeout
	}
	return min(timeout, max(timeout/time.Duration(servers+1), minServerTimeout))
}

// connEvents logs a NATS connection's events and tells its owner of disconnects and
// reconnects; STAN and JetStream connections share it.
type connEvents struct {
	log      *slog.Logger
	onChange func() // nil: nobody to tell
}

// options are the nats.go handlers that report the events.
func (e connEvents) options() []nats.Option {
	return []nats.Option{
		nats.DisconnectErrHandler(e.onDisconnect),
		nats.ReconnectHandler(e.onReconnect),
		nats.ErrorHandler(e.onAsyncError),
	}
}

func (e connEvents) onDisconnect(_ *nats.Conn, err error) {
	if err != nil {
		e.log.Warn("disconnected from NATS", "err", err)
	} else {
		e.log.Debug("disconnected from NATS")
	}
	if e.onChange != nil {
		e.onChange()
	}
}

func (e connEvents) onReconnect(nc *nats.Conn) {
	e.log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted())
	if e.onChange != nil {
		e.onChange()
	}
}

func (e connEvents) onAsyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if sub != nil {
		e.log.Error("NATS async error", "subject", sub.Subject, "err", err)
		return
	}
	e.log.Error("NATS async error", "err", err)
}
