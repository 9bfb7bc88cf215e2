package pool

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
)

// EnvChild is set in the environment of a worker, to the numbers of the
// file descriptors of its channel: "3,4", the parent's messages in on fd
// 3, the worker's out on fd 4.
const EnvChild = "JOBDAEMON_CHILD"

// childFDs is the value of EnvChild.
const childFDs = "3,4"

// childFD is EnvChild as the process started with; OpenChild removes the
// variable from the environment, but the process stays a worker.
var childFD = os.Getenv(EnvChild)

// ChildConn is the worker's end of its channel to the parent. A worker
// does one thing at a time, so it reads the channel synchronously, without
// a reader goroutine: a job, then the answers to its own calls.
//
// If the parent dies, the kernel kills the worker (Pdeathsig); should that
// ever not happen, the next read of the channel finds EOF without "quit",
// and the worker's process group is killed then.
type ChildConn struct {
	mu      sync.Mutex // one exchange at a time
	ch      *channel
	quit    bool   // the parent said quit
	pending []byte // a job that arrived during a Call
	// OnParentGone runs when the channel closes without the parent having
	// said "quit": the parent died. The default kills the worker's whole
	// process group, so that a job never outlives its daemon.
	OnParentGone func()
}

// OpenChild opens the channel of a worker, and takes it out of the
// environment so that the job's own children do not see it. It fails when
// the process is not a worker.
func OpenChild() (*ChildConn, error) {
	if childFD != childFDs {
		return nil, fmt.Errorf("not a worker: %s=%q", EnvChild, childFD)
	}
	os.Unsetenv(EnvChild)
	// Blocking, outside the network poller: the worker waits on nothing
	// else, and a read that blocks its thread is the cheapest way to wait.
	// Close-on-exec, so that the job's own children never get the channel
	// (nor keep the parent's end of it from seeing the worker's exit).
	for _, fd := range []int{3, 4} {
		if err := syscall.SetNonblock(fd, false); err != nil {
			return nil, fmt.Errorf("worker channel: fd %d: %w", fd, err)
		}
		syscall.CloseOnExec(fd)
	}
	return &ChildConn{
		ch: newChannel(os.NewFile(3, "worker-channel"), os.NewFile(4, "worker-channel")),
		OnParentGone: func() {
			_ = syscall.Kill(0, syscall.SIGKILL)
		},
	}, nil
}

// Next returns the next job; it is valid until the next call of a
// ChildConn method. Next returns io.EOF when the parent has told the
// worker to exit.
func (c *ChildConn) Next() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending != nil {
		job := c.pending
		c.pending = nil
		return job, nil
	}
	for !c.quit {
		typ, msg, err := c.recv()
		if err != nil {
			return nil, err
		}
		if typ == msgJob {
			return msg, nil
		}
		// Anything else between jobs is stale; skip it.
	}
	return nil, io.EOF
}

// recv reads the next message. "quit" is noted, and returned too.
func (c *ChildConn) recv() (byte, []byte, error) {
	typ, msg, err := c.ch.recv()
	if err != nil {
		if !c.quit {
			c.OnParentGone()
		}
		return 0, nil, fmt.Errorf("worker channel: %w", err)
	}
	if typ == msgQuit {
		c.quit = true
	}
	return typ, msg, nil
}

// Reply sends the result of the job Next returned last.
func (c *ChildConn) Reply(result []byte) error {
	return c.ch.send(msgResult, result)
}

// Call sends a request to the parent and returns its answer. Calls from
// several goroutines are served one at a time.
func (c *ChildConn) Call(req []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.ch.send(msgCall, req); err != nil {
		return nil, fmt.Errorf("call parent: %w", err)
	}
	// The parent may have sent the first job, and a quit, before this call
	// (LoadConfig calls before the first job): keep the job for Next.
	for {
		typ, msg, err := c.recv()
		if err != nil {
			return nil, fmt.Errorf("call parent: %w", err)
		}
		switch typ {
		case msgReply:
			return bytes.Clone(msg), nil
		case msgJob:
			c.pending = bytes.Clone(msg)
		}
	}
}

// Close closes the channel.
func (c *ChildConn) Close() error { return c.ch.close() }
