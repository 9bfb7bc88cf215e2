package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// A job that runs as the daemon's user may remove or replace its own file
// in running/. Its result is then filed truthfully: a record without a
// job file (File ""), in done/ after a success, in failed/ otherwise (a
// job without its input cannot run again), whose Error says what
// happened; a file that replaced the input is filed in failed/ as not a
// job. Nothing is counted as done that the spool cannot show.

// inputChange says how a claimed job's file in running/ changed while the
// job ran: "" when it is there as claimed (or cannot be looked at, which
// the move then reports), "removed", or "replaced".
func (s *Spool) inputChange(c *claim) string {
	fi, err := os.Lstat(filepath.Join(s.running, c.name))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "removed"
	case err != nil:
		return ""
	case inode(fi) != c.ino:
		return "replaced"
	}
	return ""
}

// changedInput turns the filing of a job whose file was removed or
// replaced into a record without a job file, and files a replacement as
// not a job. It returns the verdict that holds then.
func (s *Spool) changedInput(f *filing, res jobs.Result, change string, now time.Time, v jobs.Verdict) jobs.Verdict {
	c := f.c
	f.recordOnly, f.rec = true, newRecord(c, res, now)
	f.dest = s.done
	if !res.OK() {
		f.dest, v = s.failed, jobs.Failed
	}
	note := fmt.Sprintf("the job's file was %s in running/ while the job ran (by the job?)", change)
	if f.rec.Error != "" {
		note = f.rec.Error + "; " + note
	}
	f.rec.Error = note
	if change == "replaced" {
		if err := s.notAJob(c.name, "it replaced the file of job "+c.name+" in running/ while the job ran"); err != nil {
			s.log.Error("cannot file the replacement of a job's file; it stays in running/", "job_id", c.name, "err", err)
		}
	}
	s.log.Warn("job's file "+change+" while it ran; its record is filed without it", "job_id", c.name, "dest", filepath.Base(f.dest))
	return v
}

// fileRecordOnly writes the record of a job whose file is gone into dir,
// under the job's name, or a new one if that or its record is taken.
func (s *Spool) fileRecordOnly(name, dir string, rec *Record, now time.Time) error {
	base := name
	if badName(name) != "" {
		base = safeName(name)
	}
	rec.File = ""
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	for n := range maxAlts {
		to := altName(base, n, now)
		if taken, err := exists(dir, to); err != nil {
			return err
		} else if taken {
			continue
		}
		tmp, err := writeTemp(dir, append(b, '\n'))
		if err != nil {
			return fmt.Errorf("write record: %w", err)
		}
		err = renameNoReplace(tmp, filepath.Join(dir, to+resultSuffix))
		if err == nil {
			return nil
		}
		os.Remove(tmp)
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	return fmt.Errorf("no free name for the record of %s in %s", name, dir)
}

// Open opens the file of a running job for reading, for the daemon to
// hand to the job's command as its standard input: a job that runs as a
// user of its own cannot open running/ itself. The file is opened without
// following a symbolic link and without blocking (a FIFO would block an
// open for reading), and must be the regular file that NextJob claimed.
// The caller closes it, after Done.
func (s *Spool) Open(job *jobs.Job) (*os.File, error) {
	if job == nil || s.claimed[job.ID] == nil {
		return nil, errors.New("spool: Open of a job that is not running")
	}
	c := s.claimed[job.ID]
	path := filepath.Join(s.running, c.name)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	err = unix.Fstat(fd, &st)
	switch {
	case err != nil:
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		err = errors.New("not a regular file")
	case st.Ino != c.ino:
		err = errors.New("not the file that was claimed: replaced in running/")
	}
	if err == nil {
		// The job reads it as it likes: blocking, as files are.
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, 0)
	}
	if err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}
