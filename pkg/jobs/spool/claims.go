package spool

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// The claims journal, DIR/.claims, says which files of running/ are jobs:
// one line per claim, appended before the rename that claims the file, so
// that a crash at any moment leaves every claimed file in the journal. A
// job that writes files beside its input in running/ (a job that runs as
// the daemon's user may) leaves files that are in no line: at the next
// Open they are filed in failed/ as "not a job" rather than put back into
// incoming/ as new jobs (in1.out, then in1.out.out...). A line is the
// file's inode number and its name, quoted:
//
//	1837 "report.csv"
//
// The name and the inode must both match: a job that replaced its input
// with a file of the same name does not pass either. A spool without a
// journal (one a version without it left) is taken to have claimed all
// of running/, as that version did.
//
// The journal is not synced: a kill of the daemon loses nothing of it, a
// power failure may (see docs/GUARANTEES.md). It is emptied at each Open,
// once running/ has been put back, and rewritten with only the running
// claims when it grows past journalCompact lines.

// journalName is the journal's name in the spool's root.
const journalName = ".claims"

// journalCompact is how many lines the journal may hold beyond the jobs
// running before it is rewritten.
const journalCompact = 4096

// journalKey is a claimed file: its name and inode number.
type journalKey struct {
	name string
	ino  uint64
}

// readJournal returns the claims recorded in the journal, and whether
// there is one. Lines it cannot read (a line cut by a full disk) are
// skipped.
func (s *Spool) readJournal() (map[journalKey]bool, bool, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, journalName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read the claims journal: %w", err)
	}
	claims := map[journalKey]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 4<<10)
	for sc.Scan() {
		if k, ok := parseClaim(sc.Text()); ok {
			claims[k] = true
		}
	}
	return claims, true, nil
}

func parseClaim(line string) (journalKey, bool) {
	ino, quoted, ok := strings.Cut(line, " ")
	if !ok {
		return journalKey{}, false
	}
	n, err := strconv.ParseUint(ino, 10, 64)
	if err != nil {
		return journalKey{}, false
	}
	name, err := strconv.Unquote(quoted)
	if err != nil || name == "" {
		return journalKey{}, false
	}
	return journalKey{name, n}, true
}

func claimLine(name string, ino uint64) []byte {
	return []byte(strconv.FormatUint(ino, 10) + " " + strconv.Quote(name) + "\n")
}

// openJournal starts an empty journal, or one with the claims running,
// and keeps it open for appending.
func (s *Spool) openJournal() error {
	var b []byte
	for name, c := range s.claimed {
		b = append(b, claimLine(name, c.ino)...)
	}
	if err := writeAtomic(s.dir, journalName, b); err != nil {
		return fmt.Errorf("write the claims journal: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(s.dir, journalName), os.O_WRONLY|os.O_APPEND|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the claims journal: %w", err)
	}
	if s.journal != nil {
		s.journal.Close()
	}
	s.journal, s.journalLines = f, len(s.claimed)
	return nil
}

// journalClaim records that name, with inode number ino, is about to be
// claimed into running/. A failure stops the claim: a job the journal
// does not know would not be put back after a crash.
func (s *Spool) journalClaim(name string, ino uint64) error {
	if s.journalLines >= journalCompact+len(s.claimed) {
		if err := s.openJournal(); err != nil {
			return err
		}
	}
	if _, err := s.journal.Write(claimLine(name, ino)); err != nil {
		return fmt.Errorf("append to the claims journal: %w", err)
	}
	s.journalLines++
	return nil
}

// notAJob files a file of running/ that no claim put there in failed/,
// with a record that says so. It is not counted as a failed job.
func (s *Spool) notAJob(name, why string) error {
	rec := Record{ID: name, RunRecord: jobs.RunRecord{Outcome: "not a job", ExitCode: -1, Error: "not a job: " + why}, FinishedAt: s.now().UTC()}
	if err := s.fileRecord(name, s.failed, &rec, s.now()); err != nil {
		return err
	}
	s.log.Warn("a file in running/ is not a job; filed in failed/", "file", name, "reason", why)
	return nil
}
