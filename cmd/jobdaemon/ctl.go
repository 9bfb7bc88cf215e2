package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jobdaemon/jobdaemon/internal/config"
	"github.com/jobdaemon/jobdaemon/internal/control"
)

// Exit codes of the commands that talk to a running daemon. 3 and 4 are
// what LSB init scripts use for "not running" and "unknown" (status).
const (
	exitNotRunning = 3 // no daemon answers on the control socket
	exitNoAccess   = 4 // the socket, or the daemon, refused this user
)

// dialDaemon reads the control socket's path from the config file, and
// returns a client for it; on failure it prints why and returns the exit
// code.
func dialDaemon(name, cfgPath string, stderr io.Writer) (*control.Client, *config.Config, int) {
	// Parse, not Load: a client needs only the socket's path, and must work
	// where the job's program or user do not exist.
	cfg, err := config.Parse(cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "jobdaemon %s: invalid configuration:\n%v\n", name, err)
		return nil, nil, config.ExitConfig
	}
	if cfg.Control.Socket == "" {
		fmt.Fprintf(stderr, "jobdaemon %s: %s sets no [control] socket: the daemon cannot be reached\n", name, cfgPath)
		return nil, nil, config.ExitConfig
	}
	return newClient(cfg), cfg, -1
}

// newClient returns a client for the daemon of cfg. When a PID file is
// configured and no daemon holds it, the client does not connect, and
// fails with control.ErrNoDaemon: with socket activation, connecting would
// start the very service that "status", "stop" or a monitoring probe found
// stopped.
func newClient(cfg *config.Config) *control.Client {
	c := control.NewClient(cfg.Control.Socket)
	if cfg.Daemon.PIDFile != "" {
		if _, locked, err := readPIDFile(cfg.Daemon.PIDFile); err != nil || !locked {
			c.Offline()
		}
	}
	return c
}

// clientError prints err and returns the exit code for it.
func clientError(name string, err error, stderr io.Writer) int {
	fmt.Fprintf(stderr, "jobdaemon %s: %v\n", name, err)
	switch {
	case errors.Is(err, control.ErrNoDaemon):
		return exitNotRunning
	case errors.Is(err, control.ErrPermission):
		return exitNoAccess
	}
	return exitFailure
}

// clientContext bounds a request: a daemon that does not answer within a
// minute is stuck.
func clientContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Minute)
}

const ctlExitCodes = `
Exit codes: 0 done, 1 the daemon refused or failed, 2 bad usage, 3 no
daemon is running, 4 permission denied, 78 invalid configuration.`

const statusHelp = `
Shows what the daemon is doing: its state, the pool, every running job with
its process, runtime, CPU time and memory, and the counters. --json prints
the control socket's answer as it is.

The exit code follows the LSB rules for init scripts: 0 running, 1 not
running but the PID file remains, 3 not running, 4 unknown (permission
denied, or an error).`

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", "--config FILE [--json]", statusHelp, stderr)
	cfgPath := configFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if code := noArgs(fs, stderr); code >= 0 {
		return code
	}
	c, cfg, _ := dialDaemon("status", *cfgPath, stderr)
	if c == nil {
		return exitNoAccess // LSB's "unknown": dialDaemon said why
	}
	ctx, cancel := clientContext()
	defer cancel()
	st, err := c.Status(ctx)
	switch {
	case errors.Is(err, control.ErrNoDaemon):
		return notRunning(cfg, stdout)
	case err != nil: // permission denied, or a daemon that does not answer
		fmt.Fprintf(stderr, "jobdaemon status: %v\n", err)
		return exitNoAccess
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			return exitFailure
		}
		return exitOK
	}
	printStatus(stdout, st)
	return exitOK
}

// notRunning tells apart, for status, a daemon that is not running from
// one whose PID file says it should be.
func notRunning(cfg *config.Config, stdout io.Writer) int {
	if cfg.Daemon.PIDFile != "" {
		pid, locked, err := readPIDFile(cfg.Daemon.PIDFile)
		switch {
		case err == nil && locked:
			fmt.Fprintf(stdout, "jobdaemon is running (pid %d), but its control socket %s does not answer\n", pid, cfg.Control.Socket)
			return exitOK
		case err == nil:
			fmt.Fprintf(stdout, "jobdaemon is not running, but its PID file %s remains (pid %d)\n", cfg.Daemon.PIDFile, pid)
			return exitFailure
		}
	}
	fmt.Fprintln(stdout, "jobdaemon is not running")
	return exitNotRunning
}

func printStatus(w io.Writer, st *control.StatusReply) {
	fmt.Fprintf(w, "jobdaemon %s: pid %d, up %s, config generation %d", st.State, st.Pid,
		st.Uptime.Round(time.Second), st.Generation)
	if st.Manager != "" {
		fmt.Fprintf(w, ", under %s", st.Manager)
	}
	if st.User != "" {
		fmt.Fprintf(w, ", user %s", st.User)
	}
	fmt.Fprintln(w)
	queued := "?"
	if st.Queued >= 0 {
		queued = strconv.Itoa(st.Queued)
	}
	fmt.Fprintf(w, "pool: %d/%d busy, %s queued, all busy for %s\n", st.Busy, st.MaxChildren, queued, st.Saturated.Round(time.Second))
	fmt.Fprintf(w, "jobs: %d started, %d succeeded, %d failed, %d retries\n", st.Started, st.Succeeded, st.Failed, st.Retried)
	fmt.Fprintf(w, "reloads: %d, %d refused\n", st.Reloads, st.ReloadsFailed)
	for _, warn := range st.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	if len(st.Slots) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tPID\tJOB\tATTEMPT\tRUNTIME\tCPU\tRSS")
	for _, s := range st.Slots {
		job := s.JobID
		if job == "" {
			job = "(idle worker)"
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%d\t%s\t%s\t%s\n", s.Slot, s.Pid, job, s.Attempt,
			s.Runtime.Round(100*time.Millisecond), (s.UserCPU + s.SysCPU).Round(10*time.Millisecond), config.Size(s.RSS))
	}
	tw.Flush()
}

const reloadHelp = `
Makes the daemon re-read its configuration file, and waits until it has:
the pool size, timeouts, stop signal, log levels and the job's command,
environment and working directory apply to the next jobs. A file with an
error is refused: the daemon runs on with the old configuration, and this
command prints the error and exits 1. This is systemd's ExecReload=.` + ctlExitCodes

func cmdReload(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("reload", "--config FILE", reloadHelp, stderr)
	cfgPath := configFlag(fs)
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if code := noArgs(fs, stderr); code >= 0 {
		return code
	}
	c, _, code := dialDaemon("reload", *cfgPath, stderr)
	if c == nil {
		return code
	}
	ctx, cancel := clientContext()
	defer cancel()
	r, err := c.Reload(ctx)
	var api *control.APIError
	if errors.As(err, &api) && api.Status == 422 {
		fmt.Fprintf(stderr, "jobdaemon reload: refused, the old configuration stays in force:\n%s\n", api.Message)
		return exitFailure
	}
	if err != nil {
		return clientError("reload", err, stderr)
	}
	fmt.Fprintf(stdout, "reloaded: config generation %d\n", r.Generation)
	return exitOK
}

const stopHelp = `
Stops the daemon and waits until it has exited, then says how it went:
gracefully by default (running jobs get [pool] stop_signal and are killed
after [daemon] stop_timeout), with --drain after the running jobs finish
(none is started), with --now at once (SIGKILL). --timeout bounds the
wait: exit 1 if the daemon still runs then (the stop goes on). --no-wait
returns as soon as the stop has begun. (--wait, the default, is accepted
for scripts that say so.)` + ctlExitCodes

func cmdStop(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("stop", "--config FILE [--drain|--now] [--wait|--no-wait] [--timeout D]", stopHelp, stderr)
	cfgPath := configFlag(fs)
	drain := fs.Bool("drain", false, "let the running jobs finish")
	now := fs.Bool("now", false, "kill the running jobs at once")
	fs.Bool("wait", true, "wait until the daemon has exited (the default)")
	noWait := fs.Bool("no-wait", false, "return once the stop has begun")
	timeout := fs.Duration("timeout", 0, "give up waiting after this `duration` (0: no limit)")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if code := noArgs(fs, stderr); code >= 0 {
		return code
	}
	if *drain && *now {
		fmt.Fprintln(stderr, "jobdaemon stop: --drain and --now are opposites: give one")
		return exitUsage
	}
	mode := "graceful"
	if *drain {
		mode = "drain"
	} else if *now {
		mode = "immediate"
	}
	c, _, code := dialDaemon("stop", *cfgPath, stderr)
	if c == nil {
		return code
	}
	return stopDaemon(c, mode, !*noWait, *timeout, stdout, stderr)
}

// stopDaemon asks the daemon behind c to stop, and waits for its exit
// unless told not to.
func stopDaemon(c *control.Client, mode string, wait bool, timeout time.Duration, stdout, stderr io.Writer) int {
	ctx, cancel := clientContext()
	st, err := c.Status(ctx)
	if err == nil {
		err = c.Stop(ctx, mode)
	}
	cancel()
	if err != nil {
		return clientError("stop", err, stderr)
	}
	if !wait {
		fmt.Fprintf(stdout, "jobdaemon (pid %d) is stopping (%s), %d jobs running\n", st.Pid, mode, st.Busy)
		return exitOK
	}
	start := time.Now()
	for processExists(st.Pid) {
		if timeout > 0 && time.Since(start) > timeout {
			fmt.Fprintf(stderr, "jobdaemon stop: pid %d still runs after %s; the %s stop goes on\n", st.Pid, timeout, mode)
			return exitFailure
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintf(stdout, "jobdaemon (pid %d) stopped (%s) after %s; %d jobs were running\n",
		st.Pid, mode, time.Since(start).Round(time.Millisecond), st.Busy)
	return exitOK
}

const restartHelp = `
Stops the daemon gracefully, waits until it has exited, and starts it
again in the background, as "stop" then "start" would. With no daemon
running, it just starts one. For a daemon under systemd, use "systemctl
restart jobdaemon" instead.` + ctlExitCodes

func cmdRestart(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("restart", "--config FILE [--timeout D]", restartHelp, stderr)
	cfgPath := configFlag(fs)
	timeout := fs.Duration("timeout", 0, "give up waiting for the stop after this `duration` (0: no limit)")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if code := noArgs(fs, stderr); code >= 0 {
		return code
	}
	// Check the new file first: a restart into a broken configuration
	// would leave nothing running.
	if cfg, code := loadConfig(*cfgPath, stderr); cfg == nil {
		return code
	}
	c, _, code := dialDaemon("restart", *cfgPath, stderr)
	if c == nil {
		return code
	}
	ctx, cancel := clientContext()
	_, err := c.Status(ctx)
	cancel()
	switch {
	case err == nil:
		if code := stopDaemon(c, "graceful", true, *timeout, stdout, stderr); code != exitOK {
			return code
		}
	case !errors.Is(err, control.ErrNoDaemon):
		return clientError("restart", err, stderr)
	}
	return cmdStart([]string{"--config", *cfgPath}, stdout, stderr)
}

// processExists reports whether pid is a live process (a zombie counts
// as gone: it has exited).
func processExists(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(b), ')'); i >= 0 && len(b) > i+2 {
		return b[i+2] != 'Z' && b[i+2] != 'X'
	}
	return true
}

const scaleHelp = `
Changes how many jobs run at once: N sets it, +N and -N change it. Fewer
slots stop no running job: the slots above the new size are not refilled.` + ctlExitCodes

func cmdScale(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("scale", "--config FILE N|+N|-N", scaleHelp, stderr)
	cfgPath := configFlag(fs)
	// "-1" would be taken for a flag: cut the number off first.
	var num string
	if len(args) > 0 {
		if last := args[len(args)-1]; len(last) > 1 && (last[0] == '-' || last[0] == '+') && isDigits(last[1:]) {
			num, args = last, args[:len(args)-1]
		}
	}
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if num == "" && fs.NArg() == 1 {
		num = fs.Arg(0)
	} else if num == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "jobdaemon scale: give one number: N, +N or -N")
		return exitUsage
	}
	relative := num[0] == '+' || num[0] == '-'
	n, err := strconv.Atoi(num)
	if err != nil || !relative && n < 1 {
		fmt.Fprintf(stderr, "jobdaemon scale: %q: want a size of at least 1, or +N or -N\n", num)
		return exitUsage
	}
	c, _, code := dialDaemon("scale", *cfgPath, stderr)
	if c == nil {
		return code
	}
	ctx, cancel := clientContext()
	defer cancel()
	got, err := c.Scale(ctx, n, relative)
	if err != nil {
		return clientError("scale", err, stderr)
	}
	fmt.Fprintf(stdout, "max_children = %d\n", got)
	return exitOK
}

func isDigits(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }

func cmdPause(args []string, stdout, stderr io.Writer) int {
	return pauseResume("pause", "Makes the daemon take no new job; running jobs go on. resume undoes it.", args, stdout, stderr)
}

func cmdResume(args []string, stdout, stderr io.Writer) int {
	return pauseResume("resume", "Makes a paused daemon take jobs again.", args, stdout, stderr)
}

func pauseResume(name, help string, args []string, stdout, stderr io.Writer) int {
	fs := newFlags(name, "--config FILE", help+"\n"+ctlExitCodes, stderr)
	cfgPath := configFlag(fs)
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if code := noArgs(fs, stderr); code >= 0 {
		return code
	}
	c, _, code := dialDaemon(name, *cfgPath, stderr)
	if c == nil {
		return code
	}
	ctx, cancel := clientContext()
	defer cancel()
	do, past := c.Pause, "paused"
	if name == "resume" {
		do, past = c.Resume, "resumed"
	}
	if err := do(ctx); err != nil {
		return clientError(name, err, stderr)
	}
	fmt.Fprintln(stdout, past)
	return exitOK
}

const signalHelp = `
Sends a signal to the process group of a running job: the job's process
and everything it started. SIG is a name (TERM, SIGUSR1) or a number;
the default is TERM. "jobdaemon status" lists the running jobs.` + ctlExitCodes

func cmdSignal(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("signal", "--config FILE JOB [SIG]", signalHelp, stderr)
	cfgPath := configFlag(fs)
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		fmt.Fprintln(stderr, "jobdaemon signal: give a job id, and optionally a signal")
		return exitUsage
	}
	sig, err := control.ParseSignal(fs.Arg(1))
	if err != nil {
		fmt.Fprintf(stderr, "jobdaemon signal: %v\n", err)
		return exitUsage
	}
	name := config.Signal(sig).String()
	c, _, code := dialDaemon("signal", *cfgPath, stderr)
	if c == nil {
		return code
	}
	ctx, cancel := clientContext()
	defer cancel()
	if err := c.Signal(ctx, fs.Arg(0), name); err != nil {
		return clientError("signal", err, stderr)
	}
	fmt.Fprintf(stdout, "sent %s to job %s\n", name, fs.Arg(0))
	return exitOK
}

// noArgs refuses positional arguments.
func noArgs(fs *flag.FlagSet, stderr io.Writer) int {
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "jobdaemon %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return exitUsage
	}
	return -1
}
