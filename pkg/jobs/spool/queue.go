package spool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// entry is a file seen in incoming/.
type entry struct {
	name      string
	mtime     time.Time
	ino       uint64
	attempt   int       // of its next run
	notBefore time.Time // not claimed before
	fails     int       // claims failed in a row
}

// claim is a job in running/.
type claim struct {
	name     string
	ino      uint64
	mtime    time.Time
	attempt  int
	finished bool // Done was called
}

// stuck is the backoff of a file that could not be moved: it is tried
// again after 1 s, 2 s, 4 s ... up to a minute, never in a busy loop.
var stuck = jobs.Retry{MaxAttempts: math.MaxInt, Base: time.Second, Max: time.Minute, Jitter: 0.2}

// refillGap is the least time between two listings of incoming/ while the
// queue still holds jobs: arrivals then only matter for their order, and
// listing a directory of thousands of files for every claim would cost
// more than the claims.
const refillGap = time.Second

// NextJob claims the oldest waiting job that is due, by modification time,
// then by name, and returns it; it returns nil, nil when no job is due.
// The job's ID is its file name, its Payload is nil (the command reads the
// file, see Path), its Meta holds "path" (the absolute path in running/)
// and "name" (the ID), and Attempt is 1 for the first run.
//
// Files refused on the way (see the package documentation) are filed in
// failed/ and skipped; so are files that vanish before they are claimed.
// When a file cannot be claimed for another reason (a failing rename:
// permissions, a broken file system), it stays in incoming/, NextJob logs
// and returns the error, and that file is tried again only after a
// backoff of 1 s up to a minute. Jobs whose filing in Done failed are
// filed again first, with the same backoff.
//
// The waiting files are listed once into a queue in memory, which is
// listed again when it runs empty, or, at most once a second, after a
// wake-up: a file that arrives while thousands wait is seen within a
// second, and one renamed in before a call on an empty queue is seen by
// that call.
func (s *Spool) NextJob(ctx context.Context, slot int) (*jobs.Job, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	now := s.now()
	s.fileAgain(now)
	if s.needFill() {
		if err := s.fill(now); err != nil {
			return nil, err
		}
	}
	s.promote(now)
	for len(s.queue) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e := s.queue[len(s.queue)-1]
		s.queue[len(s.queue)-1] = nil
		s.queue = s.queue[:len(s.queue)-1]
		if s.known[e.name] != e {
			continue // replaced since it was queued
		}
		if s.claimed[e.name] != nil {
			continue // a job of that name runs; Done makes the next fill requeue it
		}
		job, err := s.claim(e, now)
		if job != nil || err != nil {
			return job, err
		}
	}
	s.armTimer(now)
	return nil, nil
}

// needFill says whether to list incoming/: always when the queue is empty
// (so that a file renamed in before the call is seen, wake-up or not; the
// listing of known files costs no lstat), else after a wake-up, at most
// once per refillGap.
func (s *Spool) needFill() bool {
	return len(s.queue) == 0 || s.dirty.Load() && time.Since(s.lastFill) >= refillGap
}

// fill lists incoming/ and rebuilds the queue. Files it knows keep their
// state (and their backoff); new ones are looked at with lstat, and their
// sidecar read if the listing holds one.
func (s *Spool) fill(now time.Time) error {
	s.dirty.Store(false)
	names, err := readNames(s.incoming)
	if err != nil {
		s.dirty.Store(true)
		return fmt.Errorf("list incoming/: %w", err)
	}
	s.lastFill = time.Now()
	sidecars := make(map[string]bool)
	for _, name := range names {
		if job, ok := metaJob(name); ok {
			sidecars[job] = true
		}
	}
	known := make(map[string]*entry, len(names))
	for _, name := range names {
		if name[0] == '.' {
			continue // temporary files and sidecars are never jobs
		}
		if e := s.known[name]; e != nil {
			known[name] = e
			continue
		}
		fi, err := os.Lstat(filepath.Join(s.incoming, name))
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				s.log.Warn("cannot stat a file in incoming/", "job_id", name, "err", err)
			}
			continue
		}
		e := &entry{name: name, mtime: fi.ModTime(), ino: inode(fi), attempt: 1}
		if sidecars[name] {
			if m, ok := readMeta(s.incoming, name, e.ino); ok {
				e.attempt, e.notBefore = m.Attempt, m.NotBefore
			}
		}
		known[name] = e
	}
	s.known = known
	clear(s.queue)
	clear(s.later)
	s.queue, s.later = s.queue[:0], s.later[:0]
	for _, e := range known {
		switch {
		case s.claimed[e.name] != nil:
		case e.notBefore.After(now):
			s.later = append(s.later, e)
		default:
			s.queue = append(s.queue, e)
		}
	}
	slices.SortFunc(s.queue, youngestFirst)
	slices.SortFunc(s.later, soonestFirst)
	return nil
}

// youngestFirst orders the queue, which is taken from its end: oldest
// modification time last, then smallest name.
func youngestFirst(a, b *entry) int {
	if c := b.mtime.Compare(a.mtime); c != 0 {
		return c
	}
	return cmp.Compare(b.name, a.name)
}

func soonestFirst(a, b *entry) int {
	if c := a.notBefore.Compare(b.notBefore); c != 0 {
		return c
	}
	return youngestFirst(b, a)
}

// enqueue puts e into the queue or, if it is not due yet, into later.
func (s *Spool) enqueue(e *entry, now time.Time) {
	if e.notBefore.After(now) {
		i, _ := slices.BinarySearchFunc(s.later, e, soonestFirst)
		s.later = slices.Insert(s.later, i, e)
		return
	}
	i, _ := slices.BinarySearchFunc(s.queue, e, youngestFirst)
	s.queue = slices.Insert(s.queue, i, e)
}

// promote moves the entries that have become due into the queue.
func (s *Spool) promote(now time.Time) {
	n := 0
	for n < len(s.later) && !s.later[n].notBefore.After(now) {
		n++
	}
	if n == 0 {
		return
	}
	due := slices.Clone(s.later[:n])
	s.later = slices.Delete(s.later, 0, n)
	for _, e := range due {
		if s.known[e.name] == e {
			s.enqueue(e, now)
		}
	}
}

// armTimer makes the spool wake the dispatcher when the next deferred job
// or filing is due, or after RescanInterval at the latest.
func (s *Spool) armTimer(now time.Time) {
	var next time.Time
	if len(s.later) > 0 {
		next = s.later[0].notBefore
	}
	for _, f := range s.unfiled {
		if next.IsZero() || f.notBefore.Before(next) {
			next = f.notBefore
		}
	}
	if next.IsZero() {
		return
	}
	s.timer.Reset(min(max(next.Sub(now), time.Millisecond), s.rescan))
}

// claim moves e into running/ and returns its job; nil, nil if the file
// vanished or was refused.
func (s *Spool) claim(e *entry, now time.Time) (*jobs.Job, error) {
	name := e.name
	src, dst := filepath.Join(s.incoming, name), filepath.Join(s.running, name)
	if s.beforeClaim != nil {
		s.beforeClaim(name)
	}
	// The journal first: a file in running/ that it does not know is
	// not a job (claims.go).
	if err := s.journalClaim(name, e.ino); err != nil {
		return nil, s.claimFailed(e, now, err)
	}
	if e.attempt > 1 {
		// The sidecar in running/ first, so that a crash right after the
		// rename does not forget the attempt.
		if err := writeMeta(s.running, name, meta{Attempt: e.attempt, Inode: e.ino}); err != nil {
			return nil, s.claimFailed(e, now, err)
		}
	}
	if err := renameNoReplace(src, dst); err != nil {
		if e.attempt > 1 {
			_ = removeMeta(s.running, name)
		}
		if errors.Is(err, fs.ErrNotExist) {
			// ENOENT may also mean that running/ is gone: look at the file.
			if _, serr := os.Lstat(src); errors.Is(serr, fs.ErrNotExist) {
				delete(s.known, name)
				s.log.Debug("job file vanished before it was claimed", "job_id", name)
				return nil, nil
			}
		}
		return nil, s.claimFailed(e, now, err)
	}
	delete(s.known, name)
	c := &claim{name: name, attempt: e.attempt}
	s.claimed[name] = c
	fi, err := os.Lstat(dst)
	if err != nil {
		s.refuse(c, fmt.Sprintf("cannot stat the claimed file: %v", err), now)
		return nil, nil
	}
	c.ino, c.mtime = inode(fi), fi.ModTime()
	if c.ino != e.ino {
		// Replaced since it was listed: its own sidecar, if any, counts,
		// and the journal must know the file that was claimed.
		if err := s.journalClaim(name, c.ino); err != nil {
			s.log.Warn("cannot record the claim; a crash now would file the job as not a job", "job_id", name, "err", err)
		}
		c.attempt = 1
		if m, ok := readMeta(s.incoming, name, c.ino); ok {
			c.attempt = m.Attempt
		}
		if c.attempt > 1 {
			if err := writeMeta(s.running, name, meta{Attempt: c.attempt, Inode: c.ino}); err != nil {
				s.log.Warn("cannot write sidecar; a crash now would forget the attempt number", "job_id", name, "err", err)
			}
		} else if e.attempt > 1 {
			_ = removeMeta(s.running, name)
		}
	}
	if e.attempt > 1 || c.attempt > 1 {
		if err := removeMeta(s.incoming, name); err != nil {
			s.log.Warn("cannot remove sidecar", "job_id", name, "err", err)
		}
	}
	if why := s.refusal(name, fi); why != "" {
		s.refuse(c, why, now)
		return nil, nil
	}
	return &jobs.Job{
		ID:      name,
		Attempt: c.attempt,
		Meta:    map[string]string{jobs.MetaPath: dst, "name": name},
	}, nil
}

func (s *Spool) claimFailed(e *entry, now time.Time, err error) error {
	e.fails++
	d, _ := stuck.After(e.fails)
	e.notBefore = now.Add(d)
	s.enqueue(e, now)
	s.log.Error("cannot claim job file; it stays in incoming/", "job_id", e.name, "retry_in", d.Round(time.Millisecond), "err", err)
	return fmt.Errorf("claim job %q: %w", e.name, err)
}

// refusal says why a claimed file must not run, or returns "".
func (s *Spool) refusal(name string, fi fs.FileInfo) string {
	if why := badName(name); why != "" {
		return why
	}
	switch m := fi.Mode(); {
	case m&fs.ModeSymlink != 0:
		return "symbolic link (never followed)"
	case m.IsDir():
		return "not a regular file: directory"
	case m&fs.ModeNamedPipe != 0:
		return "not a regular file: FIFO"
	case m&fs.ModeSocket != 0:
		return "not a regular file: socket"
	case m&fs.ModeDevice != 0:
		return "not a regular file: device"
	case !m.IsRegular():
		return "not a regular file"
	}
	if s.maxPayload >= 0 && fi.Size() > s.maxPayload {
		return fmt.Sprintf("payload of %d bytes is larger than the limit of %d bytes", fi.Size(), s.maxPayload)
	}
	return ""
}

// refuse files a claimed job in failed/ without running it.
func (s *Spool) refuse(c *claim, why string, now time.Time) {
	s.log.Warn("job refused", "job_id", c.name, "reason", why)
	rec := Record{
		ID:         c.name,
		Attempts:   c.attempt - 1,
		RunRecord:  jobs.RunRecord{Outcome: "refused", ExitCode: -1, Error: "refused: " + why},
		FinishedAt: now.UTC(),
	}
	_ = s.finish(&filing{c: c, dest: s.failed, rec: rec}, now)
}
