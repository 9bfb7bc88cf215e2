// Filedemo is the demo of the PHP JobDaemon rebuilt on package jobs: a
// daemon that processes each file dropped into a directory, in child
// processes, at most -children at once.
//
// The directory given with -dir holds four subdirectories, created at
// start:
//
//	incoming/  files waiting; NextJob claims the oldest by renaming it
//	running/   files whose job runs in a child
//	done/      files processed, each with an upper-cased copy, NAME.upper
//	error/     files whose job failed, each with NAME.error.txt saying why
//
// A file that contains the word "fail" fails its job; one that contains
// "panic" makes RunJob panic, which fails the job but not the daemon.
// Files left in running/ by a daemon that crashed go back to incoming/ at
// start.
//
// It shows the hooks and where each runs: LoadConfig, NextJob and Done in
// the parent, RunJob in a child, which is this program started again; the
// acknowledgement of every job in one place, Done; recovery at start; and
// a batch run that exits when the work is done (-drain-and-exit).
//
// Run it, then drop files into incoming/ from another terminal:
//
//	go run ./examples/filedemo -dir /tmp/demo
//	echo hello > /tmp/demo/incoming/a.txt
//	echo 'please fail' > /tmp/demo/incoming/b.txt
//	ls /tmp/demo/*
//
// Ctrl-C (SIGINT) or SIGTERM stops it gracefully, SIGQUIT lets the
// running jobs finish, SIGTTIN and SIGTTOU add and remove a slot. With
// -drain-and-exit it processes what incoming/ holds and exits.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

func main() {
	// This runs in every child too, up to jobs.Run, without the parent's
	// flags (a child is started with os.Args[0] alone): keep it cheap, and
	// put what RunJob needs into the job.
	dir := flag.String("dir", "./var/filedemo", "the spool `directory`")
	children := flag.Int("children", 2, "how many jobs run at once")
	perChild := flag.Int("jobs-per-child", 1, "how many jobs a child runs before it exits")
	drain := flag.Bool("drain-and-exit", false, "exit once incoming/ is empty and the running jobs have ended")
	poll := flag.Duration("poll", time.Second, "the longest wait between two looks into an empty incoming/")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	app := &fileApp{dir: *dir, log: log}
	opts := jobs.Options{
		MaxChildren:  *children,
		JobsPerChild: *perChild,
		IdleInterval: *poll,
		Logger:       log,
	}
	if *drain {
		// Asked when NextJob found nothing and no job runs. (Daemon.Stop
		// would not do from NextJob: it waits for the dispatcher
		// goroutine, which is the one running NextJob.)
		opts.StopWhenIdle = func() bool { return true }
	}
	if err := jobs.Run(context.Background(), app, opts); err != nil {
		log.Error("filedemo", "err", err)
		os.Exit(1)
	}
}
