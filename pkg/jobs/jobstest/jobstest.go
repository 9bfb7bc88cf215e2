package jobstest

import (
	"context"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"testing"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// Harness calls an application's hooks as a daemon would, in the test's
// goroutine, one at a time. It is not safe for concurrent use; its Vars
// are.
//
// A panic in LoadConfig, NextJob or Done is not recovered, where a daemon
// would log it as an error: the test then shows where it happened. Only a
// panic in RunJob becomes a Result, as in a child.
type Harness struct {
	// Vars is the store that jobs.VarsFrom returns in every hook, RunJob
	// included: the parent's store, which a child reaches over its
	// channel. Set values before a hook runs, or check them after.
	Vars *jobs.VarStore
	// Slot is passed to NextJob and set as the Slot of each job, as the
	// dispatcher does. It is 0 unless changed; a daemon's slots are
	// numbered from 0 to MaxChildren-1.
	Slot int
	// Ctx is the context every hook's context derives from. New sets it
	// to t.Context(), which is cancelled just before the test's Cleanup
	// functions run. Replace it to call a hook with a cancelled context,
	// as a child's RunJob sees on a timeout or a graceful stop.
	Ctx context.Context

	t   testing.TB
	app jobs.Source
}

// Outcome is a job that Drain ran, and how it ended.
type Outcome struct {
	Job    *jobs.Job
	Result jobs.Result
}

// New returns a harness for app, with an empty Vars and Slot 0. It calls
// no hook. It fails the test at once if app is nil.
func New(t testing.TB, app jobs.Source) *Harness {
	t.Helper()
	if app == nil {
		t.Fatalf("jobstest: New with a nil application")
	}
	return &Harness{Vars: jobs.NewVarStore(), Ctx: t.Context(), t: t, app: app}
}

// Context returns the context the hooks receive: Ctx, carrying Vars. Use
// it to call a hook directly, say to check the error of a NextJob, which
// Next would turn into a test failure.
func (h *Harness) Context() context.Context {
	return jobs.WithVars(h.Ctx, h.Vars)
}

// LoadConfig calls the application's LoadConfig and returns its error, or
// returns nil if the application has none. A daemon calls LoadConfig in
// the parent at start and on reload, and in each child before its first
// job; the harness calls it only when the test does, and parent and child
// are then the same process, in which jobs.IsChild reports false.
func (h *Harness) LoadConfig() error {
	if l, ok := h.app.(jobs.ConfigLoader); ok {
		return l.LoadConfig(h.Context())
	}
	return nil
}

// Next calls NextJob with h.Slot and returns its job with Slot set to
// h.Slot, or nil when nothing is ready. An error from NextJob fails the
// test at once (Fatalf), where a daemon would log it and ask again later;
// to test that error, call NextJob with h.Context() instead.
func (h *Harness) Next() *jobs.Job {
	h.t.Helper()
	job, err := h.app.NextJob(h.Context(), h.Slot)
	if err != nil {
		h.t.Fatalf("jobstest: NextJob(slot %d): %v", h.Slot, err)
	}
	if job != nil {
		job.Slot = h.Slot
	}
	return job
}

// RunJob runs a copy of job as a daemon would, and returns its Result.
//
// For a Runner, it calls RunJob in this goroutine and builds the Result a
// daemon builds from a child's answer:
//
//   - RunJob returned nil: ExitCode 0, OK.
//   - It returned an error: ExitCode 1, Error the error's text.
//   - It panicked: ExitCode 2, Error "panic in RunJob: " and the value;
//     the stack is logged with t.Logf.
//
// Duration is the wall time of the call. UserCPU, SysCPU, MaxRSS and
// Output stay zero and TimedOut false: there is no child to measure, and
// what RunJob prints goes to the test's own output.
//
// For a Commander (an application whose jobs are external programs, as the
// jobdaemon binary's), it calls Command and runs the program it returns,
// for real, as a daemon would: its standard input, environment and working
// directory as the Spec says, its output tail in Result.Output, its exit
// code or signal, its CPU time, and its Timeout (StopSignal, then SIGKILL
// after KillGrace, 10 s by default). An error from Command is a job that
// could not start (ExitCode -1, Error set), as in a daemon.
//
// The copy stands for the one a child decodes from its channel: what
// RunJob changes in the job (Meta, say) is not seen by Done. What it
// changes in the application is; see the package documentation. An
// application with neither RunJob nor Command fails the test.
func (h *Harness) RunJob(job *jobs.Job) jobs.Result {
	h.t.Helper()
	if job == nil {
		h.t.Fatalf("jobstest: RunJob with a nil job")
	}
	if c, ok := h.app.(jobs.Commander); ok {
		return h.runCommand(c, copyJob(job))
	}
	r, ok := h.app.(jobs.Runner)
	if !ok {
		h.t.Fatalf("jobstest: %T has neither RunJob (jobs.Runner) nor Command (jobs.Commander)", h.app)
	}
	start := time.Now()
	res := h.call(r, copyJob(job))
	res.Duration = time.Since(start)
	return res
}

// call runs RunJob as the child's runOne does, with the same exit codes.
func (h *Harness) call(r jobs.Runner, job *jobs.Job) (res jobs.Result) {
	defer func() {
		if v := recover(); v != nil {
			h.t.Logf("jobstest: panic in RunJob of job %q: %v\n%s", job.ID, v, debug.Stack())
			res = jobs.Result{ExitCode: 2, Error: fmt.Sprintf("panic in RunJob: %v", v)}
		}
	}()
	if err := r.RunJob(h.Context(), job); err != nil {
		return jobs.Result{ExitCode: 1, Error: err.Error()}
	}
	return jobs.Result{}
}

// copyJob copies a job as the trip to a child does, empty Payload and Meta
// arriving as nil.
func copyJob(j *jobs.Job) *jobs.Job {
	c := *j
	c.Payload, c.Meta = nil, nil
	if len(j.Payload) > 0 {
		c.Payload = slices.Clone(j.Payload)
	}
	if len(j.Meta) > 0 {
		c.Meta = maps.Clone(j.Meta)
	}
	return &c
}

// Done hands job and res to the application, as a daemon does, and
// returns its error: Finish if it is a jobs.Finisher (its verdict is
// dropped; call Finish for it), else Done; nil if it has neither.
func (h *Harness) Done(job *jobs.Job, res jobs.Result) error {
	_, err := h.Finish(job, res)
	return err
}

// Finish is Done, with the application's verdict: jobs.Unknown for an
// application that is not a jobs.Finisher.
func (h *Harness) Finish(job *jobs.Job, res jobs.Result) (jobs.Verdict, error) {
	if f, ok := h.app.(jobs.Finisher); ok {
		return f.Finish(h.Context(), job, res)
	}
	if a, ok := h.app.(jobs.Acker); ok {
		return jobs.Unknown, a.Done(h.Context(), job, res)
	}
	return jobs.Unknown, nil
}

// Drain runs jobs one after the other, as a daemon with a single slot
// would: Next, RunJob, Done, until NextJob returns nil or max jobs have
// run, and returns their outcomes in order. max < 1 sets no limit: a
// source that never runs dry, for instance one whose Done requeues failed
// jobs at once, then keeps Drain running for ever.
//
// Drain never waits: the first nil from NextJob ends it, even if the
// source would have work a moment later (a retry with a not-before time).
// Errors fail the test as in Next and RunJob. An error from Done fails
// the test too, but with Errorf, and draining goes on, as a daemon logs
// the error and goes on; to test a Done that fails on purpose, call the
// steps yourself.
func (h *Harness) Drain(max int) []Outcome {
	h.t.Helper()
	var out []Outcome
	for max < 1 || len(out) < max {
		job := h.Next()
		if job == nil {
			break
		}
		res := h.RunJob(job)
		if err := h.Done(job, res); err != nil {
			h.t.Errorf("jobstest: Done(%q, %s): %v", job.ID, res, err)
		}
		out = append(out, Outcome{Job: job, Result: res})
	}
	return out
}
