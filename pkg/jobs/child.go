package jobs

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

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
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx = WithVars(ctx, remoteVars{conn: conn})
	if d.loader != nil {
		if err := d.callHook("LoadConfig", func() error { return d.loader.LoadConfig(ctx) }); err != nil {
			fmt.Fprintln(os.Stderr, "jobs child: load config:", err)
			os.Exit(exitConfig)
		}
	}
	code := 0
	var buf []byte
	for {
		msg, err := conn.Next()
		if err == io.EOF {
			os.Exit(code)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "jobs child:", err)
			os.Exit(exitSoftware)
		}
		rep := d.runOne(ctx, msg)
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

// runOne runs one job and measures it. A panic fails the job, not the
// worker's later jobs.
func (d *Daemon) runOne(ctx context.Context, msg []byte) (rep workerReply) {
	job, err := decodeJob(msg)
	if err != nil {
		return workerReply{code: 1, err: "decode job: " + err.Error()}
	}
	u0, s0, _ := rusageSelf()
	defer func() {
		if v := recover(); v != nil {
			fmt.Fprintf(os.Stderr, "panic in RunJob: %v\n%s", v, debug.Stack())
			rep = workerReply{code: 2, err: fmt.Sprintf("panic in RunJob: %v", v)}
		}
		u1, s1, rss := rusageSelf()
		rep.userCPU, rep.sysCPU, rep.maxRSS = u1-u0, s1-s0, rss
	}()
	if err := d.runner.RunJob(ctx, job); err != nil {
		return workerReply{code: 1, err: err.Error()}
	}
	return workerReply{}
}
