package jobs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/internal/workerproto"
	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

// Workers, Go and command alike, go through one path in the dispatcher:
// startJob starts one when a slot has none idle, answered takes its
// answers, exited its end, and the idle list, timers and retirement are
// shared. Only the start (startWorker), the encoding of a job (encode)
// and the decoding of an answer differ.

// MetaPath is the key of Job.Meta that holds a job's file, for sources
// that have one (the spool): a command worker gets it as the job's "path".
const MetaPath = "path"

// maxKeptBuf is the largest encoding buffer kept from one job to the next.
const maxKeptBuf = 1 << 20

// workerCommand asks the application for the command worker of slot: nil
// when it has none (no WorkerCommander, or WorkerCommand said nil, nil).
func (d *Daemon) workerCommand(hctx context.Context, slot int) (*Spec, error) {
	if d.wcmdr == nil {
		return nil, nil
	}
	var spec *Spec
	err := d.callHook("WorkerCommand", func() (err error) {
		spec, err = d.wcmdr.WorkerCommand(hctx, slot)
		return err
	})
	if err == nil && spec != nil && spec.Path == "" {
		err = errors.New("WorkerCommand returned a Spec without a Path")
	}
	return spec, err
}

// startWorker starts a worker in slot for job: a command worker from spec,
// or, when spec is nil, this program as a Go worker.
func (d *Daemon) startWorker(slot int, spec *Spec, job *Job) (*running, error) {
	r := &running{lines: spec != nil}
	ws := &pool.WorkerSpec{MaxAge: d.opts.WorkerMaxAge, MaxRSS: d.opts.WorkerMaxRSS}
	ws.Jobs = d.opts.JobsPerChild
	if !r.lines {
		ws.Jobs = max(ws.Jobs, 1) // a Go child per job, unless more are asked for
	}
	if ws.Jobs != 1 {
		ws.Jitter = 0.1
	}
	if r.lines {
		r.timeout, r.stopSignal, r.killGrace = spec.Timeout, spec.StopSignal, spec.KillGrace
		sig, grace := d.stopOf(r)
		env := spec.Env
		if env == nil {
			env = os.Environ()
		}
		// Last, so that they win over the application's (exec keeps the
		// last value of a name).
		env = append(env[:len(env):len(env)], workerproto.EnvWorker+"="+workerproto.Version,
			workerproto.EnvSlot+"="+strconv.Itoa(slot))
		ws.Protocol = pool.ProtocolLines
		ws.MaxAnswer = workerproto.MaxAnswer
		// What the worker prints before it reads its first job lands
		// under that job's id.
		ws.Spec = pool.Spec{Path: spec.Path, Args: spec.Args, Env: env, Dir: spec.Dir,
			Credential: d.opts.Credential, Label: job.ID, StopSignal: sig, KillGrace: grace}
		ws.OnResult = func(w *pool.Worker, msg []byte) {
			a, err := workerproto.ParseAnswer(msg, r.sentID)
			d.pushAnswer(event{worker: w, answer: a, err: err})
		}
	} else {
		// The signal its first job is sent with (encode), which startJob
		// changes for a later job that is sent with another.
		r.stopSignal = d.opts.StopSignal
		ws.Spec = pool.Spec{Credential: d.opts.Credential, Label: job.ID, StopSignal: r.stopSignal, KillGrace: d.opts.KillGrace}
		ws.OnResult = func(w *pool.Worker, msg []byte) {
			rep, err := decodeReply(msg)
			d.pushAnswer(event{worker: w, reply: rep, err: err})
		}
		ws.OnCall = func(_ *pool.Worker, req []byte) []byte { return d.vars.serve(req) }
	}
	w, err := d.pool.StartWorker(slot, ws)
	if err != nil {
		return nil, err
	}
	d.workersStarted.Add(1)
	r.child, r.worker = w.Child, w
	d.stateMu.Lock()
	d.running[w.Child] = r
	d.stateMu.Unlock()
	if d.log.Enabled(context.Background(), slog.LevelDebug) {
		d.log.Debug("worker started", "pid", w.Pid, "slot", slot, "protocol", ws.Protocol.String(), "jobs", ws.Jobs)
	}
	return r, nil
}

// stopOf returns how a worker's job is stopped: its spec's signal and
// grace, or the options' in force.
func (d *Daemon) stopOf(r *running) (syscall.Signal, time.Duration) {
	sig, grace := r.stopSignal, r.killGrace
	if sig == 0 {
		sig = d.opts.StopSignal
	}
	if grace <= 0 {
		grace = d.opts.KillGrace
	}
	return sig, grace
}

// armTimeout starts the timer of the job r was just sent: past the
// timeout, the worker's whole process group gets the stop signal, then
// SIGKILL; the job is timed out whatever the worker answers after that,
// and the worker is replaced.
func (d *Daemon) armTimeout(r *running) {
	t := r.timeout
	if t <= 0 {
		t = d.opts.JobTimeout
	}
	if t <= 0 {
		return
	}
	w := r.worker
	sig, grace := d.stopOf(r)
	r.timer = time.AfterFunc(t, func() {
		r.timedOut.Store(true)
		w.Stop(sig, grace)
	})
}

// encode writes the message of job into d.encBuf: the pkg/jobs codec for a
// Go worker, a protocol line for a command worker. A job that a command
// worker cannot be given (a path that is not UTF-8, a line longer than the
// pool carries) is an error.
func (d *Daemon) encode(job *Job, lines bool) error {
	if cap(d.encBuf) > maxKeptBuf {
		d.encBuf = nil
	}
	if !lines {
		d.encBuf = encodeJob(d.encBuf, job, d.opts.StopSignal)
		return nil
	}
	// The path travels as "path"; the rest of Meta as "meta".
	wj := workerproto.Job{ID: job.ID, Attempt: job.Attempt, Slot: job.Slot, Payload: job.Payload,
		Path: job.Meta[MetaPath], Meta: job.Meta, Omit: MetaPath}
	b, err := workerproto.AppendJob(d.encBuf[:0], &wj)
	if err != nil {
		return fmt.Errorf("cannot send job %q to a command worker: %w", job.ID, err)
	}
	if len(b) > pool.MaxMessage {
		d.encBuf = nil
		return fmt.Errorf("cannot send job %q to a command worker: its line would be %d bytes (payload %d bytes, in base64), more than the %d a worker takes",
			job.ID, len(b), len(job.Payload), pool.MaxMessage)
	}
	d.encBuf = b
	return nil
}

// workerUsage returns the CPU time and peak RSS of a worker that has
// exited, and whose figures they are: the job's, if it ran only one.
func workerUsage(w *pool.Worker) (user, sys time.Duration, rss int64, u UsageOf) {
	e := w.Exit()
	u = UsageWorker
	if w.Completed() <= 1 {
		u = UsageJob
	}
	return e.UserCPU, e.SysCPU, e.MaxRSS, u
}

// retireCommandWorkers retires every command worker, idle ones now, busy
// ones after their job: on a reload, which may have changed their command,
// environment or code.
func (d *Daemon) retireCommandWorkers() {
	kept := d.idle[:0]
	for _, r := range d.idle {
		if r.lines {
			r.worker.Retire()
		} else {
			kept = append(kept, r)
		}
	}
	clear(d.idle[len(kept):])
	d.idle = kept
	for _, r := range d.running {
		if r.lines {
			r.worker.Retire()
		}
	}
}

// Workers that end before their first well-formed answer (a syntax
// error, a missing library, a crash at start-up) are counted in a row,
// and each new worker waits after them: 100 ms after the first, doubling
// up to 30 s, so that a broken worker script never spins. And then only
// one new worker is tried at a time (d.probe), not one per free slot. The
// first well-formed answer of any worker, or a reload, starts the count
// over.
const (
	startBackoffBase = 100 * time.Millisecond
	startBackoffMax  = 30 * time.Second
)

// workerExited counts r, a worker that has exited, if it ended before its
// first well-formed answer of its own accord: not timed out, not stopped
// by the daemon.
func (d *Daemon) workerExited(r *running) {
	if d.probe == r {
		d.probe = nil
	}
	c := r.child
	if d.log.Enabled(context.Background(), slog.LevelDebug) {
		d.log.Debug("worker exited", "pid", c.Pid, "slot", c.Slot, "exit", c.Exit().String(), "jobs", r.worker.Completed())
	}
	if r.answered || r.timedOut.Load() || d.stopMode >= Graceful {
		return
	}
	why := c.Exit().String()
	if err := r.worker.Err(); err != nil {
		why += ": " + err.Error()
	} else if r.reply != nil && r.reply.Error != "" {
		why += " after a malformed answer: " + r.reply.Error
	}
	if line := lastLine(c.Exit().Output); line != "" {
		why += "; its last output: " + line
	}
	d.startFailed(why)
}

// startFailed counts a worker that ended, or could not start, before its
// first answer, and holds back the next start.
func (d *Daemon) startFailed(why string) {
	d.stateMu.Lock()
	d.failedStarts++
	n := d.failedStarts
	wait := startBackoffMax
	if n <= 16 {
		wait = min(startBackoffBase<<(n-1), startBackoffMax)
	}
	d.startNotBefore, d.startErr = time.Now().Add(wait), why
	d.stateMu.Unlock()
	d.log.Warn("a worker ended before its first answer; the next one waits", "in_a_row", n, "wait", wait, "why", why)
}

// startsReset starts the count of failed starts over, for the reason
// why. It costs nothing when there is none, as after most answers.
func (d *Daemon) startsReset(why string) {
	if d.failedStarts == 0 {
		return
	}
	d.stateMu.Lock()
	n := d.failedStarts
	d.failedStarts, d.startNotBefore, d.startErr, d.probe = 0, time.Time{}, "", nil
	d.stateMu.Unlock()
	d.log.Info("workers start without waiting again", "why", why, "failed_before", n)
}

// startWait returns how long a new worker must still wait; the backoff
// when one on trial runs, since its end will say.
func (d *Daemon) startWait(now time.Time) time.Duration {
	switch {
	case d.failedStarts == 0:
		return 0
	case d.probe != nil:
		return startBackoffMax
	}
	return d.startNotBefore.Sub(now)
}

// maxWhyLine bounds the output quoted in a failed start's description.
const maxWhyLine = 200

// lastLine returns the last line of out that is not blank, at most
// maxWhyLine bytes of it, made valid UTF-8.
func lastLine(out []byte) string {
	out = bytes.TrimRight(out, " \t\r\n")
	if i := bytes.LastIndexByte(out, '\n'); i >= 0 {
		out = out[i+1:]
	}
	if len(out) > maxWhyLine {
		out = append(out[:maxWhyLine:maxWhyLine], "..."...)
	}
	return string(bytes.ToValidUTF8(out, []byte("\uFFFD")))
}
