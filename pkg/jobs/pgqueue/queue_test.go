package pgqueue_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jobdaemon/jobdaemon/internal/pgtest"
	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/pgqueue"
)

// Migrate is idempotent and safe when several hosts run it at once.
func TestMigrateConcurrent(t *testing.T) {
	dsn := pgtest.NewDB(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Go(func() { errs <- pgqueue.MigrateDSN(ctx, dsn, "jobs_a") })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c := connect(t, dsn)
	if n := count(t, c, "SELECT count(*) FROM jobs_a.schema_version"); n != pgqueue.SchemaVersion {
		t.Errorf("%d versions recorded, want %d", n, pgqueue.SchemaVersion)
	}
	if err := pgqueue.Migrate(ctx, c, "jobs_a"); err != nil {
		t.Errorf("second migration: %v", err)
	}
	// A schema newer than this program is refused, and left alone.
	if _, err := c.Exec(ctx, "INSERT INTO jobs_a.schema_version (version) VALUES (99)"); err != nil {
		t.Fatal(err)
	}
	if err := pgqueue.Migrate(ctx, c, "jobs_a"); !errors.Is(err, pgqueue.ErrSchemaVersion) {
		t.Errorf("newer schema: %v, want ErrSchemaVersion", err)
	}
	if err := pgqueue.Migrate(ctx, c, `x"; DROP TABLE y; --`); !errors.Is(err, pgqueue.ErrBadName) {
		t.Errorf("bad schema name: %v", err)
	}
}

// Jobs come out by priority, then run_at, then id; NextJob outside a
// daemon claims one at a time.
func TestClaimOrder(t *testing.T) {
	dsn := migrated(t)
	c := connect(t, dsn)
	ctx := context.Background()
	want := []string{}
	for i, p := range []int{5, 0, -3, 0, 5} {
		id, err := pgqueue.Enqueue(ctx, c, "jobdaemon", pgqueue.NewJob{Priority: p, Payload: []byte{byte('a' + i)}})
		if err != nil {
			t.Fatal(err)
		}
		_ = id
	}
	// By priority (-3, 0, 0, 5, 5), then id: payloads c, b, d, a, e.
	want = append(want, "c", "b", "d", "a", "e")
	if _, err := pgqueue.Enqueue(ctx, c, "jobdaemon", pgqueue.NewJob{Payload: []byte("later"), Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := pgqueue.Enqueue(ctx, c, "jobdaemon", pgqueue.NewJob{Queue: "other", Payload: []byte("other")}); err != nil {
		t.Fatal(err)
	}
	q, _ := openQueue(t, pgqueue.Options{DSN: dsn})
	var got []string
	for {
		j, err := q.NextJob(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if j == nil {
			break
		}
		if j.Attempt != 1 || j.Meta["queue"] != "default" {
			t.Errorf("job %s: attempt %d, meta %v", j.ID, j.Attempt, j.Meta)
		}
		if n := count(t, c, "SELECT count(*) FROM jobdaemon.jobs WHERE state = 'running'"); n != len(got)+1 {
			t.Errorf("%d jobs running after %d claims: claims should be one at a time outside a daemon", n, len(got)+1)
		}
		got = append(got, string(j.Payload))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("order %v, want %v", got, want)
	}
	s, err := q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s != (pgqueue.Stats{Available: 0, Scheduled: 1, Running: 5, Failed: 0}) {
		t.Errorf("stats %+v", s)
	}
	if d, err := q.Depth(); err != nil || d != 1 {
		t.Errorf("depth %d, %v; want 1", d, err)
	}
}

// Done writes each outcome to the row: completed with its record, retried
// later, failed at the last attempt, back at once when interrupted.
func TestDone(t *testing.T) {
	dsn := migrated(t)
	c := connect(t, dsn)
	ctx := context.Background()
	q, _ := openQueue(t, pgqueue.Options{DSN: dsn, MaxAttempts: 2, Backoff: time.Hour})
	for _, p := range []string{"ok", "fail", "interrupt", "notstarted"} {
		if _, err := pgqueue.Enqueue(ctx, c, "jobdaemon", pgqueue.NewJob{Payload: []byte(p)}); err != nil {
			t.Fatal(err)
		}
	}
	results := map[string]jobs.Result{
		"ok":        {Duration: 1500 * time.Millisecond, Output: []byte("done\x00\xff\n"), MaxRSS: 1 << 20},
		"fail":      {ExitCode: 3, Output: []byte("bad")},
		"interrupt": {Signal: syscall.SIGTERM, ExitCode: -1, Interrupted: true},
		// The daemon could not start it (fork failed): not an attempt.
		"notstarted": {ExitCode: -1, Error: "fork/exec: resource temporarily unavailable", NotStarted: true},
	}
	ids := map[string]string{}
	for range 4 {
		j, err := q.NextJob(ctx, 0)
		if err != nil || j == nil {
			t.Fatalf("NextJob: %v, %v", j, err)
		}
		ids[string(j.Payload)] = j.ID
		if err := q.Done(ctx, j, results[string(j.Payload)]); err != nil {
			t.Fatal(err)
		}
		if err := q.Done(ctx, j, jobs.Result{}); err == nil {
			t.Error("a second Done for the same run is accepted")
		}
	}
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	type row struct {
		state     string
		attempt   int
		future    bool
		lastError *string
		result    []byte
		finished  bool
		owner     *string
	}
	get := func(id string) row {
		var r row
		err := c.QueryRow(ctx, `SELECT state, attempt, run_at > now(), last_error, result, finished_at IS NOT NULL, lease_owner
			FROM jobdaemon.jobs WHERE id = $1`, id).Scan(&r.state, &r.attempt, &r.future, &r.lastError, &r.result, &r.finished, &r.owner)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	ok := get(ids["ok"])
	if ok.state != "completed" || ok.attempt != 1 || !ok.finished || ok.owner != nil {
		t.Errorf("ok: %+v", ok)
	}
	var rec pgqueue.Record
	if err := json.Unmarshal(ok.result, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Outcome != "ok" || rec.Duration != 1.5 || rec.OutputTail != "done\uFFFD\uFFFD\n" || rec.Owner != q.Owner() || rec.MaxRSS != 1<<20 {
		t.Errorf("record %+v", rec)
	}
	fail := get(ids["fail"])
	if fail.state != "available" || fail.attempt != 1 || !fail.future || fail.lastError == nil || *fail.lastError != "exit 3" {
		t.Errorf("fail: %+v", fail)
	}
	in := get(ids["interrupt"])
	if in.state != "available" || in.attempt != 0 || in.future || in.finished {
		t.Errorf("interrupted: %+v", in)
	}
	ns := get(ids["notstarted"])
	if ns.state != "available" || ns.attempt != 0 || ns.future || ns.finished || ns.lastError == nil || !strings.Contains(*ns.lastError, "not started") {
		t.Errorf("not started: %+v", ns)
	}
	// The retried job fails for good on its second attempt.
	if _, err := c.Exec(ctx, "UPDATE jobdaemon.jobs SET run_at = now() WHERE id = $1", ids["fail"]); err != nil {
		t.Fatal(err)
	}
	for {
		j, err := q.NextJob(ctx, 0)
		if err != nil || j == nil {
			t.Fatalf("NextJob: %v, %v", j, err)
		}
		if j.ID == ids["interrupt"] || j.ID == ids["notstarted"] {
			if j.Attempt != 1 {
				t.Errorf("job %s back with attempt %d, want 1", j.ID, j.Attempt)
			}
			continue // left running until the test ends
		}
		if j.ID != ids["fail"] || j.Attempt != 2 {
			t.Fatalf("got job %s attempt %d", j.ID, j.Attempt)
		}
		if err := q.Done(ctx, j, jobs.Result{ExitCode: 4}); err != nil {
			t.Fatal(err)
		}
		break
	}
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if f := get(ids["fail"]); f.state != "failed" || f.attempt != 2 || !f.finished || *f.lastError != "exit 4" {
		t.Errorf("failed: %+v", f)
	}
	if s, err := q.Stats(ctx); err != nil || s.Failed != 1 || s.Running != 2 {
		t.Errorf("stats %+v, %v", s, err)
	}
}

// A unique key admits one live job per queue; a finished job frees it.
func TestUniqueKey(t *testing.T) {
	dsn := migrated(t)
	c := connect(t, dsn)
	ctx := context.Background()
	q, _ := openQueue(t, pgqueue.Options{DSN: dsn})
	a, err := q.Submit(ctx, "report-7", strings.NewReader("one"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := q.Submit(ctx, "report-7", strings.NewReader("two"))
	if err != nil || b != a {
		t.Fatalf("second submit of a live key: %s, %v; want %s", b, err, a)
	}
	other, err := pgqueue.Enqueue(ctx, c, "jobdaemon", pgqueue.NewJob{Queue: "other", UniqueKey: "report-7"})
	if err != nil || other == 0 {
		t.Fatalf("same key in another queue: %d, %v", other, err)
	}
	j, err := q.NextJob(ctx, 0)
	if err != nil || j == nil || j.ID != a || j.Meta["unique_key"] != "report-7" || string(j.Payload) != "one" {
		t.Fatalf("NextJob: %+v, %v", j, err)
	}
	if again, _ := q.Submit(ctx, "report-7", strings.NewReader("three")); again != a {
		t.Errorf("key of a running job: new id %s", again)
	}
	if err := q.Done(ctx, j, jobs.Result{}); err != nil {
		t.Fatal(err)
	}
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if again, _ := q.Submit(ctx, "report-7", strings.NewReader("four")); again == a || again == "" {
		t.Errorf("key of a completed job: id %q, want a new one", again)
	}
	if n := count(t, c, "SELECT count(*) FROM jobdaemon.jobs WHERE queue = 'default'"); n != 2 {
		t.Errorf("%d jobs in the default queue, want 2", n)
	}
}

// Enqueue takes part in the caller's transaction: a rollback leaves
// nothing.
func TestEnqueueInTransaction(t *testing.T) {
	dsn := migrated(t)
	c := connect(t, dsn)
	ctx := context.Background()
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pgqueue.Enqueue(ctx, tx, "jobdaemon", pgqueue.NewJob{Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		_, err := pgqueue.Enqueue(ctx, tx, "jobdaemon", pgqueue.NewJob{Payload: []byte("y"), MaxAttempts: 7, Priority: 2})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var payload string
	var maxAttempts, priority int
	if err := c.QueryRow(ctx, "SELECT convert_from(payload, 'UTF8'), max_attempts, priority FROM jobdaemon.jobs").Scan(&payload, &maxAttempts, &priority); err != nil {
		t.Fatal(err)
	}
	if payload != "y" || maxAttempts != 7 || priority != 2 {
		t.Errorf("row %q %d %d", payload, maxAttempts, priority)
	}
}

// The query modes that PgBouncer in transaction mode needs (no named
// prepared statements) work as well as the default.
func TestQueryExecModes(t *testing.T) {
	dsn := migrated(t)
	c := connect(t, dsn)
	ctx := context.Background()
	for _, mode := range []string{"cache_statement", "exec", "simple_protocol"} {
		q, _ := openQueue(t, pgqueue.Options{DSN: dsn + " default_query_exec_mode=" + mode, Queue: mode, MaxAttempts: 2})
		for range 3 {
			if _, err := q.Submit(ctx, "", strings.NewReader(mode)); err != nil {
				t.Fatalf("%s: %v", mode, err)
			}
		}
		for i := range 3 {
			j, err := q.NextJob(ctx, 0)
			if err != nil || j == nil {
				t.Fatalf("%s: NextJob: %v, %v", mode, j, err)
			}
			if err := q.Done(ctx, j, jobs.Result{ExitCode: i}); err != nil {
				t.Fatal(err)
			}
		}
		if err := q.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := q.Stats(ctx); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if n := count(t, c, "SELECT count(*) FROM jobdaemon.jobs WHERE queue = $1 AND (state = 'completed' OR state = 'available' AND attempt = 1)", mode); n != 3 {
			t.Errorf("%s: %d of 3 jobs written", mode, n)
		}
	}
}
