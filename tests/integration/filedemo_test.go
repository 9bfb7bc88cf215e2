package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// examples/filedemo is a Go program built on service.Main: these tests
// drive it exactly as jobdaemon is driven, by the same commands and the
// same unit file with only the binary's name changed.

var (
	filedemoOnce sync.Once
	filedemoBin  string
	filedemoErr  error
)

// filedemo builds examples/filedemo once for the package.
func filedemo(t *testing.T) string {
	t.Helper()
	filedemoOnce.Do(func() {
		filedemoBin = filepath.Join(filepath.Dir(binary), "filedemo")
		out, err := exec.Command("go", "build", "-race", "-o", filedemoBin, "../../examples/filedemo").CombinedOutput()
		if err != nil {
			filedemoErr = fmt.Errorf("build filedemo: %v\n%s", err, out)
		}
	})
	if filedemoErr != nil {
		t.Fatal(filedemoErr)
	}
	return filedemoBin
}

// fdEnv is a filedemo configuration in a temporary directory.
type fdEnv struct {
	t      *testing.T
	dir    string
	config string
	spool  string
}

func newFdEnv(t *testing.T, children int) *fdEnv {
	t.Helper()
	dir := t.TempDir()
	classicTraversable(t, dir)
	e := &fdEnv{t: t, dir: dir, config: filepath.Join(dir, "filedemo.toml"), spool: filepath.Join(dir, "spool")}
	e.write(children)
	return e
}

func (e *fdEnv) write(children int) {
	e.t.Helper()
	text := fmt.Sprintf(`dir = "spool"
children = %d
poll = "100ms"
pid_file = "filedemo.pid"
socket = "filedemo.sock"
log_file = "filedemo.log"
`, children)
	if err := os.WriteFile(e.config, []byte(text), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *fdEnv) run(args ...string) (int, string) {
	e.t.Helper()
	c := exec.Command(filedemo(e.t), append(args, "--config", e.config)...)
	c.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	out, err := c.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errorsAs(err, &ee) {
		e.t.Fatalf("filedemo %v: %v", args, err)
	}
	if ee != nil {
		return ee.ExitCode(), string(out)
	}
	return 0, string(out)
}

func (e *fdEnv) log() string {
	b, _ := os.ReadFile(filepath.Join(e.dir, "filedemo.log"))
	return string(b)
}

func (e *fdEnv) status() statusReply {
	e.t.Helper()
	code, out := e.run("status", "--json")
	return decodeStatus(e.t, code, out, e.log)
}

// A Go program on service.Main is a classic daemon like jobdaemon: start
// detaches and locks the PID file, status answers, a reload applies the
// pool size its LoadConfig sets, a broken file is refused and the old one
// runs on, and stop waits and leaves nothing.
func TestFiledemoClassic(t *testing.T) {
	needRoot(t)
	e := newFdEnv(t, 2)
	t.Cleanup(func() { e.run("stop", "--now") })

	code, out := e.run("start")
	if code != 0 || !strings.Contains(out, "filedemo started (pid ") {
		t.Fatalf("start: exit %d\n%s%s", code, out, e.log())
	}
	st := e.status()
	pid := st.Pid
	if st.State != "running" || st.MaxChildren != 2 || st.Manager != "classic" {
		t.Errorf("status after start: %+v", st)
	}
	ps, err := classicStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	if ps.ppid == os.Getpid() || ps.sid == pid || ps.tty != 0 {
		t.Errorf("not detached: parent %d, session %d (pid %d), tty %d", ps.ppid, ps.sid, pid, ps.tty)
	}
	pidFile := filepath.Join(e.dir, "filedemo.pid")
	if err := classicTryLock(pidFile); err == nil {
		t.Errorf("the PID file %s is not locked", pidFile)
	}
	if code, out := e.run("start"); code != 1 || !strings.Contains(out, fmt.Sprintf("already running (pid %d)", pid)) {
		t.Errorf("a second start: exit %d\n%s", code, out)
	}

	// Jobs run, in children that are this program started again.
	for _, name := range []string{"a", "b", "c"} {
		if err := os.WriteFile(filepath.Join(e.spool, "incoming", name), []byte("hello "+name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pollUntil(t, "three jobs done", 30*time.Second, func() bool {
		n, _ := os.ReadDir(filepath.Join(e.spool, "done"))
		return len(n) == 6
	}, e.log)
	if b, _ := os.ReadFile(filepath.Join(e.spool, "done", "a.upper")); string(b) != "HELLO A" {
		t.Errorf("a.upper: %q", b)
	}

	// A reload re-reads filedemo.toml, whose children LoadConfig applies.
	e.write(5)
	if code, out := e.run("reload"); code != 0 || !strings.Contains(out, "config generation 2") {
		t.Fatalf("reload: exit %d\n%s", code, out)
	}
	if st := e.status(); st.MaxChildren != 5 || st.Generation != 2 {
		t.Errorf("after reload: max_children %d, generation %d; want 5 and 2", st.MaxChildren, st.Generation)
	}
	// A broken file is refused; the daemon runs on as it was.
	e.write(0)
	if code, out := e.run("reload"); code == 0 || !strings.Contains(out, "children = 0") {
		t.Errorf("reload of a broken file: exit %d\n%s", code, out)
	}
	e.write(5)
	if st := e.status(); st.MaxChildren != 5 || st.Generation != 2 || st.ReloadsFailed != 1 || st.State != "running" {
		t.Errorf("after a refused reload: %+v", st)
	}

	// stop waits for the daemon's exit and leaves nothing behind.
	if code, out := e.run("stop"); code != 0 || !strings.Contains(out, fmt.Sprintf("filedemo (pid %d) stopped", pid)) {
		t.Fatalf("stop: exit %d\n%s", code, out)
	}
	if processExists(pid) {
		t.Errorf("pid %d still runs after stop", pid)
	}
	for _, p := range []string{pidFile, filepath.Join(e.dir, "filedemo.sock")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
	if code, out := e.run("status"); code != 3 || !strings.Contains(out, "filedemo is not running") {
		t.Errorf("status after stop: exit %d\n%s", code, out)
	}
}

// The same program under systemd 252, with jobdaemon's unit file changed
// only in its ExecStart=, ExecReload= and paths: active only after
// READY=1, a synchronous reload, and the daemon's lines in the journal
// with the facility "daemon".
func TestFiledemoSystemd(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the systemd testbed needs root")
		}
		t.Skip("the systemd testbed needs root")
	}
	b := &sdBed{t: t, script: testbed(t)}
	if out, err := exec.Command(b.script, "status").CombinedOutput(); err != nil || !strings.Contains(string(out), "up") {
		if out, err := exec.Command(b.script, "up").CombinedOutput(); err != nil {
			t.Fatalf("testbed up: %v\n%s", err, out)
		}
		t.Cleanup(func() { exec.Command(b.script, "down").Run() })
	}
	const work, state = "/var/lib/filedemo-it", "/var/lib/filedemo-it-state"
	os.RemoveAll(work)
	os.RemoveAll(state)
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.exec("systemctl", "stop", "filedemo.service")
		b.exec("rm", "-f", "/run/systemd/system/filedemo.service")
		b.exec("systemctl", "daemon-reload")
		os.RemoveAll(work)
		os.RemoveAll(state)
	})
	data, err := os.ReadFile(filedemo(t))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(work, "filedemo"), data, 0o755)
	config := filepath.Join(work, "filedemo.toml")
	writeConfig := func(children int) {
		text := fmt.Sprintf("dir = %q\nchildren = %d\npoll = \"100ms\"\npid_file = \"\"\nsocket = \"/run/filedemo/control.sock\"\n", state+"/spool", children)
		if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(2)
	unit, err := os.ReadFile("../../dist/systemd/jobdaemon.service")
	if err != nil {
		t.Fatal(err)
	}
	u := strings.NewReplacer(
		"/usr/bin/jobdaemon", work+"/filedemo",
		"/etc/jobdaemon/config.toml", config,
		"\nUser=jobdaemon", "\nUser=nobody",
		"\nGroup=jobdaemon", "\nGroup=nogroup",
		"\nStateDirectory=jobdaemon", "\nStateDirectory="+filepath.Base(state),
		"\nRuntimeDirectory=jobdaemon", "\nRuntimeDirectory=filedemo",
		"\nWants=jobdaemon.socket", "\n",
		"\nAfter=jobdaemon.socket", "\n",
	).Replace(string(unit))
	if !strings.Contains(u, work+"/filedemo run") || !strings.Contains(u, work+"/filedemo reload") {
		t.Fatalf("ExecStart/ExecReload not replaced:\n%s", u)
	}
	tmp := filepath.Join(work, "filedemo.service")
	os.WriteFile(tmp, []byte(u), 0o644)
	b.must("cp", tmp, "/run/systemd/system/filedemo.service")
	b.must("systemctl", "daemon-reload")

	status := func() statusReply {
		t.Helper()
		code, out := b.exec(work+"/filedemo", "status", "--json", "--config", config)
		return decodeStatus(t, code, out, b.journal)
	}
	b.must("systemctl", "start", "filedemo.service")
	if s := status(); s.State != "running" || s.Manager != "systemd" || s.MaxChildren != 2 {
		t.Fatalf("right after systemctl start: %+v", s)
	}
	out := b.must("journalctl", "-u", "filedemo", "-o", "json", "--no-pager")
	var ready, started = -1, -1
	for i, line := range strings.Split(out, "\n") {
		if strings.Contains(line, `"SYSLOG_IDENTIFIER":"filedemo"`) && strings.Contains(line, `"MESSAGE":"ready"`) && ready < 0 {
			if !strings.Contains(line, `"SYSLOG_FACILITY":"3"`) {
				t.Errorf("the daemon's line has not the facility daemon: %s", line)
			}
			ready = i
		}
		if strings.Contains(line, `"MESSAGE":"Started filedemo.service`) && started < 0 {
			started = i
		}
	}
	if ready < 0 || started < 0 || ready > started {
		t.Errorf("\"ready\" at %d, systemd's \"Started\" at %d; want ready first\n%s", ready, started, out)
	}

	writeConfig(4)
	b.must("systemctl", "reload", "filedemo.service")
	if s := status(); s.MaxChildren != 4 || s.Generation != 2 {
		t.Errorf("right after systemctl reload: max_children %d, generation %d", s.MaxChildren, s.Generation)
	}
	os.WriteFile(filepath.Join(state, "spool", "incoming", "x"), []byte("hi"), 0o644)
	b.waitFor("the job done", func() bool {
		_, err := os.Stat(filepath.Join(state, "spool", "done", "x.upper"))
		return err == nil
	})
	b.must("systemctl", "stop", "filedemo.service")
	if st := strings.TrimSpace(b.must("systemctl", "show", "-p", "ActiveState", "--value", "filedemo.service")); st != "inactive" {
		t.Errorf("after stop: %s", st)
	}
}
