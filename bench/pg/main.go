// Command pg measures the PostgreSQL job source: daemons in Go worker
// mode (jobs.Options.JobsPerChild large) sharing one queue of trivial jobs
// on one local PostgreSQL, for jobs/s together and the latency from a
// job's claim to its start in a worker; then, in the same run and on the
// same server, a bare pgx loop per daemon that claims batches of as many
// jobs as a daemon has slots with FOR UPDATE SKIP LOCKED and completes
// them, running nothing: the database's own ceiling for this work. The
// ratio of the two is the cost of everything around the queue.
//
// Usage: pg [-jobs N] [-daemons D] [-children C] [-fsync=false] [-dsn DSN]
//
// Without -dsn it starts a throwaway server (internal/pgtest). Each
// measurement starts from an emptied, vacuumed table. It prints, besides
// rates and latencies, the CPU time per job of the server, of the
// daemons' dispatchers and of their workers, read from /proc, and how
// many jobs each claim took. PGBENCH_STATEMENTS=1 adds the statements the
// server ran (pg_stat_statements); PGBENCH_CPUPROFILE=FILE writes a CPU
// profile of each daemon to FILE.PID.
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jobdaemon/jobdaemon/internal/pgtest"
	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/pgqueue"
)

func main() {
	if jobs.IsChild() {
		_ = jobs.Run(context.Background(), &app{}, jobs.Options{}) // a worker: runs jobs, exits
	}
	if len(os.Args) > 1 && os.Args[1] == "daemon" {
		os.Exit(daemonMain(os.Args[2:]))
	}
	os.Exit(benchMain())
}

// stopServer stops the throwaway server, if this process started one.
var stopServer = func() {}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pg: "+format+"\n", args...)
	stopServer()
	os.Exit(1)
}

func benchMain() int {
	n := flag.Int("jobs", 100000, "jobs per measurement")
	daemons := flag.Int("daemons", 2, "daemon processes (and bare loops)")
	children := flag.Int("children", 16, "worker slots per daemon (and batch size of the bare loops)")
	fsync := flag.Bool("fsync", true, "fsync and synchronous_commit on the throwaway server")
	dsn := flag.String("dsn", "", "an existing database (default: start a throwaway server)")
	flag.Parse()
	ctx := context.Background()
	if *dsn == "" {
		opts := pgtest.Options{Fsync: *fsync}
		if os.Getenv("PGBENCH_STATEMENTS") != "" {
			opts.Settings = map[string]string{"shared_preload_libraries": "pg_stat_statements",
				"pg_stat_statements.track": "all", "pg_stat_statements.track_planning": "on"}
		}
		srv, err := pgtest.Start(opts)
		if err != nil {
			fail("%v", err)
		}
		stopServer = func() { _ = srv.Close() }
		defer stopServer()
		if err := srv.CreateDB(ctx, "bench"); err != nil {
			fail("%v", err)
		}
		*dsn = srv.DSN("bench")
	}
	const schema = "jobdaemon_bench"
	c, err := pgx.Connect(ctx, *dsn)
	if err != nil {
		fail("%v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
		fail("%v", err)
	}
	if err := pgqueue.Migrate(ctx, c, schema); err != nil {
		fail("%v", err)
	}
	if os.Getenv("PGBENCH_STATEMENTS") != "" {
		defer topStatements(ctx, c)
	}
	var version string
	_ = c.QueryRow(ctx, "SELECT current_setting('server_version') || ', fsync ' || current_setting('fsync') || ', synchronous_commit ' || current_setting('synchronous_commit')").Scan(&version)
	fmt.Printf("PostgreSQL %s; %d jobs, %d daemons x %d workers\n", version, *n, *daemons, *children)

	pm := postmaster(ctx, c)
	vacuum(ctx, c, schema)
	r := runDaemons(ctx, c, *dsn, schema, *n, *daemons, *children, pm)
	p50, p99 := percentile(r.lat, 0.50), percentile(r.lat, 0.99)
	rate := float64(*n) / r.secs
	fmt.Printf("pgqueue jobs=%d seconds=%.3f rate=%.0f/s claim_to_start_p50=%v p99=%v claims=%d (%.1f jobs each) cpu_us_per_job: postgres=%.0f daemons=%.0f (dispatchers %.0f, workers %.0f)\n",
		*n, r.secs, rate, p50, p99, r.claims, float64(*n)/float64(r.claims), perJob(r.dbCPU, *n), perJob(r.appCPU, *n),
		perJob(r.dispCPU, *n), perJob(r.appCPU-r.dispCPU, *n))

	vacuum(ctx, c, schema)
	b := runBare(ctx, c, *dsn, schema, *n, *daemons, *children, pm)
	brate := float64(*n) / b.secs
	fmt.Printf("bare    jobs=%d seconds=%.3f rate=%.0f/s claims=%d (%.1f jobs each) cpu_us_per_job: postgres=%.0f loop=%.0f\n",
		*n, b.secs, brate, b.claims, float64(*n)/float64(b.claims), perJob(b.dbCPU, *n), perJob(b.appCPU, *n))
	fmt.Printf("ratio=%.2f\n", rate/brate)
	return 0
}

// result is one measurement.
type result struct {
	secs          float64
	lat           []time.Duration
	claims        int
	dbCPU, appCPU time.Duration // CPU time of the server, and of the daemons or the loop
	dispCPU       time.Duration // of the daemon processes alone, without their workers
}

func perJob(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(n) }

// postmaster returns the pid of the server's postmaster when it runs on
// this machine, or 0.
func postmaster(ctx context.Context, c *pgx.Conn) int {
	var backend int
	if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", backend))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	var ppid int
	fmt.Sscan(f[1], &ppid)
	return ppid
}

// topStatements prints what pg_stat_statements saw, the costliest first.
func topStatements(ctx context.Context, c *pgx.Conn) {
	if _, err := c.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		fmt.Fprintln(os.Stderr, "pg_stat_statements:", err)
		return
	}
	rows, _ := c.Query(ctx, `SELECT calls, rows, total_exec_time, total_plan_time,
		left(regexp_replace(query, '\s+', ' ', 'g'), 70)
		FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 8`)
	for rows.Next() {
		var calls, n int64
		var exec, plan float64
		var q string
		if err := rows.Scan(&calls, &n, &exec, &plan, &q); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return
		}
		fmt.Fprintf(os.Stderr, "%7d calls %7d rows %8.1f ms exec %6.1f ms plan  %s\n", calls, n, exec, plan, q)
	}
}

// vacuum empties the table and vacuums it, so that each measurement
// starts from the same state.
func vacuum(ctx context.Context, c *pgx.Conn, schema string) {
	t := pgx.Identifier{schema, "jobs"}.Sanitize()
	if _, err := c.Exec(ctx, "DELETE FROM "+t); err != nil {
		fail("%v", err)
	}
	if _, err := c.Exec(ctx, "VACUUM (ANALYZE) "+t); err != nil {
		fail("%v", err)
	}
	if _, err := c.Exec(ctx, "CHECKPOINT"); err != nil {
		fail("%v", err)
	}
}

// enqueue inserts n trivial jobs in one statement and returns the
// database's clock after the commit.
func enqueue(ctx context.Context, c *pgx.Conn, schema, queue string, n int) time.Time {
	_, err := c.Exec(ctx, "INSERT INTO "+schema+".jobs (queue, payload) SELECT $1, '' FROM generate_series(1, $2)", queue, n)
	if err != nil {
		fail("enqueue: %v", err)
	}
	var t0 time.Time
	if err := c.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&t0); err != nil {
		fail("%v", err)
	}
	return t0
}

// waitDone waits until no job of queue is left, and returns the time of
// the last completion, by the database's clock.
func waitDone(ctx context.Context, c *pgx.Conn, schema, queue string) time.Time {
	for {
		var left bool
		err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+schema+".jobs WHERE queue = $1 AND state = 'available') OR "+
			"EXISTS (SELECT 1 FROM "+schema+".jobs WHERE queue = $1 AND state = 'running')", queue).Scan(&left)
		if err != nil {
			fail("%v", err)
		}
		if !left {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var t1 time.Time
	if err := c.QueryRow(ctx, "SELECT max(finished_at) FROM "+schema+".jobs WHERE queue = $1", queue).Scan(&t1); err != nil {
		fail("%v", err)
	}
	return t1
}

// runDaemons starts the daemons, waits until they are idle, enqueues the
// jobs and waits for them, and returns the seconds it took and every
// job's claim-to-start latency.
func runDaemons(ctx context.Context, c *pgx.Conn, dsn, schema string, n, daemons, children, pm int) result {
	dir, err := os.MkdirTemp("", "pgbench-")
	if err != nil {
		fail("%v", err)
	}
	defer os.RemoveAll(dir)
	var cmds []*exec.Cmd
	for i := range daemons {
		cmd := exec.Command("/proc/self/exe", "daemon", dsn, schema, fmt.Sprint(children), filepath.Join(dir, fmt.Sprint(i)))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			fail("%v", err)
		}
		if err := cmd.Start(); err != nil {
			fail("%v", err)
		}
		buf := make([]byte, 6)
		if _, err := out.Read(buf); err != nil || string(buf) != "ready\n" {
			fail("daemon %d not ready: %q %v", i, buf, err)
		}
		cmds = append(cmds, cmd)
	}
	time.Sleep(500 * time.Millisecond) // daemons idle
	var pids []int
	for _, cmd := range cmds {
		pids = append(pids, cmd.Process.Pid)
	}
	db0, app0, disp0 := cpuOf(pm), cpuOf(pids...), ownCPU(pids...)
	t0 := enqueue(ctx, c, schema, "default", n)
	t1 := waitDone(ctx, c, schema, "default")
	r := result{secs: t1.Sub(t0).Seconds(), dbCPU: cpuOf(pm) - db0, appCPU: cpuOf(pids...) - app0,
		dispCPU: ownCPU(pids...) - disp0}
	for i, cmd := range cmds {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			fail("daemon %d: %v", i, err)
		}
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprint(i)))
		if err != nil {
			fail("%v", err)
		}
		r.claims += int(binary.LittleEndian.Uint64(b))
		for j := 8; j+8 <= len(b); j += 8 {
			r.lat = append(r.lat, time.Duration(binary.LittleEndian.Uint64(b[j:])))
		}
	}
	if len(r.lat) != n {
		fail("%d latencies for %d jobs", len(r.lat), n)
	}
	return r
}

// runBare runs the bare loops: each claims up to batch jobs in one
// statement, as a daemon with batch free slots does, and completes them
// in another, with no process around.
func runBare(ctx context.Context, c *pgx.Conn, dsn, schema string, n, loops, batch, pm int) result {
	t := pgx.Identifier{schema, "jobs"}.Sanitize()
	claim := `WITH c AS (SELECT id FROM ` + t + ` WHERE state = 'available' AND queue = 'bare' AND run_at <= now()
		ORDER BY priority, run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
		UPDATE ` + t + ` j SET state = 'running', attempt = j.attempt + 1, lease_owner = $2,
		lease_until = now() + interval '1 minute' FROM c WHERE j.id = c.id RETURNING j.id, j.payload`
	done := `UPDATE ` + t + ` SET state = 'completed', finished_at = now(), lease_owner = NULL, lease_until = NULL,
		result = '{}' WHERE id = ANY($1) AND lease_owner = $2 AND state = 'running'`
	conns := make([]*pgx.Conn, loops)
	for i := range conns {
		var err error
		if conns[i], err = pgx.Connect(ctx, dsn); err != nil {
			fail("%v", err)
		}
		defer conns[i].Close(ctx)
	}
	t0 := enqueue(ctx, c, schema, "bare", n)
	db0, app0 := cpuOf(pm), selfCPU()
	var claims atomic.Int64
	var wg sync.WaitGroup
	for i, conn := range conns {
		owner := fmt.Sprint("bare-", i)
		wg.Go(func() {
			for {
				rows, _ := conn.Query(ctx, claim, batch, owner)
				ids, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (int64, error) {
					var id int64
					var payload []byte
					return id, r.Scan(&id, &payload)
				})
				if err != nil {
					fail("bare claim: %v", err)
				}
				if len(ids) == 0 {
					return
				}
				claims.Add(1)
				if _, err := conn.Exec(ctx, done, ids, owner); err != nil {
					fail("bare done: %v", err)
				}
			}
		})
	}
	wg.Wait()
	r := result{dbCPU: cpuOf(pm) - db0, appCPU: selfCPU() - app0, claims: int(claims.Load())}
	t1 := waitDone(ctx, c, schema, "bare")
	r.secs = t1.Sub(t0).Seconds()
	return r
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(int(p*float64(len(s))), len(s)-1)].Round(time.Microsecond)
}

// app is the daemon: trivial jobs, and the claim-to-start latency of
// each, from Options.OnClaim to jobs.Observer.JobStarted (both on the
// dispatcher goroutine).
type app struct {
	*pgqueue.Queue
	claimed map[string]time.Time
	lat     []time.Duration
	claims  int
}

func (a *app) RunJob(ctx context.Context, job *jobs.Job) error { return nil }

func (a *app) onClaim(batch []*jobs.Job) {
	a.claims++
	now := time.Now()
	for _, j := range batch {
		a.claimed[j.ID] = now
	}
}

func (a *app) JobStarted(job *jobs.Job, _ time.Duration) {
	if at, ok := a.claimed[job.ID]; ok {
		a.lat = append(a.lat, time.Since(at))
		delete(a.claimed, job.ID)
	}
}

func (a *app) JobFinished(*jobs.Job, jobs.Result, jobs.Verdict) {}

// daemonMain is one daemon: daemon DSN SCHEMA CHILDREN LATENCY-FILE. It
// prints "ready" once it asks for jobs, and on SIGTERM stops, then writes
// the number of its claims, then its latencies in nanoseconds, as
// little-endian uint64s.
func daemonMain(args []string) int {
	if len(args) != 4 {
		fail("daemon DSN SCHEMA CHILDREN FILE")
	}
	var children int
	fmt.Sscan(args[2], &children)
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	if p := os.Getenv("PGBENCH_CPUPROFILE"); p != "" { // go tool pprof
		f, err := os.Create(fmt.Sprintf("%s.%d", p, os.Getpid()))
		if err != nil {
			fail("%v", err)
		}
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a := &app{claimed: map[string]time.Time{}}
	q, err := pgqueue.Open(ctx, pgqueue.Options{DSN: args[0], Schema: args[1], Logger: log, OnClaim: a.onClaim})
	if err != nil {
		fail("%v", err)
	}
	a.Queue = q
	var once sync.Once
	err = jobs.Run(ctx, a, jobs.Options{
		MaxChildren:  children,
		JobsPerChild: 1 << 30,
		NoSignals:    true,
		Logger:       log,
		Observer:     a,
		OnReady:      func() { once.Do(func() { fmt.Println("ready") }) },
	})
	if cerr := q.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fail("daemon: %v", err)
	}
	var out strings.Builder
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, uint64(a.claims))
	out.Write(b)
	for _, d := range a.lat {
		binary.LittleEndian.PutUint64(b, uint64(d))
		out.Write(b)
	}
	if err := os.WriteFile(args[3], []byte(out.String()), 0o600); err != nil {
		fail("%v", err)
	}
	return 0
}

// cpuOf returns the CPU time (user + system) so far of the processes
// that pid is an ancestor of, pid included, from /proc.
func cpuOf(pids ...int) time.Duration {
	parent := map[int]int{}
	ticks := map[int]int64{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The fields after the command, which is in parentheses.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		if len(f) < 13 {
			continue
		}
		var ppid int
		var ut, st int64
		fmt.Sscan(f[1], &ppid)
		fmt.Sscan(f[11], &ut)
		fmt.Sscan(f[12], &st)
		parent[pid], ticks[pid] = ppid, ut+st
	}
	roots := map[int]bool{}
	for _, p := range pids {
		roots[p] = true
	}
	var total int64
	for pid, t := range ticks {
		for p := pid; p > 1; p = parent[p] {
			if roots[p] {
				total += t
				break
			}
		}
	}
	return time.Duration(total) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// ownCPU returns the CPU time so far of the processes pids alone.
func ownCPU(pids ...int) time.Duration {
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		var ut, st int64
		fmt.Sscan(f[11], &ut)
		fmt.Sscan(f[12], &st)
		total += ut + st
	}
	return time.Duration(total) * 10 * time.Millisecond
}

// selfCPU is this process's own CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
