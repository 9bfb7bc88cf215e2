package pool

import (
	"bufio"
	"bytes"
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

// helperLines is a ProtocolLines worker: one job per line on stdin, one
// answer per line on fd 3. Jobs (plain text, the pool does not care):
//
//	ok:X          answer "done:X"
//	exit:N        exit with status N, unanswered
//	hang          start a grandchild "sleep 300", print its pid, hang
//	twice         answer twice
//	endless       write one line on fd 3 that never ends
//	long:N        answer with a line of N bytes
//	partial       write half an answer on fd 3 and exit
//	close3        close fd 3, then carry on reading stdin
//	say:X         print X on stdout, then answer "said"
//	sayend:X      print "X-line", a newline and "X-end" on stdout, then
//	              answer "said"
//	len           answer the length of the job line
//
// With LINES_WAIT=path it waits until path exists before it reads stdin.
func helperLines() {
	if p := os.Getenv("LINES_WAIT"); p != "" {
		for {
			if _, err := os.Stat(p); err == nil {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	answers := os.NewFile(3, "answers")
	in := bufio.NewReaderSize(os.Stdin, 1<<16)
	answer := func(s string) {
		if _, err := answers.WriteString(s + "\n"); err != nil {
			fmt.Fprintln(os.Stderr, "answer:", err)
			os.Exit(4)
		}
	}
	for {
		line, err := in.ReadString('\n')
		if err != nil {
			os.Exit(0) // stdin closed: retired
		}
		job := strings.TrimSuffix(line, "\n")
		verb, arg, _ := strings.Cut(job, ":")
		switch verb {
		case "ok":
			answer("done:" + arg)
		case "exit":
			code, _ := strconv.Atoi(arg)
			os.Exit(code)
		case "hang":
			cmd := exec.Command("sleep", "300")
			if err := cmd.Start(); err != nil {
				os.Exit(5)
			}
			fmt.Println(cmd.Process.Pid)
			for { // not select {}: alone, the runtime calls it a deadlock
				time.Sleep(time.Hour)
			}
		case "twice":
			answer("one")
			answer("two")
		case "endless":
			chunk := bytes.Repeat([]byte("x"), 1<<16)
			for {
				if _, err := answers.Write(chunk); err != nil {
					os.Exit(6)
				}
			}
		case "long":
			n, _ := strconv.Atoi(arg)
			answer(strings.Repeat("y", n))
		case "partial":
			answers.WriteString("half an ans")
			os.Exit(0)
		case "close3":
			answers.Close()
		case "say":
			fmt.Println(arg)
			answer("said")
		case "sayend":
			fmt.Printf("%s-line\n%s-end", arg, arg)
			answer("said")
		case "len":
			answer(strconv.Itoa(len(job)))
		default:
			answer("unknown:" + job)
		}
	}
}

func linesSpec(t testing.TB) *WorkerSpec {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &WorkerSpec{
		Protocol: ProtocolLines,
		Spec:     Spec{Path: self, Args: []string{"lines-worker"}, Env: append(os.Environ(), helperEnv+"=lines", "GORACE=atexit_sleep_ms=0")},
	}
}

// answers collects what OnResult hands over.
type answers struct {
	ch chan string
}

func newAnswers(spec *WorkerSpec) *answers {
	a := &answers{ch: make(chan string, 16)}
	spec.OnResult = func(w *Worker, msg []byte) { a.ch <- string(msg) }
	return a
}

func (a *answers) next(t testing.TB) string {
	t.Helper()
	select {
	case s := <-a.ch:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no answer within 10 s")
		return ""
	}
}

// ask sends w msg and returns its answer; a failed send ends the test.
func (a *answers) ask(t testing.TB, w *Worker, msg string) string {
	t.Helper()
	if err := w.Send([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	return a.next(t)
}

// startWorker starts a worker of spec in a free slot of p.
func startWorker(t testing.TB, p *Pool, spec *WorkerSpec) *Worker {
	t.Helper()
	slot, ok := p.TryAcquire()
	if !ok {
		t.Fatal("no free slot")
	}
	w, err := p.StartWorker(slot, spec)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// zombies returns the pids of this process's children that have exited
// and not been reaped.
func zombies() []int {
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(self) {
			out = append(out, pid)
		}
	}
	return out
}

// noZombies fails the test if a child of this process is left a zombie.
func noZombies(t testing.TB) {
	t.Helper()
	var z []int
	if !eventually(5*time.Second, func() bool { z = zombies(); return len(z) == 0 }) {
		t.Errorf("zombie children left: %v", z)
	}
}

func TestLinesRoundTrip(t *testing.T) {
	var mu sync.Mutex
	var out []Line
	sink := SinkFunc(func(l Line) {
		mu.Lock()
		l.Text = bytes.Clone(l.Text)
		out = append(out, l)
		mu.Unlock()
	})
	p := newPool(t, Config{Max: 1, Sink: sink})
	spec := linesSpec(t)
	a := newAnswers(spec)
	w := startWorker(t, p, spec)

	if err := w.Send([]byte("ok:1")); err != nil {
		t.Fatal(err)
	}
	if err := w.Send([]byte("ok:2")); err != ErrBusy {
		t.Errorf("send while busy: %v, want ErrBusy", err)
	}
	if got := a.next(t); got != "done:1" {
		t.Errorf("answer %q", got)
	}
	if err := w.Send([]byte("two\nlines")); !errors.Is(err, ErrNewline) {
		t.Errorf("send of two lines: %v, want ErrNewline", err)
	}
	// A line on stdout that looks like an answer is log output, under the
	// label of the job in progress.
	w.SetLabel("job-7")
	if got := a.ask(t, w, `say:{"id":"job-7","ok":true}`); got != "said" {
		t.Errorf("answer %q, want only the one on fd 3", got)
	}
	w.Retire()
	if err := w.Send([]byte("ok:late")); err != ErrRetiring {
		t.Errorf("send after retire: %v, want ErrRetiring", err)
	}
	e := waitDone(t, w.Child, 10*time.Second)
	if !e.Success() || w.Completed() != 2 || w.Err() != nil {
		t.Errorf("worker: %s after %d jobs, err %v; want a clean exit after 2", e, w.Completed(), w.Err())
	}
	select {
	case s := <-a.ch:
		t.Errorf("stray answer %q", s)
	default:
	}
	mu.Lock()
	defer mu.Unlock()
	if len(out) != 1 || out[0].Label != "job-7" || out[0].Stream != Stdout || string(out[0].Text) != `{"id":"job-7","ok":true}` {
		t.Errorf("log output %+v, want the one stdout line of job-7", out)
	}
	noZombies(t)
}

// A job larger than the pipe, sent while the worker does not read yet,
// does not block Send; the worker gets it whole.
func TestLinesSendDoesNotWaitForReader(t *testing.T) {
	gate := t.TempDir() + "/go"
	p := newPool(t, Config{Max: 1})
	spec := linesSpec(t)
	spec.Env = append(spec.Env, "LINES_WAIT="+gate)
	a := newAnswers(spec)
	w := startWorker(t, p, spec)
	job := append([]byte("len:"), bytes.Repeat([]byte("z"), 3<<20)...)
	sent := make(chan error, 1)
	go func() { sent <- w.Send(job) }()
	select {
	case err := <-sent:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		os.WriteFile(gate, nil, 0o644)
		t.Fatal("Send waited for the worker to read")
	}
	// The caller may reuse its buffer at once.
	for i := range job {
		job[i] = '!'
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := a.next(t), strconv.Itoa(4+3<<20); got != want {
		t.Errorf("worker read a job of %s bytes, want %s", got, want)
	}
	// Retire while nothing is being written: stdin closes, it exits.
	w.Retire()
	if e := waitDone(t, w.Child, 10*time.Second); !e.Success() {
		t.Errorf("worker: %s", e)
	}
	noZombies(t)
}

// A retire that comes while a large job is still being written closes
// stdin only after the job.
func TestLinesRetireAfterLargeJob(t *testing.T) {
	p := newPool(t, Config{Max: 1})
	spec := linesSpec(t)
	spec.Jobs = 1 // Send itself retires it
	a := newAnswers(spec)
	w := startWorker(t, p, spec)
	if err := w.Send(append([]byte("len:"), bytes.Repeat([]byte("z"), 1<<20)...)); err != nil {
		t.Fatal(err)
	}
	if got := a.next(t); got != strconv.Itoa(4+1<<20) {
		t.Errorf("answer %q", got)
	}
	if e := waitDone(t, w.Child, 10*time.Second); !e.Success() || !w.Retiring() {
		t.Errorf("worker: %s, retiring %v", e, w.Retiring())
	}
}

// Jobs through 2 workers that retire every 5 000 jobs and are replaced
// as they exit, as a daemon keeps its slots filled: each job answered
// exactly once, each worker retired after exactly its limit, and enough
// workers started. Once the pool is stable, exited workers ran 5 000 jobs
// each and the 2 live ones fewer, so at least 3 exited and 5 started.
func TestLinesRecycling(t *testing.T) {
	const jobs, limit, slots = 20000, 5000, 2
	type event struct {
		w      *Worker
		answer string
		exit   bool
	}
	events := make(chan event, 64)
	p := newPool(t, Config{Max: slots, OnExit: func(c *Child) { events <- event{w: c.Worker(), exit: true} }})
	spec := linesSpec(t)
	spec.Jobs = limit
	spec.OnResult = func(w *Worker, msg []byte) { events <- event{w: w, answer: string(msg)} }

	sent, answered := 0, 0
	var all, exited []*Worker
	live := map[*Worker]bool{}
	seen := make([]bool, jobs)
	feed := func(w *Worker) {
		if sent < jobs && !w.Retiring() {
			if err := w.Send([]byte("ok:" + strconv.Itoa(sent))); err != nil {
				t.Fatalf("send: %v", err)
			}
			sent++
		}
	}
	fill := func() {
		for {
			slot, ok := p.TryAcquire()
			if !ok {
				return
			}
			w, err := p.StartWorker(slot, spec)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, w)
			live[w] = true
			feed(w)
		}
	}
	stable := func() bool {
		for w := range live {
			if w.Retiring() {
				return false
			}
		}
		return len(live) == slots
	}
	fill()
	timeout := time.After(120 * time.Second)
	for answered < jobs || !stable() {
		select {
		case ev := <-events:
			if ev.exit {
				delete(live, ev.w)
				exited = append(exited, ev.w)
				if !ev.w.Exit().Success() || ev.w.Busy() || ev.w.Err() != nil || ev.w.Completed() != limit {
					t.Fatalf("worker %d ended with %s after %d jobs, busy %v, err %v", ev.w.Pid, ev.w.Exit(), ev.w.Completed(), ev.w.Busy(), ev.w.Err())
				}
				fill()
				continue
			}
			n, err := strconv.Atoi(strings.TrimPrefix(ev.answer, "done:"))
			if err != nil || n < 0 || n >= jobs || seen[n] {
				t.Fatalf("answer %q: unknown, or twice", ev.answer)
			}
			seen[n] = true
			answered++
			feed(ev.w)
		case <-timeout:
			t.Fatalf("timeout: %d sent, %d answered, %d workers started", sent, answered, len(all))
		}
	}
	total := 0
	for _, w := range all {
		total += w.Completed()
	}
	if total != jobs {
		t.Errorf("workers completed %d jobs in all, want %d", total, jobs)
	}
	if len(exited) < 3 || len(all) < 5 {
		t.Errorf("%d workers started and %d retired, want at least 5 and 3", len(all), len(exited))
	}
	t.Logf("%d workers started for %d jobs", len(all), jobs)
	if err := p.Stop(ctxTimeout(t, 10*time.Second), Drain, StopOptions{}); err != nil {
		t.Fatal(err)
	}
	noZombies(t)
}

// A worker killed mid-job is reported with its job in flight and the
// signal that killed it.
func TestLinesKilledMidJob(t *testing.T) {
	ex := newExits()
	w, grandchild := hangingWorker(t, Config{OnExit: ex.add}, 0)
	if err := syscall.Kill(w.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e := waitDone(t, w.Child, 10*time.Second)
	if e.Signal != syscall.SIGKILL || !w.Busy() || w.Completed() != 0 {
		t.Errorf("worker: %s, busy %v, completed %d; want killed with its job in flight", e, w.Busy(), w.Completed())
	}
	if ex.count() != 1 {
		t.Errorf("OnExit called %d times", ex.count())
	}
	// The leader was killed from outside, not stopped: its grandchild is
	// not the pool's to kill. Clean it up.
	syscall.Kill(grandchild, syscall.SIGKILL)
	noZombies(t)
}

// A hung worker is stopped with its whole process group, as a job timeout
// does it.
func TestLinesHangStopsGroup(t *testing.T) {
	w, grandchild := hangingWorker(t, Config{}, 0)
	w.Stop(syscall.SIGTERM, 5*time.Second)
	e := waitDone(t, w.Child, 10*time.Second)
	if e.Signal != syscall.SIGTERM || !w.Busy() {
		t.Errorf("worker: %s, busy %v; want SIGTERM with its job in flight", e, w.Busy())
	}
	if !eventually(5*time.Second, func() bool { return !alive(grandchild) }) {
		syscall.Kill(grandchild, syscall.SIGKILL)
		t.Errorf("grandchild %d outlived the stop of its worker", grandchild)
	}
	noZombies(t)
}

// Whatever a worker writes on fd 3 reaches the owner as one opaque line,
// or makes the pool stop the worker; the pool never crashes or grows.
func TestLinesBadAnswers(t *testing.T) {
	t.Run("garbage", func(t *testing.T) {
		p := newPool(t, Config{Max: 1})
		self, _ := os.Executable()
		spec := &WorkerSpec{Protocol: ProtocolLines, Spec: Spec{Path: "/bin/sh", Args: []string{"sh", "-c",
			`while read -r line; do printf '\000\377{not json at all\r\n' >&3; done`, self}}}
		a := newAnswers(spec)
		w := startWorker(t, p, spec)
		for i := 0; i < 3; i++ {
			if got := a.ask(t, w, "x"); got != "\x00\xff{not json at all\r" {
				t.Errorf("answer %q", got)
			}
		}
		w.Retire()
		if e := waitDone(t, w.Child, 10*time.Second); !e.Success() {
			t.Errorf("worker: %s", e)
		}
		noZombies(t)
	})
	t.Run("twice", func(t *testing.T) {
		p := newPool(t, Config{Max: 1})
		spec := linesSpec(t)
		a := newAnswers(spec)
		w := startWorker(t, p, spec)
		if got := a.ask(t, w, "twice"); got != "one" {
			t.Errorf("answer %q", got)
		}
		waitDone(t, w.Child, 10*time.Second)
		if !errors.Is(w.Err(), ErrUnexpectedAnswer) {
			t.Errorf("Err() = %v, want ErrUnexpectedAnswer", w.Err())
		}
		noZombies(t)
	})
	t.Run("partial", func(t *testing.T) {
		p := newPool(t, Config{Max: 1})
		w := startWorker(t, p, linesSpec(t))
		if err := w.Send([]byte("partial")); err != nil {
			t.Fatal(err)
		}
		waitDone(t, w.Child, 10*time.Second)
		if !errors.Is(w.Err(), ErrPartialAnswer) || !w.Busy() {
			t.Errorf("Err() = %v, busy %v; want ErrPartialAnswer with the job in flight", w.Err(), w.Busy())
		}
		noZombies(t)
	})
	t.Run("closes fd 3", func(t *testing.T) {
		p := newPool(t, Config{Max: 1})
		w := startWorker(t, p, linesSpec(t))
		if err := w.Send([]byte("close3")); err != nil {
			t.Fatal(err)
		}
		// The pool retires it: its stdin closes and it exits.
		e := waitDone(t, w.Child, 10*time.Second)
		if !e.Success() || !w.Busy() || !w.Retiring() {
			t.Errorf("worker: %s, busy %v, retiring %v", e, w.Busy(), w.Retiring())
		}
		noZombies(t)
	})
	for _, tc := range []struct{ name, job string }{
		{"10 MB line", "long:10000000"},
		{"endless line", "endless"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const limit = 1 << 20
			p := newPool(t, Config{Max: 1})
			spec := linesSpec(t)
			spec.MaxAnswer = limit
			a := newAnswers(spec)
			w := startWorker(t, p, spec)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			if err := w.Send([]byte(tc.job)); err != nil {
				t.Fatal(err)
			}
			e := waitDone(t, w.Child, 30*time.Second)
			runtime.ReadMemStats(&after)
			// Stopped with SIGTERM, or dead of the closed pipe before that.
			if !errors.Is(w.Err(), ErrAnswerTooLong) || e.Success() || !w.Busy() {
				t.Errorf("worker: %s, err %v, busy %v; want stopped for ErrAnswerTooLong with its job in flight", e, w.Err(), w.Busy())
			}
			select {
			case s := <-a.ch:
				t.Errorf("an answer of %d bytes was handed over", len(s))
			default:
			}
			// Gathering 1 MiB in a growing buffer allocates about twice that.
			if got := after.TotalAlloc - before.TotalAlloc; got > 6*limit {
				t.Errorf("the pool allocated %d bytes for a line capped at %d", got, limit)
			}
			noZombies(t)
		})
	}
}

// A worker that exits at once every time is reported every time, and
// nothing is left of it.
func TestLinesExitAtOnce(t *testing.T) {
	ex := newExits()
	p := newPool(t, Config{Max: 1, OnExit: ex.add})
	spec := &WorkerSpec{Protocol: ProtocolLines, Spec: Spec{Path: "/bin/sh", Args: []string{"sh", "-c", "exit 3"}}}
	for i := 0; i < 5; i++ {
		w := startWorker(t, p, spec)
		// The job may land in the pipe before the exit, or find it
		// closed: either way, the exit tells.
		err := w.Send([]byte("x"))
		e := waitDone(t, w.Child, 10*time.Second)
		if e.Code != 3 || w.Completed() != 0 {
			t.Errorf("start %d: %s after %d jobs (send: %v)", i, e, w.Completed(), err)
		}
	}
	if ex.count() != 5 {
		t.Errorf("%d exits reported, want 5", ex.count())
	}
	noZombies(t)
}

// A command worker gets no other descriptor than 0, 1, 2 and its answer
// pipe, and none of the daemon's private environment.
func TestLinesWorkerFDsAndEnv(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "/run/leak")
	var mu sync.Mutex
	var out []string
	p := newPool(t, Config{Max: 1, Sink: SinkFunc(func(l Line) {
		mu.Lock()
		out = append(out, string(l.Text))
		mu.Unlock()
	})})
	spec := &WorkerSpec{Protocol: ProtocolLines, Spec: Spec{Path: "/bin/sh", Args: []string{"sh", "-c",
		// No pipeline: the shell would hold the pipe's ends while ls lists
		// its descriptors.
		`ls -m /proc/$$/fd; echo "notify=${NOTIFY_SOCKET-unset} child=${JOBDAEMON_CHILD-unset}"; read -r line; echo "$line" >&3`}}}
	a := newAnswers(spec)
	w := startWorker(t, p, spec)
	if got := a.ask(t, w, "hi"); got != "hi" {
		t.Errorf("answer %q", got)
	}
	waitDone(t, w.Child, 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if len(out) != 2 || strings.TrimSpace(out[0]) != "0, 1, 2, 3" || out[1] != "notify=unset child=unset" {
		t.Errorf("worker saw %q; want fds 0 1 2 3 and no private variable", out)
	}
}

// Go and command workers in one pool, stopped gracefully together: each
// is told to exit (quit, or end of stdin) and ends cleanly.
func TestLinesAndGoDrain(t *testing.T) {
	p := newPool(t, Config{Max: 2})
	gs := workerSpec(t)
	ga := make(chan string, 1)
	gs.OnResult = func(w *Worker, msg []byte) { ga <- string(msg) }
	ls := linesSpec(t)
	la := newAnswers(ls)
	g := startWorker(t, p, gs)
	l := startWorker(t, p, ls)
	if err := g.Send([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := l.Send([]byte("ok:x")); err != nil {
		t.Fatal(err)
	}
	<-ga
	la.next(t)
	if err := p.Stop(ctxTimeout(t, 10*time.Second), Graceful, StopOptions{Timeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []*Worker{g, l} {
		if e := w.Exit(); !e.Success() {
			t.Errorf("%d worker: %s", w.Pid, e)
		}
	}
	noZombies(t)
}

func TestStartWorkerErrors(t *testing.T) {
	p := newPool(t, Config{Max: 1})
	slot, _ := p.TryAcquire()
	defer p.Release(slot)
	if _, err := p.StartWorker(slot, &WorkerSpec{Protocol: ProtocolLines}); err == nil {
		t.Error("a command worker without a program started")
	}
	if _, err := p.StartWorker(slot, &WorkerSpec{Protocol: 9, Spec: Spec{Path: "/bin/true"}}); err == nil {
		t.Error("a worker of an unknown protocol started")
	}
	_, err := p.StartWorker(slot, &WorkerSpec{Protocol: ProtocolLines, Spec: Spec{Path: "/nonexistent/worker"}})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/worker") {
		t.Errorf("start of a missing program: %v", err)
	}
	var fds atomic.Int64
	ents, _ := os.ReadDir("/proc/self/fd")
	fds.Store(int64(len(ents)))
	for i := 0; i < 20; i++ {
		p.StartWorker(slot, &WorkerSpec{Protocol: ProtocolLines, Spec: Spec{Path: "/nonexistent/worker"}})
	}
	ents, _ = os.ReadDir("/proc/self/fd")
	if n := int64(len(ents)); n > fds.Load()+2 {
		t.Errorf("failed starts leaked descriptors: %d before, %d after", fds.Load(), n)
	}
}

// What a worker writes before its answer is handed to the sink, under its
// job's label, before the answer is handed over, even with a slow sink:
// the next job's label never takes a line of the previous one. Both ways
// a worker's output is read: its slot's pipes (a worker of one job, in a
// per-job cgroup) and pipes of its own (a worker of many jobs, or one in a
// process group).
func TestLinesOutputBeforeAnswer(t *testing.T) {
	cgroups := func(t *testing.T) Isolation {
		needCgroups(t)
		return Isolation{Cgroups: CgroupRequire, CgroupName: testCgroupName(t)}
	}
	t.Run("slot pipes", func(t *testing.T) { testOutputBeforeAnswer(t, cgroups(t), 1, 40, true) })
	t.Run("own pipes, many jobs", func(t *testing.T) { testOutputBeforeAnswer(t, cgroups(t), 0, 200, false) })
	t.Run("own pipes, process group", func(t *testing.T) {
		testOutputBeforeAnswer(t, Isolation{Cgroups: CgroupOff}, 0, 200, false)
	})
}

// testOutputBeforeAnswer runs n jobs through workers of jobsPerWorker
// jobs (0: no limit) started one after another in a pool of one slot.
func testOutputBeforeAnswer(t *testing.T, iso Isolation, jobsPerWorker, n int, shared bool) {
	var mu sync.Mutex
	var out []Line
	sink := SinkFunc(func(l Line) {
		time.Sleep(200 * time.Microsecond) // a slow log
		mu.Lock()
		l.Text = bytes.Clone(l.Text)
		out = append(out, l)
		mu.Unlock()
	})
	p := newPool(t, Config{Max: 1, Sink: sink, Isolation: iso})
	spec := linesSpec(t)
	spec.Jobs = jobsPerWorker
	a := newAnswers(spec)
	var w *Worker
	for i := range n {
		if w == nil || w.Retiring() {
			if w != nil {
				waitDone(t, w.Child, 10*time.Second)
			}
			w = startWorker(t, p, spec)
			if (w.shared != nil) != shared {
				t.Fatalf("the worker writes into its slot's pipes: %v, want %v", w.shared != nil, shared)
			}
		}
		w.SetLabel(fmt.Sprint("job-", i))
		if got := a.ask(t, w, fmt.Sprint("say:line-", i)); got != "said" {
			t.Fatalf("answer %q", got)
		}
		mu.Lock()
		got := len(out)
		mu.Unlock()
		if got != i+1 {
			t.Fatalf("after the answer to job %d, %d lines were handed over, want %d", i, got, i+1)
		}
	}
	w.Retire()
	waitDone(t, w.Child, 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	for i, l := range out {
		if want := fmt.Sprint("line-", i); string(l.Text) != want || l.Label != fmt.Sprint("job-", i) {
			t.Errorf("line %d: %q under %q", i, l.Text, l.Label)
		}
	}
}

// hangingWorker starts a line worker of jobs jobs (0: no limit) in a pool
// of one slot made with cfg, hands it a job that starts a grandchild and
// hangs, and returns the worker and the grandchild's pid once the worker
// has printed it; the lines go on to cfg.Sink, if any.
func hangingWorker(t *testing.T, cfg Config, jobs int) (*Worker, int) {
	t.Helper()
	started := make(chan int, 1)
	cfg.Max, cfg.OutputDrain = 1, 100*time.Millisecond
	inner := cfg.Sink
	cfg.Sink = SinkFunc(func(l Line) {
		if inner != nil {
			inner.Line(l)
		}
		if n, err := strconv.Atoi(string(l.Text)); err == nil {
			started <- n
		}
	})
	spec := linesSpec(t)
	spec.Jobs = jobs
	w := startWorker(t, newPool(t, cfg), spec)
	if err := w.Send([]byte("hang")); err != nil {
		t.Fatal(err)
	}
	select {
	case grandchild := <-started:
		return w, grandchild
	case <-time.After(10 * time.Second):
		t.Fatal("worker never started its job")
		return nil, 0
	}
}
