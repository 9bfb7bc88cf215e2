// Package pool starts, watches and reaps the child processes of a daemon.
//
// It knows nothing of jobs, sources or configuration files: it runs
// processes in numbered slots, at most Max at once, and tells its owner when
// each one ends and how (exit code or signal, duration, CPU time, peak RSS and
// the tail of its output).
//
// # Starting
//
// Every child gets its own process group (Setpgid), so a timeout or a stop
// reaches the grandchildren it forked too. Children are forked from one OS
// thread that never exits, because Pdeathsig fires when the forking thread
// dies, not the process: with that thread alive for the pool's life, a
// SIGKILLed daemon takes its children with it. Re-executed children also get
// a lifeline, the worker channel, whose EOF means "the parent is gone".
//
// Children never inherit NOTIFY_SOCKET, LISTEN_*, or WATCHDOG_* from the
// environment (those speak for the daemon, not its jobs), nor any file
// descriptor but standard input, output, error and the worker channel.
//
// # A job is its whole process tree
//
// Where the cgroup v2 hierarchy can be written (under systemd with
// Delegate=yes, as root, or after [DelegateCgroup]), each child starts
// inside a cgroup of its own (CLONE_INTO_CGROUP), by default one per slot
// that the slot's jobs reuse; elsewhere only its process group holds it,
// and New says why once. When the child exits, what is left of its tree is
// killed (cgroup.kill, or a SIGKILL to the group before the child is
// reaped, while its zombie still pins the group id), unless
// Isolation.KeepLeftovers; timeouts and stops end with the same kill. With
// a cgroup, Exit's CPU time is that of the whole tree, and memory and pids
// peaks are reported where the controllers are enabled; limits are written
// into each job's cgroup, and refused at New where they cannot be. New
// kills what a previous run's jobs left (in the pool's cgroup, and in the
// process groups recorded in Isolation.StateDir) before any job runs. See
// isolation.go.
//
// # Reaping
//
// One goroutine reaps, woken by SIGCHLD. It never calls wait4(-1), which
// would steal the exit status of processes that other code in the same
// program started with os/exec (their Wait would fail with ECHILD). Instead it
// peeks at the first exited child with waitid(WNOWAIT) and reaps it only if
// the pid is one of the pool's; only when a foreign zombie sits first does it
// fall back to checking each of its own pids. The cost per exit is constant
// in the common case, and no OS thread is parked per child.
//
// # Workers
//
// A worker is a child that runs many jobs, one at a time, and is retired
// after a number of jobs, an age or a resident set size (each lowered by a
// random jitter). Two protocols share that one mechanism ([Worker]); only
// the transport differs ([Protocol]):
//
//   - ProtocolGo: the program re-executed in child mode with a channel of
//     two pipes as fds 3 and 4. The parent sends it opaque job messages
//     and it answers each with a result; while it runs a job it
//     may call back into the parent (jobdaemon uses this for shared
//     application variables). See [ChildConn].
//   - ProtocolLines: any command, started once and kept. It reads one job
//     per line on its standard input and writes one answer per line on
//     fd 3, a pipe; its standard output and error stay log output, under
//     the label of the job in progress. It exits when its standard input
//     closes. Answers are handed over as opaque lines, at most MaxAnswer
//     bytes long.
//
// A worker's output and its answers travel on different pipes; an answer
// is handed to OnResult only once the lines the worker wrote before it
// have been handed to the Sink, under the label of the job they belong to
// (catchup.go), so that a job's last lines are never taken for the next
// job's.
//
// A worker that breaks its protocol (an answer too long or cut short, an
// answer with no job in flight) is stopped, and [Worker.Err] says why; a
// worker that closes its end is retired. Neither can make the pool block
// or allocate without bound.
package pool
