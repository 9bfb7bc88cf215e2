package pgqueue

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jobdaemon/jobdaemon/internal/pgtest"
)

// bufferedQueue opens a queue over 5 jobs, and claims 4 of them as
// NextJob does for 4 free slots: it hands out the first and keeps 3.
func bufferedQueue(t *testing.T) (*Queue, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	dsn := pgtest.NewDB(t)
	if err := MigrateDSN(ctx, dsn, DefaultSchema); err != nil {
		t.Fatal(err)
	}
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(ctx) })
	for range 5 {
		if _, err := Enqueue(ctx, c, DefaultSchema, NewJob{}); err != nil {
			t.Fatal(err)
		}
	}
	q, err := Open(ctx, Options{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	batch, err := q.claim(ctx, 4)
	if err != nil || len(batch) != 4 {
		t.Fatalf("claim: %d, %v", len(batch), err)
	}
	q.keep(batch[1:])
	return q, c
}

func states(t *testing.T, c *pgx.Conn) map[string]int {
	t.Helper()
	rows, _ := c.Query(context.Background(), "SELECT state || ' ' || attempt FROM jobdaemon.jobs")
	all, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int{}
	for _, s := range all {
		m[s]++
	}
	return m
}

// Close hands back the jobs it claimed and did not hand out, with their
// attempt not counted; the one handed out keeps its lease.
func TestCloseHandsBackUnstarted(t *testing.T) {
	q, c := bufferedQueue(t)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	got := states(t, c)
	if got["available 0"] != 4 || got["running 1"] != 1 || len(got) != 2 {
		t.Errorf("after Close: %v; want 4 available at attempt 0, 1 running", got)
	}
}

// Claimed jobs left unstarted (a dispatch round cut short) go back after
// a second, for another daemon to run.
func TestStaleClaimsHandedBack(t *testing.T) {
	_, c := bufferedQueue(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := states(t, c)
		if got["available 0"] == 4 && got["running 1"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("unstarted claims not handed back: %v", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The migrations and SchemaVersion agree.
func TestSchemaVersion(t *testing.T) {
	if len(migrations) != SchemaVersion {
		t.Errorf("%d migrations, SchemaVersion %d", len(migrations), SchemaVersion)
	}
}

// Claims go on from the last job claimed; a job that sorts before it
// waits for the next wake-up (a NOTIFY, a poll), and is then first.
func TestClaimsResumeAfterLastClaimed(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDB(t)
	if err := MigrateDSN(ctx, dsn, DefaultSchema); err != nil {
		t.Fatal(err)
	}
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(ctx) })
	for range 5 {
		if _, err := Enqueue(ctx, c, DefaultSchema, NewJob{Payload: []byte("backlog")}); err != nil {
			t.Fatal(err)
		}
	}
	q, err := Open(ctx, Options{DSN: dsn, PollInterval: time.Hour, NoListen: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	next := func() string {
		t.Helper()
		j, err := q.NextJob(ctx, 0)
		if err != nil || j == nil {
			t.Fatalf("NextJob: %v, %v", j, err)
		}
		return string(j.Payload)
	}
	next()
	if _, err := Enqueue(ctx, c, DefaultSchema, NewJob{Payload: []byte("urgent"), Priority: -5}); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != "backlog" {
		t.Errorf("before a wake-up: %q, want the backlog's next", got)
	}
	q.wakeUp() // as a NOTIFY or a poll does
	if got := next(); got != "urgent" {
		t.Errorf("after a wake-up: %q, want the urgent job", got)
	}
	if got := next(); got != "backlog" {
		t.Errorf("then: %q", got)
	}
}
