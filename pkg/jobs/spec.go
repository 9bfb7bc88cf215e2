package jobs

import (
	"io"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

// Spec is the program a Commander runs for a job: started directly, never
// through a shell, in a process group of its own.
type Spec struct {
	// Path is the program, an absolute path or one relative to Dir.
	Path string
	// Args is the argument vector, Args[0] included; empty means {Path}.
	Args []string
	// Env is the environment; nil inherits the daemon's. Either way the
	// service manager's variables (NOTIFY_SOCKET, LISTEN_*, WATCHDOG_*)
	// are removed.
	Env []string
	// Dir is the working directory; "" keeps the daemon's.
	Dir string
	// Stdin is the job's standard input; nil is /dev/null. An *os.File is
	// handed to the process as it is, and stays the caller's to close
	// (after Done, say); any other reader, such as bytes.NewReader of the
	// job's payload, is copied into a pipe while the job runs.
	Stdin io.Reader

	// Timeout, StopSignal and KillGrace, if set, replace
	// Options.JobTimeout, StopSignal and KillGrace for this job: its
	// timeout and a graceful stop send it this StopSignal.
	Timeout    time.Duration
	StopSignal syscall.Signal
	KillGrace  time.Duration
}

// poolSpec returns the pool's form of s for job, with the options' values
// where s has none.
func (s *Spec) poolSpec(job *Job, o *Options) *pool.Spec {
	ps := &pool.Spec{
		Path:       s.Path,
		Args:       s.Args,
		Env:        s.Env,
		Dir:        s.Dir,
		Stdin:      s.Stdin,
		Credential: o.Credential,
		Label:      job.ID,
		Timeout:    s.Timeout,
		StopSignal: s.StopSignal,
		KillGrace:  s.KillGrace,
	}
	if ps.Timeout == 0 {
		ps.Timeout = o.JobTimeout
	}
	if ps.StopSignal == 0 {
		ps.StopSignal = o.StopSignal
	}
	if ps.KillGrace == 0 {
		ps.KillGrace = o.KillGrace
	}
	return ps
}

// Line is one line that a job wrote on its standard output or error,
// without its newline.
type Line struct {
	JobID   string
	Attempt int
	Slot    int
	// Pid is the process that wrote it: the job's, or its worker's.
	Pid int
	// Stderr is true for a line of standard error.
	Stderr bool
	// Text is valid only during the call to Options.Output: copy it to
	// keep it.
	Text []byte
	// Partial is true for every piece but the last of a line longer than
	// the pool's line limit (8 KiB), and for a last line that ended
	// without a newline.
	Partial bool
}

// Stream returns "stdout" or "stderr".
func (l *Line) Stream() string {
	if l.Stderr {
		return "stderr"
	}
	return "stdout"
}
