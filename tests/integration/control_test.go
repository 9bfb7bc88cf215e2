package integration

import (
	"encoding/json"
	"fmt"
	"net"
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

// statusReply is the part of "status --json" the tests read.
type statusReply struct {
	State         string   `json:"state"`
	Pid           int      `json:"pid"`
	Generation    int      `json:"config_generation"`
	MaxChildren   int      `json:"max_children"`
	Busy          int      `json:"busy"`
	Started       int      `json:"runs_started"`
	Succeeded     int      `json:"runs_succeeded"`
	Failed        int      `json:"runs_failed"`
	JobsCompleted int      `json:"jobs_completed"`
	JobsRetried   int      `json:"jobs_retried"`
	JobsFailed    int      `json:"jobs_failed"`
	Queued        int      `json:"queued"`
	NotStarted    int      `json:"jobs_not_started"`
	LastStartErr  string   `json:"last_start_error"`
	Reloads       int      `json:"reloads"`
	ReloadsFailed int      `json:"reloads_failed"`
	Manager       string   `json:"manager"`
	User          string   `json:"user"`
	Warnings      []string `json:"warnings"`
	Isolation     string   `json:"isolation"`
	Slots         []struct {
		Slot  int    `json:"slot"`
		Pid   int    `json:"pid"`
		JobID string `json:"job_id"`
		RSS   int64  `json:"rss_bytes"`
	} `json:"slots"`
}

// status runs "status --json".
func (e *env) status() statusReply {
	e.t.Helper()
	code, out := e.run("status", "--json")
	return decodeStatus(e.t, code, out, func() string { return "" })
}

// decodeStatus checks the exit code and output of "status --json", and
// decodes it; on failure it shows logs().
func decodeStatus(t *testing.T, code int, out string, logs func() string) statusReply {
	t.Helper()
	if code != 0 {
		t.Fatalf("status --json: exit %d\n%s\nlog:\n%s", code, out, logs())
	}
	var s statusReply
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return s
}

// longJobs makes the jobs of e run until stopped: no job_timeout.
func (e *env) longJobs() {
	e.t.Helper()
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		e.t.Fatal(err)
	}
	os.WriteFile(e.config, []byte(strings.Replace(string(cfg), `job_timeout = "1s"`, `job_timeout = "0s"`, 1)), 0o644)
}

// curl asks the control socket with curl, as an operator would.
func (e *env) curl(args ...string) string {
	e.t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") == "true" {
			e.t.Fatal("curl is missing: .ci/run installs it")
		}
		e.t.Skip("curl is missing")
	}
	out, err := exec.Command("curl", append([]string{"-sS", "--unix-socket", filepath.Join(e.dir, "control.sock")}, args...)...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("curl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// Every control command against a daemon with running jobs: status shows
// the real children, scale, pause and resume act at once, signal reaches a
// job, submit goes through the socket, reload reports a refusal and the old
// configuration runs on, stop --wait returns once the daemon has exited.
func TestControlCommands(t *testing.T) {
	e := newEnv(t, "")
	e.longJobs()
	for i := range 3 {
		e.put(fmt.Sprintf("long-%d", i), "sleep\n")
	}
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, []byte(strings.Replace(string(cfg), "max_children = 8", "max_children = 2", 1)), 0o644)
	d := e.start()
	waitFor := func(what string, cond func() bool) { t.Helper(); e.waitFor(what, d, cond) }
	waitFor("two jobs running", func() bool {
		code, out := e.run("status", "--json")
		return code == 0 && strings.Contains(out, `"busy": 2`)
	})

	// status --json shows the real children.
	s := e.status()
	if s.State != "running" || s.MaxChildren != 2 || len(s.Slots) != 2 || s.Queued != 1 || s.Manager != "foreground" {
		t.Fatalf("status: %+v", s)
	}
	running, _ := os.ReadDir(filepath.Join(e.spool, "running"))
	var names []string
	for _, ent := range running {
		if !strings.HasPrefix(ent.Name(), ".") {
			names = append(names, ent.Name())
		}
	}
	for _, sl := range s.Slots {
		if syscall.Kill(sl.Pid, 0) != nil {
			t.Errorf("slot %d: pid %d does not exist", sl.Slot, sl.Pid)
		}
		if !slices.Contains(names, sl.JobID) {
			t.Errorf("slot %d runs %q, but running/ holds %v", sl.Slot, sl.JobID, names)
		}
		if environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", sl.Pid)); !strings.Contains(string(environ), "JOB_ID="+sl.JobID+"\x00") {
			t.Errorf("pid %d is not the job %s: %q", sl.Pid, sl.JobID, environ)
		}
	}
	if code, out := e.run("status"); code != 0 || !strings.Contains(out, "jobdaemon running") || !strings.Contains(out, s.Slots[0].JobID) {
		t.Errorf("status table: exit %d\n%s", code, out)
	}

	// Scale up: the third job starts; down: running jobs go on.
	if code, out := e.run("scale", "+1"); code != 0 || strings.TrimSpace(out) != "max_children = 3" {
		t.Fatalf("scale +1: exit %d %q", code, out)
	}
	waitFor("third job", func() bool { return e.status().Busy == 3 })
	if code, out := e.run("scale", "1"); code != 0 || strings.TrimSpace(out) != "max_children = 1" {
		t.Fatalf("scale 1: exit %d %q", code, out)
	}
	if s := e.status(); s.Busy != 3 || s.MaxChildren != 1 {
		t.Errorf("after scale 1: busy %d, max %d; want the 3 jobs still running", s.Busy, s.MaxChildren)
	}
	if code, _ := e.run("scale", "-1"); code != 0 || e.status().MaxChildren != 1 {
		t.Errorf("scale -1 from 1: want it to stay at 1")
	}
	if code, out := e.run("scale", "0"); code != 2 {
		t.Errorf("scale 0: exit %d, want 2\n%s", code, out)
	}

	// signal: the job's process group gets it, and the job ends so.
	victim := e.status().Slots[0]
	if code, out := e.run("signal", victim.JobID, "KILL"); code != 0 {
		t.Fatalf("signal: exit %d\n%s", code, out)
	}
	waitFor("signalled job gone", func() bool { return syscall.Kill(victim.Pid, 0) != nil })
	if code, out := e.run("signal", "no-such-job"); code != 1 || !strings.Contains(out, "no such job") {
		t.Errorf("signal of an unknown job: exit %d\n%s", code, out)
	}

	// pause: nothing new starts; resume: it does.
	if code, out := e.run("pause"); code != 0 || e.status().State != "paused" {
		t.Fatalf("pause: exit %d %s", code, out)
	}
	e.run("scale", "8")
	job := filepath.Join(e.dir, "quick")
	os.WriteFile(job, []byte("ok\n"), 0o644)
	if code, out := e.run("submit", job); code != 0 || strings.TrimSpace(out) != "quick" {
		t.Fatalf("submit: exit %d %q", code, out)
	}
	waitFor("submit through the socket", func() bool { return strings.Contains(d.out.String(), `"job_id":"quick"`) })
	time.Sleep(300 * time.Millisecond)
	if where, _ := e.result("quick"); where != "" {
		t.Fatalf("a job ran while paused")
	}
	if code, out := e.run("resume"); code != 0 {
		t.Fatalf("resume: exit %d %s", code, out)
	}
	waitFor("job after resume", func() bool { where, _ := e.result("quick"); return where == "done" })

	// reload: refused with file:line, the old configuration stays; then
	// a good one applies.
	good, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, []byte(strings.Replace(string(good), "max_children = 2", "max_children = 0", 1)), 0o644)
	code, out := e.run("reload")
	if code != 1 || !strings.Contains(out, "config.toml:") || !strings.Contains(out, "pool.max_children") {
		t.Errorf("reload of a broken config: exit %d\n%s", code, out)
	}
	if s := e.status(); s.Generation != 1 || s.ReloadsFailed != 1 || s.State != "running" {
		t.Errorf("after a refused reload: %+v", s)
	}
	os.WriteFile(e.config, []byte(strings.Replace(string(good), "max_children = 2", "max_children = 5", 1)), 0o644)
	if code, out := e.run("reload"); code != 0 || !strings.Contains(out, "generation 2") {
		t.Errorf("reload: exit %d\n%s", code, out)
	}
	if s := e.status(); s.Generation != 2 || s.MaxChildren != 5 || s.Reloads != 1 {
		t.Errorf("after a reload: %+v", s)
	}

	// curl works, and /metrics is there.
	if out := e.curl("http://x/v1/status"); !strings.Contains(out, `"state": "running"`) {
		t.Errorf("curl status:\n%s", out)
	}
	metrics := e.curl("http://x/metrics")
	for _, want := range []string{`jobdaemon_reloads_total{result="failed"} 1`, `jobdaemon_reloads_total{result="ok"} 1`,
		"jobdaemon_children_max 5", `jobdaemon_runs_failed_total{reason="signal"} 1`, "jobdaemon_runs_succeeded_total 1",
		// The killed job had an attempt left (max_attempts = 2): queued again.
		`jobdaemon_jobs_retried_total{reason="signal"} 1`, "jobdaemon_jobs_completed_total 1",
		// The last reload was refused, then one applied.
		"jobdaemon_config_last_reload_successful 1", "jobdaemon_queue_oldest_age_seconds 0"} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if out := e.curl("-d", `{"delta": 1}`, "http://x/v1/scale"); !strings.Contains(out, `"max_children": 6`) {
		t.Errorf("curl scale: %s", out)
	}
	if out := e.curl("-d", `{"mode": `, "http://x/v1/stop"); !strings.Contains(out, "malformed JSON") {
		t.Errorf("curl with bad JSON: %s", out)
	}

	// stop --wait returns once the daemon has exited.
	if code, out := e.run("stop", "--wait", "--timeout", "20s"); code != 0 || !strings.Contains(out, "stopped") {
		t.Errorf("stop --wait: exit %d\n%s", code, out)
	}
	// It has exited: gone, or a zombie that this test has yet to reap.
	if processExists(d.Process.Pid) {
		t.Fatal("stop --wait returned while the daemon runs")
	}
	if code, out := e.run("status"); code != 3 || !strings.Contains(out, "not running") {
		t.Errorf("status of a stopped daemon: exit %d\n%s", code, out)
	}
	for _, cmd := range []string{"reload", "pause", "resume"} {
		if code, out := e.run(cmd); code != 3 || !strings.Contains(out, "no daemon is running") {
			t.Errorf("%s without a daemon: exit %d\n%s", cmd, code, out)
		}
	}
}

// status follows the LSB: 3 without a PID file, 1 with a stale one.
func TestStatusExitCodes(t *testing.T) {
	e := newEnv(t, "")
	if code, out := e.run("status"); code != 3 {
		t.Errorf("no daemon: exit %d, want 3\n%s", code, out)
	}
	os.WriteFile(filepath.Join(e.dir, "jobdaemon.pid"), []byte("99999\n"), 0o644)
	if code, out := e.run("status"); code != 1 || !strings.Contains(out, "PID file") {
		t.Errorf("stale PID file: exit %d, want 1\n%s", code, out)
	}
}

// The control socket lets in root, and members of [control] group; other
// users are refused, by the socket file's mode and, were that loosened, by
// the daemon itself (403).
func TestControlRefusesOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to run clients as other users")
		}
		t.Skip("needs root")
	}
	const group = 4 // adm: a group that exists, and that nobody is not in
	e := newEnv(t, "")
	// The config, its directory and the binary must be readable by nobody.
	for p := e.dir; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	os.Chmod(filepath.Dir(binary), 0o755)
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, []byte(strings.Replace(string(cfg), `socket = "control.sock"`, "socket = \"control.sock\"\ngroup = \""+strconv.Itoa(group)+"\"", 1)), 0o644)
	d := e.start()
	e.waitFor("socket", d, func() bool { code, _ := e.run("status"); return code == 0 })
	as := func(cred *syscall.Credential, args ...string) (int, string) {
		if len(args) == 0 {
			args = []string{"status"}
		}
		c := e.cmd(args...)
		c.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := c.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	// A submission asks the socket too: refused, it queues nothing, and
	// exits as the client commands do.
	job := filepath.Join(e.dir, "refused-job")
	os.WriteFile(job, []byte("x"), 0o644)
	submit := []string{"submit", "--id", "refused", job}
	if code, out := as(nobody); code != 4 || !strings.Contains(out, "permission denied") {
		t.Errorf("nobody: exit %d, want 4\n%s", code, out)
	}
	if code, out := as(nobody, submit...); code != 4 || !strings.Contains(out, "permission denied") {
		t.Errorf("nobody's submit: exit %d, want 4\n%s", code, out)
	}
	os.Chmod(filepath.Join(e.dir, "control.sock"), 0o666)
	if code, out := as(nobody); code != 4 || !strings.Contains(out, "only root, the daemon's user and members") {
		t.Errorf("nobody through a loosened socket: exit %d, want 4 from a 403\n%s", code, out)
	}
	if code, out := as(nobody, submit...); code != 4 || !strings.Contains(out, "only root, the daemon's user and members") {
		t.Errorf("nobody's submit through a loosened socket: exit %d, want 4 from a 403\n%s", code, out)
	}
	if m, _ := filepath.Glob(filepath.Join(e.spool, "*", "refused*")); len(m) > 0 {
		t.Errorf("a refused submission was queued: %v", m)
	}
	if !strings.Contains(d.out.String(), `"uid":65534`) {
		t.Errorf("no log line for the refused client:\n%s", tail(d.out.String()))
	}
	os.Chmod(filepath.Join(e.dir, "control.sock"), 0o660)
	if code, out := as(&syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{group}}); code != 0 {
		t.Errorf("a member of the group: exit %d, want 0\n%s", code, out)
	}
}

// USR1 reopens the log file after logrotate moved it; TTIN and TTOU scale.
func TestLogFileAndSignals(t *testing.T) {
	e := newEnv(t, "")
	logPath := filepath.Join(e.dir, "daemon.log")
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, []byte(strings.Replace(string(cfg), "[log]\n", "[log]\ntarget = \"file\"\nfile = \"daemon.log\"\n", 1)), 0o644)
	d := e.start()
	read := func(p string) string { b, _ := os.ReadFile(p); return string(b) }
	e.waitFor("ready", d, func() bool { return strings.Contains(read(logPath), `"msg":"ready"`) })
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	d.Process.Signal(syscall.SIGUSR1)
	e.waitFor("reopened", d, func() bool { return strings.Contains(read(logPath), "log file reopened") })
	if !strings.Contains(read(logPath+".1"), "daemon started") {
		t.Errorf("the old file lost its lines")
	}
	d.Process.Signal(syscall.SIGTTIN)
	e.waitFor("TTIN", d, func() bool { return e.status().MaxChildren == 9 })
	// Two signals sent at once may arrive as one: that is how signals are.
	d.Process.Signal(syscall.SIGTTOU)
	e.waitFor("TTOU", d, func() bool { return e.status().MaxChildren == 8 })
	d.Process.Signal(syscall.SIGTTOU)
	e.waitFor("TTOU", d, func() bool { return e.status().MaxChildren == 7 })
	d.Process.Signal(syscall.SIGUSR2)
	e.waitFor("USR2 pauses", d, func() bool { return e.status().State == "paused" })
	d.Process.Signal(syscall.SIGCONT)
	e.waitFor("CONT resumes", d, func() bool { return e.status().State == "running" })
	d.Process.Signal(syscall.SIGQUIT)
	e.waitFor("QUIT drains and exits", d, func() bool {
		select {
		case <-d.waited:
			return true
		default:
			return false
		}
	})
	if !d.ProcessState.Success() {
		t.Errorf("exit after QUIT: %v", d.ProcessState)
	}
	if d.out.String() != "" {
		t.Errorf("with target = \"file\", stderr got:\n%s", tail(d.out.String()))
	}
}

// A pool size set at run time survives a reload that does not change the
// file's max_children, and yields to one that does.
func TestReloadKeepsRuntimeScale(t *testing.T) {
	e := newEnv(t, "")
	d := e.start()
	e.waitFor("ready", d, func() bool { code, _ := e.run("status"); return code == 0 })
	if code, out := e.run("scale", "3"); code != 0 {
		t.Fatalf("scale: exit %d\n%s", code, out)
	}
	if code, out := e.run("reload"); code != 0 {
		t.Fatalf("reload: exit %d\n%s", code, out)
	}
	if s := e.status(); s.MaxChildren != 3 {
		t.Errorf("a reload with the same max_children undid scale 3: %d", s.MaxChildren)
	}
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, []byte(strings.Replace(string(cfg), "max_children = 8", "max_children = 6", 1)), 0o644)
	if code, out := e.run("reload"); code != 0 {
		t.Fatalf("reload: exit %d\n%s", code, out)
	}
	if s := e.status(); s.MaxChildren != 6 {
		t.Errorf("a reload with a new max_children: %d, want 6", s.MaxChildren)
	}
}

// A start-up failure is reported where someone looks, whatever the log
// target: here a log file, and stderr too; and the daemon leaves nothing.
func TestStartupFailureIsReported(t *testing.T) {
	e := newEnv(t, "")
	cfg, _ := os.ReadFile(e.config)
	s := strings.Replace(string(cfg), "[log]\n", "[log]\ntarget = \"file\"\nfile = \"daemon.log\"\n", 1)
	os.WriteFile(e.config, []byte(s), 0o644)
	// A regular file where the control socket goes: the daemon leaves it
	// alone, and cannot start.
	os.WriteFile(filepath.Join(e.dir, "control.sock"), []byte("not a socket"), 0o644)
	code, out := e.run("run")
	const why = "not a socket"
	if code != 1 || !strings.Contains(out, why) {
		t.Errorf("run: exit %d; stderr:\n%s", code, out)
	}
	log, _ := os.ReadFile(filepath.Join(e.dir, "daemon.log"))
	if !strings.Contains(string(log), "cannot start") || !strings.Contains(string(log), why) {
		t.Errorf("the log file does not say why:\n%s", log)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "jobdaemon.pid")); err == nil {
		t.Error("the PID file is left behind")
	}
}

// "start" exits with the daemon's own exit status: 78 when the daemon
// finds its configuration unusable (here: syslog, on a host without one).
func TestStartPassesTheDaemonsExitCode(t *testing.T) {
	if _, err := os.Stat("/dev/log"); err == nil {
		t.Skip("a syslog daemon listens on /dev/log here")
	}
	e := newEnv(t, "")
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, []byte(strings.Replace(string(cfg), "[log]\n", "[log]\ntarget = \"syslog\"\n", 1)), 0o644)
	code, out := e.run("start")
	if code != 78 || !strings.Contains(out, "syslog") || !strings.Contains(out, "/dev/log") {
		t.Errorf("start: exit %d, want 78 with the reason\n%s", code, out)
	}
}

// A TERM that arrives during start-up (here: while the spool puts back
// thousands of jobs a crashed daemon left in running/) does not kill the
// daemon half started: it starts, then stops gracefully, and removes its
// PID file and socket.
func TestTermDuringStartup(t *testing.T) {
	e := newEnv(t, "")
	running := filepath.Join(e.spool, "running")
	if err := os.MkdirAll(running, 0o750); err != nil {
		t.Fatal(err)
	}
	for i := range 5000 {
		if err := os.WriteFile(filepath.Join(running, fmt.Sprintf("left-%d", i)), []byte("ok\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := e.start()
	pidFile := filepath.Join(e.dir, "jobdaemon.pid")
	// The PID file is taken before the spool is opened.
	e.waitFor("PID file", d, func() bool { _, err := os.Stat(pidFile); return err == nil })
	d.Process.Signal(syscall.SIGTERM)
	<-d.waited
	out := d.out.String()
	if !d.ProcessState.Success() {
		t.Fatalf("a TERM during start-up: %v\n%s", d.ProcessState, tail(out))
	}
	if strings.Contains(out, `"msg":"ready"`) && !strings.Contains(out, `"msg":"signal received"`) {
		t.Errorf("the TERM was not acted on:\n%s", tail(out))
	}
	for _, p := range []string{pidFile, filepath.Join(e.dir, "control.sock")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
	t.Logf("start-up log: %d lines", strings.Count(out, "\n"))
}

// restart replaces a classic daemon with a new one; stop --timeout gives
// up, exit 1, on a daemon whose job ignores TERM, and the stop goes on.
func TestRestartAndStopTimeout(t *testing.T) {
	e := newEnv(t, "")
	e.longJobs()
	os.WriteFile(filepath.Join(e.dir, "job.sh"), []byte(strings.Replace(jobScript, "*)",
		"stubborn) trap '' TERM; sleep 300 & wait ;;\n*)", 1)), 0o755)
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, []byte(strings.Replace(string(cfg), "[log]\n", "[log]\ntarget = \"file\"\nfile = \"daemon.log\"\n", 1)), 0o644)
	t.Cleanup(func() { e.run("stop", "--now", "--timeout", "10s") })

	if code, out := e.run("restart"); code != 0 || !strings.Contains(out, "jobdaemon started") {
		t.Fatalf("restart with no daemon: exit %d\n%s", code, out)
	}
	first := e.status().Pid
	code, out := e.run("restart")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("jobdaemon (pid %d) stopped", first)) || !strings.Contains(out, "jobdaemon started") {
		t.Fatalf("restart: exit %d\n%s", code, out)
	}
	second := e.status().Pid
	if second == first || processExists(first) {
		t.Errorf("restart: pid %d then %d; the first still exists: %v", first, second, processExists(first))
	}

	e.put("stubborn", "stubborn\n")
	deadline := time.Now().Add(10 * time.Second)
	for e.status().Busy != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the job did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	code, out = e.run("stop", "--timeout", "300ms")
	if code != 1 || !strings.Contains(out, fmt.Sprintf("pid %d still runs after 300ms", second)) {
		t.Errorf("stop --timeout on a job that ignores TERM: exit %d\n%s", code, out)
	}
	// The stop goes on: stop_timeout (5s) then SIGKILL ends it.
	if code, out := e.run("stop", "--timeout", "20s"); code != 0 && code != 3 {
		t.Errorf("second stop: exit %d\n%s", code, out)
	}
	if processExists(second) {
		t.Errorf("pid %d still runs after its stop_timeout", second)
	}
}

// processExists reports whether pid runs (a zombie has exited).
func processExists(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return f[0] != "Z" && f[0] != "X"
}

// Signals that come while the daemon closes, after its dispatcher has
// returned, are caught and dropped: a second TERM, or logrotate's HUP,
// must not kill it halfway through its close, with its PID file and
// control socket left behind. Both ways a run ends: a stop (TERM), and a
// drain that ends by itself, which begins no stop. A client connected to
// the control socket and silent holds the close in the control server's
// shutdown (for up to 5 s), which makes the window wide enough to hit.
func TestSignalsDuringClose(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		queue    string // a job file's content, or none
		stop     bool   // TERM ends the run
		wantCode int
	}{
		// The job sleeps past job_timeout twice and fails for good: the
		// drain ends by itself after about 2 s, with exit code 1.
		{name: "drain", args: []string{"run", "--drain"}, queue: "sleep", wantCode: 1},
		{name: "stop", args: []string{"run"}, stop: true, wantCode: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "")
			if tc.queue != "" {
				e.put("job", tc.queue)
			}
			d := e.launch(e.cmd(tc.args...))
			sock := filepath.Join(e.dir, "control.sock")
			e.waitFor("ready", d, func() bool { return strings.Contains(d.out.String(), `"msg":"ready"`) })
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tc.stop {
				d.Process.Signal(syscall.SIGTERM)
			}
			e.waitFor("daemon stopped", d, func() bool { return strings.Contains(d.out.String(), `"msg":"daemon stopped"`) })
			for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT, syscall.SIGUSR1} {
				d.Process.Signal(sig)
			}
			// Delivered at once; a signal with its default action would
			// have ended the daemon by now.
			time.Sleep(200 * time.Millisecond)
			c.Close()
			<-d.waited
			if code := d.ProcessState.ExitCode(); code != tc.wantCode {
				t.Fatalf("signals during the close: %v, want exit code %d\n%s", d.ProcessState, tc.wantCode, tail(d.out.String()))
			}
			for _, p := range []string{filepath.Join(e.dir, "jobdaemon.pid"), sock} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s left behind", p)
				}
			}
		})
	}
}
