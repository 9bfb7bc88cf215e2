package pgqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// Record is what the result column holds, as JSON, for each run that
// ended: the last one for a finished job. It is the run's record
// (jobs.RunRecord, whose fields it holds inline) with whether a stop
// interrupted it, its attempt and the lease owner that ran it. For
// example:
//
//	{"outcome": "exit 2", "exit_code": 2, "signal": "", "timed_out": false,
//	 "duration_seconds": 0.153, "user_cpu_seconds": 0.1,
//	 "sys_cpu_seconds": 0.02, "max_rss_bytes": 10485760, "usage_of": "job", "error": "",
//	 "output_tail": "line 3: bad date\n", "output_truncated": false,
//	 "interrupted": false, "attempt": 3, "owner": "web1/4f0c.../1234/9a3b1c2d"}
type Record struct {
	jobs.RunRecord
	// Interrupted is true when the daemon stopped the job (a stop, not the
	// job's fault): the job went back to available, its attempt not
	// counted.
	Interrupted bool `json:"interrupted"`
	// Attempt is the run this record is of, 1 for the first.
	Attempt int `json:"attempt"`
	// Owner is the lease owner that ran the job (see Queue.Owner).
	Owner string `json:"owner"`
}

// NewRecord returns the Record of a run.
func NewRecord(res jobs.Result, attempt int, owner string) Record {
	return Record{RunRecord: jobs.NewRunRecord(res), Interrupted: res.Interrupted, Attempt: attempt, Owner: text(owner)}
}

// text makes s storable in jsonb and text columns: valid UTF-8 without
// NUL.
func text(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// completion is a row to write back: a result, or a claimed job handed
// back unrun.
type completion struct {
	c          *claim
	state      string // available, completed or failed
	newAttempt int
	delayUS    int64     // for available: run_at = now() + delay
	at         time.Time // when it was queued for writing
	lastError  string    // "" keeps the row's
	result     string    // Record as JSON; "" keeps the row's
}

// Done records how a job that NextJob returned ended, and returns at
// once: a background writer stores the results of all jobs that ended
// meanwhile in one fenced statement, in the order Done received them.
// A success completes the job; a failure makes it available again after
// a backoff (Options.Backoff, doubling, with jitter) while it has
// attempts left (its row's max_attempts, or Options.MaxAttempts), and
// fails it on its last; an interrupted job (the daemon stopped it), and
// one the daemon could not start, is available again at once, its
// attempt not counted. The row keeps the
// run's Record in result and, after a failure, the outcome in
// last_error.
//
// While the database is unavailable, results are kept in memory and
// written, in order, once it is back. If the job's lease was lost
// meanwhile (another daemon rescued it after it expired), the fenced
// write changes nothing, and a warning is logged: a job is never
// completed twice. Done fails for a job this queue is not running, or
// that it has a result for already.
func (q *Queue) Done(ctx context.Context, job *jobs.Job, res jobs.Result) error {
	_, err := q.Finish(ctx, job, res)
	return err
}

// Finish is Done, and also says what it decided for the job
// (jobs.Finisher): Completed, Retrying, Requeued for a job that was
// interrupted or could not be started, or Failed on its last attempt; Unknown with an error for a job this
// queue is not running. The verdict is the decision: the row is written
// by the background writer, after Finish has returned.
func (q *Queue) Finish(ctx context.Context, job *jobs.Job, res jobs.Result) (jobs.Verdict, error) {
	if job == nil {
		return jobs.Unknown, errors.New("pgqueue: Done without a job")
	}
	id, err := strconv.ParseInt(job.ID, 10, 64)
	q.mu.Lock()
	c := q.held[id]
	if err != nil || c == nil || c.job != job || c.finished {
		q.mu.Unlock()
		if c != nil && c.job != job {
			return jobs.Unknown, fmt.Errorf("pgqueue: job %s attempt %d: lease lost, result discarded", job.ID, job.Attempt)
		}
		return jobs.Unknown, fmt.Errorf("pgqueue: job %q is not running from this queue", job.ID)
	}
	c.finished = true
	rec, _ := json.Marshal(NewRecord(res, c.attempt, q.owner))
	w := &completion{c: c, newAttempt: c.attempt, result: string(rec), at: time.Now()}
	switch {
	case res.OK():
		w.state = "completed"
	case res.Interrupted:
		w.state, w.newAttempt = "available", c.attempt-1
		w.lastError = text("interrupted: " + res.String())
	case res.NotStarted:
		// No process ran it (the daemon ran out of descriptors or
		// processes, or the program is missing): not an attempt.
		w.state, w.newAttempt = "available", c.attempt-1
		w.lastError = text(res.String())
	default:
		w.lastError = text(res.String())
		retry := q.retry
		retry.MaxAttempts = c.maxAttempts
		if d, again := retry.After(c.attempt); again {
			w.state = "available"
			if retry.Base > 0 { // 0: retry at once
				w.delayUS = d.Microseconds()
			}
		} else {
			w.state = "failed"
		}
	}
	q.pending = append(q.pending, w)
	q.given++
	q.mu.Unlock()
	q.kickWriter()
	switch {
	case w.state == "completed":
		return jobs.Completed, nil
	case w.state == "failed":
		q.log.Warn("job failed on its last attempt", "job_id", job.ID, "attempt", c.attempt, "result", res.String())
		return jobs.Failed, nil
	case res.Interrupted, res.NotStarted:
		return jobs.Requeued, nil
	}
	q.log.Info("job will be retried", "job_id", job.ID, "attempt", c.attempt,
		"result", res.String(), "retry_in_ms", w.delayUS/1000)
	return jobs.Retrying, nil
}

// releaseLocked hands claimed jobs that were never handed out back to
// the queue, as they were. q.mu is held.
func (q *Queue) releaseLocked(cs []*claim, why string) {
	for _, c := range cs {
		c.finished = true
		q.pending = append(q.pending, &completion{c: c, state: "available", newAttempt: c.attempt - 1, at: time.Now()})
		q.given++
	}
	if len(cs) > 0 {
		q.log.Debug("claimed jobs handed back", "jobs", len(cs), "why", why)
		q.kickWriter()
	}
}

// results is a batch of pending results taken for one statement.
type results struct {
	batch []*completion
	args  []any // the arguments of sql.write
}

// takeResults takes the oldest pending results, up to maxBatch, for one
// statement, if the oldest has waited minAge; nil when there are none,
// or when another goroutine is writing some (results are written one
// batch at a time, in order). Exactly one of resultsWritten and
// resultsFailed must follow.
func (q *Queue) takeResults(minAge time.Duration) *results {
	q.mu.Lock()
	if q.writing || len(q.pending) == 0 || time.Since(q.pending[0].at) < minAge {
		q.mu.Unlock()
		return nil
	}
	q.writing = true
	// A copy: the slots of q.pending are cleared once written.
	batch := slices.Clone(q.pending[:min(len(q.pending), maxBatch)])
	q.mu.Unlock()
	n := len(batch)
	ids, attempts, newAttempts := make([]int64, n), make([]int32, n), make([]int32, n)
	states, errs, res := make([]string, n), make([]string, n), make([]string, n)
	delays := make([]int64, n)
	for i, w := range batch {
		ids[i], attempts[i], states[i] = w.c.id, int32(w.c.attempt), w.state
		newAttempts[i], delays[i], errs[i], res[i] = int32(w.newAttempt), w.delayUS, w.lastError, w.result
	}
	return &results{batch: batch, args: []any{q.owner, ids, attempts, states, newAttempts, delays, errs, res}}
}

// scanWritten reads the ids the write statement returned.
func scanWritten(rows pgx.Rows) (map[int64]bool, error) {
	written := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		written[id] = true
	}
	return written, rows.Err()
}

// resultsFailed gives taken results back: they stay first in line.
func (q *Queue) resultsFailed() {
	q.mu.Lock()
	q.writing = false
	q.mu.Unlock()
	q.kickWriter()
}

// resultsWritten ends taken results that the statement wrote, or found
// fenced out (not in written: the lease was lost). It returns whether
// some went back to available at once.
func (q *Queue) resultsWritten(r *results, written map[int64]bool) bool {
	n := len(r.batch)
	q.mu.Lock()
	clear(q.pending[:n])
	q.pending = q.pending[n:]
	for _, w := range r.batch {
		if q.held[w.c.id] == w.c {
			delete(q.held, w.c.id)
		}
	}
	q.written += uint64(n)
	close(q.writtenCh)
	q.writtenCh = make(chan struct{})
	q.writing = false
	more := len(q.pending) > 0
	q.mu.Unlock()
	if more {
		q.kickWriter()
	}
	requeued := false
	for _, w := range r.batch {
		if !written[w.c.id] {
			q.log.Warn("lease lost: the job was taken back after its lease expired, and this result is discarded",
				"job_id", w.c.job.ID, "attempt", w.c.attempt, "state", w.state)
		}
		requeued = requeued || (w.state == "available" && w.delayUS == 0)
	}
	return requeued
}

// notifyRequeued tells the other daemons, and this one, of jobs back in
// the queue.
func (q *Queue) notifyRequeued(ctx context.Context) {
	if _, err := q.pool.Exec(ctx, q.sql.notify, q.opts.Queue); err != nil {
		q.log.Debug("notify failed", "err", err)
	}
	q.wakeUp()
}

// write stores pending results, up to maxBatch, in one statement, and
// reports whether it wrote some: false when none were pending, or when
// NextJob is writing them along with a claim. On an error they stay
// pending, in order, for the next call.
func (q *Queue) write(ctx context.Context) (bool, error) {
	r := q.takeResults(0)
	if r == nil {
		return false, nil
	}
	rows, err := q.pool.Query(ctx, q.sql.write, r.args...)
	var written map[int64]bool
	if err == nil {
		written, err = scanWritten(rows)
	}
	if err != nil {
		q.resultsFailed()
		return false, err
	}
	if q.resultsWritten(r, written) {
		q.notifyRequeued(ctx)
	}
	return true, nil
}
