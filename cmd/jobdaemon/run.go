package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/internal/config"
	"github.com/jobdaemon/jobdaemon/internal/control"
	"github.com/jobdaemon/jobdaemon/internal/metrics"
	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/spool"
	"github.com/jobdaemon/jobdaemon/pkg/lifecycle"
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
	if code := noArgs(fs, stderr); code >= 0 {
		return code
	}
	return runDaemon(*cfgPath, *drain, stderr)
}

// runDaemon runs the daemon until it stops, and returns the exit code.
// It is "run" in the foreground or under systemd, and the daemon that
// "start" forks. The order of start-up matters: the PID file, the control
// socket, the privilege drop, then the spool (so that what it creates
// belongs to the daemon's user) and the first LoadConfig; only then does
// it say it is ready (READY=1, or the report to "start").
func runDaemon(cfgPath string, drain bool, stderr io.Writer) int {
	// Until jobs.Run handles them, a signal's default action would kill
	// the daemon half started (PID file and socket left behind): take them
	// now, and act on them once the daemon is ready.
	early := make(chan os.Signal, 8)
	signal.Notify(early, jobs.Signals...)
	defer signal.Stop(early)

	manager := lifecycle.Detect()
	report, err := lifecycle.Detach() // a classic daemon's stderr is /dev/null from here
	if err != nil {
		fmt.Fprintf(stderr, "jobdaemon: %v\n", err)
		return exitSoftware
	}
	r := &daemonRun{cfgPath: cfgPath, manager: manager, report: report, early: early,
		notifier: lifecycle.NewNotifier(nil), stderr: stderr}
	cfg, err := readConfig(cfgPath)
	if err != nil {
		return r.failed(config.ExitConfig, fmt.Errorf("invalid configuration:\n%w", err))
	}
	r.cfg = cfg
	if r.ls, err = newLogSetup(cfg.Log, manager); err != nil {
		return r.failed(config.ExitConfig, err)
	}
	var sink pool.Sink
	if r.log, sink, err = r.ls.loggers(cfg, stderr); err != nil {
		return r.failed(config.ExitConfig, err)
	}
	r.notifier = lifecycle.NewNotifier(r.log)
	if drain {
		r.progress = newProgress(stderr, r.log, func() progressCounts {
			st := r.d.Status() // its Queued is the spool's Depth
			return progressCounts{done: int(st.Succeeded), failed: r.spool.Failed(), running: st.Busy, queued: max(st.Queued, 0)}
		})
	}
	defer r.close()
	if code, err := r.start(drain, sink); err != nil {
		return r.failed(code, err)
	}
	return r.run(drain)
}

// failed reports a start-up failure everywhere someone may look: the log,
// stderr (unless the log is there already), "jobdaemon start" waiting on
// its pipe, and systemd; it returns code.
func (r *daemonRun) failed(code int, err error) int {
	if r.log != nil {
		r.log.Error("cannot start", "err", err)
	}
	// The log may be where nobody looks at start-up (a file, syslog);
	// a classic daemon's stderr is /dev/null, and the journal is stderr.
	if r.log == nil || r.manager != lifecycle.Classic && (r.ls.target == "file" || r.ls.target == "syslog") {
		fmt.Fprintf(r.stderr, "jobdaemon: %v\n", err)
	}
	r.report.Fail(code, err)
	r.notifier.Status("start-up failed: " + strings.Join(strings.Fields(err.Error()), " "))
	r.notifier.Errno(errnoOf(err, code))
	return code
}

// errnoOf picks the ERRNO= for systemd: the errno inside err, or one that
// says what kind of failure code is.
func errnoOf(err error, code int) syscall.Errno {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	if code == config.ExitConfig {
		return syscall.EINVAL
	}
	return syscall.EIO
}

// daemonRun is a daemon between start-up and exit: what it opened, and
// must close.
type daemonRun struct {
	stderr   io.Writer
	early    chan os.Signal // signals caught before jobs.Run took them
	isReady  bool           // ready has run; dispatcher only
	cfgPath  string
	cfg      *config.Config
	log      *slog.Logger
	ls       *logSetup
	notifier *lifecycle.Notifier
	manager  lifecycle.Manager

	pidFile  *lifecycle.PIDFile
	listener net.Listener
	spool    *spool.Spool
	app      *spoolApp
	d        *jobs.Daemon
	backend  *backend
	server   *control.Server
	served   chan error
	report   *lifecycle.Report
	progress *progressReporter // run --drain only

	lastReloadErr atomic.Pointer[string] // the STATUS= suffix after a refused reload
	stopMode      jobs.StopMode          // dispatcher only, as the rest below
	stopBegan     time.Time
	stopTimeout   time.Duration // stop_timeout + kill_grace in force when the daemon started
	statusBusy    atomic.Bool   // a STATUS= update is under way
}

// start opens everything and builds the daemon; on failure it returns the
// exit code and the error, and close releases what it opened.
func (r *daemonRun) start(drain bool, sink pool.Sink) (code int, err error) {
	cfg, log := r.cfg, r.log
	if cfg.Daemon.PIDFile != "" {
		if r.pidFile, err = lifecycle.LockPIDFile(cfg.Daemon.PIDFile); err != nil {
			return exitFailure, err
		}
		if pid := r.pidFile.StalePid(); pid != 0 {
			log.Warn("took over a stale PID file", "path", cfg.Daemon.PIDFile, "stale_pid", pid)
		}
	}
	if r.listener, err = controlListener(cfg, log); err != nil {
		return exitFailure, err
	}
	warnings, err := dropPrivileges(cfg, r.ls, log)
	if err != nil {
		return exitFailure, err
	}
	if r.spool, err = openSpool(cfg, log); err != nil {
		return exitFailure, fmt.Errorf("open the spool: %w", err)
	}
	r.app = newSpoolApp(cfg, r.spool)
	r.app.attempts = &r.ls.attempts
	if cfg.Log.JobLog != "" {
		if r.app.joblog, err = openJobLog(cfg.Log.JobLog); err != nil {
			return exitFailure, fmt.Errorf("open the job log: %w", err)
		}
	}
	r.stopTimeout = time.Duration(cfg.Daemon.StopTimeout) + time.Duration(cfg.Pool.KillGrace)
	opts := daemonOptions(cfg, log, sink)
	opts.OnReload = r.onReload
	opts.OnReloaded = r.onReloaded
	opts.OnStop = r.onStop
	opts.OnReopen = func() { r.ls.reopen(log) }
	opts.OnReady = r.ready
	opts.Heartbeat = r.heartbeat()
	opts.HeartbeatInterval = time.Second
	if w := r.notifier.WatchdogInterval(); w > 0 {
		opts.HeartbeatInterval = min(w, time.Second)
	}
	if drain {
		opts.StopWhenIdle = func() bool {
			n, err := r.spool.Depth()
			return err == nil && n == 0
		}
	}
	// Scraped through the control socket, which serves once r.d is set.
	m := metrics.New(func() jobs.Status { return r.d.Status() })
	opts.Observer = m
	r.app.metrics = m
	if r.d, err = jobs.New(r.app, opts); err != nil {
		return exitConfig, err
	}
	r.backend = &backend{d: r.d, spool: r.spool, manager: r.manager.String(), user: userName()}
	for _, w := range warnings {
		r.backend.warn(w)
	}
	if r.listener != nil {
		r.server = control.NewServer(r.backend, control.ServerOptions{
			Group:      cfg.Control.Gid(),
			Metrics:    m.Handler(),
			MaxPayload: int64(cfg.Source.Spool.MaxPayload),
			Logger:     log,
		})
	}
	return exitOK, nil
}

// run runs the daemon until it stops.
func (r *daemonRun) run(drain bool) int {
	err := r.d.Run(context.Background())
	if r.progress != nil {
		r.progress.stop()
	}
	if err != nil && !r.isReady { // the first LoadConfig, or the pool
		return r.failed(exitFailure, err)
	}
	if err != nil {
		r.log.Error("daemon stopped with an error", "err", err)
		return exitFailure
	}
	if drain {
		st := r.d.Status()
		fmt.Fprintf(r.stderr, "jobdaemon: %d jobs run, %d succeeded, %d ended in failed/\n",
			st.Started, st.Succeeded, r.spool.Failed())
		if r.spool.Failed() > 0 {
			return exitFailure
		}
	}
	return exitOK
}

// ready runs once the first LoadConfig is done and the dispatcher is about
// to take jobs: the daemon is ready.
func (r *daemonRun) ready() {
	r.isReady = true
	// jobs.Run handles signals from now on; act on those that came during
	// start-up.
	signal.Stop(r.early)
	for len(r.early) > 0 {
		r.d.Signal(<-r.early)
	}
	r.log.Info("ready", "manager", r.manager.String(), "control_socket", r.cfg.Control.Socket,
		"max_children", r.cfg.Pool.MaxChildren)
	// Requests are answered from now on. Until then they wait in the
	// socket's backlog: the first request of a socket activation gets the
	// ready daemon, not one still starting.
	if r.server != nil {
		r.served = make(chan error, 1)
		go func() { r.served <- r.server.Serve(r.listener) }()
	}
	r.notifier.ReadyStatus(r.statusLine())
	if err := r.report.Ready(); err != nil {
		r.log.Warn("could not tell \"jobdaemon start\" that the daemon is ready", "err", err)
	}
	if r.progress != nil {
		r.progress.start()
	}
}

// close releases what start opened, in reverse order.
func (r *daemonRun) close() {
	if r.served != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := r.server.Shutdown(ctx); err != nil {
			r.log.Warn("control socket: clients still connected at exit", "err", err)
		}
		cancel()
		if err := <-r.served; err != nil {
			r.log.Error("control socket", "err", err)
		}
	} else if r.listener != nil {
		r.listener.Close()
	}
	if r.app != nil && r.app.joblog != nil {
		r.app.joblog.Close()
	}
	if r.spool != nil {
		r.spool.Close()
	}
	if r.pidFile != nil {
		if err := r.pidFile.Remove(); err != nil {
			r.log.Warn("cannot remove the PID file", "err", err)
		}
	}
	if r.ls.file != nil {
		r.ls.file.Close()
	}
}

// statusLine is systemd's STATUS=: "6/8 busy, 120 queued, 10231 done, 3
// failed", and why the last reload was refused, while it was.
func (r *daemonRun) statusLine() string {
	st := r.d.Status()
	line := fmt.Sprintf("%d/%d busy", st.Busy, st.MaxChildren)
	if st.Queued >= 0 {
		line += fmt.Sprintf(", %d queued", st.Queued)
	}
	line += fmt.Sprintf(", %d done, %d failed", st.Succeeded, st.Failed)
	switch st.State {
	case jobs.StatePaused, jobs.StateDraining, jobs.StateStopping:
		line = string(st.State) + ": " + line
	}
	if e := r.lastReloadErr.Load(); e != nil {
		line += "; reload refused: " + *e
	}
	return line
}

// updateStatus refreshes STATUS= off the dispatcher goroutine: the status
// lists the spool's incoming/ and reads /proc for every child, which the
// loop that also pings the watchdog must not wait for.
func (r *daemonRun) updateStatus() {
	if !r.notifier.Enabled() || !r.statusBusy.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer r.statusBusy.Store(false)
		r.notifier.Status(r.statusLine())
	}()
}

// onReload re-reads the config file at the start of a reload; see
// reloader.
func (r *daemonRun) onReload(o *jobs.Options) error {
	r.notifier.Reloading()
	return reloader(r.cfgPath, r.cfg, r.app, r.ls, r.log)(o)
}

// onReloaded ends a reload for systemd: READY=1 whether it was applied or
// refused, since the daemon runs on either way, with the reason of a
// refusal in STATUS=.
func (r *daemonRun) onReloaded(err error) {
	r.lastReloadErr.Store(nil)
	if err != nil {
		e := strings.Join(strings.Fields(err.Error()), " ")
		r.lastReloadErr.Store(&e)
	}
	r.notifier.ReadyStatus(r.statusLine())
}

// onStop tells systemd that the daemon stops.
func (r *daemonRun) onStop(mode jobs.StopMode) {
	r.stopMode = mode
	if mode >= jobs.Graceful && r.stopBegan.IsZero() {
		// A drain is not a stop for systemd: the service stays "active"
		// until the daemon exits.
		r.stopBegan = time.Now()
		r.notifier.Stopping()
	}
	r.updateStatus()
}

// heartbeat returns the dispatcher's heartbeat: the watchdog ping (sent
// from the dispatcher loop itself, so that a stuck loop trips systemd's
// watchdog), STATUS=, and, while a stop takes its time, more time from
// systemd.
func (r *daemonRun) heartbeat() func() {
	var stallAfter time.Duration
	if v := os.Getenv(envTestStall); v != "" {
		stallAfter, _ = time.ParseDuration(v)
	}
	began := time.Now()
	var lastStatus time.Time
	return func() {
		if stallAfter > 0 && time.Since(began) > stallAfter {
			r.log.Warn("test hook: the dispatcher stalls now", "env", envTestStall)
			select {} // for the watchdog test only: see envTestStall
		}
		r.notifier.Watchdog()
		if time.Since(lastStatus) >= 5*time.Second || r.stopMode != 0 {
			lastStatus = time.Now()
			r.updateStatus()
		}
		if r.stopMode == jobs.Graceful {
			// Ask for the time this stop may still take, plus a margin:
			// systemd extends its stop timeout only if that is later. Past
			// the daemon's own deadline, ask no more: systemd's
			// TimeoutStopSec is the backstop for a child that cannot die.
			if left := time.Until(r.stopBegan.Add(r.stopTimeout)); left > 0 {
				r.notifier.ExtendTimeout(left + 5*time.Second)
			}
		}
	}
}

// envTestStall, set to a duration, makes the dispatcher hang that long
// after start: the integration tests use it to show that systemd's
// watchdog catches a stuck dispatcher. It is not for production.
const envTestStall = "JOBDAEMON_TEST_STALL_AFTER"

// controlListener returns the control socket: systemd's, when it passed
// one named "control", or one the daemon creates at [control] socket;
// nil when there is neither.
func controlListener(cfg *config.Config, log *slog.Logger) (net.Listener, error) {
	l, err := control.Activated()
	if err != nil {
		return nil, err
	}
	if l != nil {
		log.Debug("control socket passed by systemd", "addr", l.Addr().String())
		return l, nil
	}
	if cfg.Control.Socket == "" {
		return nil, nil
	}
	return control.Listen(cfg.Control.Socket, cfg.Control.Gid())
}

// dropPrivileges switches to [daemon] user and group, when started as
// root; it returns the warnings for status.
func dropPrivileges(cfg *config.Config, ls *logSetup, log *slog.Logger) ([]string, error) {
	cred := cfg.Daemon.Credential()
	if os.Geteuid() != 0 {
		if cred != nil && (int(cred.Uid) != os.Geteuid() || int(cred.Gid) != os.Getegid()) {
			return nil, fmt.Errorf("[daemon] user %q: only root can switch users, and this is uid %d: start as root, or remove [daemon] user", cfg.Daemon.User, os.Geteuid())
		}
		return nil, nil
	}
	if cred == nil {
		const w = "running as root with no [daemon] user: jobs run as root too; set [daemon] user"
		log.Warn(w)
		return []string{w}, nil
	}
	if ls.file != nil {
		// Opened as root: the daemon must still be able to reopen it.
		if err := ls.file.Chown(int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	groups := make([]int, len(cred.Groups))
	for i, g := range cred.Groups {
		groups[i] = int(g)
	}
	if err := lifecycle.DropPrivileges(int(cred.Uid), int(cred.Gid), groups); err != nil {
		return nil, err
	}
	log.Info("dropped privileges", "user", cfg.Daemon.User, "uid", cred.Uid, "gid", cred.Gid)
	return nil, nil
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
// change without a restart: the pool size (if the file's changed), timeouts
// and signals, the log levels, and the job's command, environment and
// working directory. What
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
		// A pool size set at run time (scale, TTIN, TTOU) stays, unless
		// the file's max_children itself changed.
		current, fileChanged := o.MaxChildren, next.Pool.MaxChildren != cfg.Pool.MaxChildren
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
		if !fileChanged {
			o.MaxChildren = current
		}
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
	diff("control.group", old.Control.Group, next.Control.Group)
	diff("log.format", old.Log.Format, next.Log.Format)
	diff("log.joblog", old.Log.JobLog, next.Log.JobLog)
	diff("log.target", old.Log.Target, next.Log.Target)
	diff("log.file", old.Log.File, next.Log.File)
	diff("log.job_facility", old.Log.JobFacility, next.Log.JobFacility)
	diff("log.job_identifier", old.Log.JobIdentifier, next.Log.JobIdentifier)
	return keys
}
