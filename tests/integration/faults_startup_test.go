package integration

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A FIFO at each path the daemon reads or writes by its configuration:
// check-config and run fail at once, naming it, instead of waiting for
// a writer (or a reader) for ever, deaf to TERM.
func TestFaultFIFOsAtConfiguredPaths(t *testing.T) {
	for _, tc := range []struct {
		name, body, path string
		commands         []string
	}{
		{"config", "", "config.toml", []string{"check-config", "run", "status", "reload"}},
		{"pid file", "", "jobdaemon.pid", []string{"run"}},
		{"log file", "[log]\ntarget = \"file\"\nfile = \"daemon.log\"\n", "daemon.log", []string{"run"}},
		{"job log", "[log]\njoblog = \"jobs.log\"\n", "jobs.log", []string{"run"}},
		{"DSN file", "[source]\ntype = \"postgres\"\n[source.postgres]\ndsn_file = \"pg.dsn\"\n", "pg.dsn", []string{"check-config", "run"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			e, _ := newScriptEnv(t, dir, attackScript, tc.body)
			fifo := filepath.Join(dir, tc.path)
			os.Remove(fifo)
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, cmd := range tc.commands {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				c := exec.CommandContext(ctx, binary, cmd, "--config", e.config)
				c.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
				out, err := c.CombinedOutput()
				blocked := ctx.Err() != nil
				cancel()
				if blocked {
					t.Fatalf("%s blocks on a FIFO at %s", cmd, tc.path)
				}
				if err == nil || !strings.Contains(string(out), "FIFO") && !strings.Contains(string(out), tc.path) {
					t.Errorf("%s with a FIFO at %s: %v\n%s", cmd, tc.path, err, out)
				}
			}
		})
	}
}

// TERM at any moment of the start-up: the daemon exits 0, soon, leaving
// no PID file or process behind.
func TestFaultTermDuringStartup(t *testing.T) {
	dir := t.TempDir()
	e, mark := newScriptEnv(t, dir, attackScript, "")
	t.Cleanup(func() { nothingRuns(t, mark) })
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for i := range 20 {
		e.put("holder", "hold\n")
		d := e.start()
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		d.Process.Signal(syscall.SIGTERM)
		if err := waitExit(t, d, 20*time.Second); err != nil {
			// A TERM in the first moments of the process, before it
			// handles signals, ends it by the default action: nothing
			// exists yet then, which the checks below see.
			ws, _ := d.ProcessState.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != syscall.SIGTERM || d.out.String() != "" {
				t.Fatalf("TERM %d: %v\n%s", i, err, tail(d.out.String()))
			}
		}
		if _, err := os.Lstat(filepath.Join(dir, "jobdaemon.pid")); err == nil {
			t.Errorf("TERM %d: the PID file is left behind", i)
		}
		os.RemoveAll(e.spool)
	}
}
