package pool

import (
	"fmt"
	"os"
	"testing"
)

// BenchmarkIsolation runs /bin/true as in BenchmarkCommandChild, in each
// way of holding a job together, in the same run: process groups, a new
// cgroup per job, a cgroup per slot reused by its jobs. The difference
// between them is the cost per job of the isolation; process groups with
// a state directory add the record of each job's group. Per-job and per-slot
// cgroups need root (or a delegated cgroup); bench/cgroups.sh runs them.
func BenchmarkIsolation(b *testing.B) {
	spec := &Spec{Path: "/bin/true", Env: []string{}}
	start := func(p *Pool, slot int) error {
		_, err := p.Start(slot, spec)
		return err
	}
	for _, m := range []struct {
		name string
		iso  Isolation
	}{
		{"process-group", Isolation{Cgroups: CgroupOff}},
		// The record of each job's group, for a restart after a crash.
		{"process-group-state-dir", Isolation{Cgroups: CgroupOff, StateDir: "state"}},
		{"cgroup-per-job", Isolation{Cgroups: CgroupRequire, PerJobCgroups: true}},
		{"cgroup-per-slot", Isolation{Cgroups: CgroupRequire}},
	} {
		b.Run(m.name, func(b *testing.B) {
			if m.iso.Cgroups == CgroupRequire {
				if _, err := SettleCgroup(); err != nil {
					b.Skipf("no per-job cgroups: %v", err)
				}
				m.iso.CgroupName = fmt.Sprintf("poolbench-%d", os.Getpid())
			}
			if m.iso.StateDir != "" {
				// tmpfs, as /run is.
				dir, err := os.MkdirTemp("/dev/shm", "poolbench-")
				if err != nil {
					b.Fatal(err)
				}
				defer os.RemoveAll(dir)
				m.iso.StateDir = dir
			}
			runChildrenIn(b, m.iso, start)
		})
	}
}
