//go:build benchprofile

package main

import (
	"os"
	"runtime/pprof"
)

// startProfile starts a CPU profile into path, and returns what stops it.
// Only in a -tags benchprofile build: runtime/pprof links compress/flate and
// more, whose initialisation every re-executed child of the reexec mode
// would pay, where the bare loop it is measured against pays none.
func startProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
