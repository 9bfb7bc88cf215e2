package spool

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// recordSuffix ends the name of a Record beside its job file.
const recordSuffix = ".result.json"

// pruneLoop removes the jobs of done/ and failed/ whose records are older
// than Options.KeepDone and KeepFailed: at Open, then every hour or so.
func (s *Spool) pruneLoop() {
	defer s.wg.Done()
	every := time.Hour
	for _, keep := range []time.Duration{s.keepDone, s.keepFailed} {
		if keep > 0 {
			every = min(every, max(keep/10, time.Minute))
		}
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.prune(s.done, s.keepDone)
			s.prune(s.failed, s.keepFailed)
			t.Reset(every)
		case <-s.quit:
			return
		}
	}
}

// prune removes from dir the jobs whose records were written more than
// keep ago, each job file then its record, so that a job is never left
// without its record: at worst a record without its job, which the next
// round removes. keep <= 0 keeps everything.
func (s *Spool) prune(dir string, keep time.Duration) {
	if keep <= 0 {
		return
	}
	names, err := readNames(dir)
	if err != nil {
		s.log.Warn("cannot list for pruning", "dir", dir, "err", err)
		return
	}
	cutoff := s.now().Add(-keep)
	removed := 0
	for _, name := range names {
		job, ok := strings.CutSuffix(name, recordSuffix)
		if !ok || job == "" {
			continue
		}
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || !fi.ModTime().Before(cutoff) {
			continue
		}
		// RemoveAll: a directory refused into failed/ is a job too; it
		// follows no symbolic link.
		if err := os.RemoveAll(filepath.Join(dir, job)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("cannot prune", "file", filepath.Join(dir, job), "err", err)
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("cannot prune", "file", filepath.Join(dir, name), "err", err)
			continue
		}
		removed++
	}
	if removed > 0 {
		s.log.Info("pruned old jobs", "dir", dir, "count", removed, "older_than", keep.String())
	}
}
