package pgqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// ErrClosed is returned by the methods of a Queue after Close.
var ErrClosed = errors.New("queue is closed")

// Timeouts of the queue's own statements. The dispatcher's hooks must
// return quickly: a claim that takes longer than claimTimeout fails, and
// the dispatcher backs off. The background statements have more time.
const (
	claimTimeout = 2 * time.Second
	opTimeout    = 10 * time.Second
	closeTimeout = 10 * time.Second
	maxBatch     = 1000 // jobs claimed, results written, rows pruned, at once
)

// Queue is a job source over a PostgreSQL table: a jobs.Source, a
// jobs.Acker, a jobs.Waker and a jobs.Depther. NextJob and Done must be
// called from one goroutine at a time, as jobs.Daemon does; the other
// methods are safe from any goroutine. Close it after the daemon's Run
// has returned.
type Queue struct {
	opts    Options
	pool    *pgxpool.Pool
	listenC *pgx.ConnConfig // nil with NoListen
	where   string          // the server, for messages
	owner   string          // lease_owner of this queue's claims
	log     *slog.Logger
	retry   jobs.Retry
	sql     statements

	wake chan struct{} // to the dispatcher: jobs may be ready
	kick chan struct{} // to the writer: results to write, or a database to probe
	quit chan struct{} // closed by Close
	bg   context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	rechecking atomic.Bool   // a wake-up after a NOTIFY is due
	fromStart  atomic.Bool   // the next claim looks from the start of the queue
	listenPid  atomic.Uint32 // server pid of the LISTEN session

	after *position // where the next claim starts; NextJob's alone

	mu        sync.Mutex
	closed    bool
	held      map[int64]*claim // claimed and not yet written back
	buf       []*claim         // claimed, not yet handed out; oldest first
	pending   []*completion    // to write, in order
	writing   bool             // a batch of pending is being written
	given     uint64           // results given to Done (and releases)
	written   uint64           // of those, written or given up
	writtenCh chan struct{}    // closed and replaced when written grows
	downErr   error            // why the database is unavailable, or nil
	downSince time.Time

	statsMu sync.Mutex
	stats   Stats
	statsAt time.Time
}

// position is a job's place in the queue's order.
type position struct {
	priority int
	runAt    time.Time
	id       int64
}

// claim is a job this queue has claimed.
type claim struct {
	id          int64
	attempt     int
	maxAttempts int
	job         *jobs.Job
	claimedAt   time.Time
	finished    bool // Done was called (or it is being released)
	lost        bool // a renewal found the lease gone
}

// Open connects to the database and returns the queue, ready for a
// daemon. It checks that the schema exists at SchemaVersion and starts
// the queue's background work: writing results, renewing leases, the
// LISTEN connection, polling, rescuing expired leases and pruning.
//
// While the server cannot be reached (refused, timed out, shutting down
// or starting up, too many connections), Open logs an error naming the
// server and the reason, and tries again with backoff, from 100 ms up to
// 30 s, until ctx ends; it then returns an error wrapping ctx's and the
// last reason. Errors that no retry fixes are returned at once: refused
// credentials (wrapping ErrAuth), a database that does not exist, a
// schema that was not migrated (ErrNotMigrated) or is of another version
// (ErrSchemaVersion), a bad DSN or option. No error or log record shows
// the DSN's password.
func Open(ctx context.Context, opts Options) (*Queue, error) {
	if err := opts.withDefaults(); err != nil {
		return nil, fmt.Errorf("open job queue: %w", err)
	}
	cfg, err := parseDSN(opts.DSN)
	if err != nil {
		return nil, fmt.Errorf("open job queue: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	if !strings.Contains(opts.DSN, "pool_max_conns") {
		// The dispatcher, the writer, the maintenance and a status
		// request at once; pgxpool's default grows with the CPUs.
		cfg.MaxConns = 4
	}
	q := &Queue{
		opts:      opts,
		where:     where(cfg.ConnConfig),
		owner:     leaseOwner(),
		log:       opts.Logger.With("queue", opts.Queue),
		retry:     jobs.Retry{MaxAttempts: opts.MaxAttempts, Base: opts.Backoff, Jitter: 0.2},
		sql:       newStatements(opts.Schema),
		wake:      make(chan struct{}, 1),
		kick:      make(chan struct{}, 1),
		quit:      make(chan struct{}),
		held:      make(map[int64]*claim),
		writtenCh: make(chan struct{}),
	}
	if !opts.NoListen {
		lc := cfg.ConnConfig.Copy()
		if opts.ListenDSN != "" {
			c, err := parseDSN(opts.ListenDSN)
			if err != nil {
				return nil, fmt.Errorf("open job queue: listen DSN: %w", err)
			}
			lc = c.ConnConfig
		}
		if lc.ConnectTimeout == 0 {
			lc.ConnectTimeout = 5 * time.Second
		}
		q.listenC = lc
	}
	q.pool, err = pgxpool.NewWithConfig(ctx, cfg) // connects lazily
	if err != nil {
		return nil, fmt.Errorf("open job queue: %w", err)
	}
	if err := q.connect(ctx, cfg.ConnConfig); err != nil {
		q.pool.Close()
		return nil, fmt.Errorf("open job queue: %w", err)
	}
	q.log.Info("job queue open", "server", q.where, "schema", opts.Schema, "lease_owner", q.owner)
	q.bg, q.stop = context.WithCancel(context.Background())
	q.wg.Add(3)
	go q.writer()
	go q.maintain()
	go q.listen()
	return q, nil
}

// connect waits until the database answers, and checks its schema.
func (q *Queue) connect(ctx context.Context, cc *pgx.ConnConfig) error {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := q.pool.AcquireFunc(ctx, func(c *pgxpool.Conn) error {
			return checkVersion(ctx, c, q.opts.Schema, cc.Database)
		})
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrNotMigrated) || errors.Is(err, ErrSchemaVersion) {
			return err
		}
		err = connectError(cc, err)
		if permanent(err) || !unavailable(err) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (after %d attempts; last: %w)", ctx.Err(), attempt, err)
		}
		q.log.Error("database unreachable; retrying", "server", q.where, "err", err,
			"attempt", attempt, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (after %d attempts; last: %w)", ctx.Err(), attempt, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// Owner returns the lease owner of this queue's claims, as stored in
// lease_owner and in the result of the jobs it ran.
func (q *Queue) Owner() string { return q.owner }

// Wake returns the channel on which the queue tells the dispatcher that
// jobs may be ready: on a NOTIFY for this queue, every PollInterval, when
// the database is reachable again, and when the LISTEN connection has
// been made again.
func (q *Queue) Wake() <-chan struct{} { return q.wake }

func (q *Queue) wakeUp() {
	// Whatever woke us may sort before the last job claimed.
	q.fromStart.Store(true)
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *Queue) kickWriter() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// setDown notes that the database is unavailable: NextJob claims
// nothing until the writer has reached it again.
func (q *Queue) setDown(err error) {
	q.mu.Lock()
	first := q.downErr == nil
	if first {
		q.downSince = time.Now()
	}
	q.downErr = err
	q.mu.Unlock()
	if first {
		q.log.Error("database unavailable: no new jobs are claimed; running jobs go on and their results are kept until it is back",
			"server", q.where, "err", err)
		q.kickWriter()
	}
}

// setUp notes that the database answers again.
func (q *Queue) setUp() {
	q.mu.Lock()
	was, since := q.downErr, q.downSince
	q.downErr = nil
	q.mu.Unlock()
	if was != nil {
		q.log.Info("database reachable again", "server", q.where, "down_for", time.Since(since).Round(time.Millisecond))
		q.wakeUp()
	}
}

func (q *Queue) down() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.downErr == nil {
		return nil
	}
	return fmt.Errorf("database unavailable since %s: %w", q.downSince.Format(time.TimeOnly), q.downErr)
}

// Flush waits until every result given to Done so far has been written
// to the database (or given up: a lost lease), or ctx ends. It returns
// ctx's error then, nil otherwise.
func (q *Queue) Flush(ctx context.Context) error {
	q.mu.Lock()
	target := q.given
	for q.written < target {
		ch := q.writtenCh
		q.mu.Unlock()
		q.kickWriter()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		q.mu.Lock()
	}
	q.mu.Unlock()
	return nil
}

// Close stops the queue: it puts the jobs it claimed but did not hand
// out back in the queue, writes the results it still holds (waiting up
// to 10 s for an unreachable database), stops renewing its leases and
// listening, and disconnects. Jobs handed out whose results Done has not
// received keep their lease until it expires, and are then rescued by
// any daemon: call Close after the daemon's Run has returned. Close
// returns an error when results could not be written; those jobs run
// again elsewhere once their leases expire. Later calls return the same.
func (q *Queue) Close() error {
	q.closeOnce.Do(func() {
		q.mu.Lock()
		q.closed = true
		q.releaseLocked(q.buf, "queue closed")
		q.buf = nil
		q.mu.Unlock()
		close(q.quit)
		q.stop() // ends the LISTEN connection
		q.wg.Wait()
		q.mu.Lock()
		left, running := len(q.pending), 0
		for _, c := range q.held {
			if !c.finished {
				running++
			}
		}
		q.mu.Unlock()
		if running > 0 {
			q.log.Warn("queue closed with jobs still running: they are rescued once their leases expire", "jobs", running)
		}
		if left > 0 {
			q.closeErr = fmt.Errorf("close job queue: %d results not written (the jobs run again once their leases expire)", left)
			if err := q.down(); err != nil {
				q.closeErr = fmt.Errorf("%w: %w", q.closeErr, err)
			}
		}
		q.pool.Close()
	})
	return q.closeErr
}
