package pool

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Protocol is how a worker and the pool talk. The worker's life (busy,
// Send, Retire, its limits, the hand-over of its answers, its exit) is the
// same whatever the protocol; only the transport and framing differ.
type Protocol uint8

const (
	// ProtocolGo, the zero value, is the program itself re-executed in
	// child mode, with a channel of two pipes as fds 3 and 4 (see
	// ChildConn): binary messages, and calls to the parent between a job
	// and its result.
	ProtocolGo Protocol = iota
	// ProtocolLines is any program, started once and kept: it reads one
	// job per line on its standard input, and writes one answer per line
	// on fd 3, a pipe. Its standard output and error stay log output. It
	// exits when its standard input closes. It cannot call the parent.
	ProtocolLines
)

// String returns "go" or "lines".
func (p Protocol) String() string {
	switch p {
	case ProtocolGo:
		return "go"
	case ProtocolLines:
		return "lines"
	}
	return fmt.Sprintf("Protocol(%d)", int(p))
}

// transport is the pool's end of one worker's conversation. send and quit
// are called with the worker's lock held and must never block on the
// worker for long; recv and reply are called only by the worker's reader
// goroutine.
type transport interface {
	// prepare gives the child the files that are the worker's end, just
	// before it starts.
	prepare(l *launch)
	// childClose closes the parent's copy of the worker's end, once the
	// worker has started (or failed to).
	childClose()
	// send hands the worker one job.
	send(job []byte) error
	// quit asks the worker to exit once idle. An error means it is gone.
	quit() error
	// recv returns the next message from the worker, valid until the
	// next recv. An error wrapping errProtocol means the worker broke the
	// protocol; any other error, that the conversation is over.
	recv() (typ byte, msg []byte, err error)
	// reply answers a call.
	reply(msg []byte) error
	// close ends the conversation; it may be called more than once.
	close()
}

// errProtocol marks the errors of a worker that broke its protocol.
var errProtocol = errors.New("protocol error")

// protocolError wraps err as a protocol violation.
func protocolError(err error) error { return fmt.Errorf("%w: %w", errProtocol, err) }

// goTransport is ProtocolGo: the channel, whose worker's ends are the
// child's fds 3 (what it reads) and 4 (what it writes), announced in
// EnvChild.
type goTransport struct {
	ch       *channel
	down, up int // the worker's ends, until childClose
}

func newGoTransport() (*goTransport, error) {
	ch, down, up, err := channelPipes()
	if err != nil {
		return nil, err
	}
	return &goTransport{ch: ch, down: down, up: up}, nil
}

func (t *goTransport) prepare(l *launch) {
	l.files = append(l.files, uintptr(t.down), uintptr(t.up))
	// Appended to a copy: the environment may be the caller's Spec.Env.
	l.attr.Env = append(l.attr.Env[:len(l.attr.Env):len(l.attr.Env)], EnvChild+"="+childFDs)
}

func (t *goTransport) childClose() {
	unix.Close(t.down)
	unix.Close(t.up)
	t.down, t.up = -1, -1
}

func (t *goTransport) send(job []byte) error  { return t.ch.send(msgJob, job) }
func (t *goTransport) quit() error            { return t.ch.send(msgQuit, nil) }
func (t *goTransport) reply(msg []byte) error { return t.ch.send(msgReply, msg) }
func (t *goTransport) close()                 { t.ch.close() }

func (t *goTransport) recv() (byte, []byte, error) {
	typ, msg, err := t.ch.recv()
	if errors.Is(err, errMessageTooLarge) {
		err = protocolError(err)
	}
	return typ, msg, err
}
