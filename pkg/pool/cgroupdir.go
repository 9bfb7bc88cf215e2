package pool

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupDir is an open cgroup directory. Its files are reached relative to
// the descriptor, which is also what CLONE_INTO_CGROUP takes.
type cgroupDir struct {
	path string // in the file system
	rel  string // as /proc/PID/cgroup names it
	fd   int
}

// openCgroup opens the cgroup directory at path; mkdir creates it first,
// and fails if it exists.
func openCgroup(path, rel string, mkdir bool) (*cgroupDir, error) {
	if mkdir {
		if err := unix.Mkdir(path, 0o755); err != nil {
			return nil, &os.PathError{Op: "create cgroup", Path: path, Err: err}
		}
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if mkdir {
			unix.Rmdir(path)
		}
		return nil, &os.PathError{Op: "open cgroup", Path: path, Err: err}
	}
	return &cgroupDir{path: path, rel: rel, fd: fd}, nil
}

func (d *cgroupDir) close() {
	if d.fd >= 0 {
		unix.Close(d.fd)
		d.fd = -1
	}
}

// write writes s to the file name of the cgroup, in one write(2): the
// kernel takes each write to a cgroup file as one command.
func (d *cgroupDir) write(name, s string) error {
	fd, err := unix.Openat(d.fd, name, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: filepath.Join(d.path, name), Err: err}
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(s)); err != nil {
		return &os.PathError{Op: "write", Path: filepath.Join(d.path, name), Err: err}
	}
	return nil
}

// read returns the content of the file name of the cgroup.
func (d *cgroupDir) read(name string) ([]byte, error) {
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Join(d.path, name), Err: err}
	}
	defer unix.Close(fd)
	return readAllFD(fd, filepath.Join(d.path, name))
}

func readAllFD(fd int, name string) ([]byte, error) {
	buf := make([]byte, 0, 512)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: name, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

// readInt reads a file that holds one number ("max" is -1).
func (d *cgroupDir) readInt(name string) (int64, error) {
	b, err := d.read(name)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return -1, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", filepath.Join(d.path, name), err)
	}
	return n, nil
}

// has reports whether the cgroup has the file name (cgroup.kill needs
// Linux 5.14, memory.peak the memory controller, ...).
func (d *cgroupDir) has(name string) bool {
	return unix.Faccessat(d.fd, name, unix.F_OK, 0) == nil
}

func eventsPopulated(b []byte) bool {
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("populated ")); ok {
			return string(v) != "0"
		}
	}
	return false
}

// waitEmpty returns once no live process is left in the cgroup, or with an
// error after timeout. The kernel signals each change of cgroup.events to
// poll(2) as POLLPRI, so the wait costs no busy loop.
func (d *cgroupDir) waitEmpty(timeout time.Duration) error {
	name := filepath.Join(d.path, "cgroup.events")
	fd, err := unix.Openat(d.fd, "cgroup.events", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: name, Err: err}
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 128)
	for {
		// A read arms the next notification, so read, then poll.
		n, err := unix.Pread(fd, buf, 0)
		if err != nil {
			return &os.PathError{Op: "read", Path: name, Err: err}
		}
		if !eventsPopulated(buf[:n]) {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("cgroup %s still holds processes after %v", d.path, timeout)
		}
		// At most 100 ms at a time: a missed notification costs no more.
		ms := int(min(left, 100*time.Millisecond)/time.Millisecond) + 1
		if _, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLPRI}}, ms); err != nil && err != unix.EINTR {
			return fmt.Errorf("poll %s: %w", name, err)
		}
	}
}

// kill kills every process in the cgroup and below it. With cgroup.kill
// (Linux 5.14) the kernel does it in one step that no fork escapes;
// without it, the cgroup is frozen (Linux 5.2) so that nothing forks, and
// each process is killed through a pidfd after checking that it is still
// in the cgroup, so that a pid reused in the meantime is never hit.
func (d *cgroupDir) kill(useKill bool) error {
	if useKill {
		return d.write("cgroup.kill", "1")
	}
	frozen := d.write("cgroup.freeze", "1") == nil
	if frozen {
		defer d.write("cgroup.freeze", "0")
	}
	for round := 0; round < 1000; round++ {
		pids, err := d.procs()
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			killIn(pid, d.rel)
		}
		if !frozen {
			time.Sleep(time.Millisecond)
		}
	}
	return fmt.Errorf("processes of cgroup %s outran the kill loop", d.path)
}

// killIn kills pid if it is (still) in the cgroup rel.
func killIn(pid int, rel string) {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // gone
	}
	defer unix.Close(pfd)
	// The pidfd pins the process: what /proc says from here on is about it.
	if cg, err := ownCgroup(pid); err == nil && (cg == rel || strings.HasPrefix(cg, rel+"/")) {
		unix.PidfdSendSignal(pfd, unix.SIGKILL, nil, 0)
	}
}

// procs lists the processes in the cgroup and below it.
func (d *cgroupDir) procs() ([]int, error) {
	var pids []int
	err := walkCgroups(d.path, func(dir string) error {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			return err
		}
		for _, f := range bytes.Fields(b) {
			if pid, err := strconv.Atoi(string(f)); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids, err
}

// walkCgroups calls f for dir and every cgroup below it, children first.
func walkCgroups(dir string, f func(string) error) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := walkCgroups(filepath.Join(dir, e.Name()), f); err != nil {
				return err
			}
		}
	}
	return f(dir)
}

// removeCgroup removes the empty cgroup dir and any cgroups below it (a
// job running as the daemon's user can make some). A cgroup whose last
// process has just died may be busy for a moment more.
//
// It tries a plain rmdir first: a cgroup is nearly always removed with no
// cgroup below it, and listing it first cost four system calls for every
// slot of the pool at every stop. The kernel refuses with EBUSY a cgroup
// that has children or processes; then the tree is walked.
func removeCgroup(dir string) error {
	switch unix.Rmdir(dir) {
	case nil, unix.ENOENT:
		return nil
	}
	return walkCgroups(dir, func(d string) error {
		var err error
		for i := 0; i < 50; i++ {
			if err = unix.Rmdir(d); err != unix.EBUSY {
				break
			}
			time.Sleep(time.Duration(i+1) * time.Millisecond)
		}
		if err != nil && err != unix.ENOENT {
			return &os.PathError{Op: "remove cgroup", Path: d, Err: err}
		}
		return nil
	})
}

// controllers returns the controllers listed in the file name
// (cgroup.controllers or cgroup.subtree_control).
func (d *cgroupDir) controllers(name string) (map[string]bool, error) {
	b, err := d.read(name)
	if err != nil {
		return nil, err
	}
	m := map[string]bool{}
	for _, c := range strings.Fields(string(b)) {
		m[c] = true
	}
	return m, nil
}
