package spool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// Record is what the spool writes beside a job file in done/ or failed/,
// as FILE.result.json, where FILE is the Record's File: the job's name and
// attempts, the record of its last run (jobs.RunRecord, whose fields it
// holds inline), and when it was filed. For example:
//
//	{
//	  "id": "report.csv",
//	  "file": "report.csv",
//	  "attempts": 3,
//	  "outcome": "exit 2",
//	  "exit_code": 2,
//	  "signal": "",
//	  "timed_out": false,
//	  "duration_seconds": 0.153,
//	  "user_cpu_seconds": 0.1,
//	  "sys_cpu_seconds": 0.02,
//	  "max_rss_bytes": 10485760,
//	  "usage_of": "job",
//	  "error": "",
//	  "output_tail": "reading report.csv\nline 3: bad date\n",
//	  "output_truncated": false,
//	  "finished_at": "2025-01-02T15:04:05.123456789Z"
//	}
//
// A job refused unrun has the outcome "refused" and its reason in Error;
// a file that no claim put in running/, the outcome "not a job".
type Record struct {
	// ID is the job's name, as it was claimed (in JSON, bytes that are not
	// UTF-8 read as U+FFFD).
	ID string `json:"id"`
	// File is the job file's name in done/ or failed/: ID, unless that was
	// taken (see the package documentation), or ID was refused as too long
	// (File is cut) or for its characters (File has them replaced by '_').
	File string `json:"file"`
	// Attempts is the number of runs the job had, this one included; for a
	// refused job, the runs it had before (0 for a new one).
	Attempts int `json:"attempts"`
	jobs.RunRecord
	// FinishedAt is when the spool filed the job, in UTC.
	FinishedAt time.Time `json:"finished_at"`
}

func newRecord(c *claim, res jobs.Result, now time.Time) Record {
	return Record{ID: c.name, Attempts: c.attempt, RunRecord: jobs.NewRunRecord(res), FinishedAt: now.UTC()}
}

// filing is where a finished job goes: done/ or failed/ with its record,
// or back to incoming/ with its sidecar.
type filing struct {
	c          *claim
	dest       string // s.done or s.failed; "" for incoming/
	rec        Record // for done/ and failed/
	recordOnly bool   // the job's file is gone: its record goes alone (input.go)
	next       meta   // for incoming/
	fails      int
	notBefore  time.Time
}

// Done files a job that NextJob returned, by its ID, and its result:
//
//   - success (res.OK()): into done/, with a Record beside it;
//   - failure with attempts left (see Options.MaxAttempts): back into
//     incoming/, with the attempt number raised and a not-before time
//     Options.Backoff from now, doubling with each retry;
//   - failure of the last attempt: into failed/, with a Record.
//
// If the move fails, the job stays in running/, Done logs and returns the
// error, and NextJob tries the move again after a backoff of 1 s up to a
// minute; should the daemon stop first, the next Open puts the job back
// into incoming/ and it runs again. A job whose file was removed or
// replaced in running/ while it ran (the job did it) has its record filed
// alone, in done/ after a success, else in failed/, and a replacement is
// filed in failed/ as not a job. Done fails for a job that is not running
// from this spool, or that Done was called for already.
func (s *Spool) Done(ctx context.Context, job *jobs.Job, res jobs.Result) error {
	_, err := s.Finish(ctx, job, res)
	return err
}

// Finish is Done, and also says what it did with the job (jobs.Finisher):
// Completed into done/, Retrying back into incoming/, Requeued for an
// interrupted job or one that could not be started, Failed into failed/.
// The verdict stands even when the move fails and is retried later; it is
// Unknown with an error for a job that is not running from this spool.
func (s *Spool) Finish(ctx context.Context, job *jobs.Job, res jobs.Result) (jobs.Verdict, error) {
	if job == nil {
		return jobs.Unknown, errors.New("spool: Done without a job")
	}
	c := s.claimed[job.ID]
	if c == nil || c.finished {
		return jobs.Unknown, fmt.Errorf("spool: job %q is not running", job.ID)
	}
	now := s.now()
	f := &filing{c: c}
	v := jobs.Retrying
	switch {
	case res.OK():
		f.dest, f.rec = s.done, newRecord(c, res, now)
		v = jobs.Completed
	case res.Interrupted, res.NotStarted:
		v = jobs.Requeued
		// The daemon stopped the job, not the job itself, or could not
		// start it at all: it goes back as it was, at once, and the
		// attempt does not count. (A crash is different: what it leaves in
		// running/ comes back with attempt+1, so that a job that kills the
		// daemon cannot loop for ever.)
		why := "interrupted: "
		if res.NotStarted {
			why = ""
		}
		f.next = meta{Attempt: c.attempt, Inode: c.ino, LastResult: why + res.String()}
	default:
		d, again := s.retry.After(c.attempt)
		if !again {
			f.dest, f.rec = s.failed, newRecord(c, res, now)
			v = jobs.Failed
			break
		}
		var at time.Time
		if s.retry.Base > 0 { // 0: retry at once
			at = now.Add(d).UTC()
		}
		f.next = meta{Attempt: c.attempt + 1, NotBefore: at, Inode: c.ino, LastResult: res.String()}
	}
	if f.dest == "" {
		// Kept in case the file vanishes before it is put back.
		f.rec = newRecord(c, res, now)
	}
	if change := s.inputChange(c); change != "" {
		v = s.changedInput(f, res, change, now, v)
	}
	return v, s.finish(f, now)
}

// finish files a job, or keeps it for fileAgain if that fails.
func (s *Spool) finish(f *filing, now time.Time) error {
	f.c.finished = true
	err := s.file(f, now)
	if err != nil {
		s.fileLater(f, now, err)
	}
	return err
}

func (s *Spool) fileLater(f *filing, now time.Time, err error) {
	f.fails++
	d, _ := stuck.After(f.fails)
	f.notBefore = now.Add(d)
	s.unfiled = append(s.unfiled, f)
	s.log.Error("cannot file finished job; it stays in running/", "job_id", f.c.name, "retry_in", d.Round(time.Millisecond), "err", err)
}

// fileAgain retries the filings that failed and are due.
func (s *Spool) fileAgain(now time.Time) {
	if len(s.unfiled) == 0 {
		return
	}
	todo := s.unfiled
	s.unfiled = nil
	for _, f := range todo {
		if f.notBefore.After(now) {
			s.unfiled = append(s.unfiled, f)
		} else if err := s.file(f, now); err != nil {
			s.fileLater(f, now, err)
		}
	}
}

func (s *Spool) file(f *filing, now time.Time) error {
	name := f.c.name
	_, waiting := s.known[name]
	var err error
	if f.recordOnly {
		err = s.fileRecordOnly(name, f.dest, &f.rec, now)
	} else if f.dest == "" {
		var to string
		// The sidecar in running/, if any, is removed below.
		if to, err = s.requeue(name, f.next, false, now); err == nil {
			e := &entry{name: to, mtime: f.c.mtime, ino: f.c.ino, attempt: f.next.Attempt, notBefore: f.next.NotBefore}
			s.known[to] = e
			s.enqueue(e, now)
			if e.attempt > f.c.attempt {
				s.log.Info("job will be retried", "job_id", to, "attempt", e.attempt, "not_before", e.notBefore)
			} else {
				// Interrupted, or never started: the attempt did not count.
				s.log.Info("job put back into incoming/", "job_id", to, "attempt", e.attempt)
			}
		}
	} else {
		err = s.fileRecord(name, f.dest, &f.rec, now)
	}
	if err == nil && f.dest == s.failed {
		s.nfailed.Add(1)
	}
	if err != nil {
		if _, serr := os.Lstat(filepath.Join(s.running, name)); f.recordOnly || !errors.Is(serr, fs.ErrNotExist) {
			return err
		}
		// Gone between Finish and the move: its record goes alone.
		const gone = "the job's file vanished from running/ before it was filed"
		if f.rec.Error == "" {
			f.rec.Error = gone
		} else {
			f.rec.Error += "; " + gone
		}
		f.recordOnly = true
		if f.dest != s.done {
			f.dest = s.failed
		}
		return s.file(f, now)
	}
	if f.c.attempt > 1 {
		if err := removeMeta(s.running, name); err != nil {
			s.log.Warn("cannot remove sidecar", "job_id", name, "err", err)
		}
	}
	delete(s.claimed, name)
	if waiting {
		// A file of the same name waits in incoming/: list again.
		s.dirty.Store(true)
		s.wakeUp()
	}
	return nil
}

// fileRecord moves running/name into dir, under a new name if name or its
// record's name is taken there, and writes its record beside it. A name
// that was refused as bad is made safe first.
func (s *Spool) fileRecord(name, dir string, rec *Record, now time.Time) error {
	from := filepath.Join(s.running, name)
	base := name
	if badName(name) != "" {
		base = safeName(name)
	}
	for n := range maxAlts {
		to := altName(base, n, now)
		// A taken job name makes renameNoReplace fail below; the record is
		// moved with a plain rename, which would overwrite, so its name is
		// checked first.
		if taken, err := exists(dir, to+resultSuffix); err != nil || taken {
			if err != nil {
				return err
			}
			continue
		}
		rec.File = to
		b, err := json.MarshalIndent(rec, "", "  ")
		if err != nil {
			return err
		}
		// The record first, so that a full disk stops the move, not the
		// record; it is renamed into place when the job is.
		tmp, err := writeTemp(dir, append(b, '\n'))
		if err != nil {
			return fmt.Errorf("write record: %w", err)
		}
		if err := renameNoReplace(from, filepath.Join(dir, to)); err != nil {
			os.Remove(tmp)
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, to+resultSuffix)); err != nil {
			os.Remove(tmp)
			s.log.Error("job filed without its record", "job_id", name, "file", filepath.Join(dir, to), "err", err)
		}
		return nil
	}
	return fmt.Errorf("no free name for %s in %s", name, dir)
}
