package pgqueue_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/pgqueue"
)

// A completion after the lease was lost changes nothing: neither when
// another daemon rescued the job and runs it again, nor when the lease
// was taken away and a renewal found out.
func TestFencedCompletion(t *testing.T) {
	dsn := migrated(t)
	c := connect(t, dsn)
	ctx := context.Background()
	// a renews every 20 s: its lease can expire under it. b rescues
	// every 100 ms.
	a, alog := openQueue(t, pgqueue.Options{DSN: dsn, LeaseTTL: time.Minute})
	b, _ := openQueue(t, pgqueue.Options{DSN: dsn, LeaseTTL: time.Second, MaxAttempts: 3})
	if _, err := a.Submit(ctx, "", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	ja, err := a.NextJob(ctx, 0)
	if err != nil || ja == nil {
		t.Fatalf("a NextJob: %v, %v", ja, err)
	}
	// a stalls past its lease: b's rescuer returns the job, b claims it.
	if _, err := c.Exec(ctx, "UPDATE jobdaemon.jobs SET lease_until = now() - interval '1 second'"); err != nil {
		t.Fatal(err)
	}
	var jb *jobs.Job
	poll(t, 10*time.Second, "b gets the job back", func() bool {
		jb, err = b.NextJob(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		return jb != nil
	})
	if jb.ID != ja.ID || jb.Attempt != 2 {
		t.Fatalf("b got job %s attempt %d, want %s attempt 2", jb.ID, jb.Attempt, ja.ID)
	}
	// a's late success is fenced out.
	if err := a.Done(ctx, ja, jobs.Result{}); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var state, owner string
	var attempt int
	var result *string
	row := func() {
		t.Helper()
		err := c.QueryRow(ctx, "SELECT state, attempt, coalesce(lease_owner, ''), result::text FROM jobdaemon.jobs WHERE id = $1::bigint", ja.ID).
			Scan(&state, &attempt, &owner, &result)
		if err != nil {
			t.Fatal(err)
		}
	}
	row()
	if state != "running" || attempt != 2 || owner != b.Owner() || result != nil {
		t.Errorf("after a's fenced completion: %s attempt %d owner %s result %v; want running, 2, b's, none", state, attempt, owner, result)
	}
	if !strings.Contains(alog.String(), "lease lost") {
		t.Errorf("a did not log the lost lease:\n%s", alog.String())
	}
	// b's completion counts.
	if err := b.Done(ctx, jb, jobs.Result{ExitCode: 0}); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	row()
	if state != "completed" || result == nil || !strings.Contains(*result, b.Owner()) {
		t.Errorf("after b's completion: %s, result %v", state, result)
	}
}

// A renewal finds a lease gone (taken by someone else) and says so; the
// result of that run changes nothing.
func TestRenewalFindsLostLease(t *testing.T) {
	dsn := migrated(t)
	c := connect(t, dsn)
	ctx := context.Background()
	q, qlog := openQueue(t, pgqueue.Options{DSN: dsn, LeaseTTL: 1500 * time.Millisecond})
	if _, err := q.Submit(ctx, "", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	j, err := q.NextJob(ctx, 0)
	if err != nil || j == nil {
		t.Fatalf("NextJob: %v, %v", j, err)
	}
	// Renewals keep the lease alive meanwhile.
	var until1, until2 time.Time
	if err := c.QueryRow(ctx, "SELECT lease_until FROM jobdaemon.jobs").Scan(&until1); err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, "lease renewed", func() bool {
		if err := c.QueryRow(ctx, "SELECT lease_until FROM jobdaemon.jobs").Scan(&until2); err != nil {
			t.Fatal(err)
		}
		return until2.After(until1)
	})
	if _, err := c.Exec(ctx, "UPDATE jobdaemon.jobs SET lease_owner = 'thief', attempt = 2"); err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, "the renewal notices the lost lease", func() bool {
		return strings.Contains(qlog.String(), "lease lost")
	})
	if err := q.Done(ctx, j, jobs.Result{}); err != nil {
		t.Fatal(err)
	}
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var state, owner string
	if err := c.QueryRow(ctx, "SELECT state, lease_owner FROM jobdaemon.jobs").Scan(&state, &owner); err != nil {
		t.Fatal(err)
	}
	if state != "running" || owner != "thief" {
		t.Errorf("after a completion without the lease: %s, owner %s", state, owner)
	}
}

// A job whose lease expired on its last attempt fails, with the reason.
func TestRescueLastAttempt(t *testing.T) {
	dsn := migrated(t)
	c := connect(t, dsn)
	ctx := context.Background()
	_, err := c.Exec(ctx, `INSERT INTO jobdaemon.jobs (state, attempt, max_attempts, lease_owner, lease_until)
		VALUES ('running', 1, 1, 'gone/host', now() - interval '1 minute'),
		       ('running', 1, 3, 'gone/host', now() - interval '1 minute'),
		       ('running', 1, 3, 'alive/host', now() + interval '1 hour')`)
	if err != nil {
		t.Fatal(err)
	}
	openQueue(t, pgqueue.Options{DSN: dsn, LeaseTTL: time.Second})
	poll(t, 10*time.Second, "expired leases rescued", func() bool {
		return count(t, c, "SELECT count(*) FROM jobdaemon.jobs WHERE lease_owner = 'gone/host'") == 0
	})
	var failedErr string
	if err := c.QueryRow(ctx, "SELECT last_error FROM jobdaemon.jobs WHERE state = 'failed' AND max_attempts = 1").Scan(&failedErr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(failedErr, "gone/host") || !strings.Contains(failedErr, "last attempt") {
		t.Errorf("last_error %q", failedErr)
	}
	if n := count(t, c, "SELECT count(*) FROM jobdaemon.jobs WHERE state = 'available' AND attempt = 1 AND max_attempts = 3"); n != 1 {
		t.Errorf("%d rescued jobs available for their next attempt, want 1", n)
	}
	if n := count(t, c, "SELECT count(*) FROM jobdaemon.jobs WHERE lease_owner = 'alive/host'"); n != 1 {
		t.Error("a live lease was rescued")
	}
}

// Completed jobs older than the retention are pruned; others stay.
func TestPrune(t *testing.T) {
	dsn := migrated(t)
	c := connect(t, dsn)
	ctx := context.Background()
	_, err := c.Exec(ctx, `INSERT INTO jobdaemon.jobs (state, finished_at)
		SELECT 'completed', now() - interval '1 hour' FROM generate_series(1, 2500)`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Exec(ctx, `INSERT INTO jobdaemon.jobs (state, finished_at) VALUES
		('completed', now()), ('failed', now() - interval '1 hour')`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Exec(ctx, `INSERT INTO jobdaemon.jobs (queue, state, finished_at) VALUES ('other', 'completed', now() - interval '1 hour')`)
	if err != nil {
		t.Fatal(err)
	}
	openQueue(t, pgqueue.Options{DSN: dsn, Retention: 30 * time.Minute})
	poll(t, 2*time.Minute, "old completed jobs pruned", func() bool {
		return count(t, c, "SELECT count(*) FROM jobdaemon.jobs") == 3
	})
	if n := count(t, c, "SELECT count(*) FROM jobdaemon.jobs WHERE queue = 'other'"); n != 1 {
		t.Error("another queue's jobs were pruned")
	}
}
