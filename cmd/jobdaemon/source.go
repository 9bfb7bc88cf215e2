package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/jobdaemon/jobdaemon/internal/config"
	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/pgqueue"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/spool"
	"github.com/jobdaemon/jobdaemon/pkg/service"
)

// source is what the binary needs of a job source. Which source is in use
// is known here, in the factories below, and in the source's own package:
// nowhere else.
type source interface {
	jobs.Source
	jobs.Finisher
	jobs.Waker
	jobs.Depther
	jobs.OldestAger
	// Submit queues a job (the control socket, submit); errors wrapping
	// service.ErrBadJob are the client's to fix.
	Submit(ctx context.Context, id string, r io.Reader) (string, error)
	// Failed counts the jobs filed as failed since the start, refused
	// ones included.
	Failed() int
	Close() error
}

// openSource opens the source that cfg's [source] table names.
func openSource(ctx context.Context, cfg *config.Config, log *slog.Logger) (source, error) {
	switch cfg.Source.Type {
	case "spool":
		sp, err := spool.Open(spool.Options{
			Dir:            cfg.Source.Spool.Dir,
			MaxAttempts:    cfg.Job.MaxAttempts,
			Backoff:        time.Duration(cfg.Job.Backoff),
			MaxPayload:     int64(cfg.Source.Spool.MaxPayload),
			RescanInterval: time.Duration(cfg.Source.Spool.RescanInterval),
			KeepDone:       time.Duration(cfg.Source.Spool.KeepDone),
			KeepFailed:     time.Duration(cfg.Source.Spool.KeepFailed),
			Logger:         log,
		})
		if err != nil {
			return nil, fmt.Errorf("open the spool: %w", err)
		}
		return spoolSource{sp}, nil
	case "postgres":
		return openPostgres(ctx, cfg, log)
	}
	return nil, fmt.Errorf("source type %q is not supported by this build", cfg.Source.Type)
}

// readSecrets reads what the source of cfg needs from files or the
// environment, at the daemon's start, before it drops its privileges: a
// DSN file that only root may read.
func readSecrets(cfg *config.Config) error {
	if cfg.Source.Type == "postgres" {
		_, err := cfg.PostgresDSN()
		return err
	}
	return nil
}

// submitter queues jobs for "submit".
type submitter interface {
	// SubmitAll queues the jobs, each named (spool) or keyed (postgres)
	// by its name, and returns their ids. Straight into the source it is
	// all or nothing; through a daemon, see socketSubmitter.
	SubmitAll(ctx context.Context, jobs []submission) ([]string, error)
	Close() error
}

// submission is one job of a submit.
type submission struct {
	name string
	data io.Reader
}

// directSubmit returns how "submit" queues jobs when no daemon runs: into
// the source itself, by this process. It reads and opens nothing until
// the first job.
func directSubmit(cfg *config.Config) (submitter, error) {
	switch cfg.Source.Type {
	case "spool":
		return spoolSubmitter(cfg.Source.Spool.Dir), nil
	case "postgres":
		return &pgSubmitter{cfg: cfg}, nil
	}
	return nil, fmt.Errorf("source type %q is not supported by this build", cfg.Source.Type)
}

// jobName is the name "submit" gives the job of file without --id: the
// spool's job files keep their names, while a postgres job gets a row id
// (--id would make the name its unique key, which is not meant).
func jobName(cfg *config.Config, file string) string {
	if cfg.Source.Type == "spool" && file != "-" {
		return filepath.Base(file)
	}
	return ""
}

// printable returns cfg as check-config prints it: without passwords.
func printable(cfg *config.Config) *config.Config {
	c := *cfg
	p := &c.Source.Postgres
	if p.DSN != "" {
		p.DSN = pgqueue.Redact(p.DSN)
	}
	if p.ListenDSN != "" {
		p.ListenDSN = pgqueue.Redact(p.ListenDSN)
	}
	return &c
}

// maxPayload is the largest job the source of cfg takes; 0 when cfg is
// nil, and the control socket's default applies.
func maxPayload(cfg *config.Config) int64 {
	if cfg == nil {
		return 0
	}
	switch cfg.Source.Type {
	case "spool":
		return int64(cfg.Source.Spool.MaxPayload)
	case "postgres":
		return int64(cfg.Source.Postgres.MaxPayload)
	}
	return 0
}

// spoolSubmitter writes job files into the spool directory.
type spoolSubmitter string

func (dir spoolSubmitter) SubmitAll(_ context.Context, jobs []submission) ([]string, error) {
	subs := make([]spool.Submission, len(jobs))
	for i, j := range jobs {
		subs[i] = spool.Submission{Name: j.name, Data: j.data}
	}
	return spool.SubmitAllDir(string(dir), subs)
}

func (spoolSubmitter) Close() error { return nil }

// spoolSource is the spool as a source.
type spoolSource struct{ *spool.Spool }

// Submit queues a job file; bad names and oversized payloads are the
// client's to fix.
func (s spoolSource) Submit(_ context.Context, id string, r io.Reader) (string, error) {
	got, err := s.Spool.Submit(id, r)
	switch {
	case errors.Is(err, spool.ErrBadName), errors.Is(err, spool.ErrTooLarge):
		return "", fmt.Errorf("%w: %v", service.ErrBadJob, err)
	case errors.Is(err, fs.ErrExist):
		return "", fmt.Errorf("%w: a job named %q already waits in the spool", service.ErrBadJob, id)
	}
	return got, err
}
