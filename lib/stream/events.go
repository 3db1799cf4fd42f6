package stream

import (
	"log/slog"

	"github.com/nats-io/nats.go"
)

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
