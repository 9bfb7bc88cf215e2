package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/internal/workerproto"
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
//	PIPE        ignored: a write to a closed pipe fails with EPIPE
//
// Without the last, Go's runtime kills the process for a write to a
// closed standard output or error: a log reader that goes away (journald
// restarting, `jobdaemon run | head`) would kill the daemon in the middle
// of its jobs. Jobs start with SIGPIPE at its default action all the same.
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
	app     Source
	runner  Runner
	cmdr    Commander
	wcmdr   WorkerCommander
	loader  ConfigLoader
	acker   Acker
	filer   Finisher
	waker   Waker
	watcher Watcher
	opts    Options
	log     *slog.Logger
	vars    *VarStore
	pool    *pool.Pool
	start   time.Time

	// Owned by the dispatcher (whoever holds mu: see loop and
	// pushAnswer), which writes the fields that Status reads (running and
	// each r.job, paused, stopMode, generation) under stateMu too.
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
	// Workers in a row that ended before their first answer (workers.go):
	// how many, when the next may start, and how the last one ended.
	failedStarts   int
	startNotBefore time.Time
	startErr       string
	probe          *running // after those, the one new worker on trial

	output  func(Line) // Options.Output
	tailMax int        // Options.TailSize

	hctx     context.Context // the hooks' context, set by Run; dispatcher only
	ctl      chan func()
	finished chan struct{}

	// mu is the dispatcher: its holder handles events and starts jobs,
	// and calls the hooks, one at a time. The loop goroutine takes it for
	// each pass; a worker's reader goroutine that brings an answer takes
	// it when it is free (pushAnswer).
	mu sync.Mutex
	// answers is set when an answer waits in events for the dispatcher:
	// whoever releases mu runs a pass for it (drain).
	answers atomic.Bool

	evMu     sync.Mutex
	events   []event
	spare    []event // owned by the dispatcher between two handleEvents
	evNotify chan struct{}

	linesMu sync.Mutex
	// What the output lines of each running job need, by job id: its
	// attempt, and for a worker's job the tail of its output. Output and
	// answers travel apart, but the pool hands an answer over only after
	// the lines written before it (pool's catch-up): the tail is whole
	// when the answer is handled, but for a last line without its newline.
	lines map[string]*jobLines

	free      atomic.Int32 // FreeSlots, set around each NextJob
	isolation string       // how jobs are held together; under stateMu

	// The start back-off (notstarted.go), dispatcher only, written under
	// stateMu for Status.
	handBackoff   time.Duration
	handBackUntil time.Time
	handBackErr   string

	started, succeeded, failed  atomic.Uint64 // runs
	completed, retrying, gaveUp atomic.Uint64 // jobs, by verdict
	notStarted                  atomic.Uint64 // jobs handed back unrun
	workersStarted              atomic.Uint64
	reloads, reloadsFailed      atomic.Uint64
	lastReloadFailed            atomic.Bool

	// The time every slot was busy: the sum of the closed periods, and the
	// start of the current one (zero when a slot is free). Under stateMu.
	saturated      time.Duration
	saturatedSince time.Time
}

// running is a child the dispatcher knows of: a command child running a
// job, or a worker (a Go worker or a command worker), busy or idle.
type running struct {
	child    *pool.Child
	worker   *pool.Worker
	lines    bool    // a command worker (pool.ProtocolLines)
	job      *Job    // nil for an idle worker
	reply    *Result // the result of a job whose worker exits next, filed at its exit
	since    time.Time
	timer    *time.Timer
	timedOut atomic.Bool
	answered bool // the worker gave a well-formed answer once
	// jobLines of the worker's job in flight, one for all its jobs
	// (trackLines), so that a job costs no allocation.
	jobLines jobLines

	// sentID is the id of a command worker's job in flight, which its
	// answer must carry. The dispatcher writes it before Send; the
	// worker's reader goroutine reads it in OnResult, after the pool has
	// seen, under the worker's lock that Send also takes, that a job is
	// in flight: the lock orders the two.
	sentID string
	// The timeout of each of a command worker's jobs, and how it is
	// stopped: its Spec's, or 0 for the Options' in force. A Go worker's
	// stopSignal is the one its job in flight was sent with, the one it
	// catches, and its pool child's own (startJob).
	timeout    time.Duration
	stopSignal syscall.Signal
	killGrace  time.Duration
}

type event struct {
	apply  func()       // a control request, run on the dispatcher
	child  *pool.Child  // exited
	worker *pool.Worker // answered
	reply  workerReply  // a Go worker's answer
	answer workerproto.Answer
	err    error // the answer could not be decoded
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
	d.wcmdr, _ = app.(WorkerCommander)
	d.loader, _ = app.(ConfigLoader)
	d.acker, _ = app.(Acker)
	d.filer, _ = app.(Finisher)
	d.waker, _ = app.(Waker)
	d.watcher, _ = app.(Watcher)
	if d.runner == nil && d.cmdr == nil {
		return nil, fmt.Errorf("jobs: %T implements neither RunJob (Runner) nor Command (Commander)", app)
	}
	if d.cmdr != nil && d.wcmdr == nil && opts.JobsPerChild > 1 {
		return nil, errors.New("jobs: JobsPerChild > 1 is for workers: an application with Command runs one process per job, unless it implements WorkerCommander")
	}
	return d, nil
}

// Run runs the daemon; see the package function Run.
func (d *Daemon) Run(ctx context.Context) error {
	if IsChild() {
		d.runChild(ctx) // never returns
	}
	return d.runParent(ctx)
}

// runParent is Run in the parent. It is a function of its own so that a
// child's stack never holds its frame (1.1 KB): a goroutine's stack grows
// by being copied, frame by frame, with each frame's map looked up in the
// binary, and a re-executed child that took one more growth on its way to
// its job ran about 5% slower (docs/PERFORMANCE.md, the seventh session).
func (d *Daemon) runParent(ctx context.Context) error {
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
	// Taken before the daemon says it runs (Status, OnReady): a signal
	// sent to a daemon that reports "running" must never find its default
	// action, which for HUP is to kill.
	var sigs chan os.Signal
	if !d.opts.NoSignals {
		sigs = make(chan os.Signal, 8)
		signal.Notify(sigs, Signals...)
		defer signal.Stop(sigs)
		// Caught rather than ignored (signal.Ignore), which children would
		// inherit through exec; a full channel drops the signal.
		pipe := make(chan os.Signal, 1)
		signal.Notify(pipe, syscall.SIGPIPE)
		defer signal.Stop(pipe)
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

	d.log.Info("daemon started", "pid", os.Getpid(), "max_children", p.Max(),
		"jobs_per_child", d.opts.JobsPerChild)
	if d.opts.OnReady != nil {
		d.opts.OnReady()
	}
	d.loop(ctx, hctx, sigs)
	d.log.Info("daemon stopped", "runs_started", d.started.Load(), "runs_failed", d.failed.Load(),
		"jobs_completed", d.completed.Load(), "jobs_failed", d.gaveUp.Load())
	return d.exitErr
}

// loop is the dispatcher: it hands jobs to free slots, handles the ends of
// jobs, and carries out control requests, until a stop has ended every
// child. It sleeps whenever there is nothing to do.
func (d *Daemon) loop(ctx, hctx context.Context, sigs <-chan os.Signal) {
	// The loop forks the children it starts itself, on its own thread,
	// rather than handing each fork to the pool's spawner thread and
	// waiting for it to come back. The thread stays locked until every
	// child is gone: the loop returns only then (see pool.PinSpawner).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer d.pool.PinSpawner()()
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
	var todo func() // what woke the loop, done under the lock
	for {
		d.mu.Lock()
		if todo != nil {
			todo()
			todo = nil
		}
		d.handleEvents(hctx)
		if d.stopMode != 0 && len(d.running) == 0 {
			d.mu.Unlock()
			return
		}
		wait := d.dispatch(hctx)
		if d.stopMode != 0 && len(d.running) == 0 {
			d.mu.Unlock()
			continue // dispatch stopped the daemon (MaxHookErrors)
		}
		d.noteSaturation()
		d.drain()
		if wait > 0 {
			timer.Reset(wait)
		} else {
			timer.Stop()
		}
		select {
		case <-d.evNotify:
		case f := <-d.ctl:
			todo = f
		case _, ok := <-wake:
			if !ok {
				wake = nil // a closed channel would wake us for ever
			}
			todo = func() { d.backoff, d.notBefore = 0, time.Time{} }
		case <-timer.C:
		case <-ctxDone:
			ctxDone = nil
			todo = func() { d.beginStop(Graceful) }
		case sig := <-sigs:
			todo = func() { d.onSignal(hctx, sig) }
		case <-beat:
			todo = d.opts.Heartbeat
		}
	}
}

// pushAnswer queues a worker's answer, on the worker's reader goroutine,
// and, when the dispatcher is free, runs the dispatcher's pass right there:
// the answer is handled, and the worker's next job sent, without waking
// the loop goroutine. Handing each answer over to another goroutine cost a
// wake-up of a second thread by the Go scheduler per job, a third of the
// throughput of trivial jobs (docs/PERFORMANCE.md, "Command workers").
// The hooks still run one at a time, in order: under mu.
func (d *Daemon) pushAnswer(ev event) {
	d.evMu.Lock()
	d.events = append(d.events, ev)
	d.evMu.Unlock()
	d.answers.Store(true)
	if !d.mu.TryLock() {
		return // its holder runs a pass for it (drain)
	}
	d.answerPass()
}

// answerPass runs the dispatcher's passes for the answers that wait, with
// mu held, and releases it. It leaves to the loop goroutine what only it
// can do: sleep until a time (a backoff), and end the loop.
func (d *Daemon) answerPass() {
	d.answers.Store(false)
	d.handleEvents(d.hctx)
	wait := time.Duration(0)
	done := d.stopMode != 0 && len(d.running) == 0
	if !done {
		wait = d.dispatch(d.hctx)
		d.noteSaturation()
	}
	if done || wait > 0 || d.stopMode != 0 {
		d.notify()
	}
	d.drain()
}

// drain releases mu, and runs a pass for the answers that came while it was
// held: their reader goroutines found it taken, and left them to its
// holder. An answer queued after the check finds mu free, or its new holder
// checks again.
func (d *Daemon) drain() {
	d.mu.Unlock()
	if d.answers.Load() && d.mu.TryLock() {
		d.answerPass()
	}
}

// notify wakes the loop goroutine.
func (d *Daemon) notify() {
	select {
	case d.evNotify <- struct{}{}:
	default:
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
	for first := true; ; first = false {
		if !first {
			// The ends of jobs before the next start: the pool frees a
			// child's slot before it reports its end, and a worker that
			// ended before its first answer must hold back the next start
			// (startWait) before its slot goes to another.
			d.handleEvents(hctx)
		}
		if d.paused || d.stopMode != 0 {
			return 0
		}
		if wait := d.handBackWait(); wait > 0 {
			return wait
		}
		if !d.notBefore.IsZero() {
			if wait := time.Until(d.notBefore); wait > 0 {
				return wait
			}
		}
		slot, idle, ok := d.freeSlot()
		if !ok {
			return 0
		}
		if idle == nil {
			// A job would need a new worker; after workers that ended
			// before their first answer, the next one waits.
			if wait := d.startWait(time.Now()); wait > 0 {
				d.pool.Release(slot)
				return wait
			}
		}
		var job *Job
		var asked time.Time // for the Observer's dispatch latency
		if d.opts.Observer != nil {
			asked = time.Now()
		}
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
		d.hookErrs, d.backoff, d.notBefore = 0, 0, time.Time{}
		if d.startJob(hctx, slot, idle, job) && d.opts.Observer != nil {
			d.opts.Observer.JobStarted(job, time.Since(asked))
		}
	}
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
		if d.watcher != nil && d.watcher.Watching() {
			// The source wakes us when a job is ready: no timer.
			d.backoff, d.notBefore = 0, time.Time{}
			return 0
		}
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
// reports whether it runs; if not, the job has been finished: handed back
// unrun when no process could be started for it (handBack), or failed
// when the application refused it.
// Without an idle worker, a Runner's job gets a new Go worker, and a
// Commander's either a new command worker (WorkerCommand) or a process of
// its own (Command).
func (d *Daemon) startJob(hctx context.Context, slot int, r *running, job *Job) bool {
	job.Slot = slot
	var spec *Spec // a command worker's
	if r == nil && d.cmdr != nil {
		var err error
		if spec, err = d.workerCommand(hctx, slot); err != nil {
			d.pool.Release(slot)
			d.startFailed("WorkerCommand: " + err.Error())
			d.finish(hctx, job, Result{ExitCode: -1, Error: err.Error()})
			return false
		}
		if spec == nil {
			return d.startCommand(hctx, slot, job)
		}
	}
	// Encoded before a worker starts for it: a job that cannot be sent
	// fails alone, and leaves the worker be.
	if err := d.encode(job, r != nil && r.lines || spec != nil); err != nil {
		if r != nil {
			d.idle = append(d.idle, r)
		} else {
			d.pool.Release(slot)
		}
		d.log.Error("could not hand job to a worker", "job_id", job.ID, "slot", slot, "err", err)
		d.finish(hctx, job, Result{ExitCode: -1, Error: err.Error()})
		return false
	}
	if r == nil {
		var err error
		if r, err = d.startWorker(slot, spec, job); err != nil {
			d.pool.Release(slot)
			d.startFailed(err.Error())
			d.handBack(hctx, job, fmt.Errorf("start a worker: %w", err))
			return false
		}
		if d.failedStarts > 0 {
			d.probe = r // no other new worker until this one answers or ends
		}
	}
	d.stateMu.Lock()
	r.job, r.since = job, time.Now()
	d.stateMu.Unlock()
	r.timedOut.Store(false)
	r.sentID = job.ID
	if !r.lines && r.stopSignal != d.opts.StopSignal {
		// The signal encode sent with the job, which a reload changed since
		// the worker's last: it is stopped with that one, on a timeout or a
		// stop, even if a reload changes the Options' again meanwhile.
		r.stopSignal = d.opts.StopSignal
		r.child.SetStopSignal(r.stopSignal)
	}
	d.countStart()
	r.worker.SetLabel(job.ID)
	d.trackLines(job, r)
	err := r.worker.Send(d.encBuf)
	if cap(d.encBuf) > maxKeptBuf {
		d.encBuf = nil // Send copied it
	}
	if err != nil {
		// The worker is gone or going; its exit reports the job failed.
		d.log.Warn("could not hand job to worker", "job_id", job.ID, "pid", r.child.Pid, "err", err)
		r.worker.Retire()
		return true // it runs as far as anyone can tell: its worker's exit ends it
	}
	d.armTimeout(r)
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
			d.handBack(hctx, job, err)
			return false
		}
		d.countStart()
		d.log.Error("could not start job", "job_id", job.ID, "slot", slot, "err", err)
		d.finish(hctx, job, Result{ExitCode: -1, Error: err.Error()})
		return false
	}
	d.trackLines(job, nil)
	c, err := d.pool.Start(slot, spec.poolSpec(job, &d.opts))
	if err != nil {
		d.pool.Release(slot)
		d.untrackLines(job.ID)
		d.handBack(hctx, job, err)
		return false
	}
	d.countStart()
	d.stateMu.Lock()
	d.running[c] = &running{child: c, job: job, since: c.Started}
	d.stateMu.Unlock()
	return true
}

// push queues an event for the dispatcher. The queue is unbounded (it
// holds at most a few events per child) so that pool goroutines never
// block on a busy dispatcher.
func (d *Daemon) push(ev event) {
	d.evMu.Lock()
	d.events = append(d.events, ev)
	d.evMu.Unlock()
	d.notify()
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
	if r.worker == nil {
		d.untrackLines(r.job.ID) // the tail is the Exit's
		d.finish(hctx, r.job, resultFromExit(c.Exit()))
		return
	}
	if r.timer != nil {
		r.timer.Stop()
	}
	d.workerExited(r)
	if r.job == nil {
		return // an idle worker retired
	}
	var res Result
	if r.reply != nil {
		res = *r.reply
		if r.lines {
			// What the worker used is known now, and comes with its last job.
			res.UserCPU, res.SysCPU, res.MaxRSS, res.Usage = workerUsage(r.worker)
		}
	} else {
		res = resultFromExit(c.Exit())
		res.TimedOut = r.timedOut.Load()
		res.Duration = time.Since(r.since)
		switch err := r.worker.Err(); {
		case err != nil:
			// A protocol error says better than the exit status why the
			// job failed: the pool stopped the worker for it.
			res.Error = "worker stopped: " + err.Error()
		case res.Error == "":
			res.Error = "worker exited during the job: " + c.Exit().String()
		}
		if res.ExitCode == 0 && res.Signal == 0 {
			res.ExitCode = 1 // exited cleanly, but never answered
		}
		_, _, _, res.Usage = workerUsage(r.worker)
	}
	res.Output = d.untrackLines(r.job.ID)
	d.finish(hctx, r.job, res)
}

// answered handles a worker's answer to its job. A worker whose answer
// cannot be decoded, or whose job has timed out, is replaced: its job is
// filed when it has exited, as is the last job of a retiring worker, with
// the whole output tail.
func (d *Daemon) answered(hctx context.Context, ev event) {
	r := d.running[ev.worker.Child]
	if r == nil || r.job == nil {
		return
	}
	// A timer that cannot be stopped has fired, or is firing: the job is
	// timed out whatever it answered, and the timer stops the worker.
	timedOut := r.timer != nil && !r.timer.Stop() || r.timedOut.Load()
	r.timer = nil
	job := r.job
	d.stateMu.Lock()
	r.job = nil
	d.stateMu.Unlock()
	res := Result{TimedOut: timedOut, Duration: time.Since(r.since)}
	if r.lines {
		res.Usage = UsageNone // the worker's usage comes with its last job
		switch {
		case ev.err != nil:
			res.ExitCode, res.Error = 1, ev.err.Error()
		case !ev.answer.OK:
			res.ExitCode, res.Error = 1, ev.answer.Error
			if res.Error == "" {
				res.Error = `the worker answered "ok": false, with no error`
			}
		}
	} else {
		res.ExitCode, res.Error = ev.reply.code, ev.reply.err
		res.UserCPU, res.SysCPU, res.MaxRSS = ev.reply.userCPU, ev.reply.sysCPU, ev.reply.maxRSS
		// Measured by the Go worker with getrusage at the end of RunJob:
		// its CPU since its previous job ended, its peak so far.
		res.CPUFrom, res.MaxRSSFrom = "worker", "worker"
		res.Interrupted = ev.worker.Interrupted()
		if ev.err != nil {
			res.ExitCode, res.Error = 1, "bad answer from worker: "+ev.err.Error()
		}
	}
	if ev.err == nil {
		r.answered = true
		d.startsReset("a worker answered")
	}
	if ev.err != nil || timedOut || ev.worker.Retiring() {
		if ev.err != nil {
			// It broke the protocol: whatever it does next cannot be
			// trusted. Stopped as a timeout would stop it.
			d.log.Warn("stopping a worker that sent a malformed answer", "pid", r.child.Pid, "job_id", job.ID, "err", ev.err)
			ev.worker.Retire()
			ev.worker.Stop(d.stopOf(r))
		} else if timedOut {
			ev.worker.Retire()
		}
		// The worker exits next. Its exit, once its output has been read
		// to the end, finishes the job with the whole output tail.
		// A copy, so that res stays on the stack of the usual answer.
		reply := res
		d.stateMu.Lock()
		r.job, r.reply = job, &reply
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
	switch {
	case v == Completed, v == Unknown && res.OK():
		d.completed.Add(1)
	case v == Retrying:
		d.retrying.Add(1)
	case v == Failed:
		d.gaveUp.Add(1)
	}
	if d.opts.Observer != nil && !res.NotStarted {
		d.opts.Observer.JobFinished(job, res, v)
	}
	d.logFinished(hctx, job, &res, v)
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
	id      string
	attempt int
	worker  bool
	tail    *pool.Tail // a worker's job only; made on the first line, as most jobs write none
}

// trackLines starts attributing output lines to job, whose worker is r,
// or nil for a command child. A worker's jobLines are reused: its previous
// job was untracked before it was given this one.
func (d *Daemon) trackLines(job *Job, r *running) {
	var jl *jobLines
	if r != nil {
		jl = &r.jobLines
	} else {
		jl = new(jobLines)
	}
	d.linesMu.Lock()
	if jl.id != "" && d.lines[jl.id] == jl {
		delete(d.lines, jl.id) // never the case, but a stale id must not write into this job's tail
	}
	*jl = jobLines{id: job.ID, attempt: job.Attempt, worker: r != nil}
	d.lines[job.ID] = jl
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

// logFinished logs a finished run at info, for the operator: the job, its
// attempt, the outcome, the wall time in seconds and what became of the
// job; a job that failed for good once more at warning, with the reason.
func (d *Daemon) logFinished(ctx context.Context, job *Job, res *Result, v Verdict) {
	if d.log.Enabled(ctx, slog.LevelInfo) {
		attrs := []slog.Attr{slog.String("job_id", job.ID), slog.Int("attempt", job.Attempt), slog.Int("slot", job.Slot),
			slog.String("outcome", res.String()), slog.Float64("duration_seconds", roundMilli(res.Duration))}
		if v != Unknown {
			attrs = append(attrs, slog.String("verdict", v.String()))
		}
		d.log.LogAttrs(ctx, slog.LevelInfo, "job finished", attrs...)
	}
	if v == Failed {
		attrs := []slog.Attr{slog.String("job_id", job.ID), slog.Int("attempt", job.Attempt), slog.String("reason", res.String())}
		if res.Error != "" && !strings.HasPrefix(res.String(), "error: ") {
			attrs = append(attrs, slog.String("error", res.Error))
		}
		d.log.LogAttrs(ctx, slog.LevelWarn, "job failed for good", attrs...)
	}
}

// roundMilli returns d in seconds, to the millisecond.
func roundMilli(d time.Duration) float64 {
	return float64(d.Round(time.Millisecond)) / float64(time.Second)
}
