package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jobdaemon/jobdaemon/internal/config"
	"github.com/jobdaemon/jobdaemon/pkg/jobs"
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
			Logger:         log,
		})
		if err != nil {
			return nil, fmt.Errorf("open the spool: %w", err)
		}
		return spoolSource{sp}, nil
	}
	return nil, fmt.Errorf("source type %q is not supported by this build", cfg.Source.Type)
}

// directSubmit returns how "submit" queues a job when no daemon runs: into
// the source itself, by this process.
func directSubmit(cfg *config.Config) (func(ctx context.Context, id string, r io.Reader) (string, error), error) {
	switch cfg.Source.Type {
	case "spool":
		dir := cfg.Source.Spool.Dir
		return func(_ context.Context, id string, r io.Reader) (string, error) {
			return spool.SubmitDir(dir, id, r)
		}, nil
	}
	return nil, fmt.Errorf("source type %q is not supported by this build", cfg.Source.Type)
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
	}
	return 0
}

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
