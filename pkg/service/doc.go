// Package service turns an application, the hooks of package jobs, into a
// whole service in one call: Main. It is what the jobdaemon binary is
// made of, for any Go program, so that a developer's daemon and jobdaemon
// are driven alike, by the same init script and unit files with only the
// binary's name changed.
//
//	func main() {
//		os.Exit(service.Main(&app{}, service.Options{Name: "thumbnailer"}))
//	}
//
// # What Main does
//
// It reads a subcommand from the command line:
//
//	run [--drain]     the daemon in the foreground (systemd Type=notify, containers)
//	start             the daemon in the background (classic init: double fork, PID file)
//	stop, restart     through the control socket; stop waits for the exit
//	status            LSB exit codes (0 running, 1 dead with a PID file, 3 not running, 4 unknown)
//	reload            synchronous: exit 1 with the reason when refused (systemd's ExecReload=)
//	scale, pause, resume, signal, version
//
// For run, the start-up order is: the settings (Configure), the log (the
// journal under systemd, syslog with the facility "daemon" for a classic
// daemon, or a file), the PID file (locked for the daemon's life), the
// control socket (systemd's, when socket-activated), the privilege drop
// (setgroups, setgid, setuid on every thread), then the first LoadConfig
// and READY=1 (or the report to "start"). A TERM during start-up cancels
// the context of that first LoadConfig. Signals: TERM and INT stop, QUIT
// drains, HUP reloads, USR1 reopens the log file, USR2 and CONT pause and
// resume, TTIN and TTOU scale by one.
//
// # Settings
//
// Settings are what the service itself needs; Defaults gives them for a
// program's name. The application's Configure hook fills them in from its
// own configuration, at start, on every reload, and in the client
// commands, which need only the control socket and the PID file. The
// settings tagged reload:"live" (pool size, timeouts, signals, log levels)
// apply on a reload; a change to another is named in a warning and waits
// for a restart (RestartKeys, CopyLive). jobdaemon's config.toml embeds
// these tables.
//
// # Exit codes
//
// 0 success, 1 a failure (a refused reload, a job that failed for good in
// run --drain), 2 bad usage, 3 no daemon running, 4 permission denied, 70
// an internal error, 78 an invalid configuration (EX_CONFIG, which a
// unit's RestartPreventExitStatus=78 keeps from restarting into).
package service
