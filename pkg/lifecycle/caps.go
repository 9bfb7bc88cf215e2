package lifecycle

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A daemon whose jobs run as a user of their own must keep the right to
// start processes as that user, and to signal them, after it gave up
// root: CAP_SETUID and CAP_SETGID (the fork sets the job's ids before the
// exec) and CAP_KILL (timeouts and stops signal jobs of another user).
// It keeps them in its permitted and effective sets only: never
// inheritable nor ambient, so that nothing it execs receives them; the
// job, a process of another user without file capabilities, starts with
// none. Every other capability is dropped, from the bounding set too.
//
// Capabilities belong to threads, not to the process, and Go's threads
// come and go: every change is made on all threads at once, with
// syscall.AllThreadsSyscall, which Go offers only to programs built
// without cgo (CGO_ENABLED=0, as the Debian package is). A cgo build
// cannot keep capabilities across a drop: it gets ErrThreadCaps, and
// must be started as its user with the capabilities instead (systemd's
// User= and AmbientCapabilities=), which needs no change per thread.

// JobCaps are the capabilities a daemon keeps to run jobs as a user of
// their own.
var JobCaps = []uintptr{unix.CAP_SETUID, unix.CAP_SETGID, unix.CAP_KILL}

// ErrThreadCaps is returned when capabilities cannot be changed on every
// thread of the process: a program built with cgo.
var ErrThreadCaps = errors.New("this program is built with cgo, which cannot change capabilities on every thread: build it with CGO_ENABLED=0, or start it as its user with the capabilities it needs")

// HasCaps reports whether the calling thread has all of caps in its
// effective set. A process started with them (systemd's
// AmbientCapabilities=, or root) has them on every thread.
func HasCaps(caps ...uintptr) bool {
	var c capSets
	if err := c.get(); err != nil {
		return false
	}
	for _, cp := range caps {
		if !c.has(&c.effective, cp) {
			return false
		}
	}
	return true
}

// DropPrivilegesKeepCaps is DropPrivileges for a daemon that keeps keep
// (JobCaps): as root, it drops every other capability from the bounding
// set, switches every thread to uid, gid and groups, and leaves keep in
// the permitted and effective sets, the inheritable and ambient sets
// empty. Unlike DropPrivileges it cannot check that setuid(0) fails: with
// CAP_SETUID the daemon may still become any user, which is the right it
// keeps; the bounding set limits what that user could do.
//
// It returns ErrThreadCaps, having changed nothing, in a cgo build, and
// an error when the process is not root.
func DropPrivilegesKeepCaps(uid, gid int, groups []int, keep []uintptr) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("drop privileges keeping capabilities: only root can, and this is uid %d", os.Geteuid())
	}
	// KEEPCAPS: the setuid below then clears the effective set but not
	// the permitted one, on each thread where it is set: all of them.
	if err := allThreads(unix.PR_SET_KEEPCAPS, 1); err != nil {
		return err
	}
	if err := dropBounding(keep); err != nil {
		return err
	}
	if err := drop(uid, gid, groups, true); err != nil {
		return err
	}
	if err := limitCaps(keep); err != nil {
		return err
	}
	if err := allThreads(unix.PR_SET_KEEPCAPS, 0); err != nil {
		return err
	}
	var c capSets
	if err := c.get(); err != nil {
		return fmt.Errorf("read capabilities after the drop: %w", err)
	}
	if want := capMask(keep); c.effective != want || c.permitted != want || c.inheritable != ([2]uint32{}) {
		return fmt.Errorf("capabilities after the drop are effective %x, permitted %x, inheritable %x; want %x, %x, 0",
			c.effective, c.permitted, c.inheritable, want, want)
	}
	return nil
}

// LimitCaps keeps at most keep of the process's capabilities, in the
// permitted and effective sets, on every thread, and empties the
// inheritable and ambient sets: for a daemon started with more than it
// needs (AmbientCapabilities= for jobs of another user, when there are
// none). It returns ErrThreadCaps in a cgo build.
func LimitCaps(keep []uintptr) error {
	return limitCaps(keep)
}

func limitCaps(keep []uintptr) error {
	var c capSets
	if err := c.get(); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	want := capMask(keep)
	for i := range 2 {
		c.permitted[i] &= want[i]
		c.effective[i] = c.permitted[i]
		c.inheritable[i] = 0
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := c.data()
	// Pid 0: each thread sets its own.
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	if err := threadsErr("capset", errno); err != nil {
		return err
	}
	// With the inheritable set empty, the ambient set is empty too; say
	// so anyway, in case the kernel keeps it by another rule.
	return allThreads(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL)
}

// dropBounding removes from the bounding set every capability not in
// keep, on every thread: nothing the daemon or a job execs can get one
// back, whatever file capabilities it carries. It needs CAP_SETPCAP.
func dropBounding(keep []uintptr) error {
	last, err := lastCap()
	if err != nil {
		return err
	}
	for c := uintptr(0); c <= last; c++ {
		if slices.Contains(keep, c) {
			continue
		}
		if err := allThreads(unix.PR_CAPBSET_DROP, c); err != nil {
			return err
		}
	}
	return nil
}

// lastCap is the highest capability the kernel knows.
func lastCap() (uintptr, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return unix.CAP_LAST_CAP, nil // an older or hidden /proc: the headers' view
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("/proc/sys/kernel/cap_last_cap: %q", b)
	}
	return uintptr(n), nil
}

// allThreads runs prctl(op, arg) on every thread.
func allThreads(op, arg uintptr) error {
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, op, arg, 0)
	return threadsErr("prctl "+strconv.Itoa(int(op)), errno)
}

func threadsErr(what string, errno syscall.Errno) error {
	switch errno {
	case 0:
		return nil
	case syscall.ENOTSUP:
		return ErrThreadCaps
	}
	return fmt.Errorf("%s on every thread: %w", what, errno)
}

// capSets are the three capability sets of a thread, as capget(2) gives
// them (version 3: two 32-bit words each).
type capSets struct {
	effective, permitted, inheritable [2]uint32
}

func (c *capSets) get() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	for i := range 2 {
		c.effective[i], c.permitted[i], c.inheritable[i] = data[i].Effective, data[i].Permitted, data[i].Inheritable
	}
	return nil
}

func (c *capSets) data() [2]unix.CapUserData {
	var d [2]unix.CapUserData
	for i := range 2 {
		d[i] = unix.CapUserData{Effective: c.effective[i], Permitted: c.permitted[i], Inheritable: c.inheritable[i]}
	}
	return d
}

func (c *capSets) has(set *[2]uint32, cp uintptr) bool {
	return cp < 64 && set[cp/32]&(1<<(cp%32)) != 0
}

func capMask(caps []uintptr) [2]uint32 {
	var m [2]uint32
	for _, cp := range caps {
		if cp < 64 {
			m[cp/32] |= 1 << (cp % 32)
		}
	}
	return m
}
