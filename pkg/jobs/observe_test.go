package jobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// recorder is an Observer that keeps what it was told.
type recorder struct {
	mu       sync.Mutex
	started  map[string]time.Duration
	finished map[string]Result
	verdicts map[string]Verdict
}

func (r *recorder) JobStarted(job *Job, wait time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.started[job.ID] = wait
}

func (r *recorder) JobFinished(job *Job, res Result, v Verdict) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished[job.ID] = res
	if r.verdicts != nil {
		r.verdicts[job.ID] = v
	}
}

// The Observer hears of every start and end, with a dispatch latency; a
// retried job is counted; the queue depth comes from the Source.
func TestObserverAndCounters(t *testing.T) {
	a := newTestApp("ok", "fail", "ok")
	a.queue[2].Attempt = 2 // a retry
	rec := &recorder{started: map[string]time.Duration{}, finished: map[string]Result{}}
	runApp(t, a, Options{MaxChildren: 2, Observer: rec})
	if len(rec.started) != 3 || len(rec.finished) != 3 {
		t.Fatalf("observer saw %d starts and %d ends, want 3 and 3", len(rec.started), len(rec.finished))
	}
	for id, wait := range rec.started {
		if wait <= 0 || wait > 30*time.Second {
			t.Errorf("dispatch latency of %s = %v", id, wait)
		}
	}
	if rec.finished["fail-1"].OK() || !rec.finished["ok-0"].OK() {
		t.Errorf("results: %+v", rec.finished)
	}
	s := a.d.Status()
	if s.RunsStarted != 3 || s.RunsSucceeded != 2 || s.RunsFailed != 1 || s.JobsCompleted != 2 || s.JobsRetried != 0 {
		t.Errorf("counters: %+v", s)
	}
	if s.Queued != -1 {
		t.Errorf("Queued = %d for a source without Depth, want -1", s.Queued)
	}
}

type depthApp struct {
	*testApp
	depth int
}

func (d depthApp) Depth() (int, error) { return d.depth, nil }

// Status reports each running child with its pid, job, CPU and memory, the
// time spent with every slot busy, and the source's queue depth.
func TestStatusOfRunningJobs(t *testing.T) {
	a := newTestApp("sleep", "sleep")
	d, errc := startSource(t, depthApp{a, 42}, a, Options{MaxChildren: 2, NoSignals: true})
	waitFor(t, "two jobs running", func() bool { s := d.Status(); return s.Busy == 2 })
	time.Sleep(100 * time.Millisecond)
	s := d.Status()
	if s.State != StateRunning || s.Queued != 42 || len(s.Slots) != 2 {
		t.Fatalf("status: %+v", s)
	}
	for i, ss := range s.Slots {
		if ss.Slot != i || ss.JobID != "sleep-0" && ss.JobID != "sleep-1" || ss.JobID == s.Slots[1-i].JobID {
			t.Errorf("slot %d: %+v", i, ss)
		}
		if syscall.Kill(ss.Pid, 0) != nil {
			t.Errorf("slot %d: pid %d does not exist", i, ss.Pid)
		}
		// A sleeping child may not have used a clock tick (10 ms) of CPU
		// yet; pkg/pool's TestUsage checks CPU time with a busy child.
		if ss.RSS < 1<<20 || ss.UserCPU+ss.SysCPU > s.Uptime+time.Second {
			t.Errorf("slot %d: usage of a Go child: rss %d, cpu %v+%v", i, ss.RSS, ss.UserCPU, ss.SysCPU)
		}
		if ss.Runtime < 100*time.Millisecond {
			t.Errorf("slot %d: runtime %v", i, ss.Runtime)
		}
	}
	if s.Saturated < 100*time.Millisecond || s.Saturated > s.Uptime {
		t.Errorf("saturated for %v of %v, with both slots busy", s.Saturated, s.Uptime)
	}
	if sum := d.Summary(); sum.Busy != 2 || sum.Slots != nil || sum.Queued != 42 {
		t.Errorf("summary: %+v", sum)
	}
	d.Stop(Graceful)
	waitRun(t, errc, "stop")
}

// OnStop hears of each stop and escalation, never of a softening.
func TestOnStop(t *testing.T) {
	var modes []StopMode
	a := newTestApp("hang")
	d, errc := startApp(t, a, Options{MaxChildren: 1, NoSignals: true, StopTimeout: time.Hour,
		OnStop: func(m StopMode) { modes = append(modes, m) }})
	waitVar(t, d, "hanging")
	d.Stop(Graceful)
	d.Stop(Drain)
	d.Stop(Immediate)
	waitRun(t, errc, "stop")
	if len(modes) != 2 || modes[0] != Graceful || modes[1] != Immediate {
		t.Errorf("OnStop got %v, want [graceful immediate]", modes)
	}
}

// SignalJob reaches the job's process group; an unknown job is an error.
func TestSignalJob(t *testing.T) {
	a := newTestApp("sleep")
	a.want = 1
	d, errc := startApp(t, a, Options{MaxChildren: 1, NoSignals: true})
	waitVar(t, d, "sleeping")
	if err := d.SignalJob("nope", syscall.SIGTERM); !errors.Is(err, ErrNoSuchJob) {
		t.Errorf("SignalJob(unknown) = %v, want ErrNoSuchJob", err)
	}
	if err := d.SignalJob("sleep-0", syscall.SIGKILL); err != nil {
		t.Fatalf("SignalJob: %v", err)
	}
	select {
	case <-a.allDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the signalled job did not end")
	}
	if r := a.results["sleep-0"]; r.Signal != syscall.SIGKILL || r.Interrupted {
		t.Errorf("result: %+v; want killed by SIGKILL, not interrupted", r)
	}
	d.Stop(Drain)
	waitRun(t, errc, "drain")
}

// Every reload, by signal or by call, is counted and reported to
// OnReloaded; USR1 calls OnReopen; Heartbeat beats.
func TestReloadCountsReopenHeartbeat(t *testing.T) {
	var reloaded []error
	var mu sync.Mutex
	var beats, reopens atomic.Int32
	fail := false
	a := newTestApp()
	d, errc := startApp(t, a, Options{
		MaxChildren: 1,
		OnReload: func(*Options) error {
			if fail {
				return errors.New("config.toml:3: bad")
			}
			return nil
		},
		OnReloaded: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			reloaded = append(reloaded, err)
		},
		OnReopen:          func() { reopens.Add(1) },
		Heartbeat:         func() { beats.Add(1) },
		HeartbeatInterval: 10 * time.Millisecond,
	})
	waitFor(t, "running", func() bool { return d.Status().State == StateRunning })
	if err := d.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	fail = true // read on the dispatcher, which Reload synchronises with
	if err := d.Reload(t.Context()); err == nil || err.Error() != "config.toml:3: bad" {
		t.Errorf("refused reload returned %v", err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	waitFor(t, "reopen", func() bool { return reopens.Load() == 1 })
	waitFor(t, "heartbeats", func() bool { return beats.Load() >= 3 })
	s := d.Status()
	if s.Reloads != 1 || s.ReloadsFailed != 1 || s.Generation != 2 {
		t.Errorf("reload counters: %d ok, %d failed, generation %d", s.Reloads, s.ReloadsFailed, s.Generation)
	}
	mu.Lock()
	if len(reloaded) != 2 || reloaded[0] != nil || reloaded[1] == nil {
		t.Errorf("OnReloaded got %v", reloaded)
	}
	mu.Unlock()
	d.Stop(Drain)
	waitRun(t, errc, "drain")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A stopping daemon refuses a reload without calling the hooks, and the
// pool's size stays between 1 and MaxChildrenLimit.
func TestReloadWhileStoppingAndScaleLimits(t *testing.T) {
	reloads := 0
	a := newTestApp("hang")
	d, errc := startApp(t, a, Options{MaxChildren: 1, NoSignals: true, StopTimeout: time.Hour,
		OnReload: func(*Options) error { reloads++; return nil }})
	waitVar(t, d, "hanging")
	if n := d.ScaleMaxChildren(MaxChildrenLimit); n != MaxChildrenLimit {
		t.Errorf("scaled past the limit: %d", n)
	}
	if n := d.SetMaxChildren(-5); n != 1 || d.MaxChildren() != 1 {
		t.Errorf("SetMaxChildren(-5) = %d, MaxChildren() = %d, want 1", n, d.MaxChildren())
	}
	d.Stop(Graceful)
	waitFor(t, "stopping", func() bool { return d.Status().State == StateStopping })
	if err := d.Reload(t.Context()); !errors.Is(err, ErrStopping) {
		t.Errorf("Reload while stopping = %v, want ErrStopping", err)
	}
	d.Stop(Immediate)
	waitRun(t, errc, "stop")
	if reloads != 0 || d.Status().ReloadsFailed != 0 {
		t.Errorf("the refused reload called OnReload %d times, counted %d failures", reloads, d.Status().ReloadsFailed)
	}
}

// Signal acts like the signal itself, even when sent before Run: the
// dispatcher acts on it before it takes a job.
func TestSignalMethod(t *testing.T) {
	a := newTestApp("ok", "ok")
	d, err := New(a, Options{MaxChildren: 2, NoSignals: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	d.Signal(syscall.SIGUSR2) // pause, before Run
	errc := make(chan error, 1)
	go func() { errc <- d.Run(context.Background()) }()
	waitFor(t, "paused", func() bool { return d.Status().State == StatePaused })
	if s := d.Status(); s.RunsStarted != 0 {
		t.Fatalf("a job started before the queued pause took effect: %+v", s)
	}
	d.Signal(syscall.SIGTTIN)
	waitFor(t, "TTIN", func() bool { return d.Status().MaxChildren == 3 })
	d.Signal(syscall.SIGCONT)
	select {
	case <-a.allDone:
	case <-time.After(10 * time.Second):
		t.Fatal("jobs did not run after SIGCONT")
	}
	d.Signal(syscall.SIGQUIT)
	waitRun(t, errc, "QUIT")
}

// freeApp records, in NextJob, what the daemon behind its context says of
// the free slots.
type freeApp struct {
	*testApp
	seen []int // FreeSlots at each NextJob that returned a job
}

func (f *freeApp) NextJob(ctx context.Context, slot int) (*Job, error) {
	d := DaemonFrom(ctx)
	if d == nil {
		return nil, errors.New("no daemon in the hook's context")
	}
	n := d.FreeSlots()
	job, err := f.testApp.NextJob(ctx, slot)
	if job != nil {
		f.seen = append(f.seen, n)
	}
	return job, err
}

// A hook reaches its daemon through its context, and FreeSlots counts the
// slot being filled and every other free one, and nothing outside
// NextJob.
func TestFreeSlotsInNextJob(t *testing.T) {
	a := newTestApp("sleep", "sleep", "sleep")
	f := &freeApp{testApp: a}
	d, errc := startSource(t, f, a, Options{MaxChildren: 3, NoSignals: true})
	waitFor(t, "three jobs running", func() bool { return d.Status().Busy == 3 })
	if n := d.FreeSlots(); n != 0 {
		t.Errorf("FreeSlots outside NextJob = %d, want 0", n)
	}
	d.Stop(Immediate)
	waitRun(t, errc, "stop")
	if fmt.Sprint(f.seen) != "[3 2 1]" {
		t.Errorf("FreeSlots in NextJob: %v, want [3 2 1]", f.seen)
	}
	if DaemonFrom(context.Background()) != nil {
		t.Error("DaemonFrom of a context not made by a daemon is not nil")
	}
}

// sizeApp sets the pool's size from LoadConfig, as a PHP loadConfig calls
// setMaxChildren.
type sizeApp struct {
	*testApp
	size atomic.Int32
}

func (s *sizeApp) LoadConfig(ctx context.Context) error {
	if d := DaemonFrom(ctx); d != nil {
		d.SetMaxChildren(int(s.size.Load()))
	}
	return nil
}

// A size set with SetMaxChildren from LoadConfig holds, at start and on
// every reload; one set by OnReload wins over it.
func TestSetMaxChildrenFromLoadConfig(t *testing.T) {
	a := newTestApp()
	s := &sizeApp{testApp: a}
	s.size.Store(3)
	var fromOnReload atomic.Int32
	d, errc := startSource(t, s, a, Options{MaxChildren: 1, NoSignals: true,
		OnReload: func(o *Options) error {
			if n := fromOnReload.Load(); n > 0 {
				o.MaxChildren = int(n)
			}
			return nil
		}})
	waitFor(t, "the daemon runs", func() bool { return d.Status().State == StateRunning })
	if n := d.Status().MaxChildren; n != 3 {
		t.Errorf("after start: max_children %d, want 3 (LoadConfig's)", n)
	}
	s.size.Store(5)
	if err := d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := d.Status().MaxChildren; n != 5 {
		t.Errorf("after a reload: max_children %d, want 5 (LoadConfig's)", n)
	}
	fromOnReload.Store(7)
	if err := d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := d.Status().MaxChildren; n != 7 {
		t.Errorf("after a reload whose OnReload set 7: max_children %d", n)
	}
	d.Stop(Immediate)
	waitRun(t, errc, "stop")
}

// finisherApp files jobs with a verdict: a failure of attempt 1 is
// retried, any other failure is final.
type finisherApp struct {
	*testApp
	dones atomic.Int32 // calls of Done, which Finish replaces
}

func (f *finisherApp) Finish(ctx context.Context, job *Job, res Result) (Verdict, error) {
	if err := f.testApp.Done(ctx, job, res); err != nil {
		return Unknown, err
	}
	switch {
	case res.OK():
		return Completed, nil
	case job.Attempt == 1:
		return Retrying, nil
	}
	return Failed, nil
}

func (f *finisherApp) Done(context.Context, *Job, Result) error {
	f.dones.Add(1)
	return nil
}

// A Finisher's verdicts reach the Observer and the counters, and Done is
// not called beside Finish.
func TestFinisherVerdicts(t *testing.T) {
	a := newTestApp("ok", "fail", "fail")
	a.queue[2].Attempt = 3
	f := &finisherApp{testApp: a}
	rec := &recorder{started: map[string]time.Duration{}, finished: map[string]Result{}, verdicts: map[string]Verdict{}}
	d, errc := startSource(t, f, a, Options{MaxChildren: 2, NoSignals: true, Observer: rec})
	<-a.allDone
	d.Stop(Drain)
	waitRun(t, errc, "drain")
	want := map[string]Verdict{"ok-0": Completed, "fail-1": Retrying, "fail-2": Failed}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if fmt.Sprint(rec.verdicts) != fmt.Sprint(want) {
		t.Errorf("verdicts %v, want %v", rec.verdicts, want)
	}
	if s := d.Status(); s.JobsFailed != 1 || s.JobsRetried != 1 || s.JobsCompleted != 1 || s.RunsFailed != 2 {
		t.Errorf("status: jobs %d completed, %d retried, %d failed, %d failed runs; want 1, 1, 1 and 2",
			s.JobsCompleted, s.JobsRetried, s.JobsFailed, s.RunsFailed)
	}
	if n := f.dones.Load(); n != 0 {
		t.Errorf("Done called %d times beside Finish", n)
	}
}

// Summary says what Status says, without the slots: its Busy counts the
// jobs running, not the idle workers, through starts, answers and exits.
func TestSummary(t *testing.T) {
	w := newWorkerApp("ok", "sleep:60000")
	d, errc := startSource(t, w, w.testApp, Options{MaxChildren: 2, NoSignals: true})
	waitFor(t, "one worker idle, one busy", func() bool {
		w.mu.Lock()
		_, done := w.results["ok-0"]
		w.mu.Unlock()
		s := d.Status()
		return done && s.Busy == 1 && len(s.Slots) == 2
	})
	st, sum := d.Status(), d.Summary()
	if sum.Slots != nil || sum.Busy != 1 || sum.State != StateRunning || sum.MaxChildren != 2 ||
		sum.JobsCompleted != st.JobsCompleted || sum.WorkersStarted != 2 {
		t.Errorf("summary %+v; status %+v", sum, st)
	}
	d.Stop(Graceful)
	waitRun(t, errc, "stop")
	if sum := d.Summary(); sum.Busy != 0 || sum.State != StateStopped {
		t.Errorf("after the stop: %+v", sum)
	}
}
