package integration

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pressureScript: "ok" notes its run, without a fork (a job that cannot
// fork fails by itself); "slow" takes a moment too; "bomb" forks
// sleeps until its user's process limit stops it (in a subshell, which
// dash leaves when a fork fails), takes the slot the subshell gave back,
// and holds them all until its timeout ends them.
const pressureScript = `#!/bin/sh
read -r what arg || true
case "$what" in
ok) echo "$JOB_ID $JOB_ATTEMPT" >>"$RUNS" ;;
slow) echo "$JOB_ID $JOB_ATTEMPT" >>"$RUNS"; sleep 0.1 ;;
bomb) ( while :; do sleep 3594 & done ) 2>/dev/null; sleep 3594 & echo "forked"; exec sleep 3594 ;;
*) echo "unknown $what" >&2; exit 64 ;;
esac
`

// startLimited starts "jobdaemon run" under prlimit(1), with the limits
// given (such as "--nofile=40"), and bin as the binary.
func (e *env) startLimited(bin string, limits ...string) *daemon {
	e.t.Helper()
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		e.t.Fatalf("prlimit (util-linux) is needed: %v", err)
	}
	args := append(limits, bin, "run", "--config", e.config)
	c := exec.Command(prlimit, args...)
	c.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	return e.launch(c)
}

// checkRanOnce checks that every job of ids ended in done/ after exactly
// one run: a start that failed was not a run, and burnt no attempt.
func checkRanOnce(t *testing.T, e *env, runsFile string, ids []string) {
	t.Helper()
	runs := readRuns(t, runsFile)
	for _, id := range ids {
		where, r := e.result(id)
		if where != "done" || r.Attempts != 1 || runs[id] != 1 {
			t.Errorf("%s: in %q after %d attempts and %d runs; want done after one", id, where, r.Attempts, runs[id])
		}
	}
}

// When the jobs' user has used up its process limit (a job forks without
// end), the next jobs cannot start: the fork fails with EAGAIN. They go
// back unharmed, the daemon backs off and says so in its log and status,
// and runs them once the limit allows; the daemon, another user, keeps
// making threads and answering. The daemon drops from root to a user of
// its own keeping the capabilities to run jobs as theirs, which takes a
// build without cgo.
func TestFaultForkFails(t *testing.T) {
	needRoot(t)
	bin, err := faultBinaryNoCgo()
	if err != nil {
		t.Fatalf("build without cgo: %v", err)
	}
	killSleepers(t, 3594)
	jobUser, daemonUser := lookupPair(t)
	dir := publicDir(t, daemonUser)
	e, mark := newScriptEnv(t, dir, pressureScript, fmt.Sprintf(`
[daemon]
user = %q
[pool]
max_children = 4
job_timeout = "3s"
kill_grace = "200ms"
[job]
user = %q
max_attempts = 1
`, daemonUser.Username, jobUser.Username), "RUNS", "runs")
	t.Cleanup(func() { nothingRuns(t, mark) })
	os.WriteFile(filepath.Join(dir, "runs"), nil, 0o666)
	os.Chmod(filepath.Join(dir, "runs"), 0o666)
	e.put("bomb", "bomb\n")
	chownTree(t, e.spool, daemonUser)
	d := e.startLimited(bin, "--nproc=60:60")
	e.waitFor("the bomb's processes", d, func() bool { return strings.Contains(d.out.String(), `"msg":"forked"`) })
	var ids []string
	for i := range 12 {
		id := fmt.Sprintf("ok-%02d", i)
		ids = append(ids, id)
		e.put(id, "ok\n")
	}
	chownTree(t, e.spool, daemonUser)
	e.waitFor("a job could not start", d, func() bool { return strings.Contains(d.out.String(), "could not start job") })
	// The daemon answers while its jobs' user is out of processes.
	if s := e.status(); s.State != "running" {
		t.Errorf("status during the fork bomb: %+v", s)
	}
	pollUntil(t, "the jobs done", 30*time.Second, func() bool { return e.count("done") == len(ids) },
		func() string { return d.out.String() + fmt.Sprint(d.ProcessState) })
	s := e.status()
	if s.NotStarted == 0 {
		t.Errorf("status counts no job that could not start: %+v", s)
	}
	checkRanOnce(t, e, filepath.Join(dir, "runs"), ids)
	e.waitFiled("bomb", d)
	if where, r := e.result("bomb"); where != "failed" || !r.TimedOut {
		t.Errorf("the bomb: in %q, %+v", where, r)
	}
	if !strings.Contains(d.out.String(), "resource temporarily unavailable") {
		t.Errorf("the log does not say why the jobs could not start:\n%s", tail(d.out.String()))
	}
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Errorf("after TERM: %v\n%s", err, tail(d.out.String()))
	}
	t.Logf("%d starts failed and went back", s.NotStarted)
}

// With few file descriptors left, jobs cannot start (EMFILE in the pipes,
// the job file): they go back unharmed, and run when descriptors free up,
// each once. The daemon itself goes on.
func TestFaultFdsExhausted(t *testing.T) {
	dir := t.TempDir()
	e, mark := newScriptEnv(t, dir, pressureScript, `
[pool]
max_children = 8
job_timeout = "20s"
[job]
max_attempts = 1
`, "RUNS", "runs")
	t.Cleanup(func() { nothingRuns(t, mark) })
	var ids []string
	for i := range 40 {
		id := fmt.Sprintf("ok-%02d", i)
		ids = append(ids, id)
		e.put(id, "slow\n")
	}
	d := e.startLimited(binary, "--nofile=44:44")
	pollUntil(t, "the jobs done", 60*time.Second, func() bool { return e.count("done") == len(ids) },
		func() string { return tail(d.out.String()) })
	s := e.status()
	checkRanOnce(t, e, filepath.Join(dir, "runs"), ids)
	if s.NotStarted == 0 || !strings.Contains(d.out.String(), "too many open files") {
		t.Errorf("no job was refused a descriptor (%d not started): the limit does not bite\n%s", s.NotStarted, tail(d.out.String()))
	}
	if m := e.curl("http://localhost/metrics"); !strings.Contains(m, fmt.Sprintf("jobdaemon_job_start_failures_total %d\n", s.NotStarted)) {
		t.Errorf("/metrics does not count the starts that failed:\n%s", lineWith(m, "jobdaemon_job_start"))
	}
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Errorf("after TERM: %v\n%s", err, tail(d.out.String()))
	}
	t.Logf("%d starts failed and went back", s.NotStarted)
}

// The spool's disk full: results cannot be filed (nor claims made), and
// wait in running/; once there is room again, every job is filed, each
// having run once.
func TestFaultSpoolDiskFull(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	e, mark := newScriptEnv(t, dir, pressureScript, `
[pool]
max_children = 4
[job]
max_attempts = 1
`, "RUNS", "runs")
	t.Cleanup(func() { nothingRuns(t, mark) })
	if err := os.Mkdir(e.spool, 0o750); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k,mode=0750", "tmpfs", e.spool).CombinedOutput(); err != nil {
		t.Fatalf("mount a small tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", e.spool).Run() })
	var ids []string
	for i := range 20 {
		id := fmt.Sprintf("ok-%02d", i)
		ids = append(ids, id)
		e.put(id, "slow\n")
	}
	filler := filepath.Join(e.spool, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			break // ENOSPC
		}
	}
	f.Close()
	d := e.start()
	e.waitFor("a write refused", d, func() bool { return strings.Contains(d.out.String(), "no space left on device") })
	time.Sleep(500 * time.Millisecond)
	if s := e.status(); s.State != "running" {
		t.Errorf("status with the disk full: %+v", s)
	}
	os.Remove(filler)
	pollUntil(t, "the jobs filed", 60*time.Second, func() bool { return e.count("done") == len(ids) },
		func() string { return tail(d.out.String()) })
	checkRanOnce(t, e, filepath.Join(dir, "runs"), ids)
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Errorf("after TERM: %v\n%s", err, tail(d.out.String()))
	}
}

// The spool deleted under a running daemon: it says so, does not spin,
// still answers, and stops cleanly.
func TestFaultSpoolDeleted(t *testing.T) {
	dir := t.TempDir()
	e, _ := newScriptEnv(t, dir, pressureScript, "[job]\nmax_attempts = 1\n", "RUNS", "runs")
	e.put("first", "ok\n")
	d := e.start()
	e.waitFor("the first job done", d, func() bool { return e.count("done") == 1 })
	if err := os.RemoveAll(e.spool); err != nil {
		t.Fatal(err)
	}
	e.waitFor("the error logged", d, func() bool { return strings.Contains(d.out.String(), "no such file or directory") })
	before := cpuTime(t, d.Process.Pid)
	time.Sleep(3 * time.Second)
	if used := cpuTime(t, d.Process.Pid) - before; used > 1500*time.Millisecond {
		t.Errorf("the daemon used %v of CPU in 3 s without its spool: a busy loop", used)
	}
	if s := e.status(); s.State != "running" {
		t.Errorf("status without the spool: %+v", s)
	}
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Errorf("after TERM: %v\n%s", err, tail(d.out.String()))
	}
}

// The configuration deleted, or replaced by a FIFO, before a reload: the
// reload is refused at once and the daemon runs on with what it had;
// with the file back, a reload works.
func TestFaultConfigGoneBeforeReload(t *testing.T) {
	dir := t.TempDir()
	e, _ := newScriptEnv(t, dir, pressureScript, "[job]\nmax_attempts = 1\n", "RUNS", "runs")
	d := e.start()
	e.waitFor("ready", d, func() bool { return strings.Contains(d.out.String(), `"msg":"ready"`) })
	saved, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(e.config)
	d.Process.Signal(syscall.SIGHUP)
	e.waitFor("the reload refused", d, func() bool {
		return strings.Count(d.out.String(), "reload refused") == 1 && strings.Contains(d.out.String(), "cannot read the configuration file")
	})
	if err := syscall.Mkfifo(e.config, 0o644); err != nil {
		t.Fatal(err)
	}
	d.Process.Signal(syscall.SIGHUP)
	e.waitFor("the second reload refused", d, func() bool {
		return strings.Count(d.out.String(), "reload refused") == 2 && strings.Contains(d.out.String(), "not a regular file but a FIFO")
	})
	os.Remove(e.config)
	os.WriteFile(e.config, saved, 0o644)
	e.put("after", "ok\n")
	e.waitFor("a job after the refusals", d, func() bool { return e.count("done") == 1 })
	if code, out := e.run("reload"); code != 0 {
		t.Errorf("reload with the file back: exit %d\n%s", code, out)
	}
	if s := e.status(); s.ReloadsFailed != 2 || s.Reloads != 1 {
		t.Errorf("status: %d reloads, %d refused; want 1 and 2", s.Reloads, s.ReloadsFailed)
	}
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Errorf("after TERM: %v\n%s", err, tail(d.out.String()))
	}
}

// cpuTime is the user and system time of pid so far.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ut, err1 := strconv.Atoi(f[11])
	st, err2 := strconv.Atoi(f[12])
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: utime %q, stime %q", pid, f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// lookupPair returns two users of the base system other than root and
// nobody, whom other tests use: one for jobs, one for the daemon.
func lookupPair(t *testing.T) (jobUser, daemonUser *user.User) {
	t.Helper()
	var err error
	if jobUser, err = user.Lookup("games"); err != nil {
		t.Fatalf("the user games (base-passwd) is needed: %v", err)
	}
	if daemonUser, err = user.Lookup("daemon"); err != nil {
		t.Fatalf("the user daemon (base-passwd) is needed: %v", err)
	}
	return jobUser, daemonUser
}

// publicDir makes a directory outside t.TempDir, whose parents are 0700,
// that every user may cross, owned by owner (nil: root): the home of a
// daemon that drops its privileges, or runs jobs as another user.
func publicDir(t *testing.T, owner *user.User) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "jobdaemon-fault-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	classicTraversable(t, dir)
	if owner != nil {
		uid, _ := strconv.Atoi(owner.Uid)
		gid, _ := strconv.Atoi(owner.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// chownTree gives dir and what is in it to u.
func chownTree(t *testing.T, dir string, u *user.User) {
	t.Helper()
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			err = os.Lchown(p, uid, gid)
		}
		if errors.Is(err, fs.ErrNotExist) && p != dir {
			// A running daemon claimed it between the listing and here:
			// it could, so it needs nothing from us.
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatalf("give %s to %s: %v", dir, u.Username, err)
	}
}
