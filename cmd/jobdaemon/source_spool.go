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
	"github.com/jobdaemon/jobdaemon/pkg/jobs/spool"
	"github.com/jobdaemon/jobdaemon/pkg/service"
)

// spoolKind is the spool directory, the default source.
var spoolKind = sourceKind{
	open: func(_ context.Context, cfg *config.Config, log *slog.Logger) (source, error) {
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
	},
	direct: func(cfg *config.Config) submitter { return spoolSubmitter(cfg.Source.Spool.Dir) },
	// A job file keeps its name.
	jobName:    filepath.Base,
	maxPayload: func(cfg *config.Config) int64 { return int64(cfg.Source.Spool.MaxPayload) },
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
