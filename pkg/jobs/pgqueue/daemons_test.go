package pgqueue_test

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jobdaemon/jobdaemon/internal/pgtest"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/pgqueue"
)

// enqueueMany inserts n jobs with the given payload in one statement.
func enqueueMany(t *testing.T, c *pgx.Conn, n int, payload string) {
	t.Helper()
	_, err := c.Exec(context.Background(),
		"SELECT jobdaemon.enqueue(convert_to($1, 'UTF8')) FROM generate_series(1, $2)", payload, n)
	if err != nil {
		t.Fatal(err)
	}
}

// checkAllCompletedOnce checks that each of the n jobs is completed, with
// one recorded end, never more.
func checkAllCompletedOnce(t *testing.T, c *pgx.Conn, rec string, n int) runs {
	t.Helper()
	if got := count(t, c, "SELECT count(*) FROM jobdaemon.jobs WHERE state = 'completed'"); got != n {
		t.Errorf("%d of %d jobs completed", got, n)
	}
	r := readRuns(t, rec)
	double := 0
	for id, k := range r.ends {
		if k > 1 {
			double++
			if double < 10 {
				t.Errorf("job %s ran to its end %d times", id, k)
			}
		}
	}
	if double > 0 || len(r.ends) != n {
		t.Errorf("%d jobs ran to their end, %d of them more than once; want %d, once each", len(r.ends), double, n)
	}
	return r
}

// Two daemons, two processes with different lease owners, share one
// queue of 5000 jobs: each job runs once, and completes once.
func TestTwoDaemons(t *testing.T) {
	dsn := migrated(t)
	c := connect(t, dsn)
	rec := filepath.Join(t.TempDir(), "runs")
	const n = 5000
	a := startDaemon(t, dsn, rec, "PGQ_TTL=10s")
	b := startDaemon(t, dsn, rec, "PGQ_TTL=10s")
	if a.owner == b.owner {
		t.Fatalf("both daemons have lease owner %s", a.owner)
	}
	enqueueMany(t, c, n, "ok")
	poll(t, 3*time.Minute, "all jobs completed", func() bool {
		return count(t, c, "SELECT count(*) FROM jobdaemon.jobs WHERE state = 'completed'") == n
	})
	a.stop(t)
	b.stop(t)
	checkAllCompletedOnce(t, c, rec, n)
	var owners []string
	rows, _ := c.Query(context.Background(), "SELECT DISTINCT result->>'owner' FROM jobdaemon.jobs")
	owners, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(owners) != 2 {
		t.Errorf("jobs ran under owners %v, want both daemons", owners)
	}
	if got := count(t, c, "SELECT count(*) FROM jobdaemon.jobs WHERE attempt <> 1"); got != 0 {
		t.Errorf("%d jobs with attempt other than 1", got)
	}
}

// SIGKILL one of two daemons mid-run: its jobs come back within one
// lease TTL and complete on the other.
func TestKilledDaemon(t *testing.T) {
	dsn := migrated(t)
	c := connect(t, dsn)
	rec := filepath.Join(t.TempDir(), "runs")
	const ttl = 3 * time.Second
	a := startDaemon(t, dsn, rec, "PGQ_TTL="+ttl.String(), "PGQ_CHILDREN=4")
	b := startDaemon(t, dsn, rec, "PGQ_TTL="+ttl.String(), "PGQ_CHILDREN=4")
	const n = 60
	enqueueMany(t, c, n, "sleep:300ms")
	// Wait until a has jobs running, then kill it and the workers of its
	// process group.
	var held []string
	poll(t, time.Minute, "daemon a runs jobs", func() bool {
		rows, _ := c.Query(context.Background(), "SELECT id::text FROM jobdaemon.jobs WHERE state = 'running' AND lease_owner = $1", a.owner)
		held, _ = pgx.CollectRows(rows, pgx.RowTo[string])
		return len(held) >= 2
	})
	if err := syscall.Kill(a.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	<-a.done
	// Its leases: gone within one TTL (with a margin for a loaded
	// machine), every one of its jobs then available again or on b.
	poll(t, ttl+5*time.Second, "the killed daemon's jobs rescued", func() bool {
		return count(t, c, "SELECT count(*) FROM jobdaemon.jobs WHERE lease_owner = $1", a.owner) == 0
	})
	back := time.Since(killed)
	t.Logf("jobs of the killed daemon back %v after SIGKILL (lease TTL %v)", back.Round(time.Millisecond), ttl)
	// The rescuer runs every TTL/10 on b; 2 s more for a loaded machine
	// and this test's own polling.
	if back > ttl+2*time.Second {
		t.Errorf("jobs back after %v, more than the lease TTL %v (+2 s)", back, ttl)
	}
	poll(t, 2*time.Minute, "all jobs completed", func() bool {
		return count(t, c, "SELECT count(*) FROM jobdaemon.jobs WHERE state = 'completed'") == n
	})
	b.stop(t)
	// Every job a held when it died completed on b, at attempt 2.
	for _, id := range held {
		var owner string
		var attempt int
		if err := c.QueryRow(context.Background(), "SELECT result->>'owner', attempt FROM jobdaemon.jobs WHERE id = $1::bigint", id).Scan(&owner, &attempt); err != nil {
			t.Fatal(err)
		}
		if owner != b.owner || attempt != 2 {
			t.Errorf("job %s of the killed daemon: completed by %s at attempt %d; want %s, 2", id, owner, attempt, b.owner)
		}
	}
	// Only jobs of the killed daemon may have run twice (at least once).
	r := readRuns(t, rec)
	heldSet := map[string]bool{}
	for _, id := range held {
		heldSet[id] = true
	}
	for id, k := range r.starts {
		if k > 1 && !heldSet[id] {
			t.Errorf("job %s started %d times, and was not one of the killed daemon's", id, k)
		}
	}
	if len(r.ends) != n {
		t.Errorf("%d jobs ran to their end, want %d", len(r.ends), n)
	}
}

// Restart PostgreSQL mid-run: the daemons reconnect and go on; no job is
// lost, none completes twice.
func TestRestartPostgres(t *testing.T) {
	srv := pgtest.New(t, pgtest.Options{})
	dsn := srv.TestDB(t)
	if err := pgqueue.MigrateDSN(context.Background(), dsn, pgqueue.DefaultSchema); err != nil {
		t.Fatal(err)
	}
	c := connect(t, dsn)
	rec := filepath.Join(t.TempDir(), "runs")
	const n = 200
	a := startDaemon(t, dsn, rec, "PGQ_TTL=20s")
	b := startDaemon(t, dsn, rec, "PGQ_TTL=20s")
	enqueueMany(t, c, n, "sleep:250ms")
	poll(t, time.Minute, "a quarter of the jobs done", func() bool {
		return count(t, c, "SELECT count(*) FROM jobdaemon.jobs WHERE state = 'completed'") >= n/4
	})
	c.Close(context.Background())
	// While the database goes down and stays down, running jobs end, and
	// their results wait in the daemons' memory. Counted from before the
	// stop: on a busy machine the stop (connections cut, checkpoint) can
	// outlast every job that was running, and no job starts without it.
	before := len(readRuns(t, rec).ends)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	poll(t, time.Minute, "jobs ending while the database is down", func() bool {
		return len(readRuns(t, rec).ends) >= before+2
	})
	time.Sleep(500 * time.Millisecond)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	c = connect(t, dsn)
	poll(t, 2*time.Minute, "all jobs completed after the restart", func() bool {
		return count(t, c, "SELECT count(*) FROM jobdaemon.jobs WHERE state = 'completed'") == n
	})
	a.stop(t)
	b.stop(t)
	checkAllCompletedOnce(t, c, rec, n)
	for _, d := range []*daemon{a, b} {
		if !strings.Contains(d.log.String(), "database reachable again") {
			t.Errorf("daemon %s never lost the database:\n%s", d.owner, d.log.String())
		}
	}
}
