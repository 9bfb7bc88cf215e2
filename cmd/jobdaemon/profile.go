//go:build benchprofile

package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// A build with -tags benchprofile writes a CPU profile of the whole run to
// the file $JOBDAEMON_CPUPROFILE names: bench/run.sh uses it to say where
// the daemon's time goes per job. Normal builds carry none of this.
func init() {
	path := os.Getenv("JOBDAEMON_CPUPROFILE")
	if path == "" {
		return
	}
	os.Unsetenv("JOBDAEMON_CPUPROFILE") // not for the jobs
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "jobdaemon: cpu profile:", err)
		return
	}
	atExit = func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
