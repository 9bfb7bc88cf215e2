package pool

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// isoCmdSpec re-executes the test binary as an isoCmd job.
func isoCmdSpec(t *testing.T, args ...string) *Spec {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &Spec{Path: self, Args: append([]string{"isocmd"}, args...),
		Env: append(os.Environ(), helperEnv+"="+isoCmd, "GORACE=atexit_sleep_ms=0")}
}

// A grandchild that the job neither waits for nor leaves running (it ends
// before the job) counts in a cgroup's CPU time, not in rusage.
func TestCPUOfWholeTree(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The spinner is double-forked, so the job's shell never waits for it;
	// the shell ends once the spinner has used its CPU time.
	script := `( "$0" spin 300ms "$DONE" & ); while [ ! -e "$DONE" ]; do sleep 0.05; done`
	for _, tc := range []struct {
		name string
		iso  Isolation
	}{
		{"cgroup per job", Isolation{Cgroups: CgroupRequire, PerJobCgroups: true}},
		{"cgroup per slot", Isolation{Cgroups: CgroupRequire}},
		{"process group", Isolation{Cgroups: CgroupOff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cgroups := tc.iso.Cgroups == CgroupRequire
			if cgroups {
				needCgroups(t)
				tc.iso.CgroupName = testCgroupName(t)
			}
			p := newPool(t, Config{Max: 1, Isolation: tc.iso})
			c := mustStart(t, p, &Spec{Path: "/bin/sh", Args: []string{"sh", "-c", script, self},
				Env: append(os.Environ(), helperEnv+"="+isoCmd, "GORACE=atexit_sleep_ms=0", "DONE="+filepath.Join(t.TempDir(), "done"))})
			e := waitDone(t, c, 30*time.Second)
			if !e.Success() {
				t.Fatalf("job: %s", e)
			}
			cpu := e.UserCPU + e.SysCPU
			t.Logf("CPU %v (user %v, system %v) from %v", cpu, e.UserCPU, e.SysCPU, e.CPUFrom)
			if cgroups {
				if e.CPUFrom != FromCgroup || cpu < 250*time.Millisecond {
					t.Errorf("CPU %v from %v: want the spinning grandchild's 300ms, from the cgroup", cpu, e.CPUFrom)
				}
			} else if e.CPUFrom != FromRusage || cpu > 200*time.Millisecond {
				t.Errorf("CPU %v from %v: want rusage, without the grandchild it did not wait for", cpu, e.CPUFrom)
			}
			if tc.iso.PerJobCgroups || tc.iso.Cgroups != CgroupRequire {
				return
			}
			// The slot's next job reuses the cgroup, and is charged only
			// its own CPU.
			c2 := mustStart(t, p, &Spec{Path: "/bin/true"})
			e2 := waitDone(t, c2, 10*time.Second)
			if c2.Cgroup() != c.Cgroup() {
				t.Errorf("the slot's second job ran in %s, the first in %s", c2.Cgroup(), c.Cgroup())
			}
			if cpu2 := e2.UserCPU + e2.SysCPU; e2.CPUFrom != FromCgroup || cpu2 > 100*time.Millisecond {
				t.Errorf("/bin/true after the spinner: CPU %v from %v", cpu2, e2.CPUFrom)
			}
		})
	}
}

// The rusage peak of a child is, at least, the daemon's own (it inherits
// it through CLONE_VM): /bin/true's is not reported, while a job larger
// than the daemon is measured.
func TestMaxRSS(t *testing.T) {
	for _, cgroups := range []bool{true, false} {
		t.Run("cgroups="+strconv.FormatBool(cgroups), func(t *testing.T) {
			iso := Isolation{Cgroups: CgroupOff}
			if cgroups {
				needCgroups(t)
				iso = Isolation{Cgroups: CgroupRequire, CgroupName: testCgroupName(t)}
			}
			p := newPool(t, Config{Max: 1, Isolation: iso})
			e := waitDone(t, mustStart(t, p, &Spec{Path: "/bin/true"}), 10*time.Second)
			if e.MaxRSS != 0 || e.MaxRSSFrom != NotMeasured {
				t.Errorf("/bin/true: MaxRSS %d from %v, want not measured (the daemon's peak is %d)", e.MaxRSS, e.MaxRSSFrom, selfMaxRSS())
			}
			checkPeaks(t, e, p.Isolation())

			mib := int(selfMaxRSS()>>20) + 64
			e = waitDone(t, mustStart(t, p, isoCmdSpec(t, "alloc", strconv.Itoa(mib))), 30*time.Second)
			if !e.Success() {
				t.Fatalf("alloc: %s", e)
			}
			if e.MaxRSSFrom != FromRusage || e.MaxRSS < int64(mib)<<20 || e.MaxRSS > int64(mib+200)<<20 {
				t.Errorf("a job that touched %d MiB: MaxRSS %d MiB from %v", mib, e.MaxRSS>>20, e.MaxRSSFrom)
			}
			checkPeaks(t, e, p.Isolation())
		})
	}
}

// checkPeaks checks the cgroup peaks: there where the jobs' cgroups have
// the controllers, 0 elsewhere.
func checkPeaks(t *testing.T, e *Exit, st IsolationStatus) {
	t.Helper()
	memory, pids := false, false
	for _, c := range st.Controllers {
		memory = memory || c == "memory"
		pids = pids || c == "pids" && !st.PerSlot
	}
	if memory != (e.MemoryPeak > 0) || pids != (e.PidsPeak > 0) {
		t.Errorf("memory controller %v, peak %d; pids controller %v, peak %d", memory, e.MemoryPeak, pids, e.PidsPeak)
	}
}
