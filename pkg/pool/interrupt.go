package pool

import "syscall"

// A stop interrupts the children it signals, and only those: a child that
// ended on its own while the pool was stopping (it failed, or exited
// before the stop's signal reached it) failed by itself, and its owner
// must count that run like any other. Exit.Interrupted and
// Child.Interrupted say which.

// SetStopSignal makes sig the signal a graceful stop sends this child in
// place of StopOptions.Signal (unless that is 0, which sends none), as its
// Spec's StopSignal did until then; 0 goes back to StopOptions.Signal. A
// worker whose next job expects another signal than its first (a Go
// worker after a reload) says so with it.
func (c *Child) SetStopSignal(sig syscall.Signal) {
	c.mu.Lock()
	c.ownStop = sig
	c.mu.Unlock()
}

// stopSignal sends a graceful stop's signal to the child's process group,
// unless the child is already being stopped (a timeout) or was reaped, and
// marks it interrupted if it did. sig 0 sends nothing and interrupts
// nothing: the child runs on, its timeout still armed, until the stop's
// deadline, whose SIGKILL (stopKill) interrupts it.
func (c *Child) stopSignal(sig syscall.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Whatever happens, what the child leaves behind dies with it, as
	// after any stop.
	c.poolStop = true
	if sig == 0 {
		// Left alone, under its own timeout, which still applies.
		return
	}
	if c.ownStop != 0 {
		sig = c.ownStop
	}
	if c.interruptLocked(sig) {
		c.interrupted = true
	}
}

// stopKill kills the child's tree for a stop (an immediate one, or a
// graceful one past its deadline), and marks it interrupted unless it had
// been reaped already.
func (c *Child) stopKill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reaped {
		return
	}
	c.interrupted = true
	_ = c.signalGroup(syscall.SIGKILL)
}

// Interrupted reports whether a Stop of the pool signalled the child (its
// graceful signal, or its SIGKILL): the child did not end by itself. A
// child that a timeout, Child.Stop or Child.Signal ended is not
// interrupted.
func (c *Child) Interrupted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.interrupted
}
