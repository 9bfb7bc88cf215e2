package jobs

import (
	"fmt"

	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

// CgroupMode says whether jobs get cgroups of their own.
type CgroupMode string

// The cgroup modes.
const (
	// CgroupsAuto (also "") gives each job a cgroup where cgroup v2 can be
	// written (as root, or under systemd with Delegate=yes), and runs jobs
	// in process groups elsewhere, saying why once at start.
	CgroupsAuto CgroupMode = "auto"
	// CgroupsOff always runs jobs in process groups.
	CgroupsOff CgroupMode = "off"
	// CgroupsRequire makes Run fail where jobs cannot have cgroups.
	CgroupsRequire CgroupMode = "require"
)

// Isolation says how each job's processes are held together and limited.
// The zero value gives each job a cgroup where it can (a process group
// elsewhere), kills what a job leaves behind when its command exits, and
// sets no limits. See docs/CGROUPS.md.
type Isolation struct {
	// Cgroups chooses between cgroups and process groups.
	Cgroups CgroupMode
	// PerJobCgroups makes a new cgroup for each job rather than one per
	// slot, reused (about 80 µs more per job; it gives each job its own
	// pids peak).
	PerJobCgroups bool
	// KeepLeftovers lets what a job leaves behind when its command exits
	// run on; a timeout, a stop or the next start after a crash still kill
	// it.
	KeepLeftovers bool
	// StateDir, if set, is where the process groups of running jobs are
	// recorded, so that a daemon started after a crash kills what the
	// previous one's jobs left before it runs any job.
	StateDir string
	// CgroupName names the cgroup that holds the jobs' (see
	// pool.Isolation.CgroupName); "" takes the default.
	CgroupName string
	// MemoryMax, PidsMax, CPUWeight and CPUMax (in CPUs) limit each job's
	// cgroup; 0 sets none. Run fails when a limit is set and the jobs
	// cannot have cgroups with the controller it needs.
	MemoryMax int64
	PidsMax   int64
	CPUWeight int
	CPUMax    float64
}

// poolIsolation returns the pool's form of i.
func (i Isolation) poolIsolation() (pool.Isolation, error) {
	pi := pool.Isolation{
		PerJobCgroups: i.PerJobCgroups,
		KeepLeftovers: i.KeepLeftovers,
		StateDir:      i.StateDir,
		CgroupName:    i.CgroupName,
		Limits:        pool.Limits{MemoryMax: i.MemoryMax, PidsMax: i.PidsMax, CPUWeight: i.CPUWeight, CPUMax: i.CPUMax},
	}
	switch i.Cgroups {
	case "", CgroupsAuto:
		pi.Cgroups = pool.CgroupAuto
	case CgroupsOff:
		pi.Cgroups = pool.CgroupOff
	case CgroupsRequire:
		pi.Cgroups = pool.CgroupRequire
	default:
		return pi, fmt.Errorf("unknown cgroup mode %q: use %q, %q or %q", i.Cgroups, CgroupsAuto, CgroupsOff, CgroupsRequire)
	}
	return pi, nil
}
