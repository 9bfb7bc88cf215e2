package jobs

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

// Exit codes of a child that could not run its jobs. They follow
// sysexits.h, so they stand out from the codes jobs return.
const (
	exitSoftware = 70 // EX_SOFTWARE: the channel failed
	exitConfig   = 78 // EX_CONFIG: LoadConfig failed in the child
)

// runChild is Run in a child: it runs the jobs the parent sends until told
// to exit, then exits with the status of the last job (0 or 1).
func (d *Daemon) runChild(ctx context.Context) {
	conn, err := pool.OpenChild()
	if err != nil {
		fmt.Fprintln(os.Stderr, "jobs child:", err)
		os.Exit(exitSoftware)
	}
	if d.runner == nil {
		fmt.Fprintf(os.Stderr, "jobs child: %T has no RunJob\n", d.app)
		os.Exit(exitSoftware)
	}
	// The daemon stops a job with a signal to its process group (timeout,
	// graceful stop): that cancels the job's context, and the worker exits
	// after the job returns.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stops := catchStops(cancel)
	ctx = WithVars(ctx, remoteVars{conn: conn})
	if d.loader != nil {
		if err := d.callHook("LoadConfig", func() error { return d.loader.LoadConfig(ctx) }); err != nil {
			fmt.Fprintln(os.Stderr, "jobs child: load config:", err)
			os.Exit(exitConfig)
		}
	}
	code := 0
	var buf []byte
	// One reading of the process's CPU per job, at its end: a job is
	// charged what the worker spent since the previous one ended, the few
	// µs of sending that one's result and taking this one included. Half
	// the getrusage calls on the path of every job (each sums the times of
	// all the worker's threads), and the jobs' figures add up to the
	// worker's CPU.
	var cpu cpuMark
	cpu.user, cpu.sys, _ = rusageSelf()
	for {
		msg, err := conn.Next()
		if err == io.EOF {
			os.Exit(code)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "jobs child:", err)
			os.Exit(exitSoftware)
		}
		rep := d.runOne(ctx, msg, &cpu, stops)
		code = rep.code
		buf = encodeReply(buf, &rep)
		if err := conn.Reply(buf); err != nil {
			fmt.Fprintln(os.Stderr, "jobs child: send result:", err)
			os.Exit(exitSoftware)
		}
		if ctx.Err() != nil {
			os.Exit(code) // stopped: this process's jobs are over
		}
	}
}

// cpuMark is the worker's CPU when the previous job ended.
type cpuMark struct{ user, sys time.Duration }

// runOne runs one job and measures it, charging it the CPU since cpu,
// which it moves to the job's end. A panic fails the job, not the
// worker's later jobs.
func (d *Daemon) runOne(ctx context.Context, msg []byte, cpu *cpuMark, stops chan<- os.Signal) (rep workerReply) {
	defer func() {
		if v := recover(); v != nil {
			fmt.Fprintf(os.Stderr, "panic in RunJob: %v\n%s", v, debug.Stack())
			rep = workerReply{code: 2, err: fmt.Sprintf("panic in RunJob: %v", v)}
		}
		u, s, rss := rusageSelf()
		rep.userCPU, rep.sysCPU, rep.maxRSS = u-cpu.user, s-cpu.sys, rss
		cpu.user, cpu.sys = u, s
	}()
	job, stop, err := decodeJob(msg)
	if err != nil {
		return workerReply{code: 1, err: "decode job: " + err.Error()}
	}
	if stop > 0 { // 0: a daemon that names none
		signal.Notify(stops, stop)
	}
	if err := d.runner.RunJob(ctx, job); err != nil {
		return workerReply{code: 1, err: err.Error()}
	}
	return workerReply{}
}

// catchStops starts catching SIGTERM, which anyone may send to stop a
// process (an operator, the service manager), and returns the channel
// whose first signal cancels the jobs' context through cancel. runOne adds
// the stop signal each job comes with (Options.StopSignal when the daemon
// sent it), which the daemon will stop it with; signal.Notify of a signal
// the channel already gets changes nothing and costs a lock. Other
// signals keep their default effect.
//
// Only these, because each signal os/signal starts catching costs the
// process a round trip to the runtime's thread that owns the signal mask
// (and, the first time, that thread): in a Go child that takes one job and
// exits, catching SIGINT as well cost as much again as SIGTERM alone
// (`perf stat` of bench/reexecfloor's loop, P=2, eight interleaved runs,
// medians of the CPU per job, parent's included: 12.5 ms with nothing
// caught, 13.3 with SIGTERM, 14.7 with SIGTERM and SIGINT).
func catchStops(cancel context.CancelFunc) chan<- os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM)
	go func() {
		<-ch
		cancel()
	}()
	return ch
}
