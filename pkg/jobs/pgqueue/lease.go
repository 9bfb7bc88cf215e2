package pgqueue

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// staleAfter is how long a claimed job may wait in memory for its slot
// before it is handed back for another daemon to run. A dispatch round
// takes milliseconds: only a round cut short (a pause, a stop, a slot
// that did not free as counted) leaves jobs behind.
const staleAfter = time.Second

// writeEvery is the shortest time between two writes of results: under
// load, the results of all the jobs that ended in between go in one
// statement; an idle queue writes a result at once.
const writeEvery = 2 * time.Millisecond

// writerBackoff spaces the writer's attempts while the database is
// unavailable or a write fails.
var writerBackoff = jobs.Retry{MaxAttempts: 1 << 30, Base: 100 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.2}

// writer is the goroutine that talks to the database for the jobs this
// queue holds: it renews all their leases every LeaseTTL/3, writes the
// results Done received that no claim took along (see takeResults: one
// batch at a time, so that results are written in order), hands back
// jobs claimed but left unstarted, and, while the database is
// unavailable, probes it with backoff.
func (q *Queue) writer() {
	defer q.wg.Done()
	renewEvery := q.opts.LeaseTTL / 3
	nextRenew := time.Now().Add(renewEvery)
	var retryAt, lastWrite time.Time
	fails := 0
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := nextRenew
		if !retryAt.IsZero() && retryAt.Before(next) {
			next = retryAt
		}
		if at := q.oldestBuffered(); !at.IsZero() && at.Add(staleAfter).Before(next) {
			next = at.Add(staleAfter)
		}
		timer.Reset(max(time.Until(next), 0))
		select {
		case <-q.quit:
			q.writeLast()
			return
		case <-q.kick:
		case <-timer.C:
		}
		if !retryAt.IsZero() && time.Now().Before(retryAt) {
			continue // backing off: new results wait for the next try
		}
		// At most one write every writeEvery: results that end meanwhile
		// share the next statement.
		if wait := time.Until(lastWrite.Add(writeEvery)); wait > 0 {
			select {
			case <-q.quit:
				q.writeLast()
				return
			case <-time.After(wait):
			}
		}
		lastWrite = time.Now()
		if err := q.writeRound(&nextRenew, renewEvery); err != nil {
			if unavailable(err) {
				q.setDown(err)
			} else {
				q.log.Error("cannot write job results; retrying", "err", err)
			}
			fails++
			d, _ := writerBackoff.After(fails)
			retryAt = time.Now().Add(d)
			continue
		}
		fails, retryAt = 0, time.Time{}
	}
}

// writeRound does what is due: reach the database again if it was
// down, renew the leases, hand back stale claims, write the results.
func (q *Queue) writeRound(nextRenew *time.Time, renewEvery time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	wasDown := q.down() != nil
	if wasDown {
		if err := q.pool.Ping(ctx); err != nil {
			return err
		}
	}
	// Renew first: after an outage, leases are the most urgent.
	if wasDown || !time.Now().Before(*nextRenew) {
		if err := q.renew(ctx); err != nil {
			return err
		}
		*nextRenew = time.Now().Add(renewEvery)
	}
	if wasDown {
		q.setUp()
	}
	q.releaseStale()
	for {
		// Until none is left, or NextJob writes them (it kicks us after).
		if wrote, err := q.write(ctx); err != nil || !wrote {
			return err
		}
	}
}

// writeLast writes what is pending at Close, trying for closeTimeout.
func (q *Queue) writeLast() {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	for fails := 1; ; fails++ {
		err := func() error {
			octx, ocancel := context.WithTimeout(ctx, opTimeout)
			defer ocancel()
			for {
				// The dispatcher has stopped: nobody else writes now.
				if wrote, err := q.write(octx); err != nil || !wrote {
					return err
				}
			}
		}()
		if err == nil {
			return
		}
		if !unavailable(err) {
			q.log.Error("cannot write job results", "err", err)
		} else if q.down() == nil {
			q.setDown(err)
		}
		d, _ := writerBackoff.After(fails)
		select {
		case <-ctx.Done():
			q.mu.Lock()
			n := len(q.pending)
			q.mu.Unlock()
			q.log.Error("results not written before close: those jobs run again once their leases expire",
				"results", n, "err", err)
			return
		case <-time.After(d):
		}
	}
}

func (q *Queue) oldestBuffered() time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.buf) == 0 {
		return time.Time{}
	}
	return q.buf[0].claimedAt
}

// releaseStale hands back claimed jobs that waited in memory too long.
func (q *Queue) releaseStale() {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for n < len(q.buf) && time.Since(q.buf[n].claimedAt) >= staleAfter {
		n++
	}
	if n == 0 {
		return
	}
	q.releaseLocked(q.buf[:n], "not started within "+staleAfter.String())
	q.buf = append(q.buf[:0], q.buf[n:]...)
}

// renew extends the leases of every job this queue holds, in one
// statement. A job whose lease is gone (it expired and was rescued) is
// logged; its result will be fenced out.
func (q *Queue) renew(ctx context.Context) error {
	q.mu.Lock()
	ids := make([]int64, 0, len(q.held))
	for id, c := range q.held {
		if !c.lost {
			ids = append(ids, id)
		}
	}
	q.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	rows, err := q.pool.Query(ctx, q.sql.renew, planEach, q.owner, q.lease().Microseconds(), ids)
	if err != nil {
		return err
	}
	renewed, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	if len(renewed) == len(ids) {
		return nil
	}
	ok := make(map[int64]bool, len(renewed))
	for _, id := range renewed {
		ok[id] = true
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, id := range ids {
		if c := q.held[id]; c != nil && !ok[id] && !c.lost {
			c.lost = true
			q.log.Warn("lease lost: the job's lease expired and another daemon took it back; this run's result will be discarded",
				"job_id", c.job.ID, "attempt", c.attempt)
		}
	}
	return nil
}

// maintain is the goroutine of the periodic work: polling, rescuing
// expired leases, pruning completed jobs.
func (q *Queue) maintain() {
	defer q.wg.Done()
	poll := time.NewTicker(q.opts.PollInterval)
	defer poll.Stop()
	rescue := time.NewTicker(q.rescueEvery())
	defer rescue.Stop()
	var pruneC <-chan time.Time
	if q.opts.Retention > 0 {
		t := time.NewTicker(min(max(q.opts.Retention/10, time.Second), time.Minute))
		defer t.Stop()
		pruneC = t.C
	}
	q.rescue()
	if pruneC != nil {
		q.prune()
	}
	for {
		select {
		case <-q.quit:
			return
		case <-poll.C:
			if q.down() == nil { // the writer wakes the dispatcher when it is back
				q.wakeUp()
			}
		case <-rescue.C:
			q.rescue()
		case <-pruneC:
			q.prune()
		}
	}
}

// rescue returns jobs whose lease expired to the queue (or fails those
// on their last attempt). Every daemon runs it; an advisory lock lets one
// at a time do the work.
func (q *Queue) rescue() {
	if q.down() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	q.mu.Lock()
	held := make([]int64, 0, len(q.held))
	for id := range q.held {
		held = append(held, id)
	}
	q.mu.Unlock()
	type rescued struct {
		id           int64
		queue, state string
		why          string
	}
	var got []rescued
	err := pgx.BeginFunc(ctx, q.pool, func(tx pgx.Tx) error {
		var locked bool
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", lockKey("rescue", q.opts.Schema)).Scan(&locked); err != nil || !locked {
			return err
		}
		rows, err := tx.Query(ctx, q.sql.rescue, planEach, q.owner, held, q.opts.MaxAttempts)
		if err != nil {
			return err
		}
		got, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (rescued, error) {
			var x rescued
			err := r.Scan(&x.id, &x.queue, &x.state, &x.why)
			return x, err
		})
		if err != nil {
			return err
		}
		notified := map[string]bool{}
		for _, x := range got {
			if x.state == "available" && !notified[x.queue] {
				notified[x.queue] = true
				if _, err := tx.Exec(ctx, q.sql.notify, x.queue); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		q.log.Warn("rescue of expired leases failed", "err", err)
		return
	}
	for _, x := range got {
		q.log.Warn("job rescued: its lease expired", "job_id", x.id, "job_queue", x.queue, "state", x.state, "why", x.why)
	}
	if len(got) > 0 {
		q.wakeUp()
	}
}

// prune deletes this queue's completed jobs older than the retention, in
// batches, until none is left.
func (q *Queue) prune() {
	if q.down() != nil {
		return
	}
	total := int64(0)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		tag, err := q.pool.Exec(ctx, q.sql.prune, planEach, q.opts.Queue, q.opts.Retention.Microseconds())
		cancel()
		if err != nil {
			q.log.Warn("pruning completed jobs failed", "err", err)
			break
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 1000 {
			break
		}
		select {
		case <-q.quit:
			return
		default:
		}
	}
	if total > 0 {
		q.log.Info("completed jobs pruned", "jobs", total, "retention", q.opts.Retention)
	}
}
