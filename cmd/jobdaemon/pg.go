package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/cobra"

	"github.com/jobdaemon/jobdaemon/internal/config"
	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/pgqueue"
	"github.com/jobdaemon/jobdaemon/pkg/service"
)

// The PostgreSQL source: a queue table that daemons on several hosts
// share (package pgqueue), as the binary's source, its direct submission,
// and "jobdaemon pg migrate".

// pgOptions returns the queue options of cfg's [source.postgres] table
// and [job] retries.
func pgOptions(cfg *config.Config, log *slog.Logger) (pgqueue.Options, error) {
	dsn, err := cfg.PostgresDSN()
	if err != nil {
		return pgqueue.Options{}, err
	}
	p := cfg.Source.Postgres
	retention := time.Duration(p.Retention)
	if retention == 0 {
		retention = pgqueue.KeepForever
	}
	return pgqueue.Options{
		DSN:          dsn,
		ListenDSN:    p.ListenDSN,
		NoListen:     !p.Listen,
		Schema:       p.Schema,
		Queue:        p.Queue,
		LeaseTTL:     time.Duration(p.LeaseTTL),
		PollInterval: time.Duration(p.PollInterval),
		Retention:    retention,
		MaxAttempts:  cfg.Job.MaxAttempts,
		Backoff:      time.Duration(cfg.Job.Backoff),
		MaxPayload:   int64(p.MaxPayload),
		Logger:       log,
	}, nil
}

// openPostgres opens the queue. While the server cannot be reached it
// logs the server and the reason and tries again, with backoff, until ctx
// (the daemon's start-up: a TERM cancels it) ends; meanwhile the daemon
// is not ready.
// postgresKind is a queue in PostgreSQL, which several hosts may share.
var postgresKind = sourceKind{
	open:   openPostgres,
	direct: func(cfg *config.Config) submitter { return &pgSubmitter{cfg: cfg} },
	// A job is a row: its id is the row's, and --id would make a file's
	// name its unique key, which is not meant.
	jobName:    func(string) string { return "" },
	maxPayload: func(cfg *config.Config) int64 { return int64(cfg.Source.Postgres.MaxPayload) },
	secrets: func(cfg *config.Config) error {
		_, err := cfg.PostgresDSN()
		return err
	},
	commands: func() []*cobra.Command { return []*cobra.Command{pgCommand()} },
	redact: func(c *config.Config) {
		p := &c.Source.Postgres
		if p.DSN != "" {
			p.DSN = pgqueue.Redact(p.DSN)
		}
		if p.ListenDSN != "" {
			p.ListenDSN = pgqueue.Redact(p.ListenDSN)
		}
	},
}

func openPostgres(ctx context.Context, cfg *config.Config, log *slog.Logger) (source, error) {
	opts, err := pgOptions(cfg, log)
	if err != nil {
		return nil, err
	}
	q, err := pgqueue.Open(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("open the PostgreSQL queue: %w", pgAdvice(err, cfg))
	}
	return &pgSource{Queue: q}, nil
}

// pgAdvice adds to an error of the queue what the operator can do.
func pgAdvice(err error, cfg *config.Config) error {
	file := cfg.Path()
	if abs, aerr := filepath.Abs(file); aerr == nil {
		file = abs
	}
	var pe *pgconn.PgError
	switch {
	case errors.Is(err, pgqueue.ErrNotMigrated),
		errors.As(err, &pe) && (pe.Code == "3F000" || pe.Code == "42883"): // no such schema, or function
		return fmt.Errorf("%w: create the schema with \"jobdaemon pg migrate --config %s\"", err, file)
	case errors.Is(err, pgqueue.ErrSchemaVersion):
		return fmt.Errorf("%w (\"jobdaemon pg migrate --config %s\" brings an older schema up to date)", err, file)
	case errors.Is(err, pgqueue.ErrAuth):
		return fmt.Errorf("%w: check the user and password of [source.postgres] in %s, and the server's pg_hba.conf", err, file)
	}
	return err
}

// pgSource is the queue as the binary's source.
type pgSource struct {
	*pgqueue.Queue
	failed atomic.Int64

	countMu  sync.Mutex // one count at a time; the others wait for it
	counts   map[string]int64
	countErr error
	countAt  time.Time
}

// Finish files the job, and counts those that failed for good.
func (s *pgSource) Finish(ctx context.Context, job *jobs.Job, res jobs.Result) (jobs.Verdict, error) {
	v, err := s.Queue.Finish(ctx, job, res)
	if v == jobs.Failed {
		s.failed.Add(1)
	}
	return v, err
}

// Failed counts the jobs this daemon failed for good since its start: a
// shared queue's failed rows are other daemons' too (see CountJobs).
func (s *pgSource) Failed() int { return int(s.failed.Load()) }

// Submit enqueues a job; key, if not "", is its unique key. A payload
// over max_payload, and data the database refuses as such (a key that is
// not valid text), are the client's to fix.
func (s *pgSource) Submit(ctx context.Context, key string, r io.Reader) (string, error) {
	id, err := s.Queue.Submit(ctx, key, r)
	if isBadJob(err) {
		return "", fmt.Errorf("%w: %v", service.ErrBadJob, err)
	}
	return id, err
}

func isBadJob(err error) bool {
	var pe *pgconn.PgError
	return errors.Is(err, pgqueue.ErrTooLarge) ||
		errors.As(err, &pe) && len(pe.Code) == 5 && pe.Code[:2] == "22" // data_exception
}

// countMaxAge is how long a count is reused: status, STATUS= and each
// scrape ask, and a count is a query.
const countMaxAge = time.Second

// CountJobs implements service.JobCounter: the queue's jobs, of all
// daemons, by state, from the database. It also refreshes the count that
// Depth reuses.
func (s *pgSource) CountJobs(ctx context.Context) (map[string]int64, error) {
	s.countMu.Lock()
	defer s.countMu.Unlock()
	if !s.countAt.IsZero() && time.Since(s.countAt) < countMaxAge {
		return s.counts, s.countErr
	}
	st, err := s.Queue.Stats(ctx)
	s.counts, s.countErr, s.countAt = nil, err, time.Now()
	if err == nil {
		s.counts = map[string]int64{"available": st.Available, "scheduled": st.Scheduled, "running": st.Running, "failed": st.Failed}
	}
	return s.counts, s.countErr
}

// pgSubmitter enqueues straight into the database, for "submit" when no
// daemon runs. It connects at the first job.
type pgSubmitter struct {
	cfg  *config.Config
	conn *pgx.Conn
}

// SubmitAll enqueues the jobs in one transaction: all or none.
func (s *pgSubmitter) SubmitAll(ctx context.Context, jobs []submission) ([]string, error) {
	p := s.cfg.Source.Postgres
	if s.conn == nil {
		dsn, err := s.cfg.PostgresDSN()
		if err != nil {
			return nil, err
		}
		if s.conn, err = pgqueue.Connect(ctx, dsn); err != nil {
			return nil, pgAdvice(err, s.cfg)
		}
	}
	payloads := make([][]byte, len(jobs))
	for i, j := range jobs {
		b, err := io.ReadAll(io.LimitReader(j.data, int64(p.MaxPayload)+1))
		if err != nil {
			return nil, fmt.Errorf("read the job: %w", err)
		}
		if int64(len(b)) > int64(p.MaxPayload) {
			return nil, fmt.Errorf("%w: over %v ([source.postgres] max_payload)", pgqueue.ErrTooLarge, p.MaxPayload)
		}
		payloads[i] = b
	}
	tx, err := s.conn.Begin(ctx)
	if err != nil {
		return nil, pgAdvice(err, s.cfg)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit, a no-op
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		id, err := pgqueue.Enqueue(ctx, tx, p.Schema, pgqueue.NewJob{Queue: p.Queue, Payload: payloads[i], UniqueKey: j.name})
		if err != nil {
			return nil, pgAdvice(err, s.cfg)
		}
		ids[i] = strconv.FormatInt(id, 10)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, pgAdvice(err, s.cfg)
	}
	return ids, nil
}

func (s *pgSubmitter) Close() error {
	if s.conn == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.conn.Close(ctx)
}
