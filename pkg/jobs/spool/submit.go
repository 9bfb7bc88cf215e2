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
// writing the file. It is safe to call from any goroutine.
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

func submit(incoming, name string, r io.Reader, limit int64, now func() time.Time) (id string, err error) {
	if name != "" {
		if err := CheckName(name); err != nil {
			return "", err
		}
	}
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
