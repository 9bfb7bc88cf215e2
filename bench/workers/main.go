// Command workers measures trivial jobs through a command worker (one of
// the reference workers of examples/workers, with a handler that does
// nothing), several ways:
//
//	-mode daemon          the daemon: jobs.Run with an in-memory source
//	                      and WorkerCommand (daemon.go), the whole path of
//	                      a job but the spool's filing
//	-mode daemon-process  the same with a worker per job (JobsPerChild 1):
//	                      the same script as one process per job
//	-mode pool      pkg/pool (ProtocolLines) and internal/workerproto, a
//	                dispatcher goroutine that encodes each job and parses
//	                each answer, the shape of pkg/jobs without it
//	-mode direct    the same, with no dispatcher goroutine
//	-mode bare      a bare driver: os/exec, the same two pipes, one
//	                goroutine per worker writing a line and reading a line
//	-mode process   the same script as one process per job: a worker
//	                retired after its one job (WorkerSpec.Jobs = 1)
//
// Usage: workers -mode M -n N -p P -- interpreter script
//
// It prints "mode=M jobs=N seconds=S rate=R/s cpu_us_per_job=C
// csw_per_job=W allocs_per_job=A", where C is the CPU time of this process
// alone (the daemon's side, without the workers) per job, W its threads'
// context switches per job, and A its heap allocations per job. The workers' start-up is outside the measure of
// daemon, pool, direct and bare, inside that of the process modes.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/internal/workerproto"
	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

var payload = []byte("ok")

func main() {
	mode := flag.String("mode", "pool", "pool, bare or process")
	n := flag.Int("n", 20000, "jobs")
	p := flag.Int("p", 2, "workers")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	flag.Parse()
	cmd := flag.Args()
	if *n <= 0 || *p <= 0 || len(cmd) == 0 {
		fmt.Fprintln(os.Stderr, "usage: workers -mode pool|bare|process -n N -p P -- interpreter script")
		os.Exit(2)
	}
	var run func(n, p int, cmd []string) (time.Duration, error)
	var measured *usage // the daemon modes' own measure of their usage
	daemon := func(jobsPerWorker int) func(n, p int, cmd []string) (time.Duration, error) {
		return func(n, p int, cmd []string) (time.Duration, error) {
			secs, u, err := runDaemon(n, p, jobsPerWorker, cmd)
			measured = &u
			return secs, err
		}
	}
	switch *mode {
	case "daemon":
		run = daemon(0)
	case "daemon-process":
		run = daemon(1)
	case "pool":
		run = runPool
	case "direct":
		run = runDirect
	case "bare":
		run = runBare
	case "process":
		run = runProcess
	default:
		fmt.Fprintln(os.Stderr, "workers: unknown mode", *mode)
		os.Exit(2)
	}
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "workers:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	u0 := selfUsage()
	secs, err := run(*n, *p, cmd)
	u := selfUsage().sub(u0)
	if measured != nil {
		u = *measured
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "workers:", err)
		os.Exit(1)
	}
	fmt.Printf("mode=%s jobs=%d seconds=%.3f rate=%.0f/s cpu_us_per_job=%.1f csw_per_job=%.2f allocs_per_job=%.2f\n",
		*mode, *n, secs.Seconds(), float64(*n)/secs.Seconds(), float64(u.cpu.Microseconds())/float64(*n),
		float64(u.csw)/float64(*n), float64(u.allocs)/float64(*n))
}

// usage is what this process used, without its children: CPU time, and
// context switches of all its threads (a thread that sleeps and is woken,
// or is preempted), which on a machine as busy as its cores take time from
// the workers that the CPU time alone does not show.
// And heap allocations: the benchmark's own source makes two per job (its
// Job and its id), the pool modes one or two (a copy of the answer, an id).
type usage struct {
	cpu    time.Duration
	csw    int64
	allocs uint64
}

func selfUsage() usage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return usage{}
	}
	// ReadMemStats, which counts the tiny allocations (an id) that
	// runtime/metrics leaves out; it stops the world, twice a run.
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return usage{time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Nvcsw + ru.Nivcsw, ms.Mallocs}
}

func (u usage) sub(v usage) usage { return usage{u.cpu - v.cpu, u.csw - v.csw, u.allocs - v.allocs} }

type result struct {
	w    *pool.Worker
	line []byte
}

// runPool runs n jobs through p workers the way pkg/jobs does: pool
// goroutines hand answers to one dispatcher goroutine, which parses each
// and sends the worker its next job.
func runPool(n, p int, cmd []string) (time.Duration, error) {
	results := make(chan result, p)
	pl, err := pool.New(pool.Config{Max: p})
	if err != nil {
		return 0, err
	}
	defer pl.Close()
	spec := &pool.WorkerSpec{
		Protocol:  pool.ProtocolLines,
		Spec:      pool.Spec{Path: cmd[0], Args: cmd},
		MaxAnswer: workerproto.MaxAnswer,
		// The line is valid only during the call: the dispatcher gets a
		// copy, as pkg/jobs's event would carry the parsed answer.
		OnResult: func(w *pool.Worker, msg []byte) { results <- result{w, bytes.Clone(msg)} },
	}
	var buf []byte
	inFlight := map[*pool.Worker]string{}
	send := func(w *pool.Worker, i int) error {
		job := workerproto.Job{ID: strconv.Itoa(i), Attempt: 1, Slot: w.Slot, Payload: payload}
		buf, _ = workerproto.AppendJob(buf[:0], &job)
		inFlight[w] = job.ID
		return w.Send(buf)
	}
	check := func(r result) error {
		a, err := workerproto.ParseAnswer(r.line, inFlight[r.w])
		if err == nil && !a.OK {
			err = errors.New(a.Error)
		}
		return err
	}
	var workers []*pool.Worker
	for range p {
		slot, _ := pl.TryAcquire()
		w, err := pl.StartWorker(slot, spec)
		if err != nil {
			return 0, err
		}
		workers = append(workers, w)
		// Warm up: the worker has started and answered once.
		if err := send(w, -1); err != nil {
			return 0, err
		}
		if err := check(<-results); err != nil {
			return 0, err
		}
	}
	start := time.Now()
	sent := 0
	for _, w := range workers {
		if sent < n {
			if err := send(w, sent); err != nil {
				return 0, err
			}
			sent++
		}
	}
	for done := 0; done < n; done++ {
		r := <-results
		if err := check(r); err != nil {
			return 0, err
		}
		if sent < n {
			if err := send(r.w, sent); err != nil {
				return 0, err
			}
			sent++
		}
	}
	secs := time.Since(start)
	for _, w := range workers {
		w.Retire()
		<-w.Done()
	}
	return secs, nil
}

// runDirect is runPool without the dispatcher: each answer is parsed,
// and the worker's next job sent, on the pool's reader goroutine of that
// worker. It measures the pool alone; the gap to runPool is the hand-over
// to a dispatcher goroutine that pkg/jobs makes.
func runDirect(n, p int, cmd []string) (time.Duration, error) {
	pl, err := pool.New(pool.Config{Max: p})
	if err != nil {
		return 0, err
	}
	defer pl.Close()
	var (
		next, done atomic.Int64
		finished   = make(chan struct{})
		errs       = make(chan error, p)
		started    = make(chan struct{}, p)
		go_        = make(chan struct{})
	)
	type state struct {
		buf []byte
		id  string
	}
	send := func(w *pool.Worker, st *state, i int64) error {
		job := workerproto.Job{ID: strconv.FormatInt(i, 10), Attempt: 1, Slot: w.Slot, Payload: payload}
		st.buf, _ = workerproto.AppendJob(st.buf[:0], &job)
		st.id = job.ID
		return w.Send(st.buf)
	}
	states := map[*pool.Worker]*state{}
	var mu sync.Mutex
	spec := &pool.WorkerSpec{
		Protocol:  pool.ProtocolLines,
		Spec:      pool.Spec{Path: cmd[0], Args: cmd},
		MaxAnswer: workerproto.MaxAnswer,
		OnResult: func(w *pool.Worker, msg []byte) {
			mu.Lock()
			st := states[w]
			mu.Unlock()
			if a, err := workerproto.ParseAnswer(msg, st.id); err != nil || !a.OK {
				errs <- fmt.Errorf("answer %q: %v", msg, err)
				return
			}
			if st.id == "-1" {
				started <- struct{}{}
				<-go_
			} else if done.Add(1) == int64(n) {
				close(finished)
				return
			}
			if i := next.Add(1) - 1; i < int64(n) {
				if err := send(w, st, i); err != nil {
					errs <- err
				}
			}
		},
	}
	var workers []*pool.Worker
	for range p {
		slot, _ := pl.TryAcquire()
		w, err := pl.StartWorker(slot, spec)
		if err != nil {
			return 0, err
		}
		st := &state{}
		mu.Lock()
		states[w] = st
		mu.Unlock()
		workers = append(workers, w)
		if err := send(w, st, -1); err != nil { // warm up
			return 0, err
		}
	}
	for range p {
		<-started
	}
	start := time.Now()
	close(go_)
	select {
	case <-finished:
	case err := <-errs:
		return 0, err
	}
	secs := time.Since(start)
	for _, w := range workers {
		w.Retire()
		<-w.Done()
	}
	return secs, nil
}

// runBare runs n jobs through p workers with nothing but os/exec and the
// two pipes.
func runBare(n, p int, cmd []string) (time.Duration, error) {
	type bare struct {
		c   *exec.Cmd
		in  *os.File
		out *bufio.Reader
	}
	var next atomic.Int64
	next.Store(-1)
	var workers []*bare
	for range p {
		ar, aw, err := os.Pipe()
		if err != nil {
			return 0, err
		}
		ir, iw, err := os.Pipe()
		if err != nil {
			return 0, err
		}
		c := exec.Command(cmd[0], cmd[1:]...)
		c.Stdin, c.ExtraFiles = ir, []*os.File{aw}
		if err := c.Start(); err != nil {
			return 0, err
		}
		ir.Close()
		aw.Close()
		b := &bare{c: c, in: iw, out: bufio.NewReader(ar)}
		workers = append(workers, b)
	}
	job := func(b *bare, slot int, id int64, buf []byte) ([]byte, error) {
		buf = append(buf[:0], `{"id":"`...)
		buf = strconv.AppendInt(buf, id, 10)
		buf = append(buf, `","attempt":1,"slot":`...)
		buf = strconv.AppendInt(buf, int64(slot), 10)
		buf = append(buf, `,"payload":"b2s="}`+"\n"...)
		if _, err := b.in.Write(buf); err != nil {
			return buf, err
		}
		line, err := b.out.ReadSlice('\n')
		if err == nil && !bytes.Contains(line, []byte("true")) {
			err = fmt.Errorf("answer %q", line)
		}
		return buf, err
	}
	for i, b := range workers { // warm up
		if _, err := job(b, i, -1, nil); err != nil {
			return 0, err
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, p)
	for i, b := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for {
				id := next.Add(1)
				if id >= int64(n) {
					return
				}
				var err error
				if buf, err = job(b, i, id, buf); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start)
	for _, b := range workers {
		b.in.Close()
		b.c.Wait()
	}
	select {
	case err := <-errs:
		return 0, err
	default:
	}
	return secs, nil
}

// runProcess runs n jobs, each in a worker of its own that exits after it.
func runProcess(n, p int, cmd []string) (time.Duration, error) {
	exits := make(chan *pool.Child, p)
	pl, err := pool.New(pool.Config{Max: p, OnExit: func(c *pool.Child) { exits <- c }})
	if err != nil {
		return 0, err
	}
	defer pl.Close()
	var mu sync.Mutex
	answers := map[*pool.Worker][]byte{}
	spec := &pool.WorkerSpec{
		Protocol:  pool.ProtocolLines,
		Spec:      pool.Spec{Path: cmd[0], Args: cmd},
		Jobs:      1,
		MaxAnswer: workerproto.MaxAnswer,
		OnResult: func(w *pool.Worker, msg []byte) {
			mu.Lock()
			answers[w] = bytes.Clone(msg)
			mu.Unlock()
		},
	}
	var buf []byte
	start := time.Now()
	started, ended := 0, 0
	for ended < n {
		for started < n {
			slot, ok := pl.TryAcquire()
			if !ok {
				break
			}
			w, err := pl.StartWorker(slot, spec)
			if err != nil {
				return 0, err
			}
			job := workerproto.Job{ID: strconv.Itoa(started), Attempt: 1, Slot: slot, Payload: payload}
			buf, _ = workerproto.AppendJob(buf[:0], &job)
			w.SetLabel(job.ID)
			if err := w.Send(buf); err != nil {
				return 0, err
			}
			started++
		}
		c := <-exits
		mu.Lock()
		line := answers[c.Worker()]
		delete(answers, c.Worker())
		mu.Unlock()
		if a, err := workerproto.ParseAnswer(line, c.Label()); err != nil || !a.OK || !c.Exit().Success() {
			return 0, fmt.Errorf("job %s: %+v %v, worker %s", c.Label(), a, err, c.Exit())
		}
		ended++
	}
	return time.Since(start), nil
}
