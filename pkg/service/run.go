package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/internal/control"
	"github.com/jobdaemon/jobdaemon/internal/metrics"
	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/lifecycle"
	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

// runDaemon runs the daemon until it stops, and returns the exit code. It
// is "run" in the foreground or under systemd, and the daemon that "start"
// forks. The order of start-up matters: the settings, the log, the PID
// file, the control socket, the privilege drop, then the first LoadConfig
// (where an application opens its source, so that what it creates belongs
// to the daemon's user); only then does it say it is ready (READY=1, or
// the report to "start").
func (s *service) runDaemon(configFile string, drain bool) int {
	// Signals caught into a channel nobody reads (a full channel drops
	// them) until the exit, after the close: SIGPIPE from the first line
	// logged on, so that a log reader that goes away does not kill the
	// daemon (jobs.Run does the same for its own run); the daemon's own
	// signals from the start of a stop on (holdSignals).
	dropped := make(chan os.Signal, 1)
	signal.Notify(dropped, syscall.SIGPIPE)
	defer signal.Stop(dropped)
	manager := lifecycle.Detect()
	report, err := lifecycle.Detach() // a classic daemon's stderr is /dev/null from here
	if err != nil {
		fmt.Fprintf(s.stderr, "%s: %v\n", s.name, err)
		return ExitSoftware
	}
	r := &daemonRun{svc: s, manager: manager, report: report, configFile: configFile, dropped: dropped,
		notifier: lifecycle.NewNotifier(nil), early: newEarlySignals()}
	defer r.early.stop()
	st, err := s.settings(r.early.ctx, "run", configFile)
	if err != nil {
		return r.failed(ExitConfig, fmt.Errorf("invalid configuration:\n%w", err))
	}
	r.st = st
	if r.ls, err = newLogSetup(st.Log, manager); err != nil {
		return r.failed(ExitConfig, err)
	}
	var sink func(jobs.Line)
	if r.log, sink, err = r.ls.loggers(s.name, st.Log, s.stderr); err != nil {
		return r.failed(ExitConfig, err)
	}
	r.notifier = lifecycle.NewNotifier(r.log)
	if drain {
		r.progress = newProgress(s.stderr, r.log, r.progressCounts)
	}
	defer r.close()
	if code, err := r.start(drain, sink); err != nil {
		return r.failed(code, err)
	}
	return r.run(drain)
}

// daemonRun is a daemon between start-up and exit: what it opened, and
// must close.
type daemonRun struct {
	svc        *service
	early      *earlySignals  // signals caught before the dispatcher took them
	dropped    chan os.Signal // signals caught and dropped until the exit (runDaemon, holdSignals)
	isReady    bool           // ready has run; dispatcher only
	configFile string
	st         Settings // in force: the live ones change on reload (dispatcher only)
	log        *slog.Logger
	ls         *logSetup
	notifier   *lifecycle.Notifier
	manager    lifecycle.Manager

	pidFile  *lifecycle.PIDFile
	listener net.Listener
	d        *jobs.Daemon

	metricsListener net.Listener // [metrics] listen
	metricsServer   *http.Server
	backend         *backend
	server          *control.Server
	served          chan error
	report          *lifecycle.Report
	progress        *progressReporter   // run --drain only
	jobCred         *syscall.Credential // whom jobs run as; nil: the daemon's user

	status   statusLine
	stopMode jobs.StopMode // dispatcher only, as the rest below
	stopped  time.Time     // when a graceful stop began
	stopTime time.Duration // stop_timeout + kill_grace in force when the daemon started
}

// failed reports a start-up failure everywhere someone may look: the log,
// stderr (unless the log is there already), "start" waiting on its pipe,
// and systemd; it returns code.
func (r *daemonRun) failed(code int, err error) int {
	if r.log != nil {
		r.log.Error("cannot start", "err", err)
	}
	// The log may be where nobody looks at start-up (a file, syslog);
	// a classic daemon's stderr is /dev/null, and the journal is stderr.
	if r.log == nil || r.manager != lifecycle.Classic && (r.ls.target == "file" || r.ls.target == "syslog") {
		fmt.Fprintf(r.svc.stderr, "%s: %v\n", r.svc.name, err)
	}
	r.report.Fail(code, err)
	r.notifier.Status("start-up failed: " + oneLine(err.Error()))
	r.notifier.Errno(errnoOf(err, code))
	return code
}

// oneLine joins the lines of a message, for STATUS= and the like.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// errnoOf picks the ERRNO= for systemd: the errno inside err, or one that
// says what kind of failure code is.
func errnoOf(err error, code int) syscall.Errno {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	if code == ExitConfig {
		return syscall.EINVAL
	}
	return syscall.EIO
}

// start opens everything and builds the daemon; on failure it returns the
// exit code and the error, and close releases what it opened.
func (r *daemonRun) start(drain bool, sink func(jobs.Line)) (code int, err error) {
	st, log := &r.st, r.log
	if st.Daemon.PIDFile != "" {
		if r.pidFile, err = lifecycle.LockPIDFile(st.Daemon.PIDFile); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				err = fmt.Errorf("%w: create it (the init script and tmpfiles.d do), or set daemon.pid_file elsewhere", err)
			}
			return ExitFailure, err
		}
		if pid := r.pidFile.StalePid(); pid != 0 {
			log.Warn("took over a stale PID file", "path", st.Daemon.PIDFile, "stale_pid", pid)
		}
	}
	gid, err := st.ControlGid()
	if err != nil {
		return ExitConfig, err
	}
	if r.listener, err = controlListener(st.Control.Socket, gid, log); err != nil {
		return ExitFailure, err
	}
	if a := st.Metrics.Listen; a != "" {
		// Bound before the privilege drop, so that a port below 1024 may
		// be used.
		if r.metricsListener, err = net.Listen("tcp", a); err != nil {
			return ExitFailure, fmt.Errorf("metrics.listen: %w", err)
		}
	}
	warnings, err := r.dropPrivileges()
	if err != nil {
		return ExitFailure, err
	}
	jobCred, jobWarnings, err := r.jobIdentity()
	if err != nil {
		return ExitFailure, err
	}
	r.jobCred, warnings = jobCred, append(warnings, jobWarnings...)
	r.stopTime = st.Daemon.StopTimeout + st.Pool.KillGrace
	opts := r.jobsOptions(sink)
	if drain {
		opts.StopWhenIdle = r.idle
	}
	// Scraped through the control socket, which serves once r.d is set.
	m := metrics.New(func() jobs.Status { return r.d.Summary() }, r.svc.opts.Version)
	if _, ok := r.svc.app.(JobCounter); ok {
		m.CountJobs(func() (map[string]int64, error) { return countJobs(r.svc.app) })
	}
	opts.Observer = observers(m, r.svc.opts.Jobs.Observer)
	if r.d, err = jobs.New(r.svc.app, opts); err != nil {
		return ExitConfig, err
	}
	r.backend = &backend{d: r.d, app: r.svc.app, version: r.svc.opts.Version, manager: r.manager.String(), user: userName()}
	for _, w := range warnings {
		r.backend.warn(w)
	}
	if r.metricsListener != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", m.Handler())
		r.metricsServer = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	}
	if r.listener != nil {
		so := control.ServerOptions{Group: gid, Metrics: m.Handler(), Logger: log}
		if mp, ok := r.svc.app.(interface{ MaxPayload() int64 }); ok {
			so.MaxPayload = mp.MaxPayload()
		}
		r.server = control.NewServer(r.backend, so)
	}
	return ExitOK, nil
}

// jobsOptions returns the options of the jobs daemon: the settings, the
// application's own options, and the service's hooks.
func (r *daemonRun) jobsOptions(sink func(jobs.Line)) jobs.Options {
	opts := r.svc.opts.Jobs
	opts.Logger, opts.Output = r.log, sink
	opts.JobsPerChild = r.st.Pool.JobsPerChild
	opts.Credential = r.jobCred
	opts.Isolation = jobs.Isolation{
		Cgroups:       jobs.CgroupMode(r.st.Pool.Cgroups),
		PerJobCgroups: r.st.Pool.CgroupPerJob,
		KeepLeftovers: r.st.Job.KeepLeftovers,
		StateDir:      r.st.StatePath(),
		MemoryMax:     int64(r.st.Job.MemoryMax),
		PidsMax:       r.st.Job.PidsMax,
		CPUWeight:     r.st.Job.CPUWeight,
		CPUMax:        r.st.Job.CPUMax,
	}
	setRuntimeOptions(&opts, &r.st)
	appReload, appReloaded, appStop := opts.OnReload, opts.OnReloaded, opts.OnStop
	opts.OnReload = func(o *jobs.Options) error {
		if err := r.onReload(o); err != nil {
			return err
		}
		if appReload != nil {
			return appReload(o)
		}
		return nil
	}
	opts.OnReloaded = func(err error) {
		r.onReloaded(err)
		if appReloaded != nil {
			appReloaded(err)
		}
	}
	opts.OnStop = func(mode jobs.StopMode) {
		r.onStop(mode)
		if appStop != nil {
			appStop(mode)
		}
	}
	opts.OnReopen = func() { r.ls.reopen(r.log) }
	opts.OnReady = r.ready
	opts.Heartbeat, opts.HeartbeatInterval = r.heartbeat()
	return opts
}

// setRuntimeOptions sets the options that the live settings give.
func setRuntimeOptions(o *jobs.Options, st *Settings) {
	o.MaxChildren = st.Pool.MaxChildren
	o.JobTimeout = st.Pool.JobTimeout
	o.KillGrace = st.Pool.KillGrace
	o.StopSignal = st.Pool.StopSignal
	o.NoForwardSignals = !st.Pool.ForwardSignals
	o.StopTimeout = st.Daemon.StopTimeout
	o.IdleInterval = st.Daemon.IdleInterval
	o.WorkerMaxAge = st.Pool.WorkerMaxAge
	o.WorkerMaxRSS = int64(st.Pool.WorkerMaxRSS)
}

// observers returns one Observer that tells each of obs that is not nil.
func observers(obs ...jobs.Observer) jobs.Observer {
	var list multiObserver
	for _, o := range obs {
		if o != nil {
			list = append(list, o)
		}
	}
	if len(list) == 1 {
		return list[0]
	}
	return list
}

type multiObserver []jobs.Observer

func (m multiObserver) JobStarted(job *jobs.Job, wait time.Duration) {
	for _, o := range m {
		o.JobStarted(job, wait)
	}
}

func (m multiObserver) JobFinished(job *jobs.Job, res jobs.Result, v jobs.Verdict) {
	for _, o := range m {
		o.JobFinished(job, res, v)
	}
}

// idle is StopWhenIdle of a drain: the source has nothing queued, when it
// can tell (Depther); otherwise NextJob found nothing and nothing runs.
func (r *daemonRun) idle() bool {
	dp, ok := r.svc.app.(jobs.Depther)
	if !ok {
		return true
	}
	n, err := dp.Depth()
	return err == nil && n == 0
}

// run runs the daemon until it stops.
func (r *daemonRun) run(drain bool) int {
	err := r.d.Run(r.early.ctx)
	if r.progress != nil {
		r.progress.stop()
	}
	if err != nil && !r.isReady { // the first LoadConfig, or the pool
		if r.early.cancelled() {
			r.log.Info("stopped during start-up")
			return ExitOK
		}
		return r.failed(ExitFailure, err)
	}
	if err != nil {
		r.log.Error("daemon stopped with an error", "err", err)
		return ExitFailure
	}
	if drain {
		st := r.d.Summary()
		failed := r.failedJobs(&st)
		fmt.Fprintf(r.svc.stderr, "%s: %d jobs completed, %d failed (%d runs, %d failed)\n",
			r.svc.name, st.JobsCompleted, failed, st.RunsStarted, st.RunsFailed)
		if failed > 0 {
			return ExitFailure
		}
	}
	return ExitOK
}

// progressCounts is where a drain run stands.
func (r *daemonRun) progressCounts() progressCounts {
	st := r.d.Summary()
	return progressCounts{done: int(st.JobsCompleted), failed: r.failedJobs(&st), running: st.Busy, queued: max(st.Queued, 0)}
}

// failedJobs counts the jobs that failed for good: the source's own count
// when it keeps one (it includes jobs refused without a run), else the
// verdicts.
func (r *daemonRun) failedJobs(st *jobs.Status) int {
	if fc, ok := r.svc.app.(FailedCounter); ok {
		return fc.Failed()
	}
	return int(st.JobsFailed)
}

// ready runs once the first LoadConfig is done and the dispatcher is about
// to take jobs: the daemon is ready.
func (r *daemonRun) ready() {
	r.isReady = true
	// The dispatcher handles signals from now on; act on those that came
	// during start-up.
	for _, sig := range r.early.handOver() {
		r.d.Signal(sig)
	}
	if r.early.cancelled() {
		// Run's context is cancelled: the dispatcher stops at once.
		r.log.Info("signal received", "signal", syscall.SIGTERM.String(), "during", "start-up")
	}
	r.log.Info("ready", "manager", r.manager.String(), "control_socket", r.st.Control.Socket,
		"max_children", r.d.MaxChildren())
	// Requests are answered from now on. Until then they wait in the
	// socket's backlog: the first request of a socket activation gets the
	// ready daemon, not one still starting.
	if r.server != nil {
		r.served = make(chan error, 1)
		go func() { r.served <- r.server.Serve(r.listener) }()
	}
	if r.metricsServer != nil {
		go func() { _ = r.metricsServer.Serve(r.metricsListener) }()
		r.log.Info("serving metrics", "listen", r.metricsListener.Addr().String())
	}
	r.notifier.ReadyStatus(r.status.line(r.d))
	if err := r.report.Ready(); err != nil {
		r.log.Warn("could not tell \"start\" that the daemon is ready", "err", err)
	}
	if r.progress != nil {
		r.progress.start()
	}
}

// holdSignals keeps the daemon's signals caught, and dropped, until the
// exit. Once the dispatcher has returned, they would otherwise take their
// default action: a second TERM, or logrotate's HUP, would kill the daemon
// halfway through its close, with its PID file and control socket left
// behind. It is called when a stop begins (onStop), while the dispatcher
// still catches them too, so that no moment is left when neither does;
// every run that got past the hand-over of the early signals ends through
// a stop, a drain that runs out of jobs included, and one that did not
// closes while earlySignals still catches them. Calling it again changes
// nothing.
func (r *daemonRun) holdSignals() {
	signal.Notify(r.dropped, jobs.Signals...)
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
	if r.metricsServer != nil {
		r.metricsServer.Close()
	} else if r.metricsListener != nil {
		r.metricsListener.Close()
	}
	if c, ok := r.svc.app.(io.Closer); ok && r.d != nil {
		if err := c.Close(); err != nil {
			r.log.Warn("closing the application", "err", err)
		}
	}
	if r.pidFile != nil {
		if err := r.pidFile.Remove(); err != nil {
			r.log.Warn("cannot remove the PID file", "err", err)
		}
	}
	r.ls.close()
}

// controlListener returns the control socket: systemd's, when it passed
// one named "control", or one the daemon creates at path; nil when there
// is neither.
func controlListener(path string, gid int, log *slog.Logger) (net.Listener, error) {
	l, err := control.Activated()
	if err != nil {
		return nil, err
	}
	if l != nil {
		log.Debug("control socket passed by systemd", "addr", l.Addr().String())
		return l, nil
	}
	if path == "" {
		return nil, nil
	}
	return control.Listen(path, gid)
}

// dropPrivileges switches to the configured user and group, when started
// as root; it returns the warnings for status.
func (r *daemonRun) dropPrivileges() ([]string, error) {
	st := &r.st
	cred, err := st.Credential()
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		if cred != nil && (int(cred.Uid) != os.Geteuid() || int(cred.Gid) != os.Getegid()) {
			return nil, fmt.Errorf("daemon.user %q: only root can switch users, and this is uid %d: start as root, or remove daemon.user", st.Daemon.User, os.Geteuid())
		}
		return nil, nil
	}
	if cred == nil {
		w := "running as root with no daemon.user: jobs run as root too; set daemon.user"
		if st.Job.User != "" {
			w = "running as root with no daemon.user; set daemon.user"
		}
		r.log.Warn(w)
		return []string{w}, nil
	}
	if r.ls.file != nil {
		// Opened as root: the daemon must still be able to reopen it.
		if err := r.ls.file.Chown(int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	if err := r.prepareIsolation(cred); err != nil {
		return nil, err
	}
	groups := make([]int, len(cred.Groups))
	for i, g := range cred.Groups {
		groups[i] = int(g)
	}
	keep := r.keepCapsForJobs(cred)
	if keep {
		// Jobs run as their own user: keep the right to start them so.
		err = lifecycle.DropPrivilegesKeepCaps(int(cred.Uid), int(cred.Gid), groups, lifecycle.JobCaps)
		if errors.Is(err, lifecycle.ErrThreadCaps) {
			err = fmt.Errorf("job.user %q with daemon.user %q: %w", st.Job.User, st.Daemon.User, err)
		}
	} else {
		err = lifecycle.DropPrivileges(int(cred.Uid), int(cred.Gid), groups)
	}
	if err != nil {
		if errors.Is(err, syscall.EPERM) {
			err = fmt.Errorf("%w: start as root, or remove daemon.user", err)
		}
		return nil, err
	}
	r.log.Info("dropped privileges", "user", st.Daemon.User, "uid", cred.Uid, "gid", cred.Gid, "kept_capabilities", keep)
	return nil, nil
}

// earlySignals holds the signals that arrive before the dispatcher
// handles them: their default action would kill a half-started daemon
// (PID file and socket left behind). A TERM or INT cancels ctx, which is
// the daemon's: a start-up step that waits (a LoadConfig that waits for its
// database) gives up, and a daemon that became ready anyway stops
// gracefully. Other signals are handed to the dispatcher once it runs.
type earlySignals struct {
	ctx    context.Context
	cancel context.CancelFunc
	c      chan os.Signal
	done   chan struct{}

	mu       sync.Mutex
	held     []os.Signal
	stopped  bool
	canceled bool
}

func newEarlySignals() *earlySignals {
	e := &earlySignals{c: make(chan os.Signal, 16), done: make(chan struct{})}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	signal.Notify(e.c, jobs.Signals...)
	go e.loop()
	return e
}

func (e *earlySignals) loop() {
	defer close(e.done)
	for sig := range e.c {
		e.mu.Lock()
		if (sig == syscall.SIGTERM || sig == syscall.SIGINT) && !e.canceled {
			e.canceled = true
			e.cancel()
		} else {
			e.held = append(e.held, sig)
		}
		e.mu.Unlock()
	}
}

// handOver stops holding signals and returns those held, for the
// dispatcher, which takes them from now on.
func (e *earlySignals) handOver() []os.Signal {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.stopped {
		e.stopped = true
		signal.Stop(e.c)
		close(e.c)
	}
	held := e.held
	e.held = nil
	return held
}

// cancelled reports whether a TERM or INT came during start-up.
func (e *earlySignals) cancelled() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.canceled
}

func (e *earlySignals) stop() {
	e.handOver()
	<-e.done
}

// prepareIsolation makes ready, while the daemon is still root, what the
// pool needs once it is not: the state directory, owned by the daemon's
// user, and, without systemd, a cgroup delegated to that user, as
// systemd's Delegate=yes does, so that jobs still get cgroups of their own
// after the drop.
func (r *daemonRun) prepareIsolation(cred *syscall.Credential) error {
	uid, gid := int(cred.Uid), int(cred.Gid)
	if dir := r.st.StatePath(); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("daemon.state_dir: %w", err)
		}
		if err := os.Lchown(dir, uid, gid); err != nil {
			return fmt.Errorf("daemon.state_dir: %w", err)
		}
	}
	if r.manager == lifecycle.Systemd || r.st.Pool.Cgroups == "off" {
		return nil
	}
	name := r.st.CgroupName(r.svc.name)
	if _, err := pool.DelegateCgroup(name, uid, gid); err != nil {
		if r.st.Pool.Cgroups == "require" {
			return fmt.Errorf("pool.cgroups = \"require\": %w", err)
		}
		r.log.Info("no cgroup delegated to the daemon's user; jobs will run in process groups", "cgroup", name, "err", err)
	}
	return nil
}
