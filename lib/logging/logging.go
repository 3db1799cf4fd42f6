// Package logging builds the one slog.Logger a binary passes to every package, from the
// config's verbose, debug and logfile keys.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
)

// Level maps the config's switches to a level: debug, else info when verbose, else warn.
func Level(verbose, debug bool) slog.Level {
	switch {
	case debug:
		return slog.LevelDebug
	case verbose:
		return slog.LevelInfo
	default:
		return slog.LevelWarn
	}
}

// New returns a logfmt logger writing to logfile (appended) or, when it is empty, to
// stderr; and a closer for the file. level may be a *slog.LevelVar, to change the level
// of a running process (the drain's reload).
func New(level slog.Leveler, logfile string, stderr io.Writer) (*slog.Logger, io.Closer, error) {
	var w io.Writer = stderr
	closer := io.NopCloser(nil)
	if logfile != "" {
		f, err := os.OpenFile(logfile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("open logfile: %w", err)
		}
		w, closer = f, f
	}
	h := slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})
	return slog.New(h), closer, nil
}
