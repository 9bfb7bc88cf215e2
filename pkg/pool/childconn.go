package pool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
)

// EnvChild is set in the environment of a worker, to the number of the
// file descriptor that carries its channel.
const EnvChild = "JOBDAEMON_CHILD"

// childFD is EnvChild as the process started with; OpenChild removes the
// variable from the environment, but the process stays a worker.
var childFD = os.Getenv(EnvChild)

// IsChild reports whether this process was started as a worker by a Pool.
func IsChild() bool { return childFD != "" }

// ChildConn is the worker's end of its channel to the parent.
type ChildConn struct {
	ch      *channel
	jobs    chan []byte
	replies chan []byte
	callMu  sync.Mutex
	// OnParentGone runs when the channel closes without the parent having
	// said "quit": the parent died. The default kills the worker's whole
	// process group, so that a job never outlives its daemon.
	OnParentGone func()
}

// OpenChild opens the channel of a worker, and takes it out of the
// environment so that the job's own children do not see it. It fails when
// the process is not a worker.
func OpenChild() (*ChildConn, error) {
	if childFD != "3" {
		return nil, fmt.Errorf("not a worker: %s=%q", EnvChild, childFD)
	}
	os.Unsetenv(EnvChild)
	ch, err := newChannel(os.NewFile(3, "worker-channel"))
	if err != nil {
		return nil, err
	}
	c := &ChildConn{
		ch:      ch,
		jobs:    make(chan []byte, 2),
		replies: make(chan []byte, 1),
		OnParentGone: func() {
			_ = syscall.Kill(0, syscall.SIGKILL)
		},
	}
	go c.readLoop()
	return c, nil
}

func (c *ChildConn) readLoop() {
	quit := false
	defer func() {
		if !quit {
			c.OnParentGone()
		}
		close(c.replies)
	}()
	for {
		typ, msg, err := c.ch.recv()
		if err != nil {
			return
		}
		switch typ {
		case msgJob:
			if !quit { // a parent never sends a job after "quit"
				c.jobs <- bytes.Clone(msg)
			}
		case msgReply:
			c.replies <- bytes.Clone(msg)
		case msgQuit:
			if !quit {
				quit = true
				close(c.jobs)
			}
		}
	}
}

// Next returns the next job. It returns io.EOF when the parent has told
// the worker to exit.
func (c *ChildConn) Next() ([]byte, error) {
	job, ok := <-c.jobs
	if !ok {
		return nil, io.EOF
	}
	return job, nil
}

// Reply sends the result of the job Next returned last.
func (c *ChildConn) Reply(result []byte) error {
	return c.ch.send(msgResult, result)
}

// Call sends a request to the parent and returns its answer. Calls from
// several goroutines are served one at a time.
func (c *ChildConn) Call(req []byte) ([]byte, error) {
	c.callMu.Lock()
	defer c.callMu.Unlock()
	if err := c.ch.send(msgCall, req); err != nil {
		return nil, fmt.Errorf("call parent: %w", err)
	}
	reply, ok := <-c.replies
	if !ok {
		return nil, errors.New("call parent: channel closed")
	}
	return reply, nil
}

// Close closes the channel.
func (c *ChildConn) Close() error { return c.ch.close() }
