package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/jobdaemon/jobdaemon/internal/config"
	"github.com/jobdaemon/jobdaemon/pkg/lifecycle"
	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

// levelTrace is below Debug: the daemon's internal steps, like the PHP
// original's DAEMON log level.
const levelTrace = config.LevelTrace

// facilityDaemon is syslog's LOG_DAEMON: the daemon's own lines always
// carry it, so that they can be told from the jobs' lines.
const facilityDaemon = 3

// journalFields names the journal fields of job-related attributes, so
// that "journalctl JOB_ID=x" finds a job's lines, the daemon's and its own.
var journalFields = map[string]string{
	"job_id":    "JOB_ID",
	"slot":      "JOB_SLOT",
	"attempt":   "JOB_ATTEMPT",
	"child_pid": "CHILD_PID",
}

// logSetup says how to log; it comes from the [log] table. The levels can
// change while the daemon runs (a reload).
type logSetup struct {
	level     slog.LevelVar // the daemon's own messages
	jobOutput slog.LevelVar // each line a job writes
	format    string        // auto, text or json
	target    string        // stderr, journal, syslog or file: "auto" resolved
	file      *lifecycle.LogFile

	// The attempt of each running job, by id, for the JOB_ATTEMPT of its
	// output lines: lines arrive on pool goroutines.
	attempts sync.Map
}

// newLogSetup resolves [log] target for a daemon started by manager, and
// sets the levels.
func newLogSetup(l config.Log, manager lifecycle.Manager) (*logSetup, error) {
	s := &logSetup{format: l.Format, target: l.Target}
	if s.target == "auto" {
		switch {
		case lifecycle.JournalStream():
			s.target = "journal"
		case manager == lifecycle.Classic:
			s.target = "syslog"
		default:
			s.target = "stderr"
		}
	}
	return s, s.setLevels(l.Level, l.JobOutput)
}

// loggers returns the daemon's logger and the sink for job output. They
// stay apart: the daemon's lines have the syslog facility "daemon" and the
// identifier "jobdaemon"; job lines have [log] job_facility and
// job_identifier, and carry the job's id, slot and attempt. So "show me
// the daemon" and "show me job x" are each one filter, and job output can
// be silenced (job_output = "debug") without silencing the daemon. On
// stderr or in a file, job lines are told apart by their job_id.
func (s *logSetup) loggers(cfg *config.Config, stderr io.Writer) (*slog.Logger, pool.Sink, error) {
	jobTag := cfg.Log.JobIdentifier
	if jobTag == "" && len(cfg.Job.Command) > 0 {
		jobTag = filepath.Base(cfg.Job.Command[0])
	}
	jobFacility := config.Facilities[cfg.Log.JobFacility]
	var daemonH, jobH slog.Handler
	switch s.target {
	case "journal":
		daemonH = lifecycle.NewJournalHandler(lifecycle.JournalOptions{
			Identifier: "jobdaemon", Facility: facilityDaemon, Level: &s.level, Fields: journalFields})
		jobH = lifecycle.NewJournalHandler(lifecycle.JournalOptions{
			Identifier: jobTag, Facility: jobFacility, Level: &s.jobOutput, Fields: journalFields})
	case "syslog":
		var err error
		if daemonH, err = lifecycle.NewSyslogHandler(lifecycle.SyslogOptions{
			Tag: "jobdaemon", Facility: facilityDaemon, Level: &s.level}); err != nil {
			return nil, nil, fmt.Errorf("[log] target = \"syslog\": %w; set target = \"file\" or \"stderr\"", err)
		}
		if jobH, err = lifecycle.NewSyslogHandler(lifecycle.SyslogOptions{
			Tag: jobTag, Facility: jobFacility, Level: &s.jobOutput}); err != nil {
			return nil, nil, fmt.Errorf("[log] target = \"syslog\": %w", err)
		}
	case "file":
		f, err := lifecycle.OpenLogFile(cfg.Log.File)
		if err != nil {
			return nil, nil, fmt.Errorf("[log] file: %w", err)
		}
		s.file = f
		daemonH = s.streamHandler(f, &s.level)
		jobH = s.streamHandler(f, &s.jobOutput)
	default:
		daemonH = s.streamHandler(stderr, &s.level)
		jobH = s.streamHandler(stderr, &s.jobOutput)
	}
	log := slog.New(daemonH)
	jobLog := slog.New(jobH)
	ctx := context.Background()
	sink := pool.SinkFunc(func(l pool.Line) {
		level := s.jobOutput.Level()
		if !jobLog.Enabled(ctx, level) {
			return
		}
		attrs := []slog.Attr{slog.String("job_id", l.Label), slog.Int("slot", l.Slot),
			slog.String("stream", l.Stream.String()), slog.Int("child_pid", l.Pid)}
		if a, ok := s.attempts.Load(l.Label); ok {
			attrs = append(attrs, slog.Int("attempt", a.(int)))
		}
		jobLog.LogAttrs(ctx, level, string(l.Text), attrs...)
	})
	return log, sink, nil
}

// streamHandler writes text on a terminal and JSON elsewhere, unless
// [log] format says which.
func (s *logSetup) streamHandler(w io.Writer, level slog.Leveler) slog.Handler {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: nameTrace}
	if s.format == "json" || s.format != "text" && !isTerminal(w) {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}

// reopen reopens the log file, for SIGUSR1 after logrotate moved it.
func (s *logSetup) reopen(log *slog.Logger) {
	if s.file == nil {
		log.Info("SIGUSR1: no log file to reopen", "target", s.target)
		return
	}
	if err := s.file.Reopen(); err != nil {
		log.Error("cannot reopen the log file; still writing to the old one", "err", err)
		return
	}
	log.Info("log file reopened")
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
