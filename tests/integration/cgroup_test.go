package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A job is its whole process tree: what a job leaves behind is killed when
// it ends, even when it left its process group with setsid (cgroups), and
// after a crash, before the jobs run again. Each leftover here is a sleep
// with a duration of its own, its marker, so that the test can look for it.

// treeScript does what its job file says; N is the marker.
const treeScript = `#!/bin/sh
read -r what n <"$1" || true
case "$what" in
bg) sleep "$n" & echo "left sleep $n" ;;
setsid) setsid sh -c "sleep $n &" ; echo "left a setsid sleep $n" ;;
leader) sleep "$n" & wait ;;
timeout) setsid sleep "$n" & sleep 300 ;;
crash) sleep "$((n + JOB_ATTEMPT))" & exec sleep "$((n + 90))" ;;
spin) setsid sh -c 'end=$(($(date +%s) + 2)); while [ "$(date +%s)" -lt "$end" ]; do :; done' & sleep 3 ;;
true) exec /bin/true ;;
*) echo "unknown job $what" >&2; exit 64 ;;
esac
`

// sleepers returns the pids of the processes "sleep N".
func sleepers(n int) []int {
	var pids []int
	want := []byte("sleep\x00" + strconv.Itoa(n) + "\x00")
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.HasSuffix(b, want) && bytes.HasPrefix(b, []byte("sleep")) && processExists(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killSleepers ends what a test may have left, whatever happened.
func killSleepers(t *testing.T, markers ...int) {
	t.Cleanup(func() {
		for _, n := range markers {
			for _, pid := range sleepers(n) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
}

type treeRecord struct {
	record
	UserCPU    float64 `json:"user_cpu_seconds"`
	SysCPU     float64 `json:"sys_cpu_seconds"`
	CPUFrom    string  `json:"cpu_from"`
	MaxRSS     int64   `json:"max_rss_bytes"`
	MaxRSSFrom string  `json:"max_rss_from"`
}

func (e *env) treeRecord(name string) treeRecord {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.spool, "done", name+".result.json"))
	if err != nil {
		b, err = os.ReadFile(filepath.Join(e.spool, "failed", name+".result.json"))
	}
	if err != nil {
		e.t.Fatal(err)
	}
	var r treeRecord
	if err := json.Unmarshal(b, &r); err != nil {
		e.t.Fatal(err)
	}
	return r
}

func newTreeEnv(t *testing.T, extra string) *env {
	t.Helper()
	e := newEnv(t, extra)
	if err := os.WriteFile(filepath.Join(e.dir, "job.sh"), []byte(treeScript), 0o755); err != nil {
		t.Fatal(err)
	}
	return e
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test needs root")
		}
		t.Skip("this test needs root")
	}
}

// waitFiled waits until the job has a record.
func (e *env) waitFiled(name string, d *daemon) {
	e.t.Helper()
	pollUntil(e.t, name+" filed", 20*time.Second, func() bool {
		where, _ := e.result(name)
		return where != ""
	}, func() string { return tail(d.out.String()) })
}

func TestJobLeavesNothing(t *testing.T) {
	needRoot(t)
	for _, mode := range []string{"per-slot", "per-job"} {
		t.Run(mode, func(t *testing.T) {
			killSleepers(t, 3101, 3102, 3103, 3104)
			e := newTreeEnv(t, "")
			e.edit("[pool]\n", fmt.Sprintf("[pool]\ncgroups = \"require\"\ncgroup_per_job = %v\n", mode == "per-job"))
			d := e.start()
			e.waitFor("ready", d, func() bool { return strings.Contains(d.out.String(), `"msg":"ready"`) })
			st := e.status()
			if !strings.Contains(st.Isolation, "cgroups in ") {
				t.Fatalf("isolation: %q", st.Isolation)
			}
			cgroup := st.Isolation[strings.LastIndex(st.Isolation, " in ")+4:]

			e.put("bg", "bg 3101\n")
			e.put("setsid", "setsid 3102\n")
			e.put("timeout", "timeout 3103\n")
			e.put("leader", "leader 3104\n")
			e.waitFor("the leader job runs", d, func() bool { return len(sleepers(3104)) == 1 })
			var leader int
			for _, sl := range e.status().Slots {
				if sl.JobID == "leader" {
					leader = sl.Pid
				}
			}
			if leader == 0 {
				t.Fatal("no slot runs the leader job")
			}
			syscall.Kill(leader, syscall.SIGKILL) // from outside, the leader alone
			for _, job := range []string{"bg", "setsid", "timeout", "leader"} {
				e.waitFiled(job, d)
			}
			for n := 3101; n <= 3104; n++ {
				if pids := sleepers(n); len(pids) > 0 {
					t.Errorf("sleep %d outlived its job: pids %v", n, pids)
				}
			}
			if _, r := e.result("timeout"); !r.TimedOut {
				t.Errorf("timeout: %+v", r)
			}
			// No job process is left in the jobs' cgroups; per-job
			// cgroups are removed.
			filepath.WalkDir(cgroup, func(path string, de os.DirEntry, err error) error {
				if err != nil || de.Name() != "cgroup.procs" {
					return nil
				}
				if b, _ := os.ReadFile(path); len(bytes.TrimSpace(b)) > 0 {
					t.Errorf("%s holds %q", path, b)
				}
				if mode == "per-job" && filepath.Dir(path) != cgroup {
					t.Errorf("the job cgroup %s was not removed", filepath.Dir(path))
				}
				return nil
			})

			// Figures: the CPU of a grandchild the job did not wait for,
			// and no max_rss that is the daemon's. The grandchild spins
			// for 2 s of wall time, which a loaded machine may halve and
			// halve again; the leader alone (sh, sleep) uses milliseconds.
			e.put("spin", "spin\n")
			e.put("true", "true\n")
			e.waitFiled("spin", d)
			e.waitFiled("true", d)
			if r := e.treeRecord("spin"); r.CPUFrom != "cgroup" || r.UserCPU+r.SysCPU < 0.2 {
				t.Errorf("spin: cpu %.2f+%.2f s from %q; want the grandchild's, up to 2 s, from the cgroup", r.UserCPU, r.SysCPU, r.CPUFrom)
			}
			if r := e.treeRecord("true"); r.MaxRSSFrom != "not measured" || r.MaxRSS != 0 {
				t.Errorf("true: max_rss %d from %q, want 0, not measured", r.MaxRSS, r.MaxRSSFrom)
			}
			if err := d.stop(syscall.SIGTERM); err != nil {
				t.Fatalf("stop: %v\n%s", err, tail(d.out.String()))
			}
		})
	}
}

// Without cgroups, the rest of a job's process group is killed when its
// command ends; what calls setsid escapes, which the status says.
func TestJobLeavesNothingProcessGroups(t *testing.T) {
	killSleepers(t, 3201, 3202)
	e := newTreeEnv(t, "")
	e.edit("[pool]\n", "[pool]\ncgroups = \"off\"\n")
	d := e.start()
	e.waitFor("ready", d, func() bool { return strings.Contains(d.out.String(), `"msg":"ready"`) })
	if st := e.status(); !strings.HasPrefix(st.Isolation, "process groups: ") {
		t.Errorf("isolation: %q", st.Isolation)
	}
	e.put("bg", "bg 3201\n")
	e.waitFiled("bg", d)
	if pids := sleepers(3201); len(pids) > 0 {
		t.Errorf("sleep 3201 outlived its job: %v", pids)
	}
	d.stop(syscall.SIGTERM)
}

// A daemon SIGKILLed with jobs running is restarted: what those jobs left
// is killed before they run again, so that a job never runs twice at
// once; with cgroups and with recorded process groups.
func TestCrashLeftoversKilledBeforeRerun(t *testing.T) {
	needRoot(t)
	for _, mode := range []string{"auto", "off"} {
		t.Run(mode, func(t *testing.T) {
			killSleepers(t, 3301, 3302, 3303, 3390)
			e := newTreeEnv(t, "")
			e.edit("[pool]\n", "[pool]\ncgroups = \""+mode+"\"\n")
			e.edit(`job_timeout = "1s"`, `job_timeout = "0s"`)
			d := e.start()
			for i := range 4 {
				e.put(fmt.Sprintf("crash-%d", i), "crash 3300\n")
			}
			// Attempt 1 leaves "sleep 3301" beside each command, "sleep
			// 3390" (a number of this test's own: other packages' tests,
			// which may run at the same time, start "sleep 300").
			e.waitFor("four jobs and their leftovers", d, func() bool { return len(sleepers(3301)) == 4 && len(sleepers(3390)) == 4 })
			old := sleepers(3301)
			d.Process.Kill()
			<-d.waited
			// The commands die with the daemon (Pdeathsig), not what they
			// started.
			pollUntil(t, "the commands gone", 5*time.Second, func() bool { return len(sleepers(3390)) == 0 },
				func() string { return fmt.Sprintf("still there: %v", sleepers(3390)) })
			if left := sleepers(3301); len(left) == 0 {
				t.Fatalf("nothing was left by the killed daemon's jobs: the test proves nothing")
			}

			d2 := e.start()
			// Attempt 2 runs "sleep 3302": by then, no 3301 may be left.
			e.waitFor("the jobs run again", d2, func() bool { return len(sleepers(3302)) == 4 })
			if left := sleepers(3301); len(left) > 0 {
				t.Errorf("the previous run's leftovers %v still run beside the jobs' second run (%v before)", left, old)
			}
			if !strings.Contains(d2.out.String(), "killed what a previous run") {
				t.Errorf("the restarted daemon did not say it killed leftovers:\n%s", tail(d2.out.String()))
			}
			d2.stop(syscall.SIGTERM)
		})
	}
}

// A daemon that is not root, outside systemd, cannot have cgroups: it
// says why, once, and runs jobs in process groups, whose leftovers it
// kills.
func TestNonRootProcessGroups(t *testing.T) {
	needRoot(t) // to become nobody
	killSleepers(t, 3401)
	e := newTreeEnv(t, "")
	classicTraversable(t, e.dir)
	if err := filepath.WalkDir(e.dir, func(p string, _ os.DirEntry, err error) error {
		if err == nil {
			err = os.Lchown(p, 65534, 65534)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// The test's binary is in a directory that only root may enter.
	bin := filepath.Join(e.dir, "jobdaemon")
	data, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bin, data, 0o755)
	d := &daemon{Cmd: e.cmd("run"), out: &syncBuffer{}, waited: make(chan struct{})}
	d.Path, d.Args[0] = bin, bin
	d.Stdout, d.Stderr = d.out, d.out
	d.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.Wait(); close(d.waited) }()
	t.Cleanup(func() { d.Process.Kill(); <-d.waited })
	e.waitFor("ready", d, func() bool { return strings.Contains(d.out.String(), `"msg":"ready"`) })
	if st := e.status(); !strings.HasPrefix(st.Isolation, "process groups: ") {
		t.Errorf("isolation as nobody: %q", st.Isolation)
	}
	if n := strings.Count(d.out.String(), "jobs run in process groups"); n != 1 {
		t.Errorf("the fallback is said %d times, want once:\n%s", n, tail(d.out.String()))
	}
	e.put("bg", "bg 3401\n")
	e.waitFiled("bg", d)
	if pids := sleepers(3401); len(pids) > 0 {
		t.Errorf("sleep 3401 outlived its job: %v", pids)
	}
	d.stop(syscall.SIGTERM)
}

// edit replaces old, which must be there, by new in the config file.
func (e *env) edit(old, new string) {
	e.t.Helper()
	b, err := os.ReadFile(e.config)
	if err != nil || !bytes.Contains(b, []byte(old)) {
		e.t.Fatalf("config has no %q (%v)", old, err)
	}
	if err := os.WriteFile(e.config, bytes.Replace(b, []byte(old), []byte(new), 1), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// A limit is never ignored: where the cgroup v2 controller it needs is
// missing (memory and pids are on cgroup v1 on these machines), the
// daemon refuses to start and says which and why.
func TestLimitWithoutControllerIsRefused(t *testing.T) {
	needRoot(t)
	e := newTreeEnv(t, "")
	e.edit("max_attempts = 2\n", "max_attempts = 2\nmemory_max = \"64MiB\"\n")
	for _, f := range []string{"/sys/fs/cgroup/unified/cgroup.controllers", "/sys/fs/cgroup/cgroup.controllers"} {
		if b, _ := os.ReadFile(f); bytes.Contains(b, []byte("memory")) {
			t.Skip("this host's cgroup v2 has the memory controller: the refusal cannot be shown")
		}
	}
	code, out := e.run("run", "--drain") // --drain: should it start, it ends
	if code == 0 || !strings.Contains(out, "memory.max") || !strings.Contains(out, "memory controller") {
		t.Errorf("run with memory_max and no memory controller: exit %d\n%s", code, tail(out))
	}
}
