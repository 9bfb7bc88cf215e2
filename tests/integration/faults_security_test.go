package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// attackScript is a job taken over by its input: "hold" keeps a job's
// file in running/ for the other to go after; "attack" tries everything a
// job must not be able to do, and says what it could: a line "BREACH x"
// for each attack that worked, "blocked x" otherwise, then its
// capabilities, environment and descriptors.
const attackScript = `#!/bin/sh
read -r what arg || true
case "$what" in
hold) echo "holding"; exec sleep 3596 ;;
attack)
	try() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "BREACH $name"; else echo "blocked $name"; fi; }
	try control-status curl -sS --fail --max-time 3 --unix-socket "$DIR/control.sock" http://localhost/v1/status
	try control-stop curl -sS --fail --max-time 3 -X POST --unix-socket "$DIR/control.sock" "http://localhost/v1/stop?mode=immediate"
	try log-read cat "$DIR/daemon.log"
	try log-write sh -c "echo forged >>'$DIR/daemon.log'"
	try config-read cat "$DIR/config.toml"
	try payload-read cat "$DIR/spool/running/holder"
	try running-list ls "$DIR/spool/running"
	try incoming-write sh -c "echo x >'$DIR/spool/incoming/evil'"
	try state-list ls "$DIR/jobdaemon.state"
	pid=$(cat "$DIR/jobdaemon.pid")
	try signal-daemon kill -TERM "$pid"
	try signal-stop kill -STOP "$pid"
	try proc-environ cat "/proc/$pid/environ"
	procs=/sys/fs/cgroup/unified/cgroup.procs; [ -e "$procs" ] || procs=/sys/fs/cgroup/cgroup.procs
	try cgroup-escape sh -c "echo $$ >$procs"
	echo "caps $(grep CapEff /proc/self/status | tr -d '\t')"
	echo "env $(env | cut -d= -f1 | sort | tr '\n' ' ')"
	echo "fds $(ls /proc/self/fd | tr '\n' ' ')"
	;;
*) echo "unknown $what" >&2; exit 64 ;;
esac
`

// A job that runs as a user of its own, and tries: the control socket,
// the daemon's log and configuration, another job's file, the spool, the
// daemon's state, signalling and looking at the daemon, leaving its
// cgroup. None works; it has no capability, sees none of the daemon's
// environment and holds no descriptor but its standard ones. The daemon
// is a user of its own too, started as root, which drops and keeps only
// the capabilities to start and stop the jobs (a build without cgo).
func TestFaultJobAttacks(t *testing.T) {
	needRoot(t)
	distTool(t, "curl")
	bin, err := faultBinaryNoCgo()
	if err != nil {
		t.Fatalf("build without cgo: %v", err)
	}
	killSleepers(t, 3596)
	jobUser, daemonUser := lookupPair(t)
	dir := publicDir(t, daemonUser)
	e, mark := newScriptEnv(t, dir, attackScript, fmt.Sprintf(`
[daemon]
user = %q
[pool]
max_children = 2
job_timeout = "30s"
[job]
user = %q
max_attempts = 1
[log]
target = "file"
file = "daemon.log"
format = "json"
`, daemonUser.Username, jobUser.Username), "DIR", ".")
	os.Chmod(e.config, 0o640) // root:root, as the package's is root:jobdaemon
	t.Cleanup(func() { nothingRuns(t, mark) })
	e.put("holder", "hold\n")
	chownTree(t, e.spool, daemonUser)
	d := e.startLimitedEnv(bin, []string{"DAEMON_SECRET=hunter2"})
	logs := func() string { b, _ := os.ReadFile(filepath.Join(dir, "daemon.log")); return tail(string(b)) }
	pollUntil(t, "the holder runs", 20*time.Second, func() bool { return e.count("running") == 1 }, logs)
	// A "blocked" must mean refused, not missing: every target is there.
	for _, target := range []string{"control.sock", "daemon.log", "config.toml", "spool/running/holder", "jobdaemon.state", "jobdaemon.pid"} {
		if _, err := os.Stat(filepath.Join(dir, target)); err != nil {
			t.Fatalf("a target of the attack is missing, so its refusal would prove nothing: %v", err)
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.procs"); err != nil {
		if _, err := os.Stat("/sys/fs/cgroup/cgroup.procs"); err != nil {
			t.Fatalf("no cgroup.procs at the top of a cgroup v2 hierarchy to attack: %v", err)
		}
	}
	e.put("attacker", "attack\n")
	chownTree(t, filepath.Join(e.spool, "incoming"), daemonUser)
	pollUntil(t, "the attacker filed", 30*time.Second, func() bool { where, _ := e.result("attacker"); return where != "" }, logs)
	where, r := e.result("attacker")
	if where != "done" {
		t.Fatalf("the attacker ended in %q: %+v", where, r)
	}
	t.Logf("the attacker's report:\n%s", r.Output)
	for _, attack := range []string{"control-status", "control-stop", "log-read", "log-write", "config-read", "payload-read",
		"running-list", "incoming-write", "state-list", "signal-daemon", "signal-stop", "proc-environ", "cgroup-escape"} {
		if !strings.Contains(r.Output, "blocked "+attack+"\n") {
			t.Errorf("attack %s was not blocked", attack)
		}
	}
	if strings.Contains(r.Output, "BREACH") {
		t.Errorf("breaches:\n%s", r.Output)
	}
	if !strings.Contains(r.Output, "caps CapEff:0000000000000000\n") {
		t.Errorf("the job has capabilities:\n%s", r.Output)
	}
	envLine := lineWith(r.Output, "env ")
	for _, leak := range []string{"DAEMON_SECRET", "NOTIFY_SOCKET", "LISTEN_", "JOBDAEMON_", "JOB_PATH"} {
		if strings.Contains(envLine, leak) {
			t.Errorf("the job's environment has %s: %s", leak, envLine)
		}
	}
	if got, want := strings.Fields(strings.TrimPrefix(envLine, "env ")), []string{"DIR", "JD_FAULT_MARK", "JOB_ATTEMPT", "JOB_ID", "JOB_SLOT", "PWD"}; !slices.Equal(got, want) {
		t.Errorf("the job's environment: %v, want %v", got, want)
	}
	if fds := lineWith(r.Output, "fds "); fds != "fds 0 1 2 3 " { // 3 is ls's own
		t.Errorf("the job's descriptors: %q", fds)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "daemon.log")); bytes.Contains(b, []byte("forged")) {
		t.Error("the job wrote into the daemon's log")
	}
	if s := e.status(); s.State != "running" || s.Busy != 1 {
		t.Errorf("the daemon after the attack: %+v", s)
	}
	if len(e.status().Warnings) != 0 {
		t.Errorf("warnings with jobs of their own user: %q", e.status().Warnings)
	}
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Errorf("after TERM: %v\n%s", err, logs())
	}
}

// startLimitedEnv is startLimited without limits, with more variables in
// the daemon's environment.
func (e *env) startLimitedEnv(bin string, vars []string) *daemon {
	e.t.Helper()
	c := exec.Command(bin, "run", "--config", e.config)
	c.Env = append(append(os.Environ(), "GORACE=atexit_sleep_ms=0"), vars...)
	return e.launch(c)
}

func lineWith(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// A symbolic link planted at each path the daemon opens, creates or
// writes by its configuration: the daemon refuses to start, and what the
// link points at is left untouched.
func TestFaultPlantedSymlinks(t *testing.T) {
	for _, tc := range []struct {
		name, key, path, want string
		dir                   bool // the link points at a directory
	}{
		{"pid file", "", "jobdaemon.pid", "symbolic link", false},
		{"log file", "[log]\ntarget = \"file\"\nfile = \"daemon.log\"\nformat = \"json\"\n", "daemon.log", "symbolic link", false},
		{"job log", "[log]\njoblog = \"jobs.log\"\nformat = \"json\"\n", "jobs.log", "symbolic link", false},
		{"control socket", "", "control.sock", "not a socket", false},
		{"spool running/", "", "spool/running", "symbolic link", true},
		{"spool failed/", "", "spool/failed", "symbolic link", true},
		{"state directory", "[daemon]\nstate_dir = \"state\"\n", "state", "symbolic link", true},
		{"DSN file", "[source]\ntype = \"postgres\"\n[source.postgres]\ndsn_file = \"pg.dsn\"\n", "pg.dsn", "symbolic link", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			e, _ := newScriptEnv(t, dir, attackScript, tc.key)
			os.MkdirAll(filepath.Join(dir, "spool"), 0o750)
			victim := filepath.Join(t.TempDir(), "victim")
			if tc.dir {
				os.Mkdir(victim, 0o700)
			} else {
				os.WriteFile(victim, []byte("precious\n"), 0o600)
			}
			before := describe(t, victim)
			if err := os.Symlink(victim, filepath.Join(dir, tc.path)); err != nil {
				t.Fatal(err)
			}
			code, out := e.run("run", "--drain")
			if code == 0 || !strings.Contains(out, tc.want) {
				t.Errorf("run with a link at %s: exit %d, want a refusal naming %q\n%s", tc.path, code, tc.want, tail(out))
			}
			if after := describe(t, victim); after != before {
				t.Errorf("the link's target changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// describe says what a file is: its mode, owner, size, content and the
// names in it, for a directory.
func describe(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	s := fmt.Sprintf("%v %d:%d %d", fi.Mode(), st.Uid, st.Gid, fi.Size())
	if fi.IsDir() {
		ents, _ := os.ReadDir(path)
		for _, e := range ents {
			s += " " + e.Name()
		}
	} else {
		b, _ := os.ReadFile(path)
		s += " " + strconv.Quote(string(b))
	}
	return s
}

// Names that try to leave the spool, or fool a terminal or a shell: a
// submitted name with a slash or "..", a file whose name holds a newline
// or control characters, a name that looks like an option or holds shell
// syntax. None leaves the spool, the bad ones are refused unrun, and the
// odd but harmless ones run as one argument each.
func TestFaultHostileNames(t *testing.T) {
	dir := t.TempDir()
	e, _ := newScriptEnv(t, dir, `#!/bin/sh
printf 'arg=[%s] argc=%d\n' "$1" "$#"
`, "[job]\nmax_attempts = 1\n")
	job := filepath.Join(dir, "payload")
	os.WriteFile(job, []byte("x\n"), 0o644)
	for _, id := range []string{"../evil", "a/../../evil", "/etc/evil", "..", ".hidden", "a\nb"} {
		if code, out := e.run("submit", "--id", id, job); code == 0 {
			t.Errorf("submit --id %q was accepted: %s", id, out)
		}
	}
	refused := map[string]string{"new\nline": "new_line", "esc\x1b[31mred": "esc_[31mred", "bidi\u202eexe.txt": "bidi_exe.txt", "bad\xffutf8": "bad_utf8"}
	for name := range refused {
		e.put(name, "x\n")
	}
	harmless := []string{"-rf", "--config=evil.toml", "a b;$(touch pwned)", "`id`", "'quoted'"}
	for _, name := range harmless {
		e.put(name, "x\n")
	}
	if code, out := e.run("run", "--drain"); code != 1 {
		t.Errorf("run --drain: exit %d, want 1 (refused jobs)\n%s", code, tail(out))
	}
	for name, safe := range refused {
		where, r := e.result(safe)
		if where != "failed" || r.ID != strings.ToValidUTF8(name, "\uFFFD") || r.Attempts != 0 || !strings.Contains(r.Error, "refused") {
			t.Errorf("%q: in %q as %q with %+v; want refused unrun into failed/", name, where, safe, r)
		}
	}
	for _, name := range harmless {
		where, r := e.result(name)
		if want := fmt.Sprintf("arg=[%s] argc=1\n", name); where != "done" || r.Output != want {
			t.Errorf("%q: in %q with output %q, want %q", name, where, r.Output, want)
		}
	}
	for _, p := range []string{filepath.Join(dir, "evil"), filepath.Join(filepath.Dir(dir), "evil"), "/etc/evil", filepath.Join(dir, "pwned")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s exists", p)
		}
	}
}

// Jobs that run as the daemon's own user are warned about, at start and
// in status: without [job] user, and with the daemon's user as [job]
// user.
func TestFaultSharedUserWarned(t *testing.T) {
	me := strconv.Itoa(os.Geteuid())
	for _, jobKeys := range []string{"", "user = \"" + me + "\"\n"} {
		e, _ := newScriptEnv(t, t.TempDir(), attackScript, "[job]\n"+jobKeys)
		d := e.start()
		e.waitFor("ready", d, func() bool { return strings.Contains(d.out.String(), `"msg":"ready"`) })
		s := e.status()
		if !slices.ContainsFunc(s.Warnings, func(w string) bool { return strings.Contains(w, "jobs run as the daemon's own user") }) ||
			!strings.Contains(d.out.String(), "jobs run as the daemon's own user") {
			t.Errorf("[job] %q: no warning in status (%q) or the log", jobKeys, s.Warnings)
		}
		d.stop(syscall.SIGTERM)
	}
}

// Files a job of the daemon's own user writes beside its input in
// running/ never become jobs, even after a crash; a job that removes its
// input is recorded as it ended, without its file.
func TestFaultJobOutputsBesideInput(t *testing.T) {
	e, _ := newScriptEnv(t, t.TempDir(), `#!/bin/sh
read -r what arg || true
case "$what" in
write) echo out >"$JOB_PATH.out"; echo log >"$JOB_PATH.log"; exec sleep 3597 ;;
remove) rm "$JOB_PATH"; echo "removed my input" ;;
esac
`, "[job]\nmax_attempts = 3\n")
	killSleepers(t, 3597)
	e.put("in1", "write\n")
	e.put("gone", "remove\n")
	d := e.start()
	e.waitFor("the outputs written", d, func() bool {
		_, err1 := os.Stat(filepath.Join(e.spool, "running", "in1.log"))
		_, err2 := os.Stat(filepath.Join(e.spool, "done", "gone.result.json"))
		return err1 == nil && err2 == nil
	})
	d.stop(syscall.SIGKILL)
	// After the crash in1 runs again (it was in flight); its outputs go
	// to failed/ as not a job.
	d = e.start()
	e.waitFor("in1 again", d, func() bool { return e.count("running") >= 1 && e.count("failed") == 2 })
	d.stop(syscall.SIGKILL)
	for _, out := range []string{"in1.out", "in1.log"} {
		where, r := e.result(out)
		if where != "failed" || !strings.Contains(r.Error, "not a job") {
			t.Errorf("%s: in %q with %+v; want failed/, not a job", out, where, r)
		}
	}
	names, _ := os.ReadDir(filepath.Join(e.spool, "incoming"))
	for _, n := range names {
		if strings.Contains(n.Name(), ".out") || strings.Contains(n.Name(), ".log") {
			t.Errorf("an output became a job: incoming/%s", n.Name())
		}
	}
	b, _ := os.ReadFile(filepath.Join(e.spool, "done", "gone.result.json"))
	if !strings.Contains(string(b), `"file": ""`) || !strings.Contains(string(b), "removed in running/") {
		t.Errorf("the job that removed its input: %s", b)
	}
}
