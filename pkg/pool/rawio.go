package pool

import (
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
