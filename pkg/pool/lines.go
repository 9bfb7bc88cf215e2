package pool

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ProtocolLines: jobs go down the worker's standard input, one per line;
// answers come back on fd 3, a pipe, one per line. The pool adds and
// strips the newlines; what is between them is opaque to it.

// DefaultMaxAnswer is the longest answer line a ProtocolLines worker may
// write when WorkerSpec.MaxAnswer is 0.
const DefaultMaxAnswer = 1 << 20

var (
	// ErrNewline is returned by Send when a job for a ProtocolLines worker
	// contains a newline: it would arrive as two jobs.
	ErrNewline = errors.New("job contains a newline")
	// ErrAnswerTooLong is the protocol error of an answer line longer
	// than WorkerSpec.MaxAnswer.
	ErrAnswerTooLong = errors.New("answer line too long")
	// ErrPartialAnswer is the protocol error of a worker that closed fd 3
	// in the middle of an answer line.
	ErrPartialAnswer = errors.New("answer cut short by the end of fd 3")
)

// answerBuf is the read buffer of fd 3: an answer is a short line, and a
// longer one is gathered in lineConn.long. A worker's stdin pipe holds
// 64 KiB, so most jobs are written in one go.
const (
	answerBuf = 4 << 10
	keepLong  = 64 << 10 // a gathering buffer larger than this is dropped after use
)

// lineConn is the pool's end of a ProtocolLines worker: the write end of
// its standard input, and the read end of its fd 3.
type lineConn struct {
	in    *os.File
	inRaw syscall.RawConn
	out   *os.File
	br    *bufio.Reader
	long  []byte
	max   int

	// The worker's ends, blocking, held until it has started.
	stdinR, answerW int

	mu       sync.Mutex
	writing  bool          // a goroutine is writing the rest of a job
	written  chan struct{} // closed when it is done
	quitting bool          // close in once the job is written
	inClosed bool

	// tryWrite's argument (a job line) and results, so that a job costs
	// no closure.
	wbuf    []byte
	n       int
	errno   syscall.Errno
	writeFn func(uintptr) bool
}

// newLineConn creates the two pipes of a ProtocolLines worker.
func newLineConn(maxAnswer int) (*lineConn, error) {
	if maxAnswer <= 0 {
		maxAnswer = DefaultMaxAnswer
	}
	c := &lineConn{max: maxAnswer}
	var err error
	if c.in, c.stdinR, err = inputPipe(); err != nil {
		return nil, fmt.Errorf("create worker stdin pipe: %w", err)
	}
	if c.out, c.answerW, err = outputPipe(); err != nil {
		unix.Close(c.stdinR)
		c.in.Close()
		return nil, fmt.Errorf("create worker answer pipe: %w", err)
	}
	c.inRaw = syscallConn(c.in)
	c.br = bufio.NewReaderSize(newRawConn(c.out, "worker answers"), answerBuf)
	c.writeFn = c.tryWrite
	return c, nil
}

func (c *lineConn) prepare(l *launch) {
	l.files[0] = uintptr(c.stdinR)
	l.files = append(l.files, uintptr(c.answerW))
}

func (c *lineConn) childClose() {
	unix.Close(c.stdinR)
	unix.Close(c.answerW)
	c.stdinR, c.answerW = -1, -1
}

// send writes the job and its newline, without waiting:
// the worker may still be loading its application, and a job larger than
// the pipe must not stall the caller (the dispatcher of every slot). What
// does not fit is written by a goroutine, and the answer to the job is
// held back until it is done (see recv).
func (c *lineConn) send(job []byte) error {
	if bytes.IndexByte(job, '\n') >= 0 {
		return ErrNewline
	}
	if len(job) > MaxMessage {
		return errMessageTooLarge
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.quitting || c.inClosed:
		return os.ErrClosed
	case c.writing:
		return ErrBusy
	}
	// One write of the job and its newline: a copy costs less than a
	// second iovec for the short lines most jobs are.
	c.wbuf = append(append(c.wbuf[:0], job...), '\n')
	if err := c.inRaw.Write(c.writeFn); err != nil {
		return err
	}
	n := c.n
	switch c.errno {
	case 0:
	case unix.EAGAIN:
		n = 0
	default:
		return c.errno // EPIPE: the worker is gone, and its exit says why
	}
	if n == len(c.wbuf) {
		if cap(c.wbuf) > keepLong {
			c.wbuf = nil
		}
		return nil
	}
	// The goroutine takes the buffer; the next job gets a new one.
	rest := c.wbuf[n:]
	c.wbuf = nil
	c.writing = true
	c.written = make(chan struct{})
	go c.finishWrite(rest, c.written)
	return nil
}

// tryWrite makes one non-blocking write of c.wbuf: the pipe is in
// non-blocking mode, since it belongs to the runtime's poller; raw
// (rawio.go), since such a write never blocks.
func (c *lineConn) tryWrite(fd uintptr) bool {
	n, errno := rawWrite(int(fd), c.wbuf)
	c.n, c.errno = 0, errno
	if errno == 0 {
		c.n = n
	}
	return true
}

// finishWrite writes the rest of a job, parked in the poller until the
// worker reads it. An error means the worker or the pool closed the pipe;
// the worker's exit tells the rest.
func (c *lineConn) finishWrite(rest []byte, done chan struct{}) {
	_, _ = c.in.Write(rest)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writing = false
	close(done)
	if c.quitting {
		c.closeInLocked()
	}
}

// quit closes the worker's standard input, after the job being written if
// any: end of file is a worker's signal to exit.
func (c *lineConn) quit() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.quitting = true
	if !c.writing {
		c.closeInLocked()
	}
	return nil
}

func (c *lineConn) closeInLocked() {
	if !c.inClosed {
		c.inClosed = true
		c.in.Close()
	}
}

// recv returns the next answer line, without its newline, once the job it
// answers has been written whole: a worker that answers before it has read
// its job cannot make the pool send the next job into the middle of it.
// Memory is bounded by max, however long the worker's line.
func (c *lineConn) recv() (byte, []byte, error) {
	if cap(c.long) > keepLong {
		c.long = nil
	}
	c.long = c.long[:0]
	var msg []byte
	for {
		line, err := c.br.ReadSlice('\n')
		if err == nil {
			if len(c.long) == 0 {
				msg = line[:len(line)-1]
			} else {
				c.long = append(c.long, line[:len(line)-1]...)
				msg = c.long
			}
			break
		}
		if len(c.long)+len(line) > c.max {
			return 0, nil, protocolError(fmt.Errorf("%w: more than %d bytes", ErrAnswerTooLong, c.max))
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			c.long = append(c.long, line...)
			continue
		}
		if errors.Is(err, io.EOF) && len(c.long)+len(line) > 0 {
			return 0, nil, protocolError(fmt.Errorf("%w (%d bytes)", ErrPartialAnswer, len(c.long)+len(line)))
		}
		return 0, nil, err
	}
	if len(msg) > c.max {
		return 0, nil, protocolError(fmt.Errorf("%w: %d bytes, more than %d", ErrAnswerTooLong, len(msg), c.max))
	}
	c.mu.Lock()
	writing, written := c.writing, c.written
	c.mu.Unlock()
	if writing {
		<-written
	}
	return msgResult, msg, nil
}

func (c *lineConn) reply([]byte) error { return errors.New("a command worker takes no replies") }

func (c *lineConn) close() {
	c.mu.Lock()
	c.closeInLocked()
	c.mu.Unlock()
	c.out.Close()
}
