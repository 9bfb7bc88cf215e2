package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/jobdaemon/jobdaemon/internal/config"
	"github.com/jobdaemon/jobdaemon/internal/control"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/spool"
)

const submitHelp = `
Queues jobs in the spool's incoming/ directory: each FILE is copied under
its base name, and "-" reads one job from standard input. Each job is
written under a temporary name and renamed into place, so a daemon never
sees half a job. It works whether or not a daemon is running. The id of
each job is printed, one per line.

--id names the job (with one FILE or -); by default a job takes the name of
its file, and standard input gets a unique name. A name that already
waits in incoming/ is refused (one that runs is no obstacle).

When a daemon runs, the jobs go through its control socket, which checks
the user's rights and the job's size ([source.spool] max_payload);
otherwise they are written into the spool directly, which needs write
access to it.

Examples:
  jobdaemon submit --config config.toml photos/*.jpg
  pg_dump mydb | jobdaemon submit --config config.toml --id backup-mydb -`

func cmdSubmit(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("submit", "--config FILE [--id ID] FILE...|-", submitHelp, stderr)
	cfgPath := configFlag(fs)
	id := fs.String("id", "", "the job's `name` (one job only)")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	files := fs.Args()
	if len(files) == 0 {
		fmt.Fprintln(stderr, "jobdaemon submit: no job given: name files, or - for standard input")
		return exitUsage
	}
	if *id != "" && len(files) > 1 {
		fmt.Fprintln(stderr, "jobdaemon submit: --id names one job, and more were given")
		return exitUsage
	}
	// Only the spool's place is needed: the job's program and user need
	// not exist on a host that only submits.
	cfg, err := config.Parse(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "jobdaemon: invalid configuration:\n%v\n", err)
		return config.ExitConfig
	}
	dir := cfg.Source.Spool.Dir
	submit := func(name string, r io.Reader) (string, error) { return spool.SubmitDir(dir, name, r) }
	if cfg.Control.Socket != "" {
		c := newClient(cfg)
		ctx, cancel := clientContext()
		_, err := c.Status(ctx)
		cancel()
		switch {
		case err == nil:
			submit = func(name string, r io.Reader) (string, error) {
				ctx, cancel := clientContext()
				defer cancel()
				return c.Submit(ctx, name, r)
			}
		case !errors.Is(err, control.ErrNoDaemon):
			fmt.Fprintf(stderr, "jobdaemon submit: %v\n", err)
			return clientError("submit", err, io.Discard)
		}
	}
	status := exitOK
	for _, file := range files {
		name := *id
		var r io.Reader
		if file == "-" {
			r = os.Stdin
		} else {
			f, err := os.Open(file)
			if err != nil {
				fmt.Fprintf(stderr, "jobdaemon submit: %v\n", err)
				status = exitFailure
				continue
			}
			if name == "" {
				name = filepath.Base(file)
			}
			r = f
			defer f.Close()
		}
		got, err := submit(name, r)
		if err != nil {
			fmt.Fprintf(stderr, "jobdaemon submit: %s: %v\n", file, err)
			status = exitFailure
			continue
		}
		fmt.Fprintln(stdout, got)
	}
	return status
}
