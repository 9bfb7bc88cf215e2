package jobs

import (
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

// Job is one unit of work, described by the Source in the parent and run
// in a child.
type Job struct {
	// ID names the job in logs and in the control socket. The Source picks
	// it; it should be unique among running jobs.
	ID string
	// Payload is the job's data, opaque to the daemon.
	Payload []byte
	// Attempt is 1 for the first run of a job, 2 for its first retry, and
	// so on. The Source keeps count.
	Attempt int
	// Slot is the slot the job runs in, set by the dispatcher.
	Slot int
	// Meta carries small string attributes from the Source to the Runner.
	Meta map[string]string
}

// Result says how a job ended.
type Result struct {
	// ExitCode is the child's exit status: 0 for success. For a Runner:
	// 1 when RunJob returned an error (or the child exited without
	// answering), 2 when it panicked, 70 or 78 when the child could not
	// set itself up (its channel, or LoadConfig). -1 when the child was
	// killed by Signal, or, with Signal 0 and Error set, when the job
	// could not be started at all.
	ExitCode int
	// Signal is the signal that killed the child, or 0.
	Signal syscall.Signal
	// TimedOut is true when the job ran past its timeout and was stopped.
	TimedOut bool
	// Duration is the wall time of the job.
	Duration time.Duration
	// UserCPU and SysCPU are the CPU time the job used.
	UserCPU, SysCPU time.Duration
	// MaxRSS is the peak resident set size in bytes. For a Go worker it is
	// the worker's peak so far, which includes earlier jobs.
	MaxRSS int64
	// CPUFrom and MaxRSSFrom say what UserCPU, SysCPU and MaxRSS cover:
	// "cgroup", the job's whole process tree (its cgroup's cpu.stat);
	// "rusage", the job's process and the children it waited for;
	// "worker", the worker process that ran the job (its CPU since its
	// previous job ended, which adds the µs of taking this one; its peak
	// so far); "not measured", the figure is 0 because no right
	// one was available (the rusage of a small command holds the daemon's
	// own peak, which it inherits at exec).
	CPUFrom, MaxRSSFrom string
	// MemoryPeak and PidsPeak are the most memory (page cache included)
	// and processes the job's cgroup held, where the cgroup v2 memory and
	// pids controllers are enabled; 0 when not measured.
	MemoryPeak, PidsPeak int64
	// Usage says whose figures UserCPU, SysCPU and MaxRSS are: the job's
	// own, a command worker's that ran other jobs too, or none.
	Usage UsageOf
	// Error is the error RunJob returned or panicked with, or why the job
	// could not be started; "" otherwise.
	Error string
	// Output is the tail of what the job wrote to stdout and stderr.
	Output []byte
	// Interrupted is true for a job that failed because a stop of the
	// daemon signalled it (a graceful stop's signal, or the SIGKILL of an
	// immediate stop or of a stop's deadline), which is no fault of the
	// job's: a Source may run it again without counting the attempt. A
	// job that fails by itself while the daemon stops, before any signal
	// reached it, is not interrupted, and neither is one that ran past its
	// timeout.
	Interrupted bool
	// NotStarted is true for a job that could not be started at all: no
	// process ran it (the fork or exec failed: EMFILE, EAGAIN, ENOMEM, a
	// missing program), or no worker took it. It is not a run of the job,
	// and a Source must put it back as it was, without counting the
	// attempt, as for Interrupted. Error says why; the daemon backs off
	// before it starts the next job (Status.StartBackoff).
	NotStarted bool
}

// UsageOf says what the CPU times and peak RSS of a Result measure.
type UsageOf uint8

// The kinds of usage figures.
const (
	// UsageJob: the job's own figures: its process (tree, with cgroups),
	// or, in a Go worker, the CPU time of RunJob and the worker's peak RSS
	// so far; also a worker's whole life when it ran this one job only.
	UsageJob UsageOf = iota
	// UsageWorker: the figures of the command worker that ran this job
	// and others before it, over its whole life. A command worker's usage
	// is known when it exits, so it comes with the last job it ran: the
	// sum over all jobs' records is the workers' total.
	UsageWorker
	// UsageNone: not measured. A job that a command worker ran, and that
	// was not its last, has no figures of its own: its worker's come with
	// its last job (UsageWorker).
	UsageNone
)

// String returns "job", "worker" or "none".
func (u UsageOf) String() string {
	switch u {
	case UsageJob:
		return "job"
	case UsageWorker:
		return "worker"
	case UsageNone:
		return "none"
	}
	return fmt.Sprintf("UsageOf(%d)", int(u))
}

// OK reports whether the job succeeded.
func (r Result) OK() bool {
	return r.ExitCode == 0 && r.Signal == 0 && !r.TimedOut && r.Error == "" && !r.NotStarted
}

// String describes the outcome in a few words: "ok", "exit 3",
// "signal killed", "timeout", "error: ...", "not started: ...".
func (r Result) String() string {
	switch {
	case r.NotStarted:
		return "not started: " + r.Error
	case r.TimedOut:
		return "timeout"
	case r.Signal != 0:
		return "signal " + r.Signal.String()
	case r.Error != "":
		return "error: " + r.Error
	case r.ExitCode != 0:
		return fmt.Sprintf("exit %d", r.ExitCode)
	}
	return "ok"
}

// resultFromExit turns a child's exit into a Result.
func resultFromExit(e *pool.Exit) Result {
	r := Result{
		ExitCode: e.Code,
		Signal:   e.Signal,
		TimedOut: e.TimedOut,
		Duration: e.Duration,
		UserCPU:  e.UserCPU,
		SysCPU:   e.SysCPU,
		MaxRSS:   e.MaxRSS,
		Output:   e.Output,

		CPUFrom:    e.CPUFrom.String(),
		MaxRSSFrom: e.MaxRSSFrom.String(),
		MemoryPeak: e.MemoryPeak,
		PidsPeak:   e.PidsPeak,

		Interrupted: e.Interrupted,
	}
	if e.Err != nil {
		r.Error = e.Err.Error()
	}
	return r
}

// Source is the hook the dispatcher asks for work, in the parent, when a
// slot is free: the PHP original's getNextJob. It returns nil, nil when
// nothing is ready; the dispatcher then waits (see Waker) and asks again.
// An error is logged and answered with backoff.
//
// The hooks of one daemon (NextJob, Command, LoadConfig, Done) are called
// by the dispatcher, one at a time, each after the previous one returned
// (from the daemon's goroutine, or from the goroutine that brought a
// worker's answer, under one lock; see the package documentation). While one
// runs, no job is started or acknowledged: a hook should return quickly.
// Their context is never cancelled, not even when Run's is: a stopping
// daemon still acknowledges the jobs that end. A hook may call the
// Daemon's Stop, Pause, Resume, SetMaxChildren and Status, but not Reload.
type Source interface {
	NextJob(ctx context.Context, slot int) (*Job, error)
}

// Runner runs a job in a child process: the PHP original's childRun. The
// child is this program re-executed; it exits after the job, or, with
// Options.JobsPerChild above 1, runs more jobs first. ctx is cancelled
// when the daemon stops the job (timeout or graceful stop): the child
// catches SIGTERM and the Options.StopSignal in force when the job was
// sent, which is the one the daemon stops it with, even after a reload has
// changed it. Other signals keep their default effect (SIGINT kills). A
// returned error, or a panic, fails the job.
type Runner interface {
	RunJob(ctx context.Context, job *Job) error
}

// Commander is implemented instead of Runner by an application whose jobs
// are external programs, as in the jobdaemon binary. The child is the
// command Command returns, started directly, never through a shell. An
// application that implements both is run with Command.
type Commander interface {
	Command(ctx context.Context, job *Job) (*Spec, error)
}

// WorkerCommander is an optional hook of a Commander whose command can run
// many jobs: a command worker (docs/WORKER-PROTOCOL.md), started once per
// slot and kept, that reads one job per line on its standard input (a JSON
// object: id, attempt, slot, payload in base64, path, meta) and answers
// each with one line on file descriptor 3, while its standard output and
// error stay the jobs' log.
//
// WorkerCommand is called by the dispatcher when a job waits for a slot
// that has no worker. A Spec starts a worker in that slot: its Stdin is
// ignored (standard input carries the jobs), JOBDAEMON_WORKER=1 and
// JOB_SLOT are added to its Env, and its Timeout, StopSignal and
// KillGrace apply to each of its jobs. nil, nil runs the job with Command
// instead, as a process of its own. An error fails the job, and counts as
// a worker that failed to start (see Status.WorkerFailedStarts).
//
// A job's Meta[MetaPath], if set, is sent as its "path" (the spool's job
// file), the rest of Meta as "meta". A worker is retired after
// Options.JobsPerChild jobs (0: no limit), WorkerMaxAge or WorkerMaxRSS,
// and after a reload, so that it starts again with what the reload
// changed. Its first job gets the lines it writes before it reads one.
type WorkerCommander interface {
	WorkerCommand(ctx context.Context, slot int) (*Spec, error)
}

// ConfigLoader is an optional hook, the PHP original's loadConfig. It is
// called in the parent at start and on every reload, and in each child
// once, before its first job. An error at start stops Run; an error on
// reload keeps the old configuration running.
//
// At start its context is Run's, so a LoadConfig that waits for something
// (a database that is not up yet) gives up when Run's context is
// cancelled; later calls get one that is never cancelled, like every
// hook's. In the parent, DaemonFrom(ctx) is the daemon, and a size set
// with its SetMaxChildren holds, at start and on reload, unless
// Options.OnReload chose another.
type ConfigLoader interface {
	LoadConfig(ctx context.Context) error
}

// Acker is an optional hook called in the parent when a job has ended,
// with its result: the place to mark it done, schedule a retry (see
// Retry), or give up. An error is logged.
type Acker interface {
	Done(ctx context.Context, job *Job, res Result) error
}

// Verdict is what became of a finished job: what its source did with it.
type Verdict int

// The verdicts.
const (
	// Unknown: the source did not say (an Acker that is not a Finisher,
	// or a Finish that failed).
	Unknown Verdict = iota
	// Completed: the job succeeded and is done.
	Completed
	// Retrying: this run failed, and the source will run the job again.
	Retrying
	// Requeued: a stop interrupted the job, and it waits to run again
	// without this run counting as an attempt.
	Requeued
	// Failed: the job failed for good (its last attempt, or an error it
	// cannot recover from).
	Failed
)

// String returns "completed", "retrying", "requeued", "failed" or
// "unknown".
func (v Verdict) String() string {
	switch v {
	case Completed:
		return "completed"
	case Retrying:
		return "retrying"
	case Requeued:
		return "requeued"
	case Failed:
		return "failed"
	}
	return "unknown"
}

// Finisher is an optional hook that a source implements instead of Acker:
// it files a finished job, as Done does, and says what it did with it, so
// that the daemon's logs, counters and metrics tell a run that failed
// from a job that failed for good. When an application implements both,
// Finish is called and Done is not.
type Finisher interface {
	Finish(ctx context.Context, job *Job, res Result) (Verdict, error)
}

// Waker is an optional hook for a Source that can tell when new work has
// arrived. A receive from Wake makes the dispatcher ask NextJob at once
// instead of waiting out its backoff.
type Waker interface {
	Wake() <-chan struct{}
}

// Watcher is an optional hook for a Waker whose Wake reports every job
// that becomes ready, new or due after a delay, for as long as Watching
// returns true (a spool whose inotify watch works). With nothing ready,
// the dispatcher then sleeps until Wake or another event, instead of
// asking NextJob again every Options.IdleInterval: an idle daemon wakes
// only when there is work. Watching is called from the dispatcher after
// NextJob found nothing; when it returns false, polling resumes.
type Watcher interface {
	Waker
	Watching() bool
}

// Retry computes retry delays: exponential backoff with jitter and a
// bounded number of attempts.
type Retry struct {
	// MaxAttempts is the number of runs a job gets in all; 0 means 1.
	MaxAttempts int
	// Base is the delay before the first retry (default 1 s); it doubles
	// with each attempt.
	Base time.Duration
	// Max caps the delay (default 1 h).
	Max time.Duration
	// Jitter, between 0 and 1, spreads each delay by up to that fraction
	// either way, so that jobs that failed together do not return together.
	Jitter float64
}

// After returns how long to wait before running a job again that failed
// on attempt (1 for its first run), and false when it has no attempt left.
func (r Retry) After(attempt int) (time.Duration, bool) {
	if attempt >= max(r.MaxAttempts, 1) {
		return 0, false
	}
	base, limit := r.Base, r.Max
	if base <= 0 {
		base = time.Second
	}
	if limit <= 0 {
		limit = time.Hour
	}
	d := base
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	if j := min(r.Jitter, 1); j > 0 {
		d = time.Duration(float64(d) * (1 + j*(2*rand.Float64()-1)))
	}
	return d, true
}
