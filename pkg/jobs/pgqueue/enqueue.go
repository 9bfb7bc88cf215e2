package pgqueue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrTooLarge is wrapped by the error of Submit for a payload larger than
// Options.MaxPayload.
var ErrTooLarge = errors.New("job payload too large")

// NewJob describes a job to enqueue.
type NewJob struct {
	// Queue is the queue's name (default "default").
	Queue string
	// Payload is the job's data, given to the job as it is.
	Payload []byte
	// Priority orders the jobs of a queue that are due: lower first
	// (default 0; negative is more urgent).
	Priority int
	// Delay makes the job due that long after the enqueueing transaction
	// started, by the database's clock (default: at once).
	Delay time.Duration
	// MaxAttempts, if positive, is the number of runs the job gets in
	// all, whatever the daemon's default.
	MaxAttempts int
	// UniqueKey, if set, makes the job unique among the live (available
	// or running) jobs of its queue: while one holds the key, enqueueing
	// another returns the live one's id and inserts nothing.
	UniqueKey string
}

// Querier runs a query returning one row: pgx.Tx, *pgx.Conn and
// *pgxpool.Pool all do.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Enqueue adds a job to the queue table of schema through db, with the
// schema's enqueue function, and returns its id (or, for a UniqueKey
// already live, the live job's id). With a pgx.Tx, the job is part of the
// caller's transaction: it exists, and daemons are told of it, only if
// that transaction commits.
func Enqueue(ctx context.Context, db Querier, schema string, job NewJob) (int64, error) {
	if err := checkSchema(schema); err != nil {
		return 0, fmt.Errorf("enqueue: %w", err)
	}
	if job.Queue == "" {
		job.Queue = DefaultQueue
	}
	if err := checkQueue(job.Queue); err != nil {
		return 0, fmt.Errorf("enqueue: %w", err)
	}
	var maxAttempts *int
	if job.MaxAttempts > 0 {
		maxAttempts = &job.MaxAttempts
	}
	var key *string
	if job.UniqueKey != "" {
		key = &job.UniqueKey
	}
	payload := job.Payload
	if payload == nil {
		payload = []byte{}
	}
	var id int64
	err := db.QueryRow(ctx, "SELECT "+pgx.Identifier{schema, "enqueue"}.Sanitize()+
		"($1::bytea, $2::text, $3::integer, $4::bigint * interval '1 microsecond', $5::integer, $6::text)",
		payload, job.Queue, job.Priority, job.Delay.Microseconds(), maxAttempts, key).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("enqueue into %s: %w", schema, err)
	}
	return id, nil
}

// Submit enqueues a job on this queue with the payload read from r, and
// returns its id as a string. key, if not "", is the job's unique key
// (see NewJob.UniqueKey): submitting a key that a live job holds returns
// that job's id. A payload over Options.MaxPayload is refused with an
// error wrapping ErrTooLarge, and nothing is enqueued.
func (q *Queue) Submit(ctx context.Context, key string, r io.Reader) (string, error) {
	var buf bytes.Buffer
	src := r
	if q.opts.MaxPayload >= 0 {
		src = io.LimitReader(r, q.opts.MaxPayload+1)
	}
	if _, err := buf.ReadFrom(src); err != nil {
		return "", fmt.Errorf("submit: read payload: %w", err)
	}
	if q.opts.MaxPayload >= 0 && int64(buf.Len()) > q.opts.MaxPayload {
		return "", fmt.Errorf("submit: %w: over %d bytes", ErrTooLarge, q.opts.MaxPayload)
	}
	id, err := Enqueue(ctx, q.pool, q.opts.Schema, NewJob{Queue: q.opts.Queue, Payload: buf.Bytes(), UniqueKey: key})
	if err != nil {
		return "", fmt.Errorf("submit: %w", err)
	}
	return strconv.FormatInt(id, 10), nil
}
