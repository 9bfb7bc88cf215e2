package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/lifecycle"
)

const startHelp = `
Starts the daemon in the background, the classic way (init scripts, hosts
without systemd): it forks twice, leaves the terminal and the session,
takes the PID file ([daemon] pid_file), opens the control socket, drops to
[daemon] user, and logs to syslog (facility "daemon") unless [log] target
says otherwise. "start" returns only when the daemon is ready:

  jobdaemon started (pid N)     exit 0
  the reason it could not       exit 1, or 78 for an invalid configuration

A daemon already running on this configuration is reported as "already
running (pid N)", exit 1. Under systemd, use "jobdaemon run" in the unit
instead (see dist/systemd/jobdaemon.service).`

func cmdStart(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("start", "--config FILE [--timeout D]", startHelp, stderr)
	cfgPath := configFlag(fs)
	timeout := fs.Duration("timeout", time.Minute, "how long to wait for the daemon to be ready")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if code := noArgs(fs, stderr); code >= 0 {
		return code
	}
	// Check the file here, where the error can be shown at once; the
	// daemon reads it again.
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	if cfg.Daemon.PIDFile != "" {
		if pid, locked, err := readPIDFile(cfg.Daemon.PIDFile); err == nil && locked {
			fmt.Fprintf(stderr, "jobdaemon start: already running (pid %d)\n", pid)
			return exitFailure
		}
	}
	// The daemon works from /: it needs the file's absolute path.
	abs, err := filepath.Abs(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "jobdaemon start: %v\n", err)
		return exitFailure
	}
	pid, err := lifecycle.Daemonize([]string{"run", "--config", abs}, nil, *timeout)
	if err != nil {
		fmt.Fprintf(stderr, "jobdaemon start: %v\n", err)
		var se *lifecycle.StartError
		if errors.As(err, &se) {
			return se.Code // 78 for a configuration the daemon refused
		}
		return exitFailure
	}
	fmt.Fprintf(stdout, "jobdaemon started (pid %d)\n", pid)
	return exitOK
}

// readPIDFile reads a PID file, and whether a live daemon holds it.
var readPIDFile = lifecycle.ReadPIDFile
