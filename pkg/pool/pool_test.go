package pool

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestExitStatus(t *testing.T) {
	p := newPool(t, Config{Max: 2})
	for _, tc := range []struct {
		args []string
		code int
		sig  syscall.Signal
	}{
		{[]string{"sh", "-c", "exit 0"}, 0, 0},
		{[]string{"sh", "-c", "exit 3"}, 3, 0},
		{[]string{"sh", "-c", "kill -USR1 $$"}, -1, syscall.SIGUSR1},
	} {
		c := mustStart(t, p, &Spec{Path: "/bin/sh", Args: tc.args})
		e := waitDone(t, c, 10*time.Second)
		if e.Code != tc.code || e.Signal != tc.sig {
			t.Errorf("%q: got %s, want code %d signal %v", tc.args, e, tc.code, tc.sig)
		}
		if e.Duration <= 0 {
			t.Errorf("%q: duration %v", tc.args, e.Duration)
		}
	}
}

func TestRusageAndTail(t *testing.T) {
	var mu sync.Mutex
	var got []Line
	sink := SinkFunc(func(l Line) {
		mu.Lock()
		l.Text = append([]byte(nil), l.Text...)
		got = append(got, l)
		mu.Unlock()
	})
	p := newPool(t, Config{Max: 1, Sink: sink, TailSize: 64})
	spec := helperSpec(t, "lines", "100")
	spec.Label = "job-7"
	c := mustStart(t, p, spec)
	e := waitDone(t, c, 10*time.Second)
	if !e.Success() {
		t.Fatalf("exit: %s", e)
	}
	// The helper is smaller than the test binary that starts it: rusage
	// cannot tell its peak from the daemon's (see TestMaxRSS).
	if (e.MaxRSSFrom == FromRusage) != (e.MaxRSS > 0) || e.MaxRSSFrom == FromCgroup {
		t.Errorf("MaxRSS = %d bytes from %v", e.MaxRSS, e.MaxRSSFrom)
	}
	if e.UserCPU+e.SysCPU <= 0 {
		t.Errorf("no CPU time recorded: %v + %v", e.UserCPU, e.SysCPU)
	}
	if len(e.Output) != 64 {
		t.Errorf("tail has %d bytes, want 64: %q", len(e.Output), e.Output)
	}
	if !strings.HasSuffix(string(e.Output), "99\n") {
		t.Errorf("tail does not end with the last line: %q", e.Output)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 200 {
		t.Fatalf("sink got %d lines, want 200", len(got))
	}
	var out, errs int
	for _, l := range got {
		if l.Label != "job-7" || l.Slot != c.Slot || l.Pid != c.Pid || l.Partial {
			t.Fatalf("bad line %+v", l)
		}
		switch l.Stream {
		case Stdout:
			if string(l.Text) != fmt.Sprintf("line %d", out) {
				t.Fatalf("stdout line %d is %q", out, l.Text)
			}
			out++
		case Stderr:
			if string(l.Text) != fmt.Sprintf("err %d", errs) {
				t.Fatalf("stderr line %d is %q", errs, l.Text)
			}
			errs++
		}
	}
}

// A child that writes 10 MB without a newline reaches the sink in pieces no
// longer than MaxLine, and the tail stays bounded.
func TestLongLineIsBounded(t *testing.T) {
	var pieces, bytes, longest atomic.Int64
	var partial atomic.Int64
	sink := SinkFunc(func(l Line) {
		pieces.Add(1)
		bytes.Add(int64(len(l.Text)))
		if int64(len(l.Text)) > longest.Load() {
			longest.Store(int64(len(l.Text)))
		}
		if l.Partial {
			partial.Add(1)
		}
	})
	p := newPool(t, Config{Max: 1, Sink: sink, MaxLine: 4096})
	c := mustStart(t, p, helperSpec(t, "spew", "10000000"))
	e := waitDone(t, c, 30*time.Second)
	if !e.Success() {
		t.Fatalf("exit: %s", e)
	}
	if bytes.Load() != 10_000_000 {
		t.Errorf("sink got %d bytes, want 10000000", bytes.Load())
	}
	if longest.Load() > 4096 {
		t.Errorf("longest piece %d > MaxLine", longest.Load())
	}
	if partial.Load() != pieces.Load() {
		t.Errorf("%d of %d pieces marked partial; all should be, no newline was written", partial.Load(), pieces.Load())
	}
	if len(e.Output) != DefaultTailSize {
		t.Errorf("tail is %d bytes, want %d", len(e.Output), DefaultTailSize)
	}
}

// 500 jobs through the pool while other code in the process runs and waits
// for its own children: neither side may see the other's exits.
func TestForeignChildrenUntouched(t *testing.T) {
	ex := newExits()
	p := newPool(t, Config{Max: 8, OnExit: ex.add})

	stop := make(chan struct{})
	var foreignRuns, foreignErrs atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := exec.Command("true").Run(); err != nil {
					foreignErrs.Add(1)
					t.Errorf("exec.Command(true).Run: %v", err)
				}
				foreignRuns.Add(1)
			}
		}()
	}

	const n = 500
	want := map[int]int{} // pid → expected code
	started := 0
	for started < n {
		slot, ok := p.TryAcquire()
		if !ok {
			<-ex.cond
			continue
		}
		code := started % 7
		c, err := p.Start(slot, &Spec{Path: "/bin/sh", Args: []string{"sh", "-c", "exit " + strconv.Itoa(code)}})
		if err != nil {
			t.Fatal(err)
		}
		want[c.Pid] = code
		started++
	}
	if err := p.Wait(ctxTimeout(t, 30*time.Second)); err != nil {
		t.Fatalf("wait: %v (%d of %d exited)", err, ex.count(), n)
	}
	close(stop)
	wg.Wait()

	if ex.count() != n {
		t.Fatalf("%d exits, want %d", ex.count(), n)
	}
	seen := map[*Child]bool{}
	for _, c := range ex.all {
		if seen[c] {
			t.Fatalf("child %d reported twice", c.Pid)
		}
		seen[c] = true
		if e := c.Exit(); e.Err != nil || e.Code != want[c.Pid] {
			t.Errorf("pid %d: %s, want exit %d", c.Pid, e, want[c.Pid])
		}
	}
	if foreignRuns.Load() == 0 || foreignErrs.Load() != 0 {
		t.Errorf("foreign runs %d, errors %d", foreignRuns.Load(), foreignErrs.Load())
	}
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// A job that forks a grandchild and sleeps is stopped with its whole group
// when its timeout passes.
func TestTimeoutKillsGroup(t *testing.T) {
	var gpid atomic.Int64
	sink := SinkFunc(func(l Line) {
		if n, err := strconv.Atoi(string(l.Text)); err == nil {
			gpid.Store(int64(n))
		}
	})
	p := newPool(t, Config{Max: 1, Sink: sink, OutputDrain: 100 * time.Millisecond})
	c := mustStart(t, p, &Spec{
		Path:      "/bin/sh",
		Args:      []string{"sh", "-c", "sleep 300 & echo $!; wait"},
		Timeout:   300 * time.Millisecond,
		KillGrace: 5 * time.Second,
	})
	e := waitDone(t, c, 10*time.Second)
	if !e.TimedOut || e.Signal != syscall.SIGTERM {
		t.Errorf("exit %s, want timeout by SIGTERM", e)
	}
	g := int(gpid.Load())
	if g == 0 {
		t.Fatal("grandchild pid never printed")
	}
	if !eventually(2*time.Second, func() bool { return !alive(g) }) {
		t.Errorf("grandchild %d still alive", g)
	}
}

// A job that ignores the stop signal is killed after the grace period.
func TestTimeoutEscalatesToKill(t *testing.T) {
	ready := make(chan struct{}, 1)
	sink := SinkFunc(func(l Line) {
		if string(l.Text) == "ready" {
			ready <- struct{}{}
		}
	})
	p := newPool(t, Config{Max: 1, Sink: sink})
	spec := helperSpec(t, "ignore-term")
	// Long enough for the helper to start and ignore TERM on a loaded
	// machine; an earlier TERM would kill it before it could.
	spec.Timeout = 1500 * time.Millisecond
	spec.KillGrace = 300 * time.Millisecond
	c := mustStart(t, p, spec)
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("helper never became ready")
	}
	e := waitDone(t, c, 10*time.Second)
	if !e.TimedOut || e.Signal != syscall.SIGKILL {
		t.Errorf("exit %s, want timeout by SIGKILL", e)
	}
	if e.Duration < 1800*time.Millisecond {
		t.Errorf("killed after %v, before timeout + grace", e.Duration)
	}
}

// The children of a SIGKILLed daemon die with it: command children and
// command workers through Pdeathsig, Go workers through it and their
// channel.
func TestChildrenDieWithDaemon(t *testing.T) {
	self, _ := os.Executable()
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), helperEnv+"=daemon")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pids []int
	sc := bufio.NewScanner(out)
	for len(pids) < 6 && sc.Scan() {
		pid, err := strconv.Atoi(sc.Text())
		if err != nil {
			t.Fatalf("daemon said %q", sc.Text())
		}
		pids = append(pids, pid)
	}
	if len(pids) != 6 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("daemon printed %d pids", len(pids))
	}
	for _, pid := range pids {
		if !alive(pid) {
			t.Fatalf("child %d not running before the kill", pid)
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	for _, pid := range pids {
		if !eventually(2*time.Second, func() bool { return !alive(pid) }) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("child %d still alive 2 s after the daemon was killed", pid)
		}
	}
}

func TestPrivateEnvNotInherited(t *testing.T) {
	for _, name := range privateEnv {
		t.Setenv(name, "leak")
	}
	var mu sync.Mutex
	var lines []string
	sink := SinkFunc(func(l Line) {
		mu.Lock()
		lines = append(lines, string(l.Text))
		mu.Unlock()
	})
	p := newPool(t, Config{Max: 1, Sink: sink})
	// Env nil: inherit the daemon's environment, minus the private part.
	e := waitDone(t, mustStart(t, p, &Spec{Path: "/usr/bin/env", Args: []string{"env"}}), 10*time.Second)
	if !e.Success() {
		t.Fatalf("env: %s", e)
	}
	// An explicit environment is scrubbed too.
	e = waitDone(t, mustStart(t, p, &Spec{Path: "/usr/bin/env", Args: []string{"env"}, Env: []string{"NOTIFY_SOCKET=x", "KEEP=1"}}), 10*time.Second)
	if !e.Success() {
		t.Fatalf("env: %s", e)
	}
	mu.Lock()
	defer mu.Unlock()
	kept := false
	for _, l := range lines {
		if isPrivate(l) {
			t.Errorf("child inherited %s", l)
		}
		kept = kept || l == "KEEP=1"
	}
	if !kept || len(lines) < 2 {
		t.Errorf("child environment lost what it was given: %q", lines)
	}
}

// A descriptor the daemon opened without close-on-exec does not reach jobs.
func TestStrayFDsNotInherited(t *testing.T) {
	fd, err := syscall.Open(os.DevNull, syscall.O_RDONLY, 0) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	const stray = 100
	if err := syscall.Dup3(fd, stray, 0); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(stray)
	var mu sync.Mutex
	var fds []string
	sink := SinkFunc(func(l Line) {
		mu.Lock()
		fds = append(fds, string(l.Text))
		mu.Unlock()
	})
	p := newPool(t, Config{Max: 1, Sink: sink})
	e := waitDone(t, mustStart(t, p, &Spec{Path: "/bin/sh", Args: []string{"sh", "-c", "ls /proc/$$/fd"}}), 10*time.Second)
	if !e.Success() {
		t.Fatalf("ls: %s", e)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(fds, " ") != "0 1 2" {
		t.Errorf("the job's shell has descriptors %v, want only 0 1 2", fds)
	}
}

// Lowering Max never kills running children; it only stops handing out
// slots until enough have ended.
func TestSetMaxLowerKeepsRunning(t *testing.T) {
	ex := newExits()
	p := newPool(t, Config{Max: 3, OnExit: ex.add})
	var cs []*Child
	for i := 0; i < 3; i++ {
		cs = append(cs, mustStart(t, p, &Spec{Path: "/bin/sleep", Args: []string{"sleep", "0.3"}}))
	}
	p.SetMax(1)
	if _, ok := p.TryAcquire(); ok {
		t.Fatal("acquired a slot with 3 running and max 1")
	}
	for _, c := range cs {
		if e := waitDone(t, c, 10*time.Second); !e.Success() {
			t.Errorf("child %d: %s after lowering max", c.Pid, e)
		}
	}
	slot, ok := p.TryAcquire()
	if !ok || slot != 0 {
		t.Fatalf("after all ended: slot %d ok %v, want slot 0", slot, ok)
	}
	if _, ok := p.TryAcquire(); ok {
		t.Fatal("second slot acquired with max 1")
	}
	p.Release(slot)
}

// sleeperAndStubborn starts a pool with a child that sleeps and one that
// ignores SIGTERM, and returns once the second has said it does.
func sleeperAndStubborn(t *testing.T) (*Pool, *Child, *Child) {
	t.Helper()
	ready := make(chan struct{}, 1)
	p := newPool(t, Config{Max: 2, Sink: SinkFunc(func(l Line) { ready <- struct{}{} })})
	c1 := mustStart(t, p, &Spec{Path: "/bin/sleep", Args: []string{"sleep", "300"}})
	c2 := mustStart(t, p, helperSpec(t, "ignore-term"))
	<-ready
	return p, c1, c2
}

func TestStopModes(t *testing.T) {
	t.Run("drain", func(t *testing.T) {
		p := newPool(t, Config{Max: 2})
		c := mustStart(t, p, &Spec{Path: "/bin/sleep", Args: []string{"sleep", "0.3"}})
		if err := p.Stop(ctxTimeout(t, 10*time.Second), Drain, StopOptions{}); err != nil {
			t.Fatal(err)
		}
		if e := c.Exit(); !e.Success() {
			t.Errorf("drained child: %s", e)
		}
		if _, err := p.Start(0, &Spec{Path: "/bin/true"}); err != ErrStopped {
			t.Errorf("start after stop: %v, want ErrStopped", err)
		}
	})
	t.Run("graceful", func(t *testing.T) {
		p, c1, c2 := sleeperAndStubborn(t)
		start := time.Now()
		err := p.Stop(ctxTimeout(t, 10*time.Second), Graceful, StopOptions{Signal: syscall.SIGTERM, Timeout: 400 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if e := c1.Exit(); e.Signal != syscall.SIGTERM {
			t.Errorf("sleep: %s, want SIGTERM", e)
		}
		if e := c2.Exit(); e.Signal != syscall.SIGKILL {
			t.Errorf("TERM-ignoring child: %s, want SIGKILL", e)
		}
		if d := time.Since(start); d < 400*time.Millisecond {
			t.Errorf("graceful stop returned after %v, before its timeout", d)
		}
	})
	t.Run("graceful, begun then waited for", func(t *testing.T) {
		// BeginStop has signalled every child when it returns, and its
		// deadline runs from then, whoever waits and from when.
		p, c1, c2 := sleeperAndStubborn(t)
		start := time.Now()
		wait := p.BeginStop(Graceful, StopOptions{Signal: syscall.SIGTERM, Timeout: 400 * time.Millisecond})
		if !c1.Interrupted() || !c2.Interrupted() {
			t.Errorf("BeginStop returned with a child not yet signalled: %v, %v", c1.Interrupted(), c2.Interrupted())
		}
		if _, err := p.Start(0, &Spec{Path: "/bin/true"}); err != ErrStopped {
			t.Errorf("start after BeginStop: %v, want ErrStopped", err)
		}
		<-c1.Done() // the TERM it got from BeginStop, with nobody waiting
		if e := c1.Exit(); e.Signal != syscall.SIGTERM {
			t.Errorf("sleep: %s, want SIGTERM", e)
		}
		time.Sleep(200 * time.Millisecond)
		if err := wait(ctxTimeout(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		if e := c2.Exit(); e.Signal != syscall.SIGKILL {
			t.Errorf("TERM-ignoring child: %s, want SIGKILL", e)
		}
		if d := time.Since(start); d < 400*time.Millisecond || d > 5*time.Second {
			t.Errorf("the wait returned %v after BeginStop, want just after its 400ms deadline", d)
		}
	})
	t.Run("graceful kills what the job left behind", func(t *testing.T) {
		// The grandchild ignores TERM; the shell does not. When the shell
		// exits, the rest of its group is killed at once, not at the
		// stop's deadline.
		var gpid atomic.Int64
		printed := make(chan struct{}, 1)
		p := newPool(t, Config{Max: 1, OutputDrain: 100 * time.Millisecond, Sink: SinkFunc(func(l Line) {
			if n, err := strconv.Atoi(string(l.Text)); err == nil {
				gpid.Store(int64(n))
				printed <- struct{}{}
			}
		})})
		mustStart(t, p, &Spec{Path: "/bin/sh", Args: []string{"sh", "-c", `(trap "" TERM; exec sleep 300) & echo $!; wait`}})
		<-printed
		start := time.Now()
		if err := p.Stop(ctxTimeout(t, 30*time.Second), Graceful, StopOptions{Signal: syscall.SIGTERM, Timeout: 20 * time.Second}); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("stop took %v: the deadline, not the leader's exit, ended it", d)
		}
		g := int(gpid.Load())
		if !eventually(2*time.Second, func() bool { return !alive(g) }) {
			syscall.Kill(g, syscall.SIGKILL)
			t.Errorf("grandchild %d outlived its job's graceful stop", g)
		}
	})
	t.Run("immediate", func(t *testing.T) {
		p := newPool(t, Config{Max: 2})
		c := mustStart(t, p, &Spec{Path: "/bin/sleep", Args: []string{"sleep", "300"}})
		if err := p.Stop(ctxTimeout(t, 10*time.Second), Immediate, StopOptions{}); err != nil {
			t.Fatal(err)
		}
		if e := c.Exit(); e.Signal != syscall.SIGKILL {
			t.Errorf("child: %s, want SIGKILL", e)
		}
	})
	t.Run("escalate", func(t *testing.T) {
		p := newPool(t, Config{Max: 2})
		c := mustStart(t, p, &Spec{Path: "/bin/sleep", Args: []string{"sleep", "300"}})
		drained := make(chan error, 1)
		go func() { drained <- p.Stop(context.Background(), Drain, StopOptions{}) }()
		time.Sleep(100 * time.Millisecond)
		if err := p.Stop(ctxTimeout(t, 10*time.Second), Immediate, StopOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := <-drained; err != nil {
			t.Errorf("drain after escalation: %v", err)
		}
		if e := c.Exit(); e.Signal != syscall.SIGKILL {
			t.Errorf("child: %s, want SIGKILL", e)
		}
	})
}

// A graceful stop sends a child its own stop signal, its Spec's or
// SetStopSignal's, in place of StopOptions.Signal; one without sends
// StopOptions.Signal; a stop whose Signal is 0 sends none of them.
func TestGracefulStopOwnSignal(t *testing.T) {
	sleep := func(sig syscall.Signal) *Spec {
		return &Spec{Path: "/bin/sleep", Args: []string{"sleep", "300"}, StopSignal: sig}
	}
	t.Run("forwarded", func(t *testing.T) {
		p := newPool(t, Config{Max: 3})
		plain := mustStart(t, p, sleep(0))
		own := mustStart(t, p, sleep(syscall.SIGUSR1))
		changed := mustStart(t, p, sleep(syscall.SIGUSR1))
		changed.SetStopSignal(syscall.SIGUSR2)
		if err := p.Stop(ctxTimeout(t, 10*time.Second), Graceful, StopOptions{Signal: syscall.SIGTERM, Timeout: 5 * time.Second}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			child *Child
			want  syscall.Signal
		}{{plain, syscall.SIGTERM}, {own, syscall.SIGUSR1}, {changed, syscall.SIGUSR2}} {
			if e := c.child.Exit(); e.Signal != c.want || !c.child.Interrupted() {
				t.Errorf("child %d: %s, interrupted %v; want %v, interrupted", c.child.Pid, e, c.child.Interrupted(), c.want)
			}
		}
	})
	t.Run("not forwarded", func(t *testing.T) {
		p := newPool(t, Config{Max: 1})
		own := mustStart(t, p, sleep(syscall.SIGUSR1))
		if err := p.Stop(ctxTimeout(t, 10*time.Second), Graceful, StopOptions{Timeout: 300 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		if e := own.Exit(); e.Signal != syscall.SIGKILL {
			t.Errorf("%s; want SIGKILL at the deadline, no signal before", e)
		}
	})
}

func TestSignalAfterExit(t *testing.T) {
	p := newPool(t, Config{Max: 1})
	c := mustStart(t, p, &Spec{Path: "/bin/true"})
	waitDone(t, c, 10*time.Second)
	if err := c.Signal(syscall.SIGTERM); err != os.ErrProcessDone {
		t.Errorf("signal after exit: %v, want os.ErrProcessDone", err)
	}
}

func TestStartErrors(t *testing.T) {
	p := newPool(t, Config{Max: 1})
	if _, err := p.Start(0, &Spec{Path: "/bin/true"}); err == nil {
		t.Error("start in a slot that was not acquired succeeded")
	}
	slot, _ := p.TryAcquire()
	_, err := p.Start(slot, &Spec{Path: "/nonexistent/program"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/program") {
		t.Errorf("start of a missing program: %v", err)
	}
	p.Release(slot)
	if got := p.Busy(); got != 0 {
		t.Errorf("busy = %d after release", got)
	}
}

func TestTail(t *testing.T) {
	tb := NewTail(8)
	tb.write([]byte("abc"))
	if got := string(tb.Bytes()); got != "abc" {
		t.Fatalf("got %q", got)
	}
	tb.write([]byte("defgh"))
	if got := string(tb.Bytes()); got != "abcdefgh" {
		t.Fatalf("got %q", got)
	}
	tb.write([]byte("ij"))
	if got := string(tb.Bytes()); got != "cdefghij" {
		t.Fatalf("got %q", got)
	}
	tb.write([]byte("0123456789"))
	if got := string(tb.Bytes()); got != "23456789" {
		t.Fatalf("got %q", got)
	}
	tb.write([]byte("xyz"))
	if got := string(tb.Bytes()); got != "56789xyz" {
		t.Fatalf("got %q", got)
	}
}

func TestScrubEnv(t *testing.T) {
	in := []string{"A=1", "NOTIFY_SOCKET=/run/x", "LISTEN_FDS=1", "NOTIFY_SOCKETX=keep", "B=2", "WATCHDOG_USEC=5"}
	out := scrubEnv(in)
	if strings.Join(out, " ") != "A=1 NOTIFY_SOCKETX=keep B=2" {
		t.Errorf("scrubEnv = %q", out)
	}
	if in[1] != "NOTIFY_SOCKET=/run/x" {
		t.Error("scrubEnv modified its input")
	}
	clean := []string{"A=1"}
	if got := scrubEnv(clean); &got[0] != &clean[0] {
		t.Error("scrubEnv copied a clean environment")
	}
}

// Of several entries of one name, the last is the child's, as exec keeps
// it; a clean environment is passed as it is.
func TestDedupEnv(t *testing.T) {
	in := []string{"A=1", "B=2", "A=3", "C", "B=4"}
	if got := strings.Join(dedupEnv(in), " "); got != "A=3 C B=4" {
		t.Errorf("dedupEnv = %q, want the last of each name, in order", got)
	}
	if in[0] != "A=1" || in[4] != "B=4" {
		t.Error("dedupEnv modified its input")
	}
	clean := []string{"A=1", "B=2"}
	if got := dedupEnv(clean); &got[0] != &clean[0] {
		t.Error("dedupEnv copied a clean environment")
	}
}

// A Stdin that is not a file reaches the child whole through a pipe,
// small or larger than a pipe holds; a child that reads only the start
// of it and exits is no error.
func TestReaderStdin(t *testing.T) {
	p := newPool(t, Config{Max: 1})
	for _, n := range []int{3, 200 << 10} {
		c := mustStart(t, p, &Spec{Path: "/bin/sh", Args: []string{"sh", "-c", "wc -c"}, Stdin: bytes.NewReader(make([]byte, n))})
		if e := waitDone(t, c, 10*time.Second); e.Code != 0 || strings.TrimSpace(string(e.Output)) != strconv.Itoa(n) {
			t.Errorf("%d bytes in: %s, output %q", n, e, e.Output)
		}
	}
	c := mustStart(t, p, &Spec{Path: "/bin/sh", Args: []string{"sh", "-c", "head -c 1"}, Stdin: bytes.NewReader(make([]byte, 1<<20))})
	if e := waitDone(t, c, 10*time.Second); e.Code != 0 || len(e.Output) != 1 {
		t.Errorf("a child that reads one byte of 1 MiB: %s, output %q", e, e.Output)
	}
}

// Go destroys a thread when a goroutine locked to it exits. A child must
// not die of Pdeathsig when that happens to the thread its Start ran on.
func TestChildSurvivesThreadExits(t *testing.T) {
	p := newPool(t, Config{Max: 4})
	var cs []*Child
	for i := 0; i < 4; i++ {
		cs = append(cs, mustStart(t, p, &Spec{Path: "/bin/sleep", Args: []string{"sleep", "30"}}))
		// Retire threads, including, likely, the one Start ran on.
		for j := 0; j < 20; j++ {
			done := make(chan struct{})
			go func() {
				runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
				close(done)
			}()
			<-done
		}
	}
	time.Sleep(200 * time.Millisecond)
	for _, c := range cs {
		if !alive(c.Pid) {
			t.Errorf("child %d died when a thread of the daemon exited", c.Pid)
		}
	}
}

// Usage reads a running child's CPU time and memory, and refuses once the
// child has been reaped.
func TestUsage(t *testing.T) {
	p := newPool(t, Config{Max: 1})
	c := mustStart(t, p, &Spec{Path: "/bin/sh", Args: []string{"sh", "-c", "while :; do :; done"}})
	var u Usage
	if !eventually(10*time.Second, func() bool {
		var err error
		u, err = c.Usage()
		if err != nil {
			t.Fatalf("Usage of a running child: %v", err)
		}
		return u.UserCPU+u.SysCPU >= 50*time.Millisecond
	}) {
		t.Fatalf("a busy loop used no CPU time: %+v", u)
	}
	if u.RSS < 4096 {
		t.Errorf("RSS = %d bytes, want at least a page", u.RSS)
	}
	c.Stop(syscall.SIGKILL, time.Second)
	waitDone(t, c, 10*time.Second)
	if _, err := c.Usage(); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Usage after exit = %v, want os.ErrProcessDone", err)
	}
}

// A command name with spaces and parentheses does not shift the fields.
func TestReadUsageOddName(t *testing.T) {
	dir := t.TempDir()
	prog := dir + "/a) b ("
	if err := os.Symlink("/bin/sleep", prog); err != nil {
		t.Fatal(err)
	}
	p := newPool(t, Config{Max: 1})
	c := mustStart(t, p, &Spec{Path: prog, Args: []string{prog, "10"}})
	defer c.Stop(syscall.SIGKILL, time.Second)
	var u Usage
	if !eventually(5*time.Second, func() bool {
		var err error
		u, err = c.Usage()
		if err != nil {
			t.Fatal(err)
		}
		return u.RSS > 0
	}) {
		t.Fatalf("usage of %q: %+v", prog, u)
	}
	// Fields shifted by the name would give addresses or counts here.
	if u.RSS > 1<<30 || u.UserCPU+u.SysCPU > 5*time.Second {
		t.Errorf("implausible usage of sleep: %+v", u)
	}
}
