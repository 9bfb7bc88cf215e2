package pool

import (
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A worker's output and its answers travel on different pipes, read by
// different goroutines: without care, the last lines a job wrote before
// its answer could be read after the answer was handed over, and carry
// the next job's label. So before a worker's answer goes to OnResult, its
// reader waits until the output readers have handed to the sink every
// byte that was in the output pipes when the answer was read (catchUp):
// what a worker writes before its answer is that job's, exactly.
//
// The bookkeeping that makes this exact, for a worker with pipes of its
// own (one in its slot's pipes needs none: slotout.go): its output pipe
// is read with non-blocking reads under a lock (outPipe), which counts
// the bytes read; the pipe's own count of unread bytes (FIONREAD, alias
// TIOCINQ), taken under the same lock, completes the total written so
// far. The output reader counts the bytes it has handed over. A line the
// worker did not end with a newline before its answer is the exception:
// it is handed over once it ends, under the label in force then.

// maxCatchUp bounds the wait for the output readers, for a worker whose
// output never pauses (a program it started writes on its stdout without
// end) or a sink that has stalled.
const maxCatchUp = time.Second

// outPipe is the read end of a worker's stdout or stderr.
type outPipe struct {
	rc syscall.RawConn

	mu       sync.Mutex
	read     int64 // bytes read from the pipe
	drained  bool  // the last read found the pipe empty: what was read is handed over, but an unended line
	handed   atomic.Int64
	ended    atomic.Bool // end of file, or an error: nothing more will come
	waiting  atomic.Bool // catchUp waits for wake
	wake     chan struct{}
	buf      []byte // tryRead's argument and results
	n        int
	errno    syscall.Errno
	tryReadF func(uintptr) bool
	unread   int // unreadIn's result
	unreadF  func(uintptr)
}

func newOutPipe(f *os.File) *outPipe {
	p := &outPipe{rc: syscallConn(f), wake: make(chan struct{}, 1)}
	p.tryReadF, p.unreadF = p.tryRead, p.unreadIn
	return p
}

// Read reads from the pipe; bufio calls it only when it holds no complete
// line, so while it waits here, every line read so far has been handed
// over.
func (p *outPipe) Read(b []byte) (int, error) {
	p.buf = b
	if err := p.rc.Read(p.tryReadF); err != nil {
		return 0, err
	}
	p.buf = nil
	switch {
	case p.errno != 0:
		return 0, p.errno
	case p.n == 0:
		return 0, io.EOF
	}
	return p.n, nil
}

// tryRead makes one non-blocking read, counted under the lock; on an empty
// pipe it returns false, and the poller calls it again when there is more.
func (p *outPipe) tryRead(fd uintptr) bool {
	p.mu.Lock()
	n, errno := rawRead(int(fd), p.buf) // rawio.go: without the scheduler
	if errno == unix.EAGAIN {
		p.drained = true
		p.mu.Unlock()
		p.notify()
		return false
	}
	p.drained = false
	if errno == 0 {
		p.read += int64(n)
	}
	p.mu.Unlock()
	p.n, p.errno = 0, errno
	if errno == 0 {
		p.n = n
	}
	return true
}

// handedOver counts n bytes given to the sink (or dropped past the line
// limit, which is the same to catchUp).
func (p *outPipe) handedOver(n int) {
	p.handed.Add(int64(n))
	p.notify()
}

// end marks the pipe as read to its end.
func (p *outPipe) end() {
	p.ended.Store(true)
	p.notify()
}

func (p *outPipe) notify() {
	if p.waiting.Load() {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// target returns how many bytes the worker has written into the pipe so
// far: those read, and those still in the pipe, which only a pipe that
// poll found readable may hold.
func (p *outPipe) target(readable bool) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !readable {
		// What was written before the poll has been read, or is being
		// read by a tryRead that holds the lock: counted either way.
		return p.read
	}
	if err := p.rc.Control(p.unreadF); err != nil {
		return 0 // closed: nothing more to wait for
	}
	return p.read + int64(p.unread)
}

// unreadIn sets p.unread to the bytes waiting in the pipe fd (Control's
// callback, a method value made once: a closure would cost an allocation
// per answer).
func (p *outPipe) unreadIn(fd uintptr) {
	p.unread = rawUnread(int(fd))
}

// outPoll polls a worker's two output pipes at once, through their
// RawConns, which keep the descriptors open meanwhile. Its callbacks are
// method values made once, for the reason of unreadIn.
type outPoll struct {
	a, b           *outPipe
	fds            [2]unix.PollFd
	ok             bool
	outerF, innerF func(uintptr)
}

func newOutPoll(a, b *outPipe) *outPoll {
	q := &outPoll{a: a, b: b}
	q.outerF, q.innerF = q.outer, q.inner
	return q
}

// readable reports, with one poll of both pipes, which hold unread bytes:
// usually neither, and then catchUp costs one system call. On an error it
// says both, to be safe.
func (q *outPoll) readable() (ra, rb bool) {
	q.ok = false
	_ = q.a.rc.Control(q.outerF)
	if !q.ok {
		return true, true
	}
	return q.fds[0].Revents != 0, q.fds[1].Revents != 0
}

func (q *outPoll) outer(fa uintptr) {
	q.fds[0] = unix.PollFd{Fd: int32(fa), Events: unix.POLLIN}
	_ = q.b.rc.Control(q.innerF)
}

func (q *outPoll) inner(fb uintptr) {
	q.fds[1] = unix.PollFd{Fd: int32(fb), Events: unix.POLLIN}
	q.ok = rawPollNow(q.fds[:]) == 0
}

// caughtUp reports whether the output up to target has been handed over:
// all of it, or all but an unended line.
func (p *outPipe) caughtUp(target int64) bool {
	if p.ended.Load() || p.handed.Load() >= target {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.drained && p.read >= target
}

// catchUp waits, up to maxCatchUp in all, until the child's output
// readers have handed over what the child wrote before this call. A
// worker in its slot's pipes reads them itself, to their last byte; a
// command child returns at once.
func (c *Child) catchUp() {
	if c.shared != nil {
		for _, s := range c.shared.out {
			s.readFor(c)
		}
		return
	}
	if c.outPoll == nil {
		return
	}
	var r [2]bool
	r[0], r[1] = c.outPoll.readable()
	var deadline *time.Timer
	for i, p := range c.outs {
		target := p.target(r[i])
		if p.caughtUp(target) {
			continue
		}
		if deadline == nil {
			deadline = time.NewTimer(maxCatchUp)
			defer deadline.Stop()
		}
		p.waiting.Store(true)
		for !p.caughtUp(target) {
			select {
			case <-p.wake:
			case <-deadline.C:
				p.waiting.Store(false)
				return
			}
		}
		p.waiting.Store(false)
	}
}
