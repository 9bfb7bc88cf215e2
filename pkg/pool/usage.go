package pool

import (
	"fmt"
	"os"
	"time"
)

// Usage is what a running child has used so far.
type Usage struct {
	UserCPU, SysCPU time.Duration
	RSS             int64 // resident set size now, in bytes
}

// clockTick is the unit of the CPU times in /proc/PID/stat: USER_HZ, which
// Linux fixes at 100 on every architecture Go supports.
const clockTick = 10 * time.Millisecond

// Usage reads the child's CPU time and resident set size from
// /proc/PID/stat. It covers the child process itself, not what it started.
// After the child has exited it returns os.ErrProcessDone: Exit has the
// final figures then.
func (c *Child) Usage() (Usage, error) {
	c.mu.Lock()
	reaped := c.reaped
	c.mu.Unlock()
	if reaped {
		return Usage{}, os.ErrProcessDone
	}
	return readUsage(c.Pid)
}

func readUsage(pid int) (Usage, error) {
	st, err := readProcStat(pid)
	if err != nil {
		return Usage{}, err
	}
	var n [3]int64
	for j, k := range []int{statUtime, statStime, statRSS} {
		if n[j], err = st.field(k); err != nil {
			return Usage{}, fmt.Errorf("usage of pid %d: %w", pid, err)
		}
	}
	return Usage{
		UserCPU: time.Duration(n[0]) * clockTick,
		SysCPU:  time.Duration(n[1]) * clockTick,
		RSS:     n[2] * int64(os.Getpagesize()),
	}, nil
}
