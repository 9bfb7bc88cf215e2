package spool

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// Files a job writes beside its input in running/ are not jobs: after a
// crash, the input goes back into incoming/, and the outputs go to
// failed/ as not a job, not counted as failed jobs; nothing of them runs.
func TestOutputsBesideInputAreNotJobs(t *testing.T) {
	dir := t.TempDir()
	s := open(t, Options{Dir: dir, MaxAttempts: 3})
	if _, err := s.Submit("in1", strings.NewReader("input")); err != nil {
		t.Fatal(err)
	}
	job := next(t, s)
	// The job writes its outputs beside its input, and the daemon dies.
	writeFile(t, filepath.Join(dir, "running", "in1.out"), "output", time.Time{})
	writeFile(t, filepath.Join(dir, "running", "in1.log"), "log", time.Time{})
	s.Close()

	s = open(t, Options{Dir: dir, MaxAttempts: 3})
	var ran []string
	runAll(t, s, func(j *jobs.Job) {
		ran = append(ran, fmt.Sprintf("%s/%d", j.ID, j.Attempt))
		mustDone(t, s, j, jobs.Result{})
	})
	if !slices.Equal(ran, []string{job.ID + "/2"}) {
		t.Errorf("ran %q after the restart, want the input alone, at attempt 2", ran)
	}
	failed := filepath.Join(dir, "failed")
	for _, out := range []string{"in1.out", "in1.log"} {
		r := readRecord(t, filepath.Join(failed, out+resultSuffix))
		if r.Outcome != "not a job" || !strings.Contains(r.Error, "no claim") || r.File != out {
			t.Errorf("%s: record %+v", out, r)
		}
	}
	if n := s.Failed(); n != 0 {
		t.Errorf("Failed() = %d: outputs counted as failed jobs", n)
	}
	// And again: nothing is left to recover twice.
	s.Close()
	s = open(t, Options{Dir: dir})
	if job := next(t, s); job != nil {
		t.Errorf("a job after the second restart: %+v", job)
	}
}

// A spool that a version without the journal left: everything in
// running/ was claimed, and goes back.
func TestRecoverWithoutJournal(t *testing.T) {
	dir := t.TempDir()
	s := open(t, Options{Dir: dir})
	s.Close()
	if err := os.Remove(filepath.Join(dir, journalName)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "running", "old"), "x", time.Time{})
	s = open(t, Options{Dir: dir})
	if job := next(t, s); job == nil || job.ID != "old" || job.Attempt != 2 {
		t.Errorf("job left by an older version: %+v", job)
	}
}

// The journal holds the claims that run, not every claim since Open.
func TestJournalStaysSmall(t *testing.T) {
	dir := t.TempDir()
	s := open(t, Options{Dir: dir, Logger: discard()})
	in := filepath.Join(dir, "incoming")
	const n = journalCompact + 500
	for i := range n {
		writeFile(t, filepath.Join(in, fmt.Sprintf("j%05d", i)), "", time.Time{})
	}
	held := next(t, s) // runs throughout
	runAll(t, s, func(j *jobs.Job) { mustDone(t, s, j, jobs.Result{}) })
	b, err := os.ReadFile(filepath.Join(dir, journalName))
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Count(b, []byte("\n"))
	if lines > journalCompact+1 {
		t.Errorf("the journal holds %d lines after %d claims", lines, n)
	}
	// The job that still runs survives a crash as a job.
	s.Close()
	s = open(t, Options{Dir: dir, Logger: discard()})
	if job := next(t, s); job == nil || job.ID != held.ID {
		t.Errorf("after a crash: %+v, want %s back", job, held.ID)
	}
}

// A job that removes its own file is recorded as it ended, with a record
// and no job file: in done/ after a success, in failed/ after a failure
// (it cannot be retried without its input).
func TestJobRemovesItsInput(t *testing.T) {
	for _, tc := range []struct {
		res     jobs.Result
		dest    string
		verdict jobs.Verdict
	}{
		{jobs.Result{}, "done", jobs.Completed},
		{jobs.Result{ExitCode: 3}, "failed", jobs.Failed},
		{jobs.Result{Signal: syscall.SIGTERM, ExitCode: -1, Interrupted: true}, "failed", jobs.Failed},
	} {
		t.Run(tc.res.String(), func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, Options{Dir: dir, MaxAttempts: 3})
			if _, err := s.Submit("j", strings.NewReader("input")); err != nil {
				t.Fatal(err)
			}
			job := next(t, s)
			if err := os.Remove(s.Path(job)); err != nil {
				t.Fatal(err)
			}
			if v := mustDone(t, s, job, tc.res); v != tc.verdict {
				t.Errorf("verdict %v, want %v", v, tc.verdict)
			}
			r := readRecord(t, filepath.Join(dir, tc.dest, "j"+resultSuffix))
			if r.File != "" || r.ID != "j" || !strings.Contains(r.Error, "removed") || r.Outcome != tc.res.String() {
				t.Errorf("record %+v", r)
			}
			if names := ls(t, filepath.Join(dir, tc.dest)); !slices.Equal(names, []string{"j" + resultSuffix}) {
				t.Errorf("%s/ holds %q", tc.dest, names)
			}
			if job := next(t, s); job != nil {
				t.Errorf("a job without its input ran again: %+v", job)
			}
		})
	}
}

// A job that replaces its own file: its record is filed alone, and the
// replacement goes to failed/ as not a job.
func TestJobReplacesItsInput(t *testing.T) {
	dir := t.TempDir()
	s := open(t, Options{Dir: dir})
	if _, err := s.Submit("j", strings.NewReader("input")); err != nil {
		t.Fatal(err)
	}
	job := next(t, s)
	tmp := filepath.Join(dir, "running", "j.tmp")
	writeFile(t, tmp, "output", time.Time{})
	if err := os.Rename(tmp, s.Path(job)); err != nil {
		t.Fatal(err)
	}
	if v := mustDone(t, s, job, jobs.Result{}); v != jobs.Completed {
		t.Errorf("verdict %v", v)
	}
	if r := readRecord(t, filepath.Join(dir, "done", "j"+resultSuffix)); r.File != "" || !strings.Contains(r.Error, "replaced") {
		t.Errorf("job's record %+v", r)
	}
	if r := readRecord(t, filepath.Join(dir, "failed", "j"+resultSuffix)); r.Outcome != "not a job" || r.File != "j" {
		t.Errorf("replacement's record %+v", r)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "failed", "j")); err != nil || string(b) != "output" {
		t.Errorf("failed/j: %q, %v", b, err)
	}
	if names := ls(t, filepath.Join(dir, "running")); len(names) != 0 {
		t.Errorf("running/ holds %q", names)
	}
}

// Open gives the claimed file itself, and refuses, at once, what took
// its place: a FIFO would block a plain open for reading for ever.
func TestOpenJobFile(t *testing.T) {
	dir := t.TempDir()
	s := open(t, Options{Dir: dir})
	if _, err := s.Submit("j", strings.NewReader("payload")); err != nil {
		t.Fatal(err)
	}
	job := next(t, s)
	f, err := s.Open(job)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil || string(b) != "payload" {
		t.Fatalf("read %q, %v", b, err)
	}
	if err := os.Remove(s.Path(job)); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(s.Path(job), 0o640); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		f, err := s.Open(job)
		if err == nil {
			f.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("Open of a FIFO: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Open of a FIFO blocks")
	}
	if _, err := s.Open(&jobs.Job{ID: "other"}); err == nil {
		t.Error("Open of a job that is not running succeeded")
	}
	if _, err := s.NextJob(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
