package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs/jobstest"
)

// newApp returns an app on a fresh spool, with its LoadConfig done.
func newApp(t *testing.T) (*fileApp, *jobstest.Harness) {
	t.Helper()
	a := &fileApp{next: demoConfig{Dir: t.TempDir(), Children: 2}}
	h := jobstest.New(t, a)
	if err := h.LoadConfig(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.root.Close() })
	return a, h
}

// put writes a file into a subdirectory of the spool, with mtime if it is
// not zero.
func put(t *testing.T, dir, sub, name, content string, mtime time.Time) {
	t.Helper()
	p := filepath.Join(dir, sub, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

// ls returns the names in a subdirectory of the spool, sorted.
func ls(t *testing.T, dir, sub string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, sub))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestClaimOldestFirst(t *testing.T) {
	a, h := newApp(t)
	t0 := time.Now().Add(-time.Hour)
	put(t, a.dir, incoming, "c", "x", t0)
	put(t, a.dir, incoming, "b", "x", t0.Add(time.Minute))
	put(t, a.dir, incoming, "a", "x", t0.Add(time.Minute))
	put(t, a.dir, incoming, "z", "x", t0.Add(-time.Minute))
	put(t, a.dir, incoming, ".partial", "x", t0.Add(-time.Hour))
	if err := os.Mkdir(filepath.Join(a.dir, incoming, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	var got []string
	for job := h.Next(); job != nil; job = h.Next() {
		if job.ID != string(job.Payload) || job.Meta["dir"] != a.next.Dir || a.dir != a.next.Dir {
			t.Errorf("job %+v", job)
		}
		got = append(got, job.ID)
	}
	if want := []string{"z", "c", "a", "b"}; !slices.Equal(got, want) {
		t.Errorf("claimed %q, want %q", got, want)
	}
	if got, want := ls(t, a.dir, running), []string{"a", "b", "c", "z"}; !slices.Equal(got, want) {
		t.Errorf("running/ holds %q, want %q", got, want)
	}
	if got, want := ls(t, a.dir, incoming), []string{".partial", "subdir"}; !slices.Equal(got, want) {
		t.Errorf("incoming/ holds %q, want %q", got, want)
	}
}

func TestClaimSkipsVanishedFiles(t *testing.T) {
	a, _ := newApp(t)
	put(t, a.dir, incoming, "here", "x", time.Time{})
	name, err := a.claim([]string{"gone", "here"})
	if err != nil || name != "here" {
		t.Errorf("claim = %q, %v; want here", name, err)
	}
	if name, err := a.claim([]string{"gone"}); err != nil || name != "" {
		t.Errorf("claim of a vanished file = %q, %v; want nothing", name, err)
	}
}

func TestOutcomes(t *testing.T) {
	a, h := newApp(t)
	t0 := time.Now().Add(-time.Hour)
	put(t, a.dir, incoming, "1-ok", "hello", t0)
	put(t, a.dir, incoming, "2-fail", "this will FAIL.", t0.Add(time.Second))
	put(t, a.dir, incoming, "3-panic", "don't panic!", t0.Add(2*time.Second))
	put(t, a.dir, incoming, "4-ok", "failure is not a word we know", t0.Add(3*time.Second))

	out := h.Drain(10)
	var got []string
	for _, o := range out {
		got = append(got, o.Job.ID+": "+o.Result.String())
	}
	want := []string{
		"1-ok: ok",
		"2-fail: error: 2-fail asked to fail",
		"3-panic: error: panic in RunJob: 3-panic asked for a panic",
		"4-ok: ok",
	}
	if !slices.Equal(got, want) {
		t.Errorf("outcomes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	if got, want := ls(t, a.dir, done), []string{"1-ok", "1-ok.upper", "4-ok", "4-ok.upper"}; !slices.Equal(got, want) {
		t.Errorf("done/ holds %q, want %q", got, want)
	}
	if b, _ := os.ReadFile(filepath.Join(a.dir, done, "1-ok.upper")); string(b) != "HELLO" {
		t.Errorf("1-ok.upper = %q", b)
	}
	wantErr := []string{"2-fail", "2-fail.error.txt", "3-panic", "3-panic.error.txt"}
	if got := ls(t, a.dir, failed); !slices.Equal(got, wantErr) {
		t.Errorf("error/ holds %q, want %q", got, wantErr)
	}
	for name, part := range map[string]string{"2-fail": "exit code: 1\nerror: 2-fail asked to fail", "3-panic": "exit code: 2"} {
		b, _ := os.ReadFile(filepath.Join(a.dir, failed, name+".error.txt"))
		if !strings.Contains(string(b), part) {
			t.Errorf("%s.error.txt lacks %q:\n%s", name, part, b)
		}
	}
	for _, sub := range []string{incoming, running} {
		if names := ls(t, a.dir, sub); len(names) > 0 {
			t.Errorf("%s/ still holds %q", sub, names)
		}
	}
}

// Files a crashed run left in running/ go back to incoming/ at start, the
// outputs of their jobs are removed, and a reload moves nothing.
func TestRequeueAtStartOnly(t *testing.T) {
	dir := t.TempDir()
	for _, sub := range []string{incoming, running} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	put(t, dir, running, "left", "hello", time.Time{})
	put(t, dir, running, outputName("left"), "HEL", time.Time{})
	a := &fileApp{next: demoConfig{Dir: dir, Children: 2}}
	h := jobstest.New(t, a)
	if err := h.LoadConfig(); err != nil {
		t.Fatal(err)
	}
	defer a.root.Close()
	if got := ls(t, dir, incoming); !slices.Equal(got, []string{"left"}) {
		t.Errorf("incoming/ holds %q, want [left]", got)
	}
	if got := ls(t, dir, running); len(got) != 0 {
		t.Errorf("running/ still holds %q", got)
	}
	for _, sub := range []string{done, failed} {
		if _, err := os.Stat(filepath.Join(dir, sub)); err != nil {
			t.Errorf("%s/ not created: %v", sub, err)
		}
	}

	job := h.Next()
	if err := h.LoadConfig(); err != nil { // a reload
		t.Fatal(err)
	}
	if got := ls(t, dir, running); !slices.Equal(got, []string{job.ID}) {
		t.Errorf("after a reload running/ holds %q, want the running job %s", got, job.ID)
	}
}

// The demo for real: a daemon with re-executed children drains a spool
// and exits 0.
func TestDrainAndExit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the demo")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the demo with")
	}
	bin := filepath.Join(t.TempDir(), "filedemo")
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, perChild := range []string{"1", "3"} {
		t.Run("jobs-per-child="+perChild, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Mkdir(filepath.Join(dir, incoming), 0o755); err != nil {
				t.Fatal(err)
			}
			t0 := time.Now().Add(-time.Hour)
			for i, content := range []string{"one", "two", "please fail", "panic here", "five", "six"} {
				put(t, dir, incoming, string(rune('a'+i)), content, t0.Add(time.Duration(i)*time.Second))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cfg := filepath.Join(t.TempDir(), "filedemo.toml")
			text := fmt.Sprintf("dir = %q\nchildren = 2\njobs_per_child = %s\npoll = \"50ms\"\npid_file = \"\"\nsocket = \"\"\n", dir, perChild)
			if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.CommandContext(ctx, bin, "run", "--drain", "--config", cfg)
			var logs strings.Builder
			cmd.Stderr = &logs
			if err := cmd.Run(); err != nil {
				t.Fatalf("filedemo: %v (ctx: %v)\n%s", err, ctx.Err(), logs.String())
			}
			if testing.Verbose() {
				t.Log(logs.String())
			}
			if got, want := ls(t, dir, done), []string{"a", "a.upper", "b", "b.upper", "e", "e.upper", "f", "f.upper"}; !slices.Equal(got, want) {
				t.Errorf("done/ holds %q, want %q", got, want)
			}
			if got, want := ls(t, dir, failed), []string{"c", "c.error.txt", "d", "d.error.txt"}; !slices.Equal(got, want) {
				t.Errorf("error/ holds %q, want %q", got, want)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, failed, "d.error.txt")); !strings.Contains(string(b), "panic in RunJob: d asked for a panic") {
				t.Errorf("d.error.txt:\n%s", b)
			}
			for _, sub := range []string{incoming, running} {
				if names := ls(t, dir, sub); len(names) > 0 {
					t.Errorf("%s/ still holds %q", sub, names)
				}
			}
		})
	}
}
