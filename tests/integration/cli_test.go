package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The command line as an operator types it: flags anywhere, a stray flag
// refused before anything happens, submit all or nothing, --version and
// --help everywhere, and no --config needed when JOBDAEMON_CONFIG names
// the file.
func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	os.WriteFile(cfg, []byte("[job]\ncommand = [\"/bin/true\"]\n[source.spool]\ndir = \"spool\"\n[daemon]\npid_file = \"jd.pid\"\n[control]\nsocket = \"c.sock\"\n"), 0o644)
	for _, name := range []string{"a.txt", "b.txt"} {
		os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644)
	}
	incoming := filepath.Join(dir, "spool", "incoming")
	run := func(env []string, args ...string) (int, string) {
		t.Helper()
		c := exec.Command(binary, args...)
		c.Dir = dir
		c.Env = append(os.Environ(), env...)
		out, err := c.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	queued := func() []string {
		names, _ := filepath.Glob(filepath.Join(incoming, "*"))
		for i := range names {
			names[i] = filepath.Base(names[i])
		}
		return names
	}

	// A flag after the files is a flag, never a job.
	if code, out := run(nil, "submit", "a.txt", "--config", cfg); code != 0 || strings.TrimSpace(out) != "a.txt" {
		t.Fatalf("submit a.txt --config: exit %d\n%s", code, out)
	}
	if q := queued(); !slices.Equal(q, []string{"a.txt"}) {
		t.Errorf("queued %q, want [a.txt]", q)
	}
	// A stray flag, anywhere, is refused before anything is queued.
	if code, out := run(nil, "submit", "b.txt", "--bogus", "--config", cfg); code != 2 || !strings.Contains(out, "unknown flag: --bogus") {
		t.Errorf("submit with a stray flag: exit %d\n%s", code, out)
	}
	// All or nothing: a missing file, a name that waits already.
	for _, files := range [][]string{{"b.txt", "missing.txt"}, {"b.txt", "a.txt"}} {
		code, out := run(nil, append([]string{"submit", "--config", cfg}, files...)...)
		if code != 1 || !strings.Contains(out, "jobdaemon submit:") {
			t.Errorf("submit %q: exit %d\n%s", files, code, out)
		}
		if q := queued(); !slices.Equal(q, []string{"a.txt"}) {
			t.Errorf("submit %q queued %q, want nothing more than a.txt", files, q)
		}
	}
	// JOBDAEMON_CONFIG stands for --config.
	if code, out := run([]string{"JOBDAEMON_CONFIG=" + cfg}, "submit", "b.txt"); code != 0 || strings.TrimSpace(out) != "b.txt" {
		t.Errorf("submit with JOBDAEMON_CONFIG: exit %d\n%s", code, out)
	}
	// Without either, the default is /etc/jobdaemon/config.toml.
	if code, out := run([]string{"JOBDAEMON_CONFIG="}, "status", "--help"); code != 0 || !strings.Contains(out, `(default "/etc/jobdaemon/config.toml")`) {
		t.Errorf("status --help: exit %d\n%s", code, out)
	}
	if code, out := run(nil, "--version"); code != 0 || !strings.HasPrefix(out, "jobdaemon ") {
		t.Errorf("--version: exit %d\n%s", code, out)
	}
	for _, sub := range []string{"start", "stop", "status", "reload", "scale", "pause", "resume", "signal", "submit", "check-config", "pg", "restart"} {
		if code, out := run(nil, sub, "--help"); code != 0 || !strings.Contains(out, "Usage: jobdaemon "+sub) {
			t.Errorf("%s --help: exit %d\n%s", sub, code, out)
		}
	}
	if code, out := run(nil, "completion", "bash"); code != 0 || !strings.Contains(out, "__start_jobdaemon") {
		t.Errorf("completion bash: exit %d\n%.300s", code, out)
	}
}

// A job program whose name has a space is no error: the syslog identifier
// of the jobs' lines, which the file does not set, is made from it.
func TestProgramNameWithSpace(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "my job=1")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "spool"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.toml")
	body := fmt.Sprintf("[daemon]\npid_file = %q\n[control]\nsocket = %q\n[source.spool]\ndir = %q\n[job]\ncommand = [%q]\n",
		filepath.Join(dir, "pid"), filepath.Join(dir, "control.sock"), filepath.Join(dir, "spool"), prog)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check-config"}, {"run", "--drain"}} {
		if out, err := exec.Command(binary, append(args, "--config", cfg)...).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", args, err, out)
		}
	}
}
