package pool

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// needCgroups skips a test that needs per-job cgroups where this process
// cannot have them; under CI=true it fails instead, since CI runs as root
// on a host whose cgroup v2 hierarchy it may write.
func needCgroups(t *testing.T) {
	t.Helper()
	_, err := SettleCgroup()
	if err == nil && os.Geteuid() != 0 {
		err = fmt.Errorf("not root")
	}
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("per-job cgroups are needed and not available, and CI=true: %v", err)
	}
	t.Skipf("per-job cgroups are not available: %v", err)
}

// testCgroupName is a cgroup name of this test process's own: tests of
// several engineers run at once on one host.
func testCgroupName(t *testing.T) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '_'
	}, t.Name())
	return fmt.Sprintf("pooltest-%d-%s", os.Getpid(), name)
}

// After each job that tries to leave something behind, nothing of it is
// left, and (with cgroups) neither is its cgroup.
func TestNothingOutlivesItsJob(t *testing.T) {
	modes := []struct {
		name  string
		iso   Isolation
		grace time.Duration
		// killLoop kills as on a kernel without cgroup.kill (before 5.14).
		killLoop bool
	}{
		{"cgroup per job", Isolation{Cgroups: CgroupRequire, PerJobCgroups: true}, 0, false},
		{"cgroup per slot", Isolation{Cgroups: CgroupRequire}, 0, false},
		{"cgroup per slot, kill loop", Isolation{Cgroups: CgroupRequire}, 0, true},
		{"process group", Isolation{Cgroups: CgroupOff}, 5 * time.Second, false},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cgroups := m.iso.Cgroups == CgroupRequire
			if cgroups {
				needCgroups(t)
				m.iso.CgroupName = testCgroupName(t)
			}
			r := newLineRouter()
			p := newPool(t, Config{Max: 2, Sink: r, OutputDrain: 200 * time.Millisecond, Isolation: m.iso})
			if st := p.Isolation(); st.Cgroups != cgroups {
				t.Fatalf("isolation %+v", st)
			}
			if m.killLoop {
				p.iso.cg.useKill = false
			}
			tmp := t.TempDir()
			for _, sc := range scenarios {
				if sc.Setsid && !cgroups {
					continue // a process group cannot hold a setsid escapee
				}
				res := runScenario(p, r, sc, tmp, m.grace)
				checkScenario(t, sc, res, cgroups, !m.iso.PerJobCgroups)
			}
		})
	}
}

// checkScenario checks what runScenario saw.
func checkScenario(t *testing.T, sc scenario, res scenarioResult, cgroups, perSlot bool) {
	t.Helper()
	if res.Err != "" {
		t.Errorf("%s: %s", sc.Name, res.Err)
		return
	}
	if res.Leftover <= 0 {
		t.Errorf("%s: the job printed no pid", sc.Name)
	}
	if len(res.Left) > 0 {
		t.Errorf("%s: processes %v of the job left after it ended (it printed %d)", sc.Name, res.Left, res.Leftover)
	}
	if sc.KillLeader && (!res.AliveBefore || res.Exit != "signal killed") {
		t.Errorf("%s: leftover alive before the kill %v, exit %s", sc.Name, res.AliveBefore, res.Exit)
	}
	if sc.Timeout > 0 && !res.TimedOut {
		t.Errorf("%s: exit %s, want a timeout", sc.Name, res.Exit)
	}
	switch {
	case !cgroups && res.Cgroup != "":
		t.Errorf("%s: a cgroup %s in process-group mode", sc.Name, res.Cgroup)
	case cgroups && res.Cgroup == "":
		t.Errorf("%s: no cgroup", sc.Name)
	case cgroups && perSlot && res.CgroupProcs != 0:
		// Kept for the slot's next job if it never needed a kill
		// (jobCgroup.killed), removed otherwise: empty either way.
		t.Errorf("%s: the slot's cgroup %s holds %d processes", sc.Name, res.Cgroup, res.CgroupProcs)
	case cgroups && !perSlot && res.CgroupLeft:
		t.Errorf("%s: the job's cgroup %s is left, with %d processes", sc.Name, res.Cgroup, res.CgroupProcs)
	}
}

// With KeepLeftovers, what a job leaves runs on after it (and, with
// cgroups, its cgroup stays until it is empty). This is also the control
// of TestNothingOutlivesItsJob: its jobs do leave something.
func TestKeepLeftovers(t *testing.T) {
	for _, cgroups := range []bool{true, false} {
		t.Run(fmt.Sprint("cgroups=", cgroups), func(t *testing.T) {
			iso := Isolation{Cgroups: CgroupOff, KeepLeftovers: true}
			if cgroups {
				needCgroups(t)
				iso.Cgroups, iso.CgroupName = CgroupRequire, testCgroupName(t)
			}
			r := newLineRouter()
			p := newPool(t, Config{Max: 1, Sink: r, OutputDrain: 100 * time.Millisecond, Isolation: iso})
			c := mustStart(t, p, &Spec{Path: "/bin/sh", Args: []string{"sh", "-c", "sleep 300 & echo $!"}, Label: "keep"})
			var pid int
			fmt.Sscan(<-r.lines("keep"), &pid)
			waitDone(t, c, 10*time.Second)
			time.Sleep(100 * time.Millisecond)
			if !alive(pid) {
				t.Fatalf("the leftover %d of a job with KeepLeftovers died", pid)
			}
			if cgroups {
				if _, err := os.Stat(c.Cgroup()); err != nil {
					t.Errorf("the job's cgroup, which holds the leftover, is gone: %v", err)
				}
			}
			syscall.Kill(pid, syscall.SIGKILL)
			if !eventually(5*time.Second, func() bool { return !alive(pid) }) {
				t.Fatal("cannot kill the leftover")
			}
			// The next job's end sweeps the emptied cgroup away.
			waitDone(t, mustStart(t, p, &Spec{Path: "/bin/true"}), 10*time.Second)
			if cgroups {
				if _, err := os.Stat(c.Cgroup()); err == nil {
					t.Errorf("the emptied cgroup %s of a kept job was not removed", c.Cgroup())
				}
			}
		})
	}
}

// The daemon SIGKILLed with 4 jobs running: their leaders die with it, what
// they started does not; a daemon started again with the same state kills
// that before it runs any job.
func TestRecoveryAfterCrash(t *testing.T) {
	for _, mode := range []string{"require", "off"} {
		t.Run("cgroups="+mode, func(t *testing.T) {
			name := ""
			if mode == "require" {
				needCgroups(t)
				name = testCgroupName(t)
			}
			state := t.TempDir()
			mark := fmt.Sprintf("crash-%d-%s", os.Getpid(), mode)
			t.Cleanup(func() {
				for _, pid := range markedProcs(mark) {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			daemon, out := startCrashDaemon(t, mode, state, name, mark, "start")
			var rec Recovery
			var before int
			readJSON(t, out, &rec)
			readJSON(t, out, &before)
			if line, err := out.ReadString('\n'); err != nil || line != "ready\n" {
				t.Fatalf("daemon said %q, %v", line, err)
			}
			running := markedProcs(mark)
			// The leaders die of Pdeathsig by themselves, when a busy
			// machine gets to it: one may still be among the leftovers
			// below, and be gone before the recovery looks.
			leaders := map[int]bool{}
			for _, pid := range running {
				if st, err := readProcStat(pid); err == nil {
					if ppid, err := st.field(4); err == nil && int(ppid) == daemon.Process.Pid {
						leaders[pid] = true
					}
				}
			}
			if len(leaders) < 4 {
				t.Fatalf("%d leaders among %v, want the 4 jobs' at least", len(leaders), running)
			}
			daemon.Process.Kill()
			daemon.Wait()
			// The leaders die of Pdeathsig; what they started lives on.
			var left []int
			eventually(5*time.Second, func() bool {
				left = markedProcs(mark)
				return len(left) < len(running)
			})
			time.Sleep(200 * time.Millisecond)
			left = markedProcs(mark)
			if len(left) == 0 || len(left) >= len(running) {
				t.Fatalf("%d processes ran, %d after the daemon's death: want fewer, but some", len(running), len(left))
			}

			daemon, out = startCrashDaemon(t, mode, state, name, mark)
			readJSON(t, out, &rec)
			var after int
			readJSON(t, out, &after)
			daemon.Wait()
			if after != 0 {
				t.Errorf("%d processes of the previous run's jobs still ran when New returned", after)
			}
			if now := markedProcs(mark); len(now) > 0 {
				t.Errorf("processes %v of the previous run's jobs are left", now)
			}
			killed := map[int]bool{}
			for _, l := range rec.Killed {
				killed[l.Pid] = true
			}
			for _, pid := range left {
				if !killed[pid] && !leaders[pid] {
					t.Errorf("the recovery does not report the leftover %d: %s", pid, rec)
				}
			}
			if mode == "require" && rec.Cgroups != 5 || mode == "off" && (rec.Groups != 4 || rec.Stale != 0) {
				t.Errorf("recovery: %+v", rec)
			}
			t.Log(rec)
			ents, _ := os.ReadDir(state)
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), groupRecordPrefix) {
					t.Errorf("record %s left in the state directory", e.Name())
				}
			}
		})
	}
}

func startCrashDaemon(t *testing.T, args ...string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	self, _ := os.Executable()
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), helperEnv+"="+isoCrash)
	// A session of its own, as a daemon has.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, bufio.NewReader(out)
}

func readJSON(t *testing.T, r *bufio.Reader, v any) {
	t.Helper()
	line, err := r.ReadBytes('\n')
	if err != nil {
		t.Fatalf("helper output: %v (%q)", err, line)
	}
	if err := json.Unmarshal(line, v); err != nil {
		t.Fatalf("helper output %q: %v", line, err)
	}
}

// A daemon that runs as a user who cannot write the cgroup hierarchy uses
// process groups, says so once, and still kills what a job leaves.
func TestProcessGroupModeAsNobody(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run the helper as nobody")
	}
	// The test binary lives in a directory only root may enter: nobody
	// runs a copy.
	dir, err := os.MkdirTemp("", "pooltest-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	const nobody = 65534
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "pool.test")
	copyFile(t, bin)
	cmd := exec.Command(bin, filepath.Join(dir, "state"))
	cmd.Env = append(os.Environ(), helperEnv+"="+isoReportMode, "GORACE=atexit_sleep_ms=0")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper as nobody: %v\n%s", err, stderr.String())
	}
	var rep isoReport
	readJSON(t, bufio.NewReader(strings.NewReader(string(out))), &rep)
	if rep.Uid != nobody {
		t.Fatalf("the helper ran as uid %d", rep.Uid)
	}
	if rep.Isolation.Cgroups || rep.Isolation.Reason == "" {
		t.Errorf("as nobody: %+v, want process groups and a reason", rep.Isolation)
	}
	said := 0
	for _, m := range rep.Logged {
		if strings.Contains(m, "process groups") {
			said++
		}
	}
	if said != 1 {
		t.Errorf("process-group mode said %d times, want once: %q", said, rep.Logged)
	}
	checkScenario(t, scenarios[0], rep.Result, false, false)
	t.Logf("as nobody: %s; log: %s", rep.Isolation, stderr.String())
}

// A daemon that root starts without systemd, and that drops to another
// user, keeps per-job cgroups when it delegates a cgroup to that user
// first.
func TestDelegateCgroupAndDrop(t *testing.T) {
	needCgroups(t)
	if place.p.parent != "/" {
		t.Skipf("this process is in cgroup %s, not at the top", place.p.parent)
	}
	name := fmt.Sprintf("pooltest-%d-delegated", os.Getpid())
	dir := filepath.Join(place.p.fs.mount, name)
	t.Cleanup(func() {
		// The helper removed its jobs' cgroups; its leaf is empty now.
		os.Remove(filepath.Join(dir, leafName))
		os.Remove(dir)
	})
	const nobody = 65534
	self, _ := os.Executable()
	cmd := exec.Command(self, name, fmt.Sprint(nobody))
	cmd.Env = append(os.Environ(), helperEnv+"="+isoDelegate, "GORACE=atexit_sleep_ms=0")
	cmd.Dir = "/"
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, stderr.String())
	}
	var rep isoReport
	readJSON(t, bufio.NewReader(strings.NewReader(string(out))), &rep)
	if rep.Uid != nobody || !rep.Isolation.Cgroups || rep.Isolation.Cgroup != filepath.Join(dir, "jobs") {
		t.Errorf("after the drop: uid %d, %+v; want cgroups in %s/jobs", rep.Uid, rep.Isolation, dir)
	}
	checkScenario(t, scenarios[1], rep.Result, true, true)
}

// copyFile copies the test binary to dst, executable by all.
func copyFile(t *testing.T, dst string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, src); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// Two daemons on one host may recover the cgroups of a third that died at
// the same moment: each finds job cgroups that the other removes under
// it. Neither fails for that (a removed cgroup was empty), and nothing of
// the tree is left.
func TestConcurrentRecoveryOfOneTree(t *testing.T) {
	needCgroups(t)
	own, err := ownCgroup(0)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := findCgroupFS(own)
	if err != nil {
		t.Fatal(err)
	}
	// Beside this process's cgroup: a process may not sit in a cgroup
	// with children under the no-internal-process rule.
	parent := fs.dir(own)
	if own != "/" {
		parent = filepath.Dir(parent)
	}
	for round := range 20 {
		top := filepath.Join(parent, fmt.Sprintf("%s-%d", testCgroupName(t), round))
		for slot := range 40 {
			if err := os.MkdirAll(filepath.Join(top, fmt.Sprintf("slot-%d", slot)), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		errs := make(chan error, 2)
		for range 2 {
			go func() {
				var r Recovery
				errs <- r.killCgroupTree(top, true)
			}()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if _, err := os.Stat(top); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("round %d: %s is left: %v", round, top, err)
		}
	}
}
