package lifecycle

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The classic double fork, done by re-executing the binary (a Go process
// cannot fork without exec):
//
//	start (foreground) ──exec, Setsid──► intermediate ──exec──► daemon
//	       ▲                             exits at once            │
//	       └──────────── report pipe: "child N", then "ready N" or "fail CODE TEXT"
//
// The intermediate is a session leader without a controlling terminal; the
// daemon is in its session but is not its leader, and only a session leader
// acquires a controlling terminal when it opens one, so the daemon never can.
//
// Both children are told who they are by the environment, not by arguments,
// so that the daemon's command line stays the one the caller gave.
const (
	// envIntermediate marks the first child; its value is the report fd.
	envIntermediate = "JOBDAEMON_DAEMONIZE_INTERMEDIATE"
	// envReportFD names the daemon's report fd; Detach removes it from the
	// environment so that nothing the daemon starts inherits a stale number.
	envReportFD = "JOBDAEMON_REPORT_FD"
	// reportFD is where the report pipe lands in both children: the first
	// fd after stdin, stdout and stderr.
	reportFD = 3
)

// Daemonize starts the daemon for `jobdaemon start` and waits until it is
// running or has failed to start. It re-executes the running binary (see
// selfPath) with args twice: the
// first child is started with Setsid and does nothing but, in
// ContinueDaemonize, start the second child and exit; the second child is
// the daemon, which is never a session leader and so can never acquire a
// controlling terminal. argv[0] of both is this process's argv[0], and both
// start in the caller's working directory, so relative paths in args
// resolve as the user typed them (Detach later moves to "/").
//
// The daemon's environment is env (nil means os.Environ()) without any
// previous value of the variables below, plus EnvDaemonized=1 and a private
// variable naming the report fd. stdin, stdout and stderr of both children
// are /dev/null from the start: start-up errors travel back through the
// pipe, and later ones go to the daemon's log.
//
// Daemonize returns the daemon's pid once the daemon calls Report.Ready. It
// returns an error carrying the daemon's text when the daemon calls
// Report.Fail, and "the daemon exited during start-up" when the pipe is
// closed without a report (a crash, os.Exit, a panic). When no report comes
// within timeout it returns an error and, if the daemon was started, also
// its pid: the daemon may still be running and the caller decides whether
// to kill it. timeout <= 0 means no time limit.
func Daemonize(args []string, env []string, timeout time.Duration) (pid int, err error) {
	if env == nil {
		env = os.Environ()
	}
	env = withoutEnv(env, EnvDaemonized, envReportFD, envIntermediate)

	r, w, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("daemonize: report pipe: %w", err)
	}
	defer r.Close()

	cmd := exec.Command(selfPath(), args...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(env, envIntermediate+"="+strconv.Itoa(reportFD))
	// exec.Cmd connects nil stdio to /dev/null; ExtraFiles[0] becomes fd 3.
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	// Our copy of the write end must go, or the read below never sees EOF
	// when the daemon dies without a word.
	w.Close()
	if err != nil {
		return 0, fmt.Errorf("daemonize: start intermediate process: %w", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	if timeout > 0 {
		if err := r.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			cmd.Process.Kill()
			<-waited
			return 0, fmt.Errorf("daemonize: report pipe deadline: %w", err)
		}
	}
	rep := readReport(r)

	// Reap the intermediate. It exits as soon as the daemon is started; if
	// it is still there a little after the report, it did not run
	// ContinueDaemonize (main forgot to call it) or is stuck, and it is
	// killed rather than left behind.
	var waitErr error
	select {
	case waitErr = <-waited:
	case <-time.After(2 * time.Second):
		cmd.Process.Kill()
		waitErr = <-waited
	}

	switch {
	case rep.ready:
		return rep.pid, nil
	case rep.failed:
		return 0, &StartError{Code: rep.code, Text: rep.text}
	case errors.Is(rep.err, os.ErrDeadlineExceeded):
		if rep.child != 0 {
			return rep.child, fmt.Errorf("daemon (pid %d) did not report within %v; it may still be running", rep.child, timeout)
		}
		if waitErr != nil {
			return 0, fmt.Errorf("daemon did not start within %v (intermediate process: %w)", timeout, waitErr)
		}
		return 0, fmt.Errorf("daemon did not start within %v", timeout)
	case rep.err != nil:
		return 0, fmt.Errorf("daemonize: read report: %w", rep.err)
	case rep.child == 0 && waitErr != nil:
		return 0, fmt.Errorf("daemonize: intermediate process: %w", waitErr)
	default:
		return 0, errors.New("the daemon exited during start-up")
	}
}

// report is what Daemonize read from the pipe.
type report struct {
	child  int    // pid the intermediate started, 0 if it did not say
	ready  bool   // the daemon sent "ready"
	pid    int    // the pid sent with "ready"
	failed bool   // the daemon (or the intermediate) sent "fail"
	code   int    // the exit status sent with "fail", or 1
	text   string // the text sent with "fail"
	err    error  // the read error, nil at EOF
}

// readReport reads lines until "ready" (then to EOF), "fail", EOF or an
// error. Each
// message is one line, written with a single write of less than PIPE_BUF
// bytes, so messages from the two children never interleave.
func readReport(r io.Reader) report {
	var rep report
	br := bufio.NewReader(io.LimitReader(r, 64<<10))
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if err != io.EOF {
				rep.err = err
			}
			return rep
		}
		kind, arg, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		switch kind {
		case "child":
			rep.child, _ = strconv.Atoi(arg)
		case "ready":
			if rep.pid, err = strconv.Atoi(arg); err != nil || rep.pid <= 0 {
				rep.failed, rep.text = true, fmt.Sprintf("bad ready message %q", line)
				return rep
			}
			rep.ready = true
			// The daemon closes its end right after "ready": wait for that
			// end of file, so that when "start" returns the daemon holds
			// nothing of the starting process's.
			_, _ = io.Copy(io.Discard, br)
			return rep
		case "fail":
			// "fail CODE QUOTED-TEXT"
			rep.failed, rep.code = true, 1
			if c, rest, ok := strings.Cut(arg, " "); ok {
				if n, err := strconv.Atoi(c); err == nil && n > 0 && n < 256 {
					rep.code, arg = n, rest
				}
			}
			if rep.text, err = strconv.Unquote(arg); err != nil {
				rep.text = arg
			}
			return rep
		}
	}
}

// ContinueDaemonize must be called first thing in main, before flags are
// parsed and before any goroutine starts a process. In the intermediate
// child of Daemonize it starts the daemon and exits the process with status
// 0 (1 if the daemon could not be started, after sending the reason through
// the pipe); it never returns there. In the daemon it marks the report pipe
// close-on-exec, so that nothing the daemon starts before Detach holds the
// pipe open, and returns. Elsewhere it returns at once.
func ContinueDaemonize() {
	if v, ok := os.LookupEnv(envIntermediate); ok {
		os.Exit(startDaemon(v))
	}
	if fd, err := daemonReportFD(); err == nil {
		unix.CloseOnExec(fd)
	}
}

// startDaemon runs in the intermediate child and returns its exit status.
func startDaemon(fdText string) int {
	fd, err := strconv.Atoi(fdText)
	if err != nil || fd < 3 {
		return 1
	}
	rep := os.NewFile(uintptr(fd), "report")
	if err := startDaemonReport(rep); err != nil {
		writeMsg(rep, "fail 1 "+strconv.Quote(err.Error()))
		return 1
	}
	return 0
}

func startDaemonReport(rep *os.File) error {
	// Why not close the stray fds in the daemon itself? A Go program cannot
	// safely close fds it did not open: by the time main runs, the runtime
	// may own some (the netpoller's epoll fd and its eventfd; since Go 1.25
	// the cgroup CPU quota files it rereads for GOMAXPROCS), and their
	// numbers are not known to us; closing one breaks the runtime. Marking
	// an fd close-on-exec is harmless to the runtime, whose fds are
	// close-on-exec already. So this process, which execs right after,
	// marks every fd above 2 close-on-exec (fds a shell or init script left
	// open without FD_CLOEXEC reach us through the first exec) and passes
	// the daemon exactly stdin, stdout, stderr and the report pipe. The
	// daemon thus starts with no stray fd, and Detach need not close any.
	if err := closeOnExecFrom(3); err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	env := withoutEnv(os.Environ(), envIntermediate, EnvDaemonized, envReportFD)
	env = append(env, EnvDaemonized+"=1", envReportFD+"="+strconv.Itoa(reportFD))
	p, err := os.StartProcess(selfPath(), os.Args, &os.ProcAttr{
		Env:   env,
		Files: []*os.File{null, null, null, rep},
		// No Setsid, no Setpgid: the daemon stays in this process's session
		// and group, so it is not a session leader.
		Sys: &syscall.SysProcAttr{},
	})
	if err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	// Best effort: the pid lets Daemonize name the daemon if it times out.
	writeMsg(rep, "child "+strconv.Itoa(p.Pid))
	// Not waited for: this process exits now and the daemon is reparented.
	p.Release()
	return nil
}

// closeOnExecFrom sets FD_CLOEXEC on every fd >= from.
func closeOnExecFrom(from int) error {
	err := unix.CloseRange(uint(from), ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	// CLOSE_RANGE_CLOEXEC needs Linux 5.11; walk /proc/self/fd before that.
	if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("close_range: %w", err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list open fds: %w", err)
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= from {
			// The fd of the directory read above is closed by now: EBADF.
			unix.CloseOnExec(fd)
		}
	}
	return nil
}

// Daemonized reports whether this process is the daemon started by
// Daemonize: EnvDaemonized is "1". It stays true after Detach. Anything the
// daemon starts inherits the variable unless it is removed from the child's
// environment.
func Daemonized() bool {
	return os.Getenv(EnvDaemonized) == "1"
}

// daemonReportFD returns the report fd named in the environment, checked to
// be an open pipe.
func daemonReportFD() (int, error) {
	if !Daemonized() {
		return -1, errors.New("not daemonized")
	}
	v, ok := os.LookupEnv(envReportFD)
	if !ok {
		return -1, fmt.Errorf("%s=1 but %s is not set: not started by Daemonize, or Detach already called", EnvDaemonized, envReportFD)
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return -1, fmt.Errorf("bad %s=%q", envReportFD, v)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return -1, fmt.Errorf("report fd %d: %w", fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return -1, fmt.Errorf("report fd %d is not a pipe", fd)
	}
	return fd, nil
}

// Detach, in the daemon, finishes becoming one: chdir("/") so that no
// mount is kept busy, umask(027), and stdin, stdout and stderr onto
// /dev/null (they already are when started by Daemonize; this also covers
// anyone who points them elsewhere). It closes no fd: the daemon was
// started with none but those and the report pipe (see ContinueDaemonize).
// It removes the report fd's variable from the environment, so call it
// once.
//
// It returns the Report to send once start-up is over (PID file locked,
// sockets bound, privileges dropped). Outside a daemon (Daemonized is
// false) it does nothing and returns (nil, nil). When EnvDaemonized is set
// but there is no valid report pipe, it changes nothing and returns an
// error.
func Detach() (*Report, error) {
	if !Daemonized() {
		return nil, nil
	}
	fd, err := daemonReportFD()
	if err != nil {
		return nil, fmt.Errorf("detach: %w", err)
	}
	unix.CloseOnExec(fd)
	if err := os.Chdir("/"); err != nil {
		return nil, fmt.Errorf("detach: %w", err)
	}
	unix.Umask(0o027)
	null, err := unix.Open(os.DevNull, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("detach: open %s: %w", os.DevNull, err)
	}
	defer unix.Close(null)
	for std := 0; std <= 2; std++ {
		// dup3 without O_CLOEXEC: children inherit /dev/null as stdio.
		if err := unix.Dup3(null, std, 0); err != nil {
			return nil, fmt.Errorf("detach: stdio fd %d onto %s: %w", std, os.DevNull, err)
		}
	}
	os.Unsetenv(envReportFD)
	return &Report{f: os.NewFile(uintptr(fd), "report")}, nil
}

// Report is the daemon's end of the pipe to the waiting `jobdaemon start`.
// Exactly one of Ready and Fail should be called; the first call closes the
// pipe and later calls do nothing. The methods of a nil *Report do nothing,
// so a daemon can call them whether or not it was started by Daemonize.
type Report struct {
	mu sync.Mutex
	f  *os.File
}

// Ready tells Daemonize that start-up is over: it sends "ready <pid>" with
// this process's pid and closes the pipe, and Daemonize returns that pid.
// It returns an error if the message could not be sent (EPIPE when
// `jobdaemon start` is gone, for example after its timeout); the daemon may
// still go on running. A nil *Report, or a second call, returns nil.
func (r *Report) Ready() error {
	return r.send("ready " + strconv.Itoa(os.Getpid()))
}

// StartError is the error Daemonize returns when the daemon reported a
// failure: the exit status it exits with, and why.
type StartError struct {
	Code int    // the daemon's exit status, 1 to 255
	Text string // the daemon's explanation
}

func (e *StartError) Error() string { return "daemon failed to start: " + e.Text }

// Fail sends err's text and the exit status code (1 to 255; anything else
// is sent as 1), which Daemonize returns as a *StartError, and closes the
// pipe. The daemon should exit with code after it. A nil err is sent as
// "unknown error". A nil *Report, or a second call, does nothing.
func (r *Report) Fail(code int, err error) {
	text := "unknown error"
	if err != nil {
		text = err.Error()
	}
	// Quoting can grow a byte to four ("\x00"); 900 bytes stay below
	// PIPE_BUF however bad the text.
	if len(text) > 900 {
		text = text[:900] + "..."
	}
	if code < 1 || code > 255 {
		code = 1
	}
	r.send("fail " + strconv.Itoa(code) + " " + strconv.Quote(text))
}

func (r *Report) send(msg string) error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := writeMsg(r.f, msg)
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	r.f = nil
	if err != nil {
		return fmt.Errorf("report to the starting process: %w", err)
	}
	return nil
}

// writeMsg writes one message line with a single write, which is atomic
// for pipes up to PIPE_BUF (4096 bytes on Linux): messages of the two
// children never interleave. Fail keeps its text short enough.
func writeMsg(f *os.File, msg string) error {
	_, err := f.Write([]byte(msg + "\n"))
	return err
}

// withoutEnv returns env without the entries for the given names.
func withoutEnv(env []string, names ...string) []string {
	out := make([]string, 0, len(env)+2)
outer:
	for _, kv := range env {
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				continue outer
			}
		}
		out = append(out, kv)
	}
	return out
}

// selfPath returns the path to execute this program again: its file's
// path while that is still the running binary, so that the daemon's
// command name (ps, pgrep, top) is "jobdaemon" and not "exe"; otherwise,
// say after an upgrade replaced the file, /proc/self/exe, which is the
// running binary whatever happened on disk.
func selfPath() string {
	path, err := os.Executable()
	if err != nil {
		return "/proc/self/exe"
	}
	onDisk, err1 := os.Stat(path)
	running, err2 := os.Stat("/proc/self/exe")
	if err1 != nil || err2 != nil || !os.SameFile(onDisk, running) {
		return "/proc/self/exe"
	}
	return path
}
