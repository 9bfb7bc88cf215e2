// Package integration drives the real jobdaemon binary the way an operator
// does: a config file, a spool in a temporary directory, submit, run, and
// signals. Nothing is faked.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jobdaemon/jobdaemon/internal/pgtest"
)

var binary string // the jobdaemon binary built for the tests

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "jobdaemon-it-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "jobdaemon")
	build := exec.Command("go", "build", "-race", "-o", binary, "../../cmd/jobdaemon")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build jobdaemon:", err)
		os.Exit(1)
	}
	code := pgtest.Main(m) // stops the package's PostgreSQL server, if a test started it
	os.RemoveAll(dir)
	os.Exit(code)
}

// jobScript does what its job file says: "ok", "exit N", "kill" (dies of
// SIGKILL), "sleep" (runs into the timeout), "flaky" (fails on attempt 1),
// "env" (prints its environment and stdin), "sigs" (its signal masks).
const jobScript = `#!/bin/sh
read -r what arg <"$1" || true
case "$what" in
ok) echo "ok $JOB_ID attempt $JOB_ATTEMPT" ;;
exit) echo "exiting $arg" >&2; exit "$arg" ;;
kill) kill -KILL $$ ;;
sleep) exec sleep 300 ;;
flaky) [ "$JOB_ATTEMPT" -ge 2 ] || exit 9 ;;
env) env | sort; echo "stdin: $(cat)" ;;
sigs) grep '^Sig' /proc/self/status ;;
*) echo "unknown job $what" >&2; exit 64 ;;
esac
`

// env is a spool, a job script and a config file in a temporary directory.
type env struct {
	t      *testing.T
	dir    string
	config string
	spool  string
}

func newEnv(t *testing.T, extra string) *env {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "job.sh")
	if err := os.WriteFile(script, []byte(jobScript), 0o755); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, config: filepath.Join(dir, "config.toml"), spool: filepath.Join(dir, "spool")}
	cfg := fmt.Sprintf(`
[daemon]
pid_file = "jobdaemon.pid"
idle_interval = "100ms"
stop_timeout = "5s"
[pool]
max_children = 8
job_timeout = "1s"
kill_grace = "500ms"
[job]
command = [%q, "{path}"]
env = { LANG = "C.UTF-8" }
max_attempts = 2
backoff = "10ms"
[source.spool]
dir = "spool"
max_payload = "1KiB"
rescan_interval = "1s"
[control]
socket = "control.sock"
[log]
format = "json"
level = "debug"
%s`, script, extra)
	if err := os.WriteFile(e.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// put writes a job file straight into incoming/, as a producer would.
func (e *env) put(name, content string) {
	e.t.Helper()
	dir := filepath.Join(e.spool, "incoming")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		e.t.Fatal(err)
	}
	tmp := filepath.Join(dir, ".tmp-"+fmt.Sprint(time.Now().UnixNano()))
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) cmd(args ...string) *exec.Cmd {
	c := exec.Command(binary, append(args[:1:1], append([]string{"--config", e.config}, args[1:]...)...)...)
	c.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	return c
}

// run runs a jobdaemon command to its end and returns its exit code and
// output.
func (e *env) run(args ...string) (int, string) {
	e.t.Helper()
	c := e.cmd(args...)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errorsAs(err, &ee):
		return ee.ExitCode(), out.String()
	}
	e.t.Fatalf("jobdaemon %v: %v", args, err)
	return -1, ""
}

// daemon is "jobdaemon run" in the background, with its output.
type daemon struct {
	*exec.Cmd
	out    *syncBuffer
	waited chan struct{} // closed once Wait has returned
}

// start starts "jobdaemon run"; at the end of the test it is killed, if it
// still runs.
func (e *env) start() *daemon {
	e.t.Helper()
	return e.launch(e.cmd("run"))
}

// launch starts the daemon that c runs, its output gathered, and kills it
// when the test ends if it has not exited.
func (e *env) launch(c *exec.Cmd) *daemon {
	e.t.Helper()
	d := &daemon{Cmd: c, out: &syncBuffer{}, waited: make(chan struct{})}
	d.Stdout, d.Stderr = d.out, d.out
	if err := d.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { d.Wait(); close(d.waited) }()
	e.t.Cleanup(func() {
		d.Process.Kill()
		<-d.waited
	})
	return d
}

// stop sends sig and waits for the daemon; it returns the exit error.
func (d *daemon) stop(sig syscall.Signal) error {
	d.Process.Signal(sig)
	<-d.waited
	if d.ProcessState.Success() {
		return nil
	}
	return fmt.Errorf("%s", d.ProcessState)
}

// waitFor polls cond for up to 10 s, and fails the test with the daemon's
// log if it never holds.
func (e *env) waitFor(what string, d *daemon, cond func() bool) {
	e.t.Helper()
	pollUntil(e.t, what, 10*time.Second, cond, func() string { return tail(d.out.String()) })
}

// pollUntil polls cond until it holds, or fails the test after timeout
// with what and the output of logs.
func pollUntil(t *testing.T, what string, timeout time.Duration, cond func() bool, logs func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: timed out after %v; log:\n%s", what, timeout, logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func errorsAs(err error, ee **exec.ExitError) bool {
	x, ok := err.(*exec.ExitError)
	*ee = x
	return ok
}

type record struct {
	ID       string `json:"id"`
	Attempts int    `json:"attempts"`
	ExitCode int    `json:"exit_code"`
	Signal   string `json:"signal"`
	TimedOut bool   `json:"timed_out"`
	Error    string `json:"error"`
	Output   string `json:"output_tail"`
}

// result reads the record of job name in done/ or failed/, and says which.
func (e *env) result(name string) (string, record) {
	e.t.Helper()
	for _, where := range []string{"done", "failed"} {
		b, err := os.ReadFile(filepath.Join(e.spool, where, name+".result.json"))
		if err != nil {
			continue
		}
		var r record
		if err := json.Unmarshal(b, &r); err != nil {
			e.t.Fatalf("%s/%s.result.json: %v", where, name, err)
		}
		if _, err := os.Lstat(filepath.Join(e.spool, where, name)); err != nil {
			e.t.Errorf("%s/%s.result.json without its job file: %v", where, name, err)
		}
		return where, r
	}
	return "", record{}
}

func (e *env) count(sub string) int {
	ents, err := os.ReadDir(filepath.Join(e.spool, sub))
	if err != nil {
		return 0
	}
	n := 0
	for _, ent := range ents {
		if !strings.HasPrefix(ent.Name(), ".") && !strings.HasSuffix(ent.Name(), ".result.json") {
			n++
		}
	}
	return n
}

// 200 jobs with mixed outcomes end up where they should, each with the
// right record and attempt count.
func TestMixedOutcomes(t *testing.T) {
	e := newEnv(t, "")
	type want struct {
		where    string
		attempts int
		check    func(record) bool
	}
	wants := map[string]want{}
	for i := 0; i < 200; i++ {
		name := fmt.Sprintf("job-%03d", i)
		switch i % 8 {
		case 0, 1, 2:
			e.put(name, "ok\n")
			wants[name] = want{"done", 1, func(r record) bool { return r.ExitCode == 0 && strings.Contains(r.Output, "ok "+r.ID) }}
		case 3:
			e.put(name, "exit 3\n")
			wants[name] = want{"failed", 2, func(r record) bool { return r.ExitCode == 3 && strings.Contains(r.Output, "exiting 3") }}
		case 4:
			e.put(name, "kill\n")
			wants[name] = want{"failed", 2, func(r record) bool { return r.Signal == "SIGKILL" || r.Signal == "killed" }}
		case 5:
			e.put(name, "flaky\n")
			wants[name] = want{"done", 2, func(r record) bool { return r.ExitCode == 0 }}
		case 6:
			if i%16 == 6 {
				e.put(name, "sleep\n")
				wants[name] = want{"failed", 2, func(r record) bool { return r.TimedOut }}
			} else {
				e.put(name, "ok\n"+strings.Repeat("x", 2048)) // over max_payload
				wants[name] = want{"failed", 0, func(r record) bool { return r.Error != "" }}
			}
		case 7:
			// A control character: the job is refused, and filed in
			// failed/ under the name with '_' in its place.
			bad := fmt.Sprintf("bad\x01name-%03d", i)
			e.put(bad, "ok\n")
			wants[strings.ReplaceAll(bad, "\x01", "_")] = want{"failed", 0, func(r record) bool {
				return r.ID == bad && strings.Contains(r.Error, "control characters")
			}}
		}
	}
	code, out := e.run("run", "--drain")
	if code != 1 {
		t.Fatalf("run --drain exited %d, want 1 (some jobs fail):\n%s", code, tail(out))
	}
	for name, w := range wants {
		where, r := e.result(name)
		if where != w.where {
			t.Errorf("%q ended in %q, want %q", name, where, w.where)
			continue
		}
		if w.attempts > 0 && r.Attempts != w.attempts {
			t.Errorf("%q: %d attempts, want %d", name, r.Attempts, w.attempts)
		}
		if !w.check(r) {
			t.Errorf("%q: wrong record %+v", name, r)
		}
	}
	if n := e.count("incoming") + e.count("running"); n != 0 {
		t.Errorf("%d jobs left in incoming/ or running/", n)
	}
	if got := e.count("done") + e.count("failed"); got != len(wants) {
		t.Errorf("%d jobs in done/ and failed/, want %d", got, len(wants))
	}
}

func tail(s string) string {
	if len(s) > 4000 {
		return "..." + s[len(s)-4000:]
	}
	return s
}

func TestDrainExitCodes(t *testing.T) {
	e := newEnv(t, "")
	if code, out := e.run("run", "--drain"); code != 0 {
		t.Errorf("empty spool: exit %d\n%s", code, tail(out))
	}
	e.put("a", "ok\n")
	e.put("b", "ok\n")
	if code, out := e.run("run", "--drain"); code != 0 {
		t.Errorf("all ok: exit %d\n%s", code, tail(out))
	}
	e.put("c", "exit 5\n")
	if code, out := e.run("run", "--drain"); code != 1 {
		t.Errorf("one failure: exit %d, want 1\n%s", code, tail(out))
	}
	// A job refused unrun (here: too large) ends in failed/ too.
	e.put("d", "ok\n"+strings.Repeat("x", 2048))
	if code, out := e.run("run", "--drain"); code != 1 {
		t.Errorf("one refused job: exit %d, want 1\n%s", code, tail(out))
	}
}

// The joblog gets a header and one line per finished attempt, in GNU
// parallel's format.
func TestJobLog(t *testing.T) {
	e := newEnv(t, `joblog = "jobs.log"`)
	e.put("a", "ok\n")
	e.put("b", "exit 4\n")
	if code, out := e.run("run", "--drain"); code != 1 {
		t.Fatalf("exit %d\n%s", code, tail(out))
	}
	b, err := os.ReadFile(filepath.Join(e.dir, "jobs.log"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	// The header, a, and b twice (max_attempts = 2).
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "Seq\tHost\tStarttime") {
		t.Fatalf("joblog:\n%s", b)
	}
	for _, l := range lines[1:] {
		f := strings.Split(l, "\t")
		if len(f) != 9 {
			t.Fatalf("line %q has %d fields", l, len(f))
		}
		if strings.HasSuffix(f[8], "/a") && f[6] != "0" || strings.HasSuffix(f[8], "/b") && f[6] != "4" {
			t.Errorf("wrong exit value in %q", l)
		}
	}
}

// On a terminal, run --drain shows a progress bar; elsewhere it logs a
// progress line. script(1), from Debian's essential bsdutils, gives it a
// terminal.
func TestDrainProgress(t *testing.T) {
	script, err := exec.LookPath("script")
	if err != nil {
		t.Fatalf("script(1) is needed for a terminal: %v", err)
	}
	e := newEnv(t, "")
	for i := 0; i < 5; i++ {
		e.put(fmt.Sprintf("p%d", i), "ok\n")
	}
	line := fmt.Sprintf("%s run --config %s --drain", binary, e.config)
	c := exec.Command(script, "-qec", line, "/dev/null")
	c.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", "COLUMNS=100", "LINES=40")
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, tail(string(out)))
	}
	if !strings.Contains(string(out), "5 done, 0 failed") || !strings.Contains(string(out), "(5/5)") {
		t.Errorf("no progress bar on a terminal:\n%q", tail(string(out)))
	}
	code, plain := e.run("run", "--drain") // not a terminal
	if code != 0 || !strings.Contains(plain, `"msg":"progress"`) {
		t.Errorf("no progress line off a terminal (exit %d):\n%s", code, tail(plain))
	}
}

// Killing the daemon mid-run loses nothing: after a restart every job is in
// done/ or failed/, and none is stuck in running/.
func TestKillAndRestart(t *testing.T) {
	e := newEnv(t, "")
	const n = 60
	for i := 0; i < n; i++ {
		content := "ok\n"
		if i%3 == 0 {
			content = "sleep\n" // still running when the daemon dies
		}
		e.put(fmt.Sprintf("j%02d", i), content)
	}
	d := e.start()
	e.waitFor("jobs running", d, func() bool { return e.count("running") > 0 && e.count("done") >= 5 })
	d.stop(syscall.SIGKILL)
	code, out2 := e.run("run", "--drain")
	if code != 0 && code != 1 {
		t.Fatalf("restart exited %d:\n%s", code, tail(out2))
	}
	if left := e.count("running") + e.count("incoming"); left != 0 {
		t.Errorf("%d jobs left behind after the restart", left)
	}
	if got := e.count("done") + e.count("failed"); got != n {
		t.Errorf("%d jobs in done/ and failed/, want %d: jobs were lost", got, n)
	}
	for i := 0; i < n; i += 3 {
		name := fmt.Sprintf("j%02d", i)
		if where, r := e.result(name); where != "failed" || !r.TimedOut {
			t.Errorf("%s: in %q with %+v; want failed by timeout", name, where, r)
		}
	}
}

// A graceful stop (TERM) interrupts a running job; it goes back to
// incoming/ without using up an attempt, and the daemon exits 0.
func TestStopInterruptsWithoutCountingAttempt(t *testing.T) {
	e := newEnv(t, "")
	e.put("long", "sleep\n") // runs into the 1 s timeout, unless stopped first
	d := e.start()
	e.waitFor("job started", d, func() bool { return e.count("running") > 0 })
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("daemon after TERM: %v\n%s", err, tail(d.out.String()))
	}
	if e.count("incoming") != 1 || e.count("running")+e.count("failed")+e.count("done") != 0 {
		t.Fatalf("after the stop: incoming %d, running %d, failed %d, done %d\n%s", e.count("incoming"),
			e.count("running"), e.count("failed"), e.count("done"), tail(d.out.String()))
	}
	// Two real attempts (max_attempts = 2) follow: the interrupted run
	// did not count.
	if code, out := e.run("run", "--drain"); code != 1 {
		t.Fatalf("drain: exit %d\n%s", code, tail(out))
	}
	if where, r := e.result("long"); where != "failed" || r.Attempts != 2 || !r.TimedOut {
		t.Errorf("long: in %q with %+v; want failed after 2 timed-out attempts", where, r)
	}
}

// HUP re-reads config.toml: the new command and pool size apply to the
// next jobs; a broken file is refused and the old configuration runs on;
// a change that needs a restart is named in the log.
func TestReloadOnHUP(t *testing.T) {
	e := newEnv(t, "")
	v2 := filepath.Join(e.dir, "v2.sh")
	os.WriteFile(v2, []byte("#!/bin/sh\necho \"v2 ran $JOB_ID\"\n"), 0o755)
	d := e.start()
	out := d.out
	waitFor := func(what string, cond func() bool) { t.Helper(); e.waitFor(what, d, cond) }
	done := func(name string) func() bool {
		return func() bool { where, _ := e.result(name); return where == "done" }
	}
	waitFor("start", func() bool { return strings.Contains(out.String(), "daemon started") })
	e.put("before", "ok\n")
	waitFor("job before", done("before"))

	cfg, _ := os.ReadFile(e.config)
	script := filepath.Join(e.dir, "job.sh")
	good := strings.Replace(string(cfg), script, v2, 1)
	good = strings.Replace(good, "max_children = 8", "max_children = 3", 1)
	good = strings.Replace(good, `pid_file = "jobdaemon.pid"`, `pid_file = "other.pid"`, 1)
	os.WriteFile(e.config, []byte(good), 0o644)
	d.Process.Signal(syscall.SIGHUP)
	waitFor("reload", func() bool { return strings.Contains(out.String(), `"generation":2`) })
	if !strings.Contains(out.String(), "daemon.pid_file") {
		t.Errorf("the pid_file change was not named as needing a restart:\n%s", tail(out.String()))
	}
	if !strings.Contains(out.String(), `"max_children":3`) {
		t.Errorf("max_children change not applied:\n%s", tail(out.String()))
	}
	e.put("after", "ok\n")
	waitFor("job after", done("after"))
	if _, r := e.result("after"); !strings.Contains(r.Output, "v2 ran after") {
		t.Errorf("the job after the reload ran the old command: %+v", r)
	}

	os.WriteFile(e.config, []byte(strings.Replace(good, "max_children = 3", "max_chidren = 2", 1)), 0o644)
	d.Process.Signal(syscall.SIGHUP)
	waitFor("refusal", func() bool { return strings.Contains(out.String(), "reload refused") })
	if !strings.Contains(out.String(), "max_chidren") {
		t.Errorf("the refusal does not name the bad key:\n%s", tail(out.String()))
	}
	e.put("later", "ok\n")
	waitFor("job later", done("later"))
	if _, r := e.result("later"); !strings.Contains(r.Output, "v2 ran later") {
		t.Errorf("after a refused reload the daemon lost its configuration: %+v", r)
	}
}

// syncBuffer is a bytes.Buffer that a child's output and the test may use
// at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A job submitted by another process while the daemon runs is picked up
// promptly (inotify); the exact latency belongs to the benchmarks.
func TestSubmitWhileRunning(t *testing.T) {
	e := newEnv(t, "")
	if code, out := e.run("run", "--drain"); code != 0 { // creates the spool
		t.Fatalf("exit %d\n%s", code, out)
	}
	d := e.start()
	e.waitFor("start", d, func() bool { return strings.Contains(d.out.String(), "daemon started") })
	job := filepath.Join(e.dir, "late-job")
	os.WriteFile(job, []byte("ok\n"), 0o644)
	code, ids := e.run("submit", job)
	if code != 0 || strings.TrimSpace(ids) != "late-job" {
		t.Fatalf("submit: exit %d, %q", code, ids)
	}
	start := time.Now()
	e.waitFor("late job done", d, func() bool { where, _ := e.result("late-job"); return where == "done" })
	t.Logf("picked up and done in %v", time.Since(start))
}

// A job sees the JOB_* variables and the configured env, nothing else of
// the daemon's environment, and its file on standard input; "submit -"
// queues standard input under --id.
func TestJobEnvironmentAndStdin(t *testing.T) {
	e := newEnv(t, "")
	c := e.cmd("submit", "--id", "from-stdin", "-")
	c.Stdin = strings.NewReader("env\nsecond line\n")
	if out, err := c.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "from-stdin" {
		t.Fatalf("submit -: %v %q", err, out)
	}
	c = e.cmd("run", "--drain")
	c.Env = append(c.Env, "DAEMON_SECRET=hunter2")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("run: %v\n%s", err, tail(string(out)))
	}
	where, r := e.result("from-stdin")
	if where != "done" {
		t.Fatalf("job in %q: %+v", where, r)
	}
	var names []string
	for _, line := range strings.Split(r.Output, "\n") {
		if k, _, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "stdin:") {
			names = append(names, k)
		}
	}
	// The shell adds PWD (and dash nothing else) to what it was given.
	want := "JOB_ATTEMPT JOB_ID JOB_PATH JOB_SLOT LANG PWD"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("job environment: %s\nwant: %s\noutput:\n%s", got, want, r.Output)
	}
	if !strings.Contains(r.Output, "JOB_PATH="+filepath.Join(e.spool, "running", "from-stdin")) {
		t.Errorf("JOB_PATH is not the file in running/:\n%s", r.Output)
	}
	if !strings.Contains(r.Output, "stdin: env\nsecond line\n") {
		t.Errorf("standard input is not the job file:\n%s", r.Output)
	}
}

// submit needs only the spool's place: a host that only submits need not
// have the job's program.
func TestSubmitWithoutTheProgram(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	os.WriteFile(cfg, []byte("[job]\ncommand = [\"/nonexistent/program\"]\n[source.spool]\ndir = \"spool\"\n"), 0o644)
	c := exec.Command(binary, "submit", "--config", cfg, "--id", "j1", "-")
	c.Stdin = strings.NewReader("payload")
	if out, err := c.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "j1" {
		t.Fatalf("submit: %v %q", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "spool", "incoming", "j1")); err != nil || string(b) != "payload" {
		t.Errorf("queued job: %q, %v", b, err)
	}
}

// Each configuration error names the problem and exits with 78.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"unknown key", "[pool]\nmax_chidren = 3\n", `did you mean "max_children"`},
		{"out of range", "[pool]\nmax_children = 0\n", "max_children"},
		{"bad duration", "[daemon]\nstop_timeout = \"soon\"\n", "stop_timeout"},
		{"bad signal", "[pool]\nstop_signal = \"SIGNOPE\"\n", "stop_signal"},
		{"missing user", "[daemon]\nuser = \"no-such-user-xyz\"\n", "no-such-user-xyz"},
		{"missing command", "[job]\ncommand = [\"/nonexistent/program\"]\n", "/nonexistent/program"},
		{"not executable", "[job]\ncommand = [\"./data.txt\"]\n", "not executable"},
		{"syntax", "[pool\nmax_children = 3\n", "config.toml:3"}, // after the 2 lines of [job]
		{"placeholder inside", "[job]\ncommand = [\"/bin/echo\", \"{path}.png\"]\n", "{path}"},
		{"worker children", "[pool]\njobs_per_child = 5\n", `jobs_per_child: 5: a process runs one job in job.mode "process"; set it to 1, or set mode = "worker"`},
		{"worker placeholder", "[job]\nmode = \"worker\"\ncommand = [\"/bin/true\", \"{path}\"]\n", "argument 1 is {path}, which names one job"},
		{"worker mode", "[job]\nmode = \"workers\"\ncommand = [\"/bin/true\"]\n", `unknown mode "workers" (did you mean "worker"?)`},
		{"missing directory", "[daemon]\npid_file = \"no-such-dir/jd.pid\"\n", "daemon.pid_file: the directory"},
		{"limits without cgroups", "[pool]\ncgroups = \"off\"\n[job]\ncommand = [\"/bin/true\"]\npids_max = 10\n", "job limits need per-job cgroups"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "config.toml")
			os.WriteFile(filepath.Join(dir, "data.txt"), []byte("not a program"), 0o644)
			body := tc.body
			if !strings.Contains(body, "command") {
				body = "[job]\ncommand = [\"/bin/true\"]\n" + body
			}
			// Should the config be taken by mistake, the daemon stays
			// inside the test's directory and is stopped by the context.
			if !strings.Contains(body, "[source") {
				body += "\n[source.spool]\ndir = \"spool\"\n"
			}
			if !strings.Contains(body, "[daemon]") {
				body += "\n[daemon]\npid_file = \"pid\"\n"
			}
			body += "\n[control]\nsocket = \"control.sock\"\n"
			os.WriteFile(cfg, []byte(body), 0o644)
			for _, sub := range []string{"check-config", "run"} {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				c := exec.CommandContext(ctx, binary, sub, "--config", cfg)
				out, err := c.CombinedOutput()
				ee, ok := err.(*exec.ExitError)
				if !ok || ee.ExitCode() != 78 {
					t.Errorf("%s: %v, want exit 78\n%s", sub, err, out)
				}
				if !strings.Contains(string(out), tc.want) {
					t.Errorf("%s: output lacks %q:\n%s", sub, tc.want, out)
				}
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, sub := range []string{"run", "submit", "check-config", "version"} {
		out, err := exec.Command(binary, sub, "--help").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Usage: jobdaemon "+sub) {
			t.Errorf("%s --help: %v\n%s", sub, err, out)
		}
	}
	out, err := exec.Command(binary, "nonsense").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "unknown command") {
		t.Errorf("unknown command: %v\n%s", err, out)
	}
}
