package lifecycle

import (
	"fmt"
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

	mu sync.Mutex
	f  *os.File // nil after Close
}

// OpenLogFile opens path for appending, creating it with mode 0640 (less
// the umask) if needed. The descriptor is close-on-exec, so children never
// hold it.
func OpenLogFile(path string) (*LogFile, error) {
	f, err := openLogFile(path)
	if err != nil {
		return nil, fmt.Errorf("opening log file: %w", err)
	}
	return &LogFile{path: path, f: f}, nil
}

func openLogFile(path string) (*os.File, error) {
	// os.OpenFile adds O_CLOEXEC itself; it is spelled out because the
	// daemon forks children all the time and must not leak the log to them.
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_CLOEXEC, 0o640)
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
	nf, err := openLogFile(f.path)
	if err != nil {
		return fmt.Errorf("reopening log file: %w", err)
	}
	old := f.f
	f.f = nf
	if err := old.Close(); err != nil {
		return fmt.Errorf("closing the rotated log file: %w", err)
	}
	return nil
}

// Chown gives the open file to uid and gid, for a daemon that opened it
// as root and is about to drop its privileges: it can then reopen the file
// at the same path later (SIGUSR1 without a rotation) and a new one in a
// directory it may write to. After Close it returns an error matching
// os.ErrClosed.
func (f *LogFile) Chown(uid, gid int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		return fmt.Errorf("chown log file %s: %w", f.path, os.ErrClosed)
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
