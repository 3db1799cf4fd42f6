// Package logging builds the one slog.Logger a binary passes to every package, from the
// config's verbose, debug and logfile keys.
package logging

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
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

// Check reports what would keep New from opening logfile, without creating or changing
// it: for --check-config, which changes nothing on disk.
func Check(logfile string) error {
	if logfile == "" {
		return nil
	}
	f, err := os.OpenFile(logfile, os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		return f.Close()
	}
	if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("open logfile: %w", err)
	}
	// New would create it: its directory must let us.
	dir := filepath.Dir(logfile)
	const wOK, xOK = 0x2, 0x1 // access(2)
	if err := syscall.Access(dir, wOK|xOK); err != nil {
		return fmt.Errorf("open logfile: cannot create %s: %w", logfile, &os.PathError{Op: "access", Path: dir, Err: err})
	}
	return nil
}
