// Command harness drives the jobdaemon binary for bench/run.sh, the way an
// operator runs it, and prints what it measured as one line of key=value
// pairs:
//
//	harness spool    N jobs of a command queued in a spool, run --drain:
//	                 the rate (from the first job's start to the last
//	                 job's filing, by the records) and the daemon's own
//	                 CPU time per job (its threads, not its children)
//	harness wake     the daemon idle, or with K sleeping children: its
//	                 threads' wake-ups per second over a window, its
//	                 listings of incoming/, and its resident set
//	harness latency  jobdaemon submit → the job's process started, p50
//	                 and p99; the same for cp and rename(2) into
//	                 incoming/, and the CLI's start-up alone
//	harness reap     K children that exit at once: the time per child
//	                 from their release to the last job filed
//	harness term     SIGTERM to the daemon with K sleeping children →
//	                 the daemon and its children gone (-signal KILL -k 0:
//	                 the kernel's exit of the idle daemon's process alone)
//	harness super    SIGTERM to a minimal supervisor with K sleeping
//	                 children (floors super, goloop super) → all gone,
//	                 timed as harness term times the daemon
//	harness exit     SIGKILL to any command → reaped: the exit floor of a
//	                 process of that size, for the SIGTERM row
//	harness exec     a command that runs N jobs: its wall time and rate
//
// Each subcommand takes -h. The daemon's configuration is written into a
// temporary directory, with the defaults of config.toml for everything
// the measure does not need to set.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmds := map[string]func([]string) error{
		"spool":   spoolCmd,
		"wake":    wakeCmd,
		"latency": latencyCmd,
		"reap":    reapCmd,
		"term":    termCmd,
		"exec":    execCmd,
		"exit":    exitCmd,
		"super":   superCmd,
	}
	run := cmds[os.Args[1]]
	if run == nil {
		usage()
	}
	if err := run(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "harness %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: harness spool|wake|latency|reap|term|super|exit|exec [flags]")
	os.Exit(2)
}
