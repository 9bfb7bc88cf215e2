// Command reexec is the Go baseline for the pool's re-exec'd-child speed
// target: the cheapest way plain Go can start a copy of itself and wait for
// it, so the pool's own overhead shows up as the gap to this number.
//
// Usage: reexec -n N -p P
//
// It runs N children, each /proc/self/exe with an environment marker that
// makes the child exit 0 before doing anything else, from P goroutines that
// each loop on exec.Command(...).Run(). It prints
//
//	jobs=N seconds=S rate=R/s cpu_us_per_job=C
//
// in the same format as bench/forkexec.c so bench/run.sh can parse both.
package main

import "github.com/jobdaemon/jobdaemon/bench/internal/reexecloop"

func main() { reexecloop.Main(func() {}) }
