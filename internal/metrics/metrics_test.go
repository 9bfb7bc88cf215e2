package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

func TestReason(t *testing.T) {
	for _, tc := range []struct {
		res  jobs.Result
		want string
	}{
		{jobs.Result{}, ""},
		{jobs.Result{ExitCode: 3}, "exit"},
		{jobs.Result{ExitCode: -1, Signal: syscall.SIGKILL}, "signal"},
		{jobs.Result{ExitCode: -1, Signal: syscall.SIGTERM, TimedOut: true}, "timeout"},
		{jobs.Result{ExitCode: -1, Error: "no such file"}, "error"},
		{jobs.Result{ExitCode: -1, Signal: syscall.SIGTERM, Interrupted: true}, "interrupted"},
	} {
		if got := Reason(tc.res); got != tc.want {
			t.Errorf("Reason(%+v) = %q, want %q", tc.res, got, tc.want)
		}
	}
}

// What the observer and the status say shows up in the scrape.
func TestScrape(t *testing.T) {
	st := jobs.Status{State: jobs.StateRunning, MaxChildren: 8, Busy: 3, Queued: 120, Generation: 2,
		Reloads: 1, ReloadsFailed: 4, LastReloadFailed: true, Saturated: 1500 * time.Millisecond, OldestQueued: 90 * time.Second}
	m := New(func() jobs.Status { return st }, "v1.2.3")
	job := &jobs.Job{ID: "a"}
	m.JobStarted(job, 2*time.Millisecond)
	m.JobStarted(job, 3*time.Millisecond)
	m.JobFinished(job, jobs.Result{Duration: time.Second, UserCPU: 250 * time.Millisecond, SysCPU: 50 * time.Millisecond}, jobs.Completed)
	failed := jobs.Result{ExitCode: 3, Duration: 2 * time.Second}
	m.JobFinished(job, failed, jobs.Retrying)
	m.JobStarted(job, time.Millisecond)
	m.JobFinished(job, failed, jobs.Failed)

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	text := string(body)
	for _, want := range []string{
		"jobdaemon_runs_started_total 3",
		"jobdaemon_runs_succeeded_total 1",
		`jobdaemon_runs_failed_total{reason="exit"} 2`,
		`jobdaemon_runs_failed_total{reason="timeout"} 0`,
		"jobdaemon_jobs_completed_total 1",
		`jobdaemon_jobs_retried_total{reason="exit"} 1`,
		"jobdaemon_jobs_failed_total 1",
		`jobdaemon_run_duration_seconds_count{outcome="failed"} 2`,
		`jobdaemon_run_duration_seconds_sum{outcome="succeeded"} 1`,
		"jobdaemon_dispatch_latency_seconds_count 3",
		"jobdaemon_dispatch_latency_seconds_sum 0.006",
		`jobdaemon_run_cpu_seconds_total{mode="user"} 0.25`,
		`jobdaemon_run_cpu_seconds_total{mode="system"} 0.05`,
		"jobdaemon_config_last_reload_successful 0",
		"jobdaemon_queue_oldest_age_seconds 90",
		"jobdaemon_children_running 3",
		"jobdaemon_children_max 8",
		"jobdaemon_queue_depth 120",
		"jobdaemon_saturated_seconds_total 1.5",
		`jobdaemon_reloads_total{result="ok"} 1`,
		`jobdaemon_reloads_total{result="failed"} 4`,
		"jobdaemon_config_generation 2",
		"jobdaemon_up 1",
	} {
		if !strings.Contains(text, "\n"+want+"\n") {
			t.Errorf("scrape lacks the line %q", want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(text, "\n"+name+" ") {
			t.Errorf("scrape lacks %s", name)
		}
	}
	st.Queued = -1
	rec = httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if strings.Contains(rec.Body.String(), "jobdaemon_queue_depth ") {
		t.Error("queue depth reported for a source that does not know it")
	}
	if !strings.Contains(text, `jobdaemon_build_info{goversion="go`) || !strings.Contains(text, `version="v1.2.3"} 1`) {
		t.Error("scrape lacks jobdaemon_build_info with the version")
	}
}

// The source's counts by state become one gauge each; a count that fails
// leaves the gauge out, and the rest of the scrape stands.
func TestCountJobs(t *testing.T) {
	m := New(func() jobs.Status { return jobs.Status{Queued: -1, OldestQueued: -1} }, "dev")
	var fail bool
	m.CountJobs(func() (map[string]int64, error) {
		if fail {
			return nil, io.ErrUnexpectedEOF
		}
		return map[string]int64{"available": 7, "running": 2, "failed": 1}, nil
	})
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != 200 {
			t.Fatalf("scrape: %d\n%s", rec.Code, rec.Body)
		}
		return rec.Body.String()
	}
	text := scrape()
	for _, want := range []string{`jobdaemon_source_jobs{state="available"} 7`, `jobdaemon_source_jobs{state="running"} 2`, `jobdaemon_source_jobs{state="failed"} 1`} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	fail = true
	if text := scrape(); strings.Contains(text, "jobdaemon_source_jobs{") || !strings.Contains(text, "jobdaemon_children_max") {
		t.Errorf("after a failed count:\n%s", text)
	}
}
