package pgqueue_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
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

// The test binary is its own helper: PGQ_HELPER=daemon makes it a daemon
// over a pgqueue (see helperDaemon), and a daemon's re-executed children
// run the jobs (see app.RunJob).
func TestMain(m *testing.M) {
	if jobs.IsChild() {
		_ = jobs.Run(context.Background(), &app{}, jobs.Options{}) // runs the job and exits
	}
	if os.Getenv("PGQ_HELPER") == "daemon" {
		os.Exit(helperDaemon())
	}
	os.Exit(pgtest.Main(m))
}

// app is a daemon over a Queue whose jobs say what to do in their
// payload; each run appends "start ID ATTEMPT PID" and, unless it is
// killed first, "end ID ATTEMPT PID" to the file $PGQ_RECORD.
type app struct {
	*pgqueue.Queue
}

func (a *app) RunJob(ctx context.Context, job *jobs.Job) error {
	record("start", job)
	p := string(job.Payload)
	switch {
	case strings.HasPrefix(p, "sleep:"):
		d, err := time.ParseDuration(strings.TrimPrefix(p, "sleep:"))
		if err != nil {
			return err
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	case p == "fail":
		return fmt.Errorf("failed on purpose")
	}
	record("end", job)
	return nil
}

var recordFile struct {
	once sync.Once
	f    *os.File
}

// record appends one line with O_APPEND: lines of concurrent processes
// never mix, each being a single write far under PIPE_BUF.
func record(what string, job *jobs.Job) {
	path := os.Getenv("PGQ_RECORD")
	if path == "" {
		return
	}
	recordFile.once.Do(func() {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			panic(err)
		}
		recordFile.f = f
	})
	line := fmt.Sprintf("%s %s %d %d\n", what, job.ID, job.Attempt, os.Getpid())
	if _, err := recordFile.f.WriteString(line); err != nil {
		panic(err)
	}
}

// helperDaemon runs a daemon over the queue of $PGQ_DSN until SIGTERM. It
// prints "owner OWNER" once the queue is open.
func helperDaemon() int {
	env := func(k string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
			return v
		}
		return def
	}
	ttl, _ := time.ParseDuration(os.Getenv("PGQ_TTL"))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	q, err := pgqueue.Open(ctx, pgqueue.Options{
		DSN:          os.Getenv("PGQ_DSN"),
		LeaseTTL:     ttl,
		PollInterval: 200 * time.Millisecond,
		MaxAttempts:  env("PGQ_MAX_ATTEMPTS", 3),
		Logger:       log,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 1
	}
	fmt.Printf("owner %s\n", q.Owner())
	err = jobs.Run(ctx, &app{q}, jobs.Options{
		MaxChildren:  env("PGQ_CHILDREN", 4),
		JobsPerChild: env("PGQ_JOBS_PER_CHILD", 1000),
		IdleInterval: 200 * time.Millisecond,
		NoSignals:    true,
		Logger:       log,
	})
	if cerr := q.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}
	return 0
}

// daemon is a helper daemon process started by a test.
type daemon struct {
	cmd   *exec.Cmd
	owner string
	log   *lockedBuffer
	done  chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startDaemon starts a helper daemon and waits until its queue is open.
// It is stopped (TERM, then KILL) when the test ends, and its log shown
// if the test failed.
func startDaemon(t *testing.T, dsn, recordPath string, extra ...string) *daemon {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PGQ_HELPER=daemon", "PGQ_DSN="+dsn, "PGQ_RECORD="+recordPath)
	cmd.Env = append(cmd.Env, extra...)
	d := &daemon{cmd: cmd, log: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = d.log
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	owner := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if o, ok := strings.CutPrefix(sc.Text(), "owner "); ok {
				owner <- o
			}
		}
		_, _ = io.Copy(io.Discard, out)
		_ = cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			t.Logf("daemon %d log:\n%s", cmd.Process.Pid, d.log.String())
		}
	})
	select {
	case d.owner = <-owner:
	case <-d.done:
		t.Fatalf("daemon exited at start:\n%s", d.log.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("daemon not ready after 60 s:\n%s", d.log.String())
	}
	return d
}

// stop stops the daemon with TERM and waits; KILL after 60 s.
func (d *daemon) stop(t *testing.T) {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(60 * time.Second):
		t.Errorf("daemon %d did not stop on TERM within 60 s", d.cmd.Process.Pid)
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// runs reads a record file: for each job id, its starts and ends.
type runs struct {
	starts, ends map[string]int
}

func readRuns(t *testing.T, path string) runs {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	r := runs{starts: map[string]int{}, ends: map[string]int{}}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 {
			continue
		}
		switch f[0] {
		case "start":
			r.starts[f[1]]++
		case "end":
			r.ends[f[1]]++
		}
	}
	return r
}

// connect opens a connection for the test, closed at its end.
func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// migrated returns the DSN of a new database with the schema migrated.
func migrated(t testing.TB) string {
	t.Helper()
	dsn := pgtest.NewDB(t)
	if err := pgqueue.MigrateDSN(context.Background(), dsn, pgqueue.DefaultSchema); err != nil {
		t.Fatal(err)
	}
	return dsn
}

// openQueue opens a queue on dsn for the test, closed at its end, with a
// log kept for the test's output.
func openQueue(t testing.TB, opts pgqueue.Options) (*pgqueue.Queue, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := pgqueue.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := q.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if t.Failed() {
			t.Logf("queue log:\n%s", logs.String())
		}
	})
	return q, logs
}

// poll calls cond every 10 ms until it returns true, and fails the test
// after limit.
func poll(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// count runs a count(*) query.
func count(t testing.TB, c *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := c.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}
