package pool

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// procStat is a process's /proc/PID/stat, split into fields. Field n of
// proc(5) (counted from 1) is f[n-3]: the pid and the command name are
// kept apart, because the name, in parentheses, may itself hold spaces and
// parentheses.
type procStat struct {
	comm string
	f    [][]byte // from field 3 (state) on
}

// readProcStat reads /proc/PID/stat; pid 0 reads the calling process's.
func readProcStat(pid int) (procStat, error) {
	path := "/proc/self/stat"
	if pid != 0 {
		path = "/proc/" + strconv.Itoa(pid) + "/stat"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return procStat{}, err
	}
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return procStat{}, fmt.Errorf("parse %s: no command name in %q", path, b)
	}
	f := bytes.Fields(b[end+1:])
	// Up to starttime, field 22, at least.
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("parse %s: %d fields", path, len(f)+2)
	}
	return procStat{comm: string(b[open+1 : end]), f: f}, nil
}

// field returns field n of proc(5) (n >= 3) as a number.
func (s procStat) field(n int) (int64, error) {
	if n < 3 || n-3 >= len(s.f) {
		return 0, fmt.Errorf("no field %d in /proc/PID/stat", n)
	}
	v, err := strconv.ParseInt(string(s.f[n-3]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("field %d of /proc/PID/stat: %w", n, err)
	}
	return v, nil
}

// zombie reports whether the process has exited and waits to be reaped.
func (s procStat) zombie() bool { return len(s.f[0]) == 1 && s.f[0][0] == 'Z' }

// The fields of /proc/PID/stat the pool reads (proc(5)).
const (
	statPgrp      = 5
	statSession   = 6
	statUtime     = 14
	statStime     = 15
	statStarttime = 22
	statRSS       = 24
)
