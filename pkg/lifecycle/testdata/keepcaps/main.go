// Keepcaps drops from root to nobody keeping the capabilities of a daemon
// whose jobs run as their own user, while goroutines hold OS threads of
// their own, and prints each thread's ids and capability sets as JSON. It
// is built with CGO_ENABLED=0 by the lifecycle tests: only such a build
// can change capabilities on every thread.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/jobdaemon/jobdaemon/pkg/lifecycle"
)

func main() {
	const locked = 4
	ready, release := make(chan struct{}), make(chan struct{})
	for range locked {
		go func() {
			runtime.LockOSThread()
			ready <- struct{}{}
			<-release
		}()
	}
	for range locked {
		<-ready
	}
	out := map[string]any{}
	if err := lifecycle.DropPrivilegesKeepCaps(65534, 65534, nil, lifecycle.JobCaps); err != nil {
		out["error"] = err.Error()
	}
	threads := map[string][]string{}
	tasks, _ := filepath.Glob("/proc/self/task/*/status")
	for _, name := range tasks {
		b, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "Uid:") || strings.HasPrefix(l, "Cap") {
				lines = append(lines, strings.Join(strings.Fields(l), " "))
			}
		}
		threads[filepath.Base(filepath.Dir(name))] = lines
	}
	out["threads"] = threads
	close(release)
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
