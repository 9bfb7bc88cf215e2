package pool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLimitFiles(t *testing.T) {
	fs, err := Limits{MemoryMax: 64 << 20, PidsMax: 100, CPUWeight: 50, CPUMax: 1.5}.files()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"memory.max": "67108864", "pids.max": "100", "cpu.weight": "50", "cpu.max": "150000 100000"}
	if len(fs) != len(want) {
		t.Fatalf("files %+v", fs)
	}
	// Written as into a cgroup: the files exist, the pool only writes.
	dir := t.TempDir()
	for _, f := range fs {
		if want[f.name] != f.value {
			t.Errorf("%s = %q, want %q", f.name, f.value, want[f.name])
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d, err := openCgroup(dir, "/test", false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if err := writeLimits(d, fs); err != nil {
		t.Fatal(err)
	}
	for name, v := range want {
		if b, _ := os.ReadFile(filepath.Join(dir, name)); string(b) != v {
			t.Errorf("%s holds %q, want %q", name, b, v)
		}
	}
	if fs, err := (Limits{}).files(); err != nil || len(fs) != 0 {
		t.Errorf("no limits: %v, %v", fs, err)
	}
	for _, bad := range []Limits{{MemoryMax: -1}, {PidsMax: -1}, {CPUWeight: 10001}, {CPUWeight: -1}, {CPUMax: 0.001}, {CPUMax: -1}} {
		if _, err := bad.files(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// Limits are never ignored: New refuses them without per-job cgroups, and
// without the controller they need; where it accepts them, each job's
// cgroup has them.
func TestLimitsRefusedOrApplied(t *testing.T) {
	limits := Limits{MemoryMax: 256 << 20}
	_, err := New(Config{Isolation: Isolation{Cgroups: CgroupOff, Limits: limits}})
	if err == nil || !strings.Contains(err.Error(), "need per-job cgroups") {
		t.Errorf("limits with process groups: %v", err)
	}
	needCgroups(t)
	for _, tc := range []struct {
		limits     Limits
		file, want string
	}{
		{Limits{MemoryMax: 256 << 20}, "memory.max", "268435456"},
		{Limits{PidsMax: 50}, "pids.max", "50"},
		{Limits{CPUMax: 0.5}, "cpu.max", "50000 100000"},
		{Limits{CPUWeight: 20}, "cpu.weight", "20"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			controller, _, _ := strings.Cut(tc.file, ".")
			p, err := New(Config{Max: 1, Isolation: Isolation{Cgroups: CgroupRequire, CgroupName: testCgroupName(t), Limits: tc.limits}})
			if err != nil {
				// Refused: the message names the file and the controller.
				if !strings.Contains(err.Error(), tc.file) || !strings.Contains(err.Error(), controller+" controller") {
					t.Errorf("refusal does not say what is missing: %v", err)
				}
				t.Logf("refused, as it must be on this host: %v", err)
				return
			}
			defer p.Close()
			c := mustStart(t, p, &Spec{Path: "/bin/sleep", Args: []string{"sleep", "10"}})
			b, err := os.ReadFile(filepath.Join(c.Cgroup(), tc.file))
			if err != nil || strings.TrimSpace(string(b)) != tc.want {
				t.Errorf("%s of the job's cgroup: %q, %v; want %q", tc.file, b, err, tc.want)
			}
			c.Stop(0, time.Millisecond)
			waitDone(t, c, 10*time.Second)
		})
	}
}
