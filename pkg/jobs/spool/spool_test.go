package spool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 1, 2, 15, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func open(t testing.TB, opts Options) *Spool {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func writeFile(t testing.TB, path, content string, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

func next(t testing.TB, s *Spool) *jobs.Job {
	t.Helper()
	job, err := s.NextJob(context.Background(), 0)
	if err != nil {
		t.Fatalf("NextJob: %v", err)
	}
	return job
}

func mustDone(t testing.TB, s *Spool, job *jobs.Job, res jobs.Result) jobs.Verdict {
	t.Helper()
	v, err := s.Finish(context.Background(), job, res)
	if err != nil {
		t.Fatalf("Finish(%s): %v", job.ID, err)
	}
	return v
}

func readRecord(t *testing.T, path string) Record {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, b)
	}
	return r
}

// ls returns the names in dir, sorted.
func ls(t *testing.T, dir string) []string {
	t.Helper()
	names, err := readNames(dir)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

func waitWake(t *testing.T, s *Spool, within time.Duration) {
	t.Helper()
	select {
	case <-s.Wake():
	case <-time.After(within):
		t.Fatalf("no wake-up within %v", within)
	}
}

func drainWake(s *Spool) {
	for {
		select {
		case <-s.Wake():
		default:
			return
		}
	}
}

// runAll runs f for each job until none has come for 200 ms, waiting for
// wake-ups in between, as the dispatcher does.
// runAllSeen runs every job of s to success, and returns each as
// "ID=content/attempt", in the order they ran.
func runAllSeen(t *testing.T, s *Spool) []string {
	t.Helper()
	var got []string
	runAll(t, s, func(j *jobs.Job) {
		b, _ := os.ReadFile(s.Path(j))
		got = append(got, fmt.Sprintf("%s=%s/%d", j.ID, b, j.Attempt))
		mustDone(t, s, j, jobs.Result{})
	})
	return got
}

func runAll(t *testing.T, s *Spool, f func(*jobs.Job)) {
	t.Helper()
	for {
		if job := next(t, s); job != nil {
			f(job)
			continue
		}
		select {
		case <-s.Wake():
		case <-time.After(200 * time.Millisecond):
			return
		}
	}
}

func TestOpenCreatesLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s := open(t, Options{Dir: dir})
	for _, sub := range []string{"incoming", "running", "done", "failed"} {
		fi, err := os.Lstat(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode().Perm()&^0o750 != 0 {
			t.Errorf("%s: mode %v, want a directory of at most 0750", sub, fi.Mode())
		}
	}
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrLocked) {
		t.Errorf("second Open: %v, want ErrLocked", err)
	}
	s.Close()
	s2, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
	if _, err := s2.NextJob(context.Background(), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("NextJob after Close: %v", err)
	}
}

func TestOpenRefusesUnsafeDirs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setUp func(dir string) error
		ok    bool
	}{
		{"world-writable running", func(dir string) error {
			os.Mkdir(filepath.Join(dir, "running"), 0o750)
			return os.Chmod(filepath.Join(dir, "running"), 0o777)
		}, false},
		{"world-writable root", func(dir string) error { return os.Chmod(dir, 0o777) }, false},
		{"symlinked done", func(dir string) error {
			return os.Symlink(os.TempDir(), filepath.Join(dir, "done"))
		}, false},
		{"failed is a file", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "failed"), nil, 0o640)
		}, false},
		{"sticky world-writable incoming", func(dir string) error {
			os.Mkdir(filepath.Join(dir, "incoming"), 0o750)
			return os.Chmod(filepath.Join(dir, "incoming"), 0o777|fs.ModeSticky)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := tc.setUp(dir); err != nil {
				t.Fatal(err)
			}
			s, err := Open(Options{Dir: dir})
			if (err == nil) != tc.ok {
				t.Fatalf("Open: %v, want ok=%v", err, tc.ok)
			}
			if err == nil {
				s.Close()
			} else {
				t.Log(err)
			}
		})
	}
}

func TestClaimOrder(t *testing.T) {
	s := open(t, Options{})
	in := filepath.Join(s.Dir(), "incoming")
	base := time.Now().Add(-time.Hour)
	writeFile(t, filepath.Join(in, "c"), "c", base.Add(2*time.Second))
	writeFile(t, filepath.Join(in, "a"), "a", base.Add(2*time.Second))
	writeFile(t, filepath.Join(in, "b"), "b", base.Add(time.Second))
	writeFile(t, filepath.Join(in, "z"), "z", base)
	writeFile(t, filepath.Join(in, ".hidden"), "h", base.Add(-time.Hour))
	var got []string
	for {
		job := next(t, s)
		if job == nil {
			break
		}
		got = append(got, job.ID)
		if job.Attempt != 1 || job.Payload != nil || job.Meta["name"] != job.ID ||
			job.Meta["path"] != filepath.Join(s.Dir(), "running", job.ID) || s.Path(job) != job.Meta["path"] {
			t.Errorf("job %+v", job)
		}
		if b, err := os.ReadFile(s.Path(job)); err != nil || string(b) != job.ID {
			t.Errorf("job file %s: %q, %v", s.Path(job), b, err)
		}
	}
	if want := []string{"z", "b", "a", "c"}; !slices.Equal(got, want) {
		t.Errorf("claim order %q, want %q", got, want)
	}
	if names := ls(t, in); !slices.Equal(names, []string{".hidden"}) {
		t.Errorf("incoming/ holds %q", names)
	}
}

func TestRecoverRunning(t *testing.T) {
	dir := t.TempDir()
	running := filepath.Join(dir, "running")
	if err := os.MkdirAll(running, 0o750); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	writeFile(t, filepath.Join(running, "first"), "1", old)
	writeFile(t, filepath.Join(running, "third"), "3", old.Add(time.Second))
	fi, err := os.Lstat(filepath.Join(running, "third"))
	if err != nil {
		t.Fatal(err)
	}
	if err := writeMeta(running, "third", meta{Attempt: 2, Inode: inode(fi)}); err != nil {
		t.Fatal(err)
	}
	// An orphaned sidecar, and one whose inode is another file's.
	if err := writeMeta(running, "gone", meta{Attempt: 5, Inode: 1}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(running, "stale"), "s", old.Add(2*time.Second))
	if err := writeMeta(running, "stale", meta{Attempt: 7, Inode: 1}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(running, tmpPrefix+"x"), "partial record", time.Time{})

	s := open(t, Options{Dir: dir, MaxAttempts: 3})
	if names := ls(t, running); len(names) != 0 {
		t.Errorf("running/ after Open: %q", names)
	}
	want := map[string]int{"first": 2, "third": 3, "stale": 2}
	for range want {
		job := next(t, s)
		if job == nil {
			t.Fatal("a recovered job is missing")
		}
		if job.Attempt != want[job.ID] {
			t.Errorf("%s: attempt %d, want %d", job.ID, job.Attempt, want[job.ID])
		}
		if b, _ := os.ReadFile(s.Path(job)); len(b) != 1 {
			t.Errorf("%s: content %q", job.ID, b)
		}
	}
	if job := next(t, s); job != nil {
		t.Errorf("extra job %s", job.ID)
	}
	if names := ls(t, filepath.Join(dir, "incoming")); len(names) != 0 {
		t.Errorf("incoming/ holds %q", names)
	}
	if names := ls(t, running); !slices.Equal(names, []string{".first.meta.json", ".stale.meta.json", ".third.meta.json", "first", "stale", "third"}) {
		t.Errorf("running/ holds %q", names)
	}
}

func TestSuccess(t *testing.T) {
	clk := newClock()
	s := open(t, Options{Now: clk.Now})
	if _, err := s.Submit("report.csv", strings.NewReader("a,b\n")); err != nil {
		t.Fatal(err)
	}
	job := next(t, s)
	if job == nil || job.ID != "report.csv" {
		t.Fatalf("job %+v", job)
	}
	out := strings.Repeat("x", 5000) + "\nsecond to last\nlast line\n"
	mustDone(t, s, job, jobs.Result{
		Duration: 1500 * time.Millisecond, UserCPU: time.Second, SysCPU: 250 * time.Millisecond,
		MaxRSS: 1 << 20, Usage: jobs.UsageWorker, Output: []byte(out),
	})
	done := filepath.Join(s.Dir(), "done")
	if names := ls(t, done); !slices.Equal(names, []string{"report.csv", "report.csv.result.json"}) {
		t.Fatalf("done/ holds %q", names)
	}
	if names := ls(t, filepath.Join(s.Dir(), "running")); len(names) != 0 {
		t.Errorf("running/ holds %q", names)
	}
	r := readRecord(t, filepath.Join(done, "report.csv.result.json"))
	want := Record{
		ID: "report.csv", File: "report.csv", Attempts: 1, RunRecord: jobs.RunRecord{Outcome: "ok",
			Duration: 1.5, UserCPU: 1, SysCPU: 0.25, MaxRSS: 1 << 20, UsageOf: "worker",
			OutputTail: "second to last\nlast line\n", OutputTruncated: true},
	}
	if !r.FinishedAt.Equal(clk.Now()) {
		t.Errorf("finished_at %v, want %v", r.FinishedAt, clk.Now())
	}
	r.FinishedAt = time.Time{}
	if r != want {
		t.Errorf("record\n got %+v\nwant %+v", r, want)
	}
	if err := s.Done(context.Background(), job, jobs.Result{}); err == nil {
		t.Error("a second Done succeeded")
	}
	if fi, err := os.Stat(filepath.Join(done, "report.csv.result.json")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("record mode %v, %v", fi.Mode(), err)
	}
}

func TestRetryThenFail(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	opts := Options{Dir: dir, MaxAttempts: 3, Backoff: time.Minute, Now: clk.Now}
	s := open(t, opts)
	if _, err := s.Submit("job", strings.NewReader("payload")); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "incoming")
	fail := jobs.Result{ExitCode: 3, Output: []byte("boom\n")}
	for attempt := 1; attempt <= 3; attempt++ {
		job := next(t, s)
		if job == nil || job.ID != "job" || job.Attempt != attempt {
			t.Fatalf("attempt %d: job %+v", attempt, job)
		}
		v := mustDone(t, s, job, fail)
		if attempt == 3 {
			if v != jobs.Failed {
				t.Errorf("verdict of the last attempt: %v, want failed", v)
			}
			break
		}
		if v != jobs.Retrying {
			t.Errorf("verdict of attempt %d: %v, want retrying", attempt, v)
		}
		if names := ls(t, in); !slices.Equal(names, []string{".job.meta.json", "job"}) {
			t.Fatalf("incoming/ holds %q", names)
		}
		m, err := decodeMeta(filepath.Join(in, ".job.meta.json"))
		if err != nil {
			t.Fatal(err)
		}
		// Backoff 1 min, doubling, ±20%.
		base := time.Minute << (attempt - 1)
		wait := m.NotBefore.Sub(clk.Now())
		if m.Attempt != attempt+1 || wait < base*8/10 || wait > base*12/10 || m.LastResult != "exit 3" {
			t.Fatalf("sidecar %+v (wait %v)", m, wait)
		}
		if job := next(t, s); job != nil {
			t.Fatalf("retry claimed %v early", wait)
		}
		// The not-before time survives a restart.
		s.Close()
		s = open(t, opts)
		clk.Add(wait - time.Second)
		if job := next(t, s); job != nil {
			t.Fatal("retry claimed a second early after a restart")
		}
		clk.Add(time.Second)
	}
	if names := ls(t, in); len(names) != 0 {
		t.Errorf("incoming/ holds %q", names)
	}
	failed := filepath.Join(dir, "failed")
	if names := ls(t, failed); !slices.Equal(names, []string{"job", "job.result.json"}) {
		t.Fatalf("failed/ holds %q", names)
	}
	if b, _ := os.ReadFile(filepath.Join(failed, "job")); string(b) != "payload" {
		t.Errorf("payload %q", b)
	}
	if s.Failed() != 1 {
		t.Errorf("Failed() = %d after the last attempt, want 1", s.Failed())
	}
	r := readRecord(t, filepath.Join(failed, "job.result.json"))
	if r.Attempts != 3 || r.ExitCode != 3 || r.Outcome != "exit 3" || r.OutputTail != "boom\n" || r.OutputTruncated {
		t.Errorf("record %+v", r)
	}
}

// A job the daemon interrupted (a graceful stop), or could not start, goes
// back at once, and the attempt does not count: even a job on its last
// attempt is run again.
func TestInterruptedDoesNotCount(t *testing.T) {
	s := open(t, Options{MaxAttempts: 1, Backoff: time.Hour})
	if _, err := s.Submit("j", strings.NewReader("")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		job := next(t, s)
		if job == nil || job.Attempt != 1 {
			t.Fatalf("run %d after interruptions: %+v", i+1, job)
		}
		res := jobs.Result{ExitCode: -1, Signal: syscall.SIGTERM, Interrupted: true}
		if i%2 == 1 {
			res = jobs.Result{ExitCode: -1, Error: "fork/exec /x: too many open files", NotStarted: true}
		}
		if v := mustDone(t, s, job, res); v != jobs.Requeued {
			t.Errorf("verdict of %v: %v, want requeued", res, v)
		}
	}
	if names := ls(t, filepath.Join(s.Dir(), "failed")); len(names) != 0 {
		t.Errorf("an interrupted job was filed as failed: %q", names)
	}
	job := next(t, s)
	mustDone(t, s, job, jobs.Result{ExitCode: 2})
	r := readRecord(t, filepath.Join(s.Dir(), "failed", "j.result.json"))
	if r.Attempts != 1 || r.ExitCode != 2 {
		t.Errorf("record %+v", r)
	}
}

// An interrupted job goes back as it was: a first attempt as a plain
// file, with no sidecar (a stop puts back every running job, and a
// sidecar would cost a new file each for nothing), a later one with the
// sidecar that keeps its attempt. Neither replaces a file waiting under
// its name.
func TestInterruptedKeepsItsState(t *testing.T) {
	clk := newClock()
	s := open(t, Options{Now: clk.Now, MaxAttempts: 3})
	in := filepath.Join(s.Dir(), "incoming")
	for _, name := range []string{"first", "second"} {
		if _, err := s.Submit(name, strings.NewReader(name)); err != nil {
			t.Fatal(err)
		}
	}
	interrupted := jobs.Result{ExitCode: -1, Signal: syscall.SIGTERM, Interrupted: true}
	// "second" fails once (retried at once: no backoff), "first" is claimed.
	jobsByID := map[string]*jobs.Job{}
	for range 2 {
		j := next(t, s)
		jobsByID[j.ID] = j
	}
	mustDone(t, s, jobsByID["second"], jobs.Result{ExitCode: 1})
	second := next(t, s)
	if second == nil || second.ID != "second" || second.Attempt != 2 {
		t.Fatalf("the retry of second: %+v", second)
	}
	// A new "first" lands while the first one runs.
	writeFile(t, filepath.Join(in, "first"), "newer", time.Now().Add(time.Hour))
	for _, j := range []*jobs.Job{jobsByID["first"], second} {
		if v := mustDone(t, s, j, interrupted); v != jobs.Requeued {
			t.Errorf("verdict of interrupted %s: %v, want requeued", j.ID, v)
		}
	}
	stamp := "first~20250102T150405Z"
	want := []string{".second.meta.json", "first", stamp, "second"}
	if names := ls(t, in); !slices.Equal(names, want) {
		t.Fatalf("incoming/ holds %q, want %q", names, want)
	}
	if b, err := os.ReadFile(filepath.Join(in, "first")); err != nil || string(b) != "newer" {
		t.Errorf("the waiting first holds %q, %v", b, err)
	}
	if names := ls(t, filepath.Join(s.Dir(), "running")); len(names) != 0 {
		t.Errorf("running/ still holds %q", names)
	}
	got := runAllSeen(t, s)
	slices.Sort(got)
	if want := []string{"first=newer/1", stamp + "=first/1", "second=second/2"}; !slices.Equal(got, want) {
		t.Errorf("ran %q, want %q", got, want)
	}
}

func TestRetryAtOnceAndSignal(t *testing.T) {
	s := open(t, Options{MaxAttempts: 2})
	if _, err := s.Submit("j", strings.NewReader("")); err != nil {
		t.Fatal(err)
	}
	job := next(t, s)
	mustDone(t, s, job, jobs.Result{TimedOut: true, ExitCode: -1, Signal: syscall.SIGKILL})
	job = next(t, s)
	if job == nil || job.Attempt != 2 {
		t.Fatalf("with Backoff 0 the retry is due at once: %+v", job)
	}
	mustDone(t, s, job, jobs.Result{ExitCode: -1, Signal: syscall.SIGKILL})
	r := readRecord(t, filepath.Join(s.Dir(), "failed", "j.result.json"))
	if r.Signal != "SIGKILL" || r.Attempts != 2 || r.ExitCode != -1 {
		t.Errorf("record %+v", r)
	}
}

func TestRefused(t *testing.T) {
	s := open(t, Options{MaxPayload: 10})
	dir := s.Dir()
	in := filepath.Join(dir, "incoming")
	target := filepath.Join(t.TempDir(), "secret")
	writeFile(t, target, "do not touch", time.Time{})
	if err := os.Symlink(target, filepath.Join(in, "link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(in, "fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(in, "subdir"), 0o750); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("n", 250)
	writeFile(t, filepath.Join(in, "big"), "0123456789A", time.Time{})
	for _, name := range []string{"bad\nname", "inv\xffalid", "bidi\u202ename", long} {
		writeFile(t, filepath.Join(in, name), "x", time.Time{})
	}
	writeFile(t, filepath.Join(in, "fine"), "small", time.Time{})

	var got []string
	for {
		job := next(t, s)
		if job == nil {
			break
		}
		got = append(got, job.ID)
		mustDone(t, s, job, jobs.Result{})
	}
	if !slices.Equal(got, []string{"fine"}) {
		t.Errorf("ran %q, want only fine", got)
	}
	if s.Failed() != 8 {
		t.Errorf("Failed() = %d, want the 8 refused jobs", s.Failed())
	}
	want := map[string]string{
		"link":           "symbolic link",
		"fifo":           "FIFO",
		"subdir":         "directory",
		"big":            "larger than the limit of 10 bytes",
		"bad\nname":      "control characters",
		"inv\xffalid":    "not valid UTF-8",
		"bidi\u202ename": "control characters",
		long:             "longer than 243 bytes",
	}
	failed := filepath.Join(dir, "failed")
	for name, why := range want {
		file := altName(safeName(name), 0, time.Time{})
		r := readRecord(t, filepath.Join(failed, file+resultSuffix))
		if !strings.Contains(r.Error, why) || r.Outcome != "refused" || r.Attempts != 0 || r.File != file {
			t.Errorf("%q: record %+v, want error about %q", name, r, why)
		}
		if _, err := os.Lstat(filepath.Join(failed, file)); err != nil {
			t.Errorf("%q not in failed/: %v", name, err)
		}
	}
	if fi, err := os.Lstat(filepath.Join(failed, "link")); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("failed/link is not the link itself: %v %v", fi, err)
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "do not touch" {
		t.Errorf("symlink target: %q, %v", b, err)
	}
	if len(altName(long, 0, time.Time{})) != maxNameLen {
		t.Error("long name not cut")
	}
	if names := ls(t, failed); !slices.Contains(names, "bad_name") || !slices.Contains(names, "bidi_name.result.json") {
		t.Errorf("bad names not made safe in failed/: %q", names)
	}
	for _, sub := range []string{"incoming", "running"} {
		if names := ls(t, filepath.Join(dir, sub)); len(names) != 0 {
			t.Errorf("%s/ holds %q", sub, names)
		}
	}
}

func TestVanishedBeforeClaim(t *testing.T) {
	s := open(t, Options{})
	in := filepath.Join(s.Dir(), "incoming")
	old := time.Now().Add(-time.Minute)
	writeFile(t, filepath.Join(in, "a"), "a", old)
	writeFile(t, filepath.Join(in, "b"), "b", old.Add(time.Second))
	writeFile(t, filepath.Join(in, "c"), "c", old.Add(2*time.Second))
	// The queue holds a, b and c: remove b between listing and claim.
	s.beforeClaim = func(name string) {
		if name == "b" {
			if err := os.Remove(filepath.Join(in, "b")); err != nil {
				t.Error(err)
			}
		}
	}
	var got []string
	for job := next(t, s); job != nil; job = next(t, s) {
		got = append(got, job.ID)
	}
	if !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("claimed %q", got)
	}
}

// blockingReader returns part, then blocks until release is closed.
type blockingReader struct {
	part    io.Reader
	reached chan struct{}
	release chan struct{}
	once    sync.Once
}

func (r *blockingReader) Read(p []byte) (int, error) {
	if n, err := r.part.Read(p); err != io.EOF {
		return n, err
	}
	r.once.Do(func() {
		close(r.reached)
		<-r.release
	})
	return 0, io.EOF
}

func TestSubmit(t *testing.T) {
	s := open(t, Options{MaxPayload: 100})
	in := filepath.Join(s.Dir(), "incoming")

	// While Submit is writing, the job is not visible.
	r := &blockingReader{part: strings.NewReader("half"), reached: make(chan struct{}), release: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		_, err := s.Submit("slow", r)
		errc <- err
	}()
	<-r.reached
	if job := next(t, s); job != nil {
		t.Fatalf("a partial job was claimed: %+v", job)
	}
	if n, err := s.Depth(); n != 0 || err != nil {
		t.Errorf("Depth = %d, %v during a Submit", n, err)
	}
	if names := ls(t, in); len(names) != 1 || !strings.HasPrefix(names[0], tmpPrefix) {
		t.Errorf("incoming/ holds %q during a Submit", names)
	}
	close(r.release)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n, err := s.Depth(); n != 1 || err != nil {
		t.Errorf("Depth = %d, %v", n, err)
	}
	if fi, err := os.Stat(filepath.Join(in, "slow")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("submitted file: %v, %v", fi, err)
	}

	id1, err1 := s.Submit("", strings.NewReader("x"))
	id2, err2 := s.Submit("", strings.NewReader("y"))
	if err1 != nil || err2 != nil || id1 == id2 || CheckName(id1) != nil {
		t.Errorf("generated ids %q %q: %v %v", id1, id2, err1, err2)
	}

	for _, name := range []string{".", "..", ".hidden", "a/b", "../x", "x\n", "x\x00y", "\xff", "a\u2066b", strings.Repeat("x", 244)} {
		if _, err := s.Submit(name, strings.NewReader("x")); !errors.Is(err, ErrBadName) {
			t.Errorf("Submit(%q): %v, want ErrBadName", name, err)
		}
	}
	if _, err := s.Submit("slow", strings.NewReader("again")); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Submit of a waiting name: %v, want fs.ErrExist", err)
	}
	if _, err := s.Submit("huge", strings.NewReader(strings.Repeat("x", 101))); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized Submit: %v", err)
	}
	if _, err := s.Submit("fail", iotestErrReader{}); err == nil {
		t.Error("Submit with a failing reader succeeded")
	}
	if _, err := SubmitDir(s.Dir(), "other-process", strings.NewReader("z")); err != nil {
		t.Error(err)
	}
	if names := ls(t, in); !slices.Equal(names, slices.Sorted(slices.Values([]string{"slow", id1, id2, "other-process"}))) {
		t.Errorf("incoming/ holds %q; leftovers?", names)
	}
	if b, _ := os.ReadFile(filepath.Join(in, "slow")); string(b) != "half" {
		t.Errorf("slow holds %q", b)
	}
}

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errors.New("read failed") }

func TestWake(t *testing.T) {
	s := open(t, Options{RescanInterval: time.Hour})
	in := filepath.Join(s.Dir(), "incoming")
	if s.watch == nil {
		t.Skip("inotify unavailable")
	}
	next(t, s) // the first listing
	drainWake(s)

	// A hidden file does not wake.
	writeFile(t, filepath.Join(in, ".tmp"), "x", time.Time{})
	select {
	case <-s.Wake():
		t.Error("woken by a hidden file")
	case <-time.After(100 * time.Millisecond):
	}

	// Another writer renames a file in.
	other := filepath.Join(t.TempDir(), "moved")
	writeFile(t, other, "m", time.Time{})
	if err := os.Rename(other, filepath.Join(in, "moved")); err != nil {
		t.Fatal(err)
	}
	waitWake(t, s, 5*time.Second)
	if job := next(t, s); job == nil || job.ID != "moved" {
		t.Fatalf("after wake-up: %+v", job)
	}
	drainWake(s)

	// And one writes a file in place.
	writeFile(t, filepath.Join(in, "written"), "w", time.Time{})
	waitWake(t, s, 5*time.Second)
	if job := next(t, s); job == nil || job.ID != "written" {
		t.Fatalf("after wake-up: %+v", job)
	}

	// While inotify watches, the dispatcher need not poll (jobs.Watcher);
	// once the watch is lost, with incoming/ itself, it must.
	if !s.Watching() {
		t.Error("Watching() = false while inotify watches incoming/")
	}
	if err := os.RemoveAll(in); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); s.Watching(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Watching() = true after incoming/ was removed")
		}
	}
}

func TestRescanWakes(t *testing.T) {
	s := open(t, Options{RescanInterval: 20 * time.Millisecond})
	next(t, s)
	drainWake(s)
	waitWake(t, s, 5*time.Second)
}

func TestDeferredJobWakes(t *testing.T) {
	s := open(t, Options{MaxAttempts: 2, Backoff: 50 * time.Millisecond, RescanInterval: time.Hour})
	if _, err := s.Submit("j", strings.NewReader("")); err != nil {
		t.Fatal(err)
	}
	job := next(t, s)
	start := time.Now()
	mustDone(t, s, job, jobs.Result{ExitCode: 1})
	for job = next(t, s); job == nil; job = next(t, s) {
		// The rename into incoming/ wakes too: wait for the timer's.
		waitWake(t, s, 5*time.Second)
	}
	if job.Attempt != 2 || time.Since(start) < 40*time.Millisecond {
		t.Fatalf("retry %+v after %v", job, time.Since(start))
	}
}

// TestClaimFailureKeepsJob makes the claiming rename fail. Tests run as
// root, for whom a read-only running/ is no obstacle, so running/ is
// replaced by a file: rename then fails with ENOTDIR.
func TestClaimFailureKeepsJob(t *testing.T) {
	clk := newClock()
	s := open(t, Options{Now: clk.Now})
	in, running := filepath.Join(s.Dir(), "incoming"), filepath.Join(s.Dir(), "running")
	if _, err := s.Submit("j", strings.NewReader("data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(running); err != nil {
		t.Fatal(err)
	}
	writeFile(t, running, "not a directory", time.Time{})
	job, err := s.NextJob(context.Background(), 0)
	if job != nil || !errors.Is(err, syscall.ENOTDIR) {
		t.Fatalf("NextJob = %v, %v; want ENOTDIR", job, err)
	}
	if names := ls(t, in); !slices.Equal(names, []string{"j"}) {
		t.Fatalf("incoming/ holds %q", names)
	}
	// No busy loop: the broken file waits out its backoff.
	if job, err := s.NextJob(context.Background(), 0); job != nil || err != nil {
		t.Fatalf("second NextJob = %v, %v; want nil, nil", job, err)
	}
	if err := os.Remove(running); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(running, 0o750); err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Second)
	if job := next(t, s); job == nil || job.ID != "j" || job.Attempt != 1 {
		t.Fatalf("after the repair: %+v", job)
	}
}

// TestFilingFailureKeepsJob makes the move into done/ fail: the job stays
// in running/ and is filed by a later NextJob.
func TestFilingFailureKeepsJob(t *testing.T) {
	clk := newClock()
	s := open(t, Options{Now: clk.Now})
	done := filepath.Join(s.Dir(), "done")
	if _, err := s.Submit("j", strings.NewReader("data")); err != nil {
		t.Fatal(err)
	}
	job := next(t, s)
	os.Remove(done)
	writeFile(t, done, "not a directory", time.Time{})
	if err := s.Done(context.Background(), job, jobs.Result{}); err == nil {
		t.Fatal("Done succeeded without done/")
	}
	if _, err := os.Stat(s.Path(job)); err != nil {
		t.Fatalf("job left running/: %v", err)
	}
	// done/ is back, but the filing waits out its backoff.
	os.Remove(done)
	if err := os.Mkdir(done, 0o750); err != nil {
		t.Fatal(err)
	}
	if job := next(t, s); job != nil {
		t.Fatalf("unexpected job %+v", job)
	}
	if names := ls(t, done); len(names) != 0 {
		t.Fatalf("filed again before its backoff: done/ holds %q", names)
	}
	clk.Add(2 * time.Second)
	if job := next(t, s); job != nil {
		t.Fatalf("unexpected job %+v", job)
	}
	if names := ls(t, done); !slices.Equal(names, []string{"j", "j.result.json"}) {
		t.Errorf("done/ holds %q", names)
	}
}

func TestNameClashes(t *testing.T) {
	clk := newClock()
	s := open(t, Options{Now: clk.Now, MaxAttempts: 2})
	in, done := filepath.Join(s.Dir(), "incoming"), filepath.Join(s.Dir(), "done")
	submit := func(name, content string) {
		t.Helper()
		if _, err := s.Submit(name, strings.NewReader(content)); err != nil {
			t.Fatal(err)
		}
	}
	// Yesterday's report.csv is in done/ already.
	submit("report.csv", "1")
	mustDone(t, s, next(t, s), jobs.Result{})
	// Today's runs while tomorrow's arrives: tomorrow's waits.
	submit("report.csv", "2")
	job := next(t, s)
	submit("report.csv", "3")
	later := time.Now().Add(time.Hour) // so that it runs after today's retry
	if err := os.Chtimes(filepath.Join(in, "report.csv"), later, later); err != nil {
		t.Fatal(err)
	}
	if j := next(t, s); j != nil {
		t.Fatalf("a second report.csv runs: %+v", j)
	}
	// Today's fails and goes back to incoming/, where the name is taken.
	mustDone(t, s, job, jobs.Result{ExitCode: 1})
	stamp := "report~20250102T150405Z.csv"
	if names := ls(t, in); !slices.Equal(names, []string{"." + stamp + ".meta.json", "report.csv", stamp}) {
		t.Fatalf("incoming/ holds %q", names)
	}
	got := runAllSeen(t, s)
	if want := []string{stamp + "=2/2", "report.csv=3/1"}; !slices.Equal(got, want) {
		t.Errorf("ran %q, want %q", got, want)
	}
	want := []string{"report.csv", "report.csv.result.json", stamp, stamp + ".result.json",
		"report~20250102T150405Z-2.csv", "report~20250102T150405Z-2.csv.result.json"}
	slices.Sort(want)
	if names := ls(t, done); !slices.Equal(names, want) {
		t.Errorf("done/ holds %q, want %q", names, want)
	}
	r := readRecord(t, filepath.Join(done, "report~20250102T150405Z-2.csv.result.json"))
	if r.ID != "report.csv" || r.File != "report~20250102T150405Z-2.csv" {
		t.Errorf("record %+v", r)
	}
}

// TestThousand claims and files 1000 jobs while other goroutines submit
// them, waiting for wake-ups when nothing is ready, as the dispatcher does.
func TestThousand(t *testing.T) {
	const n = 1000
	s := open(t, Options{Logger: slog.New(slog.DiscardHandler)})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				if _, err := s.Submit(fmt.Sprintf("job-%04d", i), strings.NewReader(fmt.Sprint(i))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	seen := map[string]bool{}
	deadline := time.After(60 * time.Second)
	for len(seen) < n {
		job := next(t, s)
		if job == nil {
			select {
			case <-s.Wake():
			case <-time.After(50 * time.Millisecond):
			case <-deadline:
				t.Fatalf("only %d jobs after 60 s", len(seen))
			}
			continue
		}
		if seen[job.ID] {
			t.Fatalf("%s claimed twice", job.ID)
		}
		seen[job.ID] = true
		mustDone(t, s, job, jobs.Result{})
	}
	wg.Wait()
	if job := next(t, s); job != nil {
		t.Errorf("extra job %s", job.ID)
	}
	names := ls(t, filepath.Join(s.Dir(), "done"))
	if len(names) != 2*n {
		t.Fatalf("done/ holds %d files, want %d", len(names), 2*n)
	}
	for i := range n {
		name := fmt.Sprintf("job-%04d", i)
		if _, ok := slices.BinarySearch(names, name); !ok {
			t.Errorf("%s missing from done/", name)
		}
	}
	for _, sub := range []string{"incoming", "running"} {
		if names := ls(t, filepath.Join(s.Dir(), sub)); len(names) != 0 {
			t.Errorf("%s/ holds %q", sub, names)
		}
	}
}

func TestAltName(t *testing.T) {
	stamp := time.Date(2025, 1, 2, 15, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name string
		n    int
		want string
	}{
		{"a.txt", 0, "a.txt"},
		{"a.txt", 1, "a~20250102T150405Z.txt"},
		{"a.tar.gz", 3, "a.tar~20250102T150405Z-3.gz"},
		{"noext", 1, "noext~20250102T150405Z"},
		{"x." + strings.Repeat("e", 20), 1, "x." + strings.Repeat("e", 20) + "~20250102T150405Z"},
	} {
		if got := altName(tc.name, tc.n, stamp); got != tc.want {
			t.Errorf("altName(%q, %d) = %q, want %q", tc.name, tc.n, got, tc.want)
		}
	}
	long := strings.Repeat("é", 200) + ".txt"
	for n := range 3 {
		got := altName(long, n, stamp)
		if len(got) > maxNameLen || !strings.HasSuffix(got, ".txt") || badName(got) != "" {
			t.Errorf("altName(long, %d) = %q (%d bytes)", n, got, len(got))
		}
	}
}

func TestScanEvents(t *testing.T) {
	ev := func(mask uint32, name string) []byte {
		l := (len(name) + 16) &^ 15
		b := make([]byte, unix.SizeofInotifyEvent+l)
		putU32 := func(off int, v uint32) {
			b[off], b[off+1], b[off+2], b[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
		}
		putU32(4, mask)
		putU32(12, uint32(l))
		copy(b[unix.SizeofInotifyEvent:], name)
		return b
	}
	for _, tc := range []struct {
		b          []byte
		news, gone bool
	}{
		{ev(unix.IN_CLOSE_WRITE, ".jobdaemon-tmp-1"), false, false},
		{append(ev(unix.IN_CLOSE_WRITE, ".x"), ev(unix.IN_MOVED_TO, "job")...), true, false},
		{ev(unix.IN_Q_OVERFLOW, ""), true, false},
		{ev(unix.IN_IGNORED, ""), false, true},
		{ev(unix.IN_MOVED_TO, "job")[:10], false, false},
	} {
		if news, gone := scanEvents(tc.b); news != tc.news || gone != tc.gone {
			t.Errorf("%q: news %v gone %v, want %v %v", tc.b, news, gone, tc.news, tc.gone)
		}
	}
}

// BenchmarkClaimDone claims a small job file and files it in done/ with its
// record.
func BenchmarkClaimDone(b *testing.B) {
	s := open(b, Options{Logger: slog.New(slog.DiscardHandler), RescanInterval: time.Hour})
	in := filepath.Join(s.Dir(), "incoming")
	for i := range b.N {
		writeFile(b, filepath.Join(in, fmt.Sprintf("job-%09d", i)), "payload\n", time.Time{})
	}
	ctx := context.Background()
	res := jobs.Result{Duration: time.Millisecond, Output: []byte("ok\n")}
	b.ResetTimer()
	for range b.N {
		job, err := s.NextJob(ctx, 0)
		if err != nil || job == nil {
			b.Fatalf("NextJob = %v, %v", job, err)
		}
		if err := s.Done(ctx, job, res); err != nil {
			b.Fatal(err)
		}
	}
}

// Deferred retries come due in the order of their not-before times, even
// while other jobs wait in the queue.
func TestDeferredRetriesInTurn(t *testing.T) {
	clk := newClock()
	s := open(t, Options{MaxAttempts: 3, Backoff: time.Minute, Now: clk.Now})
	in := filepath.Join(s.Dir(), "incoming")
	t0 := clk.Now()
	writeFile(t, filepath.Join(in, "a"), "", t0.Add(-3*time.Hour))
	writeFile(t, filepath.Join(in, "b"), "", t0.Add(-2*time.Hour))
	writeFile(t, filepath.Join(in, "c"), "", t0.Add(-1*time.Hour))
	fail := jobs.Result{ExitCode: 1}
	// a is due again 48-72 s after t0, b 78-102 s after (1 min ±20%).
	if job := next(t, s); job == nil || job.ID != "a" {
		t.Fatalf("first job %+v, want a", job)
	} else {
		mustDone(t, s, job, fail)
	}
	clk.Add(30 * time.Second)
	if job := next(t, s); job == nil || job.ID != "b" {
		t.Fatalf("second job %+v, want b", job)
	} else {
		mustDone(t, s, job, fail)
	}
	var order []string
	take := func() {
		for job := next(t, s); job != nil; job = next(t, s) {
			order = append(order, fmt.Sprintf("%s%d", job.ID, job.Attempt))
			mustDone(t, s, job, jobs.Result{})
		}
	}
	clk.Add(45 * time.Second) // t0+75s: a is due, b is not
	take()
	clk.Add(30 * time.Second) // t0+105s: b too
	take()
	if got := strings.Join(order, " "); got != "a2 c1 b2" {
		t.Errorf("order %q, want a2 c1 b2", got)
	}
}

// done/ and failed/ are pruned of the jobs whose records are older than
// KeepDone and KeepFailed, job file and record together; younger ones and
// other files stay.
func TestPrune(t *testing.T) {
	dir := t.TempDir()
	s := open(t, Options{Dir: dir})
	s.Close()
	old := time.Now().Add(-2 * time.Hour)
	write := func(sub, name string, mtime time.Time) {
		t.Helper()
		p := filepath.Join(dir, sub, name)
		if err := os.WriteFile(p, []byte("x"), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	for _, sub := range []string{"done", "failed"} {
		write(sub, "old", old)
		write(sub, "old.result.json", old)
		write(sub, "new", time.Now())
		write(sub, "new.result.json", time.Now())
		write(sub, "stray-old-file", old) // no record: not the spool's to remove
	}
	if err := os.Mkdir(filepath.Join(dir, "failed", "dir-job"), 0o750); err != nil {
		t.Fatal(err)
	}
	write("failed", "dir-job/inside", old)
	write("failed", "dir-job.result.json", old)

	s = open(t, Options{Dir: dir, KeepDone: time.Hour, KeepFailed: 0})
	defer s.Close()
	want := []string{"new", "new.result.json", "stray-old-file"}
	waitFor(t, "done/ pruned", func() bool { return slices.Equal(ls(t, filepath.Join(dir, "done")), want) })
	if got := ls(t, filepath.Join(dir, "failed")); len(got) != 7 {
		t.Errorf("failed/ with KeepFailed 0: %q, want everything kept", got)
	}
	s.Close()

	open(t, Options{Dir: dir, KeepFailed: time.Hour})
	waitFor(t, "failed/ pruned", func() bool { return slices.Equal(ls(t, filepath.Join(dir, "failed")), want) })
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: timed out", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// SubmitAll queues every job or none: a bad name, a waiting name, an
// oversized payload or a failing reader anywhere in the batch queues
// nothing and leaves no temporary file.
func TestSubmitAll(t *testing.T) {
	s := open(t, Options{MaxPayload: 100})
	in := filepath.Join(s.Dir(), "incoming")
	if _, err := s.Submit("waiting", strings.NewReader("w")); err != nil {
		t.Fatal(err)
	}
	sub := func(name, data string) Submission { return Submission{Name: name, Data: strings.NewReader(data)} }
	for _, bad := range []struct {
		last Submission
		want error
	}{
		{sub("a/b", "x"), ErrBadName},
		{sub("waiting", "x"), fs.ErrExist},
		{sub("huge", strings.Repeat("x", 101)), ErrTooLarge},
	} {
		_, err := s.SubmitAll([]Submission{sub("one", "1"), sub("", "2"), bad.last})
		if !errors.Is(err, bad.want) {
			t.Errorf("batch ending with %q: %v, want %v", bad.last.Name, err, bad.want)
		}
		if names := ls(t, in); !slices.Equal(names, []string{"waiting"}) {
			t.Fatalf("after a refused batch, incoming/ holds %q", names)
		}
	}
	if _, err := s.SubmitAll([]Submission{sub("one", "1"), {Name: "two", Data: iotestErrReader{}}}); err == nil {
		t.Error("a batch with a failing reader succeeded")
	}
	ids, err := s.SubmitAll([]Submission{sub("one", "1"), sub("", "2"), sub("three", "3")})
	if err != nil || len(ids) != 3 || ids[0] != "one" || ids[2] != "three" {
		t.Fatalf("SubmitAll = %q, %v", ids, err)
	}
	if names := ls(t, in); len(names) != 4 {
		t.Errorf("incoming/ holds %q", names)
	}
}

// The spool is the one part of the daemon that keeps wall-clock times (a
// retry's not-before, which must survive a restart); the rest uses the
// monotonic clock. A jump of the wall clock moves a deferred retry by as
// much, and nothing else: forward, it is due at once; backward, it waits
// the jump out. No job is lost or claimed twice either way.
func TestWallClockJumps(t *testing.T) {
	for _, jump := range []time.Duration{time.Hour, -time.Hour} {
		t.Run(jump.String(), func(t *testing.T) {
			clk := newClock()
			s := open(t, Options{Now: clk.Now, MaxAttempts: 2, Backoff: time.Minute, RescanInterval: time.Hour})
			if _, err := s.Submit("job", strings.NewReader("payload")); err != nil {
				t.Fatal(err)
			}
			job := next(t, s)
			if job == nil {
				t.Fatal("no job")
			}
			if v := mustDone(t, s, job, jobs.Result{ExitCode: 3}); v != jobs.Retrying {
				t.Fatalf("verdict %v, want retrying", v)
			}
			clk.Add(jump)
			job = next(t, s)
			switch {
			case jump > 0 && (job == nil || job.Attempt != 2):
				t.Fatalf("after the clock jumped forward by %v: %+v, want the retry at once", jump, job)
			case jump < 0 && job != nil:
				t.Fatalf("after the clock jumped back by %v: the retry was claimed early", -jump)
			case jump < 0:
				// Due once the clock is back where the retry was set, plus
				// its backoff (1 min ± 20 %).
				clk.Add(-jump + 72*time.Second)
				if job = next(t, s); job == nil || job.Attempt != 2 {
					t.Fatalf("the retry, once the jump was made up: %+v", job)
				}
			}
			mustDone(t, s, job, jobs.Result{})
			if job := next(t, s); job != nil {
				t.Fatalf("a job claimed twice: %+v", job)
			}
			if names := ls(t, filepath.Join(s.Dir(), "done")); !slices.Equal(names, []string{"job", "job.result.json"}) {
				t.Fatalf("done/ holds %q", names)
			}
		})
	}
}

// A sync of incoming/ that fails says that the job is queued all the
// same, and names the directory: Submit returns the ID with it, and the
// caller must not submit again. (The failure of fsync itself cannot be
// had here without a failing disk; a directory that cannot be opened
// takes the same path.)
func TestSyncDirError(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "gone")
	err := syncDir(missing)
	if err == nil || !errors.Is(err, fs.ErrNotExist) ||
		!strings.Contains(err.Error(), "queued") || !strings.Contains(err.Error(), missing) {
		t.Fatalf("syncDir(%s) = %v; want an ErrNotExist that says the job is queued and names the directory", missing, err)
	}
	if err := syncDir(t.TempDir()); err != nil {
		t.Fatalf("syncDir of a plain directory: %v", err)
	}
}
