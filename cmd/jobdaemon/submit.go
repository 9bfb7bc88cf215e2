package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

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

All or nothing: every file is read, and checked, before the first job is
queued; written straight into the spool or the database, a failure
queues none of them. Through a daemon, a request refused half-way (the
daemon stopped) names the jobs queued before it.

Examples:
  jobdaemon submit photos/*.jpg
  pg_dump mydb | jobdaemon submit --id backup-mydb -
  jobdaemon submit --config ./config.toml job.json`,
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
		// A connection, not a status request, decides: that is one round
		// trip and one JSON answer less on the path of every submission
		// (a daemon that refuses this user says so to the submission).
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := c.Reach(ctx)
		cancel()
		switch {
		case err == nil:
			sub = socketSubmitter{c: c, limit: maxPayload(cfg)}
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
	// Every file is opened, and standard input read, before the first
	// job is queued: a missing one queues nothing.
	jobs := make([]submission, len(files))
	for i, file := range files {
		name := id
		if name == "" {
			name = jobName(cfg, file)
		}
		jobs[i].name = name
		if file == "-" {
			jobs[i].data = os.Stdin
			continue
		}
		f, err := os.Open(file)
		if err != nil {
			fmt.Fprintf(stderr, "jobdaemon submit: %v (nothing was queued)\n", err)
			return service.ExitFailure
		}
		defer f.Close()
		jobs[i].data = f
	}
	defer func() {
		if err := sub.Close(); err != nil {
			fmt.Fprintf(stderr, "jobdaemon submit: %v\n", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ids, err := sub.SubmitAll(ctx, jobs)
	for _, got := range ids {
		fmt.Fprintln(stdout, got)
	}
	if err != nil {
		fmt.Fprintf(stderr, "jobdaemon submit: %v\n", err)
		return service.ClientExitCode(err)
	}
	return service.ExitOK
}

// socketSubmitter queues jobs through a running daemon's control socket,
// one request each. Every job is read before the first is sent (a payload
// over max_payload, or a file that cannot be read, queues nothing); a
// request refused half-way (a name that waits already, a daemon that
// stopped) leaves the jobs before it queued, which the error names, and
// their ids are printed.
type socketSubmitter struct {
	c     *service.Client
	limit int64
}

func (s socketSubmitter) SubmitAll(ctx context.Context, jobs []submission) ([]string, error) {
	payloads := make([][]byte, len(jobs))
	for i, j := range jobs {
		r := j.data
		if s.limit > 0 {
			r = io.LimitReader(r, s.limit+1)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			return nil, fmt.Errorf("read the job: %w (nothing was queued)", err)
		}
		if s.limit > 0 && int64(len(b)) > s.limit {
			return nil, fmt.Errorf("a job is larger than the limit of %d bytes (nothing was queued)", s.limit)
		}
		payloads[i] = b
	}
	var ids []string
	for i, j := range jobs {
		id, err := s.c.Submit(ctx, j.name, bytes.NewReader(payloads[i]))
		if err != nil {
			if len(ids) > 0 {
				return ids, fmt.Errorf("%w: the %d jobs before it were queued (%s), the %d from it on were not",
					err, len(ids), strings.Join(ids, ", "), len(jobs)-i)
			}
			return nil, fmt.Errorf("%w (nothing was queued)", err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func (socketSubmitter) Close() error { return nil }
