package main

import (
	"context"
	"io"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

// levelTrace is below Debug: the daemon's internal steps, like the PHP
// original's DAEMON log level.
const levelTrace = slog.LevelDebug - 4

// logSetup says how to log; it comes from the [log] table.
type logSetup struct {
	level     slog.Level // the daemon's own messages
	jobOutput slog.Level // each line a job writes
	format    string     // auto, text or json
}

// loggers returns the daemon's logger and the sink for job output. Both
// write to w, but they stay apart: job lines carry job_id, slot and
// stream, and are logged at the job_output level, so that "show me the
// daemon" and "show me job x" are each one filter, and job output can be
// silenced (job_output = "debug") without silencing the daemon.
func (s logSetup) loggers(w io.Writer) (*slog.Logger, pool.Sink) {
	opts := &slog.HandlerOptions{Level: s.level, ReplaceAttr: nameTrace}
	var h slog.Handler
	if s.format == "json" || s.format != "text" && !isTerminal(w) {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	log := slog.New(h)
	ctx, level := context.Background(), s.jobOutput
	sink := pool.SinkFunc(func(l pool.Line) {
		if !log.Enabled(ctx, level) {
			return
		}
		log.LogAttrs(ctx, level, string(l.Text),
			slog.String("job_id", l.Label), slog.Int("slot", l.Slot),
			slog.String("stream", l.Stream.String()))
	})
	return log, sink
}

// nameTrace prints levelTrace as TRACE rather than DEBUG-4.
func nameTrace(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.LevelKey {
		if l, ok := a.Value.Any().(slog.Level); ok && l <= levelTrace {
			a.Value = slog.StringValue("TRACE")
		}
	}
	return a
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
