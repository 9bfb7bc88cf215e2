package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/lifecycle"
)

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

// logSetup says how to log; it comes from the [log] settings. The levels
// can change while the daemon runs (a reload).
type logSetup struct {
	level     slog.LevelVar // the daemon's own messages
	jobOutput slog.LevelVar // each line a job writes
	format    string        // auto, text or json
	target    string        // stderr, journal, syslog or file: "auto" resolved
	file      *lifecycle.LogFile
}

// newLogSetup resolves the log target for a daemon started by manager, and
// sets the levels.
func newLogSetup(l LogSettings, manager lifecycle.Manager) (*logSetup, error) {
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
// stay apart: the daemon's lines have the syslog facility "daemon" and
// the program's name as identifier; job lines have Log.JobFacility and
// Log.JobIdentifier, and carry the job's id, slot and attempt. So "show
// me the daemon" and "show me job x" are each one filter, and job output
// can be silenced (job_output = "debug") without silencing the daemon. On
// stderr or in a file, job lines are told apart by their job_id.
func (s *logSetup) loggers(name string, l LogSettings, stderr io.Writer) (*slog.Logger, func(jobs.Line), error) {
	jobTag := l.JobIdentifier
	if jobTag == "" {
		jobTag = name
	}
	jobFacility := Facilities[l.JobFacility]
	var daemonH, jobH slog.Handler
	switch s.target {
	case "journal":
		daemonH = lifecycle.NewJournalHandler(lifecycle.JournalOptions{
			Identifier: name, Facility: facilityDaemon, Level: &s.level, Fields: journalFields})
		jobH = lifecycle.NewJournalHandler(lifecycle.JournalOptions{
			Identifier: jobTag, Facility: jobFacility, Level: &s.jobOutput, Fields: journalFields})
	case "syslog":
		var err error
		if daemonH, err = lifecycle.NewSyslogHandler(lifecycle.SyslogOptions{
			Tag: name, Facility: facilityDaemon, Level: &s.level}); err != nil {
			return nil, nil, fmt.Errorf("log.target = \"syslog\": %w; set target = \"file\" or \"stderr\"", err)
		}
		if jobH, err = lifecycle.NewSyslogHandler(lifecycle.SyslogOptions{
			Tag: jobTag, Facility: jobFacility, Level: &s.jobOutput}); err != nil {
			return nil, nil, fmt.Errorf("log.target = \"syslog\": %w", err)
		}
	case "file":
		f, err := lifecycle.OpenLogFile(l.File)
		if err != nil {
			return nil, nil, fmt.Errorf("log.file: %w", err)
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
	sink := func(l jobs.Line) {
		level := s.jobOutput.Level()
		if !jobLog.Enabled(ctx, level) {
			return
		}
		attrs := []slog.Attr{slog.String("job_id", l.JobID), slog.Int("slot", l.Slot),
			slog.String("stream", l.Stream()), slog.Int("child_pid", l.Pid)}
		if l.Attempt > 0 {
			attrs = append(attrs, slog.Int("attempt", l.Attempt))
		}
		jobLog.LogAttrs(ctx, level, string(l.Text), attrs...)
	}
	return log, sink, nil
}

// streamHandler writes text on a terminal and JSON elsewhere, unless
// Log.Format says which.
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

// setLevels sets both levels from their names.
func (s *logSetup) setLevels(level, jobOutput string) error {
	l, err := ParseLevel(level)
	if err != nil {
		return fmt.Errorf("log.level: %w", err)
	}
	j, err := ParseLevel(jobOutput)
	if err != nil {
		return fmt.Errorf("log.job_output: %w", err)
	}
	s.level.Set(l)
	s.jobOutput.Set(j)
	return nil
}

// close closes the log file, if there is one.
func (s *logSetup) close() {
	if s != nil && s.file != nil {
		s.file.Close()
	}
}

// nameTrace prints LevelTrace as TRACE rather than DEBUG-4.
func nameTrace(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.LevelKey {
		if l, ok := a.Value.Any().(slog.Level); ok && l <= LevelTrace {
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
