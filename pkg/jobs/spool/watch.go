package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// startWatch watches incoming/ for files closed after writing and files
// moved in. Without inotify (no kernel support, or the per-user limit of
// instances or watches reached) the spool still works, by polling.
func (s *Spool) startWatch() {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		s.log.Warn("inotify unavailable; new jobs are found by polling only", "err", err)
		return
	}
	const mask = unix.IN_MOVED_TO | unix.IN_CLOSE_WRITE | unix.IN_ONLYDIR | unix.IN_DONT_FOLLOW
	if _, err := unix.InotifyAddWatch(fd, s.incoming, mask); err != nil {
		unix.Close(fd)
		s.log.Warn("cannot watch incoming/; new jobs are found by polling only", "err", err)
		return
	}
	// A non-blocking descriptor goes to the runtime's poller, so that
	// Close interrupts a pending Read.
	s.watch = os.NewFile(uintptr(fd), "inotify")
	s.watching.Store(true)
	s.wg.Add(1)
	go s.watchLoop()
}

func (s *Spool) watchLoop() {
	defer s.wg.Done()
	defer s.watching.Store(false)
	buf := make([]byte, 64<<10)
	for {
		n, err := s.watch.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				s.log.Error("reading inotify failed; new jobs are found by polling only", "err", err)
			}
			return
		}
		news, gone := scanEvents(buf[:n])
		if gone {
			s.watching.Store(false)
			s.log.Error("incoming/ is no longer watched (removed or unmounted?); new jobs are found by polling only")
		}
		if news {
			s.dirty.Store(true)
			s.wakeUp()
		}
	}
}

// scanEvents reports whether a buffer of inotify events announces a job
// (a file whose name does not start with '.', or a queue overflow, which
// may hide one), and whether the watch was removed.
func scanEvents(b []byte) (news, gone bool) {
	for len(b) >= unix.SizeofInotifyEvent {
		mask := binary.NativeEndian.Uint32(b[4:8])
		end := min(unix.SizeofInotifyEvent+int(binary.NativeEndian.Uint32(b[12:16])), len(b))
		name := b[unix.SizeofInotifyEvent:end]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		b = b[end:]
		switch {
		case mask&unix.IN_Q_OVERFLOW != 0:
			news = true
		case mask&unix.IN_IGNORED != 0:
			gone = true
		case len(name) > 0 && name[0] != '.':
			news = true
		}
	}
	return news, gone
}

// rescanLoop makes the dispatcher list incoming/ again every
// RescanInterval, for the files inotify did not report.
func (s *Spool) rescanLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.rescan)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.dirty.Store(true)
			s.wakeUp()
		case <-s.quit:
			return
		}
	}
}
