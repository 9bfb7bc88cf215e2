package pgqueue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// maxTail is how much of a job's output its Record keeps.
const maxTail = 4 << 10

// Record is what the result column holds, as JSON, for each run that
// ended: the last one for a finished job. For example:
//
//	{"outcome": "exit 2", "exit_code": 2, "signal": "", "timed_out": false,
//	 "interrupted": false, "duration_seconds": 0.153, "user_cpu_seconds": 0.1,
//	 "sys_cpu_seconds": 0.02, "max_rss_bytes": 10485760, "error": "",
//	 "output_tail": "line 3: bad date\n", "output_truncated": false,
//	 "attempt": 3, "owner": "web1/4f0c.../1234/9a3b1c2d"}
type Record struct {
	// Outcome is jobs.Result.String: "ok", "exit 3", "signal SIGKILL"...
	Outcome string `json:"outcome"`
	// ExitCode is the exit status; -1 when a signal killed the job.
	ExitCode int `json:"exit_code"`
	// Signal is the name of the signal that killed the job, or "".
	Signal string `json:"signal"`
	// TimedOut is true when the job ran past its timeout.
	TimedOut bool `json:"timed_out"`
	// Interrupted is true when the daemon stopped the job (a stop, not the
	// job's fault): the job went back to available, its attempt not
	// counted.
	Interrupted bool `json:"interrupted"`
	// Duration, UserCPU and SysCPU are the job's wall and CPU time.
	Duration float64 `json:"duration_seconds"`
	UserCPU  float64 `json:"user_cpu_seconds"`
	SysCPU   float64 `json:"sys_cpu_seconds"`
	// MaxRSS is the job's peak resident set size in bytes.
	MaxRSS int64 `json:"max_rss_bytes"`
	// Error is why the job failed beyond its exit status, or "".
	Error string `json:"error"`
	// OutputTail is the end of the job's output, at most 4 KiB, starting
	// at a line if it was cut; bytes that are not UTF-8, and NUL (which
	// jsonb refuses), read as U+FFFD.
	OutputTail string `json:"output_tail"`
	// OutputTruncated is true when OutputTail is not the whole output.
	OutputTruncated bool `json:"output_truncated"`
	// Attempt is the run this record is of, 1 for the first.
	Attempt int `json:"attempt"`
	// Owner is the lease owner that ran the job (see Queue.Owner).
	Owner string `json:"owner"`
}

// NewRecord returns the Record of a run.
func NewRecord(res jobs.Result, attempt int, owner string) Record {
	r := Record{
		Outcome:     text(res.String()),
		ExitCode:    res.ExitCode,
		TimedOut:    res.TimedOut,
		Interrupted: res.Interrupted,
		Duration:    res.Duration.Seconds(),
		UserCPU:     res.UserCPU.Seconds(),
		SysCPU:      res.SysCPU.Seconds(),
		MaxRSS:      res.MaxRSS,
		Error:       text(res.Error),
		Attempt:     attempt,
		Owner:       text(owner),
	}
	if res.Signal != 0 {
		if r.Signal = unix.SignalName(res.Signal); r.Signal == "" {
			r.Signal = "signal " + strconv.Itoa(int(res.Signal))
		}
	}
	out := res.Output
	if len(out) > maxTail {
		out, r.OutputTruncated = out[len(out)-maxTail:], true
		if i := bytes.IndexByte(out, '\n'); i >= 0 && i < len(out)-1 {
			out = out[i+1:]
		}
	}
	r.OutputTail = text(string(out))
	return r
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
	delayUS    int64  // for available: run_at = now() + delay
	lastError  string // "" keeps the row's
	result     string // Record as JSON; "" keeps the row's
}

// Done records how a job that NextJob returned ended, and returns at
// once: a background writer stores the results of all jobs that ended
// meanwhile in one fenced statement, in the order Done received them.
// A success completes the job; a failure makes it available again after
// a backoff (Options.Backoff, doubling, with jitter) while it has
// attempts left (its row's max_attempts, or Options.MaxAttempts), and
// fails it on its last; an interrupted job (the daemon stopped it) is
// available again at once, its attempt not counted. The row keeps the
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
	if job == nil {
		return errors.New("pgqueue: Done without a job")
	}
	id, err := strconv.ParseInt(job.ID, 10, 64)
	q.mu.Lock()
	c := q.held[id]
	if err != nil || c == nil || c.job != job || c.finished {
		q.mu.Unlock()
		if c != nil && c.job != job {
			return fmt.Errorf("pgqueue: job %s attempt %d: lease lost, result discarded", job.ID, job.Attempt)
		}
		return fmt.Errorf("pgqueue: job %q is not running from this queue", job.ID)
	}
	c.finished = true
	rec, _ := json.Marshal(NewRecord(res, c.attempt, q.owner))
	w := &completion{c: c, newAttempt: c.attempt, result: string(rec)}
	switch {
	case res.OK():
		w.state = "completed"
	case res.Interrupted:
		w.state, w.newAttempt = "available", c.attempt-1
		w.lastError = text("interrupted: " + res.String())
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
	switch w.state {
	case "failed":
		q.log.Warn("job failed on its last attempt", "job_id", job.ID, "attempt", c.attempt, "result", res.String())
	case "available":
		if !res.Interrupted {
			q.log.Info("job will be retried", "job_id", job.ID, "attempt", c.attempt,
				"result", res.String(), "retry_in_ms", w.delayUS/1000)
		}
	}
	return nil
}

// releaseLocked hands claimed jobs that were never handed out back to
// the queue, as they were. q.mu is held.
func (q *Queue) releaseLocked(cs []*claim, why string) {
	for _, c := range cs {
		c.finished = true
		q.pending = append(q.pending, &completion{c: c, state: "available", newAttempt: c.attempt - 1})
		q.given++
	}
	if len(cs) > 0 {
		q.log.Debug("claimed jobs handed back", "jobs", len(cs), "why", why)
		q.kickWriter()
	}
}

// write stores the pending results, up to maxBatch, in one statement.
// On an error they stay pending, in order, for the next call.
func (q *Queue) write(ctx context.Context) error {
	q.mu.Lock()
	// A copy: the slots of q.pending are cleared once written.
	batch := slices.Clone(q.pending[:min(len(q.pending), maxBatch)])
	q.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	n := len(batch)
	ids, attempts, newAttempts := make([]int64, n), make([]int32, n), make([]int32, n)
	states, errs, results := make([]string, n), make([]string, n), make([]string, n)
	delays := make([]int64, n)
	requeued := false
	for i, w := range batch {
		ids[i], attempts[i], states[i] = w.c.id, int32(w.c.attempt), w.state
		newAttempts[i], delays[i], errs[i], results[i] = int32(w.newAttempt), w.delayUS, w.lastError, w.result
		requeued = requeued || (w.state == "available" && w.delayUS == 0)
	}
	rows, err := q.pool.Query(ctx, q.sql.write, q.owner, ids, attempts, states, newAttempts, delays, errs, results)
	if err != nil {
		return err
	}
	written := make(map[int64]bool, n)
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		written[id] = true
	}
	if err := rows.Err(); err != nil {
		return err
	}
	q.mu.Lock()
	clear(q.pending[:n])
	q.pending = q.pending[n:]
	for _, w := range batch {
		if q.held[w.c.id] == w.c {
			delete(q.held, w.c.id)
		}
	}
	q.written += uint64(n)
	close(q.writtenCh)
	q.writtenCh = make(chan struct{})
	q.mu.Unlock()
	for _, w := range batch {
		if !written[w.c.id] {
			q.log.Warn("lease lost: the job was taken back after its lease expired, and this result is discarded",
				"job_id", w.c.job.ID, "attempt", w.c.attempt, "state", w.state)
		}
	}
	if requeued {
		// Jobs back in the queue now: tell the other daemons, and us.
		if _, err := q.pool.Exec(ctx, q.sql.notify, q.opts.Queue); err != nil {
			q.log.Debug("notify failed", "err", err)
		}
		q.wakeUp()
	}
	return nil
}
