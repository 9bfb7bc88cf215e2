package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childFaultScript misbehaves as its payload says. The floods write more
// than any buffer of the daemon holds: 16 MiB on one line, and 20 000
// short lines.
const childFaultScript = `#!/bin/sh
read -r what arg || true
case "$what" in
ok) echo "ok $JOB_ID" ;;
exit) echo "exiting $arg"; exit "$arg" ;;
segv) kill -SEGV $$ ;;
abort) kill -ABRT $$ ;;
outside) echo $$ >"$PIDS/$JOB_ID.tmp"; mv "$PIDS/$JOB_ID.tmp" "$PIDS/$JOB_ID"; exec sleep 60 ;;
memory) ulimit -v 100000; exec awk 'BEGIN { s = "x"; while (1) s = s s }' ;;
hang) exec sleep 600 ;;
ignoreterm) trap '' TERM; sleep 600; sleep 600 ;;
grandchild) sleep 3593 & echo "left a sleep behind" ;;
flood) head -c 16777216 /dev/zero | tr '\0' x ;;
floodlines) yes "a line of output" | head -n 20000 ;;
closed) exec >&- 2>&-; sleep 0.3 ;;
stdin) cat >/dev/null; echo "read all" ;;
*) echo "unknown $what" >&2; exit 64 ;;
esac
`

// Jobs that fail in every way a process can: each is recorded as it
// ended, with its attempt counted (none is "interrupted"), the daemon
// goes on, keeps its memory, and nothing of the jobs is left running.
func TestFaultChildren(t *testing.T) {
	killSleepers(t, 3593)
	dir := t.TempDir()
	pids := filepath.Join(dir, "pids")
	os.Mkdir(pids, 0o755)
	e, mark := newScriptEnv(t, dir, childFaultScript, `
[pool]
max_children = 4
# Long enough for the floods through a race-detector daemon on a loaded
# 2-core machine (3 s timed them out once in CI); "hang" waits it out.
job_timeout = "10s"
kill_grace = "300ms"
[job]
max_attempts = 1
`, "PIDS", "pids")
	t.Cleanup(func() { nothingRuns(t, mark) })
	type want struct {
		where  string
		check  func(r record) bool
		reason string
	}
	failedBy := func(sig string) func(record) bool {
		return func(r record) bool { return r.Signal == sig && !r.TimedOut }
	}
	cases := map[string]want{
		"ok":         {"done", func(r record) bool { return r.ExitCode == 0 }, "exit 0"},
		"exit 3":     {"failed", func(r record) bool { return r.ExitCode == 3 && strings.Contains(r.Output, "exiting 3") }, "exit 3 with its output"},
		"exit 255":   {"failed", func(r record) bool { return r.ExitCode == 255 }, "exit 255"},
		"segv":       {"failed", failedBy("SIGSEGV"), "SIGSEGV"},
		"abort":      {"failed", failedBy("SIGABRT"), "SIGABRT"},
		"outside":    {"failed", failedBy("SIGKILL"), "killed from outside"},
		"memory":     {"failed", func(r record) bool { return r.ExitCode != 0 && !r.TimedOut }, "a failure of its own, not a timeout"},
		"hang":       {"failed", func(r record) bool { return r.TimedOut && r.Signal == "SIGTERM" }, "timed out, ended by TERM"},
		"ignoreterm": {"failed", func(r record) bool { return r.TimedOut && r.Signal == "SIGKILL" }, "timed out, killed after kill_grace"},
		"grandchild": {"done", func(r record) bool { return strings.Contains(r.Output, "left a sleep") }, "exit 0"},
		"flood":      {"done", func(r record) bool { return len(r.Output) <= 4096 && strings.HasSuffix(r.Output, "xxxx") }, "exit 0, the tail of its output"},
		"floodlines": {"done", func(r record) bool { return strings.HasSuffix(r.Output, "a line of output\n") }, "exit 0"},
		"closed":     {"done", func(r record) bool { return r.ExitCode == 0 }, "exit 0"},
		"stdin":      {"done", func(r record) bool { return strings.Contains(r.Output, "read all") }, "exit 0"},
	}
	for name := range cases {
		e.put(strings.ReplaceAll(name, " ", "-"), name+"\n")
	}
	d := e.start()
	e.waitFor("the outside job runs", d, func() bool {
		_, err := os.Stat(filepath.Join(pids, "outside"))
		return err == nil
	})
	b, _ := os.ReadFile(filepath.Join(pids, "outside"))
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || syscall.Kill(pid, syscall.SIGKILL) != nil {
		t.Fatalf("cannot kill the outside job %q: %v", b, err)
	}
	pollUntil(t, "every job filed", 60*time.Second, func() bool {
		return e.count("done")+e.count("failed") == len(cases)
	}, func() string { return tail(d.out.String()) })
	for name, w := range cases {
		where, r := e.result(strings.ReplaceAll(name, " ", "-"))
		if where != w.where || !w.check(r) || r.Attempts != 1 {
			out := r.Output
			if len(out) > 200 {
				out = "..." + out[len(out)-200:]
			}
			r.Output = out
			t.Errorf("%s: in %s after %d attempts with %+v; want %s: %s", name, where, r.Attempts, r, w.where, w.reason)
		}
	}
	// The daemon answers, holds no more than it did (a flood of 16 MiB
	// is read through, not kept), and stops cleanly.
	if s := e.status(); s.State != "running" || s.Succeeded+s.Failed != len(cases) {
		t.Errorf("status after the faults: %+v", s)
	}
	if hwm := procStatusKB(t, d.Process.Pid, "VmHWM"); hwm > 200<<10 {
		t.Errorf("the daemon's peak resident set is %d KiB after the floods", hwm)
	} else {
		t.Logf("daemon peak RSS %d KiB (race-detector build)", hwm)
	}
	if pids := sleepers(3593); len(pids) > 0 {
		t.Errorf("the grandchild outlived its job: %v", pids)
	}
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Errorf("after TERM: %v\n%s", err, tail(d.out.String()))
	}
}

// procStatusKB reads a kB field of /proc/PID/status.
func procStatusKB(t *testing.T, pid int, key string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("/proc/%d/status: %s:%s", pid, k, v)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return 0
}
