package main

import (
	"context"
	"io"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	"github.com/jobdaemon/jobdaemon/internal/config"
	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

// levelTrace is below Debug: the daemon's internal steps, like the PHP
// original's DAEMON log level.
const levelTrace = config.LevelTrace

// logSetup says how to log; it comes from the [log] table. The levels can
// change while the daemon runs (a reload).
type logSetup struct {
	level     slog.LevelVar // the daemon's own messages
	jobOutput slog.LevelVar // each line a job writes
	format    string        // auto, text or json
}

// loggers returns the daemon's logger and the sink for job output. Both
// write to w, but they stay apart: job lines carry job_id, slot and
// stream, and are logged at the job_output level, so that "show me the
// daemon" and "show me job x" are each one filter, and job output can be
// silenced (job_output = "debug") without silencing the daemon.
func (s *logSetup) loggers(w io.Writer) (*slog.Logger, pool.Sink) {
	opts := &slog.HandlerOptions{Level: &s.level, ReplaceAttr: nameTrace}
	var h slog.Handler
	if s.format == "json" || s.format != "text" && !isTerminal(w) {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	log := slog.New(h)
	ctx := context.Background()
	sink := pool.SinkFunc(func(l pool.Line) {
		level := s.jobOutput.Level()
		if !log.Enabled(ctx, level) {
			return
		}
		log.LogAttrs(ctx, level, string(l.Text),
			slog.String("job_id", l.Label), slog.Int("slot", l.Slot),
			slog.String("stream", l.Stream.String()))
	})
	return log, sink
}

// setLevels sets both levels from their names in the [log] table.
func (s *logSetup) setLevels(level, jobOutput string) error {
	l, err := config.ParseLevel(level)
	if err != nil {
		return err
	}
	j, err := config.ParseLevel(jobOutput)
	if err != nil {
		return err
	}
	s.level.Set(l)
	s.jobOutput.Set(j)
	return nil
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
