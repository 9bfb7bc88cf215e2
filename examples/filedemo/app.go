package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// The subdirectories of the spool. A file moves from incoming/ to running/
// when a job claims it, then to done/ or error/ when the job has ended.
const (
	incoming = "incoming"
	running  = "running"
	done     = "done"
	failed   = "error"
)

// fileApp is the demo's application: one job per file of incoming/.
// Configure, LoadConfig, NextJob and Done run in the parent, RunJob in a
// child.
type fileApp struct {
	next demoConfig // read by Configure, applied by LoadConfig
	dir  string     // the spool, absolute; set by the first LoadConfig
	log  *slog.Logger

	root *os.Root // the spool, opened by the parent's first LoadConfig
}

// LoadConfig applies filedemo.toml, which Configure has just read, in the
// parent: at start it prepares the spool (creates the directories and
// requeues what a crashed run left in running/), and at start and on
// every reload it sets the pool's size. A reload must not requeue, since
// running/ then holds the files of jobs that are running, and cannot move
// the spool. A child needs nothing: each job carries the spool's path.
func (a *fileApp) LoadConfig(ctx context.Context) error {
	if jobs.IsChild() {
		return nil
	}
	a.log = slog.Default()
	if d := jobs.DaemonFrom(ctx); d != nil {
		a.log = d.Logger()
		d.SetMaxChildren(a.next.Children)
	}
	if a.root != nil {
		if a.next.Dir != a.dir {
			a.log.Warn("dir changed: it takes a restart", "dir", a.dir, "new", a.next.Dir)
		}
		return nil
	}
	for _, sub := range []string{incoming, running, done, failed} {
		if err := os.MkdirAll(filepath.Join(a.next.Dir, sub), 0o755); err != nil {
			return err
		}
	}
	root, err := os.OpenRoot(a.next.Dir)
	if err != nil {
		return err
	}
	a.dir, a.root = a.next.Dir, root
	return a.requeue()
}

// Close closes the spool once the daemon has stopped.
func (a *fileApp) Close() error {
	if a.root == nil {
		return nil
	}
	return a.root.Close()
}

// requeue moves the files left in running/ back to incoming/, and removes
// the outputs of their unfinished jobs.
func (a *fileApp) requeue() error {
	entries, err := fs.ReadDir(a.root.FS(), running)
	if err != nil {
		return fmt.Errorf("requeue: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if isOutput(name) {
			err = a.root.Remove(running + "/" + name)
		} else {
			a.log.Warn("requeuing a file left by an earlier run", "file", name)
			err = a.root.Rename(running+"/"+name, incoming+"/"+name)
		}
		if err != nil {
			return fmt.Errorf("requeue: %w", err)
		}
	}
	return nil
}

// NextJob claims the oldest file of incoming/ by moving it into running/.
// The job's payload is the file's name.
func (a *fileApp) NextJob(ctx context.Context, slot int) (*jobs.Job, error) {
	names, err := a.waiting()
	if err != nil {
		return nil, err
	}
	name, err := a.claim(names)
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, nil // the dispatcher asks again after a while
	}
	return &jobs.Job{
		ID:      name,
		Payload: []byte(name),
		Attempt: 1,
		// The job carries where its file is: a child does not read the
		// configuration.
		Meta: map[string]string{"dir": a.dir},
	}, nil
}

// waiting lists the regular files of incoming/, oldest first by
// modification time, then by name. Names starting with a dot are skipped:
// write a file under such a name and rename it when it is complete. (A
// real spool would not list the whole directory for every job.)
func (a *fileApp) waiting() ([]string, error) {
	entries, err := fs.ReadDir(a.root.FS(), incoming)
	if err != nil {
		return nil, err
	}
	type file struct {
		name  string
		mtime time.Time
	}
	var files []file
	for _, e := range entries {
		if !e.Type().IsRegular() || isOutput(e.Name()) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // gone since the listing
		}
		files = append(files, file{e.Name(), info.ModTime()})
	}
	slices.SortFunc(files, func(x, y file) int {
		return cmp.Or(x.mtime.Compare(y.mtime), strings.Compare(x.name, y.name))
	})
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.name
	}
	return names, nil
}

// claim moves the first of names that still exists from incoming/ to
// running/ and returns it, or "" when none is left. A file can vanish
// between the listing and the rename: someone took it back.
func (a *fileApp) claim(names []string) (string, error) {
	for _, name := range names {
		err := a.root.Rename(incoming+"/"+name, running+"/"+name)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("claim %s: %w", name, err)
		}
	}
	return "", nil
}

// RunJob processes a file in a child: it fails if the file contains the
// word "fail", panics if it contains "panic", and otherwise writes an
// upper-cased copy beside it, which Done moves to done/ with the file.
func (a *fileApp) RunJob(ctx context.Context, job *jobs.Job) error {
	root, err := os.OpenRoot(job.Meta["dir"])
	if err != nil {
		return err
	}
	defer root.Close()
	name := string(job.Payload)
	data, err := root.ReadFile(running + "/" + name)
	if err != nil {
		return err
	}
	// What a child prints ends up in the daemon's log, with the job's id.
	fmt.Printf("processing %s, %d bytes, in slot %d\n", name, len(data), job.Slot)
	switch {
	case hasWord(data, "panic"):
		panic(name + " asked for a panic")
	case hasWord(data, "fail"):
		return fmt.Errorf("%s asked to fail", name)
	}
	return root.WriteFile(running+"/"+outputName(name), bytes.ToUpper(data), 0o644)
}

// Done files a job away in the parent: into done/ with its output, or
// into error/ with a report, <name>.error.txt.
func (a *fileApp) Done(ctx context.Context, job *jobs.Job, res jobs.Result) error {
	name := string(job.Payload)
	if res.OK() {
		a.log.Info("done", "file", name, "duration", res.Duration)
		if err := a.root.Rename(running+"/"+outputName(name), done+"/"+name+".upper"); err != nil {
			return err
		}
		return a.root.Rename(running+"/"+name, done+"/"+name)
	}
	a.log.Warn("failed", "file", name, "result", res.String(), "exit_code", res.ExitCode)
	if err := a.root.Remove(running + "/" + outputName(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	report := fmt.Sprintf("result: %s\nexit code: %d\nerror: %s\nduration: %s\n\noutput:\n%s",
		res.String(), res.ExitCode, res.Error, res.Duration, res.Output)
	if err := a.root.WriteFile(failed+"/"+name+".error.txt", []byte(report), 0o644); err != nil {
		return err
	}
	return a.root.Rename(running+"/"+name, failed+"/"+name)
}

// outputName is the name of a job's output while it is in running/. The
// leading dot keeps it apart from the names NextJob claims.
func outputName(name string) string { return "." + name + ".upper" }

func isOutput(name string) bool { return strings.HasPrefix(name, ".") }

// hasWord reports whether text contains word, a lower-case word, in any
// case.
func hasWord(text []byte, word string) bool {
	words := strings.FieldsFunc(strings.ToLower(string(text)), func(r rune) bool { return !unicode.IsLetter(r) })
	return slices.Contains(words, word)
}
