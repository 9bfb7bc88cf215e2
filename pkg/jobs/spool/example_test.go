package spool_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/spool"
)

// A job's way through the spool, as the dispatcher drives it; jobs.Run
// does the same with a real command in between.
func Example() {
	dir, err := os.MkdirTemp("", "spool-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	now := func() time.Time { return time.Date(2025, 1, 2, 15, 4, 5, 0, time.UTC) }
	s, err := spool.Open(spool.Options{Dir: dir, MaxAttempts: 3, Backoff: 10 * time.Second, Now: now})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	id, err := s.Submit("report.csv", strings.NewReader("a,b\n1,2\n"))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	job, err := s.NextJob(ctx, 0)
	if err != nil || job == nil {
		log.Fatal(job, err)
	}
	fmt.Println(id, job.ID, job.Attempt, s.Path(job) == filepath.Join(dir, "running", id))

	err = s.Done(ctx, job, jobs.Result{Duration: 1500 * time.Millisecond, Output: []byte("2 rows\n")})
	if err != nil {
		log.Fatal(err)
	}
	rec, err := os.ReadFile(filepath.Join(dir, "done", "report.csv.result.json"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(rec))
	// Output:
	// report.csv report.csv 1 true
	// {
	//   "id": "report.csv",
	//   "file": "report.csv",
	//   "attempts": 1,
	//   "outcome": "ok",
	//   "exit_code": 0,
	//   "signal": "",
	//   "timed_out": false,
	//   "duration_seconds": 1.5,
	//   "user_cpu_seconds": 0,
	//   "sys_cpu_seconds": 0,
	//   "max_rss_bytes": 0,
	//   "usage_of": "job",
	//   "error": "",
	//   "output_tail": "2 rows\n",
	//   "output_truncated": false,
	//   "finished_at": "2025-01-02T15:04:05Z"
	// }
}
