package lifecycle

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"syscall"
)

// LogFile is a log file that can be reopened at its path, for logrotate's
// default "create" mode: logrotate renames the file away and signals the
// daemon, which calls [LogFile.Reopen]. Until then lines keep going to the
// renamed file, so none is lost. It is an io.Writer for log/slog handlers
// and safe for concurrent use: writes are serialized, so lines from several
// goroutines are never interleaved.
type LogFile struct {
	path string

	mu      sync.Mutex
	f       *os.File // nil after Close
	created bool     // f was created by this process, not found
}

// OpenLogFile opens path for appending, creating it with mode 0640 (less
// the umask) if needed. The descriptor is close-on-exec, so children never
// hold it.
//
// The daemon opens it as root, in a directory its user may be able to
// write to, so the path is not trusted: a symbolic link, a file that is
// not a regular file, or one with other hard links is refused, rather than
// appended to (and, see Chown, handed over) in root's name.
func OpenLogFile(path string) (*LogFile, error) {
	f, created, err := openLogFile(path)
	if err != nil {
		return nil, fmt.Errorf("opening log file: %w", err)
	}
	return &LogFile{path: path, f: f, created: created}, nil
}

func openLogFile(path string) (f *os.File, created bool, err error) {
	// os.OpenFile adds O_CLOEXEC itself; it is spelled out because the
	// daemon forks children all the time and must not leak the log to them.
	const flags = os.O_WRONLY | os.O_APPEND | syscall.O_CLOEXEC | syscall.O_NOFOLLOW
	f, err = os.OpenFile(path, flags|os.O_CREATE|os.O_EXCL, 0o640)
	if err == nil {
		return f, true, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return nil, false, err
	}
	// O_NONBLOCK: a FIFO planted at the path must not hang the open.
	f, err = os.OpenFile(path, flags|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, false, fmt.Errorf("%s is a symbolic link: refusing to follow it", path)
		}
		return nil, false, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, false, fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
		f.Close()
		return nil, false, fmt.Errorf("%s has %d hard links: refusing to write to a file that is also elsewhere", path, st.Nlink)
	}
	return f, false, nil
}

// Write appends p to the file. After Close it returns an error matching
// os.ErrClosed.
func (f *LogFile) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		return 0, fmt.Errorf("writing log file %s: %w", f.path, os.ErrClosed)
	}
	return f.f.Write(p)
}

// Reopen opens the path again and switches writes to the new file, then
// closes the old one. If the path cannot be opened (a full disk, or a
// directory the daemon cannot write to after dropping its privileges), the
// writes keep going to the old file and the error is returned. After Close
// it returns an error matching os.ErrClosed.
func (f *LogFile) Reopen() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		return fmt.Errorf("reopening log file %s: %w", f.path, os.ErrClosed)
	}
	nf, created, err := openLogFile(f.path)
	if err != nil {
		return fmt.Errorf("reopening log file: %w", err)
	}
	old := f.f
	f.f, f.created = nf, created
	if err := old.Close(); err != nil {
		return fmt.Errorf("closing the rotated log file: %w", err)
	}
	return nil
}

// Chown gives the file to uid and gid if this process created it, for a
// daemon that opened it as root and is about to drop its privileges: it can
// then reopen it at the same path later (SIGUSR1 without a rotation). A
// file that was already there keeps its owner, who chose it: Chown does
// nothing then and returns nil. After Close it returns an error matching
// os.ErrClosed.
func (f *LogFile) Chown(uid, gid int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		return fmt.Errorf("chown log file %s: %w", f.path, os.ErrClosed)
	}
	if !f.created {
		return nil
	}
	if err := f.f.Chown(uid, gid); err != nil {
		return fmt.Errorf("chown log file: %w", err)
	}
	return nil
}

// Close closes the file. Closing twice returns an error matching
// os.ErrClosed.
func (f *LogFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		return fmt.Errorf("closing log file %s: %w", f.path, os.ErrClosed)
	}
	err := f.f.Close()
	f.f = nil
	if err != nil {
		return fmt.Errorf("closing log file: %w", err)
	}
	return nil
}
