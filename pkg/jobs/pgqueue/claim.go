package pgqueue

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// NextJob returns the next job of the queue, or nil, nil when none is
// due. It claims, in one statement, as many jobs as the daemon has free
// slots (jobs.Daemon.FreeSlots; 1 outside a daemon), ordered by
// priority, run_at and id, and hands out the others from memory on the
// following calls of the same dispatch round. A claimed job is leased to
// this queue until Done (see the package documentation).
//
// While the database is unavailable it returns an error at once, without
// touching the network, so that the dispatcher backs off; the queue
// wakes the dispatcher when the database answers again. A claim that
// takes more than 2 s fails.
//
// The job's ID is the row's id; its Attempt is the row's attempt, 1 for a
// first run; Meta holds "queue", and "unique_key" when the row has one.
// A job whose payload is over Options.MaxPayload is not handed out: it
// fails at once, its row kept with the reason in last_error.
func (q *Queue) NextJob(ctx context.Context, slot int) (*jobs.Job, error) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil, ErrClosed
	}
	if len(q.buf) > 0 {
		c := q.buf[0]
		q.buf[0] = nil
		q.buf = q.buf[1:]
		q.mu.Unlock()
		return c.job, nil
	}
	q.mu.Unlock()
	if err := q.down(); err != nil {
		return nil, err
	}
	n := 1
	if d := jobs.DaemonFrom(ctx); d != nil {
		n = max(d.FreeSlots(), 1)
	}
	cctx, cancel := context.WithTimeout(ctx, claimTimeout)
	batch, err := q.claim(cctx, min(n, maxBatch))
	cancel()
	if err != nil {
		if unavailable(err) {
			q.setDown(err)
		}
		return nil, fmt.Errorf("claim jobs: %w", err)
	}
	if len(batch) == 0 {
		return nil, nil
	}
	if q.opts.OnClaim != nil {
		js := make([]*jobs.Job, len(batch))
		for i, c := range batch {
			js[i] = c.job
		}
		q.opts.OnClaim(js)
	}
	q.keep(batch[1:])
	return batch[0].job, nil
}

// keep buffers claimed jobs for the next calls of NextJob, and tells the
// writer, which hands them back if they wait too long.
func (q *Queue) keep(cs []*claim) {
	if len(cs) == 0 {
		return
	}
	q.mu.Lock()
	q.buf = append(q.buf, cs...)
	q.mu.Unlock()
	q.kickWriter()
}

// lease is the lease a claim or a renewal sets: LeaseTTL less the rescue
// interval, so that a job whose daemon died is rescued within LeaseTTL
// of its last renewal.
func (q *Queue) lease() time.Duration { return q.opts.LeaseTTL - q.rescueEvery() }

func (q *Queue) rescueEvery() time.Duration { return q.opts.LeaseTTL / 10 }

// claim claims up to n jobs and returns those to run, in queue order.
// Results that have waited writeEvery to be written go along, in the same
// round trip and transaction: under load, most results are written so,
// in batches of what ended in writeEvery, without a round trip of their
// own.
func (q *Queue) claim(ctx context.Context, n int) ([]*claim, error) {
	if q.fromStart.Swap(false) {
		q.after = nil
	}
	args := []any{q.opts.Queue, n, q.owner, q.lease().Microseconds(), q.opts.MaxAttempts, q.opts.MaxPayload, nil, nil, nil}
	if a := q.after; a != nil {
		args[6], args[7], args[8] = a.priority, a.runAt, a.id
	}
	r := q.takeResults(writeEvery)
	if r == nil {
		rows, err := q.pool.Query(ctx, q.sql.claim, args...)
		if err != nil {
			return nil, err
		}
		return q.scanClaims(rows)
	}
	ok := false
	defer func() {
		if !ok { // an error, or a panic
			q.resultsFailed()
		}
	}()
	b := &pgx.Batch{}
	b.Queue(q.sql.write, r.args...)
	b.Queue(q.sql.claim, args...)
	br := q.pool.SendBatch(ctx, b)
	rows, err := br.Query()
	var written map[int64]bool
	if err == nil {
		written, err = scanWritten(rows)
	}
	var got []*claim
	if err == nil {
		rows, err = br.Query()
		if err == nil {
			got, err = q.scanClaims(rows)
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	ok = true
	if q.resultsWritten(r, written) {
		q.notifyRequeued(ctx)
	}
	return got, nil
}

// scanClaims reads the rows of a claim, and returns the jobs to run.
func (q *Queue) scanClaims(rows pgx.Rows) ([]*claim, error) {
	defer rows.Close()
	type row struct {
		c        *claim
		priority int
		runAt    time.Time
		size     int64
	}
	var got []row
	now := time.Now()
	for rows.Next() {
		var (
			r       row
			c       claim
			key     *string
			payload []byte
		)
		if err := rows.Scan(&c.id, &c.attempt, &c.maxAttempts, &r.priority, &r.runAt, &key, &r.size, &payload); err != nil {
			return nil, err
		}
		c.claimedAt = now
		c.job = &jobs.Job{ID: strconv.FormatInt(c.id, 10), Payload: payload, Attempt: c.attempt,
			Meta: map[string]string{"queue": q.opts.Queue}}
		if key != nil {
			c.job.Meta["unique_key"] = *key
		}
		r.c = &c
		got = append(got, r)
	}
	if err := rows.Err(); err != nil {
		// Rows claimed before the error are leased to us but unknown: the
		// rescuer returns them once their lease expires.
		return nil, err
	}
	slices.SortFunc(got, func(a, b row) int {
		return cmp.Or(cmp.Compare(a.priority, b.priority), a.runAt.Compare(b.runAt), cmp.Compare(a.c.id, b.c.id))
	})
	q.after = nil
	if len(got) > 0 {
		last := got[len(got)-1]
		q.after = &position{last.priority, last.runAt, last.c.id}
	}
	out := make([]*claim, 0, len(got))
	refused := 0
	q.mu.Lock()
	for _, r := range got {
		c := r.c
		if old := q.held[c.id]; old != nil {
			// Our lease on an earlier attempt was lost, and the job came
			// back to us: that earlier run's result is fenced out.
			old.lost = true
		}
		q.held[c.id] = c
		if q.opts.MaxPayload >= 0 && r.size > q.opts.MaxPayload {
			c.finished = true
			msg := fmt.Sprintf("payload of %d bytes is over the limit of %d bytes", r.size, q.opts.MaxPayload)
			q.pending = append(q.pending, &completion{c: c, state: "failed", newAttempt: c.attempt, lastError: msg, at: now})
			q.given++
			refused++
			q.log.Error("job refused", "job_id", c.job.ID, "reason", msg)
			continue
		}
		out = append(out, c)
	}
	q.mu.Unlock()
	if refused > 0 {
		q.kickWriter()
		if len(out) == 0 {
			q.wakeUp() // there may be more jobs behind the refused ones
		}
	}
	return out, nil
}
