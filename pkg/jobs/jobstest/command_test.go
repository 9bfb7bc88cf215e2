package jobstest_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/jobstest"
)

// shellApp is a Commander: each job's payload is a shell script, run with
// the job's id in its environment and the payload on standard input.
type shellApp struct {
	queue   []*jobs.Job
	timeout time.Duration
	done    map[string]jobs.Result
}

func (a *shellApp) NextJob(context.Context, int) (*jobs.Job, error) {
	if len(a.queue) == 0 {
		return nil, nil
	}
	j := a.queue[0]
	a.queue = a.queue[1:]
	return j, nil
}

func (a *shellApp) Command(_ context.Context, job *jobs.Job) (*jobs.Spec, error) {
	if job.ID == "unstartable" {
		return nil, errors.New("no such program")
	}
	return &jobs.Spec{
		Path:    "/bin/sh",
		Args:    []string{"sh", "-c", string(job.Payload)},
		Env:     []string{"JOB_ID=" + job.ID},
		Stdin:   bytes.NewReader(job.Payload),
		Timeout: a.timeout,
	}, nil
}

func (a *shellApp) Finish(_ context.Context, job *jobs.Job, res jobs.Result) (jobs.Verdict, error) {
	a.done[job.ID] = res
	if res.OK() {
		return jobs.Completed, nil
	}
	return jobs.Failed, nil
}

// A Commander's jobs run as real processes: their output, exit code,
// signal, standard input and timeout reach the Result, and Finish gets
// it.
func TestCommanderJobs(t *testing.T) {
	job := func(id, script string) *jobs.Job { return &jobs.Job{ID: id, Payload: []byte(script), Attempt: 1} }
	a := &shellApp{done: map[string]jobs.Result{}, timeout: 2 * time.Second, queue: []*jobs.Job{
		job("echo", `echo "out $JOB_ID"; echo err >&2`),
		job("exit", "exit 3"),
		job("killed", "kill -KILL $$"),
		job("stdin", "cat; exit 0"),
		job("timeout", "sleep 30 & wait"),
		job("unstartable", ""),
	}}
	h := jobstest.New(t, a)
	out := h.Drain(0)
	if len(out) != 6 {
		t.Fatalf("%d outcomes, want 6", len(out))
	}
	res := a.done
	if r := res["echo"]; !r.OK() || !strings.Contains(string(r.Output), "out echo") || !strings.Contains(string(r.Output), "err") || r.Duration <= 0 {
		t.Errorf("echo: %+v (%s)", r, r.Output)
	}
	if r := res["exit"]; r.ExitCode != 3 || r.OK() {
		t.Errorf("exit: %+v", r)
	}
	if r := res["killed"]; r.Signal != syscall.SIGKILL || r.ExitCode != -1 {
		t.Errorf("killed: %+v", r)
	}
	if r := res["stdin"]; !r.OK() || string(r.Output) != "cat; exit 0" {
		t.Errorf("stdin: %+v (%q)", r, r.Output)
	}
	if r := res["timeout"]; !r.TimedOut || r.Signal != syscall.SIGTERM || r.Duration > 10*time.Second {
		t.Errorf("timeout: %+v", r)
	}
	if r := res["unstartable"]; r.ExitCode != -1 || r.Error != "no such program" {
		t.Errorf("unstartable: %+v", r)
	}
	if v, err := h.Finish(&jobs.Job{ID: "x"}, jobs.Result{}); v != jobs.Completed || err != nil {
		t.Errorf("Finish = %v, %v", v, err)
	}
}
