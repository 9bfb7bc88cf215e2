package pool

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Spec describes a child to start.
type Spec struct {
	// Path is the program, an absolute path or one relative to Dir.
	Path string
	// Args is the argument vector, Args[0] included; empty means {Path}.
	Args []string
	// Env is the environment; nil inherits the daemon's. Either way the
	// service manager's variables (NOTIFY_SOCKET, LISTEN_*, WATCHDOG_*) are
	// removed.
	Env []string
	// Dir is the working directory; "" keeps the daemon's.
	Dir string
	// Stdin is the child's standard input; nil means /dev/null. An
	// *os.File is passed to the child as it is, and the caller keeps it:
	// the pool does not close it. Any other reader is copied into a pipe:
	// at once when it fits into the pipe's buffer (a bytes.Reader of a
	// small payload), otherwise by a goroutine while the child runs, which
	// stops when the child closes its end.
	Stdin io.Reader
	// Credential, if set, runs the child as another user.
	Credential *syscall.Credential

	// Label names the child in log lines, usually a job id. Workers change
	// it with each job.
	Label string
	// Timeout, if positive, stops the child after this long: StopSignal to
	// its process group, then SIGKILL after KillGrace.
	Timeout time.Duration
	// StopSignal is sent on timeout (default SIGTERM) and, if set, by a
	// graceful stop in place of StopOptions.Signal: a child is stopped
	// with the signal it was started to expect.
	StopSignal syscall.Signal
	// KillGrace is the time between StopSignal and SIGKILL (default 10 s).
	KillGrace time.Duration
}

// Exit says how a child ended.
type Exit struct {
	// Code is the exit status, or -1 if the child was killed by a signal.
	Code int
	// Signal is the signal that killed the child, or 0.
	Signal syscall.Signal
	// TimedOut is true when the child was stopped because its Timeout
	// passed.
	TimedOut bool
	// Interrupted is true when a Stop of the pool signalled the child
	// before it was reaped (see Child.Interrupted).
	Interrupted bool
	// Duration is the wall time from start to reap.
	Duration time.Duration
	// UserCPU and SysCPU are the CPU time of the job: with CPUFrom
	// FromCgroup, of its whole process tree (cpu.stat); with FromRusage,
	// of the child and the descendants it waited for.
	UserCPU, SysCPU time.Duration
	// CPUFrom says what UserCPU and SysCPU cover.
	CPUFrom Source
	// MaxRSS is the peak resident set size in bytes of the child, or of
	// the largest descendant it waited for, when MaxRSSFrom is FromRusage.
	// It is 0 and MaxRSSFrom NotMeasured when rusage cannot tell the
	// child's peak from the daemon's: a child smaller than the daemon
	// (see selfMaxRSS).
	MaxRSS int64
	// MaxRSSFrom says whether MaxRSS was measured.
	MaxRSSFrom Source
	// MemoryPeak is the peak memory charged to the job's cgroup
	// (memory.peak: the whole tree, page cache and kernel memory
	// included), in bytes; 0 where the memory controller is not enabled,
	// or with per-slot cgroups on a kernel that cannot reset the peak.
	MemoryPeak int64
	// PidsPeak is the most processes and threads the job's cgroup held at
	// once (pids.peak); 0 without the pids controller, and with per-slot
	// cgroups, whose peak cannot be reset between jobs.
	PidsPeak int64
	// Output is the tail of what the child wrote to stdout and stderr,
	// interleaved as it arrived, at most Config.TailSize bytes.
	Output []byte
	// Err is set when the pool could not learn the exit status.
	Err error
}

// Success reports whether the child exited with status 0.
func (e *Exit) Success() bool { return e.Err == nil && e.Signal == 0 && e.Code == 0 }

// String describes the exit the way a log line would: "exit 0",
// "exit 3", "signal killed", "timeout (signal terminated)".
func (e *Exit) String() string {
	var s string
	switch {
	case e.Err != nil:
		s = "unknown: " + e.Err.Error()
	case e.Signal != 0:
		s = "signal " + e.Signal.String()
	default:
		s = fmt.Sprintf("exit %d", e.Code)
	}
	if e.TimedOut {
		s = "timeout (" + s + ")"
	}
	return s
}

// Child is a process started by a Pool.
type Child struct {
	// Pid is the child's process id, and Pgid its process group's, the
	// same number.
	Pid, Pgid int
	// Slot is the slot the child runs in.
	Slot int
	// Started is when the child was started.
	Started time.Time

	pool   *Pool
	spec   *Spec
	worker *Worker // nil for a command child
	// label is read for each output line and set for each job of a
	// worker: a lock, where an atomic pointer would cost an allocation
	// per job.
	labelMu sync.Mutex
	label   string
	iso     childIsolation // its cgroup or group record (childiso.go)

	outR, errR *os.File    // the read ends of the child's own pipes; nil with slotOut
	slotOut    *slotOutput // the slot's pipes it writes into, when it has no pipes of its own; nil once settled
	shared     *slotOutput // the slot's pipes it writes into, fixed from the start (slotOut is nil once settled)
	outW, errW int         // the child's ends, raw: closed once it started
	outs       [2]*outPipe // stdout and stderr of a worker with pipes of its own, for catchUp; nil otherwise
	outPoll    *outPoll    // polls outs
	stdinR     int         // a stdin pipe's read end, when Spec.Stdin is not a file; else -1
	stdinW     *os.File    // its write end, when a goroutine feeds it
	stdinSrc   io.Reader   // what startStdin feeds into stdinW
	tail       Tail
	// pending counts what must end before the child is finalized: the reap,
	// each output stream, and a worker's channel.
	pending atomic.Int32

	mu       sync.Mutex
	reaped   bool
	timedOut bool
	timeoutT *time.Timer // fires Spec.Timeout after the start
	killT    *time.Timer // fires the SIGKILL of a Stop
	stopping bool
	// interrupted is set when a Stop of the pool signals the child, and
	// poolStop when a graceful one covers it (interrupt.go).
	interrupted, poolStop bool
	// ownStop, if set, replaces a graceful stop's signal: the Spec's
	// StopSignal, then SetStopSignal's.
	ownStop syscall.Signal

	exit Exit
	done chan struct{}
}

func newChild(p *Pool, slot int, spec *Spec, w *Worker) *Child {
	c := &Child{
		Slot:    slot,
		pool:    p,
		spec:    spec,
		ownStop: spec.StopSignal,
		worker:  w,
		done:    make(chan struct{}),
		tail:    Tail{max: p.cfg.TailSize},
		outW:    -1,
		errW:    -1,
		stdinR:  -1,
	}
	if w != nil {
		// Before the child starts: its reader goroutine uses w.Child.
		w.Child = c
	}
	c.label = spec.Label
	return c
}

// Label returns the child's current label.
func (c *Child) Label() string {
	c.labelMu.Lock()
	defer c.labelMu.Unlock()
	return c.label
}

// SetLabel changes the label that the child's output lines carry.
func (c *Child) SetLabel(s string) {
	c.labelMu.Lock()
	c.label = s
	c.labelMu.Unlock()
}

// Done is closed when the child has ended, Exit is valid, and
// Config.OnExit has returned.
func (c *Child) Done() <-chan struct{} { return c.done }

// Exit returns how the child ended. It is valid once Done is closed.
func (c *Child) Exit() *Exit { return &c.exit }

// Worker returns the worker this child is, or nil for a command child.
func (c *Child) Worker() *Worker { return c.worker }

// Signal sends sig to the child's process group. It returns os.ErrProcessDone
// once the child has been reaped.
func (c *Child) Signal(sig syscall.Signal) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reaped {
		return os.ErrProcessDone
	}
	return c.signalGroup(sig)
}

func (c *Child) signalGroup(sig syscall.Signal) error {
	if sig == syscall.SIGKILL {
		// The whole cgroup, setsid escapees included.
		c.killTree()
	}
	if err := syscall.Kill(-c.Pgid, sig); err != nil && err != syscall.ESRCH {
		return fmt.Errorf("signal process group %d: %w", c.Pgid, err)
	}
	return nil
}

// Stop sends sig to the child's process group (nothing if sig is 0), then
// SIGKILL to the group after grace. Whatever is left of the group when the
// child itself exits is killed then. Only the first Stop of a child has an
// effect.
func (c *Child) Stop(sig syscall.Signal, grace time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopLocked(sig, grace)
}

func (c *Child) stopLocked(sig syscall.Signal, grace time.Duration) {
	if c.interruptLocked(sig) {
		// If the leader outlives the grace period, the whole group is
		// killed; if it exits before, reap kills what it left behind.
		c.killT = time.AfterFunc(grace, func() { _ = c.Signal(syscall.SIGKILL) })
	}
}

func (c *Child) interruptLocked(sig syscall.Signal) bool {
	if c.reaped || c.stopping {
		return false
	}
	c.stopping = true
	if sig != 0 {
		_ = c.signalGroup(sig)
	}
	return true
}

func (c *Child) timeout() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reaped {
		return
	}
	c.timedOut = true
	c.stopLocked(c.spec.stopSignal())
}

// stopSignal returns the signal and grace period of a stop on timeout,
// defaults applied.
func (s *Spec) stopSignal() (syscall.Signal, time.Duration) {
	sig, grace := s.StopSignal, s.KillGrace
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	if grace <= 0 {
		grace = DefaultKillGrace
	}
	return sig, grace
}

// retire asks a worker to exit after its current job; a command child has
// no way to be asked and is left alone.
func (c *Child) retire() {
	if c.worker != nil {
		c.worker.Retire()
	}
}

func (c *Child) openPipes() error {
	var err error
	if c.outR, c.outW, err = outputPipe(); err != nil {
		return fmt.Errorf("create stdout pipe: %w", err)
	}
	if c.errR, c.errW, err = outputPipe(); err != nil {
		c.outR.Close()
		unix.Close(c.outW)
		return fmt.Errorf("create stderr pipe: %w", err)
	}
	return nil
}

func (c *Child) closeWriteEnds() {
	for _, fd := range []*int{&c.outW, &c.errW} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

func (c *Child) closeReadEnds() {
	if c.slotOut != nil {
		c.settleOutput(true) // not started: the pipes hold nothing of it
		return
	}
	c.outR.Close()
	c.errR.Close()
}

// started records what Start learned and arms the timeout.
func (c *Child) started(pid int) {
	c.Pid = pid
	c.Pgid = c.Pid
	c.Started = time.Now()
	// Set before the reaper can see the pid: the reap, the two output
	// streams, and a worker's channel.
	n := int32(3)
	if c.shared != nil {
		n = 1 // the slot's pipes are read apart, and caught up with at the end
	}
	if c.worker != nil {
		n++
	}
	c.pending.Store(n)
	if c.spec.Timeout > 0 {
		c.mu.Lock()
		c.timeoutT = time.AfterFunc(c.spec.Timeout, c.timeout)
		c.mu.Unlock()
	}
}

// watch starts the goroutines that read the child's output.
func (c *Child) watch() {
	if c.worker != nil {
		if c.shared == nil {
			c.outs = [2]*outPipe{newOutPipe(c.outR), newOutPipe(c.errR)}
			c.outPoll = newOutPoll(c.outs[0], c.outs[1])
		}
		go c.worker.readLoop()
	}
	if c.shared != nil {
		return // read already (watchSlotOutput)
	}
	go c.readOutput(c.outR, Stdout)
	go c.readOutput(c.errR, Stderr)
}

// ended is called as each of the child's pending parts ends; the last one
// finalizes the child.
func (c *Child) ended() {
	if c.pending.Add(-1) == 0 {
		c.pool.finalize(c)
	}
}

// reap collects the exit status of the child, which the reaper has seen
// exit. Until the Wait, the child is a zombie that pins its pid and so its
// process group id: no new process can have taken them, which makes this
// the last safe moment to signal the group.
func (c *Child) reap() {
	c.mu.Lock()
	c.reaped = true
	timedOut := c.timedOut
	interrupted := c.interrupted
	// Decided once, under the lock: a stop that marks the child after this
	// is too late to have killed its leftovers (leaderReaped acts on it).
	killed := c.stopping || c.poolStop || !c.pool.cfg.Isolation.KeepLeftovers
	if killed {
		// The job's leader is gone: kill what is left of its tree now (a
		// stopped job's, as systemd's KillMode=mixed does, rather than at
		// the end of the grace period, when the group id may belong to
		// someone else).
		_ = c.signalGroup(syscall.SIGKILL)
	}
	for _, t := range []*time.Timer{c.timeoutT, c.killT} {
		if t != nil {
			t.Stop()
		}
	}
	c.mu.Unlock()

	ws, ru, err := waitChild(c.Pid)
	end := time.Now()

	e := &c.exit
	e.Duration = end.Sub(c.Started)
	e.TimedOut = timedOut
	e.Interrupted = interrupted
	if err != nil {
		e.Code, e.Err = -1, err
	} else {
		if ws.Signaled() {
			e.Code, e.Signal = -1, ws.Signal()
		} else {
			e.Code = ws.ExitStatus()
		}
		e.CPUFrom = FromRusage
		e.UserCPU = time.Duration(ru.Utime.Nano())
		e.SysCPU = time.Duration(ru.Stime.Nano())
		e.MaxRSS = ru.Maxrss << 10 // KiB on Linux
	}

	// Processes the child left behind may still hold its output open; give
	// them OutputDrain to finish, then stop reading.
	if c.pending.Load() > 1 {
		time.AfterFunc(c.pool.cfg.OutputDrain, func() {
			if c.shared == nil {
				c.closeReadEnds() // a slot's pipes are settled with the cgroup
			}
			if c.worker != nil {
				c.worker.closeConn()
			}
		})
	}
	c.leaderReaped(killed)
	c.ended()
}
