package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jobdaemon/jobdaemon/internal/pgtest"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/pgqueue"
)

func cpu(pid uint32) time.Duration {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

func main() {
	srv, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	ctx := context.Background()
	srv.CreateDB(ctx, "x")
	dsn := srv.DSN("x")
	pgqueue.MigrateDSN(ctx, dsn, "jobdaemon")
	c, _ := pgx.Connect(ctx, dsn)
	c.Exec(ctx, "INSERT INTO jobdaemon.jobs (payload) SELECT '' FROM generate_series(1, 100000)")
	c.Exec(ctx, "VACUUM ANALYZE jobdaemon.jobs")
	pid := c.PgConn().PID()
	for round := 0; round < 6; round++ {
		c0 := cpu(pid)
		t0 := time.Now()
		for i := 0; i < 1000; i++ {
			rows, _ := c.Query(ctx, "SELECT id FROM jobdaemon.claim('default', 16, 'me', 60000000, 1, 1000000)")
			for rows.Next() {
			}
		}
		fmt.Printf("after %6d claimed: %4.0f µs cpu per claim of 16, wall %4.0f\n", round*16000, float64((cpu(pid)-c0).Microseconds())/1000, float64(time.Since(t0).Microseconds())/1000)
	}
	rows, _ := c.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS) SELECT a.id FROM jobdaemon.jobs a
        WHERE a.state = 'available' AND a.queue = 'default' AND a.run_at <= now()
        ORDER BY a.priority, a.run_at, a.id LIMIT 16`)
	for rows.Next() {
		var l string
		rows.Scan(&l)
		fmt.Println(l)
	}
	var p int
	var r time.Time
	var id int64
	c.QueryRow(ctx, "SELECT priority, run_at, id FROM jobdaemon.jobs WHERE state = 'running' ORDER BY priority DESC, run_at DESC, id DESC LIMIT 1").Scan(&p, &r, &id)
	rows, _ = c.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS) SELECT a.id FROM jobdaemon.jobs a
        WHERE a.state = 'available' AND a.queue = 'default' AND a.run_at <= now()
        AND (a.priority, a.run_at, a.id) > ($1, $2, $3)
        ORDER BY a.priority, a.run_at, a.id LIMIT 16`, p, r, id)
	for rows.Next() {
		var l string
		rows.Scan(&l)
		fmt.Println(l)
	}
}
