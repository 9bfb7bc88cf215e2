package spool

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"
)

// Submit queues a job: it copies r into a hidden temporary file in
// incoming/, syncs it to disk, and renames it to name, so that the job
// appears whole or not at all. It returns the job's ID, which is name, or,
// for name "", a new unique one that sorts by submission time, such as
// "20250102T150405.123456789Z-5f3a9c01".
//
// Submit fails, leaving nothing behind, with an error wrapping ErrBadName
// if name is not valid (see CheckName), ErrTooLarge if r holds more than
// Options.MaxPayload bytes, fs.ErrExist if a job of that name already waits
// in incoming/ (one of that name that runs is no obstacle: the new one
// waits for it), ErrClosed after Close, or the error of reading r or
// writing the file. Once the job is in place, incoming/ is synced too, so
// that the job survives a power failure once Submit has returned; should
// that sync fail (an I/O error), the job is queued all the same, and
// Submit returns its ID with the error. It is safe to call from any
// goroutine.
func (s *Spool) Submit(name string, r io.Reader) (string, error) {
	if s.closed.Load() {
		return "", ErrClosed
	}
	return submit(s.incoming, name, r, s.maxPayload, s.now)
}

// SubmitDir is Submit for another process than the daemon's, such as a
// command-line client: it writes into DIR/incoming/ without opening the
// spool, and with no limit on the payload's size (the daemon refuses an
// oversized job when its turn comes). It creates DIR/incoming/ (0750) if
// it does not exist yet, so that jobs can be queued before the daemon's
// first start. It is safe while a daemon has the spool open.
func SubmitDir(dir, name string, r io.Reader) (string, error) {
	incoming := filepath.Join(dir, "incoming")
	if err := os.MkdirAll(incoming, 0o750); err != nil {
		return "", fmt.Errorf("submit: %w", err)
	}
	return submit(incoming, name, r, -1, time.Now)
}

func submit(incoming, name string, r io.Reader, limit int64, now func() time.Time) (string, error) {
	if name != "" {
		if err := CheckName(name); err != nil {
			return "", err
		}
	}
	tmp, err := stage(incoming, r, limit)
	if err != nil {
		return "", err
	}
	id, err := place(incoming, tmp, name, now)
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	return id, syncDir(incoming)
}

// stage copies r into a new hidden file in incoming/, synced to disk, and
// returns its path; it leaves nothing behind when it fails.
func stage(incoming string, r io.Reader, limit int64) (_ string, err error) {
	f, err := createTemp(incoming)
	if err != nil {
		return "", fmt.Errorf("submit: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	src := r
	if limit >= 0 {
		src = io.LimitReader(r, limit+1)
	}
	n, err := io.Copy(f, src)
	if err != nil {
		return "", fmt.Errorf("submit: write job: %w", err)
	}
	if limit >= 0 && n > limit {
		return "", fmt.Errorf("submit: %w: more than %d bytes", ErrTooLarge, limit)
	}
	// Sync before the rename: once Submit has returned, the job must
	// survive a power failure whole, not as an empty file.
	if err = f.Sync(); err != nil {
		return "", fmt.Errorf("submit: %w", err)
	}
	if err = f.Close(); err != nil {
		return "", fmt.Errorf("submit: %w", err)
	}
	return tmp, nil
}

// place renames a staged job to name, or to a new unique name for "", and
// returns the name.
func place(incoming, tmp, name string, now func() time.Time) (id string, err error) {
	for range 10 {
		id = name
		if name == "" {
			id = newID(now())
		}
		err = renameNoReplace(tmp, filepath.Join(incoming, id))
		if err == nil || name != "" || !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("submit %q: a job of that name is waiting: %w", id, err)
		}
		return "", fmt.Errorf("submit %q: %w", id, err)
	}
	return id, nil
}

// newID returns a job name that sorts by t and is unique in practice.
func newID(t time.Time) string {
	return fmt.Sprintf("%s-%08x", t.UTC().Format("20060102T150405.000000000Z"), rand.Uint32())
}

// Submission is one job of SubmitAll: its name ("" for a new unique one)
// and its content.
type Submission struct {
	Name string
	Data io.Reader
}

// SubmitAll queues several jobs, all or none: every job is written and
// synced under a hidden temporary name first, and only then are they
// renamed into place, one after the other. If one cannot be written, or
// its name waits in incoming/ already, nothing is queued. A rename that
// fails after others succeeded (a name taken in the meantime) takes the
// renamed ones back out of incoming/ if no daemon has claimed them yet;
// the error then says which were already taken. It returns the jobs' IDs
// in order. Errors are those of Submit.
func (s *Spool) SubmitAll(jobs []Submission) ([]string, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	return submitAll(s.incoming, jobs, s.maxPayload, s.now)
}

// SubmitAllDir is SubmitAll for another process than the daemon's, as
// SubmitDir is Submit's.
func SubmitAllDir(dir string, jobs []Submission) ([]string, error) {
	incoming := filepath.Join(dir, "incoming")
	if err := os.MkdirAll(incoming, 0o750); err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	return submitAll(incoming, jobs, -1, time.Now)
}

func submitAll(incoming string, jobs []Submission, limit int64, now func() time.Time) (ids []string, err error) {
	temps := make([]string, 0, len(jobs))
	defer func() {
		for _, t := range temps {
			os.Remove(t) // those not renamed into place
		}
	}()
	for _, j := range jobs {
		if j.Name != "" {
			if err := CheckName(j.Name); err != nil {
				return nil, err
			}
			if ok, err := exists(incoming, j.Name); err != nil || ok {
				if err == nil {
					err = fmt.Errorf("submit %q: a job of that name is waiting: %w", j.Name, fs.ErrExist)
				}
				return nil, err
			}
		}
		tmp, err := stage(incoming, j.Data, limit)
		if err != nil {
			return nil, err
		}
		temps = append(temps, tmp)
	}
	for i, j := range jobs {
		id, err := place(incoming, temps[i], j.Name, now)
		if err != nil {
			return nil, unplace(incoming, ids, err)
		}
		temps[i] = ""
		ids = append(ids, id)
	}
	return ids, syncDir(incoming)
}

// syncDir makes the renames into incoming/ durable: a job file synced
// before its rename survives a power failure, but the new name may not,
// and a job under its temporary name would be removed as the leftover of
// an interrupted write. One sync covers every rename before it.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("submit: queued, but cannot sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("submit: queued, but cannot sync %s: %w", dir, err)
	}
	return nil
}

// unplace takes the jobs just renamed into incoming/ back out, after a
// later one failed, and returns the error to report.
func unplace(incoming string, ids []string, cause error) error {
	var taken []string
	for _, id := range ids {
		if err := os.Remove(filepath.Join(incoming, id)); err != nil {
			taken = append(taken, id) // claimed by a daemon already
		}
	}
	if len(taken) > 0 {
		return fmt.Errorf("%w; the jobs %q were queued and already taken by the daemon", cause, taken)
	}
	return cause
}
