package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

// Run runs app as a daemon until it is stopped, and returns then, after
// every child has ended, so that the application can clean up.
//
// In a child (this program re-executed by the daemon to run a job), Run
// runs the job, or the jobs of a worker, and exits the process: it never
// returns there. Everything main does before calling Run therefore also
// happens in every child; keep it cheap, and open connections in
// LoadConfig instead.
//
// Unless opts.NoSignals is set, Run handles these signals:
//
//	TERM, INT   graceful stop; a second one kills the jobs at once
//	QUIT        drain: start no job, let the running ones finish
//	HUP         reload: OnReload, then LoadConfig
//	USR2, CONT  pause and resume taking new jobs
//	TTIN, TTOU  one child slot more, one fewer
//
// Cancelling ctx also makes a graceful stop. Run returns nil after a stop,
// or the error that prevented the start (the first LoadConfig), or the
// error that stopped the daemon (Options.MaxHookErrors).
func Run(ctx context.Context, app Source, opts Options) error {
	d, err := New(app, opts)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

// Daemon is a running instance of an application. Its control methods
// are safe to call from any goroutine while Run runs. Stop, Pause, Resume,
// SetMaxChildren and Status return at once and may be called from hooks
// too; Reload waits for the dispatcher to call OnReload and LoadConfig, so
// a hook must not call it.
type Daemon struct {
	app    Source
	runner Runner
	cmdr   Commander
	loader ConfigLoader
	acker  Acker
	filer  Finisher
	waker  Waker
	opts   Options
	log    *slog.Logger
	vars   *VarStore
	pool   *pool.Pool
	start  time.Time

	// Owned by the dispatcher goroutine, which writes the fields that
	// Status reads (running and each r.job, paused, stopMode, generation)
	// under stateMu.
	stateMu      sync.Mutex
	maxBeforeRun int // MaxChildren until the pool exists
	running      map[*pool.Child]*running
	idle         []*running // workers waiting for a job, most recently used last
	paused       bool
	stopMode     StopMode
	hookErrs     int
	backoff      time.Duration
	notBefore    time.Time
	generation   int
	exitErr      error
	encBuf       []byte

	output  func(Line) // Options.Output
	tailMax int        // Options.TailSize

	hctx     context.Context // the hooks' context, set by Run; dispatcher only
	ctl      chan func()
	finished chan struct{}

	evMu     sync.Mutex
	events   []event
	spare    []event // owned by the dispatcher between two handleEvents
	evNotify chan struct{}

	linesMu sync.Mutex
	// What the output lines of each running job need, by job id: its
	// attempt, and for a worker's job the tail of its output. Output
	// travels through a pipe and a worker's results through a socket, so a
	// job's last lines may arrive after its result: for a worker that runs
	// on, the tail holds what had arrived by then; for one that exits after
	// the job, all of it.
	lines map[string]*jobLines

	free      atomic.Int32 // FreeSlots, set around each NextJob
	isolation string       // how jobs are held together; under stateMu

	// The start back-off (notstarted.go), dispatcher only, written under
	// stateMu for Status.
	startBackoff   time.Duration
	startNotBefore time.Time
	lastStartErr   string

	started, succeeded, failed, retried atomic.Uint64
	notStarted                          atomic.Uint64
	retrying, gaveUp                    atomic.Uint64 // the Finisher's verdicts
	reloads, reloadsFailed              atomic.Uint64

	// The time every slot was busy: the sum of the closed periods, and the
	// start of the current one (zero when a slot is free). Under stateMu.
	saturated      time.Duration
	saturatedSince time.Time
}

// running is a child the dispatcher knows of: a command child running a
// job, or a worker, busy or idle.
type running struct {
	child    *pool.Child
	worker   *pool.Worker
	job      *Job    // nil for an idle worker
	reply    *Result // a retiring worker's answer, awaiting its exit
	since    time.Time
	timer    *time.Timer
	timedOut atomic.Bool
}

type event struct {
	apply  func()       // a control request, run on the dispatcher
	child  *pool.Child  // exited
	worker *pool.Worker // answered
	reply  workerReply
	err    error
}

// New checks app and returns a daemon ready to Run. app must implement
// Runner or Commander besides Source.
func New(app Source, opts Options) (*Daemon, error) {
	opts.withDefaults()
	d := &Daemon{
		app:      app,
		opts:     opts,
		log:      opts.Logger,
		vars:     NewVarStore(),
		running:  make(map[*pool.Child]*running),
		ctl:      make(chan func()),
		finished: make(chan struct{}),
		evNotify: make(chan struct{}, 1),
		lines:    make(map[string]*jobLines),
	}
	d.maxBeforeRun = opts.MaxChildren
	// Read by pool goroutines: fixed for the daemon's life, unlike opts.
	d.output, d.tailMax = opts.Output, opts.TailSize
	d.runner, _ = app.(Runner)
	d.cmdr, _ = app.(Commander)
	d.loader, _ = app.(ConfigLoader)
	d.acker, _ = app.(Acker)
	d.filer, _ = app.(Finisher)
	d.waker, _ = app.(Waker)
	if d.runner == nil && d.cmdr == nil {
		return nil, fmt.Errorf("jobs: %T implements neither RunJob (Runner) nor Command (Commander)", app)
	}
	if d.cmdr != nil && opts.JobsPerChild > 1 {
		return nil, errors.New("jobs: JobsPerChild > 1 is for RunJob; an application with Command runs one process per job")
	}
	return d, nil
}

// Run runs the daemon; see the package function Run.
func (d *Daemon) Run(ctx context.Context) error {
	if IsChild() {
		d.runChild(ctx) // never returns
	}
	defer close(d.finished)
	start := time.Now()
	// Hooks get a context that outlives ctx: after a cancel the daemon
	// still has to acknowledge the jobs that finish while it stops.
	hctx := d.hookContext(ctx)
	d.hctx = hctx
	if d.loader != nil {
		// The first LoadConfig may wait for something (a database); until
		// it returns, cancelling ctx is the way to give up the start.
		first := context.WithValue(WithVars(ctx, d.vars), daemonKey{}, d)
		if err := d.callHook("LoadConfig", func() error { return d.loader.LoadConfig(first) }); err != nil {
			return fmt.Errorf("load config: %w", err)
		}
	}
	d.stateMu.Lock()
	iso, err := d.opts.Isolation.poolIsolation()
	if err != nil {
		d.stateMu.Unlock()
		return err
	}
	p, err := pool.New(pool.Config{
		Max:       d.maxBeforeRun,
		Sink:      pool.SinkFunc(d.outputLine),
		OnExit:    func(c *pool.Child) { d.push(event{child: c}) },
		TailSize:  d.opts.TailSize,
		Logger:    d.log,
		Isolation: iso,
	})
	if err != nil {
		d.stateMu.Unlock()
		return err
	}
	d.pool, d.start, d.generation = p, start, 1
	d.isolation = p.Isolation().String()
	d.stateMu.Unlock()
	defer p.Close()

	var sigs chan os.Signal
	if !d.opts.NoSignals {
		sigs = make(chan os.Signal, 8)
		signal.Notify(sigs, Signals...)
		defer signal.Stop(sigs)
	}
	d.log.Info("daemon started", "pid", os.Getpid(), "max_children", p.Max(),
		"jobs_per_child", d.opts.JobsPerChild)
	if d.opts.OnReady != nil {
		d.opts.OnReady()
	}
	d.loop(ctx, hctx, sigs)
	d.log.Info("daemon stopped", "succeeded", d.succeeded.Load(), "failed", d.failed.Load())
	return d.exitErr
}

// loop is the dispatcher: it hands jobs to free slots, handles the ends of
// jobs, and carries out control requests, until a stop has ended every
// child. It sleeps whenever there is nothing to do.
func (d *Daemon) loop(ctx, hctx context.Context, sigs <-chan os.Signal) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var wake <-chan struct{}
	if d.waker != nil {
		wake = d.waker.Wake()
	}
	ctxDone := ctx.Done()
	var beat <-chan time.Time
	if d.opts.Heartbeat != nil {
		t := time.NewTicker(d.opts.HeartbeatInterval)
		defer t.Stop()
		beat = t.C
	}
	for {
		d.handleEvents(hctx)
		if d.stopMode != 0 && len(d.running) == 0 {
			return
		}
		wait := d.dispatch(hctx)
		if d.stopMode != 0 && len(d.running) == 0 {
			continue // dispatch stopped the daemon (MaxHookErrors)
		}
		d.noteSaturation()
		if wait > 0 {
			timer.Reset(wait)
		} else {
			timer.Stop()
		}
		select {
		case <-d.evNotify:
		case f := <-d.ctl:
			f()
		case _, ok := <-wake:
			if !ok {
				wake = nil // a closed channel would wake us for ever
			}
			d.backoff, d.notBefore = 0, time.Time{}
		case <-timer.C:
		case <-ctxDone:
			ctxDone = nil
			d.beginStop(Graceful)
		case sig := <-sigs:
			d.onSignal(hctx, sig)
		case <-beat:
			d.opts.Heartbeat()
		}
	}
}

// noteSaturation keeps count of the time every slot is busy.
func (d *Daemon) noteSaturation() {
	full := d.stopMode == 0 && d.busy() >= d.pool.Max()
	if full == !d.saturatedSince.IsZero() {
		return
	}
	now := time.Now()
	d.stateMu.Lock()
	if full {
		d.saturatedSince = now
	} else {
		d.saturated += now.Sub(d.saturatedSince)
		d.saturatedSince = time.Time{}
	}
	d.stateMu.Unlock()
}

// dispatch starts jobs while a slot is free and the source has work. It
// returns how long to wait before asking the source again, or 0 to wait
// for an event (a job ending, a wake-up, a control request).
func (d *Daemon) dispatch(hctx context.Context) time.Duration {
	for !d.paused && d.stopMode == 0 {
		if wait := d.startWait(); wait > 0 {
			return wait
		}
		if wait := time.Until(d.notBefore); wait > 0 {
			return wait
		}
		slot, idle, ok := d.freeSlot()
		if !ok {
			return 0
		}
		var job *Job
		asked := time.Now()
		// The slot being filled counts as free; an idle worker popped for
		// it is still among the running children.
		running := d.busy()
		if idle != nil {
			running--
		}
		d.free.Store(int32(max(d.pool.Max()-running, 1)))
		err := d.callHook("NextJob", func() (err error) {
			job, err = d.app.NextJob(hctx, slot)
			return err
		})
		d.free.Store(0)
		if err != nil || job == nil {
			if idle != nil {
				d.idle = append(d.idle, idle)
			} else {
				d.pool.Release(slot)
			}
			if err == nil && d.opts.StopWhenIdle != nil && d.busy() == 0 && d.opts.StopWhenIdle() {
				d.log.Info("nothing left to do")
				d.beginStop(Drain)
				return 0
			}
			return d.nothingReady(err)
		}
		d.hookErrs, d.backoff = 0, 0
		if d.startJob(hctx, slot, idle, job) && d.opts.Observer != nil {
			d.opts.Observer.JobStarted(job, time.Since(asked))
		}
	}
	return 0
}

// busy returns the number of jobs running.
func (d *Daemon) busy() int {
	return len(d.running) - len(d.idle)
}

// nothingReady backs off after NextJob found nothing, or failed: from
// 10 ms, doubling, up to IdleInterval.
func (d *Daemon) nothingReady(err error) time.Duration {
	if err != nil {
		d.hookErrs++
		d.log.Error("NextJob failed", "err", err, "consecutive", d.hookErrs)
		if n := d.opts.MaxHookErrors; n > 0 && d.hookErrs >= n {
			d.exitErr = fmt.Errorf("NextJob failed %d times in a row, last: %w", d.hookErrs, err)
			d.beginStop(Graceful)
			return 0
		}
	} else {
		d.hookErrs = 0
	}
	d.backoff = min(max(2*d.backoff, 10*time.Millisecond), d.opts.IdleInterval)
	d.notBefore = time.Now().Add(d.backoff)
	return d.backoff
}

// freeSlot returns a slot for the next job: an idle worker's, or a newly
// reserved one. Idle workers in slots above MaxChildren are retired.
func (d *Daemon) freeSlot() (int, *running, bool) {
	max := d.pool.Max()
	for len(d.idle) > 0 {
		r := d.idle[len(d.idle)-1]
		d.idle = d.idle[:len(d.idle)-1]
		if r.child.Slot < max && !r.worker.Retiring() {
			return r.child.Slot, r, true
		}
		r.worker.Retire()
	}
	slot, ok := d.pool.TryAcquire()
	return slot, nil, ok
}

// startJob starts job in slot, in the idle worker r if not nil, and
// reports whether it runs; if not, the job has been finished: as not
// started (startFailed), or as failed when the application's Command
// refused it.
func (d *Daemon) startJob(hctx context.Context, slot int, r *running, job *Job) bool {
	job.Slot = slot
	if d.cmdr != nil {
		return d.startCommand(hctx, slot, job)
	}
	if r == nil {
		w, err := d.pool.StartWorker(slot, d.workerSpec())
		if err != nil {
			d.pool.Release(slot)
			d.startFailed(hctx, job, err)
			return false
		}
		r = &running{child: w.Child, worker: w}
		d.stateMu.Lock()
		d.running[w.Child] = r
		d.stateMu.Unlock()
	}
	d.stateMu.Lock()
	r.job, r.since = job, time.Now()
	d.stateMu.Unlock()
	r.timedOut.Store(false)
	d.countStart(job)
	r.worker.SetLabel(job.ID)
	d.trackLines(job, true)
	d.encBuf = encodeJob(d.encBuf, job)
	if err := r.worker.Send(d.encBuf); err != nil {
		// The worker is gone or going; its exit reports the job failed.
		d.log.Warn("could not hand job to worker", "job_id", job.ID, "pid", r.child.Pid, "err", err)
		r.worker.Retire()
		return true // it runs as far as anyone can tell: its worker's exit ends it
	}
	if t := d.opts.JobTimeout; t > 0 {
		w, sig, grace := r.worker, d.opts.StopSignal, d.opts.KillGrace
		r.timer = time.AfterFunc(t, func() {
			r.timedOut.Store(true)
			w.Stop(sig, grace)
		})
	}
	return true
}

func (d *Daemon) startCommand(hctx context.Context, slot int, job *Job) bool {
	var spec *Spec
	err := d.callHook("Command", func() (err error) {
		spec, err = d.cmdr.Command(hctx, job)
		return err
	})
	if err != nil {
		d.pool.Release(slot)
		if isResourceError(err) {
			// The application could not prepare the job for want of
			// descriptors or memory (opening its payload, say): no fault
			// of the job's.
			d.startFailed(hctx, job, err)
			return false
		}
		d.countStart(job)
		d.log.Error("could not start job", "job_id", job.ID, "slot", slot, "err", err)
		d.finish(hctx, job, Result{ExitCode: -1, Error: err.Error()})
		return false
	}
	d.trackLines(job, false)
	c, err := d.pool.Start(slot, spec.poolSpec(job, &d.opts))
	if err != nil {
		d.pool.Release(slot)
		d.untrackLines(job.ID)
		d.startFailed(hctx, job, err)
		return false
	}
	d.countStart(job)
	d.stateMu.Lock()
	d.running[c] = &running{child: c, job: job, since: c.Started}
	d.stateMu.Unlock()
	return true
}

func (d *Daemon) workerSpec() *pool.WorkerSpec {
	jobs := d.opts.JobsPerChild
	jitter := 0.1
	if jobs <= 1 {
		jitter = 0
	}
	return &pool.WorkerSpec{
		Spec:   pool.Spec{StopSignal: d.opts.StopSignal, KillGrace: d.opts.KillGrace, Credential: d.opts.Credential},
		Jobs:   jobs,
		MaxAge: d.opts.WorkerMaxAge,
		MaxRSS: d.opts.WorkerMaxRSS,
		Jitter: jitter,
		OnResult: func(w *pool.Worker, msg []byte) {
			rep, err := decodeReply(msg)
			d.push(event{worker: w, reply: rep, err: err})
		},
		OnCall: func(_ *pool.Worker, req []byte) []byte { return d.vars.serve(req) },
	}
}

// push queues an event for the dispatcher. The queue is unbounded (it
// holds at most a few events per child) so that pool goroutines never
// block on a busy dispatcher.
func (d *Daemon) push(ev event) {
	d.evMu.Lock()
	d.events = append(d.events, ev)
	d.evMu.Unlock()
	select {
	case d.evNotify <- struct{}{}:
	default:
	}
}

func (d *Daemon) handleEvents(hctx context.Context) {
	d.evMu.Lock()
	evs := d.events
	// Swap in the slice handled last time, emptied: no allocation per
	// batch of events in the steady state.
	d.events, d.spare = d.spare[:0], nil
	d.evMu.Unlock()
	defer func() {
		clear(evs)
		d.spare = evs[:0]
	}()
	for _, ev := range evs {
		switch {
		case ev.apply != nil:
			ev.apply()
		case ev.child != nil:
			d.exited(hctx, ev.child)
		case ev.worker != nil:
			d.answered(hctx, ev)
		}
		// An empty event only wakes the dispatcher.
	}
}

// exited handles the end of a child: a command child's job is done; a
// worker that dies with a job in flight fails that job.
func (d *Daemon) exited(hctx context.Context, c *pool.Child) {
	r := d.running[c]
	if r == nil {
		return
	}
	d.stateMu.Lock()
	delete(d.running, c)
	d.stateMu.Unlock()
	if r.job == nil {
		return // an idle worker retired
	}
	if r.reply != nil {
		res := *r.reply
		res.Output = d.untrackLines(r.job.ID)
		d.finish(hctx, r.job, res)
		return
	}
	res := resultFromExit(c.Exit())
	if r.worker != nil {
		if r.timer != nil {
			r.timer.Stop()
		}
		res.TimedOut = r.timedOut.Load()
		res.Duration = time.Since(r.since)
		if res.Error == "" {
			res.Error = "worker exited during the job: " + c.Exit().String()
		}
		if res.ExitCode == 0 && res.Signal == 0 {
			res.ExitCode = 1 // exited cleanly, but never answered
		}
		res.Output = d.untrackLines(r.job.ID)
	} else {
		d.untrackLines(r.job.ID) // the tail is the Exit's
	}
	d.finish(hctx, r.job, res)
}

// answered handles a worker's result for its job.
func (d *Daemon) answered(hctx context.Context, ev event) {
	r := d.running[ev.worker.Child]
	if r == nil || r.job == nil {
		return
	}
	if r.timer != nil {
		r.timer.Stop()
	}
	job := r.job
	d.stateMu.Lock()
	r.job = nil
	d.stateMu.Unlock()
	res := Result{
		ExitCode: ev.reply.code,
		Error:    ev.reply.err,
		TimedOut: r.timedOut.Load(),
		Duration: time.Since(r.since),
		UserCPU:  ev.reply.userCPU,
		SysCPU:   ev.reply.sysCPU,
		MaxRSS:   ev.reply.maxRSS,

		CPUFrom:    "worker",
		MaxRSSFrom: "worker",

		Interrupted: ev.worker.Interrupted(),
	}
	if ev.err != nil {
		res.ExitCode, res.Error = 1, "bad answer from worker: "+ev.err.Error()
	}
	if ev.worker.Retiring() {
		// The worker exits next. Its exit, once its output has been read
		// to the end, finishes the job with the whole output tail.
		d.stateMu.Lock()
		r.job, r.reply = job, &res
		d.stateMu.Unlock()
		return
	}
	if d.stopMode == 0 && r.child.Slot < d.pool.Max() {
		d.idle = append(d.idle, r)
	} else {
		ev.worker.Retire()
	}
	res.Output = d.untrackLines(job.ID)
	d.finish(hctx, job, res)
}

// finish counts a finished job and hands it to the source.
func (d *Daemon) finish(hctx context.Context, job *Job, res Result) {
	// Only a job that a stop signalled is interrupted (pool.Child's
	// Interrupted); a timeout was the job's own doing.
	res.Interrupted = res.Interrupted && !res.OK() && !res.TimedOut && !res.NotStarted
	switch {
	case res.NotStarted:
	case res.OK():
		d.succeeded.Add(1)
	default:
		d.failed.Add(1)
	}
	v := Unknown
	var err error
	switch {
	case d.filer != nil:
		err = d.callHook("Finish", func() (err error) {
			v, err = d.filer.Finish(hctx, job, res)
			return err
		})
	case d.acker != nil:
		err = d.callHook("Done", func() error { return d.acker.Done(hctx, job, res) })
	}
	if err != nil {
		d.log.Error("could not file the finished job", "job_id", job.ID, "err", err)
	}
	switch v {
	case Retrying:
		d.retrying.Add(1)
	case Failed:
		d.gaveUp.Add(1)
	}
	if d.opts.Observer != nil && !res.NotStarted {
		d.opts.Observer.JobFinished(job, res, v)
	}
	if d.log.Enabled(hctx, slog.LevelDebug) {
		d.log.Debug("job finished", "job_id", job.ID, "slot", job.Slot, "attempt", job.Attempt,
			"result", res.String(), "duration", res.Duration, "verdict", v.String())
	}
}

// callHook calls an application hook, turning a panic into an error that
// names the hook, so that one bad job cannot take the daemon down.
func (d *Daemon) callHook(name string, f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("panic in %s: %v", name, v)
		}
	}()
	return f()
}

// jobLines is what the output lines of a running job need.
type jobLines struct {
	attempt int
	worker  bool
	tail    *pool.Tail // a worker's job only; made on the first line, as most jobs write none
}

// trackLines starts attributing output lines to job.
func (d *Daemon) trackLines(job *Job, worker bool) {
	d.linesMu.Lock()
	d.lines[job.ID] = &jobLines{attempt: job.Attempt, worker: worker}
	d.linesMu.Unlock()
}

// untrackLines stops attributing lines to the job id, and returns the tail
// of its output kept for a worker's job (a command child's tail is its
// Exit's).
func (d *Daemon) untrackLines(jobID string) []byte {
	d.linesMu.Lock()
	defer d.linesMu.Unlock()
	jl := d.lines[jobID]
	delete(d.lines, jobID)
	if jl == nil || jl.tail == nil {
		return nil
	}
	return jl.tail.Bytes()
}

// outputLine handles one line of job output, on a pool goroutine.
func (d *Daemon) outputLine(l pool.Line) {
	attempt := 0
	d.linesMu.Lock()
	if jl := d.lines[l.Label]; jl != nil {
		attempt = jl.attempt
		if jl.worker {
			if jl.tail == nil {
				jl.tail = pool.NewTail(d.tailSize())
			}
			jl.tail.Write(l.Text)
			if !l.Partial {
				jl.tail.Write(newline)
			}
		}
	}
	d.linesMu.Unlock()
	line := Line{JobID: l.Label, Attempt: attempt, Slot: l.Slot, Pid: l.Pid, Stderr: l.Stream == pool.Stderr,
		Text: l.Text, Partial: l.Partial}
	if d.output != nil {
		d.output(line)
		return
	}
	level := slog.LevelInfo
	if line.Stderr {
		level = slog.LevelWarn
	}
	d.log.LogAttrs(context.Background(), level, string(l.Text),
		slog.String("job_id", l.Label), slog.Int("slot", l.Slot), slog.String("stream", line.Stream()))
}

var newline = []byte{'\n'}

func (d *Daemon) tailSize() int {
	if d.tailMax > 0 {
		return d.tailMax
	}
	return pool.DefaultTailSize
}
