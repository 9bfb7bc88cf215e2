// Package lifecycle is what a daemon needs from the system around it: to
// know what started it, to tell that manager how it is doing, to log where
// that manager looks, and, under classic init, to become a daemon.
//
// It knows nothing of jobs, pools or configuration files; jobdaemon's main
// program wires it to them.
//
// # Who started us
//
// [Detect] tells a systemd service ([Systemd]; start-stop-daemon
// --notify-await looks the same), the daemon forked by `jobdaemon start`
// ([Classic]) and everything else ([Foreground]: a terminal, a container)
// apart, from the environment alone.
//
// # Telling the manager: sd_notify
//
// A [Notifier] sends sd_notify datagrams to NOTIFY_SOCKET, for a unit with
// Type=notify and NotifyAccess=main (or for start-stop-daemon
// --notify-await, which only waits for READY=1). Without NOTIFY_SOCKET
// every method does nothing, and no method ever fails the daemon. jobdaemon
// sends:
//
//   - READY=1 once startup is complete: only after the PID file is locked,
//     the sockets are bound, privileges are dropped and the first LoadConfig
//     succeeded, so that `systemctl start` returns when the daemon really
//     serves, or fails when it cannot.
//   - RELOADING=1 with MONOTONIC_USEC (one datagram) when a reload starts,
//     then READY=1 (with the new STATUS=) when it is done, so that
//     `systemctl reload` waits for the reload rather than for the signal.
//   - STOPPING=1 when a stop begins.
//   - STATUS=, kept current with what the daemon is doing, for systemctl
//     status; a text equal to the last one is not sent again.
//   - WATCHDOG=1 every half WATCHDOG_USEC, from the dispatcher loop, so that a
//     stuck dispatcher, not only a dead process, starves the watchdog and
//     gets the daemon restarted.
//   - EXTEND_TIMEOUT_USEC= during a long stop, while jobs drain, so that
//     TimeoutStopSec= does not kill jobs that are finishing.
//   - ERRNO= when startup fails, before exiting, so systemctl status shows
//     why.
//
// # Logging
//
// Under systemd, when stderr is the journal's stream ([JournalStream]),
// [NewJournalHandler] logs through the journal's native protocol: one entry
// per record, with its level as PRIORITY, SYSLOG_IDENTIFIER and
// SYSLOG_FACILITY set, and its attributes as fields that journalctl can
// match (JOB_ID=...). The classic daemon, whose stderr is /dev/null, logs
// to the syslog daemon through /dev/log with [NewSyslogHandler], or to a
// file with [OpenLogFile], which [LogFile.Reopen] reopens after logrotate.
//
// # Classic init
//
// Daemonize re-executes the program twice, so the daemon is in a new
// session but not its leader, and waits for the daemon to Report that it
// is ready or why it failed, so that `jobdaemon start` exits 0 only when
// the daemon runs. LockPIDFile writes the PID file under an flock held for
// the daemon's life, so a second daemon, or a stale file, is told apart
// from a running one. DropPrivileges switches to the configured user and
// group for good, with setgroups, setgid and setuid on every thread.
package lifecycle
