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
// A worker is the program re-executed in child mode with a SOCK_SEQPACKET
// socket as fd 3. The parent sends it opaque job messages and it answers
// each with a result; while it runs a job it may call back into the parent
// (jobdaemon uses this for shared application variables). See [Worker] and
// [ChildConn].
package pool
