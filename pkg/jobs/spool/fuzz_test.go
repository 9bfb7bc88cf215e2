package spool

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// Any name: CheckName accepts only names that stay in incoming/ and that
// the claim will not refuse; a name the claim refuses is filed under a
// safe name; every alternative name is safe, no longer than the limit,
// and different from the others.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"report.csv", "../x", "..", ".", "a/b", "new\nline", "\x1b[31m", "bidi\u202etxt.exe",
		"bad\xffutf8", strings.Repeat("é", 200) + ".tar.gz", "-rf", "~", "a~20250102T150405Z.txt"} {
		f.Add(s)
	}
	stamp := time.Date(2025, 1, 2, 15, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, name string) {
		if CheckName(name) == nil {
			if name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || name[0] == '.' || filepath.Base(name) != name {
				t.Fatalf("CheckName accepts %q", name)
			}
			if why := badName(name); why != "" {
				t.Fatalf("CheckName accepts %q, which a claim refuses: %s", name, why)
			}
		} else if !errors.Is(CheckName(name), ErrBadName) {
			t.Fatalf("CheckName(%q) = %v, not ErrBadName", name, CheckName(name))
		}
		safe := name
		if badName(name) != "" {
			safe = safeName(name)
			if !utf8.ValidString(safe) || strings.ContainsFunc(safe, isControl) {
				t.Fatalf("safeName(%q) = %q", name, safe)
			}
		}
		if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
			return // never a file's name in a directory listing
		}
		seen := map[string]bool{}
		for n := range 4 {
			alt := altName(safe, n, stamp)
			if len(alt) > maxNameLen || strings.Contains(alt, "/") || seen[alt] {
				t.Fatalf("altName(%q, %d) = %q", safe, n, alt)
			}
			if utf8.ValidString(safe) && !utf8.ValidString(alt) {
				t.Fatalf("altName(%q, %d) = %q cuts a character", safe, n, alt)
			}
			seen[alt] = true
		}
	})
}

// Any name and payload through the spool: Submit refuses it with
// ErrBadName or ErrTooLarge, or the job comes out of NextJob under that
// name, and Open reads back exactly the payload.
func FuzzSubmit(f *testing.F) {
	f.Add("job", []byte("payload"))
	f.Add("", []byte{})
	f.Add("a b;$(touch x)", []byte("\x00\xff"))
	f.Add("x", make([]byte, 5000))
	dir := f.TempDir()
	s, err := Open(Options{Dir: dir, MaxPayload: 4096, RescanInterval: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	f.Fuzz(func(t *testing.T, name string, payload []byte) {
		id, err := s.Submit(name, strings.NewReader(string(payload)))
		switch {
		case errors.Is(err, ErrBadName):
			if CheckName(name) == nil {
				t.Fatalf("Submit refuses %q, which CheckName accepts: %v", name, err)
			}
			return
		case errors.Is(err, ErrTooLarge):
			if len(payload) <= 4096 {
				t.Fatalf("Submit refuses %d bytes as too large", len(payload))
			}
			return
		case errors.Is(err, os.ErrExist):
			return // an earlier input of the same name waits
		case err != nil:
			t.Fatalf("Submit(%q): %v", name, err)
		}
		if name != "" && id != name {
			t.Fatalf("Submit(%q) = %q", name, id)
		}
		for {
			job, err := s.NextJob(context.Background(), 0)
			if err != nil || job == nil {
				t.Fatalf("NextJob after Submit(%q): %v, %v", id, job, err)
			}
			f, err := s.Open(job)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Done(context.Background(), job, jobs.Result{}); err != nil {
				t.Fatal(err)
			}
			// A name filed a hundred times in a second has no free name
			// left in done/ (and waits a second): start afresh.
			os.RemoveAll(filepath.Join(dir, "done"))
			os.Mkdir(filepath.Join(dir, "done"), 0o750)
			if job.ID == id {
				if string(got) != string(payload) {
					t.Fatalf("job %q read %q, submitted %q", id, got, payload)
				}
				return
			}
		}
	})
}

// Whatever bytes a sidecar or a line of the claims journal holds (a
// crash cut it, a disk garbled it), reading them never panics, and what
// the spool writes reads back.
func FuzzSidecarAndJournal(f *testing.F) {
	f.Add([]byte(`{"attempt":2,"not_before":"2025-01-02T15:04:05Z","inode":1837}`), "1837 \"report.csv\"")
	f.Add([]byte(`{"attempt":-1}`), "x \"a\"")
	f.Add([]byte(`{`), "18446744073709551615 \"\\u202e\\n\"")
	f.Add([]byte(`[]`), "")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, sidecar []byte, line string) {
		path := filepath.Join(dir, ".x.meta.json")
		if err := os.WriteFile(path, sidecar, 0o640); err != nil {
			t.Fatal(err)
		}
		if m, err := decodeMeta(path); err == nil && m.Attempt < 1 {
			t.Fatalf("sidecar %q read as attempt %d", sidecar, m.Attempt)
		}
		if k, ok := parseClaim(line); ok {
			if back, ok := parseClaim(strings.TrimSuffix(string(claimLine(k.name, k.ino)), "\n")); !ok || back != k {
				t.Fatalf("journal line %q: %+v does not read back: %+v", line, k, back)
			}
		}
		if name := strings.ToValidUTF8(line, "?"); name != "" {
			k, ok := parseClaim(strings.TrimSuffix(string(claimLine(name, 42)), "\n"))
			if !ok || k.name != name || k.ino != 42 {
				t.Fatalf("the line written for %q reads back as %+v, %v", name, k, ok)
			}
		}
	})
}
