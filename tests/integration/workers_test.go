package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The command workers of [job] mode = "worker", driven through the binary
// with the reference workers of examples/workers, as an operator runs
// them.

// interpreter returns the path of an interpreter the test needs: skipped
// without it, failed under CI=true, where .ci/run installs it.
func interpreter(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found under CI=true (.ci/run installs it): %v", name, err)
		}
		t.Skipf("%s not found: %v", name, err)
	}
	return path
}

// The test handlers: a job file says what to do.
//
//	(empty)    nothing
//	ok         print "ok ID attempt N slot S path P worker W"
//	fail MSG   fail with MSG
//	sleep N    sleep N seconds
//
// With RUN_LOG set, each job appends "ID PID" to that file first.
const phpHandler = `<?php
require getenv('WORKER_LIB');
$pid = getmypid();
$runs = getenv('RUN_LOG') ? fopen(getenv('RUN_LOG'), 'ab') : null;
JobDaemon\serve(function (JobDaemon\Job $job) use ($pid, $runs): void {
    if ($runs) {
        fwrite($runs, "{$job->id} $pid\n");
    }
    [$verb, $arg] = array_pad(explode(' ', trim($job->payload), 2), 2, '');
    switch ($verb) {
        case '':
            return;
        case 'ok':
            echo "ok {$job->id} attempt {$job->attempt} slot {$job->slot} path {$job->path} worker " . getenv('JOBDAEMON_WORKER') . "\n";
            return;
        case 'fail':
            throw new RuntimeException($arg);
        case 'sleep':
            sleep((int) $arg);
            return;
    }
    throw new InvalidArgumentException("unknown job $verb");
});
`

const pythonHandler = `import os, sys, time
sys.path.insert(0, os.path.dirname(os.environ["WORKER_LIB"]))
from jobdaemon_worker import serve

def handle(job):
    words = job.payload.decode().split(None, 1) or [""]
    verb, arg = words[0], (words[1] if len(words) > 1 else "").strip()
    if verb == "ok":
        print("ok %s attempt %d slot %d path %s worker %s" % (job.id, job.attempt, job.slot, job.path, os.environ["JOBDAEMON_WORKER"]))
    elif verb == "fail":
        raise RuntimeError(arg)
    elif verb == "sleep":
        time.sleep(int(arg))
    elif verb:
        raise ValueError("unknown job " + verb)

serve(handle)
`

// newWorkerEnv is newEnv in worker mode: lang's test handler as the
// command, with pool settings of its own.
func newWorkerEnv(t *testing.T, lang, pool string) *env {
	t.Helper()
	interp := interpreter(t, map[string]string{"php": "php", "python": "python3"}[lang])
	e := newEnv(t, "")
	lib, err := filepath.Abs(map[string]string{"php": "../../examples/workers/php/jobdaemon_worker.php",
		"python": "../../examples/workers/python/jobdaemon_worker.py"}[lang])
	if err != nil {
		t.Fatal(err)
	}
	handler := filepath.Join(e.dir, "handler."+lang)
	if err := os.WriteFile(handler, []byte(map[string]string{"php": phpHandler, "python": pythonHandler}[lang]), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`
[daemon]
pid_file = "jobdaemon.pid"
idle_interval = "100ms"
stop_timeout = "5s"
[pool]
kill_grace = "500ms"
%s
[job]
mode = "worker"
command = [%q, %q]
env = { LANG = "C.UTF-8", WORKER_LIB = %q, RUN_LOG = %q, PYTHONDONTWRITEBYTECODE = "1" }
max_attempts = 2
backoff = "10ms"
[source.spool]
dir = "spool"
rescan_interval = "1s"
[control]
socket = "control.sock"
[log]
format = "json"
level = "info"
`, pool, interp, handler, lib, filepath.Join(e.dir, "runs.log"))
	if err := os.WriteFile(e.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// workerStatus is the part of "status --json" about workers.
type workerStatus struct {
	WorkersStarted     int      `json:"workers_started"`
	WorkerFailedStarts int      `json:"worker_failed_starts"`
	WorkerBackoff      int64    `json:"worker_backoff_ns"`
	WorkerStartError   string   `json:"worker_start_error"`
	Warnings           []string `json:"warnings"`
	Slots              []struct {
		Pid    int    `json:"pid"`
		JobID  string `json:"job_id"`
		Worker bool   `json:"worker"`
	} `json:"slots"`
}

func (e *env) workerStatus() workerStatus {
	e.t.Helper()
	s, ok := e.tryWorkerStatus()
	if !ok {
		e.t.Fatal("status --json: the daemon is not running")
	}
	return s
}

// tryWorkerStatus is workerStatus of a daemon that may not be ready yet:
// false then.
func (e *env) tryWorkerStatus() (workerStatus, bool) {
	e.t.Helper()
	code, out := e.run("status", "--json")
	if code == 3 || code == 0 && strings.Contains(out, "does not answer") {
		return workerStatus{}, false // not started, or its socket not served yet
	}
	if code != 0 {
		e.t.Fatalf("status --json: exit %d\n%s", code, out)
	}
	var s workerStatus
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		e.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return s, true
}

// usageOf reads the usage_of of a job's record.
func (e *env) usageOf(name string) string {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.spool, "done", name+".result.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	var r struct {
		UsageOf string `json:"usage_of"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		e.t.Fatal(err)
	}
	return r.UsageOf
}

// 20 000 jobs through 2 PHP workers that are replaced every 5 000 jobs
// (less a random 10%): every job runs exactly once and is filed once.
//
// What the limits guarantee, and what is asserted: a worker is retired
// after 4 500 to 5 000 jobs; at most 2 workers (one per slot) are left
// short of their limit at the end, with at most 4 999 jobs each; so at
// least 3 workers ran their whole limit and were retired at it, and at
// least 4 workers ran in all (5 when only 3 were retired). That is at
// least 2 workers started to replace others. With the jitter, 5 to 6
// workers is usual.
func TestWorkerModeTwentyThousandJobs(t *testing.T) {
	e := newWorkerEnv(t, "php", "max_children = 2\njobs_per_child = 5000")
	const n = 20000
	dir := filepath.Join(e.spool, "incoming")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("j%05d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	code, out := e.run("run", "--drain")
	took := time.Since(start)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("%d jobs completed, 0 failed (%d runs, 0 failed)", n, n)) {
		t.Fatalf("run --drain: exit %d\n%s", code, tail(out))
	}
	t.Logf("%d jobs in %v (%.0f jobs/s, with the spool's filing, a -race build of the daemon)", n, took, n/took.Seconds())
	if got, left := e.count("done"), e.count("incoming")+e.count("running")+e.count("failed"); got != n || left != 0 {
		t.Errorf("%d jobs in done/, %d elsewhere; want %d and 0", got, left, n)
	}

	f, err := os.Open(filepath.Join(e.dir, "runs.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	runs := map[string]int{}
	perWorker := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		id, pid, _ := strings.Cut(sc.Text(), " ")
		runs[id]++
		perWorker[pid]++
	}
	if len(runs) != n {
		t.Errorf("%d jobs ran, want %d", len(runs), n)
	}
	for id, k := range runs {
		if k != 1 {
			t.Errorf("job %s ran %d times", id, k)
		}
	}
	retired := 0
	for _, k := range perWorker {
		if k >= 4500 && k <= 5000 {
			retired++
		}
		if k > 5000 {
			t.Errorf("a worker ran %d jobs, more than jobs_per_child", k)
		}
	}
	t.Logf("jobs per worker: %v", perWorker)
	if len(perWorker) < 4 || retired < 3 {
		t.Errorf("%d workers, %d of which ran 4 500 to 5 000 jobs; want at least 4 and 3", len(perWorker), retired)
	}
	// A worker's CPU time and RSS come with the last job it ran, once it
	// has exited; other jobs have none of their own.
	usage := map[string]int{}
	for i := range n {
		usage[e.usageOf(fmt.Sprintf("j%05d", i))]++
	}
	if usage["worker"] < 3 || usage["none"]+usage["worker"] != n {
		t.Errorf("usage_of of the records: %v; want \"worker\" for the last jobs of at least 3 workers, \"none\" for the others", usage)
	}
}

// A job reaches a Python worker with its file as payload and its path;
// a handler's exception fails the job with its message; a job's output is
// its own.
func TestWorkerModePython(t *testing.T) {
	e := newWorkerEnv(t, "python", "max_children = 2")
	for i := range 6 {
		e.put(fmt.Sprintf("ok-%d", i), "ok\n")
	}
	e.put("broken", "fail no such customer\n")
	code, out := e.run("run", "--drain")
	if code != 1 {
		t.Fatalf("run --drain: exit %d, want 1 (one job fails)\n%s", code, tail(out))
	}
	for i := range 6 {
		name := fmt.Sprintf("ok-%d", i)
		where, r := e.result(name)
		want := regexp.MustCompile("^ok " + name + " attempt 1 slot [01] path " +
			regexp.QuoteMeta(filepath.Join(e.spool, "running", name)) + " worker 1\n$")
		if where != "done" || !want.MatchString(r.Output) {
			t.Errorf("%s: in %q, output %q, want %s", name, where, r.Output, want)
		}
	}
	where, r := e.result("broken")
	if where != "failed" || r.Attempts != 2 || r.Error != "RuntimeError: no such customer" ||
		!strings.Contains(r.Output, "Traceback") {
		t.Errorf("broken: in %q, %+v", where, r)
	}
}

// A worker script that exits at once is not restarted in a loop: the
// daemon waits longer after each, and status says why.
func TestWorkerModeBrokenScript(t *testing.T) {
	e := newEnv(t, "")
	cfg, _ := os.ReadFile(e.config)
	broken := strings.Replace(string(cfg), "[job]\n", "[job]\nmode = \"worker\"\n", 1)
	broken = strings.Replace(broken, "max_children = 8", "max_children = 2", 1)
	broken = strings.Replace(broken, fmt.Sprintf("command = [%q, \"{path}\"]", filepath.Join(e.dir, "job.sh")),
		`command = ["/bin/sh", "-c", "echo cannot load the application >&2; exit 3"]`, 1)
	os.WriteFile(e.config, []byte(broken), 0o644)
	for i := range 50 {
		e.put(fmt.Sprintf("j%02d", i), "ok\n")
	}
	d := e.start()
	e.waitFor("a failed start", d, func() bool {
		return strings.Contains(d.out.String(), "a worker ended before its first answer")
	})
	time.Sleep(3 * time.Second)
	s := e.workerStatus()
	// 100 ms, 200, 400, 800, 1.6 s: about 5 starts in 3 s.
	// (A worker on trial may have started, and not ended yet.)
	if s.WorkersStarted < 3 || s.WorkersStarted > 10 || s.WorkerFailedStarts < s.WorkersStarted-1 ||
		s.WorkerFailedStarts > s.WorkersStarted || s.WorkerBackoff <= 0 ||
		!strings.Contains(s.WorkerStartError, "exit 3; its last output: cannot load the application") {
		t.Errorf("status after 3 s: %+v", s)
	}
	code, text := e.run("status")
	if code != 0 || !strings.Contains(text, "workers in a row ended before their first answer, the last: exit 3; its last output: cannot load the application") {
		t.Errorf("status: exit %d\n%s", code, text)
	}
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Errorf("TERM: %v\n%s", err, tail(d.out.String()))
	}
	// Each start took one job down with it; the others wait in incoming/.
	if got := e.count("incoming") + e.count("failed") + e.count("done"); got != 50 {
		t.Errorf("%d jobs in the spool after the stop, want 50", got)
	}
}

// A drain lets the workers finish their jobs; a graceful stop interrupts
// them, and their jobs go back to incoming/ without using up an attempt;
// either way no worker is left.
func TestWorkerModeStopAndDrain(t *testing.T) {
	e := newWorkerEnv(t, "php", "max_children = 2")
	running := func() []int {
		var pids []int
		s, _ := e.tryWorkerStatus()
		for _, sl := range s.Slots {
			if sl.JobID != "" && sl.Worker {
				pids = append(pids, sl.Pid)
			}
		}
		return pids
	}
	gone := func(what string, pids []int) {
		t.Helper()
		pollUntil(t, what, 10*time.Second, func() bool {
			for _, pid := range pids {
				if len(processGroup(pid)) > 0 {
					return false
				}
			}
			return true
		}, func() string { return fmt.Sprint(pids) })
	}

	e.put("a", "sleep 2\n")
	e.put("b", "sleep 2\n")
	d := e.start()
	var pids []int
	e.waitFor("two jobs running", d, func() bool { pids = running(); return len(pids) == 2 })
	if err := d.stop(syscall.SIGQUIT); err != nil {
		t.Fatalf("QUIT: %v\n%s", err, tail(d.out.String()))
	}
	for _, name := range []string{"a", "b"} {
		if where, r := e.result(name); where != "done" {
			t.Errorf("%s after a drain: in %q, %+v", name, where, r)
		}
	}
	gone("workers after the drain", pids)

	e.put("c", "sleep 60\n")
	e.put("d", "sleep 60\n")
	d = e.start()
	e.waitFor("two jobs running", d, func() bool { pids = running(); return len(pids) == 2 })
	start := time.Now()
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("TERM: %v\n%s", err, tail(d.out.String()))
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("the graceful stop took %v: the workers did not stop on SIGTERM", took)
	}
	if e.count("incoming") != 2 || e.count("failed")+e.count("running") != 0 {
		t.Errorf("after TERM: incoming %d, running %d, failed %d; want the 2 jobs back in incoming/",
			e.count("incoming"), e.count("running"), e.count("failed"))
	}
	gone("workers after the stop", pids)
}

// A daemon killed with SIGKILL takes its workers with it: the kernel
// kills each worker (Pdeathsig), the leader of its process group, and a
// worker that started nothing leaves nothing in its group.
func TestWorkerModeDaemonKilled(t *testing.T) {
	e := newWorkerEnv(t, "python", "max_children = 2")
	e.put("a", "sleep 300\n")
	e.put("b", "sleep 300\n")
	d := e.start()
	var pids []int
	e.waitFor("two workers running jobs", d, func() bool {
		pids = pids[:0]
		s, _ := e.tryWorkerStatus()
		for _, sl := range s.Slots {
			if sl.JobID != "" {
				pids = append(pids, sl.Pid)
			}
		}
		return len(pids) == 2
	})
	d.stop(syscall.SIGKILL)
	pollUntil(t, "the workers' process groups to end", 10*time.Second, func() bool {
		for _, pid := range pids {
			if len(processGroup(pid)) > 0 {
				return false
			}
		}
		return true
	}, func() string {
		var left []int
		for _, pid := range pids {
			left = append(left, processGroup(pid)...)
		}
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		return fmt.Sprintf("processes left in groups %v: %v", pids, left)
	})
}

// processGroup returns the live processes (zombies excluded) whose
// process group is pgid.
func processGroup(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + ent.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		// After "comm)": state, ppid, pgrp.
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			out = append(out, pid)
		}
	}
	return out
}
