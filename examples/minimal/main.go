// Minimal is a whole daemon on package service: three hooks and one call.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/service"
)

type app struct{ next int }

// Configure gives the service its settings from the app's own source of
// settings, here the environment, at start and on every reload.
func (a *app) Configure(ctx context.Context, s *service.Settings) error {
	if dir := os.Getenv("MINIMAL_RUN_DIR"); dir != "" { // default /run/minimal
		s.Daemon.PIDFile, s.Control.Socket = dir+"/minimal.pid", dir+"/control.sock"
	}
	if n, err := strconv.Atoi(os.Getenv("MINIMAL_CHILDREN")); err == nil {
		s.Pool.MaxChildren = n
	}
	return nil
}

// LoadConfig runs in the parent at start and on reload (HUP), and once in
// each child: open connections here, not before service.Main.
func (a *app) LoadConfig(ctx context.Context) error { return nil }

// NextJob runs in the parent when a slot is free; nil, nil: nothing ready.
func (a *app) NextJob(ctx context.Context, slot int) (*jobs.Job, error) {
	if a.next == 1000 {
		return nil, nil
	}
	a.next++
	return &jobs.Job{ID: fmt.Sprint("job-", a.next), Payload: []byte(strconv.Itoa(a.next)), Attempt: 1}, nil
}

// RunJob runs in a child process: this program, started again.
func (a *app) RunJob(ctx context.Context, job *jobs.Job) error {
	n, _ := strconv.Atoi(string(job.Payload))
	fmt.Printf("%s in slot %d: %d squared is %d\n", job.ID, job.Slot, n, n*n)
	return nil
}

func main() {
	// The commands of jobdaemon: run, start, stop, status, reload, scale...
	code := service.Main(&app{}, service.Options{Name: "minimal"})
	os.Exit(code) // after shutdown: clean up before this
}
