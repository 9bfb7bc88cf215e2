package control

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// SocketName is the FileDescriptorName= of the control socket in a
// systemd socket unit.
const SocketName = "control"

// Activated returns the control socket systemd passed to this process
// (LISTEN_FDS, with the name SocketName), or nil when there is none. It
// unsets the LISTEN_* variables, so children never see them. Passed
// sockets of other names are closed: the daemon has no use for them.
func Activated() (net.Listener, error) {
	byName, err := activation.ListenersWithNames()
	if err != nil {
		return nil, fmt.Errorf("sockets passed by systemd: %w", err)
	}
	var found net.Listener
	for name, ls := range byName {
		for _, l := range ls {
			if name == SocketName && found == nil && l != nil {
				found = l
				continue
			}
			if l != nil {
				l.Close()
			}
		}
	}
	return found, nil
}

// RunningError says that a live daemon answers on the socket.
type RunningError struct {
	Path string
	Pid  int // 0 when it could not be learnt
}

func (e *RunningError) Error() string {
	if e.Pid > 0 {
		return fmt.Sprintf("another jobdaemon is running (pid %d): it listens on %s", e.Pid, e.Path)
	}
	return "another jobdaemon is running: it listens on " + e.Path
}

// Listen creates the control socket at path, with mode 0660 and group
// gid (-1 keeps the process's group). A socket file left by a dead daemon
// (nobody accepts on it) is replaced; a live one gives a *RunningError.
// Anything else at path is left alone and is an error.
func Listen(path string, gid int) (net.Listener, error) {
	if err := removeStale(path); err != nil {
		return nil, err
	}
	// The umask makes the socket 0660 from the moment it exists: a chmod
	// after bind would leave a moment where the umask's mode applies.
	// Listen runs once, at start-up, before the daemon starts children.
	old := syscall.Umask(0o117)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("create control socket %s: the directory %s does not exist: create it (the init script and tmpfiles.d do), or set [control] socket elsewhere", path, filepath.Dir(path))
	}
	if err != nil {
		return nil, fmt.Errorf("create control socket: %w", err)
	}
	if gid >= 0 {
		if err := os.Lchown(path, -1, gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("give control socket %s to group %d: %w (a daemon not started as root must be a member of [control] group)", path, gid, err)
		}
	}
	return l, nil
}

// removeStale removes a socket file at path that nobody listens on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("control socket %s: the path exists and is not a socket (%s): remove it, or choose another [control] socket", path, fi.Mode().Type())
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		pid := 0
		if cred, err := peerCred(conn.(*net.UnixConn)); err == nil {
			pid = int(cred.Pid)
		}
		conn.Close()
		return &RunningError{Path: path, Pid: pid}
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control socket %s: is a daemon listening? %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale control socket %s: %w", path, err)
	}
	return nil
}

// peerCred returns the credentials of the process at the other end of
// conn, as the kernel recorded them when it connected.
func peerCred(conn *net.UnixConn) (*unix.Ucred, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	err = raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	return cred, nil
}
