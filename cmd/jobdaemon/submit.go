package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/jobdaemon/jobdaemon/internal/config"
	"github.com/jobdaemon/jobdaemon/pkg/service"
)

func submitCommand() *cobra.Command {
	var id string
	c := &cobra.Command{
		Use:   "submit [--id ID] FILE...|-",
		Short: "queue jobs: files, or standard input",
		Long: `Queues jobs: each FILE becomes a job, and "-" reads one from standard
input. The id of each job is printed, one per line. It works whether or
not a daemon is running.

With the spool source, each file is copied under its base name into the
spool's incoming/ directory, under a temporary name and renamed into
place, so a daemon never sees half a job. --id names the job (with one
FILE or -); by default a job takes the name of its file, and standard
input gets a unique name. A name that already waits in incoming/ is
refused (one that runs is no obstacle).

With the postgres source, each job becomes a row of the queue, and its
row id is printed. --id gives the job a unique key: while a job with that
key waits or runs, submitting another adds nothing and prints the first
one's id.

When a daemon runs, the jobs go through its control socket, which checks
the user's rights and the job's size; otherwise they are written into the
source directly, which needs write access to it.

Examples:
  jobdaemon submit --config config.toml photos/*.jpg
  pg_dump mydb | jobdaemon submit --config config.toml --id backup-mydb -`,
		RunE: func(cmd *cobra.Command, files []string) error {
			return service.Exit(submit(cmd, id, files))
		},
	}
	c.Flags().StringVar(&id, "id", "", "the job's `name` (one job only)")
	return c
}

func submit(cmd *cobra.Command, id string, files []string) int {
	stderr, stdout := cmd.ErrOrStderr(), cmd.OutOrStdout()
	if len(files) == 0 {
		fmt.Fprintln(stderr, "jobdaemon submit: no job given: name files, or - for standard input")
		return service.ExitUsage
	}
	if id != "" && len(files) > 1 {
		fmt.Fprintln(stderr, "jobdaemon submit: --id names one job, and more were given")
		return service.ExitUsage
	}
	// Only where jobs go is needed: the job's program and user need not
	// exist on a host that only submits.
	cfg, err := config.Parse(service.ConfigFile(cmd))
	if err == nil {
		err = cfg.CheckSource()
	}
	if err != nil {
		fmt.Fprintf(stderr, "jobdaemon: invalid configuration:\n%v\n", err)
		return service.ExitConfig
	}
	sub, err := directSubmit(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "jobdaemon submit: %v\n", err)
		return service.ExitConfig
	}
	if cfg.Control.Socket != "" {
		st := cfg.Settings()
		c := service.NewClient(&st)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		_, err := c.Status(ctx)
		cancel()
		switch {
		case err == nil:
			sub = socketSubmitter{c}
		case !service.IsNotRunning(err):
			fmt.Fprintf(stderr, "jobdaemon submit: %v\n", err)
			return service.ClientExitCode(err)
		}
	}
	if _, viaDaemon := sub.(socketSubmitter); !viaDaemon {
		if err := readSecrets(cfg); err != nil {
			fmt.Fprintf(stderr, "jobdaemon: invalid configuration:\n%v\n", err)
			return service.ExitConfig
		}
	}
	// Every file is opened before the first job is queued: a missing one
	// queues nothing.
	readers := make([]io.Reader, len(files))
	for i, file := range files {
		if file == "-" {
			readers[i] = os.Stdin
			continue
		}
		f, err := os.Open(file)
		if err != nil {
			fmt.Fprintf(stderr, "jobdaemon submit: %v\n", err)
			return service.ExitFailure
		}
		defer f.Close()
		readers[i] = f
	}
	defer func() {
		if err := sub.Close(); err != nil {
			fmt.Fprintf(stderr, "jobdaemon submit: %v\n", err)
		}
	}()
	status := service.ExitOK
	for i, file := range files {
		name := id
		if name == "" {
			name = jobName(cfg, file)
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		got, err := sub.Submit(ctx, name, readers[i])
		cancel()
		if err != nil {
			fmt.Fprintf(stderr, "jobdaemon submit: %s: %v\n", file, err)
			status = service.ExitFailure
			continue
		}
		fmt.Fprintln(stdout, got)
	}
	return status
}

// socketSubmitter queues jobs through a running daemon's control socket.
type socketSubmitter struct{ c *service.Client }

func (s socketSubmitter) Submit(ctx context.Context, id string, r io.Reader) (string, error) {
	return s.c.Submit(ctx, id, r)
}

func (socketSubmitter) Close() error { return nil }
