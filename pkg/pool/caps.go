package pool

import "golang.org/x/sys/unix"

// noInheritedCaps empties the inheritable and ambient capability sets of
// the calling thread, the spawner: a daemon may hold capabilities (to
// start jobs as another user, CAP_SETUID and CAP_SETGID; to signal them,
// CAP_KILL), and under systemd it gets them as ambient ones
// (AmbientCapabilities=), which every program it execs would receive.
// Capabilities are per thread, and every child is forked from this one:
// with both sets empty, a child that execs a program without file
// capabilities has none, whatever the daemon holds. Errors are ignored:
// lowering these sets is always allowed, and a kernel without ambient
// capabilities (before 4.3) has nothing to clear.
func noInheritedCaps() {
	_ = unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if unix.Capget(&hdr, &data[0]) != nil {
		return
	}
	if data[0].Inheritable == 0 && data[1].Inheritable == 0 {
		return
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	_ = unix.Capset(&hdr, &data[0])
}
