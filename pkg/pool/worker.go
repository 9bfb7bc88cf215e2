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

// WorkerSpec describes a worker: a child that runs many jobs, one at a
// time. With ProtocolGo it is the program re-executed in child mode; with
// ProtocolLines, any command.
type WorkerSpec struct {
	// Spec is the process. With ProtocolGo, Path "" means this program
	// (/proc/self/exe). With ProtocolLines, Path is required, and Stdin is
	// ignored: the worker's standard input is the pool's job pipe.
	Spec
	// Protocol is how the pool and the worker talk (default ProtocolGo).
	Protocol Protocol
	// MaxAnswer, for ProtocolLines, is the longest answer line accepted
	// (default DefaultMaxAnswer). A longer one is a protocol error: the
	// pool stops reading, and stops the worker.
	MaxAnswer int
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
	// reader goroutine; msg is valid only during the call. With
	// ProtocolLines it is the answer line without its newline, unchecked:
	// the owner parses it, and stops the worker if it makes no sense.
	OnResult func(w *Worker, msg []byte)
	// OnCall answers a request the worker makes while running a job; msg
	// is valid only during the call. Nil answers every request with an
	// empty message. ProtocolLines workers make no requests.
	OnCall func(w *Worker, msg []byte) []byte
}

// Worker is a child that runs many jobs, one at a time.
type Worker struct {
	*Child
	tr   transport
	spec *WorkerSpec

	jobLimit int
	deadline time.Time
	rssLimit int64

	mu        sync.Mutex
	sent      int
	completed int
	busy      bool
	retiring  bool
	err       error // the protocol error that made the pool stop it
}

// StartWorker starts a worker in a slot reserved with TryAcquire. When the
// worker ends, its slot is released and Config.OnExit is called with its
// Child, after every result it sent has been handed to OnResult.
func (p *Pool) StartWorker(slot int, spec *WorkerSpec) (*Worker, error) {
	ps := spec.Spec
	var tr transport
	switch spec.Protocol {
	case ProtocolGo:
		gt, err := newGoTransport()
		if err != nil {
			return nil, err
		}
		tr = gt
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
	case ProtocolLines:
		if ps.Path == "" {
			return nil, errors.New("start command worker: no program")
		}
		lc, err := newLineConn(spec.MaxAnswer)
		if err != nil {
			return nil, err
		}
		tr = lc
		ps.Stdin = nil // the job pipe replaces it (lineConn.prepare)
	default:
		return nil, fmt.Errorf("start worker: unknown protocol %d", spec.Protocol)
	}
	w := &Worker{tr: tr, spec: spec}
	w.setLimits()
	if spec.MaxAge > 0 {
		w.deadline = time.Now().Add(scale(spec.MaxAge, spec.Jitter))
	}
	_, err := p.start(slot, &ps, w)
	tr.childClose()
	if err != nil {
		tr.close()
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
// runs, with ErrRetiring once the worker was told to exit, or with an error
// that wraps ErrNewline for a ProtocolLines job that is not one line, or
// the transport's error (such as EPIPE) if the worker is gone; the worker
// stays as it was then. The worker that reaches its job limit with
// this job is told to exit after it. A ProtocolLines Send never waits for
// the worker to read: what the pipe cannot take is written in the
// background.
func (w *Worker) Send(job []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.retiring:
		return ErrRetiring
	case w.busy:
		return ErrBusy
	}
	if err := w.tr.send(job); err != nil {
		return fmt.Errorf("send job to worker %d: %w", w.Pid, err)
	}
	w.busy = true
	w.sent++
	if w.jobLimit > 0 && w.sent >= w.jobLimit {
		w.retireLocked()
	}
	return nil
}

// Retire tells the worker to exit once its current job, if any, is done:
// a ProtocolGo worker gets a "quit" message, a ProtocolLines worker sees
// its standard input close.
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
	_ = w.tr.quit()
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

// Err returns the protocol error for which the pool stopped the worker (an
// answer longer than MaxAnswer or cut short, an answer with no job in
// flight, a malformed message), or nil. It wraps ErrAnswerTooLong,
// ErrPartialAnswer or ErrUnexpectedAnswer when it is one of those. A job
// in flight then is still in flight (Busy) when the worker exits: Err
// says why it failed better than the exit status does.
func (w *Worker) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// ErrUnexpectedAnswer is the protocol error of a worker that answers when
// it has no job.
var ErrUnexpectedAnswer = errors.New("answer with no job in flight")

// readLoop hands the worker's messages to the spec's callbacks until the
// conversation ends. A worker that breaks its protocol is stopped; one
// that closes its end is retired, so that no job is sent into the void.
func (w *Worker) readLoop() {
	defer w.Child.ended()
	defer w.tr.close()
	for {
		typ, msg, err := w.tr.recv()
		if errors.Is(err, errProtocol) {
			w.fail(err)
			return
		}
		if err != nil {
			w.Retire()
			return
		}
		switch typ {
		case msgResult:
			w.mu.Lock()
			if !w.busy {
				w.mu.Unlock()
				w.fail(protocolError(ErrUnexpectedAnswer))
				return
			}
			w.busy = false
			w.completed++
			if w.expiredLocked() {
				w.retireLocked()
			}
			w.mu.Unlock()
			// What the job wrote before its answer is the job's: its lines
			// are handed over with its label before the answer is.
			w.Child.catchUp()
			if w.spec.OnResult != nil {
				w.spec.OnResult(w, msg)
			}
		case msgCall:
			var reply []byte
			if w.spec.OnCall != nil {
				reply = w.spec.OnCall(w, msg)
			}
			if err := w.tr.reply(reply); err != nil {
				w.Retire()
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

// fail records a protocol error and stops the worker as a timeout would:
// the job in flight, if any, ends with the worker.
func (w *Worker) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.retireLocked()
	w.mu.Unlock()
	w.pool.log.Warn("stopping a worker that broke its protocol", "pid", w.Pid, "err", err)
	w.Child.Stop(w.Child.spec.stopSignal())
}

func (w *Worker) closeConn() { w.tr.close() }

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
