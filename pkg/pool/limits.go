package pool

import (
	"fmt"
	"strconv"
)

// Limits are per-job resource limits, written into each job's cgroup.
// Zero values set nothing.
type Limits struct {
	// MemoryMax is the most memory the job's tree may use, in bytes
	// (memory.max: beyond it the kernel reclaims, then kills).
	MemoryMax int64
	// PidsMax is the most processes and threads the job's tree may have
	// at once (pids.max: a fork beyond it fails).
	PidsMax int64
	// CPUWeight is the job's share of CPU time against its siblings when
	// the CPU is busy, 1 to 10000; the kernel's default is 100
	// (cpu.weight).
	CPUWeight int
	// CPUMax caps the job's tree at this many CPUs' worth of time, 0.5
	// for half of one (cpu.max, over a 100 ms period).
	CPUMax float64
}

// limitFile is one cgroup file to write, and the controller that provides
// it.
type limitFile struct {
	name, value, controller string
}

// cpuPeriod is the period of cpu.max, in microseconds: the kernel's
// default.
const cpuPeriod = 100000

// files returns the cgroup files that carry the limits, or an error for a
// value out of range.
func (l Limits) files() ([]limitFile, error) {
	var fs []limitFile
	switch {
	case l.MemoryMax < 0:
		return nil, fmt.Errorf("memory limit %d is negative", l.MemoryMax)
	case l.MemoryMax > 0:
		fs = append(fs, limitFile{"memory.max", strconv.FormatInt(l.MemoryMax, 10), "memory"})
	}
	switch {
	case l.PidsMax < 0:
		return nil, fmt.Errorf("pids limit %d is negative", l.PidsMax)
	case l.PidsMax > 0:
		fs = append(fs, limitFile{"pids.max", strconv.FormatInt(l.PidsMax, 10), "pids"})
	}
	switch {
	case l.CPUWeight < 0 || l.CPUWeight > 10000:
		return nil, fmt.Errorf("CPU weight %d is not between 1 and 10000", l.CPUWeight)
	case l.CPUWeight > 0:
		fs = append(fs, limitFile{"cpu.weight", strconv.Itoa(l.CPUWeight), "cpu"})
	}
	quota := int64(l.CPUMax * cpuPeriod)
	switch {
	case l.CPUMax < 0:
		return nil, fmt.Errorf("CPU limit %g is negative", l.CPUMax)
	case l.CPUMax > 0 && quota < 1000:
		// The kernel refuses a quota under 1 ms.
		return nil, fmt.Errorf("CPU limit %g is below 0.01 CPU", l.CPUMax)
	case l.CPUMax > 0:
		fs = append(fs, limitFile{"cpu.max", fmt.Sprintf("%d %d", quota, cpuPeriod), "cpu"})
	}
	return fs, nil
}

// writeLimits writes the limit files into the cgroup d.
func writeLimits(d *cgroupDir, fs []limitFile) error {
	for _, f := range fs {
		if err := d.write(f.name, f.value); err != nil {
			return fmt.Errorf("set job limit: %w", err)
		}
	}
	return nil
}
