package lifecycle

import (
	"os"
	"strconv"
)

// EnvDaemonized is the environment variable that marks the daemon forked by
// `jobdaemon start`: the classic daemonize code sets it to "1" in the process
// it re-executes, and [Detect] reads it back there.
const EnvDaemonized = "JOBDAEMON_DAEMONIZED"

// Manager is what started the running daemon, and so decides where it logs
// and whom it tells that it is ready.
type Manager int

const (
	// Foreground is a daemon started by hand, from a terminal, or as the
	// main process of a container.
	Foreground Manager = iota
	// Systemd is a daemon run as a systemd service. start-stop-daemon
	// --notify-await also sets NOTIFY_SOCKET and takes the same code path.
	Systemd
	// Classic is the daemon forked by `jobdaemon start` for classic init.
	Classic
)

// String returns "foreground", "systemd" or "classic", and "Manager(N)" for
// a value that is none of the constants.
func (m Manager) String() string {
	switch m {
	case Foreground:
		return "foreground"
	case Systemd:
		return "systemd"
	case Classic:
		return "classic"
	}
	return "Manager(" + strconv.Itoa(int(m)) + ")"
}

// Detect tells what started this process, from its environment alone.
//
// It returns Classic when EnvDaemonized is "1"; otherwise Systemd when
// NOTIFY_SOCKET or INVOCATION_ID is set, or SYSTEMD_EXEC_PID is this
// process's pid; otherwise Foreground.
//
// Classic is checked first on purpose: the variable is set by our own code
// for exactly this process, while INVOCATION_ID is inherited by anything a
// unit runs, so `jobdaemon start` run from a unit (Type=forking, or an init
// script wrapped by systemd) still yields a daemon that must report to the
// waiting `start` and whose stderr is /dev/null rather than the journal.
// SYSTEMD_EXEC_PID (systemd 248+) is compared with our pid because a process
// the service forks inherits it but is not the service's main process.
func Detect() Manager {
	if os.Getenv(EnvDaemonized) == "1" {
		return Classic
	}
	if os.Getenv("NOTIFY_SOCKET") != "" || os.Getenv("INVOCATION_ID") != "" {
		return Systemd
	}
	if pid, err := strconv.Atoi(os.Getenv("SYSTEMD_EXEC_PID")); err == nil && pid == os.Getpid() {
		return Systemd
	}
	return Foreground
}
