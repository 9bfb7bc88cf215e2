package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
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
drains, HUP reloads, USR2 and CONT pause and resume, TTIN and TTOU add or
remove a child slot.`

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
	log, sink, err := setUpLogging(cfg, stderr)
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
			return progressCounts{done: int(st.Succeeded), failed: app.Failed(), running: len(st.Slots), queued: queued}
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
			st.Started, st.Succeeded, app.Failed())
		if app.Failed() > 0 {
			return exitFailure
		}
	}
	return exitOK
}

// loadConfig loads and checks the config file; on failure it prints the
// reasons and returns nil and the exit code.
func loadConfig(path string, stderr io.Writer) (*config.Config, int) {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "jobdaemon: invalid configuration:\n%v\n", err)
		return nil, config.ExitConfig
	}
	if cfg.Pool.JobsPerChild > 1 {
		fmt.Fprintf(stderr, "jobdaemon: invalid configuration:\n%s: [pool] jobs_per_child = %d: "+
			"the jobdaemon binary runs one command per job; set it to 1 (worker children are for Go programs built on pkg/jobs)\n",
			path, cfg.Pool.JobsPerChild)
		return nil, config.ExitConfig
	}
	return cfg, exitOK
}

func setUpLogging(cfg *config.Config, stderr io.Writer) (*slog.Logger, pool.Sink, error) {
	level, err := config.ParseLevel(cfg.Log.Level)
	if err != nil {
		return nil, nil, err
	}
	jobLevel, err := config.ParseLevel(cfg.Log.JobOutput)
	if err != nil {
		return nil, nil, err
	}
	log, sink := logSetup{level: level, jobOutput: jobLevel, format: cfg.Log.Format}.loggers(stderr)
	return log, sink, nil
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
	return jobs.Options{
		MaxChildren:      cfg.Pool.MaxChildren,
		JobTimeout:       time.Duration(cfg.Pool.JobTimeout),
		KillGrace:        time.Duration(cfg.Pool.KillGrace),
		StopSignal:       syscall.Signal(cfg.Pool.StopSignal),
		NoForwardSignals: !cfg.Pool.ForwardSignals,
		StopTimeout:      time.Duration(cfg.Daemon.StopTimeout),
		IdleInterval:     time.Duration(cfg.Daemon.IdleInterval),
		Logger:           log,
		Output:           sink,
	}
}
