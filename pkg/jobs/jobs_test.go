package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary is also the daemon's child: TestMain runs Run for a
// re-executed child, as an application's main would, or is a command
// worker (helperLines).
func TestMain(m *testing.M) {
	if os.Getenv(envLinesWorker) != "" {
		helperLines() // exits
	}
	if IsChild() {
		d, err := New(&testApp{}, Options{})
		if err != nil {
			panic(err)
		}
		d.Run(context.Background()) // exits
	}
	os.Exit(m.Run())
}

// testApp serves a fixed list of jobs and records their results. Its
// RunJob does what the payload says.
type testApp struct {
	mu      sync.Mutex
	queue   []*Job
	results map[string]Result
	loads   int
	want    int // stop the daemon once this many results are in
	d       *Daemon
	allDone chan struct{}
}

var childFirstJob = true // per process: counts worker starts through Vars

func (a *testApp) LoadConfig(ctx context.Context) error {
	if os.Getenv("JOBS_TEST_CHILD_LOADS") != "" {
		_, err := VarsFrom(ctx).Add("child-loads", 1)
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.loads++
	if os.Getenv("JOBS_TEST_FAIL_RELOAD") != "" && a.loads > 1 {
		return errors.New("bad config")
	}
	return nil
}

func (a *testApp) NextJob(ctx context.Context, slot int) (*Job, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.queue) == 0 {
		return nil, nil
	}
	j := a.queue[0]
	a.queue = a.queue[1:]
	switch string(j.Payload) {
	case "next-panic":
		panic("NextJob exploded")
	case "next-error":
		return nil, errors.New("source unavailable")
	}
	return j, nil
}

func (a *testApp) RunJob(ctx context.Context, job *Job) error {
	if childFirstJob {
		childFirstJob = false
		if _, err := VarsFrom(ctx).Add("workers", 1); err != nil {
			return err
		}
	}
	p := string(job.Payload)
	switch {
	case p == "ok":
		return nil
	case p == "fail":
		return errors.New("job failed on purpose")
	case p == "panic":
		panic("RunJob exploded")
	case p == "sleep":
		if _, err := VarsFrom(ctx).Add("sleeping", 1); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Hour):
			return nil
		}
	case p == "hang":
		if _, err := VarsFrom(ctx).Add("hanging", 1); err != nil {
			return err
		}
		time.Sleep(time.Hour) // ignores ctx: must be killed
		return nil
	case p == "nap":
		if _, err := VarsFrom(ctx).Add("napping", 1); err != nil {
			return err
		}
		time.Sleep(300 * time.Millisecond)
		return nil
	case p == "kill-self":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Hour)
	case p == "count":
		_, err := VarsFrom(ctx).Add("counter", 1)
		return err
	case p == "spin":
		// 200 ms of this process's CPU, not of the clock: on a loaded
		// machine the clock runs on while the job waits for a core.
		u0, s0, _ := rusageSelf()
		for {
			u, s, _ := rusageSelf()
			if u+s-u0-s0 >= 200*time.Millisecond {
				return nil
			}
		}
	case p == "print":
		fmt.Println("hello from", job.ID)
		return nil
	case strings.HasPrefix(p, "exit:"):
		code, _ := strconv.Atoi(p[5:])
		os.Exit(code)
	}
	return fmt.Errorf("unknown payload %q", p)
}

func (a *testApp) Done(ctx context.Context, job *Job, res Result) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, dup := a.results[job.ID]; dup {
		panic("result twice for " + job.ID)
	}
	a.results[job.ID] = res
	if len(a.results) == a.want {
		close(a.allDone)
	}
	return nil
}

func newTestApp(payloads ...string) *testApp {
	a := &testApp{results: map[string]Result{}, want: len(payloads), allDone: make(chan struct{})}
	for i, p := range payloads {
		a.queue = append(a.queue, &Job{ID: fmt.Sprintf("%s-%d", p, i), Payload: []byte(p), Attempt: 1})
	}
	return a
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// runApp runs a daemon for a until all its results are in, then drains it
// and returns the results.
func runApp(t *testing.T, a *testApp, opts Options) map[string]Result {
	t.Helper()
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	opts.NoSignals = true
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	d, err := New(a, opts)
	if err != nil {
		t.Fatal(err)
	}
	a.d = d
	errc := make(chan error, 1)
	go func() { errc <- d.Run(context.Background()) }()
	select {
	case <-a.allDone:
	case err := <-errc:
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(60 * time.Second):
		a.mu.Lock()
		t.Fatalf("only %d of %d results after 60 s", len(a.results), a.want)
	}
	d.Stop(Drain)
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	return a.results
}

func TestOneJobPerChild(t *testing.T) {
	a := newTestApp("ok", "fail", "panic", "exit:3", "kill-self", "ok", "print")
	res := runApp(t, a, Options{MaxChildren: 3})
	check := func(id string, ok bool, code int, sig syscall.Signal, errPart string) {
		t.Helper()
		r, found := res[id]
		if !found {
			t.Fatalf("no result for %s", id)
		}
		if r.OK() != ok || r.ExitCode != code || r.Signal != sig || !strings.Contains(r.Error, errPart) {
			t.Errorf("%s: %+v (%s)", id, r, r.String())
		}
	}
	check("ok-0", true, 0, 0, "")
	check("fail-1", false, 1, 0, "job failed on purpose")
	check("panic-2", false, 2, 0, "panic in RunJob: RunJob exploded")
	check("exit:3-3", false, 3, 0, "worker exited during the job: exit 3")
	check("kill-self-4", false, -1, syscall.SIGKILL, "signal killed")
	check("ok-5", true, 0, 0, "")
	if r := res["print-6"]; !strings.Contains(string(r.Output), "hello from print-6") {
		t.Errorf("output tail of print-6: %q", r.Output)
	}
	if r := res["ok-0"]; r.Duration <= 0 || r.MaxRSS <= 0 {
		t.Errorf("ok-0 not measured: %+v", r)
	}
	if got, _, _ := a.d.vars.Get("workers"); got != "7" {
		t.Errorf("%s children ran jobs, want 7 (one per job)", got)
	}
}

// 10 000 trivial jobs over 2 workers that retire every 1 000 jobs, one of
// which is killed mid-job: every job has exactly one result.
func TestWorkers(t *testing.T) {
	payloads := make([]string, 10000)
	for i := range payloads {
		payloads[i] = "ok"
	}
	payloads[5000] = "kill-self"
	a := newTestApp(payloads...)
	res := runApp(t, a, Options{MaxChildren: 2, JobsPerChild: 1000})
	if len(res) != len(payloads) {
		t.Fatalf("%d results, want %d", len(res), len(payloads))
	}
	failed := 0
	for id, r := range res {
		if !r.OK() {
			failed++
			if id != "kill-self-5000" || r.Signal != syscall.SIGKILL {
				t.Errorf("%s: %s", id, r.String())
			}
		}
	}
	if failed != 1 {
		t.Errorf("%d failed jobs, want 1", failed)
	}
	n, _, _ := a.d.vars.Get("workers")
	if w, _ := strconv.Atoi(n); w < 11 {
		t.Errorf("%d workers ran jobs, want at least 11 (10 recycled and 1 replaced)", w)
	}
}

// A Go worker charges each job the CPU the worker spent since the previous
// job ended: a job that spins 200 ms of CPU is charged at least that, and
// the jobs around it in the same worker are not.
func TestWorkerJobCPU(t *testing.T) {
	a := newTestApp("ok", "spin", "ok", "ok")
	res := runApp(t, a, Options{MaxChildren: 1, JobsPerChild: 10})
	cpu := func(id string) time.Duration {
		r := res[id]
		if !r.OK() || r.CPUFrom != "worker" {
			t.Errorf("%s: %s, CPU from %q; want a success measured by the worker", id, r.String(), r.CPUFrom)
		}
		return r.UserCPU + r.SysCPU
	}
	if c := cpu("spin-1"); c < 200*time.Millisecond {
		t.Errorf("the job that spun 200 ms of CPU is charged %v", c)
	}
	for _, id := range []string{"ok-0", "ok-2", "ok-3"} {
		if c := cpu(id); c > 100*time.Millisecond {
			t.Errorf("%s, a job that does nothing, is charged %v", id, c)
		}
	}
}

func TestVarsFromChildren(t *testing.T) {
	payloads := make([]string, 50)
	for i := range payloads {
		payloads[i] = "count"
	}
	a := newTestApp(payloads...)
	t.Setenv("JOBS_TEST_CHILD_LOADS", "1")
	res := runApp(t, a, Options{MaxChildren: 4, JobsPerChild: 5})
	for id, r := range res {
		if !r.OK() {
			t.Fatalf("%s: %s", id, r.String())
		}
	}
	if v, _, _ := a.d.vars.Get("counter"); v != "50" {
		t.Errorf("counter = %q, want 50", v)
	}
	// LoadConfig ran in the parent at start (counted as a child load here,
	// since the variable is set) and once in each child.
	loads, _, _ := a.d.vars.Get("child-loads")
	workers, _, _ := a.d.vars.Get("workers")
	l, _ := strconv.Atoi(loads)
	w, _ := strconv.Atoi(workers)
	if w < 10 || l != w+1 {
		t.Errorf("child-loads %d, workers %d: want one load per child plus the parent's", l, w)
	}
}

func TestJobTimeoutInWorker(t *testing.T) {
	a := newTestApp("sleep", "hang", "ok")
	// The timeout leaves the worker time to start and catch TERM even on a
	// loaded machine: "hang" must die of the SIGKILL, not of an early TERM.
	res := runApp(t, a, Options{MaxChildren: 3, JobsPerChild: 10, JobTimeout: 1500 * time.Millisecond, KillGrace: 300 * time.Millisecond})
	if r := res["sleep-0"]; !r.TimedOut || r.OK() {
		t.Errorf("sleep: %+v", r)
	}
	if r := res["hang-1"]; !r.TimedOut || r.Signal != syscall.SIGKILL {
		t.Errorf("hang: %+v, want timeout with SIGKILL", r)
	}
	if r := res["ok-2"]; !r.OK() {
		t.Errorf("ok: %s", r.String())
	}
}

// A Go job is stopped with the stop signal, whichever it is: the worker
// catches the one its job was sent with, so that the job's context is
// cancelled and it returns, rather than dying of the signal's default
// action (SIGQUIT: a goroutine dump; SIGUSR1: death).
func TestGoJobStopSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGQUIT} {
		t.Run(sig.String(), func(t *testing.T) {
			a := newTestApp("sleep")
			res := runApp(t, a, Options{MaxChildren: 1, JobTimeout: 1500 * time.Millisecond, KillGrace: 10 * time.Second, StopSignal: sig})
			r := res["sleep-0"]
			if !r.TimedOut || r.Signal != 0 || !strings.Contains(r.Error, context.Canceled.Error()) {
				t.Errorf("timed out %v, signal %v, error %q; want timed out, the job returned its context's error (not killed by a signal)", r.TimedOut, r.Signal, r.Error)
			}
		})
	}
}

// A reload that changes the stop signal while a Go job runs: a graceful
// stop sends that job the signal it was sent with, the one its worker
// catches, not the new one (SIGQUIT would dump the worker's goroutines).
func TestGoJobStopSignalAfterReload(t *testing.T) {
	a := newTestApp("sleep")
	d, errc := startApp(t, a, Options{MaxChildren: 1, NoSignals: true, StopSignal: syscall.SIGUSR1,
		StopTimeout: 10 * time.Second, OnReload: func(o *Options) error { o.StopSignal = syscall.SIGQUIT; return nil }})
	waitVar(t, d, "sleeping")
	if err := d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	d.Stop(Graceful)
	waitRun(t, errc, "graceful stop")
	r := a.results["sleep-0"]
	if !r.Interrupted || r.Signal != 0 || !strings.Contains(r.Error, context.Canceled.Error()) {
		t.Errorf("interrupted %v, signal %v, error %q; want interrupted, the job returned its context's error", r.Interrupted, r.Signal, r.Error)
	}
}

// A Go worker catches SIGTERM whatever the stop signal: an operator's (or
// a service manager's) TERM to the worker cancels its job's context, as
// the daemon's stop signal would, rather than killing it.
func TestGoJobOutsideTERM(t *testing.T) {
	a := newTestApp("sleep")
	d, errc := startApp(t, a, Options{MaxChildren: 1, NoSignals: true, StopSignal: syscall.SIGUSR1})
	waitVar(t, d, "sleeping")
	st := d.Status()
	if len(st.Slots) != 1 || st.Slots[0].Pid <= 0 {
		t.Fatalf("slots: %+v, want the worker's", st.Slots)
	}
	if err := syscall.Kill(st.Slots[0].Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); d.Status().Busy > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the job still runs 10 s after its worker got TERM")
		}
	}
	d.Stop(Drain)
	waitRun(t, errc, "drain")
	if r := a.results["sleep-0"]; r.Signal != 0 || !strings.Contains(r.Error, context.Canceled.Error()) {
		t.Errorf("signal %v, error %q; want the job to return its context's error", r.Signal, r.Error)
	}
}

// A command job is stopped with the signal in force when it started: a
// reload that changes StopSignal applies to the next jobs, not to a
// running one, which a graceful stop sends the old.
func TestCommandJobStopSignalAfterReload(t *testing.T) {
	started := filepath.Join(t.TempDir(), "started")
	a := newTestApp(": >" + started + "; exec sleep 30")
	d, err := New(cmdOnly{a, a, commandApp{a}}, Options{MaxChildren: 1, NoSignals: true, Logger: testLogger(t),
		StopSignal: syscall.SIGUSR1, StopTimeout: 10 * time.Second,
		OnReload: func(o *Options) error { o.StopSignal = syscall.SIGQUIT; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- d.Run(context.Background()) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the job never started")
		}
	}
	if err := d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	d.Stop(Graceful)
	waitRun(t, errc, "graceful stop")
	for _, r := range a.results {
		if !r.Interrupted || r.Signal != syscall.SIGUSR1 {
			t.Errorf("interrupted %v, signal %v; want interrupted by SIGUSR1, the signal in force when it started", r.Interrupted, r.Signal)
		}
	}
	if len(a.results) != 1 {
		t.Errorf("%d results, want 1", len(a.results))
	}
}

// With NoForwardSignals a graceful stop sends a Go job nothing, though
// its worker has a stop signal of its own (SetStopSignal): the job runs on
// and is killed at the stop's deadline.
func TestGoJobNoForwardSignals(t *testing.T) {
	a := newTestApp("sleep")
	d, errc := startApp(t, a, Options{MaxChildren: 1, NoSignals: true, StopSignal: syscall.SIGUSR1,
		NoForwardSignals: true, StopTimeout: 500 * time.Millisecond})
	waitVar(t, d, "sleeping")
	d.Stop(Graceful)
	waitRun(t, errc, "graceful stop")
	if r := a.results["sleep-0"]; !r.Interrupted || r.Signal != syscall.SIGKILL {
		t.Errorf("interrupted %v, signal %v, error %q; want killed at the stop's deadline", r.Interrupted, r.Signal, r.Error)
	}
}

func TestHookErrorsDoNotStopTheDaemon(t *testing.T) {
	a := newTestApp("next-panic", "next-error", "ok", "ok")
	a.want = 2 // the first two never become jobs
	res := runApp(t, a, Options{MaxChildren: 1})
	if !res["ok-2"].OK() || !res["ok-3"].OK() {
		t.Errorf("results after hook errors: %+v", res)
	}
}

type failingSource struct{ calls int }

func (f *failingSource) NextJob(context.Context, int) (*Job, error) {
	f.calls++
	return nil, errors.New("database down")
}
func (f *failingSource) RunJob(context.Context, *Job) error { return nil }

func TestMaxHookErrorsStops(t *testing.T) {
	src := &failingSource{}
	err := Run(context.Background(), src, Options{MaxHookErrors: 3, NoSignals: true, Logger: testLogger(t), IdleInterval: 20 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "database down") || src.calls != 3 {
		t.Errorf("Run = %v after %d calls; want the source's error after 3", err, src.calls)
	}
}

// commandApp runs each job as /bin/sh with the payload as its script.
type commandApp struct{ *testApp }

func (c commandApp) Command(ctx context.Context, job *Job) (*Spec, error) {
	if string(job.Payload) == "refuse" {
		return nil, errors.New("no command for this job")
	}
	return &Spec{Path: "/bin/sh", Args: []string{"sh", "-c", string(job.Payload)}, Env: []string{"JOB_ID=" + job.ID}}, nil
}

type cmdOnly struct {
	Source
	Acker
	Commander
}

func TestCommandJobs(t *testing.T) {
	a := newTestApp("exit 0", "exit 4", "echo $JOB_ID", "kill -TERM $$", "refuse", "sleep 10")
	d, err := New(cmdOnly{a, a, commandApp{a}}, Options{MaxChildren: 2, NoSignals: true, Logger: testLogger(t), JobTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- d.Run(context.Background()) }()
	select {
	case <-a.allDone:
	case <-time.After(30 * time.Second):
		t.Fatal("timeout")
	}
	d.Stop(Drain)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	r := a.results
	if !r["exit 0-0"].OK() || r["exit 4-1"].ExitCode != 4 {
		t.Errorf("exit codes: %+v %+v", r["exit 0-0"], r["exit 4-1"])
	}
	if got := string(r["echo $JOB_ID-2"].Output); got != "echo $JOB_ID-2\n" {
		t.Errorf("output %q", got)
	}
	if r["kill -TERM $$-3"].Signal != syscall.SIGTERM {
		t.Errorf("signal: %+v", r["kill -TERM $$-3"])
	}
	if e := r["refuse-4"].Error; !strings.Contains(e, "no command for this job") {
		t.Errorf("refused job: %q", e)
	}
	if !r["sleep 10-5"].TimedOut {
		t.Errorf("sleep: %+v", r["sleep 10-5"])
	}
}

// Signals reach a running daemon: HUP reloads, TTIN and TTOU scale, USR2
// and CONT pause and resume, TERM stops.
func TestSignals(t *testing.T) {
	t.Setenv("JOBS_TEST_FAIL_RELOAD", "")
	a := newTestApp()
	d, err := New(a, Options{MaxChildren: 2, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- d.Run(context.Background()) }()
	waitFor := func(what string, cond func(Status) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if cond(d.Status()) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("%s: status %+v", what, d.Status())
	}
	waitFor("start", func(s Status) bool { return s.State == StateRunning })
	self := os.Getpid()
	syscall.Kill(self, syscall.SIGHUP)
	waitFor("reload", func(s Status) bool { return s.Generation == 2 })
	syscall.Kill(self, syscall.SIGTTIN)
	waitFor("ttin", func(s Status) bool { return s.MaxChildren == 3 })
	// Standard signals do not queue: send the second TTOU after the first
	// was handled.
	syscall.Kill(self, syscall.SIGTTOU)
	waitFor("ttou", func(s Status) bool { return s.MaxChildren == 2 })
	syscall.Kill(self, syscall.SIGTTOU)
	waitFor("ttou", func(s Status) bool { return s.MaxChildren == 1 })
	syscall.Kill(self, syscall.SIGUSR2)
	waitFor("pause", func(s Status) bool { return s.State == StatePaused })
	syscall.Kill(self, syscall.SIGCONT)
	waitFor("resume", func(s Status) bool { return s.State == StateRunning })
	syscall.Kill(self, syscall.SIGTERM)
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("TERM did not stop the daemon")
	}
	if a.loads != 2 {
		t.Errorf("LoadConfig ran %d times, want 2", a.loads)
	}
}

func TestReloadRefused(t *testing.T) {
	t.Setenv("JOBS_TEST_FAIL_RELOAD", "1")
	a := newTestApp()
	d, _ := New(a, Options{MaxChildren: 1, NoSignals: true, Logger: testLogger(t)})
	errc := make(chan error, 1)
	go func() { errc <- d.Run(context.Background()) }()
	if err := d.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "bad config") {
		t.Errorf("Reload = %v, want the LoadConfig error", err)
	}
	if g := d.Status().Generation; g != 1 {
		t.Errorf("generation %d after a refused reload", g)
	}
	d.Stop(Immediate)
	<-errc
	if err := d.Reload(context.Background()); err != ErrNotRunning {
		t.Errorf("Reload after Run: %v", err)
	}
}

// A graceful stop with a job running: the job's context is cancelled, and
// its result still reaches Done before Run returns.
func TestGracefulStopAcknowledges(t *testing.T) {
	a := newTestApp("sleep")
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	d, _ := New(a, Options{MaxChildren: 1, NoSignals: true, Logger: testLogger(t)})
	errc := make(chan error, 1)
	go func() { errc <- d.Run(context.Background()) }()
	// Stop once RunJob runs: a child stopped while it starts up dies of
	// the signal itself, before it can turn it into a cancelled context.
	deadline := time.Now().Add(10 * time.Second)
	for v, _, _ := d.vars.Get("sleeping"); v != "1"; v, _, _ = d.vars.Get("sleeping") {
		if time.Now().After(deadline) {
			t.Fatal("job never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.Stop(Graceful)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	r, ok := a.results["sleep-0"]
	if !ok || r.OK() || !strings.Contains(r.Error, "context canceled") || !r.Interrupted {
		t.Errorf("result after graceful stop: %+v (present %v)", r, ok)
	}
}

func TestRetry(t *testing.T) {
	r := Retry{MaxAttempts: 4, Base: time.Second, Max: 3 * time.Second}
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 3 * time.Second} {
		if d, ok := r.After(attempt); !ok || d != want {
			t.Errorf("After(%d) = %v, %v; want %v", attempt, d, ok, want)
		}
	}
	if _, ok := r.After(4); ok {
		t.Error("After(4) allows a fifth attempt")
	}
	j := Retry{MaxAttempts: 100, Base: time.Second, Jitter: 0.5}
	for i := 0; i < 100; i++ {
		if d, _ := j.After(1); d < 500*time.Millisecond || d > 1500*time.Millisecond {
			t.Fatalf("jittered delay %v outside ±50%%", d)
		}
	}
}

func TestCodecRoundTrip(t *testing.T) {
	j := &Job{ID: "a/b", Payload: []byte{0, 1, 2}, Attempt: 3, Slot: 7, Meta: map[string]string{"k": "v", "x": ""}}
	got, stop, err := decodeJob(encodeJob(nil, j, syscall.SIGUSR2))
	if err != nil {
		t.Fatal(err)
	}
	if stop != syscall.SIGUSR2 {
		t.Errorf("stop signal %v, want %v", stop, syscall.SIGUSR2)
	}
	if got.ID != j.ID || string(got.Payload) != string(j.Payload) || got.Attempt != 3 || got.Slot != 7 || len(got.Meta) != 2 || got.Meta["k"] != "v" {
		t.Errorf("round trip: %+v", got)
	}
	b := encodeJob(nil, j, syscall.SIGTERM)
	for i := 0; i < len(b); i++ {
		if _, _, err := decodeJob(b[:i]); err == nil {
			t.Errorf("truncated to %d bytes: no error", i)
		}
	}
}

func TestStopWhenIdle(t *testing.T) {
	a := newTestApp("ok", "ok", "fail")
	asked := 0
	err := Run(context.Background(), a, Options{
		MaxChildren: 2, NoSignals: true, Logger: testLogger(t),
		StopWhenIdle: func() bool { asked++; return true },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.results) != 3 || asked == 0 {
		t.Errorf("%d results, StopWhenIdle asked %d times; want all 3 jobs done first", len(a.results), asked)
	}
}

// OnReload edits the options in force; they apply only when the reload
// succeeds.
func TestReloadAppliesOptions(t *testing.T) {
	a := newTestApp()
	calls := 0
	d, err := New(a, Options{MaxChildren: 2, NoSignals: true, Logger: testLogger(t), OnReload: func(o *Options) error {
		calls++
		if o.MaxChildren != map[int]int{1: 2, 2: 5}[calls] {
			t.Errorf("reload %d: OnReload sees MaxChildren %d", calls, o.MaxChildren)
		}
		if calls == 2 {
			o.MaxChildren = 9
			return errors.New("new config refused")
		}
		o.MaxChildren = 5
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- d.Run(context.Background()) }()
	if err := d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := d.Status(); s.MaxChildren != 5 || s.Generation != 2 {
		t.Errorf("after a reload: max %d, generation %d", s.MaxChildren, s.Generation)
	}
	if err := d.Reload(context.Background()); err == nil {
		t.Error("refused reload returned nil")
	}
	if s := d.Status(); s.MaxChildren != 5 || s.Generation != 2 {
		t.Errorf("after a refused reload: max %d, generation %d", s.MaxChildren, s.Generation)
	}
	d.Stop(Immediate)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// startApp runs a daemon with signals handled, and returns it with the
// channel Run's error arrives on.
func startApp(t *testing.T, a *testApp, opts Options) (*Daemon, chan error) {
	t.Helper()
	return startSource(t, a, a, opts)
}

// startSource is startApp for a source that wraps a.
func startSource(t *testing.T, app Source, a *testApp, opts Options) (*Daemon, chan error) {
	t.Helper()
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	opts.Logger = testLogger(t)
	d, err := New(app, opts)
	if err != nil {
		t.Fatal(err)
	}
	a.d = d
	errc := make(chan error, 1)
	go func() { errc <- d.Run(context.Background()) }()
	return d, errc
}

// waitVar waits until the shared variable key is set: a job has started.
func waitVar(t *testing.T, d *Daemon, key string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for v, _, _ := d.vars.Get(key); v == ""; v, _, _ = d.vars.Get(key) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never set", key)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitRun(t *testing.T, errc chan error, what string) {
	t.Helper()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("%s: Run: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: Run did not return", what)
	}
}

// A paused daemon starts no job until it is resumed.
func TestPauseHoldsJobs(t *testing.T) {
	a := newTestApp("ok", "ok", "ok")
	// OnReady runs before the dispatcher's first look at the source, and
	// the dispatcher handles the pause first. (startApp sets a.d first.)
	d, errc := startApp(t, a, Options{MaxChildren: 2, NoSignals: true, OnReady: func() { a.d.Pause() }})
	time.Sleep(300 * time.Millisecond)
	if s := d.Status(); s.RunsStarted != 0 || s.State != StatePaused {
		t.Fatalf("paused daemon: %+v", s)
	}
	d.Resume()
	select {
	case <-a.allDone:
	case <-time.After(10 * time.Second):
		t.Fatal("jobs did not run after Resume")
	}
	d.Stop(Drain)
	waitRun(t, errc, "drain")
}

// QUIT drains: the running job finishes well, the queued one never starts.
func TestQuitDrains(t *testing.T) {
	a := newTestApp("nap", "ok")
	d, errc := startApp(t, a, Options{MaxChildren: 1})
	waitVar(t, d, "napping")
	syscall.Kill(os.Getpid(), syscall.SIGQUIT)
	waitRun(t, errc, "QUIT")
	if r, ok := a.results["nap-0"]; !ok || !r.OK() {
		t.Errorf("the running job: %+v (present %v); want it finished well", r, ok)
	}
	if _, ok := a.results["ok-1"]; ok || len(a.queue) != 1 {
		t.Errorf("a job started during the drain (queue left: %d)", len(a.queue))
	}
}

// A second TERM turns a graceful stop into an immediate one: a job that
// ignores the first is killed at once, not after StopTimeout.
func TestSecondTermKills(t *testing.T) {
	a := newTestApp("hang")
	d, errc := startApp(t, a, Options{MaxChildren: 1, StopTimeout: time.Hour})
	waitVar(t, d, "hanging")
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for d.Status().State != StateStopping {
		if time.Now().After(deadline) {
			t.Fatal("first TERM did not start a stop")
		}
		time.Sleep(5 * time.Millisecond)
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	waitRun(t, errc, "second TERM")
	if r := a.results["hang-0"]; r.Signal != syscall.SIGKILL || !r.Interrupted {
		t.Errorf("hung job: %+v; want killed, interrupted", r)
	}
}

// watchedSource has one job, handed out only once Wake has been sent, and
// counts the NextJob calls; Watching says what watching holds.
type watchedSource struct {
	mu       sync.Mutex
	calls    int
	ready    bool
	watching bool
	wake     chan struct{}
	done     chan Result
}

func (s *watchedSource) NextJob(context.Context, int) (*Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if !s.ready {
		return nil, nil
	}
	s.ready = false
	return &Job{ID: "late"}, nil
}
func (s *watchedSource) Command(context.Context, *Job) (*Spec, error) {
	return &Spec{Path: "/bin/true"}, nil
}
func (s *watchedSource) Done(_ context.Context, _ *Job, res Result) error {
	s.done <- res
	return nil
}
func (s *watchedSource) Wake() <-chan struct{} { return s.wake }
func (s *watchedSource) Watching() bool        { return s.watching }
func (s *watchedSource) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// A source that watches (Watcher) is not polled: with nothing ready, the
// dispatcher asks it again only when it wakes the dispatcher, and then
// runs the job at once. One that does not watch is asked every
// IdleInterval.
func TestWatcherIsNotPolled(t *testing.T) {
	for _, watching := range []bool{true, false} {
		t.Run(fmt.Sprintf("watching=%v", watching), func(t *testing.T) {
			s := &watchedSource{watching: watching, wake: make(chan struct{}, 1), done: make(chan Result, 1)}
			d, err := New(s, Options{NoSignals: true, Logger: testLogger(t), IdleInterval: 5 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() { errc <- d.Run(context.Background()) }()
			time.Sleep(300 * time.Millisecond) // 60 idle intervals
			calls := s.count()
			if watching && calls != 1 {
				t.Errorf("NextJob called %d times with nothing ready and no wake-up; want once", calls)
			}
			if !watching && calls < 5 {
				t.Errorf("NextJob called %d times in 60 idle intervals: the source is not polled", calls)
			}
			s.mu.Lock()
			s.ready = true
			s.mu.Unlock()
			s.wake <- struct{}{}
			select {
			case res := <-s.done:
				if !res.OK() {
					t.Errorf("the job: %v", res)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the job did not run after the wake-up")
			}
			d.Stop(Graceful)
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}
