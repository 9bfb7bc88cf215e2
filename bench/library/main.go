// Command library runs trivial jobs through the whole dispatcher of
// pkg/jobs (jobs.Run with an in-memory source), and the bare Go loops it
// is measured against, for bench/run.sh. It is built the ordinary way
// (go build, default settings), as a Go developer's daemon would be.
//
//	-mode command     each job runs /bin/true (Commander), one process per
//	                  job: against the C fork+exec loop
//	-mode reexec      each job runs in this program re-executed (Runner,
//	                  JobsPerChild 1): against bench/reexec
//	-mode worker      each job goes to a Go worker that is never replaced
//	                  (Runner, JobsPerChild 1<<30)
//	-mode bareworker  the bare Go pipe worker: this program re-executed
//	                  -p times, each fed one job line at a time on its
//	                  stdin and answering a line on its stdout
//
// Usage: library -mode M -n N -p P
//
// It prints "jobs=N seconds=S rate=R/s cpu_us_per_job=C", where C is the
// CPU time of this process (not its children) per job.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// cgroups is Isolation.Cgroups.
var cgroups string

// bareChild in the environment makes this program a bare pipe worker.
const bareChild = "JOBDAEMON_BENCH_BARE_WORKER"

func main() {
	if os.Getenv(bareChild) == "1" {
		bareWorker()
		return
	}
	mode := flag.String("mode", "command", "command, reexec, worker or bareworker")
	n := flag.Int("n", 2000, "jobs")
	p := flag.Int("p", 2, "slots")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file (a -tags benchprofile build)")
	flag.StringVar(&cgroups, "cgroups", "auto", "auto (cgroups where they can be had) or off (process groups)")
	flag.Parse()
	var run func(n, p int) (time.Duration, time.Duration, error)
	switch *mode {
	case "command":
		run = func(n, p int) (time.Duration, time.Duration, error) {
			return runDaemon(&app{n: n, command: true}, p, 1)
		}
	case "reexec":
		run = func(n, p int) (time.Duration, time.Duration, error) { return runDaemon(&app{n: n}, p, 1) }
	case "worker":
		run = func(n, p int) (time.Duration, time.Duration, error) { return runDaemon(&app{n: n}, p, 1<<30) }
	case "bareworker":
		run = runBare
	default:
		fmt.Fprintln(os.Stderr, "library: unknown mode", *mode)
		os.Exit(2)
	}
	if *profile != "" && !jobs.IsChild() {
		stop, err := startProfile(*profile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "library:", err)
			os.Exit(1)
		}
		defer stop()
	}
	// In a child (reexec, worker), Run runs the job and exits: the flags
	// are parsed the same, and the mode takes the same path.
	secs, cpu, err := run(*n, *p)
	if err != nil {
		fmt.Fprintln(os.Stderr, "library:", err)
		os.Exit(1)
	}
	fmt.Printf("jobs=%d seconds=%.3f rate=%.0f/s cpu_us_per_job=%.1f\n",
		*n, secs.Seconds(), float64(*n)/secs.Seconds(), float64(cpu.Microseconds())/float64(*n))
}

// selfCPU returns the CPU time of this process, without its children.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// warmup jobs go first, unmeasured: the workers of the worker mode have
// started and answered before the measure begins.
const warmup = 10

// app is an in-memory source of n trivial jobs.
type app struct {
	n       int
	command bool // Commander: /bin/true; else Runner
	next    int
	d       *jobs.Daemon

	mu         sync.Mutex
	done       int
	failed     error
	start, end time.Time
	cpu0, cpu1 time.Duration
}

func (a *app) NextJob(ctx context.Context, slot int) (*jobs.Job, error) {
	if a.next == a.n+warmup {
		return nil, nil
	}
	if a.next == warmup {
		a.mu.Lock()
		a.start, a.cpu0 = time.Now(), selfCPU()
		a.mu.Unlock()
	}
	a.next++
	return &jobs.Job{ID: strconv.Itoa(a.next), Attempt: 1}, nil
}

// RunJob runs in the child: the job does nothing.
func (a *app) RunJob(ctx context.Context, job *jobs.Job) error { return nil }

func (a *app) Done(ctx context.Context, job *jobs.Job, res jobs.Result) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !res.OK() && a.failed == nil {
		a.failed = fmt.Errorf("job %s: %s", job.ID, res.String())
	}
	a.done++
	if a.done == a.n+warmup {
		a.end, a.cpu1 = time.Now(), selfCPU()
		a.d.Stop(jobs.Drain)
	}
	return nil
}

// commander adds Command to app, for the command mode.
type commander struct{ *app }

func (commander) Command(ctx context.Context, job *jobs.Job) (*jobs.Spec, error) {
	return &jobs.Spec{Path: "/bin/true", Env: []string{}}, nil
}

// runDaemon runs a's jobs through jobs.Run in p slots, and returns the
// time from the first measured job handed out to the last one done, and
// the daemon's CPU time in that span.
func runDaemon(a *app, p, jobsPerChild int) (time.Duration, time.Duration, error) {
	var src jobs.Source = a
	if a.command {
		src = commander{a}
	}
	d, err := jobs.New(src, jobs.Options{
		MaxChildren:  p,
		JobsPerChild: jobsPerChild,
		NoSignals:    true,
		Logger:       slog.New(slog.DiscardHandler),
		Output:       func(jobs.Line) {},
		Isolation:    jobs.Isolation{Cgroups: jobs.CgroupMode(cgroups)},
	})
	if err != nil {
		return 0, 0, err
	}
	a.d = d
	if err := d.Run(context.Background()); err != nil {
		return 0, 0, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failed != nil {
		return 0, 0, a.failed
	}
	if a.done != a.n+warmup {
		return 0, 0, fmt.Errorf("%d jobs done, want %d", a.done, a.n+warmup)
	}
	return a.end.Sub(a.start), a.cpu1 - a.cpu0, nil
}

// runBare runs n jobs through p bare pipe workers: this program
// re-executed, a goroutine per worker that writes a job line and reads
// the answer line.
func runBare(n, p int) (time.Duration, time.Duration, error) {
	type worker struct {
		cmd *exec.Cmd
		in  io.WriteCloser
		out *bufio.Reader
	}
	var ws []*worker
	for range p {
		cmd := exec.Command("/proc/self/exe")
		cmd.Env = append(os.Environ(), bareChild+"=1")
		in, err := cmd.StdinPipe()
		if err != nil {
			return 0, 0, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return 0, 0, err
		}
		if err := cmd.Start(); err != nil {
			return 0, 0, err
		}
		ws = append(ws, &worker{cmd: cmd, in: in, out: bufio.NewReader(out)})
	}
	job := func(w *worker, id int64, buf []byte) ([]byte, error) {
		buf = strconv.AppendInt(append(buf[:0], "job "...), id, 10)
		buf = append(buf, '\n')
		if _, err := w.in.Write(buf); err != nil {
			return buf, err
		}
		line, err := w.out.ReadSlice('\n')
		if err == nil && string(line) != "ok\n" {
			err = fmt.Errorf("answer %q", line)
		}
		return buf, err
	}
	for _, w := range ws { // warm up: started and answered once
		if _, err := job(w, -1, nil); err != nil {
			return 0, 0, err
		}
	}
	var next atomic.Int64
	errs := make(chan error, p)
	var wg sync.WaitGroup
	start, cpu0 := time.Now(), selfCPU()
	for _, w := range ws {
		wg.Go(func() {
			var buf []byte
			for {
				id := next.Add(1)
				if id > int64(n) {
					return
				}
				var err error
				if buf, err = job(w, id, buf); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	secs, cpu := time.Since(start), selfCPU()-cpu0
	for _, w := range ws {
		w.in.Close()
		w.cmd.Wait()
	}
	select {
	case err := <-errs:
		return 0, 0, err
	default:
	}
	return secs, cpu, nil
}

// bareWorker answers "ok" to each line of its standard input.
func bareWorker() {
	in := bufio.NewReader(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	for {
		_, err := in.ReadSlice('\n')
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			os.Exit(1)
		}
		out.WriteString("ok\n")
		if out.Flush() != nil {
			os.Exit(1)
		}
	}
}
