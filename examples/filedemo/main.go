// Filedemo is the demo of the PHP JobDaemon rebuilt on package service: a
// daemon that processes each file dropped into a directory, in child
// processes, a few at a time. It is the whole integration a Go program
// needs: the jobs hooks (LoadConfig, NextJob, RunJob, Done), Configure for
// the daemon's settings, and one call, service.Main.
//
// The directory (dir in filedemo.toml) holds four subdirectories, created
// at start:
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
// It runs and is driven like jobdaemon, by the same init script and unit
// files with only the binary's name changed:
//
//	go build -o filedemo ./examples/filedemo
//	./filedemo run --config examples/filedemo/filedemo.toml        # foreground; Ctrl-C stops it
//	./filedemo start --config examples/filedemo/filedemo.toml      # a classic daemon
//	echo hello > var/filedemo/incoming/a.txt
//	./filedemo status --config examples/filedemo/filedemo.toml
//	./filedemo reload --config examples/filedemo/filedemo.toml     # children = N applies at once
//	./filedemo stop --config examples/filedemo/filedemo.toml
//
// "run --drain" processes what incoming/ holds and exits.
package main

import (
	"os"

	"github.com/jobdaemon/jobdaemon/pkg/service"
)

func main() {
	// In a child, which is this program started again to run a job,
	// service.Main runs the job and exits: keep what comes before it
	// cheap.
	os.Exit(service.Main(&fileApp{}, service.Options{
		Name:       "filedemo",
		Summary:    "processes each file dropped into a directory, a few at a time",
		ConfigFile: "filedemo.toml",
	}))
}
