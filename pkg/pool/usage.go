package pool

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
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
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	b, err := os.ReadFile(path)
	if err != nil {
		return Usage{}, err
	}
	// The command name, field 2, is in parentheses and may hold spaces
	// and parentheses itself: the fields that follow start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Usage{}, fmt.Errorf("parse %s: no ')' in %q", path, b)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state): utime is field 14, stime 15, rss 24.
	if len(f) < 22 {
		return Usage{}, fmt.Errorf("parse %s: %d fields", path, len(f)+2)
	}
	var n [3]int64
	for j, k := range []int{11, 12, 21} {
		if n[j], err = strconv.ParseInt(string(f[k]), 10, 64); err != nil {
			return Usage{}, fmt.Errorf("parse %s: %w", path, err)
		}
	}
	return Usage{
		UserCPU: time.Duration(n[0]) * clockTick,
		SysCPU:  time.Duration(n[1]) * clockTick,
		RSS:     n[2] * int64(os.Getpagesize()),
	}, nil
}
