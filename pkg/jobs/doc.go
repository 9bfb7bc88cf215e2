// Package jobs is the API of jobdaemon: an application describes its work
// with a few hooks, and Run turns it into a daemon that runs each job in a
// child process, at most MaxChildren at once.
//
// # The hooks
//
// They are named after those of the PHP JobDaemon that this package
// re-imagines:
//
//	PHP            Go                                   runs in
//	loadConfig()   LoadConfig(ctx) error                parent at start and on reload; each child once
//	getNextJob()   NextJob(ctx, slot) (*Job, error)     parent, when a slot is free
//	childRun()     RunJob(ctx, job) error               child
//	               Done(ctx, job, Result) error         parent, when the job has ended
//	               Wake() <-chan struct{}               parent: "new work arrived"
//	               Watching() bool                      parent: "Wake tells of every job: do not poll"
//
// Only NextJob and RunJob (or Command, for jobs that are external
// programs) are required. The parent's hooks are called by the dispatcher,
// one at a time, each after the previous one has returned, so an
// application needs no locks of its own for them. The dispatcher is one
// lock rather than one goroutine: the daemon's own goroutine holds it, or,
// when it is free, the goroutine that brings a worker's answer, which then
// hands that worker its next job itself (daemon.go, pushAnswer).
//
// # The path of one job
//
//  1. The dispatcher (Daemon.loop in daemon.go) finds a free slot and calls
//     NextJob with its number. nil, nil means nothing is ready: it waits for
//     Wake, or backs off from 10 ms up to Options.IdleInterval; a source
//     that watches (Watcher) is not polled, and an idle daemon sleeps.
//  2. It starts a child in the slot (package pool): the configured command
//     (Commander), or this program re-executed (Runner). A re-executed
//     child receives the job over a socket, calls LoadConfig once, then
//     RunJob, and sends back the result.
//  3. When the child has ended, or a worker has answered, the dispatcher
//     builds a Result (exit code or signal, duration, CPU, peak RSS, error,
//     output tail) and calls Done. The source decides what comes next:
//     done, retry later (see Retry), or give up. There is no other
//     acknowledgement: the child never moves its own job around. A job
//     that could not be started at all (Result.NotStarted), or that a
//     stop interrupted (Result.Interrupted), goes back to its source
//     without its attempt counted; after a start that failed, the
//     dispatcher backs off before it starts another job.
//
// # Code before Run runs in every child
//
// A Go program cannot fork without exec, so a child is this same binary,
// started again. main runs from the top in every child, up to Run, which
// then runs the job and exits instead of returning. Keep what comes
// before Run cheap and free of side effects (no listening sockets, no
// "daemon started" messages), and do per-process set-up in LoadConfig,
// which a child calls once before its first job.
//
// # Workers
//
// With Options.JobsPerChild above 1, a child is a worker that runs up to
// that many jobs, one after the other, before it exits; it also retires
// past Options.WorkerMaxAge or WorkerMaxRSS. Limits have a 10% downward
// jitter so that workers started together do not all restart together. A
// worker that dies mid-job fails that job with its exit status and is
// replaced.
//
// A Commander whose jobs are a script in PHP, Python or any language can
// run them in command workers instead of a process each: WorkerCommand
// (the hook WorkerCommander) returns the command, started once per slot
// and kept; it reads one job per line on its standard input and answers
// each on file descriptor 3 (docs/WORKER-PROTOCOL.md), and its standard
// output and error stay the jobs' log. Command workers and Go workers share
// one path through the dispatcher (workers.go): the same limits, timeouts
// (the worker's process group is stopped, the job times out, the worker is
// replaced), crash handling, and a backoff before new workers when workers
// end before their first answer, so that a broken script never spins
// (Status.WorkerFailedStarts). A command worker's CPU time and peak RSS
// are known when it exits: they come with its last job (Result.Usage).
//
// # Shared variables
//
// VarsFrom(ctx) in any hook returns a small key/value map held by the
// parent, the PHP original's setAppVar and getAppVar: Get, Set,
// CompareAndSwap and Add, each atomic, from the parent and from children
// alike.
package jobs
