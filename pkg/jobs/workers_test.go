package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// 3 000 jobs through 2 command workers that retire every 500 jobs: each
// job has exactly one result (Done panics on a second), answers and log
// lines are told apart, and the workers' usage comes with their last jobs.
func TestCommandWorkers(t *testing.T) {
	payloads := make([]string, 3000)
	for i := range payloads {
		switch {
		case i%100 == 50:
			payloads[i] = "fail:no such customer"
		default:
			payloads[i] = "ok"
		}
	}
	payloads[7], payloads[13], payloads[21], payloads[2999] = "fail-empty", "proto-stdout", "env", "env"
	w := newWorkerApp(payloads...)
	res := runWorkers(t, w, Options{MaxChildren: 2, JobsPerChild: 500})
	if len(res) != len(payloads) {
		t.Fatalf("%d results, want %d", len(res), len(payloads))
	}
	usage := map[UsageOf]int{}
	for i, p := range payloads {
		id := fmt.Sprintf("%s-%d", p, i)
		r := res[id]
		usage[r.Usage]++
		switch p {
		case "ok", "env":
			if !r.OK() {
				t.Errorf("%s: %s", id, r.String())
			}
		case "fail:no such customer":
			if r.OK() || r.ExitCode != 1 || r.Error != "no such customer" {
				t.Errorf("%s: %+v", id, r)
			}
		case "fail-empty":
			if r.OK() || !strings.Contains(r.Error, `"ok": false, with no error`) {
				t.Errorf("%s: %+v", id, r)
			}
		case "proto-stdout":
			if !r.OK() || !strings.Contains(string(r.Output), `"error":"from stdout"`) {
				t.Errorf("%s: a line on stdout that looks like an answer: %s, output %q", id, r.String(), r.Output)
			}
		}
		if r.Usage == UsageNone && r.UserCPU+r.SysCPU+time.Duration(r.MaxRSS) != 0 {
			t.Errorf("%s: usage none, with figures %+v", id, r)
		}
		// (MaxRSS may be 0: rusage cannot tell a child smaller than the
		// daemon from the daemon, see pool.Exit.)
		if r.Usage == UsageWorker && r.UserCPU+r.SysCPU <= 0 {
			t.Errorf("%s: a worker's usage without figures: cpu %v %v rss %d", id, r.UserCPU, r.SysCPU, r.MaxRSS)
		}
	}
	for _, id := range []string{"env-21", "env-2999"} {
		if !regexp.MustCompile(`JOBDAEMON_WORKER=1 JOB_SLOT=[01]\n`).Match(res[id].Output) {
			t.Errorf("%s: environment %q", id, res[id].Output)
		}
	}
	// Every retired worker ran exactly its limit, 450 to 500 jobs, and at
	// most one per slot is left: 6 to 8 workers in all.
	started := w.d.Status().WorkersStarted
	if started < 6 || started > 8 {
		t.Errorf("%d workers started, want 6 to 8", started)
	}
	if usage[UsageWorker] < 4 || usage[UsageNone] < len(payloads)-10 {
		t.Errorf("usage of the results: %v; want the workers' usage with at least 4 last jobs, none elsewhere", usage)
	}
}

// A worker that dies, answers garbage, answers for another job, writes an
// endless or a broken answer, or exits without answering, fails its job
// with a clear error and is replaced; the next job runs in a new worker.
func TestCommandWorkerFaults(t *testing.T) {
	faults := []struct{ payload, errPart string }{
		{"kill-self", "worker exited during the job: signal killed"},
		{"garbage", `malformed answer: not JSON: expected a value at byte 0, found 'P'; the line: "PHP Warning: undefined variable $x"`},
		{"wrong-id", `it answers job "someone-else", but the job in progress is "wrong-id-5"`},
		{"long", "worker stopped: protocol error: answer line too long"},
		{"partial", "worker stopped: protocol error: answer cut short by the end of fd 3"},
		{"exit:0", "worker exited during the job: exit 0"},
		{"exit:7", "worker exited during the job: exit 7"},
	}
	var payloads []string
	for _, f := range faults {
		payloads = append(payloads, "ok", f.payload)
	}
	payloads = append(payloads, "ok", "twice")
	w := newWorkerApp(payloads...)
	res := runWorkers(t, w, Options{MaxChildren: 1, KillGrace: time.Second})
	for i, p := range payloads {
		id := fmt.Sprintf("%s-%d", p, i)
		r := res[id]
		if i%2 == 0 || p == "twice" {
			if !r.OK() {
				t.Errorf("%s: %s", id, r.String())
			}
			continue
		}
		f := faults[i/2]
		if r.OK() || !strings.Contains(r.Error, f.errPart) {
			t.Errorf("%s: %+v\nwant an error with %q", id, r, f.errPart)
		}
	}
	if r := res["kill-self-1"]; r.Signal != syscall.SIGKILL {
		t.Errorf("kill-self: %+v", r)
	}
	if r := res["exit:0-11"]; r.ExitCode != 1 {
		t.Errorf("a worker that exits 0 without answering: exit code %d, want 1", r.ExitCode)
	}
	if r := res["exit:7-13"]; r.ExitCode != 7 {
		t.Errorf("exit:7: exit code %d", r.ExitCode)
	}
	// Each fault ended its worker; each ok job started the next.
	if s := w.d.Status(); s.WorkersStarted != uint64(len(faults)+1) || s.WorkerFailedStarts != 0 {
		t.Errorf("%d workers started, %d failed starts; want %d and 0", s.WorkersStarted, s.WorkerFailedStarts, len(faults)+1)
	}
}

// A job that runs past its timeout has its worker's whole process group
// stopped (SIGTERM, then SIGKILL), is timed out whatever the worker
// answers after the signal, and the worker is replaced.
func TestCommandWorkerTimeout(t *testing.T) {
	w := newWorkerApp("pid", "late", "pid", "hang", "pid")
	res := runWorkers(t, w, Options{MaxChildren: 1, JobTimeout: 1500 * time.Millisecond, KillGrace: 500 * time.Millisecond})
	if r := res["late-1"]; !r.TimedOut || r.OK() || r.Signal != 0 {
		t.Errorf("a job that answers ok after SIGTERM: %+v; want timed out, the worker not killed", r)
	}
	r := res["hang-3"]
	if !r.TimedOut || r.Signal != syscall.SIGKILL {
		t.Errorf("a worker that ignores SIGTERM: %+v; want timed out and killed", r)
	}
	var grandchild int
	fmt.Sscanf(string(r.Output[bytes.Index(r.Output, []byte("grandchild")):]), "grandchild %d", &grandchild)
	if grandchild == 0 {
		t.Fatalf("no grandchild pid in %q", r.Output)
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(grandchild) {
		if time.Now().After(deadline) {
			syscall.Kill(grandchild, syscall.SIGKILL)
			t.Fatalf("the worker's grandchild %d survived the timeout", grandchild)
		}
		time.Sleep(10 * time.Millisecond)
	}
	pids := map[string]bool{}
	for _, id := range []string{"pid-0", "pid-2", "pid-4"} {
		if !res[id].OK() {
			t.Errorf("%s: %s", id, res[id].String())
		}
		pids[strings.TrimSpace(string(res[id].Output))] = true
	}
	if len(pids) != 3 {
		t.Errorf("the pid jobs ran in %v; want a new worker after each timeout", pids)
	}
}

// A worker script that exits at once is started again after a growing
// backoff, not in a loop; Status says so; a reload starts the next one
// without waiting.
func TestCommandWorkerExitsAtOnce(t *testing.T) {
	payloads := make([]string, 200)
	for i := range payloads {
		payloads[i] = "ok"
	}
	w := newWorkerApp(payloads...)
	w.env = []string{"JOBS_TEST_LINES_START=exit"}
	d, errc := startSource(t, w, w.testApp, Options{MaxChildren: 2, NoSignals: true})
	begin := time.Now()
	waitFor(t, "a first failed start", func() bool { return d.Status().WorkerFailedStarts > 0 })
	time.Sleep(3*time.Second - time.Since(begin))
	s := d.Status()
	// 100 ms, 200, 400, 800, 1.6 s: about 5 starts in 3 s. One spinning
	// would start hundreds.
	if s.WorkersStarted < 3 || s.WorkersStarted > 10 {
		t.Errorf("%d workers started in 3 s, want 3 to 10", s.WorkersStarted)
	}
	// A worker on trial may have started, and not ended yet.
	failed, started := s.WorkerFailedStarts, int(s.WorkersStarted)
	if failed < started-1 || failed > started || s.WorkerBackoff <= 0 || s.WorkerBackoff > 30*time.Second ||
		!strings.Contains(s.WorkerStartError, "exit 3; its last output: cannot load the application: config.php missing") {
		t.Errorf("status: %d started, %d failed starts, backoff %v, error %q", s.WorkersStarted, s.WorkerFailedStarts, s.WorkerBackoff, s.WorkerStartError)
	}
	w.mu.Lock()
	for id, r := range w.results {
		if r.ExitCode != 3 || !strings.Contains(r.Error, "worker exited during the job: exit 3") {
			t.Errorf("%s: %+v", id, r)
		}
	}
	if n := len(w.results); n < started-1 || n > started {
		t.Errorf("%d results for %d workers: each takes one job down with it", n, started)
	}
	w.mu.Unlock()

	// A reload (the script fixed, say) starts the next worker at once.
	s = d.Status()
	if s.WorkerBackoff < time.Second {
		// Only on a very slow machine: the backoff is about to end anyway.
		t.Logf("backoff %v left before the reload", s.WorkerBackoff)
	}
	reloaded := time.Now()
	if err := d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a start after the reload", func() bool { return d.Status().WorkersStarted > s.WorkersStarted })
	if took := time.Since(reloaded); s.WorkerBackoff > time.Second && took > s.WorkerBackoff {
		t.Errorf("the first start after the reload took %v, the backoff it should skip was %v", took, s.WorkerBackoff)
	}
	d.Stop(Graceful)
	waitRun(t, errc, "stop")
	noZombies(t)
}

// A drain lets command workers finish their jobs, then closes their
// standard input; a graceful stop signals them; a worker that ignores the
// signal is killed after StopTimeout, with what it started.
func TestCommandWorkerStopAndDrain(t *testing.T) {
	t.Run("drain", func(t *testing.T) {
		w := newWorkerApp("sleep:700", "sleep:700", "ok")
		d, errc := startSource(t, w, w.testApp, Options{MaxChildren: 2, NoSignals: true})
		waitFor(t, "two jobs running", func() bool { return d.Status().Busy == 2 })
		d.Stop(Drain)
		waitRun(t, errc, "drain")
		for _, id := range []string{"sleep:700-0", "sleep:700-1"} {
			if r, ok := w.results[id]; !ok || !r.OK() {
				t.Errorf("%s: %+v (present %v); want it finished well", id, r, ok)
			}
		}
		if _, ok := w.results["ok-2"]; ok {
			t.Error("a job started during the drain")
		}
		noZombies(t)
	})
	t.Run("graceful", func(t *testing.T) {
		w := newWorkerApp("sleep:60000", "hang")
		var mu sync.Mutex
		var hanging bool // "hang" ignores SIGTERM once it has said so
		output := func(l Line) {
			mu.Lock()
			defer mu.Unlock()
			hanging = hanging || bytes.HasPrefix(l.Text, []byte("grandchild "))
		}
		d, errc := startSource(t, w, w.testApp, Options{MaxChildren: 2, NoSignals: true, StopTimeout: time.Second, Output: output})
		waitFor(t, "two jobs running, one hanging", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return hanging && d.Status().Busy == 2
		})
		time.Sleep(100 * time.Millisecond) // and "sleep" has started sleeping
		start := time.Now()
		d.Stop(Graceful)
		waitRun(t, errc, "graceful stop")
		if r := w.results["sleep:60000-0"]; r.Signal != syscall.SIGTERM || !r.Interrupted {
			t.Errorf("sleeping job: %+v; want interrupted by SIGTERM", r)
		}
		r := w.results["hang-1"]
		if r.Signal != syscall.SIGKILL || !r.Interrupted {
			t.Errorf("hung job: %+v; want interrupted, killed", r)
		}
		if took := time.Since(start); took < time.Second {
			t.Errorf("the stop took %v: the worker that ignores SIGTERM was killed before StopTimeout", took)
		}
		var grandchild int
		if i := bytes.Index(r.Output, []byte("grandchild")); i >= 0 {
			fmt.Sscanf(string(r.Output[i:]), "grandchild %d", &grandchild)
		}
		if grandchild == 0 || alive(grandchild) {
			t.Errorf("grandchild %d of the hung worker: alive %v (output %q)", grandchild, grandchild != 0 && alive(grandchild), r.Output)
		}
		noZombies(t)
	})
}

// A reload retires the command workers, so that the next jobs run in new
// ones (which would see a new command, environment or code).
func TestCommandWorkerReload(t *testing.T) {
	w := newWorkerApp("pid", "pid")
	w.want = 4
	d, errc := startSource(t, w, w.testApp, Options{MaxChildren: 1, NoSignals: true, IdleInterval: 50 * time.Millisecond})
	waitFor(t, "two results", func() bool { w.mu.Lock(); defer w.mu.Unlock(); return len(w.results) == 2 })
	if err := d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.queue = append(w.queue, &Job{ID: "pid-2", Payload: []byte("pid"), Attempt: 1}, &Job{ID: "pid-3", Payload: []byte("pid"), Attempt: 1})
	w.mu.Unlock()
	select {
	case <-w.allDone:
	case <-time.After(20 * time.Second):
		t.Fatal("the jobs after the reload did not run")
	}
	d.Stop(Drain)
	waitRun(t, errc, "drain")
	pid := func(id string) string { return strings.TrimSpace(string(w.results[id].Output)) }
	if pid("pid-0") != pid("pid-1") || pid("pid-2") != pid("pid-3") || pid("pid-1") == pid("pid-2") {
		t.Errorf("pids before the reload %s %s, after %s %s: want one worker before, a new one after",
			pid("pid-0"), pid("pid-1"), pid("pid-2"), pid("pid-3"))
	}
	noZombies(t)
}

// A job reaches the worker with its payload as bytes, its path and the
// rest of its Meta; a job that cannot be sent fails alone.
func TestCommandWorkerJobLine(t *testing.T) {
	w := newWorkerApp()
	payload := "echo:\x00\xff\n\"é"
	w.queue = []*Job{
		{ID: "a", Attempt: 3, Payload: []byte(payload), Meta: map[string]string{"path": "/spool/running/a", "name": "a", "k": "v"}},
		{ID: "b", Attempt: 1, Payload: []byte("ok"), Meta: map[string]string{"path": "/spool/\xff"}},
		{ID: "c", Attempt: 1, Payload: []byte("echo"), Meta: map[string]string{"path": "/spool/running/c"}},
	}
	w.want = 3
	res := runWorkers(t, w, Options{MaxChildren: 1})
	var got struct {
		ID      string
		Attempt int
		Slot    int
		Payload []byte
		Path    *string
		Meta    map[string]string
	}
	if err := json.Unmarshal(res["a"].Output, &got); err != nil {
		t.Fatalf("echo: %v: %q", err, res["a"].Output)
	}
	if got.ID != "a" || got.Attempt != 3 || got.Slot != 0 || string(got.Payload) != payload ||
		got.Path == nil || *got.Path != "/spool/running/a" || len(got.Meta) != 2 || got.Meta["name"] != "a" || got.Meta["k"] != "v" {
		t.Errorf("the worker got %+v", got)
	}
	if r := res["b"]; r.OK() || !strings.Contains(r.Error, "job path is not valid UTF-8") {
		t.Errorf("job with a path that is not UTF-8: %+v", r)
	}
	if err := json.Unmarshal(res["c"].Output, &got); err != nil || got.Meta != nil {
		t.Errorf("a job with only a path: %q, %v", res["c"].Output, err)
	}
	if n := w.d.Status().WorkersStarted; n != 1 {
		t.Errorf("%d workers started, want 1: the job that could not be sent left the worker be", n)
	}
}

// JobsPerChild 1 gives each job a worker of its own; 0 keeps a worker for
// ever; and WorkerCommand may choose a process per job instead.
func TestCommandWorkerLimits(t *testing.T) {
	pids := func(res map[string]Result) map[string]bool {
		m := map[string]bool{}
		for _, r := range res {
			m[strings.TrimSpace(string(r.Output))] = true
		}
		return m
	}
	w := newWorkerApp("pid", "pid", "pid", "pid")
	if p := pids(runWorkers(t, w, Options{MaxChildren: 1, JobsPerChild: 1})); len(p) != 4 {
		t.Errorf("JobsPerChild 1: pids %v, want 4", p)
	}
	w = newWorkerApp("pid", "pid", "pid", "pid")
	if p := pids(runWorkers(t, w, Options{MaxChildren: 1, JobsPerChild: 0})); len(p) != 1 {
		t.Errorf("JobsPerChild 0: pids %v, want 1", p)
	}
	w = newWorkerApp("exit 0", "exit 3")
	w.process = true
	res := runWorkers(t, w, Options{MaxChildren: 1, JobsPerChild: 5})
	if !res["exit 0-0"].OK() || res["exit 3-1"].ExitCode != 3 || w.calls != 2 {
		t.Errorf("processes: %+v, WorkerCommand called %d times", res, w.calls)
	}
	if _, err := New(cmdOnly{w.testApp, w.testApp, commandApp{w.testApp}}, Options{JobsPerChild: 2}); err == nil ||
		!strings.Contains(err.Error(), "WorkerCommander") {
		t.Errorf("a Commander without WorkerCommander and JobsPerChild 2: %v", err)
	}
}

// A command worker runs as Options.Credential, as each job's process
// does: in worker mode too, jobs run as their own user.
func TestCommandWorkerCredential(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to start a worker as another user, and CI=true")
		}
		t.Skip("needs root to start a worker as another user")
	}
	w := newWorkerApp("ok", "ok")
	// A worker of the line protocol in sh: the id is the first member of
	// each job line.
	w.spec = &Spec{Path: "/bin/sh", Args: []string{"sh", "-c", `while read -r line; do
		id=${line#'{"id":"'}; id=${id%%'"'*}
		echo "uid=$(id -u) gid=$(id -g)"
		printf '{"id":"%s","ok":true}\n' "$id" >&3
	done`}}
	res := runWorkers(t, w, Options{MaxChildren: 1, Credential: &syscall.Credential{Uid: 65534, Gid: 65534}})
	for id, r := range res {
		if !r.OK() || !strings.Contains(string(r.Output), "uid=65534 gid=65534") {
			t.Errorf("job %s: %v, output %q; want it run by uid and gid 65534", id, r, r.Output)
		}
	}
	if len(res) != 2 {
		t.Errorf("%d results, want 2", len(res))
	}
}
