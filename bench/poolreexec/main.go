// Command poolreexec is the pool's side of the re-exec'd-child target: the
// same work as bench/reexec (start a copy of this small program, which
// exits at once, and wait for it), but through pkg/pool, so that the two
// binaries cost the same to start and the ratio of their rates is the
// pool's overhead alone.
//
// Usage: poolreexec -n N -p P
//
// It prints "jobs=N seconds=S rate=R/s", the format of bench/run.sh.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

const childMarker = "JOBDAEMON_BENCH_POOL_CHILD"

func main() {
	if os.Getenv(childMarker) == "1" {
		os.Exit(0)
	}
	n := flag.Int("n", 2000, "number of children to run")
	p := flag.Int("p", 2, "children alive at once (pool slots)")
	flag.Parse()
	if *n <= 0 || *p <= 0 {
		fmt.Fprintln(os.Stderr, "poolreexec: -n and -p must be positive")
		os.Exit(2)
	}
	exited := make(chan *pool.Child, *p)
	pl, err := pool.New(pool.Config{Max: *p, OnExit: func(c *pool.Child) { exited <- c }})
	if err != nil {
		fmt.Fprintln(os.Stderr, "poolreexec:", err)
		os.Exit(1)
	}
	spec := &pool.Spec{Path: "/proc/self/exe", Env: append(os.Environ(), childMarker+"=1")}
	start := time.Now()
	started, ended := 0, 0
	for ended < *n {
		for started < *n {
			slot, ok := pl.TryAcquire()
			if !ok {
				break
			}
			if _, err := pl.Start(slot, spec); err != nil {
				fmt.Fprintln(os.Stderr, "poolreexec:", err)
				os.Exit(1)
			}
			started++
		}
		if c := <-exited; !c.Exit().Success() {
			fmt.Fprintln(os.Stderr, "poolreexec: child failed:", c.Exit())
			os.Exit(1)
		}
		ended++
	}
	secs := time.Since(start).Seconds()
	pl.Close()
	fmt.Printf("jobs=%d seconds=%.3f rate=%.0f/s\n", *n, secs, float64(*n)/secs)
}
