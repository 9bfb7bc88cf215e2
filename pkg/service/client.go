package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/jobdaemon/jobdaemon/internal/control"
	"github.com/jobdaemon/jobdaemon/pkg/lifecycle"
)

// The commands that talk to a running daemon through its control socket.

// dial returns a client for the daemon of the command's configuration;
// on failure it prints why and returns nil and the exit code.
func (s *service) dial(cmd *cobra.Command, name string) (*Client, int) {
	st, err := s.settings(context.Background(), name, ConfigFile(cmd))
	if err != nil {
		fmt.Fprintf(s.stderr, "%s %s: invalid configuration:\n%v\n", s.name, name, err)
		return nil, ExitConfig
	}
	if st.Control.Socket == "" {
		fmt.Fprintf(s.stderr, "%s %s: the configuration sets no control.socket: the daemon cannot be reached\n", s.name, name)
		return nil, ExitConfig
	}
	return NewClient(&st), -1
}

// Client talks to a running daemon through its control socket.
type Client struct {
	*control.Client
	pidFile string
}

// NewClient returns a client for the daemon whose settings are st. When
// st has a PID file and no daemon holds it, the client does not connect,
// and fails as if no daemon were running: with socket activation,
// connecting would start the very service that "status", "stop" or a
// monitoring probe found stopped.
func NewClient(st *Settings) *Client {
	c := &Client{Client: control.NewClient(st.Control.Socket), pidFile: st.Daemon.PIDFile}
	if c.pidFile != "" {
		if _, locked, err := lifecycle.ReadPIDFile(c.pidFile); err != nil || !locked {
			c.Offline()
		}
	}
	return c
}

// IsNotRunning reports whether err says that no daemon answered.
func IsNotRunning(err error) bool { return errors.Is(err, control.ErrNoDaemon) }

// IsPermission reports whether err says that the daemon refused this user.
func IsPermission(err error) bool { return errors.Is(err, control.ErrPermission) }

// clientError prints err and returns the exit code for it.
func (s *service) clientError(name string, err error) int {
	fmt.Fprintf(s.stderr, "%s %s: %v\n", s.name, name, err)
	return ClientExitCode(err)
}

// ClientExitCode returns the exit code for an error of a Client:
// ExitNotRunning, ExitNoAccess or ExitFailure.
func ClientExitCode(err error) int {
	switch {
	case IsNotRunning(err):
		return ExitNotRunning
	case IsPermission(err):
		return ExitNoAccess
	}
	return ExitFailure
}

// clientContext bounds a request: a daemon that does not answer within a
// minute is stuck.
func clientContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Minute)
}

func (s *service) status(cmd *cobra.Command, asJSON bool) int {
	st, err := s.settings(context.Background(), "status", ConfigFile(cmd))
	if err != nil || st.Control.Socket == "" {
		if err == nil {
			err = errors.New("the configuration sets no control.socket")
		}
		fmt.Fprintf(s.stderr, "%s status: %v\n", s.name, err)
		return ExitNoAccess // LSB's "unknown"
	}
	c := NewClient(&st)
	ctx, cancel := clientContext()
	defer cancel()
	rep, err := c.Status(ctx)
	switch {
	case IsNotRunning(err):
		return s.notRunning(&st)
	case err != nil: // permission denied, or a daemon that does not answer
		fmt.Fprintf(s.stderr, "%s status: %v\n", s.name, err)
		return ExitNoAccess
	}
	if asJSON {
		enc := json.NewEncoder(s.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return ExitFailure
		}
		return ExitOK
	}
	s.printStatus(rep)
	return ExitOK
}

// notRunning tells apart, for status, a daemon that is not running from
// one whose PID file says it should be.
func (s *service) notRunning(st *Settings) int {
	if st.Daemon.PIDFile != "" {
		pid, locked, err := lifecycle.ReadPIDFile(st.Daemon.PIDFile)
		switch {
		case err == nil && locked:
			fmt.Fprintf(s.stdout, "%s is running (pid %d), but its control socket %s does not answer\n", s.name, pid, st.Control.Socket)
			return ExitOK
		case err == nil:
			fmt.Fprintf(s.stdout, "%s is not running, but its PID file %s remains (pid %d)\n", s.name, st.Daemon.PIDFile, pid)
			return ExitFailure
		}
	}
	fmt.Fprintf(s.stdout, "%s is not running\n", s.name)
	return ExitNotRunning
}

func (s *service) printStatus(st *control.StatusReply) {
	w := s.stdout
	fmt.Fprintf(w, "%s %s: pid %d, up %s, config generation %d", s.name, st.State, st.Pid,
		st.Uptime.Round(time.Second), st.Generation)
	switch st.Manager {
	case "systemd":
		fmt.Fprint(w, ", under systemd")
	case "classic":
		fmt.Fprint(w, ", a classic daemon")
	case "foreground":
		fmt.Fprint(w, ", in the foreground")
	}
	if st.User != "" {
		fmt.Fprintf(w, ", user %s", st.User)
	}
	fmt.Fprintln(w)
	queued := "?"
	if st.Queued >= 0 {
		queued = strconv.Itoa(st.Queued)
	}
	fmt.Fprintf(w, "pool: %d/%d busy, %s queued", st.Busy, st.MaxChildren, queued)
	if st.Saturated >= time.Second {
		fmt.Fprintf(w, "; every slot was busy for %s in all", st.Saturated.Round(time.Second))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "runs: %d started, %d succeeded, %d failed\n", st.RunsStarted, st.RunsSucceeded, st.RunsFailed)
	fmt.Fprintf(w, "jobs: %d completed, %d retried, %d failed\n", st.JobsCompleted, st.JobsRetried, st.JobsFailed)
	if len(st.SourceJobs) > 0 {
		var counts []string
		for _, state := range slices.Sorted(maps.Keys(st.SourceJobs)) {
			counts = append(counts, fmt.Sprintf("%d %s", st.SourceJobs[state], state))
		}
		fmt.Fprintf(w, "source: %s\n", strings.Join(counts, ", "))
	}
	if st.WorkersStarted > 0 {
		fmt.Fprintf(w, "workers: %d started\n", st.WorkersStarted)
	}
	if st.NotStarted > 0 {
		fmt.Fprintf(w, "start failures: %d jobs could not be started and went back unrun; last: %s\n", st.NotStarted, st.LastStartError)
	}
	if st.StartBackoff > 0 {
		fmt.Fprintf(w, "no job starts for another %s, after a job could not be started\n", st.StartBackoff.Round(time.Millisecond))
	}
	fmt.Fprintf(w, "reloads: %d, %d refused\n", st.Reloads, st.ReloadsFailed)
	if st.Isolation != "" {
		fmt.Fprintf(w, "jobs run in %s\n", st.Isolation)
	}
	for _, warn := range st.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	if len(st.Slots) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tPID\tJOB\tATTEMPT\tRUNTIME\tCPU\tRSS")
	for _, sl := range st.Slots {
		job := sl.JobID
		if job == "" {
			job = "(idle worker)"
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%d\t%s\t%s\t%s\n", sl.Slot, sl.Pid, job, sl.Attempt,
			sl.Runtime.Round(100*time.Millisecond), (sl.UserCPU + sl.SysCPU).Round(10*time.Millisecond), formatBytes(sl.RSS))
	}
	tw.Flush()
}

// formatBytes writes n with a binary unit: "12.3MiB".
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func (s *service) reload(cmd *cobra.Command) int {
	c, code := s.dial(cmd, "reload")
	if c == nil {
		return code
	}
	ctx, cancel := clientContext()
	defer cancel()
	r, err := c.Reload(ctx)
	var api *control.APIError
	if errors.As(err, &api) && api.Status == 422 {
		fmt.Fprintf(s.stderr, "%s reload: refused, the old configuration stays in force:\n%s\n", s.name, api.Message)
		return ExitFailure
	}
	if err != nil {
		return s.clientError("reload", err)
	}
	fmt.Fprintf(s.stdout, "reloaded: config generation %d\n", r.Generation)
	return ExitOK
}

// stopDaemon asks the daemon behind c to stop, and waits for its exit
// unless told not to.
func (s *service) stopDaemon(c *Client, mode string, wait bool, timeout time.Duration) int {
	ctx, cancel := clientContext()
	st, err := c.Status(ctx)
	if err == nil {
		err = c.Stop(ctx, mode)
	}
	cancel()
	if err != nil {
		return s.clientError("stop", err)
	}
	if !wait {
		fmt.Fprintf(s.stdout, "%s (pid %d) is stopping (%s), %d jobs running\n", s.name, st.Pid, mode, st.Busy)
		return ExitOK
	}
	start := time.Now()
	for processExists(st.Pid) {
		if timeout > 0 && time.Since(start) > timeout {
			fmt.Fprintf(s.stderr, "%s stop: pid %d still runs after %s; the %s stop goes on\n", s.name, st.Pid, timeout, mode)
			return ExitFailure
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintf(s.stdout, "%s (pid %d) stopped (%s) after %s; %d jobs were running\n",
		s.name, st.Pid, mode, time.Since(start).Round(time.Millisecond), st.Busy)
	return ExitOK
}

func (s *service) restart(cmd *cobra.Command, timeout time.Duration) int {
	// Check the new configuration first: a restart into a broken one would
	// leave nothing running.
	if _, err := s.settings(context.Background(), "run", ConfigFile(cmd)); err != nil {
		fmt.Fprintf(s.stderr, "%s: invalid configuration:\n%v\n", s.name, err)
		return ExitConfig
	}
	c, code := s.dial(cmd, "restart")
	if c == nil {
		return code
	}
	ctx, cancel := clientContext()
	_, err := c.Status(ctx)
	cancel()
	switch {
	case err == nil:
		if code := s.stopDaemon(c, "graceful", true, timeout); code != ExitOK {
			return code
		}
	case !IsNotRunning(err):
		return s.clientError("restart", err)
	}
	return s.start(ConfigFile(cmd), time.Minute)
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

func (s *service) scale(cmd *cobra.Command, args []string) error {
	num, err := parseScaleArgs(cmd, args)
	if errors.Is(err, pflag.ErrHelp) {
		return cmd.Help()
	}
	if err != nil {
		return err
	}
	relative := num[0] == '+' || num[0] == '-'
	n, err := strconv.Atoi(num)
	if err != nil || !relative && n < 1 {
		return fmt.Errorf("%q: want a size of at least 1, or +N or -N", num)
	}
	c, code := s.dial(cmd, "scale")
	if c == nil {
		return Exit(code)
	}
	ctx, cancel := clientContext()
	defer cancel()
	got, err := c.Scale(ctx, n, relative)
	if err != nil {
		return Exit(s.clientError("scale", err))
	}
	fmt.Fprintf(s.stdout, "max_children = %d\n", got)
	return nil
}

func (s *service) pauseResume(cmd *cobra.Command, name string) int {
	c, code := s.dial(cmd, name)
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
		return s.clientError(name, err)
	}
	fmt.Fprintln(s.stdout, past)
	return ExitOK
}

func (s *service) signal(cmd *cobra.Command, args []string) int {
	var sigArg string
	if len(args) > 1 {
		sigArg = args[1]
	}
	sig, err := control.ParseSignal(sigArg)
	if err != nil {
		fmt.Fprintf(s.stderr, "%s signal: %v\n", s.name, err)
		return ExitUsage
	}
	name := lifecycle.SignalName(sig)
	c, code := s.dial(cmd, "signal")
	if c == nil {
		return code
	}
	ctx, cancel := clientContext()
	defer cancel()
	if err := c.Signal(ctx, args[0], name); err != nil {
		return s.clientError("signal", err)
	}
	fmt.Fprintf(s.stdout, "sent %s to job %s\n", name, args[0])
	return ExitOK
}

// start starts the daemon in the background, for "start" and "restart".
func (s *service) start(configFile string, timeout time.Duration) int {
	// Check the settings here, where the error can be shown at once; the
	// daemon reads them again.
	st, err := s.settings(context.Background(), "run", configFile)
	if err != nil {
		fmt.Fprintf(s.stderr, "%s: invalid configuration:\n%v\n", s.name, err)
		return ExitConfig
	}
	if st.Daemon.PIDFile != "" {
		if pid, locked, err := lifecycle.ReadPIDFile(st.Daemon.PIDFile); err == nil && locked {
			fmt.Fprintf(s.stderr, "%s start: already running (pid %d)\n", s.name, pid)
			return ExitFailure
		}
	}
	// The daemon works from /: it needs the file's absolute path.
	abs, err := filepath.Abs(configFile)
	if err != nil {
		fmt.Fprintf(s.stderr, "%s start: %v\n", s.name, err)
		return ExitFailure
	}
	pid, err := lifecycle.Daemonize([]string{"run", "--config", abs}, nil, timeout)
	if err != nil {
		fmt.Fprintf(s.stderr, "%s start: %v\n", s.name, err)
		var se *lifecycle.StartError
		if errors.As(err, &se) {
			return se.Code // 78 for a configuration the daemon refused
		}
		return ExitFailure
	}
	fmt.Fprintf(s.stdout, "%s started (pid %d)\n", s.name, pid)
	return ExitOK
}
