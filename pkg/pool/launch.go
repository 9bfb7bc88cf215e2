package pool

import (
	"fmt"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// A child is started with syscall.ForkExec, not os/exec: the pool reaps
// its children itself (reaper.go) and reads their output itself
// (output.go), so exec.Cmd's goroutines, pidfd and environment copy were
// all cost. The child's standard output and error are the write ends of
// raw pipes, blocking as programs expect them, that never enter the
// runtime's poller; only the pool's read ends do. Each job of a command
// child used to spend about 20 system calls on this (docs/PERFORMANCE-HISTORY.md).

// launch is what the spawner thread needs to start a child.
type launch struct {
	path  string
	argv  []string
	attr  syscall.ProcAttr
	sys   syscall.SysProcAttr
	files []uintptr // the child's descriptors 0, 1, 2, then 3 and up
	keep  []*os.File
}

// fork starts the child; it runs on the spawner thread (onSpawner).
func (l *launch) fork() (int, error) {
	l.attr.Files, l.attr.Sys = l.files, &l.sys
	pid, err := syscall.ForkExec(l.path, l.argv, &l.attr)
	runtime.KeepAlive(l.keep) // their descriptors were in files until here
	if err != nil {
		return 0, &os.PathError{Op: "fork/exec", Path: l.path, Err: err}
	}
	return pid, nil
}

// file adds f as the child's next descriptor, kept open until the fork.
func (l *launch) file(f *os.File) {
	l.files = append(l.files, f.Fd())
	l.keep = append(l.keep, f)
}

// outputPipe returns a pipe for a child's output: the read end for the
// runtime's poller, and the write end, blocking, to hand to the child and
// close once it started.
func outputPipe() (r *os.File, w int, err error) { return childPipe(1, "|0") }

// inputPipe returns a pipe for a child's input: the write end for the
// runtime's poller, and the read end, blocking, to hand to the child and
// close once it started.
func inputPipe() (w *os.File, r int, err error) { return childPipe(0, "|1") }

// childPipe returns a pipe's end theirs (0 the read end, 1 the write end),
// blocking, for a child, and the other end, non-blocking, as a file named
// name for the runtime's poller.
func childPipe(theirs int, name string) (ours *os.File, fd int, err error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, -1, err
	}
	// O_NONBLOCK belongs to each end's open file: clearing it on the
	// child's end leaves ours non-blocking.
	if _, err := unix.FcntlInt(uintptr(fds[theirs]), unix.F_SETFL, 0); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, -1, err
	}
	return os.NewFile(uintptr(fds[1-theirs]), name), fds[theirs], nil
}

// waitChild reaps pid, which has exited, and returns its status and
// resource usage.
func waitChild(pid int) (syscall.WaitStatus, *syscall.Rusage, error) {
	var ws syscall.WaitStatus
	ru := new(syscall.Rusage)
	for {
		_, err := syscall.Wait4(pid, &ws, 0, ru)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return 0, nil, fmt.Errorf("wait for child %d: %w", pid, err)
		}
		return ws, ru, nil
	}
}
