package jobs

import (
	"context"
	"errors"
	"syscall"
	"time"
)

// A job that could not be started is not a run of it. The fork or exec
// failed (too many open files, the user's process limit, no memory, a
// missing program), or no worker could be started to take it: the job is
// handed back to its source unharmed (Result.NotStarted, which a source
// honours as it does Interrupted), and the daemon starts no other job for
// a while, so that a lasting condition costs a log line every few seconds
// rather than every job of the queue, each in a burst of attempts.

// The start back-off: it doubles from minStartBackoff with each failure in
// a row, up to maxStartBackoff, and ends with the first job that starts.
const (
	minStartBackoff = 100 * time.Millisecond
	maxStartBackoff = 10 * time.Second
)

// handBack hands back a job that could not be started, counts it, and
// backs off.
func (d *Daemon) handBack(hctx context.Context, job *Job, err error) {
	d.notStarted.Add(1)
	now := time.Now()
	d.stateMu.Lock()
	d.handBackoff = min(max(2*d.handBackoff, minStartBackoff), maxStartBackoff)
	d.handBackUntil = now.Add(d.handBackoff)
	d.handBackErr = err.Error()
	backoff := d.handBackoff
	d.stateMu.Unlock()
	d.log.Error("could not start job; it goes back to its source, and no job starts for a while",
		"job_id", job.ID, "slot", job.Slot, "err", err, "retry_in", backoff)
	d.finish(hctx, job, Result{ExitCode: -1, Error: err.Error(), NotStarted: true})
}

// countStart counts a job that runs, and ends a start back-off.
func (d *Daemon) countStart() {
	d.started.Add(1)
	if d.handBackoff != 0 {
		d.stateMu.Lock()
		d.handBackoff, d.handBackUntil = 0, time.Time{}
		d.stateMu.Unlock()
		d.log.Info("jobs start again")
	}
}

// handBackWait returns how long the start back-off lasts yet; 0 when
// over.
func (d *Daemon) handBackWait() time.Duration {
	if d.handBackUntil.IsZero() {
		return 0
	}
	return time.Until(d.handBackUntil)
}

// isResourceError reports whether err says that the system or the process
// ran out of something (descriptors, processes, memory), which passes.
func isResourceError(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.EAGAIN, syscall.ENOMEM, syscall.ENOBUFS, syscall.ENOSPC} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
