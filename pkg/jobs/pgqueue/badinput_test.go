package pgqueue_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jobdaemon/jobdaemon/internal/pgtest"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/pgqueue"
)

// freePort returns a TCP port of 127.0.0.1 on which nothing listens.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// An unreachable server: Open logs the host and the reason, retries,
// and gives up only when its context ends.
func TestOpenUnreachable(t *testing.T) {
	port := freePort(t)
	const secret = "Sup3r-s3cret"
	dsn := fmt.Sprintf("postgres://app:%s@127.0.0.1:%d/app?sslmode=disable", secret, port)
	logs := &lockedBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, err := pgqueue.Open(ctx, pgqueue.Options{DSN: dsn, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err == nil {
		t.Fatal("Open succeeded without a server")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap the context's", err)
	}
	where := fmt.Sprintf("127.0.0.1:%d", port)
	for _, want := range []string{where, "connection refused"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if n := strings.Count(logs.String(), "database unreachable; retrying"); n < 2 {
		t.Errorf("%d retries logged, want 2 or more:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), where) || !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("log does not name the server and the reason:\n%s", logs.String())
	}
	if strings.Contains(err.Error()+logs.String(), secret) {
		t.Errorf("the password shows:\n%v\n%s", err, logs.String())
	}
	t.Logf("error: %v", err)
}

// A server that comes up late: Open waits for it, and then succeeds.
func TestOpenWaitsForServer(t *testing.T) {
	srv := pgtest.New(t, pgtest.Options{})
	dsn := srv.TestDB(t)
	if err := pgqueue.MigrateDSN(context.Background(), dsn, pgqueue.DefaultSchema); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	opened := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		q, err := pgqueue.Open(ctx, pgqueue.Options{DSN: dsn, Logger: slog.New(slog.NewTextHandler(logs, nil))})
		if err == nil {
			err = q.Close()
		}
		opened <- err
	}()
	poll(t, 30*time.Second, "a failed attempt logged", func() bool {
		return strings.Contains(logs.String(), "database unreachable; retrying")
	})
	select {
	case err := <-opened:
		t.Fatalf("Open returned while the server is down: %v", err)
	default:
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-opened:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Open did not return after the server came up")
	}
	if !strings.Contains(logs.String(), srv.SocketDir) {
		t.Errorf("log does not name the socket:\n%s", logs.String())
	}
}

// A wrong password fails at once, without showing it.
func TestOpenWrongPassword(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := migrated(t)
	ctx := context.Background()
	if err := srv.Exec(ctx, "postgres", "CREATE ROLE pgq_pw LOGIN SUPERUSER PASSWORD 'the-right-one'"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.SetHBA(); err != nil {
			t.Error(err)
		}
		_ = srv.Exec(ctx, "postgres", "DROP ROLE pgq_pw")
	})
	if err := srv.SetHBA("local all pgq_pw scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	const wrong = "Wr0ng-pa55word"
	for _, d := range []string{
		strings.Replace(dsn, "user=postgres", "user=pgq_pw password="+wrong, 1),
		strings.Replace(dsn, "user=postgres", "user=pgq_pw password='"+wrong+"'", 1),
	} {
		logs := &lockedBuffer{}
		start := time.Now()
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err := pgqueue.Open(ctx, pgqueue.Options{DSN: d, Logger: slog.New(slog.NewTextHandler(logs, nil))})
		cancel()
		if !errors.Is(err, pgqueue.ErrAuth) {
			t.Fatalf("wrong password: %v, want ErrAuth", err)
		}
		if time.Since(start) > 20*time.Second {
			t.Errorf("a wrong password took %v: retried?", time.Since(start))
		}
		if !strings.Contains(err.Error(), "password authentication failed") {
			t.Errorf("error %q does not give the reason", err)
		}
		if strings.Contains(err.Error()+logs.String(), wrong) {
			t.Errorf("the password shows:\n%v\n%s", err, logs.String())
		}
	}
	// Connect, for short tasks, says the same at once; so does MigrateDSN.
	wrongDSN := strings.Replace(dsn, "user=postgres", "user=pgq_pw password="+wrong, 1)
	if _, err := pgqueue.Connect(ctx, wrongDSN); !errors.Is(err, pgqueue.ErrAuth) || strings.Contains(err.Error(), wrong) {
		t.Errorf("Connect with a wrong password: %v", err)
	}
	if err := pgqueue.MigrateDSN(ctx, wrongDSN, pgqueue.DefaultSchema); !errors.Is(err, pgqueue.ErrAuth) || strings.Contains(err.Error(), wrong) {
		t.Errorf("MigrateDSN with a wrong password: %v", err)
	}
	// The right one works.
	right := strings.Replace(dsn, "user=postgres", "user=pgq_pw password=the-right-one", 1)
	openQueue(t, pgqueue.Options{DSN: right})
	conn, err := pgqueue.Connect(ctx, right)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	conn.Close(ctx)
}

// A database without the schema: Open says to migrate, at once.
func TestOpenNotMigrated(t *testing.T) {
	dsn := pgtest.NewDB(t)
	_, err := pgqueue.Open(context.Background(), pgqueue.Options{DSN: dsn})
	if !errors.Is(err, pgqueue.ErrNotMigrated) || !strings.Contains(err.Error(), "Migrate") {
		t.Fatalf("Open without a schema: %v", err)
	}
	t.Logf("error: %v", err)
	_, err = pgqueue.Open(context.Background(), pgqueue.Options{DSN: dsn, Schema: "Bad-Name"})
	if !errors.Is(err, pgqueue.ErrBadName) {
		t.Errorf("bad schema name: %v", err)
	}
	_, err = pgqueue.Open(context.Background(), pgqueue.Options{DSN: "host=/nowhere port=notaport password=xyzzy99"})
	if err == nil || strings.Contains(err.Error(), "xyzzy99") {
		t.Errorf("bad DSN: %v", err)
	}
	missing := strings.Replace(dsn, "dbname=", "dbname=no_such_", 1)
	_, err = pgqueue.Open(context.Background(), pgqueue.Options{DSN: missing})
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing database: %v", err)
	}
}

// A payload over the limit: Submit refuses it and enqueues nothing; one
// enqueued by other means fails when claimed, its row kept.
func TestPayloadTooLarge(t *testing.T) {
	dsn := migrated(t)
	c := connect(t, dsn)
	ctx := context.Background()
	q, _ := openQueue(t, pgqueue.Options{DSN: dsn, MaxPayload: 10})
	if _, err := q.Submit(ctx, "", strings.NewReader("0123456789")); err != nil {
		t.Fatalf("payload at the limit: %v", err)
	}
	_, err := q.Submit(ctx, "big", strings.NewReader("0123456789A"))
	if !errors.Is(err, pgqueue.ErrTooLarge) {
		t.Fatalf("payload over the limit: %v", err)
	}
	if n := count(t, c, "SELECT count(*) FROM jobdaemon.jobs"); n != 1 {
		t.Errorf("%d jobs after a refused submit, want 1", n)
	}
	big, err := pgqueue.Enqueue(ctx, c, "jobdaemon", pgqueue.NewJob{Payload: []byte(strings.Repeat("x", 50)), Priority: -1})
	if err != nil {
		t.Fatal(err)
	}
	j, err := q.NextJob(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if j != nil {
		t.Fatalf("NextJob handed out job %s (%d bytes)", j.ID, len(j.Payload))
	}
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var state, lastError string
	var size int
	if err := c.QueryRow(ctx, "SELECT state, last_error, octet_length(payload) FROM jobdaemon.jobs WHERE id = $1", big).Scan(&state, &lastError, &size); err != nil {
		t.Fatal(err)
	}
	if state != "failed" || !strings.Contains(lastError, "over the limit") || size != 50 {
		t.Errorf("oversized job: %s, %q, %d bytes", state, lastError, size)
	}
	// The small job is still there, and comes next.
	if j, err := q.NextJob(ctx, 0); err != nil || j == nil || string(j.Payload) != "0123456789" {
		t.Errorf("next job: %v, %v", j, err)
	}
}
