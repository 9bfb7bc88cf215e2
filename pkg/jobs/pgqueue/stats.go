package pgqueue

import (
	"context"
	"fmt"
	"time"
)

// Stats counts the jobs of a queue, from the database.
type Stats struct {
	// Available jobs are due: they run as soon as a slot is free.
	Available int64 `json:"available"`
	// Scheduled jobs are available with a run_at still to come (delayed,
	// or waiting for a retry).
	Scheduled int64 `json:"scheduled"`
	// Running jobs are leased to a daemon, this one or another.
	Running int64 `json:"running"`
	// Failed jobs have failed their last attempt (they are never pruned).
	Failed int64 `json:"failed"`
	// OldestAge is how long the oldest available job has been due, in
	// seconds; 0 when none is.
	OldestAge float64 `json:"oldest_age_seconds"`
}

// statsMaxAge is how long Depth reuses a count: status and metrics may be
// asked for often, and counting is not free.
const statsMaxAge = time.Second

// Stats counts the queue's jobs by state, in one statement, through the
// partial indexes of the table.
func (q *Queue) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	err := q.pool.QueryRow(ctx, q.sql.stats, planEach, q.opts.Queue).Scan(&s.Available, &s.Scheduled, &s.Running, &s.Failed, &s.OldestAge)
	if err != nil {
		return Stats{}, fmt.Errorf("count jobs: %w", err)
	}
	q.statsMu.Lock()
	q.stats, q.statsAt = s, time.Now()
	q.statsMu.Unlock()
	return s, nil
}

// Depth returns the number of jobs waiting, Available plus Scheduled,
// for jobs.Daemon's Status. A count less than a second old is reused. It
// fails after 2 s, and at once while the database is unavailable.
func (q *Queue) Depth() (int, error) {
	q.statsMu.Lock()
	s, at := q.stats, q.statsAt
	q.statsMu.Unlock()
	if !at.IsZero() && time.Since(at) < statsMaxAge {
		return int(s.Available + s.Scheduled), nil
	}
	if err := q.down(); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
	defer cancel()
	s, err := q.Stats(ctx)
	if err != nil {
		return 0, err
	}
	return int(s.Available + s.Scheduled), nil
}

// OldestAge returns how long the oldest due job has waited
// (jobs.OldestAger), from the same count as Depth, reused for a second.
func (q *Queue) OldestAge() (time.Duration, error) {
	q.statsMu.Lock()
	s, at := q.stats, q.statsAt
	q.statsMu.Unlock()
	if at.IsZero() || time.Since(at) >= statsMaxAge {
		if err := q.down(); err != nil {
			return 0, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
		defer cancel()
		var err error
		if s, err = q.Stats(ctx); err != nil {
			return 0, err
		}
	}
	return time.Duration(s.OldestAge * float64(time.Second)), nil
}
