package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

// ErrNotRunning is returned by the control methods of a daemon whose Run
// has returned.
var ErrNotRunning = errors.New("daemon is not running")

// ErrStopping is returned by Reload while the daemon stops or drains.
var ErrStopping = errors.New("daemon is stopping")

// MaxChildrenLimit is the largest MaxChildren; SetMaxChildren and
// ScaleMaxChildren cap what they are asked for at it.
const MaxChildrenLimit = 10000

// do runs f on the loop goroutine, as the dispatcher, and waits for it.
func (d *Daemon) do(f func()) error {
	done := make(chan struct{})
	select {
	case d.ctl <- func() { f(); close(done) }:
		<-done
		return nil
	case <-d.finished:
		return ErrNotRunning
	}
}

// Reload calls Options.OnReload, then LoadConfig, by the dispatcher, and
// returns when both have returned. If either fails, the
// error is returned and the daemon runs on as before. A daemon that is
// stopping refuses with ErrStopping, and calls neither.
func (d *Daemon) Reload(ctx context.Context) error {
	var err error
	if derr := d.do(func() { err = d.reload(d.hookContext(ctx)) }); derr != nil {
		return derr
	}
	return err
}

func (d *Daemon) reload(hctx context.Context) error {
	if d.stopMode != 0 {
		// Nothing to apply new settings to; and the hooks would tell a
		// service manager "reloading" about a service that is stopping.
		d.log.Warn("reload refused: the daemon is stopping")
		return ErrStopping
	}
	err := d.tryReload(hctx)
	if err != nil {
		d.reloadsFailed.Add(1)
	} else {
		d.reloads.Add(1)
	}
	d.lastReloadFailed.Store(err != nil)
	if d.opts.OnReloaded != nil {
		d.opts.OnReloaded(err)
	}
	return err
}

func (d *Daemon) tryReload(hctx context.Context) error {
	next := d.opts
	size := d.pool.Max()
	next.MaxChildren = size
	if d.opts.OnReload != nil {
		if err := d.callHook("OnReload", func() error { return d.opts.OnReload(&next) }); err != nil {
			d.log.Error("reload refused", "err", err)
			return err
		}
	}
	if d.loader != nil {
		if err := d.callHook("LoadConfig", func() error { return d.loader.LoadConfig(hctx) }); err != nil {
			d.log.Error("reload refused: LoadConfig failed", "err", err)
			return fmt.Errorf("LoadConfig: %w", err)
		}
	}
	if next.MaxChildren == size {
		// OnReload left the size alone: keep the pool's, which LoadConfig
		// may have just set with SetMaxChildren, as a PHP loadConfig calls
		// setMaxChildren.
		next.MaxChildren = d.pool.Max()
	}
	d.apply(next)
	// Command workers start again with what the reload changed: their
	// command, environment, code. And a worker script that failed to start
	// may have been fixed: the next start need not wait.
	d.retireCommandWorkers()
	d.startsReset("reload")
	d.stateMu.Lock()
	d.generation++
	d.stateMu.Unlock()
	d.log.Info("reloaded", "generation", d.generation)
	return nil
}

// apply takes from next the options that may change at run time.
func (d *Daemon) apply(next Options) {
	next.withDefaults()
	o := &d.opts
	o.JobTimeout, o.KillGrace, o.StopSignal = next.JobTimeout, next.KillGrace, next.StopSignal
	o.NoForwardSignals, o.StopTimeout = next.NoForwardSignals, next.StopTimeout
	o.IdleInterval, o.MaxHookErrors = next.IdleInterval, next.MaxHookErrors
	o.WorkerMaxAge, o.WorkerMaxRSS = next.WorkerMaxAge, next.WorkerMaxRSS
	if next.MaxChildren != d.pool.Max() {
		d.SetMaxChildren(next.MaxChildren)
	}
}

// SetMaxChildren sets how many jobs may run at once (1 to
// MaxChildrenLimit) and returns the new value. Lowering it never stops running jobs: slots above
// the new maximum are not refilled as their jobs end. It is safe to call
// from a hook.
func (d *Daemon) SetMaxChildren(n int) int {
	return d.scale(func(int) int { return n })
}

// MaxChildren returns how many jobs may run at once. It is safe to call
// from any goroutine.
func (d *Daemon) MaxChildren() int {
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	if d.pool == nil {
		return d.maxBeforeRun
	}
	return d.pool.Max()
}

// ScaleMaxChildren changes MaxChildren by delta and returns the new
// value, at least 1. It is safe to call from a hook.
func (d *Daemon) ScaleMaxChildren(delta int) int {
	return d.scale(func(old int) int { return old + delta })
}

// capped keeps what f returns between 1 and MaxChildrenLimit.
func capped(f func(int) int) func(int) int {
	return func(old int) int { return min(max(f(old), 1), MaxChildrenLimit) }
}

func (d *Daemon) scale(f func(int) int) int {
	d.stateMu.Lock()
	p := d.pool
	f = capped(f)
	if p == nil { // before Run
		d.maxBeforeRun = f(d.maxBeforeRun)
		defer d.stateMu.Unlock()
		return d.maxBeforeRun
	}
	d.stateMu.Unlock()
	old, n := p.UpdateMax(f)
	if n != old {
		d.log.Info("max children changed", "max_children", n, "was", old)
		d.push(event{}) // wake the dispatcher: there may be room now
	}
	return n
}

// Pause stops the dispatcher from starting jobs; running jobs go on. It
// returns at once, and is safe to call from a hook.
func (d *Daemon) Pause() { d.push(event{apply: func() { d.setPaused(true) }}) }

// Resume undoes Pause.
func (d *Daemon) Resume() { d.push(event{apply: func() { d.setPaused(false) }}) }

func (d *Daemon) setPaused(p bool) {
	if d.paused != p {
		d.stateMu.Lock()
		d.paused = p
		d.stateMu.Unlock()
		d.log.Info("dispatch " + map[bool]string{true: "paused", false: "resumed"}[p])
	}
}

// Stop begins a stop: no job is started any more, and running jobs are
// treated as mode says (see StopMode). It returns at once, and is safe to
// call from a hook; Run returns when every child has ended. A later Stop
// may escalate, say from Drain to Immediate, but never soften.
func (d *Daemon) Stop(mode StopMode) {
	d.push(event{apply: func() { d.beginStop(mode) }})
}

// StopMode says how a stop treats running jobs.
type StopMode int

// The stop modes, from the gentlest.
const (
	// Drain lets running jobs finish, and retires idle workers.
	Drain StopMode = StopMode(pool.Drain)
	// Graceful sends running jobs StopSignal (unless NoForwardSignals)
	// and kills them after StopTimeout.
	Graceful StopMode = StopMode(pool.Graceful)
	// Immediate kills running jobs at once.
	Immediate StopMode = StopMode(pool.Immediate)
)

// String returns "drain", "graceful" or "immediate".
func (m StopMode) String() string { return pool.StopMode(m).String() }

// IsChild reports whether this process is a child that a daemon started
// to run jobs: Run will run them and exit. Use it in LoadConfig to skip
// what only the parent needs.
func IsChild() bool { return isChild }

// isChild is read once, at start: the child's channel takes its variable
// out of the environment, but the process stays a child.
var isChild = os.Getenv(pool.EnvChild) != ""

func (d *Daemon) beginStop(mode StopMode) {
	mode = max(mode, Drain)
	if mode <= d.stopMode {
		return
	}
	d.stateMu.Lock()
	d.stopMode = mode
	d.stateMu.Unlock()
	d.idle = nil // the pool retires idle workers
	d.log.Info("stopping", "mode", mode.String(), "running", len(d.running))
	if d.opts.OnStop != nil {
		d.opts.OnStop(mode)
	}
	opt := pool.StopOptions{Signal: d.opts.StopSignal, Timeout: d.opts.StopTimeout}
	if d.opts.NoForwardSignals {
		opt.Signal = 0
	}
	// The children are signalled here, before the dispatcher goes on: a
	// goroutine of its own would first have to be scheduled. Their end is
	// waited for (and the deadline enforced) in one, while the dispatcher
	// goes on acknowledging the jobs that end meanwhile.
	wait := d.pool.BeginStop(pool.StopMode(mode), opt)
	go func() { _ = wait(context.Background()) }()
}

// Signals are the signals Run handles, unless Options.NoSignals is set.
var Signals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGCONT, syscall.SIGTTIN, syscall.SIGTTOU}

// Signal acts on sig as if the daemon had received it (see Run): for a
// program that catches signals itself, or before Run does, as a daemon
// does during its start-up. It returns at once and is safe to call from
// any goroutine and before Run; the signal is acted on by the dispatcher,
// before it looks for jobs. Signals other than Signals are ignored.
func (d *Daemon) Signal(sig os.Signal) {
	d.push(event{apply: func() { d.onSignal(d.hctx, sig) }})
}

func (d *Daemon) onSignal(hctx context.Context, sig os.Signal) {
	d.log.Info("signal received", "signal", sig.String())
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT:
		if d.stopMode >= Graceful {
			d.beginStop(Immediate)
		} else {
			d.beginStop(Graceful)
		}
	case syscall.SIGQUIT:
		d.beginStop(Drain)
	case syscall.SIGHUP:
		_ = d.reload(hctx)
	case syscall.SIGUSR1:
		if d.opts.OnReopen != nil {
			d.opts.OnReopen()
		} else {
			d.log.Info("SIGUSR1: no log file to reopen")
		}
	case syscall.SIGUSR2:
		d.setPaused(true)
	case syscall.SIGCONT:
		d.setPaused(false)
	case syscall.SIGTTIN:
		d.ScaleMaxChildren(1)
	case syscall.SIGTTOU:
		d.ScaleMaxChildren(-1)
	}
}

// ErrNoSuchJob is returned by SignalJob for a job that is not running.
var ErrNoSuchJob = errors.New("no such job running")

// SignalJob sends sig to the process group of the child running the job
// with the given id. It returns ErrNoSuchJob when no running job has that
// id. For a worker child, the signal reaches the worker, and so every job
// it would run; the daemon does not treat it specially.
func (d *Daemon) SignalJob(id string, sig syscall.Signal) error {
	d.stateMu.Lock()
	var c *pool.Child
	for ch, r := range d.running {
		if r.job != nil && r.job.ID == id {
			c = ch
			break
		}
	}
	d.stateMu.Unlock()
	if c == nil {
		return fmt.Errorf("job %q: %w", id, ErrNoSuchJob)
	}
	if err := c.Signal(sig); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("job %q: %w", id, ErrNoSuchJob)
		}
		return fmt.Errorf("job %q: %w", id, err)
	}
	d.log.Info("signalled job", "job_id", id, "signal", sig.String(), "child_pid", c.Pid)
	return nil
}

// Depther is an optional hook of a Source that knows how many jobs wait:
// Status reports it as Queued. Depth is called from the goroutine that
// calls Status, not the dispatcher, and must be safe for that.
type Depther interface {
	Depth() (int, error)
}

// OldestAger is an optional hook of a Source that knows how long its
// oldest waiting job has waited: a job due later counts from when it is
// due, and an empty queue is 0. Status reports it as OldestQueued. It is
// called from the goroutine that calls Status, like Depth.
type OldestAger interface {
	OldestAge() (time.Duration, error)
}

// State is what a daemon is doing.
type State string

// The states of a daemon.
const (
	StateStarting State = "starting"
	StateRunning  State = "running"
	StatePaused   State = "paused"
	StateDraining State = "draining"
	StateStopping State = "stopping"
	StateStopped  State = "stopped"
)

// Status is a snapshot of a daemon.
type Status struct {
	State       State         `json:"state"`
	Pid         int           `json:"pid"`
	Uptime      time.Duration `json:"uptime_ns"`
	Generation  int           `json:"config_generation"`
	MaxChildren int           `json:"max_children"`
	Busy        int           `json:"busy"` // children running a job
	// Runs count each time a job ran: started, and ended well or not.
	RunsStarted   uint64 `json:"runs_started"`
	RunsSucceeded uint64 `json:"runs_succeeded"`
	RunsFailed    uint64 `json:"runs_failed"`
	// Jobs count what became of the jobs after their runs, by their
	// source's verdict (see Finisher): completed, queued again after a
	// failed run (retried), or failed for good. A source that gives no
	// verdict counts its successful runs as completed jobs, and nothing
	// else.
	JobsCompleted uint64 `json:"jobs_completed"`
	JobsRetried   uint64 `json:"jobs_retried"`
	JobsFailed    uint64 `json:"jobs_failed"`
	// NotStarted counts the jobs that could not be started (see
	// Result.NotStarted), each handed back to its source unrun.
	NotStarted uint64 `json:"jobs_not_started"`
	// StartBackoff, while positive, is how long the daemon still waits
	// before it starts a job, after one could not be started;
	// LastStartError says why that one could not.
	StartBackoff   time.Duration `json:"start_backoff_ns,omitempty"`
	LastStartError string        `json:"last_start_error,omitempty"`
	// Queued is the number of jobs waiting, from the Source's Depth; -1
	// when the Source does not know (see Depther) or failed to say.
	Queued        int    `json:"queued"`
	Reloads       uint64 `json:"reloads"`
	ReloadsFailed uint64 `json:"reloads_failed"`
	// LastReloadFailed is true while the last reload was refused: the
	// configuration in force is not the one on disk.
	LastReloadFailed bool `json:"last_reload_failed"`
	// OldestQueued is how long the oldest job that is due has waited, from
	// the Source's OldestAge; -1 when the Source does not know (see
	// OldestAger) or failed to say.
	OldestQueued time.Duration `json:"oldest_queued_ns"`
	Saturated    time.Duration `json:"saturated_ns"` // time spent with every slot busy
	// Isolation says how jobs are held together: "per-slot cgroups in
	// /sys/fs/cgroup/...", or "process groups: " and why not cgroups.
	Isolation string `json:"isolation,omitempty"`
	// WorkersStarted counts the workers started, Go and command workers.
	WorkersStarted uint64 `json:"workers_started"`
	// WorkerFailedStarts is the number of workers in a row that ended, or
	// could not start, before their first answer: a broken worker script,
	// a missing interpreter. While it is above 0, each new worker waits
	// (100 ms after the first, doubling up to 30 s); the first answer of
	// any worker, or a reload, sets it back to 0.
	WorkerFailedStarts int `json:"worker_failed_starts"`
	// WorkerBackoff is how long a new worker must still wait; 0 when none
	// does.
	WorkerBackoff time.Duration `json:"worker_backoff_ns"`
	// WorkerStartError says how the last of those workers ended, with its
	// last line of output ("exit 255; its last output: PHP Parse error:
	// ..."), while WorkerFailedStarts is above 0.
	WorkerStartError string       `json:"worker_start_error,omitempty"`
	Slots            []SlotStatus `json:"slots"`
}

// SlotStatus describes one child.
type SlotStatus struct {
	Slot    int           `json:"slot"`
	Pid     int           `json:"pid"`
	JobID   string        `json:"job_id,omitempty"` // "" for an idle worker
	Attempt int           `json:"attempt,omitempty"`
	Runtime time.Duration `json:"runtime_ns"`
	Worker  bool          `json:"worker"`
	// UserCPU, SysCPU and RSS are what the child process has used so far
	// (not what it started); zero when it could not be read.
	UserCPU time.Duration `json:"user_cpu_ns"`
	SysCPU  time.Duration `json:"sys_cpu_ns"`
	RSS     int64         `json:"rss_bytes"`

	child *pool.Child // for Status to read /proc with
}

// Status returns a snapshot of the daemon. It is safe to call from any
// goroutine, hooks included. After Run has returned it reports
// StateStopped and the final counters. It reads /proc for each child (see
// SlotStatus); Summary does not.
func (d *Daemon) Status() Status {
	s := d.status(true)
	if len(s.Slots) == 0 {
		return s
	}
	// /proc is read after the lock is released: the dispatcher must not
	// wait on it.
	for i := range s.Slots {
		if u, err := s.Slots[i].child.Usage(); err == nil {
			s.Slots[i].UserCPU, s.Slots[i].SysCPU, s.Slots[i].RSS = u.UserCPU, u.SysCPU, u.RSS
		}
	}
	return s
}

// Summary is Status without Slots (nil): no /proc file read and no
// allocation per child, for what asks every few seconds (systemd's
// STATUS=, a metrics scrape, a progress bar), where reading /proc for each
// child would cost a system call or three per child each time. Busy
// counts the jobs running all the same, from memory.
func (d *Daemon) Summary() Status {
	return d.status(false)
}

func (d *Daemon) status(slots bool) Status {
	s := Status{
		State:            StateStopped,
		Pid:              os.Getpid(),
		RunsStarted:      d.started.Load(),
		RunsSucceeded:    d.succeeded.Load(),
		RunsFailed:       d.failed.Load(),
		JobsCompleted:    d.completed.Load(),
		JobsRetried:      d.retrying.Load(),
		JobsFailed:       d.gaveUp.Load(),
		NotStarted:       d.notStarted.Load(),
		Reloads:          d.reloads.Load(),
		ReloadsFailed:    d.reloadsFailed.Load(),
		OldestQueued:     -1,
		LastReloadFailed: d.lastReloadFailed.Load(),
		WorkersStarted:   d.workersStarted.Load(),
		Queued:           -1,
	}
	if dp, ok := d.app.(Depther); ok {
		if n, err := dp.Depth(); err == nil {
			s.Queued = n
		}
	}
	if oa, ok := d.app.(OldestAger); ok {
		if age, err := oa.OldestAge(); err == nil {
			s.OldestQueued = age
		}
	}
	select {
	case <-d.finished:
		return s
	default:
	}
	d.snapshot(&s, slots)
	return s
}

// snapshot fills in the state of s, and its slots if asked, sorted.
func (d *Daemon) snapshot(s *Status, slots bool) {
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	switch {
	case d.generation == 0:
		s.State = StateStarting
		return
	case d.stopMode == Drain:
		s.State = StateDraining
	case d.stopMode != 0:
		s.State = StateStopping
	case d.paused:
		s.State = StatePaused
	default:
		s.State = StateRunning
	}
	now := time.Now()
	s.Uptime = now.Sub(d.start)
	s.Generation = d.generation
	s.MaxChildren = d.pool.Max()
	s.Isolation = d.isolation
	s.LastStartError = d.handBackErr
	if !d.handBackUntil.IsZero() {
		s.StartBackoff = max(d.handBackUntil.Sub(now), 0)
	}
	s.Saturated = d.saturated
	if !d.saturatedSince.IsZero() {
		s.Saturated += now.Sub(d.saturatedSince)
	}
	if d.failedStarts > 0 {
		s.WorkerFailedStarts, s.WorkerStartError = d.failedStarts, d.startErr
		s.WorkerBackoff = max(d.startNotBefore.Sub(now), 0)
	}
	if slots {
		s.Slots = make([]SlotStatus, 0, len(d.running))
	}
	for c, r := range d.running {
		if r.job != nil {
			s.Busy++
		}
		if !slots {
			continue
		}
		ss := SlotStatus{Slot: c.Slot, Pid: c.Pid, Worker: r.worker != nil, child: c}
		if r.job != nil {
			ss.JobID, ss.Attempt, ss.Runtime = r.job.ID, r.job.Attempt, now.Sub(r.since)
		}
		s.Slots = append(s.Slots, ss)
	}
	slices.SortFunc(s.Slots, func(a, b SlotStatus) int { return a.Slot - b.Slot })
}

type daemonKey struct{}

// hookContext returns the context of the parent's hooks: ctx's values
// without its cancellation (a stopping daemon still acknowledges the jobs
// that end), the shared variables, and the daemon itself.
func (d *Daemon) hookContext(ctx context.Context) context.Context {
	ctx = WithVars(context.WithoutCancel(ctx), d.vars)
	return context.WithValue(ctx, daemonKey{}, d)
}

// DaemonFrom returns the daemon that called the hook whose context is ctx,
// so that a hook can change the pool's size (LoadConfig, as the PHP
// original's loadConfig called setMaxChildren) or look at its state. It
// returns nil in a child and for a context that did not come from a
// daemon's hook (jobstest's, say).
func DaemonFrom(ctx context.Context) *Daemon {
	d, _ := ctx.Value(daemonKey{}).(*Daemon)
	return d
}

// FreeSlots returns, during a call of NextJob, how many jobs could start
// now: the slot NextJob is asked to fill and every other free one, idle
// workers' included. A source that claims jobs in batches claims at most
// that many, so that no job waits claimed here while another host could
// run it. Outside NextJob it returns 0.
func (d *Daemon) FreeSlots() int { return int(d.free.Load()) }

// Logger returns the daemon's logger (Options.Logger), for a hook that
// logs as the daemon does.
func (d *Daemon) Logger() *slog.Logger { return d.log }
