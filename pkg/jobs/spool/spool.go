package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// Errors of the spool.
var (
	// ErrClosed is returned by the methods of a Spool after Close.
	ErrClosed = errors.New("spool is closed")
	// ErrLocked is returned by Open when another Spool, in this process or
	// another, has the same directory open.
	ErrLocked = errors.New("spool is already open")
	// ErrBadName is wrapped by the errors of CheckName, Submit and SubmitDir
	// for a name that cannot be a job's.
	ErrBadName = errors.New("bad job name")
	// ErrTooLarge is wrapped by the error of Submit for a payload larger
	// than Options.MaxPayload.
	ErrTooLarge = errors.New("job payload too large")
)

// Defaults of Options.
const (
	DefaultMaxPayload     = 64 << 20
	DefaultRescanInterval = 2 * time.Minute
)

// Options configure a Spool. Only Dir is required.
type Options struct {
	// Dir is the spool's root directory. It and its subdirectories are
	// created if missing. A relative path is made absolute at Open.
	Dir string
	// MaxAttempts is the number of runs a job gets in all before it is
	// filed in failed/; 0 or less means 1 (no retries). A job put back
	// from running/ by Open counts the interrupted run, and may then exceed
	// MaxAttempts by the number of crashes it lived through: a failure
	// files it in failed/, a success in done/.
	MaxAttempts int
	// Backoff is the delay before the first retry; it doubles with every
	// further retry (up to an hour) and is spread by ±20% (see jobs.Retry).
	// 0 or less retries at once.
	Backoff time.Duration
	// MaxPayload is the largest job file run, in bytes (default 64 MiB):
	// a larger one is refused into failed/, and Submit refuses to write
	// one. Negative means no limit.
	MaxPayload int64
	// RescanInterval is how often incoming/ is listed again for files
	// that inotify did not report, such as a hard link made there (default
	// 2 min). It is the only timer of an idle spool that inotify watches.
	RescanInterval time.Duration
	// KeepDone and KeepFailed, if positive, are how long a job stays in
	// done/ and failed/ with its record: older ones are removed, at Open
	// and then every hour or so (more often for short periods). 0 keeps
	// them for ever.
	KeepDone, KeepFailed time.Duration
	// Logger receives the spool's log records; nil discards them.
	Logger *slog.Logger
	// Now is the clock for not-before times and records; nil means
	// time.Now. Tests set it.
	Now func() time.Time
}

// Spool is an open spool directory. Its hooks NextJob and Done must be
// called from one goroutine at a time, as jobs.Daemon does; Submit, Depth,
// Path and Wake are safe from any goroutine. Close it after the daemon's
// Run has returned.
type Spool struct {
	dir, incoming, running, done, failed string

	retry      jobs.Retry
	maxPayload int64
	rescan     time.Duration
	keepDone   time.Duration
	keepFailed time.Duration
	log        *slog.Logger
	now        func() time.Time

	lock      *os.File    // holds the flock on DIR/.lock
	watch     *os.File    // the inotify descriptor, nil without inotify
	watching  atomic.Bool // the watch reports new files: see Watching
	wake      chan struct{}
	dirty     atomic.Bool  // incoming/ may hold files the queue lacks
	nfailed   atomic.Int64 // jobs filed in failed/ since Open
	closed    atomic.Bool
	quit      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	timer     *time.Timer // wakes the dispatcher when a deferred job is due

	// The dispatcher's state, touched only by NextJob and Done.
	known    map[string]*entry // files of incoming/ seen so far, by name
	queue    []*entry          // due, oldest at the end
	later    []*entry          // not due yet, soonest first
	lastFill time.Time
	claimed  map[string]*claim // jobs in running/, by name
	unfiled  []*filing         // finished jobs whose move failed

	journal      *os.File // the claims journal, open for appending (claims.go)
	journalLines int      // lines in it

	beforeClaim func(name string) // test hook, called before each claim
}

// Open opens the spool in opts.Dir, creating its directories if needed,
// and locks it: a second Open of the same directory fails with ErrLocked
// until the first spool is closed. It puts back into incoming/ what a
// previous daemon left in running/ (see the package documentation),
// removes the temporary files and sidecars that a crash orphaned, and
// starts watching incoming/ with inotify; if inotify is not available,
// it logs a warning and the spool is polled only.
//
// Open fails if a directory cannot be created, is a symbolic link or
// another kind of file, lies on another file system than the rest, or
// may be written by every user (except incoming/, see the package
// documentation), or if a job left in running/ cannot be put back.
func Open(opts Options) (*Spool, error) {
	if opts.Dir == "" {
		return nil, errors.New("open spool: no directory given")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	s := &Spool{
		dir:        dir,
		incoming:   filepath.Join(dir, "incoming"),
		running:    filepath.Join(dir, "running"),
		done:       filepath.Join(dir, "done"),
		failed:     filepath.Join(dir, "failed"),
		retry:      jobs.Retry{MaxAttempts: max(opts.MaxAttempts, 1), Base: opts.Backoff, Jitter: 0.2},
		maxPayload: opts.MaxPayload,
		rescan:     opts.RescanInterval,
		keepDone:   opts.KeepDone,
		keepFailed: opts.KeepFailed,
		log:        opts.Logger,
		now:        opts.Now,
		wake:       make(chan struct{}, 1),
		quit:       make(chan struct{}),
		known:      map[string]*entry{},
		claimed:    map[string]*claim{},
	}
	if s.maxPayload == 0 {
		s.maxPayload = DefaultMaxPayload
	}
	if s.rescan <= 0 {
		s.rescan = DefaultRescanInterval
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.log = s.log.With("spool", dir)
	if err := s.setUp(); err != nil {
		if s.journal != nil {
			s.journal.Close()
		}
		if s.lock != nil {
			s.lock.Close()
		}
		return nil, fmt.Errorf("open spool %s: %w", dir, err)
	}
	s.timer = time.AfterFunc(time.Hour, s.wakeUp)
	s.timer.Stop()
	s.dirty.Store(true)
	s.startWatch()
	s.wg.Add(1)
	go s.rescanLoop()
	if s.keepDone > 0 || s.keepFailed > 0 {
		s.wg.Add(1)
		go s.pruneLoop()
	}
	return s, nil
}

func (s *Spool) setUp() error {
	if err := os.MkdirAll(s.dir, 0o750); err != nil {
		return err
	}
	fi, err := os.Stat(s.dir) // the root may be a symbolic link
	if err != nil {
		return err
	}
	if err := checkDir(s.dir, fi, false); err != nil {
		return err
	}
	dev := fi.Sys().(*syscall.Stat_t).Dev
	if err := s.lockDir(); err != nil {
		return err
	}
	for _, d := range []string{s.incoming, s.running, s.done, s.failed} {
		if err := os.Mkdir(d, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		fi, err := os.Lstat(d)
		if err != nil {
			return err
		}
		if err := checkDir(d, fi, d == s.incoming); err != nil {
			return err
		}
		if fi.Sys().(*syscall.Stat_t).Dev != dev {
			return fmt.Errorf("%s is on another file system than %s", d, s.dir)
		}
		if d == s.incoming && fi.Mode().Perm()&0o002 != 0 && fi.Mode()&fs.ModeSticky == 0 {
			s.log.Warn("incoming/ is writable by every user without the sticky bit: anyone may remove or replace others' jobs")
		}
	}
	if err := s.recoverRunning(); err != nil {
		return err
	}
	for _, d := range []string{s.incoming, s.running, s.done, s.failed} {
		s.cleanUp(d)
	}
	return s.openJournal()
}

// checkDir refuses what is not a directory, and, unless shared, a
// directory every user may write to.
func checkDir(path string, fi fs.FileInfo, shared bool) error {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s is a symbolic link", path)
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", path)
	case !shared && fi.Mode().Perm()&0o002 != 0:
		return fmt.Errorf("%s is writable by every user", path)
	}
	return nil
}

func (s *Spool) lockDir() error {
	f, err := os.OpenFile(filepath.Join(s.dir, ".lock"), os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o640)
	if err != nil {
		return err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return ErrLocked
		}
		return fmt.Errorf("lock: %w", err)
	}
	s.lock = f
	return nil
}

// recoverRunning puts back into incoming/ the jobs of running/: only a
// daemon that stopped or crashed with jobs running leaves any, and the
// lock guarantees that it is gone. Each counts the interrupted run. A
// file that the claims journal does not know was not claimed: a job wrote
// it there, and it is filed in failed/ as not a job.
func (s *Spool) recoverRunning() error {
	names, err := readNames(s.running)
	if err != nil {
		return err
	}
	claims, journaled, err := s.readJournal()
	if err != nil {
		return err
	}
	now := s.now()
	n := 0
	for _, name := range names {
		if name[0] == '.' {
			continue
		}
		fi, err := os.Lstat(filepath.Join(s.running, name))
		if err != nil {
			return err
		}
		ino := inode(fi)
		if journaled && !claims[journalKey{name, ino}] {
			if err := s.notAJob(name, "found in running/, where no claim put it (a file a job wrote beside its input?)"); err != nil {
				return fmt.Errorf("file running/%s: %w", name, err)
			}
			continue
		}
		attempt := 1
		if m, ok := readMeta(s.running, name, ino); ok {
			attempt = m.Attempt
		}
		next := meta{Attempt: attempt + 1, Inode: ino, LastResult: "interrupted: the daemon stopped while the job ran"}
		to, err := s.requeue(name, next, true, now)
		if err != nil {
			return fmt.Errorf("put back running/%s: %w", name, err)
		}
		s.log.Info("job left in running/ put back", "job_id", to, "attempt", next.Attempt)
		n++
	}
	if n > 0 {
		s.log.Warn("jobs interrupted by the previous daemon were put back into incoming/", "count", n)
	}
	return nil
}

// requeue moves running/name back into incoming/, under a new name if
// name is taken there, with next as its sidecar. It returns the name in
// incoming/. hadMeta says whether running/ may hold a sidecar of the job,
// to be removed once it has moved.
//
// A job that goes back with attempt 1 and no not-before time, as an
// interrupted first attempt does at every graceful stop, gets no sidecar:
// a file without one is at attempt 1, due at once, so a sidecar would
// hold nothing but its last_result note, and cost a new file per job
// (five system calls, and a new inode, which a file system busy freeing
// others makes slow) on the way out of every stop. Its move is then one
// rename, RENAME_NOREPLACE finding a taken name by itself.
func (s *Spool) requeue(name string, next meta, hadMeta bool, now time.Time) (string, error) {
	from := filepath.Join(s.running, name)
	withMeta := next.Attempt > 1 || !next.NotBefore.IsZero()
	for n := range maxAlts {
		to := altName(name, n, now)
		if withMeta {
			// Looked at first, so that the sidecar below never replaces
			// that of a file already waiting under the name.
			if taken, err := exists(s.incoming, to); err != nil {
				return "", err
			} else if taken {
				continue
			}
			// The sidecar first: a crash between the two steps leaves a
			// sidecar whose inode matches no file in incoming/.
			if err := writeMeta(s.incoming, to, next); err != nil {
				return "", fmt.Errorf("write sidecar of %s: %w", to, err)
			}
		}
		err := renameNoReplace(from, filepath.Join(s.incoming, to))
		if err == nil {
			if hadMeta {
				if err := removeMeta(s.running, name); err != nil {
					s.log.Warn("cannot remove sidecar", "err", err)
				}
			}
			return to, nil
		}
		if withMeta {
			// Nobody but the spool writes sidecars in incoming/, so the
			// one just written is not another job's.
			_ = removeMeta(s.incoming, to)
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
	return "", fmt.Errorf("no free name for %s in %s", name, s.incoming)
}

// cleanUp removes the spool's temporary files and orphaned sidecars from
// dir. In incoming/, a temporary file younger than an hour may be a
// SubmitDir of another process in progress, and is left alone.
func (s *Spool) cleanUp(dir string) {
	names, err := readNames(dir)
	if err != nil {
		s.log.Warn("cannot clean up", "dir", dir, "err", err)
		return
	}
	present := make(map[string]bool, len(names))
	for _, name := range names {
		present[name] = true
	}
	for _, name := range names {
		path := filepath.Join(dir, name)
		switch job, isMeta := metaJob(name); {
		case strings.HasPrefix(name, tmpPrefix):
			if fi, err := os.Lstat(path); err != nil || !fi.Mode().IsRegular() ||
				(dir == s.incoming && s.now().Sub(fi.ModTime()) < time.Hour) {
				continue
			}
		case isMeta && (dir == s.incoming || dir == s.running) && !present[job]:
			if _, err := decodeMeta(path); err != nil {
				continue // not one of ours
			}
		default:
			continue
		}
		if err := os.Remove(path); err != nil {
			s.log.Warn("cannot remove leftover file", "path", path, "err", err)
		} else {
			s.log.Debug("removed leftover file", "path", path)
		}
	}
}

// Close stops watching incoming/ and unlocks the spool. Jobs still in
// running/ stay there, and the next Open puts them back into incoming/.
// Close returns the error of closing the inotify descriptor, if any; a
// second Close does nothing and returns nil. It must not run concurrently
// with NextJob or Done.
func (s *Spool) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.quit)
		s.timer.Stop()
		if s.watch != nil {
			err = s.watch.Close()
		}
		s.wg.Wait()
		if n := len(s.claimed); n > 0 {
			s.log.Info("jobs left in running/ will be put back at the next start", "count", n)
		}
		s.journal.Close()
		s.lock.Close() // releases the flock
	})
	return err
}

// Wake returns a channel that receives when new files may have arrived in
// incoming/, or a deferred job may have become due: the dispatcher should
// call NextJob then. It is the same channel on every call, never closed;
// wake-ups coalesce, and one may come with nothing new.
func (s *Spool) Wake() <-chan struct{} { return s.wake }

// Watching implements jobs.Watcher: it reports whether inotify watches
// incoming/, so that Wake tells of every new file (deferred jobs and the
// rescan every RescanInterval wake it too). Without inotify, or once the
// watch is lost, it returns false and the dispatcher polls.
func (s *Spool) Watching() bool { return s.watching.Load() }

func (s *Spool) wakeUp() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Path returns the path of a job's file in running/, which the command
// reads: an absolute path, also in job.Meta["path"]. It is valid from
// NextJob to Done; for nil it is "".
func (s *Spool) Path(job *jobs.Job) string {
	if job == nil {
		return ""
	}
	return filepath.Join(s.running, job.ID)
}

// Failed returns how many jobs this spool has filed in failed/ since Open:
// the ones out of attempts and the ones refused unrun. It is safe to call
// from any goroutine.
func (s *Spool) Failed() int { return int(s.nfailed.Load()) }

// Dir returns the spool's root directory, made absolute.
func (s *Spool) Dir() string { return s.dir }

// Depth returns the number of jobs waiting in incoming/, including retries
// not due yet, and files that will be refused when their turn comes. It
// lists the directory on every call.
func (s *Spool) Depth() (int, error) {
	names, err := readNames(s.incoming)
	if err != nil {
		return 0, fmt.Errorf("spool depth: %w", err)
	}
	n := 0
	for _, name := range names {
		if name[0] != '.' {
			n++
		}
	}
	return n, nil
}

// OldestAge returns how long the oldest job of incoming/ that is due has
// waited (jobs.OldestAger): since its file's modification time, or since
// its retry's not-before time; 0 when none is due. Like Depth it lists
// incoming/, and it reads the sidecars of retries.
func (s *Spool) OldestAge() (time.Duration, error) {
	names, err := readNames(s.incoming)
	if err != nil {
		return 0, fmt.Errorf("spool age: %w", err)
	}
	sidecar := make(map[string]bool)
	for _, name := range names {
		if job, ok := metaJob(name); ok {
			sidecar[job] = true
		}
	}
	now := s.now()
	var oldest time.Duration
	for _, name := range names {
		if name[0] == '.' {
			continue
		}
		fi, err := os.Lstat(filepath.Join(s.incoming, name))
		if err != nil {
			continue // claimed meanwhile
		}
		due := fi.ModTime()
		if sidecar[name] {
			if m, ok := readMeta(s.incoming, name, inode(fi)); ok && m.NotBefore.After(due) {
				due = m.NotBefore
			}
		}
		oldest = max(oldest, now.Sub(due))
	}
	return oldest, nil
}
