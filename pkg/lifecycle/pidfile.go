package lifecycle

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The PID file protocol.
//
// Ownership is the flock(LOCK_EX) on the inode that is at the path. Nobody
// ever writes into a file that is at the path: a new file is written and
// locked under a temporary name in the same directory, and only then put at
// the path: by rename(2) with RENAME_NOREPLACE when there is no file yet
// (link(2) where the file system lacks it; both fail with EEXIST if someone
// else was first), or by rename(2) over a stale file. So the path
// always holds either nothing, a stale file, or a complete "<pid>\n" whose
// writer holds its lock; a reader never sees it empty or half written.
//
// Why two starters can never both win:
//   - The path changes only in three ways: create-only rename or link
//     (only when there is no file, atomic, at most one succeeds), rename
//     over the file at the path (only while holding that file's lock,
//     which at most one process has), and unlink in Remove (also only
//     while holding the lock).
//   - A winner must hold the lock of the inode it then finds at the path
//     (compared with a fresh lstat after locking). Take A, which locks the
//     stale inode X and renames its new file N over it. B, which opened X
//     before the rename, either fails to lock X while A holds it, or locks
//     X after A has let it go: then the path holds N, not X, and B starts
//     over. Starting over, B opens N, which A locked before it ever became
//     visible, and fails.
//   - While A holds X but has not yet renamed, X still shows the stale pid.
//     B, failing to lock X, must not report that pid as running, so a
//     locked file whose pid is not a live process is looked at again for a
//     moment (lockSettle) before it is reported.
//   - ReadPIDFile's shared lock also makes LOCK_EX fail for a moment. A
//     starter tells it apart from an owner by trying LOCK_SH itself: that
//     succeeds when only readers are there, and the starter tries again.
//
// This assumes nobody deletes or replaces the file behind a live holder's
// back (rm of a running daemon's PID file defeats every PID file scheme).

// lockSettle is how long a locked PID file may name a pid that is not alive
// (it is being taken over) before LockPIDFile or ReadPIDFile believes it.
const lockSettle = 3 * time.Second

// PIDFile is a PID file locked by this process. The lock is on an fd that
// is not an *os.File, so it is never closed by a finalizer: even a PIDFile
// that is dropped keeps the lock until Remove or the process exits.
type PIDFile struct {
	path  string
	fd    int // -1 after Remove
	stale int
}

// RunningError is returned by LockPIDFile when a live process holds the PID
// file's lock.
type RunningError struct {
	Pid  int    // the pid in the file; 0 if it holds none
	Path string // the PID file
}

// Error returns "already running (pid N)", or "already running (pid
// unknown)" if the file held no valid pid.
func (e *RunningError) Error() string {
	if e.Pid <= 0 {
		return "already running (pid unknown)"
	}
	return "already running (pid " + strconv.Itoa(e.Pid) + ")"
}

// LockPIDFile takes the PID file at path for the rest of this process's
// life (until Remove): it holds flock(LOCK_EX) on it and the file holds
// "<pid>\n". The directory must exist; the file is created with mode 0644
// (whatever the umask), owned by this process's effective uid and gid (not
// a setgid directory's group), so that start-stop-daemon --pidfile accepts
// it when the daemon locks it as root.
//
// A file that exists but whose lock nobody holds is stale (the daemon died
// without removing it) and is taken over; StalePid tells the pid it held.
// When a live process holds the lock, LockPIDFile returns a *RunningError
// naming its pid. A path that is a symbolic link is refused (only the last
// component: /var/run -> /run is fine), as is a file that is not a regular
// file. The file's lock fd is close-on-exec: children do not inherit it.
func LockPIDFile(path string) (*PIDFile, error) {
	deadline := time.Now().Add(lockSettle)
	for {
		p, busyPid, err := tryLockPIDFile(path)
		switch {
		case err == nil && p != nil:
			return p, nil
		case err != nil && !errors.Is(err, errRetry):
			if dir := filepath.Dir(path); errors.Is(err, fs.ErrNotExist) && !exists(dir) {
				return nil, fmt.Errorf("lock pid file %s: the directory %s does not exist: %w", path, dir, fs.ErrNotExist)
			}
			return nil, fmt.Errorf("lock pid file %s: %w", path, err)
		case busyPid > 0 && pidAlive(busyPid), err == nil && time.Now().After(deadline):
			return nil, &RunningError{Pid: busyPid, Path: path}
		case time.Now().After(deadline):
			return nil, fmt.Errorf("lock pid file %s: the file keeps changing", path)
		case err == nil:
			// Locked, but by no live pid: probably in the middle of a
			// takeover. Give the taker a moment.
			time.Sleep(5 * time.Millisecond)
		default:
			// errRetry: the path changed under us, or only readers held
			// the lock; go again at once (readers leave within
			// microseconds, but yield to them).
			time.Sleep(time.Millisecond)
		}
	}
}

// errRetry makes LockPIDFile start over.
var errRetry = errors.New("retry")

// tryLockPIDFile makes one attempt. It returns the locked file, or the pid
// in a file another process holds locked (p == nil, err == nil), or an
// error (errRetry to start over).
func tryLockPIDFile(path string) (p *PIDFile, busyPid int, err error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		p, err := createPIDFile(path, 0, -1)
		return p, 0, err
	case errors.Is(err, unix.ELOOP):
		return nil, 0, fmt.Errorf("refusing to follow a symbolic link: %w", err)
	case err != nil:
		return nil, 0, err
	}
	return lockOpenPIDFile(path, fd)
}

// lockOpenPIDFile goes on with the file at fd, opened from path at some
// point (maybe long) before, and closes fd unless it returns it locked.
func lockOpenPIDFile(path string, fd int) (p *PIDFile, busyPid int, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, 0, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, 0, errors.New("not a regular file")
	}
	locked, err := tryFlock(fd, unix.LOCK_EX)
	if err != nil {
		unix.Close(fd)
		return nil, 0, err
	}
	if !locked {
		defer unix.Close(fd)
		// A shared lock succeeds when only readers (ReadPIDFile) are there:
		// nobody owns the file, so start over.
		if shared, err := tryFlock(fd, unix.LOCK_SH); err != nil {
			return nil, 0, err
		} else if shared {
			return nil, 0, errRetry
		}
		if !stillAtPath(path, fd) {
			return nil, 0, errRetry
		}
		return nil, readPid(fd), nil
	}
	if !stillAtPath(path, fd) {
		// We locked an inode that has been replaced or removed since we
		// opened it: its lock means nothing.
		unix.Close(fd)
		return nil, 0, errRetry
	}
	// A stale file, now ours to replace.
	p, err = createPIDFile(path, readPid(fd), fd)
	unix.Close(fd)
	return p, 0, err
}

// createPIDFile writes and locks a new file under a temporary name and puts
// it at path: by rename over the stale file whose lock we hold in staleFD,
// or, when staleFD is -1 (there was no file), only if there still is none.
func createPIDFile(path string, stalePid, staleFD int) (*PIDFile, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return nil, err
	}
	tmpName := tmp.Name()
	// Our own fd for the lock: the *os.File is closed below, and with it
	// the fd it owns, but a dup shares the open file and so the flock.
	fd, err := unix.FcntlInt(tmp.Fd(), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		fd = -1
	} else {
		err = preparePIDFile(tmp, fd)
	}
	tmp.Close()
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		os.Remove(tmpName)
		return nil, err
	}
	if staleFD < 0 {
		err = createOnly(tmpName, path)
		if errors.Is(err, unix.EEXIST) {
			err = errRetry // someone else was first; they hold it locked
		}
	} else {
		err = unix.Rename(tmpName, path)
		if err != nil {
			os.Remove(tmpName)
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Only true if someone removed the file behind the protocol's back.
	if !stillAtPath(path, fd) {
		unix.Close(fd)
		return nil, errRetry
	}
	return &PIDFile{path: path, fd: fd, stale: stalePid}, nil
}

// createOnly puts the file tmp at path unless path exists (EEXIST), and
// removes the name tmp. rename(RENAME_NOREPLACE) does it in one step and
// leaves our fd named after path (as /proc/PID/fd and lsof show it); a
// file system without it (EINVAL) gets link(2) then unlink(2), which is as
// atomic.
func createOnly(tmp, path string) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		return linkOnly(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// linkOnly is createOnly by link(2), which fails with EEXIST too.
func linkOnly(tmp, path string) error {
	err := unix.Link(tmp, path)
	os.Remove(tmp) // linked or not, the name is ours and goes
	return err
}

// preparePIDFile sets up the new file before anyone can see it: the lock
// first, then owner, mode and content.
func preparePIDFile(f *os.File, fd int) error {
	if locked, err := tryFlock(fd, unix.LOCK_EX); err != nil {
		return err
	} else if !locked {
		return errors.New("new file locked by someone else")
	}
	// A setgid directory would give the file its group, and
	// start-stop-daemon refuses a PID file whose group is neither root nor
	// its own. The umask (027 after Detach) would make it unreadable to
	// clients that do not run as the daemon's group.
	if err := f.Chown(os.Geteuid(), os.Getegid()); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	// No fsync: PID files live on tmpfs (/run), and after a crash the file
	// is stale whatever it holds.
	_, err := f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	return err
}

// tryFlock tries a non-blocking flock: false without error when another
// open file holds a conflicting lock.
func tryFlock(fd, how int) (bool, error) {
	for {
		err := unix.Flock(fd, how|unix.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, unix.EINTR):
			continue
		default:
			return false, fmt.Errorf("flock: %w", err)
		}
	}
}

// stillAtPath reports whether the file open at fd is the one at path and
// has not been unlinked.
func stillAtPath(path string, fd int) bool {
	var fst, lst unix.Stat_t
	if unix.Fstat(fd, &fst) != nil || unix.Lstat(path, &lst) != nil {
		return false
	}
	return fst.Nlink > 0 && fst.Dev == lst.Dev && fst.Ino == lst.Ino
}

// readPid returns the pid in the file at fd, 0 if it holds none.
func readPid(fd int) int {
	buf := make([]byte, 32)
	n, err := unix.Pread(fd, buf, 0)
	if err != nil {
		return 0
	}
	return parsePid(string(buf[:n]))
}

// parsePid accepts "<pid>" with optional surrounding white space, as
// written by any daemon.
func parsePid(s string) int {
	s = strings.TrimSpace(s)
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0
	}
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// pidAlive reports whether a process with this pid exists (EPERM: it
// exists but is not ours to signal).
func pidAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// StalePid returns the pid held by the stale PID file that LockPIDFile
// took over, so that the caller can log "took over stale PID file of pid
// N". It is 0 when there was no file, or the file held no valid pid.
func (p *PIDFile) StalePid() int { return p.stale }

// Path returns the path the PIDFile was locked at.
func (p *PIDFile) Path() string { return p.path }

// Remove unlinks the path if it still holds our file, then releases the
// lock. It is safe to call twice (the second call does nothing) and should
// be the daemon's last act. It fails to unlink, and returns the error,
// when the process can no longer write the directory (for example after
// DropPrivileges, if the directory belongs to root); the lock is released
// all the same and the file is then stale, which the next LockPIDFile
// takes over and readers recognise as unlocked.
func (p *PIDFile) Remove() error {
	if p.fd < 0 {
		return nil
	}
	var err error
	// Between the check and the unlink nobody can put another file at the
	// path: that takes our lock (rename) or an empty path (link).
	if stillAtPath(p.path, p.fd) {
		if err = unix.Unlink(p.path); err != nil && !errors.Is(err, unix.ENOENT) {
			err = fmt.Errorf("remove pid file %s: %w", p.path, err)
		} else {
			err = nil
		}
	}
	unix.Close(p.fd)
	p.fd = -1
	return err
}

// ReadPIDFile is for clients (status, stop): it returns the pid in the file
// at path and whether a live process holds the file's lock, tested with a
// non-blocking shared flock on a fresh fd, released at once (so clients do
// not exclude one another). pid is 0 if the file holds no valid pid.
// locked false with a pid means a stale file: that process died without
// removing it, and the pid may belong to someone else by now. A missing
// file returns an error satisfying errors.Is(err, fs.ErrNotExist); a
// symbolic link is refused.
func ReadPIDFile(path string) (pid int, locked bool, err error) {
	return readPIDFile(path, -1)
}

// readPIDFile is ReadPIDFile, whose first look is at fd if it is not -1
// (a file opened from path earlier; tests use it to stage a race).
func readPIDFile(path string, fd int) (pid int, locked bool, err error) {
	deadline := time.Now().Add(lockSettle)
	for ; ; fd = -1 {
		if fd < 0 {
			fd, err = unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
			if errors.Is(err, unix.ELOOP) {
				return 0, false, fmt.Errorf("read pid file %s: refusing to follow a symbolic link: %w", path, err)
			} else if err != nil {
				return 0, false, fmt.Errorf("read pid file %s: %w", path, err)
			}
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			unix.Close(fd)
			if err == nil {
				err = errors.New("not a regular file")
			}
			return 0, false, fmt.Errorf("read pid file %s: %w", path, err)
		}
		pid = readPid(fd)
		shared, err := tryFlock(fd, unix.LOCK_SH)
		if err != nil {
			unix.Close(fd)
			return 0, false, fmt.Errorf("read pid file %s: %w", path, err)
		}
		locked = !shared
		current := stillAtPath(path, fd)
		unix.Close(fd) // also drops the shared lock
		// A file that was replaced while we looked, or that is locked
		// under a pid that is not alive, is being taken over: look again.
		if (!current || locked && !pidAlive(pid)) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		return pid, locked, nil
	}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
