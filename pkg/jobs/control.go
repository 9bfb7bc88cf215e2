package jobs

import (
	"context"
	"errors"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

// ErrNotRunning is returned by the control methods of a daemon whose Run
// has returned.
var ErrNotRunning = errors.New("daemon is not running")

// do runs f on the dispatcher goroutine and waits for it.
func (d *Daemon) do(f func()) error {
	done := make(chan struct{})
	select {
	case d.ctl <- func() { f(); close(done) }:
		<-done
		return nil
	case <-d.finished:
		return ErrNotRunning
	}
}

// Reload calls Options.OnReload, then LoadConfig, on the dispatcher
// goroutine, and returns when both have returned. If either fails, the
// error is returned and the daemon runs on as before.
func (d *Daemon) Reload(ctx context.Context) error {
	var err error
	if derr := d.do(func() { err = d.reload(WithVars(context.WithoutCancel(ctx), d.vars)) }); derr != nil {
		return derr
	}
	return err
}

func (d *Daemon) reload(hctx context.Context) error {
	next := d.opts
	next.MaxChildren = d.pool.Max()
	if d.opts.OnReload != nil {
		if err := d.callHook("OnReload", func() error { return d.opts.OnReload(&next) }); err != nil {
			d.log.Error("reload refused", "err", err)
			return err
		}
	}
	if d.loader != nil {
		if err := d.callHook("LoadConfig", func() error { return d.loader.LoadConfig(hctx) }); err != nil {
			d.log.Error("reload refused: LoadConfig failed", "err", err)
			return err
		}
	}
	d.apply(next)
	d.stateMu.Lock()
	d.generation++
	d.stateMu.Unlock()
	d.log.Info("reloaded", "generation", d.generation)
	return nil
}

// apply takes from next the options that may change at run time.
func (d *Daemon) apply(next Options) {
	next.withDefaults()
	o := &d.opts
	o.JobTimeout, o.KillGrace, o.StopSignal = next.JobTimeout, next.KillGrace, next.StopSignal
	o.NoForwardSignals, o.StopTimeout = next.NoForwardSignals, next.StopTimeout
	o.IdleInterval, o.MaxHookErrors = next.IdleInterval, next.MaxHookErrors
	o.WorkerMaxAge, o.WorkerMaxRSS = next.WorkerMaxAge, next.WorkerMaxRSS
	if next.MaxChildren != d.pool.Max() {
		d.SetMaxChildren(next.MaxChildren)
	}
}

// SetMaxChildren sets how many jobs may run at once (at least 1) and
// returns the new value. Lowering it never stops running jobs: slots above
// the new maximum are not refilled as their jobs end. It is safe to call
// from a hook.
func (d *Daemon) SetMaxChildren(n int) int {
	return d.scale(func(int) int { return n })
}

// ScaleMaxChildren changes MaxChildren by delta and returns the new
// value, at least 1. It is safe to call from a hook.
func (d *Daemon) ScaleMaxChildren(delta int) int {
	return d.scale(func(old int) int { return old + delta })
}

func (d *Daemon) scale(f func(int) int) int {
	d.stateMu.Lock()
	p := d.pool
	if p == nil { // before Run
		d.maxBeforeRun = max(f(d.maxBeforeRun), 1)
		defer d.stateMu.Unlock()
		return d.maxBeforeRun
	}
	d.stateMu.Unlock()
	old, n := p.UpdateMax(f)
	if n != old {
		d.log.Info("max children changed", "max_children", n, "was", old)
		d.push(event{}) // wake the dispatcher: there may be room now
	}
	return n
}

// Pause stops the dispatcher from starting jobs; running jobs go on. It
// returns at once, and is safe to call from a hook.
func (d *Daemon) Pause() { d.push(event{apply: func() { d.setPaused(true) }}) }

// Resume undoes Pause.
func (d *Daemon) Resume() { d.push(event{apply: func() { d.setPaused(false) }}) }

func (d *Daemon) setPaused(p bool) {
	if d.paused != p {
		d.stateMu.Lock()
		d.paused = p
		d.stateMu.Unlock()
		d.log.Info("dispatch " + map[bool]string{true: "paused", false: "resumed"}[p])
	}
}

// Stop begins a stop: no job is started any more, and running jobs are
// treated as mode says (see StopMode). It returns at once, and is safe to
// call from a hook; Run returns when every child has ended. A later Stop
// may escalate, say from Drain to Immediate, but never soften.
func (d *Daemon) Stop(mode StopMode) {
	d.push(event{apply: func() { d.beginStop(mode) }})
}

// StopMode says how a stop treats running jobs: Drain lets them finish,
// Graceful sends them StopSignal and kills them after StopTimeout,
// Immediate kills them at once.
type StopMode = pool.StopMode

// The stop modes, from the gentlest.
const (
	Drain     = pool.Drain
	Graceful  = pool.Graceful
	Immediate = pool.Immediate
)

// IsChild reports whether this process is a child that a daemon started
// to run jobs: Run will run them and exit. Use it in LoadConfig to skip
// what only the parent needs.
func IsChild() bool { return pool.IsChild() }

func (d *Daemon) beginStop(mode pool.StopMode) {
	mode = max(mode, pool.Drain)
	if mode <= d.stopMode {
		return
	}
	d.stateMu.Lock()
	d.stopMode = mode
	d.stateMu.Unlock()
	d.idle = nil // the pool retires idle workers
	d.log.Info("stopping", "mode", mode.String(), "running", len(d.running))
	opt := pool.StopOptions{Signal: d.opts.StopSignal, Timeout: d.opts.StopTimeout}
	if d.opts.NoForwardSignals {
		opt.Signal = 0
	}
	// The pool's Stop waits for the children, while the dispatcher must go
	// on acknowledging the jobs that end meanwhile.
	go func() { _ = d.pool.Stop(context.Background(), mode, opt) }()
}

func (d *Daemon) onSignal(hctx context.Context, sig os.Signal) {
	d.log.Info("signal received", "signal", sig.String())
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT:
		if d.stopMode >= pool.Graceful {
			d.beginStop(pool.Immediate)
		} else {
			d.beginStop(pool.Graceful)
		}
	case syscall.SIGQUIT:
		d.beginStop(pool.Drain)
	case syscall.SIGHUP:
		_ = d.reload(hctx)
	case syscall.SIGUSR2:
		d.setPaused(true)
	case syscall.SIGCONT:
		d.setPaused(false)
	case syscall.SIGTTIN:
		d.ScaleMaxChildren(1)
	case syscall.SIGTTOU:
		d.ScaleMaxChildren(-1)
	}
}

// State is what a daemon is doing.
type State string

// The states of a daemon.
const (
	StateStarting State = "starting"
	StateRunning  State = "running"
	StatePaused   State = "paused"
	StateDraining State = "draining"
	StateStopping State = "stopping"
	StateStopped  State = "stopped"
)

// Status is a snapshot of a daemon.
type Status struct {
	State       State         `json:"state"`
	Pid         int           `json:"pid"`
	Uptime      time.Duration `json:"uptime_ns"`
	Generation  int           `json:"config_generation"`
	MaxChildren int           `json:"max_children"`
	Started     uint64        `json:"jobs_started"`
	Succeeded   uint64        `json:"jobs_succeeded"`
	Failed      uint64        `json:"jobs_failed"`
	Slots       []SlotStatus  `json:"slots"`
}

// SlotStatus describes one child.
type SlotStatus struct {
	Slot    int           `json:"slot"`
	Pid     int           `json:"pid"`
	JobID   string        `json:"job_id,omitempty"` // "" for an idle worker
	Attempt int           `json:"attempt,omitempty"`
	Runtime time.Duration `json:"runtime_ns"`
	Worker  bool          `json:"worker"`
}

// Status returns a snapshot of the daemon. It is safe to call from any
// goroutine, hooks included. After Run has returned it reports
// StateStopped and the final counters.
func (d *Daemon) Status() Status {
	s := Status{
		State:     StateStopped,
		Pid:       os.Getpid(),
		Started:   d.started.Load(),
		Succeeded: d.succeeded.Load(),
		Failed:    d.failed.Load(),
	}
	select {
	case <-d.finished:
		return s
	default:
	}
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	switch {
	case d.generation == 0:
		s.State = StateStarting
		return s
	case d.stopMode == pool.Drain:
		s.State = StateDraining
	case d.stopMode != 0:
		s.State = StateStopping
	case d.paused:
		s.State = StatePaused
	default:
		s.State = StateRunning
	}
	s.Uptime = time.Since(d.start)
	s.Generation = d.generation
	s.MaxChildren = d.pool.Max()
	now := time.Now()
	for c, r := range d.running {
		ss := SlotStatus{Slot: c.Slot, Pid: c.Pid, Worker: r.worker != nil}
		if r.job != nil {
			ss.JobID, ss.Attempt, ss.Runtime = r.job.ID, r.job.Attempt, now.Sub(r.since)
		}
		s.Slots = append(s.Slots, ss)
	}
	slices.SortFunc(s.Slots, func(a, b SlotStatus) int { return a.Slot - b.Slot })
	return s
}
