package jobstest

import (
	"errors"
	"os/exec"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

// runCommand runs the program that Command returns for job, and builds
// its Result.
func (h *Harness) runCommand(c jobs.Commander, job *jobs.Job) jobs.Result {
	spec, err := c.Command(h.Context(), job)
	if err != nil {
		return jobs.Result{ExitCode: -1, Error: err.Error()}
	}
	cmd := &exec.Cmd{Path: spec.Path, Args: spec.Args, Env: spec.Env, Dir: spec.Dir, Stdin: spec.Stdin}
	if len(cmd.Args) == 0 {
		cmd.Args = []string{spec.Path}
	}
	out := pool.NewTail(pool.DefaultTailSize) // as much as a daemon keeps
	cmd.Stdout, cmd.Stderr = out, out
	// A group of its own, as a daemon's job has, so that a timeout
	// reaches what the program started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return jobs.Result{ExitCode: -1, Error: err.Error()}
	}
	var timedOut atomic.Bool
	var kill atomic.Pointer[time.Timer]
	if spec.Timeout > 0 {
		sig, grace := spec.StopSignal, spec.KillGrace
		if sig == 0 {
			sig = syscall.SIGTERM
		}
		if grace <= 0 {
			grace = pool.DefaultKillGrace
		}
		pgid := cmd.Process.Pid
		t := time.AfterFunc(spec.Timeout, func() {
			timedOut.Store(true)
			_ = syscall.Kill(-pgid, sig)
			kill.Store(time.AfterFunc(grace, func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) }))
		})
		defer func() {
			// The group id is free for reuse once the leader is reaped.
			t.Stop()
			if k := kill.Load(); k != nil {
				k.Stop()
			}
		}()
	}
	err = cmd.Wait()
	res := jobs.Result{Duration: time.Since(start), Output: out.Bytes(), TimedOut: timedOut.Load()}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		res.ExitCode, res.Error = -1, err.Error()
		return res
	}
	st := cmd.ProcessState
	ws := st.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		res.ExitCode, res.Signal = -1, ws.Signal()
	} else {
		res.ExitCode = ws.ExitStatus()
	}
	res.UserCPU, res.SysCPU = st.UserTime(), st.SystemTime()
	if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
		res.MaxRSS = ru.Maxrss << 10
	}
	return res
}
