package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// The daemon modes run the jobs through the whole of pkg/jobs: jobs.Run
// with an in-memory source, as the jobdaemon binary runs them with a
// spool, minus the spool's filing.
//
//	-mode daemon          command workers that are never replaced
//	-mode daemon-process  a command worker per job (JobsPerChild 1): the
//	                      same script as one process per job

// warmup is how many jobs go first, unmeasured, so that the workers of
// the daemon mode have started and answered before the measure begins.
const warmup = 20

// benchApp is an in-memory source of n trivial jobs whose command is cmd.
type benchApp struct {
	cmd  []string
	n    int
	next int

	mu     sync.Mutex
	done   int
	failed error
	start  time.Time // when the first measured job was handed out
	u0     usage     // the daemon's usage then
	end    time.Time
	u1     usage
	d      *jobs.Daemon
}

func (a *benchApp) NextJob(ctx context.Context, slot int) (*jobs.Job, error) {
	if a.next == a.n+warmup {
		return nil, nil
	}
	if a.next == warmup {
		a.mu.Lock()
		a.start, a.u0 = time.Now(), selfUsage()
		a.mu.Unlock()
	}
	a.next++
	return &jobs.Job{ID: strconv.Itoa(a.next), Attempt: 1, Payload: payload}, nil
}

func (a *benchApp) Command(ctx context.Context, job *jobs.Job) (*jobs.Spec, error) {
	return nil, errors.New("the benchmark runs its jobs in workers")
}

func (a *benchApp) WorkerCommand(ctx context.Context, slot int) (*jobs.Spec, error) {
	return &jobs.Spec{Path: a.cmd[0], Args: a.cmd}, nil
}

func (a *benchApp) Done(ctx context.Context, job *jobs.Job, res jobs.Result) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !res.OK() && a.failed == nil {
		a.failed = fmt.Errorf("job %s: %s", job.ID, res.String())
	}
	a.done++
	if a.done == a.n+warmup {
		a.end, a.u1 = time.Now(), selfUsage()
		a.d.Stop(jobs.Drain)
	}
	return nil
}

// runDaemon runs n jobs through p command workers, each of which runs
// jobsPerWorker jobs (0: all), with jobs.Run. It returns the time from the
// first measured job handed out to the last job done, and the daemon's
// usage in that span.
func runDaemon(n, p, jobsPerWorker int, cmd []string) (time.Duration, usage, error) {
	a := &benchApp{cmd: cmd, n: n}
	d, err := jobs.New(a, jobs.Options{
		MaxChildren:  p,
		JobsPerChild: jobsPerWorker,
		NoSignals:    true,
		IdleInterval: 10 * time.Millisecond,
		Logger:       slog.New(slog.DiscardHandler), // the bare driver logs nothing either
		Output:       func(jobs.Line) {},
	})
	if err != nil {
		return 0, usage{}, err
	}
	a.d = d
	if err := d.Run(context.Background()); err != nil {
		return 0, usage{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failed != nil {
		return 0, usage{}, a.failed
	}
	if a.done != n+warmup {
		return 0, usage{}, fmt.Errorf("%d jobs done, want %d", a.done, n+warmup)
	}
	return a.end.Sub(a.start), a.u1.sub(a.u0), nil
}
