package integration

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// signalScript: "ok" notes its run and takes a moment; "long" runs until
// TERM, which it obeys; "stubborn" ignores TERM.
const signalScript = `#!/bin/sh
read -r what arg || true
case "$what" in
ok) echo "$JOB_ID $JOB_ATTEMPT" >>"$RUNS"; sleep 0.05 ;;
long) echo "$JOB_ID $JOB_ATTEMPT" >>"$RUNS"; exec sleep 3595 ;;
stubborn) echo "$JOB_ID $JOB_ATTEMPT" >>"$RUNS"; trap '' TERM; sleep 3595; sleep 3595 ;;
*) echo "unknown $what" >&2; exit 64 ;;
esac
`

func newSignalEnv(t *testing.T, stopTimeout string) (*env, string) {
	t.Helper()
	killSleepers(t, 3595)
	dir := t.TempDir()
	e, mark := newScriptEnv(t, dir, signalScript, fmt.Sprintf(`
[daemon]
stop_timeout = %q
[pool]
max_children = 4
kill_grace = "300ms"
[job]
max_attempts = 2
backoff = "10ms"
`, stopTimeout), "RUNS", "runs")
	t.Cleanup(func() { nothingRuns(t, mark) })
	return e, mark
}

// waitExit waits for the daemon to exit within limit, and returns its
// error.
func waitExit(t *testing.T, d *daemon, limit time.Duration) error {
	t.Helper()
	select {
	case <-d.waited:
	case <-time.After(limit):
		t.Fatalf("the daemon did not exit within %v\n%s", limit, tail(d.out.String()))
	}
	if d.ProcessState.Success() {
		return nil
	}
	return fmt.Errorf("%s", d.ProcessState)
}

// A thousand HUPs while jobs run: every one is a reload (or several
// coalesce), none is refused, no job is lost or run twice, and the
// daemon answers and stops cleanly.
func TestFaultThousandHUPs(t *testing.T) {
	e, _ := newSignalEnv(t, "5s")
	const n = 100
	for i := range n {
		e.put(fmt.Sprintf("ok-%03d", i), "ok\n")
	}
	d := e.start()
	e.waitFor("ready", d, func() bool { return strings.Contains(d.out.String(), `"msg":"ready"`) })
	for range 1000 {
		if err := d.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	pollUntil(t, "the jobs done", 60*time.Second, func() bool { return e.count("done") == n },
		func() string { return tail(d.out.String()) })
	s := e.status()
	if s.State != "running" || s.ReloadsFailed != 0 || s.Reloads < 1 || s.Generation != s.Reloads+1 {
		t.Errorf("after 1000 HUPs: %d reloads, %d refused, generation %d, state %s", s.Reloads, s.ReloadsFailed, s.Generation, s.State)
	}
	runs := readRuns(t, filepath.Join(e.dir, "runs"))
	for i := range n {
		if id := fmt.Sprintf("ok-%03d", i); runs[id] != 1 {
			t.Errorf("%s ran %d times", id, runs[id])
		}
	}
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Errorf("after TERM: %v\n%s", err, tail(d.out.String()))
	}
	t.Logf("1000 HUPs made %d reloads", s.Reloads)
}

// TERM right behind a HUP, while jobs run: the daemon finishes or
// refuses the reload, stops gracefully, and puts the running jobs back
// without counting their attempt; five times over.
func TestFaultTermDuringReload(t *testing.T) {
	e, _ := newSignalEnv(t, "5s")
	for i := range 4 {
		e.put(fmt.Sprintf("long-%d", i), "long\n")
	}
	for round := range 5 {
		d := e.start()
		e.waitFor("four jobs running", d, func() bool { return e.count("running") == 4 })
		d.Process.Signal(syscall.SIGHUP)
		d.Process.Signal(syscall.SIGTERM)
		if err := waitExit(t, d, 20*time.Second); err != nil {
			t.Fatalf("round %d: %v\n%s", round, err, tail(d.out.String()))
		}
		if e.count("incoming") != 4 || e.count("failed") != 0 {
			t.Fatalf("round %d: %d jobs back in incoming/, %d failed", round, e.count("incoming"), e.count("failed"))
		}
		if _, err := os.Stat(filepath.Join(e.dir, "jobdaemon.pid")); err == nil {
			t.Errorf("round %d: the PID file is left", round)
		}
	}
	// Interrupted five times, the jobs still have both their attempts:
	// each run that got as far as noting itself (a TERM may come first)
	// was a first attempt, and what incoming/ holds says attempt 1 (a
	// job file with no sidecar is at its first).
	b, err := os.ReadFile(filepath.Join(e.dir, "runs"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if !strings.HasSuffix(line, " 1") {
			t.Errorf("a run after interruptions was not a first attempt: %q", line)
		}
	}
	for i := range 4 {
		m, err := os.ReadFile(filepath.Join(e.spool, "incoming", fmt.Sprintf(".long-%d.meta.json", i)))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil || !strings.Contains(string(m), `"attempt":1,`) {
			t.Errorf("long-%d after five interruptions: %s %v", i, m, err)
		}
	}
}

// A second TERM kills at once jobs that ignore the first, well before
// stop_timeout; they go back as interrupted.
func TestFaultTermThenTerm(t *testing.T) {
	// INT is TERM's twin (a ^C in a terminal): both, and one of each.
	for _, sigs := range [][2]syscall.Signal{{syscall.SIGTERM, syscall.SIGTERM}, {syscall.SIGINT, syscall.SIGINT}, {syscall.SIGTERM, syscall.SIGINT}} {
		t.Run(sigs[0].String()+" then "+sigs[1].String(), func(t *testing.T) { faultStopTwice(t, sigs[0], sigs[1]) })
	}
}

func faultStopTwice(t *testing.T, first, second syscall.Signal) {
	e, _ := newSignalEnv(t, "60s")
	for i := range 3 {
		e.put(fmt.Sprintf("stubborn-%d", i), "stubborn\n")
	}
	d := e.start()
	e.waitFor("three jobs running", d, func() bool { return e.count("running") == 3 })
	time.Sleep(200 * time.Millisecond) // the traps are set
	d.Process.Signal(first)
	e.waitFor("stopping", d, func() bool { return strings.Contains(d.out.String(), `"mode":"graceful"`) })
	time.Sleep(300 * time.Millisecond)
	if s := e.status(); s.State != "stopping" || s.Busy != 3 {
		t.Errorf("after the first %v: %+v", first, s)
	}
	d.Process.Signal(second)
	if err := waitExit(t, d, 20*time.Second); err != nil {
		t.Errorf("after the second %v: %v", second, err)
	}
	if e.count("incoming") != 3 || e.count("failed")+e.count("done") != 0 {
		t.Errorf("%d jobs back in incoming/, want 3", e.count("incoming"))
	}
}

// QUIT drains: running jobs go on and nothing new starts; a TERM then
// stops them gracefully.
func TestFaultQuitThenTerm(t *testing.T) {
	e, _ := newSignalEnv(t, "60s")
	for i := range 2 {
		e.put(fmt.Sprintf("long-%d", i), "long\n")
	}
	d := e.start()
	e.waitFor("two jobs running", d, func() bool { return e.count("running") == 2 })
	d.Process.Signal(syscall.SIGQUIT)
	e.waitFor("draining", d, func() bool { return e.status().State == "draining" })
	e.put("late", "ok\n")
	time.Sleep(500 * time.Millisecond)
	if s := e.status(); s.Busy != 2 || s.State != "draining" {
		t.Errorf("during the drain: %+v", s)
	}
	d.Process.Signal(syscall.SIGTERM)
	if err := waitExit(t, d, 20*time.Second); err != nil {
		t.Errorf("after QUIT then TERM: %v", err)
	}
	if e.count("incoming") != 3 || e.count("done")+e.count("failed") != 0 {
		t.Errorf("after the stop: %d in incoming/, %d done, %d failed; want the 3 jobs back", e.count("incoming"), e.count("done"), e.count("failed"))
	}
}

// STOP and CONT: a daemon stopped for a while loses nothing of the jobs
// that ended meanwhile.
func TestFaultStopCont(t *testing.T) {
	e, _ := newSignalEnv(t, "5s")
	const n = 40
	for i := range n {
		e.put(fmt.Sprintf("ok-%02d", i), "ok\n")
	}
	d := e.start()
	e.waitFor("jobs running", d, func() bool { return e.count("done") > 0 })
	for range 3 {
		d.Process.Signal(syscall.SIGSTOP)
		time.Sleep(700 * time.Millisecond)
		d.Process.Signal(syscall.SIGCONT)
		time.Sleep(100 * time.Millisecond)
	}
	pollUntil(t, "the jobs done", 60*time.Second, func() bool { return e.count("done") == n },
		func() string { return tail(d.out.String()) })
	runs := readRuns(t, filepath.Join(e.dir, "runs"))
	for i := range n {
		if id := fmt.Sprintf("ok-%02d", i); runs[id] != 1 {
			t.Errorf("%s ran %d times", id, runs[id])
		}
	}
	if s := e.status(); s.State != "running" || s.Succeeded != n {
		t.Errorf("after STOP and CONT: %+v", s)
	}
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Errorf("after TERM: %v", err)
	}
}

// A daemon whose log reader goes away (journald restarting, `jobdaemon run
// | head`) goes on: its writes to the closed pipe fail, they do not kill
// it. Its jobs still start with SIGPIPE at the default action, as a shell
// pipeline in a job expects.
func TestClosedLogPipe(t *testing.T) {
	e := newEnv(t, "")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close() // the reader is gone before the daemon writes a line
	c := e.cmd("run")
	c.Stdout, c.Stderr = w, w
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	var waitErr error
	waited := make(chan struct{})
	go func() { waitErr = c.Wait(); close(waited) }()
	t.Cleanup(func() {
		c.Process.Kill()
		<-waited
	})
	e.put("sigs", "sigs\n")
	pollUntil(t, "the job filed", 10*time.Second, func() bool {
		where, _ := e.result("sigs")
		return where != ""
	}, func() string {
		select {
		case <-waited:
			return fmt.Sprintf("the daemon exited: %v", waitErr)
		default:
			return "the daemon runs"
		}
	})
	where, rec := e.result("sigs")
	if where != "done" {
		t.Fatalf("the job ended in %s: %+v", where, rec)
	}
	// SigIgn is a hexadecimal mask; SIGPIPE (13) is bit 12.
	var ign uint64
	for _, line := range strings.Split(rec.Output, "\n") {
		if v, ok := strings.CutPrefix(line, "SigIgn:"); ok {
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%x", &ign); err != nil {
				t.Fatalf("SigIgn %q: %v", v, err)
			}
		}
	}
	if !strings.Contains(rec.Output, "SigIgn:") {
		t.Fatalf("the job printed no SigIgn: %q", rec.Output)
	}
	if ign&(1<<(syscall.SIGPIPE-1)) != 0 {
		t.Errorf("the job started with SIGPIPE ignored (SigIgn %x)", ign)
	}
	c.Process.Signal(syscall.SIGTERM)
	select {
	case <-waited:
		if waitErr != nil {
			t.Fatalf("the daemon's stop: %v", waitErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon did not stop within 10 s")
	}
}
