package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// spoolCmd queues N jobs, runs them with run --drain, and prints
//
//	jobs=N seconds=S rate=R/s cpu_us_per_job=C
//
// S is from the first job's start to the last job's filing, by their
// records (the daemon's own start-up is left out, as the C loop has
// none); C is the CPU time of the daemon's threads over its whole run,
// less that of a run with an empty spool when -base is given (start-up
// and exit), per job.
func spoolCmd(args []string) error {
	fs := flag.NewFlagSet("spool", flag.ExitOnError)
	var s setup
	s.flags(fs)
	fs.IntVar(&s.children, "m", 2, "max_children")
	fs.StringVar(&s.cgroups, "cgroups", "", `[pool] cgroups ("" keeps the default)`)
	cmd := fs.String("cmd", "/bin/true", "the job's command")
	n := fs.Int("n", 2000, "jobs")
	base := fs.Bool("base", true, "subtract the CPU time of a run with an empty spool")
	massDelete := fs.Int("massdelete", 0, "create and delete this many files in done/ just before the run")
	settle := fs.Bool("settle", false, "with -massdelete: sync(2) after the delete, so that its writeback is over before the run")
	profile := fs.String("cpuprofile", "", "have a -tags benchprofile binary write its CPU profile here")
	fs.Parse(args)
	if s.spool == "" || s.work == "" {
		return fmt.Errorf("-dir and -work are required")
	}
	s.command = []string{*cmd}
	s.attempts = 1
	var baseCPU time.Duration
	if *base {
		cpu, _, err := drain(&s, 0, 0, false, "")
		if err != nil {
			return err
		}
		baseCPU = cpu
	}
	cpu, span, err := drain(&s, *n, *massDelete, *settle, *profile)
	if err != nil {
		return err
	}
	fmt.Printf("jobs=%d seconds=%.3f rate=%.0f/s cpu_us_per_job=%.1f\n", *n, span.Seconds(),
		float64(*n)/span.Seconds(), float64((cpu-baseCPU).Microseconds())/float64(*n))
	return nil
}

// drain runs n queued jobs with run --drain and returns the daemon's CPU
// time and the span of the jobs.
func drain(s *setup, n, massDelete int, settle bool, profile string) (time.Duration, time.Duration, error) {
	cfg, err := s.prepare()
	if err != nil {
		return 0, 0, err
	}
	if err := queue(s.spool, "job", n); err != nil {
		return 0, 0, err
	}
	if massDelete > 0 {
		if err := createDelete(filepath.Join(s.spool, "done"), massDelete); err != nil {
			return 0, 0, err
		}
		if settle {
			syscall.Sync()
		}
	}
	var env []string
	if profile != "" {
		env = append(env, "JOBDAEMON_CPUPROFILE="+profile)
	}
	d, err := s.start(cfg, env, "run", "--drain")
	if err != nil {
		return 0, 0, err
	}
	if err := d.exited(); err != nil {
		return 0, 0, err
	}
	cpu, cpuErr := selfCPU(d.pid())
	if err := d.wait(); err != nil {
		return 0, 0, err
	}
	if cpuErr != nil {
		return 0, 0, cpuErr
	}
	if n == 0 {
		return cpu, 0, nil
	}
	span, err := recordSpan(filepath.Join(s.spool, "done"), n)
	return cpu, span, err
}

// createDelete creates n files in dir, then deletes them: what a cron job
// that cleans done/ does, and the state ext4 is in right after it.
func createDelete(dir string, n int) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	names := make([]string, n)
	for i := range names {
		names[i] = filepath.Join(dir, fmt.Sprintf("old-%07d.result.json", i))
		if err := os.WriteFile(names[i], []byte("{}\n"), 0o640); err != nil {
			return err
		}
	}
	for _, name := range names {
		if err := os.Remove(name); err != nil {
			return err
		}
	}
	return nil
}

// record is what recordSpan reads of a job's record.
type record struct {
	Outcome    string    `json:"outcome"`
	Duration   float64   `json:"duration_seconds"`
	FinishedAt time.Time `json:"finished_at"`
}

// recordSpan checks that done/ holds n successful jobs and returns the
// time from the first one's start to the last one's filing.
func recordSpan(done string, n int) (time.Duration, error) {
	names, err := filepath.Glob(filepath.Join(done, "*.result.json"))
	if err != nil {
		return 0, err
	}
	if len(names) != n {
		return 0, fmt.Errorf("%d records in %s, want %d", len(names), done, n)
	}
	var first, last time.Time
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			return 0, err
		}
		var r record
		if err := json.Unmarshal(b, &r); err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		if r.Outcome != "ok" {
			return 0, fmt.Errorf("%s: %s", strings.TrimSuffix(filepath.Base(name), ".result.json"), r.Outcome)
		}
		start := r.FinishedAt.Add(-time.Duration(r.Duration * float64(time.Second)))
		if first.IsZero() || start.Before(first) {
			first = start
		}
		if r.FinishedAt.After(last) {
			last = r.FinishedAt
		}
	}
	return last.Sub(first), nil
}
