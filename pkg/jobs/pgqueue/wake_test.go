package pgqueue_test

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/pgqueue"
)

// claims records when each job was claimed, through Options.OnClaim.
type claims struct {
	mu      sync.Mutex
	at      map[string]time.Time
	batches []int
}

func (c *claims) onClaim(batch []*jobs.Job) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	for _, j := range batch {
		c.at[j.ID] = now
	}
	c.batches = append(c.batches, len(batch))
}

func (c *claims) get(id string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.at[id]
	return t, ok
}

// runDaemon runs a daemon over q in this process (its jobs in children,
// this test binary re-executed) until the test ends.
func runDaemon(t *testing.T, q *pgqueue.Queue, opts jobs.Options) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	opts.NoSignals = true
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	go func() { done <- jobs.Run(ctx, &app{q}, opts) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
}

// An idle daemon that never polls is woken by the NOTIFY of an enqueue;
// after its LISTEN session is killed, it listens again; and a job
// enqueued without any NOTIFY is found by polling.
func TestWakeUp(t *testing.T) {
	dsn := migrated(t)
	c := connect(t, dsn)
	ctx := context.Background()
	cl := &claims{at: map[string]time.Time{}}
	q, _ := openQueue(t, pgqueue.Options{DSN: dsn, PollInterval: time.Hour, OnClaim: cl.onClaim})
	runDaemon(t, q, jobs.Options{MaxChildren: 2, JobsPerChild: 100, IdleInterval: time.Hour})
	poll(t, 30*time.Second, "listening", func() bool { return q.ListenerPid() != 0 })

	// wake enqueues a job once the daemon is idle and returns how long it
	// took to claim it.
	wake := func(what string) time.Duration {
		t.Helper()
		time.Sleep(300 * time.Millisecond) // idle: past the NOTIFY debounce, deep in its backoff
		start := time.Now()
		id, err := pgqueue.Enqueue(ctx, c, "jobdaemon", pgqueue.NewJob{Payload: []byte("ok")})
		if err != nil {
			t.Fatal(err)
		}
		var at time.Time
		poll(t, 30*time.Second, what, func() bool {
			var ok bool
			at, ok = cl.get(stringID(id))
			return ok
		})
		return at.Sub(start)
	}
	var lat []time.Duration
	for range 7 {
		lat = append(lat, wake("a NOTIFY wakes the daemon"))
	}
	slices.Sort(lat)
	t.Logf("NOTIFY to claim, 7 enqueues: min %v, median %v, max %v", lat[0], lat[3], lat[6])
	// Without the NOTIFY, this daemon would wait an hour: a second is far
	// enough from both to be sure, and to not flake on a busy machine.
	if lat[3] > time.Second {
		t.Errorf("median NOTIFY-to-claim %v", lat[3])
	}

	// Kill the LISTEN session: the queue listens again.
	old := q.ListenerPid()
	if _, err := c.Exec(ctx, "SELECT pg_terminate_backend($1)", int64(old)); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, "listening again", func() bool { p := q.ListenerPid(); return p != 0 && p != old })
	if d := wake("a NOTIFY wakes the daemon after its LISTEN session was killed"); d > 5*time.Second {
		t.Errorf("NOTIFY-to-claim after a new LISTEN session: %v", d)
	}
}

// With NOTIFY lost (a row inserted with triggers off), polling finds the
// job.
func TestPollingWithoutNotify(t *testing.T) {
	dsn := migrated(t)
	c := connect(t, dsn)
	ctx := context.Background()
	cl := &claims{at: map[string]time.Time{}}
	q, _ := openQueue(t, pgqueue.Options{DSN: dsn, PollInterval: 300 * time.Millisecond, OnClaim: cl.onClaim})
	runDaemon(t, q, jobs.Options{MaxChildren: 1, IdleInterval: time.Hour})
	poll(t, 30*time.Second, "listening", func() bool { return q.ListenerPid() != 0 })
	time.Sleep(500 * time.Millisecond)
	// session_replication_role = replica: no trigger fires, no NOTIFY.
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var id int64
	if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, "INSERT INTO jobdaemon.jobs (payload) VALUES ('ok') RETURNING id").Scan(&id); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	poll(t, 30*time.Second, "polling finds the job", func() bool {
		_, ok := cl.get(stringID(id))
		return ok
	})
	t.Logf("found by polling after %v (poll interval 300ms)", time.Since(start).Round(time.Millisecond))
}

// A daemon claims as many jobs as it has free slots, in one statement,
// never more.
func TestBatchClaims(t *testing.T) {
	dsn := migrated(t)
	c := connect(t, dsn)
	cl := &claims{at: map[string]time.Time{}}
	q, _ := openQueue(t, pgqueue.Options{DSN: dsn, OnClaim: cl.onClaim})
	enqueueMany(t, c, 300, "sleep:20ms")
	runDaemon(t, q, jobs.Options{MaxChildren: 8, JobsPerChild: 1000})
	poll(t, 2*time.Minute, "all jobs completed", func() bool {
		return count(t, c, "SELECT count(*) FROM jobdaemon.jobs WHERE state = 'completed'") == 300
	})
	cl.mu.Lock()
	defer cl.mu.Unlock()
	biggest := slices.Max(cl.batches)
	if biggest > 8 {
		t.Errorf("a batch of %d jobs claimed with 8 slots", biggest)
	}
	if biggest < 2 {
		t.Errorf("claims were one at a time: %v", cl.batches)
	}
	if len(cl.at) != 300 {
		t.Errorf("%d jobs claimed, want 300", len(cl.at))
	}
	t.Logf("%d claims for 300 jobs, batch sizes up to %d", len(cl.batches), biggest)
}

func stringID(id int64) string { return strconv.FormatInt(id, 10) }
