package integration

// The classic daemon, as the init script starts it on a host without
// systemd: "jobdaemon start" forks twice and leaves the caller, its
// session and its terminal; takes the PID file and holds its lock for
// life; drops to [daemon] user; and refuses a second start. Each test
// looks at the result from outside, in /proc, as an operator would.
//
// The init script needs dash and start-stop-daemon, the privilege drop
// root, the lock checks flock(1): a missing one skips a test, except
// under CI=true, where it fails it (see distTool).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// classicNobody is the uid and gid of nobody and nogroup on Debian.
const classicNobody = 65534

// classicEnv is an env whose daemon the init script starts: a directory
// outside t.TempDir (whose parents are 0700, which a daemon dropped to
// nobody could not cross), with the PID file and the control socket in
// run/, which the init script creates.
type classicEnv struct {
	*env
	pidFile  string
	socket   string
	defaults string
	daemons  []classicProc // every daemon seen, for the cleanup
}

// classicConfig is the daemon's configuration: the paths are relative to
// the file's directory; daemonExtra goes into [daemon]. It logs to a file,
// since the classic daemon's default, syslog, may have no /dev/log here.
func classicConfig(script, daemonExtra string) string {
	return fmt.Sprintf(`[daemon]
pid_file = "run/jobdaemon.pid"
idle_interval = "100ms"
stop_timeout = "5s"
%s
[pool]
max_children = 2
job_timeout = "0s"
kill_grace = "500ms"
[job]
command = [%q, "{path}"]
env = { LANG = "C.UTF-8" }
max_attempts = 1
[source.spool]
dir = "spool"
rescan_interval = "1s"
[control]
socket = "run/control.sock"
[log]
target = "file"
file = "daemon.log"
format = "json"
level = "debug"
`, daemonExtra, script)
}

// classicNewEnv writes the job script, the configuration and the init
// script's defaults. With runAs set, the daemon drops to that user and
// group: the directory then belongs to them, so that the daemon can
// create its spool there after the drop, and everything on the way to
// the job script and the binary can be crossed by anyone. At the end of
// the test every daemon it started is stopped, and then killed, with
// everything left in its session.
func classicNewEnv(t *testing.T, runAs, runGroup string) *classicEnv {
	t.Helper()
	distTool(t, "start-stop-daemon")
	distTool(t, "dash")
	dir, err := os.MkdirTemp("", "jobdaemon-classic-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // runs last: after the stop below
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if runAs != "" {
		if err := os.Chown(dir, classicNobody, classicNobody); err != nil {
			t.Fatal(err)
		}
		classicTraversable(t, dir)
		binDir := filepath.Dir(binary)
		if err := os.Chmod(binDir, 0o755); err != nil {
			t.Fatal(err)
		}
		classicTraversable(t, binDir)
	}
	script := filepath.Join(dir, "job.sh")
	if err := os.WriteFile(script, []byte(jobScript), 0o755); err != nil {
		t.Fatal(err)
	}
	daemonExtra := ""
	runtimeUser, runtimeGroup := runAs, runGroup
	if runAs != "" {
		daemonExtra = fmt.Sprintf("user = %q\ngroup = %q\n", runAs, runGroup)
	} else {
		// As in TestDistInitScriptLifecycle: run/ belongs to whoever
		// runs the test, who is also the daemon's user.
		me, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		grp, err := user.LookupGroupId(me.Gid)
		if err != nil {
			t.Fatal(err)
		}
		runtimeUser, runtimeGroup = me.Username, grp.Name
	}
	c := &classicEnv{
		env: &env{t: t, dir: dir, config: filepath.Join(dir, "config.toml"), spool: filepath.Join(dir, "spool")},
	}
	c.pidFile = filepath.Join(dir, "run", "jobdaemon.pid")
	c.socket = filepath.Join(dir, "run", "control.sock")
	if err := os.WriteFile(c.config, []byte(classicConfig(script, daemonExtra)), 0o644); err != nil {
		t.Fatal(err)
	}
	c.defaults = distWriteDefaults(t, dir, map[string]string{
		"DAEMON":        binary,
		"CONFIG":        c.config,
		"PIDFILE":       c.pidFile,
		"STOP_TIMEOUT":  "15",
		"RUNTIME_DIR":   filepath.Join(dir, "run"),
		"RUNTIME_USER":  runtimeUser,
		"RUNTIME_GROUP": runtimeGroup,
	})
	t.Cleanup(c.cleanup)
	return c
}

// classicTraversable makes sure that every directory from / down to dir
// can be crossed by anyone: it adds the execute bits where they are
// missing (and changes no other bit: /tmp stays 1777).
func classicTraversable(t *testing.T, dir string) {
	t.Helper()
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o011 != 0o011 {
			if err := os.Chmod(d, fi.Mode()&(os.ModePerm|os.ModeSticky|os.ModeSetgid|os.ModeSetuid)|0o011); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: added the execute bits for group and others (was %v)", d, fi.Mode())
		}
		if d == "/" {
			return
		}
	}
}

// cleanup stops every daemon of the test: "stop --wait" first, then
// SIGKILL to each daemon and to whatever runs in its session (its jobs),
// and waits until they are all gone.
func (c *classicEnv) cleanup() {
	t := c.t
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stop := exec.CommandContext(ctx, binary, "stop", "--config", c.config, "--wait", "--timeout", "15s")
	stop.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	stop.Run() // nothing may run any more: its exit code does not matter
	var left []int
	for _, d := range c.daemons {
		if distAlive(d.pid) {
			t.Errorf("daemon %d still runs after \"jobdaemon stop --wait\": killing it", d.pid)
			syscall.Kill(d.pid, syscall.SIGKILL)
		}
		for _, p := range classicSession(d.sid) {
			syscall.Kill(p, syscall.SIGKILL)
			left = append(left, p)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range left {
		for distAlive(p) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if distAlive(p) {
			t.Errorf("process %d survives SIGKILL", p)
		}
	}
	if len(left) > 0 {
		t.Errorf("processes %v were left behind by the daemons %v", left, c.daemons)
	}
}

// init runs the init script and fails the test unless it exits with
// want; it returns its standard output and error.
func (c *classicEnv) init(want int, args ...string) string {
	c.t.Helper()
	code, stdout, stderr := distInit(c.t, c.defaults, args...)
	if code != want {
		c.t.Fatalf("init script %v: exit %d, want %d\nstdout: %s\nstderr: %s\ndaemon log:\n%s",
			args, code, want, stdout, stderr, c.log())
	}
	return stdout + stderr
}

// log returns the end of the daemon's log file.
func (c *classicEnv) log() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "daemon.log"))
	return tail(string(b))
}

// daemonPID returns the pid in the PID file, which must be a live
// process, and remembers it for the cleanup.
func (c *classicEnv) daemonPID() int {
	c.t.Helper()
	pid := distPID(c.t, c.pidFile)
	if pid == 0 || !distAlive(pid) {
		c.t.Fatalf("the PID file %s says %d, which does not run\nlog:\n%s", c.pidFile, pid, c.log())
	}
	c.track(pid)
	return pid
}

// track remembers a daemon and its session for the cleanup.
func (c *classicEnv) track(pid int) {
	st, err := classicStat(pid)
	if err != nil {
		c.t.Fatalf("daemon %d: %v", pid, err)
	}
	if !slices.ContainsFunc(c.daemons, func(d classicProc) bool { return d.pid == pid }) {
		c.daemons = append(c.daemons, st)
	}
}

// status runs "jobdaemon status --json", as the test's user (root for
// the tests that drop privileges).
func (c *classicEnv) status() statusReply {
	c.t.Helper()
	code, out := c.run("status", "--json")
	return decodeStatus(c.t, code, out, c.log)
}

// waitFor polls cond for up to 10 s and fails the test with the daemon's
// log if it never holds.
func (c *classicEnv) waitFor(what string, cond func() bool) {
	c.t.Helper()
	pollUntil(c.t, what, 10*time.Second, cond, c.log)
}

// classicProc is what /proc/PID/stat says of a process.
type classicProc struct {
	pid, ppid, pgrp, sid, tty int
	state                     byte
}

// classicStat reads /proc/PID/stat: the fields after the command name,
// which may hold spaces and parentheses, so it is cut at the last ')'.
func classicStat(pid int) (classicProc, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return classicProc{}, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return classicProc{}, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 5 {
		return classicProc{}, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	p := classicProc{pid: pid, state: f[0][0]}
	for j, dst := range []*int{&p.ppid, &p.pgrp, &p.sid, &p.tty} {
		if *dst, err = strconv.Atoi(f[j+1]); err != nil {
			return classicProc{}, fmt.Errorf("/proc/%d/stat field %d: %v", pid, j+4, err)
		}
	}
	return p, nil
}

// classicSession returns the live processes of session sid.
func classicSession(sid int) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := classicStat(pid); err == nil && p.sid == sid && p.state != 'Z' && p.state != 'X' {
			pids = append(pids, pid)
		}
	}
	return pids
}

// classicProcStatus returns the lines of /proc/PID/status (or of a task
// of it: path is "PID" or "PID/task/TID") by key, the value trimmed.
func classicProcStatus(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + path + "/status")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// classicCheckDropped checks that the process or task at path (see
// classicProcStatus) runs as nobody:nogroup in all four ids (real,
// effective, saved, filesystem), with no supplementary group but
// nogroup.
func classicCheckDropped(t *testing.T, what, path string) {
	t.Helper()
	st := classicProcStatus(t, path)
	want := strings.Repeat(strconv.Itoa(classicNobody)+"\t", 3) + strconv.Itoa(classicNobody)
	for _, key := range []string{"Uid", "Gid"} {
		if st[key] != want {
			t.Errorf("%s (/proc/%s): %s: %q, want %q", what, path, key, st[key], want)
		}
	}
	// nobody is in no group of /etc/group. The drop sets the groups
	// that getgrouplist gives (as initgroups(3) does), which list the
	// primary group too: nothing, or nogroup alone, is right; root's
	// group 0, or any other, is not.
	if g := st["Groups"]; g != "" && g != strconv.Itoa(classicNobody) {
		t.Errorf("%s (/proc/%s): Groups: %q, want none but %d", what, path, g, classicNobody)
	}
}

// classicExe returns the executable of pid, "" if it cannot be read.
func classicExe(pid int) string {
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return exe
}

// After "start" through the init script, the daemon is detached as a
// classic daemon must be: its parent is neither the test nor the
// process that ran "start" (gone by then, with the intermediate child);
// it is not a session leader, in a session of its own without a
// controlling terminal; it works from / with the umask 027, and its
// stdin, stdout and stderr are /dev/null.
func TestClassicDetached(t *testing.T) {
	c := classicNewEnv(t, "", "")
	c.init(0, "start")
	pid := c.daemonPID()
	st, err := classicStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	self, err := classicStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}

	// The parent: init (1) or a subreaper, never the test, nor a
	// jobdaemon process ("start", or the intermediate child).
	if st.ppid == os.Getpid() {
		t.Errorf("the daemon's parent is the test (pid %d)", st.ppid)
	}
	if exe := classicExe(st.ppid); exe == binary {
		t.Errorf("the daemon's parent %d is a jobdaemon process: \"start\" or the intermediate child did not exit", st.ppid)
	}
	t.Logf("daemon %d: parent %d (%s), process group %d, session %d; the test's session %d",
		pid, st.ppid, classicExe(st.ppid), st.pgrp, st.sid, self.sid)

	// "start", start-stop-daemon and the init script's shell are all
	// gone: no jobdaemon process is left in the test's session (the
	// tests of this package do not run in parallel).
	for _, p := range classicSession(self.sid) {
		if p != os.Getpid() && classicExe(p) == binary {
			t.Errorf("process %d in the test's session runs jobdaemon: the \"start\" process did not exit", p)
		}
	}

	// The session: its own, of which it is not the leader (the leader,
	// the intermediate child, has exited), and no controlling terminal.
	if st.sid == pid {
		t.Errorf("the daemon %d is a session leader: it could acquire a controlling terminal", pid)
	}
	if st.sid == self.sid {
		t.Errorf("the daemon is in the test's session %d", self.sid)
	}
	if members := classicSession(st.sid); !slices.Equal(members, []int{pid}) {
		t.Errorf("session %d holds %v, want the daemon %d alone (the intermediate child must be gone)", st.sid, members, pid)
	}
	if st.tty != 0 {
		t.Errorf("the daemon has the controlling terminal tty_nr %d, want 0", st.tty)
	}

	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err != nil || cwd != "/" {
		t.Errorf("the daemon's working directory is %q (%v), want /", cwd, err)
	}
	for fd := 0; fd <= 2; fd++ {
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd)); err != nil || target != os.DevNull {
			t.Errorf("the daemon's fd %d is %q (%v), want %s", fd, target, err, os.DevNull)
		}
	}
	// The report pipe to "start" is closed once the daemon is ready,
	// and no fd of the init script leaked in; no job runs: no pipe is
	// open.
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); strings.HasPrefix(target, "pipe:") {
			t.Errorf("the daemon holds fd %s open on %s: the report pipe, or an inherited fd", fd.Name(), target)
		}
	}
	if um := classicProcStatus(t, strconv.Itoa(pid))["Umask"]; um != "0027" {
		t.Errorf("the daemon's umask is %q, want 0027", um)
	}

	s := c.status()
	if s.Pid != pid || s.Manager != "classic" {
		t.Errorf("status: pid %d under %q, want pid %d under \"classic\"", s.Pid, s.Manager, pid)
	}
	// No [daemon] user: as root, it says that jobs run as root.
	rootWarning := slices.ContainsFunc(s.Warnings, func(w string) bool { return strings.Contains(w, "root") })
	if os.Geteuid() == 0 && !rootWarning {
		t.Errorf("running as root without [daemon] user, and status warns of nothing: %q", s.Warnings)
	}
	if os.Geteuid() != 0 && rootWarning {
		t.Errorf("running as uid %d, and status warns about root: %q", os.Geteuid(), s.Warnings)
	}

	c.init(0, "stop")
	if distAlive(pid) {
		t.Errorf("the daemon %d still runs after stop", pid)
	}
}

// Started as root with [daemon] user = "nobody" and group = "nogroup",
// the daemon, every thread of it, and every job it runs have uid and
// gid 65534 in all four ids and no other group; status has no "running
// as root" warning; and the daemon, as nobody, can still remove the PID
// file and the socket root created at start.
func TestClassicPrivilegeDrop(t *testing.T) {
	needRoot(t)
	if _, err := user.Lookup("nobody"); err != nil {
		t.Fatalf("no user nobody: %v", err)
	}
	if _, err := user.LookupGroup("nogroup"); err != nil {
		t.Fatalf("no group nogroup: %v", err)
	}
	c := classicNewEnv(t, "nobody", "nogroup")
	c.init(0, "start")
	pid := c.daemonPID()

	// Two jobs that sleep, submitted through the socket: the daemon
	// writes them into its spool as nobody.
	for _, id := range []string{"sleeper-1", "sleeper-2"} {
		cmd := c.cmd("submit", "--id", id, "-")
		cmd.Stdin = strings.NewReader("sleep\n")
		if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != id {
			t.Fatalf("submit %s: %v\n%s\nlog:\n%s", id, err, out, c.log())
		}
	}
	var s statusReply
	c.waitFor("two jobs running", func() bool {
		s = c.status()
		n := 0
		for _, slot := range s.Slots {
			if slot.Pid > 0 && slot.JobID != "" && distAlive(slot.Pid) {
				n++
			}
		}
		return n == 2
	})

	classicCheckDropped(t, "the daemon", strconv.Itoa(pid))
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/task/%s", pid, task.Name())); err == nil {
			classicCheckDropped(t, "daemon thread "+task.Name(), fmt.Sprintf("%d/task/%s", pid, task.Name()))
		}
	}
	for _, slot := range s.Slots {
		classicCheckDropped(t, "job "+slot.JobID, strconv.Itoa(slot.Pid))
		if p, err := classicStat(slot.Pid); err != nil || p.ppid != pid {
			t.Errorf("job %s (pid %d): parent %d (%v), want the daemon %d", slot.JobID, slot.Pid, p.ppid, err, pid)
		}
	}

	if s.User != "nobody" {
		t.Errorf("status says the daemon runs as %q, want nobody", s.User)
	}
	for _, w := range s.Warnings {
		if strings.Contains(w, "root") {
			t.Errorf("status warns about root after the drop: %q", w)
		}
	}
	if out := c.init(0, "status"); strings.Contains(out, "running as root") || !strings.Contains(out, "user nobody") {
		t.Errorf("init script status after the drop:\n%s", out)
	}
	if !strings.Contains(c.log(), `"msg":"dropped privileges"`) {
		t.Errorf("the log does not say that the daemon dropped privileges:\n%s", c.log())
	}
	// The log file, opened as root, was handed over: USR1 reopens it.
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	c.waitFor("log reopened as nobody", func() bool {
		return strings.Contains(c.log(), "log file reopened") || strings.Contains(c.log(), "cannot reopen")
	})
	if strings.Contains(c.log(), "cannot reopen") {
		t.Errorf("the daemon, as nobody, cannot reopen its log file:\n%s", c.log())
	}

	// The stop, through the daemon itself rather than the init script
	// (which removes the PID file of a daemon it killed): the daemon,
	// as nobody, removes the PID file and the socket that root created.
	if code, out := c.run("stop", "--wait", "--timeout", "15s"); code != 0 {
		t.Fatalf("stop --wait: exit %d\n%s\nlog:\n%s", code, out, c.log())
	}
	for _, slot := range s.Slots {
		c.waitFor(fmt.Sprintf("job %d gone", slot.Pid), func() bool { return !distAlive(slot.Pid) })
	}
	for _, p := range []string{c.pidFile, c.socket} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s is left after the stop\nlog:\n%s", p, c.log())
		}
	}
	if strings.Contains(c.log(), "cannot remove the PID file") {
		t.Errorf("the daemon could not remove its PID file:\n%s", c.log())
	}
	c.init(3, "status")
}

// A second "jobdaemon start" on the same configuration, not through the
// init script (which takes "already running" for success), is refused:
// exit 1, "already running (pid N)" with the running daemon's pid, which
// runs on untouched.
func TestClassicSecondStartRefused(t *testing.T) {
	c := classicNewEnv(t, "", "")
	c.init(0, "start")
	pid := c.daemonPID()

	code, out := c.run("start")
	if code == 0 {
		// A second daemon may be running now: remember it for the cleanup.
		if m := regexp.MustCompile(`started \(pid (\d+)\)`).FindStringSubmatch(out); m != nil {
			if p, _ := strconv.Atoi(m[1]); p > 0 && distAlive(p) {
				c.track(p)
			}
		}
		t.Fatalf("a second start succeeded:\n%s", out)
	}
	if code != 1 {
		t.Errorf("a second start: exit %d, want 1\n%s", code, out)
	}
	if want := fmt.Sprintf("already running (pid %d)", pid); !strings.Contains(out, want) {
		t.Errorf("a second start says %q, want %q", out, want)
	}
	if p := distPID(t, c.pidFile); p != pid || !distAlive(pid) {
		t.Errorf("after the refused start: PID file %d (daemon %d alive: %v)", p, pid, distAlive(pid))
	}
	if s := c.status(); s.Pid != pid {
		t.Errorf("status answers for pid %d, want %d", s.Pid, pid)
	}
	c.init(0, "stop")
}

// classicTryLock tries LOCK_EX|LOCK_NB on a fresh fd of path: nil if it
// got the lock (and released it at once).
func classicTryLock(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close() // releases a lock we got
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// The PID file's lock is what says the daemon runs: (a) the daemon holds
// it, so that flock(1) and flock(2) from elsewhere fail; (b) a PID file
// left behind, with the pid of a dead process and no lock, is taken over
// at the next start, which logs it; (c) a file whose lock a live process
// holds makes start fail with "already running" and that process's pid.
func TestClassicPIDFileLock(t *testing.T) {
	flock := distTool(t, "flock")
	c := classicNewEnv(t, "", "")
	c.init(0, "start")
	pid := c.daemonPID()

	// (a) The lock is held.
	if code, out := distRun(t, exec.Command(flock, "-n", c.pidFile, "true")); code == 0 {
		t.Errorf("flock -n on the PID file of a running daemon succeeded:\n%s", out)
	}
	if err := classicTryLock(c.pidFile); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Errorf("flock(LOCK_EX|LOCK_NB) on the PID file of a running daemon: %v, want EWOULDBLOCK", err)
	}
	c.init(0, "stop")
	if distAlive(pid) {
		t.Fatalf("the daemon %d still runs after stop", pid)
	}

	// (b) A stale file: the pid of a process that has been reaped.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := dead.Process.Pid
	if err := syscall.Kill(stale, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("pid %d of a reaped process exists again (%v): try again", stale, err)
	}
	if err := os.WriteFile(c.pidFile, []byte(strconv.Itoa(stale)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.init(0, "start")
	pid2 := c.daemonPID()
	if pid2 == stale || pid2 == pid {
		t.Fatalf("after the takeover the PID file says %d (stale %d, old daemon %d)", pid2, stale, pid)
	}
	if s := c.status(); s.Pid != pid2 {
		t.Errorf("status answers for pid %d, the PID file says %d", s.Pid, pid2)
	}
	if err := classicTryLock(c.pidFile); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Errorf("flock on the taken-over PID file: %v, want EWOULDBLOCK", err)
	}
	took := regexp.MustCompile(`"msg":"took over a stale PID file".*"stale_pid":` + strconv.Itoa(stale) + `\b`)
	c.waitFor("the takeover logged", func() bool { return took.MatchString(c.log()) })
	c.init(0, "stop")
	if distAlive(pid2) {
		t.Fatalf("the daemon %d still runs after stop", pid2)
	}

	// (c) A live holder: flock(1) holds the lock of a PID file with its
	// own pid, while its child sleeps.
	if err := os.WriteFile(c.pidFile, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	holder := exec.Command(flock, c.pidFile, "sleep", "30")
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { holder.Wait(); close(waited) }()
	t.Cleanup(func() {
		syscall.Kill(-holder.Process.Pid, syscall.SIGKILL) // flock and sleep
		<-waited
	})
	c.waitFor("flock(1) holds the lock", func() bool {
		return errors.Is(classicTryLock(c.pidFile), syscall.EWOULDBLOCK)
	})
	// The holder's pid, written the way every daemon writes its own:
	// flock(1) opened the inode that is at the path, so the content may
	// be rewritten in place.
	if err := os.WriteFile(c.pidFile, []byte(strconv.Itoa(holder.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := c.run("start")
	if code == 0 {
		if m := regexp.MustCompile(`started \(pid (\d+)\)`).FindStringSubmatch(out); m != nil {
			if p, _ := strconv.Atoi(m[1]); p > 0 && distAlive(p) {
				c.track(p)
			}
		}
		t.Fatalf("start succeeded while flock(1) %d holds the PID file:\n%s", holder.Process.Pid, out)
	}
	if want := fmt.Sprintf("already running (pid %d)", holder.Process.Pid); code != 1 || !strings.Contains(out, want) {
		t.Errorf("start with a live holder: exit %d, %q; want exit 1 and %q", code, out, want)
	}
	if p := distPID(t, c.pidFile); p != holder.Process.Pid {
		t.Errorf("the refused start changed the PID file: %d, want %d", p, holder.Process.Pid)
	}
	if _, err := os.Lstat(c.socket); err == nil {
		t.Errorf("the refused start left a control socket")
	}
}

// An invalid configuration: start through the init script exits 6 (LSB
// "not configured") and the output names the line of a syntax error.
// TestDistInitScriptLifecycle checks the same for an unknown key.
func TestClassicBrokenConfigLine(t *testing.T) {
	c := classicNewEnv(t, "", "")
	good, err := os.ReadFile(c.config)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(good), "\n")
	n := slices.Index(lines, "[pool]")
	if n < 0 {
		t.Fatal("the config has no [pool] line")
	}
	lines[n] = "[pool"
	if err := os.WriteFile(c.config, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	// The parser notices the missing ']' at the end of the line, or at the
	// start of the next one: either line is a fair answer.
	out := c.init(6, "start")
	at := regexp.MustCompile(regexp.QuoteMeta(c.config) + `:(\d+)`).FindStringSubmatch(out)
	if at == nil {
		t.Fatalf("start with a broken config does not name %s:LINE:\n%s", c.config, out)
	}
	if l, _ := strconv.Atoi(at[1]); l != n+1 && l != n+2 {
		t.Errorf("start with a broken config names line %d, want %d:\n%s", l, n+1, out)
	}
	if p := distPID(t, c.pidFile); p != 0 && distAlive(p) {
		c.track(p)
		t.Errorf("a daemon %d runs after a failed start", p)
	}
}
