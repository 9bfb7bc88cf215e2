package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"

	"github.com/jobdaemon/jobdaemon/internal/config"
	"github.com/jobdaemon/jobdaemon/internal/metrics"
	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/spool"
	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

// spoolApp is the binary's application: its jobs are the files of a spool
// directory, and each runs the configured command.
type spoolApp struct {
	cfg   *config.Config
	spool *spool.Spool
	env   []string // the jobs' environment, without the JOB_* variables; the dispatcher's

	joblog   *jobLog          // nil without [log] joblog
	metrics  *metrics.Metrics // nil in tests
	attempts *sync.Map        // job id → attempt of the running jobs, for their log lines; may be nil

	// Touched by the hooks only, all called from the dispatcher goroutine.
	running map[string]*started // by job id, from Command to Done
}

// started is what the app keeps of a job between Command and Done.
type started struct {
	stdin *os.File // the job file, open as the child's standard input
	args  []string
}

// newSpoolApp returns the app. Jobs run as the daemon does: as [daemon]
// user once the daemon has dropped its privileges (see dropPrivileges).
func newSpoolApp(cfg *config.Config, sp *spool.Spool) *spoolApp {
	return &spoolApp{cfg: cfg, spool: sp, running: make(map[string]*started), env: jobEnv(cfg.Job)}
}

// jobEnv returns the environment of every job, before the JOB_* variables:
// the inherited variables, then [job] env.
func jobEnv(job config.Job) []string {
	var env []string
	for _, name := range job.InheritEnv {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	for k, v := range job.Env {
		env = append(env, k+"="+v)
	}
	return env
}

// NextJob implements jobs.Source.
func (a *spoolApp) NextJob(ctx context.Context, slot int) (*jobs.Job, error) {
	return a.spool.NextJob(ctx, slot)
}

// Depth implements jobs.Depther: the jobs waiting in incoming/.
func (a *spoolApp) Depth() (int, error) { return a.spool.Depth() }

// Wake implements jobs.Waker.
func (a *spoolApp) Wake() <-chan struct{} { return a.spool.Wake() }

// Command implements jobs.Commander: the configured command, with the
// placeholders replaced as whole arguments, the job file as standard
// input, and nothing else of the daemon's environment.
func (a *spoolApp) Command(ctx context.Context, job *jobs.Job) (*pool.Spec, error) {
	path := a.spool.Path(job)
	name := job.Meta["name"]
	slot, attempt := strconv.Itoa(job.Slot), strconv.Itoa(job.Attempt)
	args := make([]string, len(a.cfg.Job.Command))
	for i, arg := range a.cfg.Job.Command {
		switch arg {
		case config.PlaceholderPath:
			arg = path
		case config.PlaceholderName:
			arg = name
		case config.PlaceholderID:
			arg = job.ID
		case config.PlaceholderSlot:
			arg = slot
		case config.PlaceholderAttempt:
			arg = attempt
		}
		args[i] = arg
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open job file: %w", err)
	}
	a.running[job.ID] = &started{stdin: f, args: args}
	if a.attempts != nil {
		a.attempts.Store(job.ID, job.Attempt)
	}
	env := append(a.env[:len(a.env):len(a.env)],
		"JOB_ID="+job.ID, "JOB_PATH="+path, "JOB_SLOT="+slot, "JOB_ATTEMPT="+attempt)
	return &pool.Spec{
		Path:  args[0],
		Args:  args,
		Env:   env,
		Dir:   a.cfg.Job.WorkingDir,
		Stdin: f,
	}, nil
}

// Done implements jobs.Acker: the spool moves the job on.
func (a *spoolApp) Done(ctx context.Context, job *jobs.Job, res jobs.Result) error {
	st := a.running[job.ID]
	delete(a.running, job.ID)
	if a.attempts != nil {
		a.attempts.Delete(job.ID)
	}
	if a.metrics != nil && !res.OK() && !res.Interrupted && job.Attempt < a.cfg.Job.MaxAttempts {
		a.metrics.Retried(res) // the spool queues it again: see spool.Done
	}
	if st != nil {
		st.stdin.Close()
		if a.joblog != nil {
			if err := a.joblog.write(res, st.args); err != nil {
				return err
			}
		}
	}
	return a.spool.Done(ctx, job, res)
}
