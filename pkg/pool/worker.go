package pool

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"time"
)

// ErrBusy is returned by Worker.Send while the worker runs a job.
var ErrBusy = errors.New("worker is busy")

// ErrRetiring is returned by Worker.Send once the worker was told to exit.
var ErrRetiring = errors.New("worker is retiring")

// WorkerSpec describes a worker: the program re-executed in child mode,
// running jobs it receives over its channel.
type WorkerSpec struct {
	// Spec is the process; Path "" means this program (/proc/self/exe).
	Spec
	// Jobs, if positive, retires the worker after that many jobs.
	Jobs int
	// MaxAge, if positive, retires the worker once it is that old.
	MaxAge time.Duration
	// MaxRSS, if positive, retires the worker once its resident set passes
	// that many bytes.
	MaxRSS int64
	// Jitter, between 0 and 1, lowers each limit of each worker by a random
	// fraction up to Jitter, so that workers started together do not all
	// retire together. The limits are never raised.
	Jitter float64
	// OnResult receives the worker's answer to each job, on the worker's
	// reader goroutine; msg is valid only during the call.
	OnResult func(w *Worker, msg []byte)
	// OnCall answers a request the worker makes while running a job; msg
	// is valid only during the call. Nil answers every request with an
	// empty message.
	OnCall func(w *Worker, msg []byte) []byte
}

// Worker is a child that runs many jobs, one at a time.
type Worker struct {
	*Child
	ch   *channel
	spec *WorkerSpec

	jobLimit int
	deadline time.Time
	rssLimit int64

	mu        sync.Mutex
	sent      int
	completed int
	busy      bool
	retiring  bool
}

// StartWorker starts a worker in a slot reserved with TryAcquire. When the
// worker ends, its slot is released and Config.OnExit is called with its
// Child, after every result it sent has been handed to OnResult.
func (p *Pool) StartWorker(slot int, spec *WorkerSpec) (*Worker, error) {
	ch, theirs, err := socketPair()
	if err != nil {
		return nil, err
	}
	w := &Worker{ch: ch, spec: spec}
	w.setLimits()
	if spec.MaxAge > 0 {
		w.deadline = time.Now().Add(scale(spec.MaxAge, spec.Jitter))
	}
	ps := spec.Spec
	if ps.Path == "" {
		// The running binary, even if the file was replaced or deleted
		// since: parent and worker always speak the same protocol.
		ps.Path = "/proc/self/exe"
		if len(ps.Args) == 0 {
			// The same arguments: main runs again in the worker, up to
			// the point where it turns into one, and must take the same
			// path there (flags included).
			ps.Args = os.Args
		}
	}
	_, err = p.start(slot, &ps, theirs, w)
	theirs.Close()
	if err != nil {
		ch.close()
		return nil, err
	}
	return w, nil
}

func (w *Worker) setLimits() {
	s := w.spec
	if s.Jobs > 0 {
		w.jobLimit = max(1, int(scale(time.Duration(s.Jobs), s.Jitter)))
	}
	if s.MaxRSS > 0 {
		w.rssLimit = int64(scale(time.Duration(s.MaxRSS), s.Jitter))
	}
}

// scale lowers v by a random fraction of at most jitter.
func scale(v time.Duration, jitter float64) time.Duration {
	if jitter <= 0 {
		return v
	}
	jitter = min(jitter, 1)
	return time.Duration(float64(v) * (1 - jitter*rand.Float64()))
}

// Send gives the worker a job. It fails with ErrBusy while the previous job
// runs, with ErrRetiring once the worker was told to exit, or with the
// channel's error if the worker is gone. The worker that reaches its job
// limit with this job is told to exit after it.
func (w *Worker) Send(job []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.retiring:
		return ErrRetiring
	case w.busy:
		return ErrBusy
	}
	if err := w.ch.send(msgJob, job); err != nil {
		return fmt.Errorf("send job to worker %d: %w", w.Pid, err)
	}
	w.busy = true
	w.sent++
	if w.jobLimit > 0 && w.sent >= w.jobLimit {
		w.retireLocked()
	}
	return nil
}

// Retire tells the worker to exit once its current job, if any, is done.
func (w *Worker) Retire() {
	w.mu.Lock()
	w.retireLocked()
	w.mu.Unlock()
}

func (w *Worker) retireLocked() {
	if w.retiring {
		return
	}
	w.retiring = true
	// An error means the worker is gone already; its exit tells the rest.
	_ = w.ch.send(msgQuit, nil)
}

// Busy reports whether the worker is running a job.
func (w *Worker) Busy() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.busy
}

// Retiring reports whether the worker was told to exit.
func (w *Worker) Retiring() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.retiring
}

// Completed returns the number of jobs the worker has answered.
func (w *Worker) Completed() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.completed
}

// readLoop hands the worker's messages to the spec's callbacks until the
// channel closes.
func (w *Worker) readLoop() {
	defer w.Child.ended()
	defer w.ch.close()
	for {
		typ, msg, err := w.ch.recv()
		if err != nil {
			return
		}
		switch typ {
		case msgResult:
			w.mu.Lock()
			w.busy = false
			w.completed++
			if w.expiredLocked() {
				w.retireLocked()
			}
			w.mu.Unlock()
			if w.spec.OnResult != nil {
				w.spec.OnResult(w, msg)
			}
		case msgCall:
			var reply []byte
			if w.spec.OnCall != nil {
				reply = w.spec.OnCall(w, msg)
			}
			if err := w.ch.send(msgReply, reply); err != nil {
				return
			}
		default:
			w.pool.log.Warn("worker sent an unknown message", "pid", w.Pid, "type", typ)
		}
	}
}

// expiredLocked reports whether the worker passed its age or memory limit.
func (w *Worker) expiredLocked() bool {
	if !w.deadline.IsZero() && time.Now().After(w.deadline) {
		return true
	}
	// One small read of /proc per job, and only with a limit set.
	if w.rssLimit > 0 {
		if rss, err := residentSet(w.Pid); err == nil && rss > w.rssLimit {
			return true
		}
	}
	return false
}

func (w *Worker) closeConn() { w.ch.close() }

// residentSet returns the current resident set size of pid, in bytes.
func residentSet(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, fmt.Errorf("parse /proc/%d/statm: %q", pid, b)
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse /proc/%d/statm: %w", pid, err)
	}
	return pages * int64(os.Getpagesize()), nil
}
