package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/internal/config"
	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/spool"
	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

const runHelp = `
Runs the daemon in the foreground until it is stopped: the mode for systemd
(Type=notify), containers and terminals. Each job file of the spool's
incoming/ runs [job] command, at most [pool] max_children at once.

With --drain it processes what is queued, retries included, and exits: 0
when every job succeeded, 1 when at least one ended in failed/. On a
terminal it shows a progress bar; otherwise it logs a progress line every
few seconds.

Signals: TERM or INT stop gracefully (a second one kills the jobs), QUIT
drains, USR2 and CONT pause and resume, TTIN and TTOU add or remove a child
slot. HUP re-reads the config file: the pool size, timeouts, log levels and
the job's command, env and working directory apply to the next jobs; a file
with an error is refused and the old configuration runs on.`

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run", "--config FILE [--drain]", runHelp, stderr)
	cfgPath := configFlag(fs)
	drain := fs.Bool("drain", false, "process the queue, then exit (1 if a job failed)")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "jobdaemon run: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	log, sink, ls, err := setUpLogging(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "jobdaemon: %v\n", err)
		return exitConfig
	}
	sp, err := openSpool(cfg, log)
	if err != nil {
		log.Error("cannot open the spool", "err", err)
		return exitFailure
	}
	defer sp.Close()
	app, err := newSpoolApp(cfg, sp)
	if err != nil {
		log.Error("cannot set up jobs", "err", err)
		return exitConfig
	}
	if cfg.Log.JobLog != "" {
		if app.joblog, err = openJobLog(cfg.Log.JobLog); err != nil {
			log.Error("cannot open the job log", "err", err)
			return exitFailure
		}
		defer app.joblog.Close()
	}
	if os.Geteuid() == 0 && cfg.Daemon.User == "" {
		log.Warn("running as root with no [daemon] user: jobs run as root too")
	}

	opts := daemonOptions(cfg, log, sink)
	opts.OnReload = reloader(*cfgPath, cfg, app, ls, log)
	var d *jobs.Daemon
	var progress *progressReporter
	if *drain {
		opts.StopWhenIdle = func() bool {
			n, err := sp.Depth()
			return err == nil && n == 0
		}
		progress = newProgress(stderr, log, func() progressCounts {
			st := d.Status()
			queued, _ := sp.Depth()
			return progressCounts{done: int(st.Succeeded), failed: sp.Failed(), running: len(st.Slots), queued: queued}
		})
	}
	d, err = jobs.New(app, opts)
	if err != nil {
		log.Error("cannot start", "err", err)
		return exitConfig
	}
	if progress != nil {
		progress.start()
		defer progress.stop()
	}
	if err := d.Run(context.Background()); err != nil {
		log.Error("daemon stopped with an error", "err", err)
		return exitFailure
	}
	if *drain {
		progress.stop()
		st := d.Status()
		fmt.Fprintf(stderr, "jobdaemon: %d jobs run, %d succeeded, %d ended in failed/\n",
			st.Started, st.Succeeded, sp.Failed())
		if sp.Failed() > 0 {
			return exitFailure
		}
	}
	return exitOK
}

// loadConfig loads and checks the config file; on failure it prints the
// reasons and returns nil and the exit code.
func loadConfig(path string, stderr io.Writer) (*config.Config, int) {
	cfg, err := readConfig(path)
	if err != nil {
		fmt.Fprintf(stderr, "jobdaemon: invalid configuration:\n%v\n", err)
		return nil, config.ExitConfig
	}
	return cfg, exitOK
}

// readConfig loads the config file and checks what the binary needs beyond
// config.Load: at start and on every reload.
func readConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if cfg.Pool.JobsPerChild > 1 {
		return nil, fmt.Errorf("%s: [pool] jobs_per_child = %d: the jobdaemon binary runs one command per job; "+
			"set it to 1 (worker children are for Go programs built on pkg/jobs)", path, cfg.Pool.JobsPerChild)
	}
	return cfg, nil
}

func setUpLogging(cfg *config.Config, stderr io.Writer) (*slog.Logger, pool.Sink, *logSetup, error) {
	ls := &logSetup{format: cfg.Log.Format}
	if err := ls.setLevels(cfg.Log.Level, cfg.Log.JobOutput); err != nil {
		return nil, nil, nil, err
	}
	log, sink := ls.loggers(stderr)
	return log, sink, ls, nil
}

func openSpool(cfg *config.Config, log *slog.Logger) (*spool.Spool, error) {
	if cfg.Source.Type != "spool" {
		return nil, fmt.Errorf("source type %q is not supported by this build", cfg.Source.Type)
	}
	return spool.Open(spool.Options{
		Dir:            cfg.Source.Spool.Dir,
		MaxAttempts:    cfg.Job.MaxAttempts,
		Backoff:        time.Duration(cfg.Job.Backoff),
		MaxPayload:     int64(cfg.Source.Spool.MaxPayload),
		RescanInterval: time.Duration(cfg.Source.Spool.RescanInterval),
		Logger:         log,
	})
}

func daemonOptions(cfg *config.Config, log *slog.Logger, sink pool.Sink) jobs.Options {
	o := jobs.Options{Logger: log, Output: sink}
	setRuntimeOptions(&o, cfg)
	return o
}

// setRuntimeOptions sets the options a reload may change.
func setRuntimeOptions(o *jobs.Options, cfg *config.Config) {
	o.MaxChildren = cfg.Pool.MaxChildren
	o.JobTimeout = time.Duration(cfg.Pool.JobTimeout)
	o.KillGrace = time.Duration(cfg.Pool.KillGrace)
	o.StopSignal = syscall.Signal(cfg.Pool.StopSignal)
	o.NoForwardSignals = !cfg.Pool.ForwardSignals
	o.StopTimeout = time.Duration(cfg.Daemon.StopTimeout)
	o.IdleInterval = time.Duration(cfg.Daemon.IdleInterval)
}

// reloader re-reads the config file on a reload (HUP), and applies what can
// change without a restart: the pool size, timeouts and signals, the log
// levels, and the job's command, environment and working directory. What
// needs a restart is named in a warning and keeps its old value.
func reloader(path string, cfg *config.Config, app *spoolApp, ls *logSetup, log *slog.Logger) func(*jobs.Options) error {
	return func(o *jobs.Options) error {
		next, err := readConfig(path)
		if err != nil {
			return fmt.Errorf("new configuration refused, the old one stays:\n%w", err)
		}
		if keys := restartKeys(cfg, next); len(keys) > 0 {
			log.Warn("these changes need a restart and are ignored until then", "keys", strings.Join(keys, ", "))
		}
		if err := ls.setLevels(next.Log.Level, next.Log.JobOutput); err != nil {
			return err
		}
		cfg.Pool.MaxChildren, cfg.Pool.JobTimeout, cfg.Pool.KillGrace = next.Pool.MaxChildren, next.Pool.JobTimeout, next.Pool.KillGrace
		cfg.Pool.StopSignal, cfg.Pool.ForwardSignals = next.Pool.StopSignal, next.Pool.ForwardSignals
		cfg.Daemon.StopTimeout, cfg.Daemon.IdleInterval = next.Daemon.StopTimeout, next.Daemon.IdleInterval
		cfg.Log.Level, cfg.Log.JobOutput = next.Log.Level, next.Log.JobOutput
		// Only the parts of [job] that take effect per job: the spool's
		// attempts and backoff need a restart.
		cfg.Job.Command, cfg.Job.WorkingDir = next.Job.Command, next.Job.WorkingDir
		cfg.Job.Env, cfg.Job.InheritEnv = next.Job.Env, next.Job.InheritEnv
		app.env = jobEnv(cfg.Job)
		setRuntimeOptions(o, cfg)
		return nil
	}
}

// restartKeys names the settings that differ between old and next and
// cannot change while the daemon runs.
func restartKeys(old, next *config.Config) []string {
	var keys []string
	diff := func(key string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			keys = append(keys, key)
		}
	}
	diff("daemon.pid_file", old.Daemon.PIDFile, next.Daemon.PIDFile)
	diff("daemon.user", old.Daemon.User, next.Daemon.User)
	diff("daemon.group", old.Daemon.Group, next.Daemon.Group)
	diff("job.max_attempts", old.Job.MaxAttempts, next.Job.MaxAttempts)
	diff("job.backoff", old.Job.Backoff, next.Job.Backoff)
	diff("source", old.Source, next.Source)
	diff("control.socket", old.Control.Socket, next.Control.Socket)
	diff("log.format", old.Log.Format, next.Log.Format)
	diff("log.joblog", old.Log.JobLog, next.Log.JobLog)
	return keys
}
