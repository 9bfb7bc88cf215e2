package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults for the zero values of Config and Spec.
const (
	DefaultTailSize    = 64 << 10
	DefaultMaxLine     = 8 << 10
	DefaultOutputDrain = time.Second
	DefaultKillGrace   = 10 * time.Second
)

// ErrStopped is returned by Start once a stop has begun.
var ErrStopped = errors.New("pool is stopping")

// ErrSlot is returned by Start for a slot that was not acquired.
var ErrSlot = errors.New("slot not acquired")

// Config configures a Pool. The zero value gives one slot and discards
// output.
type Config struct {
	// Max is the number of slots, at least 1.
	Max int
	// Sink receives every line the children write; nil discards them.
	Sink Sink
	// OnExit is called once for each child, after it has been reaped and its
	// output drained, and after its slot was released; Child.Done is closed
	// after OnExit returns. It runs on a pool goroutine and must not block
	// for long.
	OnExit func(*Child)
	// TailSize is how many bytes of each child's output are kept for its
	// Exit (default 64 KiB).
	TailSize int
	// MaxLine is the longest line handed to Sink in one piece; a longer one
	// arrives in pieces marked Partial (default 8 KiB).
	MaxLine int
	// OutputDrain is how long to wait, after a child has exited, for
	// processes it left behind to close its output (default 1 s).
	OutputDrain time.Duration
	// Logger receives the pool's own messages; nil discards them.
	Logger *slog.Logger
	// Isolation holds each job's processes together: per-job cgroups or
	// process groups, what a job leaves behind, limits (isolation.go).
	Isolation Isolation
}

// Pool runs child processes in numbered slots. Its methods are safe for
// concurrent use.
type Pool struct {
	cfg     Config
	log     *slog.Logger
	devNull *os.File
	iso     *isolation

	mu       sync.Mutex
	max      int
	slots    []bool // slot index → acquired
	nslots   int    // acquired slots
	byPid    map[int]*Child
	live     int           // started and not yet finalized
	idle     chan struct{} // closed while live == 0
	stopping StopMode

	pinned atomic.Int32 // the thread of PinSpawner, or 0

	slotOut []*slotOutput // by slot: output pipes for its next command child (slotout.go); under mu
	closing bool          // Close has begun; under mu

	poke chan struct{} // asks the reaper to look again
	quit chan struct{}
	wg   sync.WaitGroup
}

// New starts a pool and its reaper. Close it when every child is gone.
func New(cfg Config) (*Pool, error) {
	if cfg.Max < 1 {
		cfg.Max = 1
	}
	if cfg.TailSize <= 0 {
		cfg.TailSize = DefaultTailSize
	}
	if cfg.MaxLine <= 0 {
		cfg.MaxLine = DefaultMaxLine
	}
	if cfg.OutputDrain <= 0 {
		cfg.OutputDrain = DefaultOutputDrain
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	idle := make(chan struct{})
	close(idle)
	p := &Pool{
		cfg:     cfg,
		log:     log,
		devNull: devNull,
		max:     cfg.Max,
		byPid:   make(map[int]*Child),
		idle:    idle,
		poke:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
	}
	if err := p.isolate(); err != nil {
		p.closeIsolation()
		devNull.Close()
		return nil, err
	}
	p.wg.Add(1)
	go p.reapLoop()
	return p, nil
}

// Max returns the current number of slots.
func (p *Pool) Max() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.max
}

// SetMax changes the number of slots. Lowering it never kills a running
// child: slots above the new maximum are simply not handed out again once
// their children end. n < 1 is taken as 1.
func (p *Pool) SetMax(n int) {
	if n < 1 {
		n = 1
	}
	p.mu.Lock()
	p.max = n
	p.mu.Unlock()
}

// UpdateMax sets the number of slots to f(current), at least 1, in one
// step, and returns the old and new values.
func (p *Pool) UpdateMax(f func(int) int) (old, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old = p.max
	p.max = max(f(old), 1)
	return old, p.max
}

// TryAcquire reserves the lowest free slot below Max. It returns false when
// every slot is taken or a stop has begun. The slot stays reserved until the
// child started in it ends, or until Release.
func (p *Pool) TryAcquire() (slot int, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping != 0 || p.nslots >= p.max {
		return 0, false
	}
	for i := 0; i < p.max; i++ {
		if i == len(p.slots) {
			p.slots = append(p.slots, false)
		}
		if !p.slots[i] {
			p.slots[i] = true
			p.nslots++
			return i, true
		}
	}
	// Every slot below max is taken by children of a larger, older max.
	return 0, false
}

// Release gives back a slot reserved by TryAcquire that no child was
// started in.
func (p *Pool) Release(slot int) {
	p.mu.Lock()
	p.releaseLocked(slot)
	p.mu.Unlock()
}

func (p *Pool) releaseLocked(slot int) {
	if slot >= 0 && slot < len(p.slots) && p.slots[slot] {
		p.slots[slot] = false
		p.nslots--
	}
}

// Busy returns the number of slots taken, by running children or by
// reservations.
func (p *Pool) Busy() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nslots
}

// Start starts the command of spec in a slot reserved with TryAcquire.
// The child runs in a process group of its own. When it ends, its slot is
// released and Config.OnExit is called.
func (p *Pool) Start(slot int, spec *Spec) (*Child, error) {
	return p.start(slot, spec, nil)
}

func (p *Pool) start(slot int, spec *Spec, w *Worker) (*Child, error) {
	c, err := p.start1(slot, spec, w)
	if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
		// The pipes the slots keep are a cache: out of descriptors, they go
		// first, so that the next start (the caller backs off and tries
		// again) finds room even under a limit they alone would fill.
		p.shedSlotOutputs()
	}
	return c, err
}

func (p *Pool) start1(slot int, spec *Spec, w *Worker) (*Child, error) {
	p.mu.Lock()
	switch {
	case p.stopping != 0:
		p.mu.Unlock()
		return nil, ErrStopped
	case slot < 0 || slot >= len(p.slots) || !p.slots[slot]:
		p.mu.Unlock()
		return nil, fmt.Errorf("start in slot %d: %w", slot, ErrSlot)
	}
	p.mu.Unlock()

	c := newChild(p, slot, spec, w)
	l, err := c.launch()
	if err != nil {
		return nil, err
	}
	if err := c.isolate(l); err != nil {
		c.closeWriteEnds()
		c.closeReadEnds()
		c.closeStdin()
		return nil, err
	}
	var pid int
	var startErr error
	p.onSpawner(func() { pid, startErr = l.fork() })
	c.closeWriteEnds()
	c.startStdin(startErr == nil)
	if startErr != nil {
		c.closeReadEnds()
		c.isolationFailed()
		return nil, fmt.Errorf("start %s: %w", spec.Path, startErr)
	}
	c.started(pid)
	c.isolationStarted()
	if c.slotOut != nil {
		// Before the reaper can see the child, whose end gives the pipes
		// back to the slot.
		c.watchSlotOutput()
	}

	p.mu.Lock()
	p.byPid[c.Pid] = c
	if p.live == 0 {
		p.idle = make(chan struct{})
	}
	p.live++
	p.mu.Unlock()

	c.watch()
	// The child may have exited, and its SIGCHLD been handled, before its
	// pid was in byPid: make the reaper look once more.
	p.pokeReaper()
	return c, nil
}

// finalize runs once per child, after it was reaped and its output
// drained. The order matters to callers: the slot is free when OnExit runs,
// Done closes after OnExit, and Wait and Stop return only after both.
func (p *Pool) finalize(c *Child) {
	p.mu.Lock()
	p.releaseLocked(c.Slot)
	p.mu.Unlock()
	c.exit.Output = c.tail.Bytes()
	if p.cfg.OnExit != nil {
		p.cfg.OnExit(c)
	}
	close(c.done)
	p.mu.Lock()
	p.live--
	if p.live == 0 {
		close(p.idle)
	}
	p.mu.Unlock()
}

// StopMode says how Stop treats running children.
type StopMode int

// The stop modes, from the gentlest.
const (
	// Drain lets running children finish; idle workers are told to exit.
	Drain StopMode = iota + 1
	// Graceful sends each child's process group a signal, waits until a
	// deadline, then kills what is left.
	Graceful
	// Immediate kills every child's process group with SIGKILL.
	Immediate
)

// String returns "drain", "graceful" or "immediate".
func (m StopMode) String() string {
	switch m {
	case Drain:
		return "drain"
	case Graceful:
		return "graceful"
	case Immediate:
		return "immediate"
	}
	return fmt.Sprintf("StopMode(%d)", int(m))
}

// StopOptions refine a Stop.
type StopOptions struct {
	// Signal is sent to each child's process group by a graceful stop,
	// unless the child has a stop signal of its own (Spec.StopSignal,
	// Child.SetStopSignal); 0 sends nothing, not even those, so that
	// children only see the final SIGKILL.
	Signal syscall.Signal
	// Timeout is how long a graceful stop waits before SIGKILL
	// (default 30 s).
	Timeout time.Duration
}

// Stop refuses new children and ends the running ones as mode says. It
// returns when every child has been reaped and OnExit has returned for it,
// or with ctx's error. A stop can
// be escalated by calling Stop again with a harsher mode, from another
// goroutine; a gentler mode than the current one changes nothing but still
// waits.
func (p *Pool) Stop(ctx context.Context, mode StopMode, opt StopOptions) error {
	return p.BeginStop(mode, opt)(ctx)
}

// BeginStop is Stop up to its wait: it refuses new children, signals or
// retires the running ones as mode says, and arms a graceful stop's
// deadline, all before it returns; wait then waits as Stop does, and kills
// what is left at the deadline. A caller that must not block, such as a
// dispatcher, signals the children at once with BeginStop, and waits in
// another goroutine: handing the whole Stop to a new goroutine delayed
// the signals by the time it took to be scheduled (0.1 ms on a quiet
// machine, up to 3 ms on a busy one), on the way of every graceful stop.
func (p *Pool) BeginStop(mode StopMode, opt StopOptions) (wait func(context.Context) error) {
	p.mu.Lock()
	escalate := mode > p.stopping
	if escalate {
		p.stopping = mode
	}
	children := make([]*Child, 0, len(p.byPid))
	for _, c := range p.byPid {
		children = append(children, c)
	}
	idle := p.idle
	p.mu.Unlock()

	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	if escalate {
		p.log.Debug("stopping children", "mode", mode.String(), "children", len(children))
		for _, c := range children {
			switch mode {
			case Drain:
				c.retire()
			case Graceful:
				c.retire()
				c.stopSignal(opt.Signal) // the deadline below kills the rest
			case Immediate:
				c.stopKill()
			}
		}
	}

	var t *time.Timer
	if escalate && mode == Graceful {
		t = time.NewTimer(timeout)
	}
	return func(ctx context.Context) error {
		var deadline <-chan time.Time
		if t != nil {
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-idle:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			p.log.Warn("stop timeout reached, killing remaining children")
			return p.Stop(ctx, Immediate, opt)
		}
	}
}

// Wait returns when no child is running and OnExit has returned for every
// child, or with ctx's error.
func (p *Pool) Wait(ctx context.Context) error {
	p.mu.Lock()
	idle := p.idle
	p.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the reaper. Call it after Stop has returned; a child still
// running then is killed first.
func (p *Pool) Close() error {
	p.mu.Lock()
	left := len(p.byPid)
	p.mu.Unlock()
	if left > 0 {
		_ = p.Stop(context.Background(), Immediate, StopOptions{})
	}
	close(p.quit)
	p.wg.Wait()
	p.closeSlotOutputs()
	p.closeIsolation()
	return p.devNull.Close()
}

// privateEnv lists the variables through which a service manager speaks to
// the daemon itself. A job that saw them could send READY=1 or STOPPING=1 on
// the daemon's behalf, or try to take over its listening sockets.
var privateEnv = []string{
	"NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
	"WATCHDOG_USEC", "WATCHDOG_PID", EnvChild,
}

// scrubEnv returns env without privateEnv. It returns env itself when there
// is nothing to remove, and never modifies it.
func scrubEnv(env []string) []string {
	for i, kv := range env {
		if isPrivate(kv) {
			out := append(make([]string, 0, len(env)), env[:i]...)
			for _, kv := range env[i+1:] {
				if !isPrivate(kv) {
					out = append(out, kv)
				}
			}
			return out
		}
	}
	return env
}

// dedupEnv returns env with only the last of the entries of each name,
// as exec keeps it: a caller adds a variable at the end to override an
// inherited one, and a program's getenv would find the first. It returns
// env itself when no name repeats, and never modifies it.
func dedupEnv(env []string) []string {
	dup := false
	for i := 1; i < len(env) && !dup; i++ {
		name := envName(env[i])
		for _, kv := range env[:i] {
			if envName(kv) == name {
				dup = true
				break
			}
		}
	}
	if !dup {
		return env
	}
	seen := make(map[string]bool, len(env))
	out := make([]string, 0, len(env))
	for i := len(env) - 1; i >= 0; i-- {
		if name := envName(env[i]); !seen[name] {
			seen[name] = true
			out = append(out, env[i])
		}
	}
	slices.Reverse(out)
	return out
}

// envName returns the name of an environment entry NAME=value.
func envName(kv string) string {
	if i := strings.IndexByte(kv, '='); i >= 0 {
		return kv[:i]
	}
	return kv
}

func isPrivate(kv string) bool {
	for _, name := range privateEnv {
		if len(kv) > len(name) && kv[len(name)] == '=' && kv[:len(name)] == name {
			return true
		}
	}
	return false
}

// launch prepares the start of a child: its environment, its standard
// input, and the pipes of its output, which the pool reads itself.
func (c *Child) launch() (*launch, error) {
	spec := c.spec
	env := spec.Env
	if env == nil {
		env = os.Environ()
	}
	env = dedupEnv(scrubEnv(env))
	l := &launch{path: spec.Path, argv: spec.Args}
	if len(l.argv) == 0 {
		l.argv = []string{spec.Path}
	}
	l.attr.Env, l.attr.Dir = env, spec.Dir
	l.sys = syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Credential: spec.Credential,
	}
	if err := c.stdin(l, spec.Stdin); err != nil {
		return nil, err
	}
	so, err := c.pool.takeSlotOutput(c)
	if err != nil {
		c.closeStdin()
		return nil, fmt.Errorf("create output pipes: %w", err)
	}
	if so != nil {
		c.slotOut, c.shared = so, so
		l.files = append(l.files, uintptr(so.out[0].w), uintptr(so.out[1].w))
	} else {
		if err := c.openPipes(); err != nil {
			c.closeStdin()
			return nil, err
		}
		l.files = append(l.files, uintptr(c.outW), uintptr(c.errW))
	}
	if c.worker != nil {
		c.worker.tr.prepare(l)
	}
	return l, nil
}
