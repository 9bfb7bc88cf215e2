package jobs

import (
	"log/slog"
	"runtime"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

// Options tune a daemon. The zero value is usable: one child per CPU, one
// job per child, no timeout.
type Options struct {
	// MaxChildren is how many jobs run at once (default: the number of
	// CPUs). It can be changed while running with SetMaxChildren.
	MaxChildren int
	// JobsPerChild is how many jobs a worker runs before it is replaced,
	// lowered by a random 10% per worker when above 1. For a Runner, above
	// 1 makes each child a worker, and 0 or 1 starts a fresh child per job.
	// For the command workers of a WorkerCommander, 1 is a worker per job
	// and 0 means no limit. A Commander without WorkerCommander runs one
	// process per job and refuses more.
	JobsPerChild int
	// WorkerMaxAge and WorkerMaxRSS, if positive, retire a worker that is
	// older, or larger in memory, after its current job (lowered by a
	// random 10% per worker, as JobsPerChild).
	WorkerMaxAge time.Duration
	WorkerMaxRSS int64

	// JobTimeout, if positive, stops a job that runs longer: StopSignal to
	// its process group, then SIGKILL after KillGrace.
	JobTimeout time.Duration
	// KillGrace is the time between StopSignal and SIGKILL (default 10 s).
	KillGrace time.Duration
	// StopSignal is sent to jobs on timeout and on a graceful stop
	// (default SIGTERM). A job is stopped with the one in force when it
	// started (a worker's job: when it was sent), even after a reload
	// changed it, and a Spec's replaces it for its jobs. A Go worker
	// catches it into its job's context.
	StopSignal syscall.Signal
	// NoForwardSignals, if true, sends jobs no StopSignal on a graceful
	// stop: they run on until StopTimeout, then are killed.
	NoForwardSignals bool
	// StopTimeout is how long a graceful stop waits for jobs before it
	// kills them (default 30 s).
	StopTimeout time.Duration

	// IdleInterval is the longest the dispatcher sleeps when no job is
	// ready (default 2 s). It starts at 10 ms and doubles up to this.
	IdleInterval time.Duration
	// MaxHookErrors, if positive, stops the daemon after that many
	// consecutive errors from NextJob; 0 retries for ever.
	MaxHookErrors int

	// Isolation says how each job's processes are held together: a cgroup
	// per job where it can, a process group elsewhere.
	Isolation Isolation
	// Credential, if set, runs every job (each command, or each worker)
	// as this user, group and supplementary groups, rather than as the
	// daemon's own user. The daemon needs the right to switch: root, or
	// CAP_SETUID and CAP_SETGID, and CAP_KILL to stop jobs of another
	// user (see docs/INSTALL.md).
	Credential *syscall.Credential

	// Logger receives the daemon's own messages (default slog.Default()).
	Logger *slog.Logger
	// Output receives each line the jobs write, from several goroutines
	// at once; nil logs them through Logger at Info (stdout) and Warn
	// (stderr) with job_id and slot.
	Output func(Line)
	// TailSize is how many bytes of each job's output are kept for its
	// Result (default 64 KiB).
	TailSize int

	// NoSignals, if true, leaves signals alone; by default Run handles
	// TERM, INT, QUIT, HUP, USR2, CONT, TTIN and TTOU (see Run).
	NoSignals bool
	// OnReady, if set, is called once the first LoadConfig succeeded and
	// the dispatcher is about to ask for jobs.
	OnReady func()
	// StopWhenIdle, if set, is asked whenever NextJob found nothing and no
	// job is running; if it returns true, the daemon drains and Run
	// returns. It is called by the dispatcher: it must not call the
	// Daemon's control methods. This is how a batch run ("process what is
	// queued, then exit") is built.
	StopWhenIdle func() bool
	// OnReload, if set, is called at the start of each reload, before
	// LoadConfig, with a copy of the options in force. It may change those
	// that can change at run time: MaxChildren, JobTimeout, KillGrace,
	// StopSignal, NoForwardSignals, StopTimeout, IdleInterval,
	// MaxHookErrors, WorkerMaxAge and WorkerMaxRSS (the last two for
	// workers started from then on); changes to the others are ignored.
	// They take effect once OnReload and LoadConfig have both succeeded; an
	// error from either refuses the reload and changes nothing. It is
	// called by the dispatcher.
	OnReload func(o *Options) error
	// OnReloaded, if set, is called after every reload, whether a signal,
	// Reload or a hook asked for it, with nil or the error that refused it.
	// It is called by the dispatcher.
	OnReloaded func(err error)
	// OnStop, if set, is called when a stop begins or escalates, with the
	// mode in force from then on, by the dispatcher.
	OnStop func(mode StopMode)
	// OnReopen, if set, is called on SIGUSR1, by the dispatcher:
	// the place to reopen log files after logrotate moved them.
	OnReopen func()

	// Heartbeat, if set, is called from the dispatcher loop every
	// HeartbeatInterval (default 1 s), whatever the daemon is doing,
	// stopping included. A dispatcher that is stuck, in a hook or
	// elsewhere, stops calling it: this is what a watchdog hangs on.
	Heartbeat         func()
	HeartbeatInterval time.Duration

	// Observer, if set, is told when each job starts and ends, on the
	// dispatcher: the place for metrics.
	Observer Observer
}

// Observer watches jobs, for metrics. Its methods are called by the
// dispatcher and must return quickly.
type Observer interface {
	// JobStarted is called once the job's process runs (or its worker has
	// it). wait is the dispatch latency: the time from the dispatcher's
	// call of NextJob, the moment a free slot asks for work, to the child
	// running the job.
	JobStarted(job *Job, wait time.Duration)
	// JobFinished is called with every job's result, once the source has
	// filed it (Done or Finish), with what the source did with it; not for
	// a job that could not be started (Result.NotStarted), which was not
	// a run: Status counts those.
	JobFinished(job *Job, res Result, v Verdict)
}

func (o *Options) withDefaults() {
	if o.MaxChildren < 1 {
		o.MaxChildren = runtime.NumCPU()
	}
	// JobsPerChild 0 keeps its meaning, which depends on the kind of
	// worker (Options.JobsPerChild).
	o.JobsPerChild = max(o.JobsPerChild, 0)
	if o.KillGrace <= 0 {
		o.KillGrace = pool.DefaultKillGrace
	}
	if o.StopSignal == 0 {
		o.StopSignal = syscall.SIGTERM
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 30 * time.Second
	}
	if o.IdleInterval <= 0 {
		o.IdleInterval = 2 * time.Second
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}
