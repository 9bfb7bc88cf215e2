package pool

import (
	"bytes"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Source says where a figure of an Exit comes from, and so what it covers.
type Source uint8

// The sources of an Exit's figures.
const (
	// NotMeasured: the figure is 0 because the pool has no right value
	// for it.
	NotMeasured Source = iota
	// FromRusage: the rusage of the reaped child, which covers the child
	// and the descendants it waited for, not those it left behind.
	FromRusage
	// FromCgroup: the job's cgroup, which covers its whole process tree,
	// whatever it forked, waited for or left behind.
	FromCgroup
)

// String returns "not measured", "rusage" or "cgroup".
func (s Source) String() string {
	switch s {
	case NotMeasured:
		return "not measured"
	case FromRusage:
		return "rusage"
	case FromCgroup:
		return "cgroup"
	}
	return fmt.Sprintf("Source(%d)", int(s))
}

// selfMaxRSS returns the daemon's own peak resident set, in bytes, as a
// child forked now would inherit it.
//
// A child inherits it because Go forks with CLONE_VM: until its exec, the
// child runs in the daemon's memory, and exec records that memory's
// high-water mark as the child's own peak (the kernel's
// setmax_mm_hiwater_rss in exec_mmap). /bin/true then reports the
// daemon's 12 MB. The rusage maximum of the daemon itself bounds that
// inherited figure from above (it is the largest of the mark and what the
// daemon inherited at its own exec), for the cost of one getrusage: a
// child's peak above it is the child's own; at or below it, it may be the
// daemon's, and is not reported.
func selfMaxRSS() int64 {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 1<<63 - 1 // no bound: nothing counts as measured
	}
	return ru.Maxrss << 10
}

// settleMaxRSS keeps the MaxRSS of e only when it is the child's own:
// above inherited, the daemon's peak when the child was started.
func settleMaxRSS(e *Exit, inherited int64) {
	if e.MaxRSS > inherited {
		e.MaxRSSFrom = FromRusage
		return
	}
	e.MaxRSS, e.MaxRSSFrom = 0, NotMeasured
}

// cpuStat is what cpu.stat says: the CPU time of every process that has
// run in the cgroup, exited ones included. It needs no cpu controller.
type cpuStat struct {
	user, system time.Duration
}

func parseCPUStat(b []byte) (cpuStat, error) {
	var s cpuStat
	found := 0
	for _, line := range bytes.Split(b, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(" "))
		if !ok {
			continue
		}
		var dst *time.Duration
		switch string(k) {
		case "user_usec":
			dst = &s.user
		case "system_usec":
			dst = &s.system
		default:
			continue
		}
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return cpuStat{}, fmt.Errorf("parse cpu.stat %q: %w", line, err)
		}
		*dst = time.Duration(n) * time.Microsecond
		found++
	}
	if found != 2 {
		return cpuStat{}, fmt.Errorf("parse cpu.stat: no user_usec and system_usec in %q", b)
	}
	return s, nil
}
