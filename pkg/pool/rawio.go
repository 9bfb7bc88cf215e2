package pool

import (
	"io"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The system calls of a worker's job, on descriptors in non-blocking mode
// (the job line, the answer, the output and the check of catchUp), are made
// raw, without telling the Go scheduler: none of them can block. A call
// through syscall.Syscall marks its P as in a system call, and may wake
// sysmon to watch it; when the kernel runs a worker in its place (writing
// a job wakes the worker, which may take this core at once) for more than
// 20 µs and no other P is idle, sysmon takes the P away and starts another
// thread to look for work, and the call's return must get a P back. On a
// machine whose cores the workers keep busy, that is wake-ups and spinning
// taken from the workers, for every job: raw, the daemon's CPU per job of
// bench/workers.sh fell by a third, and its context switches by a sixth
// (docs/PERFORMANCE.md, "Command workers"). Only system calls that return
// at once, whatever the other end does, belong here.

// rawRead reads from the non-blocking descriptor fd, retrying on EINTR.
func rawRead(fd int, b []byte) (int, unix.Errno) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	for {
		n, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(p), uintptr(len(b)))
		if errno != unix.EINTR {
			return int(n), errno
		}
	}
}

// rawWrite writes to the non-blocking descriptor fd, retrying on EINTR.
func rawWrite(fd int, b []byte) (int, unix.Errno) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	for {
		n, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(p), uintptr(len(b)))
		if errno != unix.EINTR {
			return int(n), errno
		}
	}
}

// rawPollNow polls fds without waiting (a zero timeout), retrying on EINTR.
func rawPollNow(fds []unix.PollFd) unix.Errno {
	var ts unix.Timespec
	for {
		_, _, errno := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), uintptr(len(fds)),
			uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		if errno != unix.EINTR {
			return errno
		}
	}
}

// rawUnread returns the bytes waiting in the pipe fd (FIONREAD, alias
// TIOCINQ), or 0 on an error.
func rawUnread(fd int) int {
	var n int32
	if _, _, errno := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCINQ, uintptr(unsafe.Pointer(&n))); errno != 0 {
		return 0
	}
	return int(n)
}

// rawConn is what *os.File does for one of the parent's non-blocking
// descriptors on a worker's path (a Go worker's channel, a command
// worker's answer pipe), with raw system calls, the poller waiting when
// the descriptor would block. One goroutine reads and one writes at a time,
// so each direction has its own arguments.
type rawConn struct {
	f    *os.File
	rc   syscall.RawConn
	name string

	rb    []byte
	rn    int
	rerr  unix.Errno
	readF func(uintptr) bool

	wb     []byte
	wn     int
	werr   unix.Errno
	writeF func(uintptr) bool
}

// newRawConn returns a rawConn on f, whose errors name it as name.
func newRawConn(f *os.File, name string) *rawConn {
	c := &rawConn{f: f, rc: syscallConn(f), name: name}
	c.readF, c.writeF = c.tryRead, c.tryWrite
	return c
}

// syscallConn returns f's RawConn. (*os.File).SyscallConn fails only for a
// nil file, which no caller has.
func syscallConn(f *os.File) syscall.RawConn {
	rc, err := f.SyscallConn()
	if err != nil {
		panic("pool: SyscallConn of " + f.Name() + ": " + err.Error())
	}
	return rc
}

func (c *rawConn) Read(b []byte) (int, error) {
	c.rb = b
	err := c.rc.Read(c.readF)
	c.rb = nil
	switch {
	case err != nil:
		return 0, err
	case c.rerr != 0:
		return 0, &os.PathError{Op: "read", Path: c.name, Err: c.rerr}
	case c.rn == 0:
		return 0, io.EOF
	}
	return c.rn, nil
}

// tryRead makes one read; it returns false when there is nothing to read
// yet, for the poller to call it again once there is.
func (c *rawConn) tryRead(fd uintptr) bool {
	n, errno := rawRead(int(fd), c.rb)
	if errno == unix.EAGAIN {
		return false
	}
	c.rn, c.rerr = max(n, 0), errno
	return true
}

// Write makes one write of b, which may be short on a pipe (the caller
// writes the rest).
func (c *rawConn) Write(b []byte) (int, error) {
	c.wb = b
	err := c.rc.Write(c.writeF)
	c.wb = nil
	switch {
	case err != nil:
		return 0, err
	case c.werr != 0:
		return 0, &os.PathError{Op: "write", Path: c.name, Err: c.werr}
	}
	return c.wn, nil
}

func (c *rawConn) tryWrite(fd uintptr) bool {
	n, errno := rawWrite(int(fd), c.wb)
	if errno == unix.EAGAIN {
		return false
	}
	c.wn, c.werr = max(n, 0), errno
	return true
}

func (c *rawConn) Close() error { return c.f.Close() }
