// Package reexecloop is the bare Go re-exec loop that bench/reexec and
// bench/reexecfloor share: the cheapest way plain Go can start a copy of
// itself and wait for it, from P goroutines that each loop on
// exec.Command(...).Run().
package reexecloop

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// childMarker in the environment means "you are a benchmark child".
const childMarker = "JOBDAEMON_BENCH_REEXEC_CHILD"

// Main is the whole program. In a child it calls child, then exits 0
// before doing anything else; in the parent it parses -n and -p, runs N
// children from P goroutines, and prints
//
//	jobs=N seconds=S rate=R/s cpu_us_per_job=C
//
// in the same format as bench/forkexec.c, C being the parent's own CPU
// (not its children's) per job. It exits 1 if any child failed.
func Main(child func()) {
	// First thing: a child must cost no more than Go's runtime start-up
	// and what child adds, or the baseline would be slower than it claims.
	// Everything below is parent-only.
	if os.Getenv(childMarker) == "1" {
		child()
		os.Exit(0)
	}

	n := flag.Int("n", 2000, "number of children to run")
	p := flag.Int("p", 1, "children alive at once (goroutines)")
	flag.Parse()
	if *n <= 0 || *p <= 0 {
		fmt.Fprintln(os.Stderr, "reexec: -n and -p must be positive")
		os.Exit(2)
	}

	// Set once in our own environment so every child inherits it; building a
	// per-command Env slice would add parent work the pool may not do.
	if err := os.Setenv(childMarker, "1"); err != nil {
		fmt.Fprintln(os.Stderr, "reexec:", err)
		os.Exit(1)
	}

	var (
		next    atomic.Int64 // jobs handed out so far
		failed  atomic.Int64
		firstMu sync.Mutex
		first   error
		wg      sync.WaitGroup
	)
	start := time.Now()
	for range *p {
		wg.Go(func() {
			// Pull jobs from a shared counter rather than pre-splitting N/P,
			// so a slow child on one goroutine doesn't leave another idle.
			for next.Add(1) <= int64(*n) {
				if err := exec.Command("/proc/self/exe").Run(); err != nil {
					failed.Add(1)
					firstMu.Lock()
					if first == nil {
						first = err
					}
					firstMu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()

	// The parent's own CPU per job, as bench/library prints its own: the
	// part of the gap that is the dispatcher's rather than the child's.
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	fmt.Printf("jobs=%d seconds=%.3f rate=%.0f/s cpu_us_per_job=%.1f\n", *n, secs, float64(*n)/secs, float64(cpu.Microseconds())/float64(*n))
	if f := failed.Load(); f > 0 {
		// A rate over failed execs would flatter the baseline; refuse it.
		fmt.Fprintf(os.Stderr, "reexec: %d of %d jobs failed, first: %v\n", f, *n, first)
		os.Exit(1)
	}
}
