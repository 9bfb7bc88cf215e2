package jobs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// requeueApp is a source of shell commands that puts a job back, as it
// was, when its result is NotStarted or Interrupted, as the spool does;
// it records every result with the time it came.
type requeueApp struct {
	mu      sync.Mutex
	queue   []*Job
	results []timedResult
	// command returns the job's program; "" runs /bin/sh -c PAYLOAD.
	command func(job *Job) (string, error)
	done    chan struct{} // closed at the first result that is not handed back
}

type timedResult struct {
	id  string
	res Result
	at  time.Time
}

func (a *requeueApp) NextJob(context.Context, int) (*Job, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.queue) == 0 {
		return nil, nil
	}
	j := a.queue[0]
	a.queue = a.queue[1:]
	return j, nil
}

func (a *requeueApp) Command(_ context.Context, job *Job) (*Spec, error) {
	prog := ""
	if a.command != nil {
		var err error
		if prog, err = a.command(job); err != nil {
			return nil, err
		}
	}
	if prog == "" {
		return &Spec{Path: "/bin/sh", Args: []string{"sh", "-c", string(job.Payload)}}, nil
	}
	return &Spec{Path: prog}, nil
}

func (a *requeueApp) Finish(_ context.Context, job *Job, res Result) (Verdict, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.results = append(a.results, timedResult{job.ID, res, time.Now()})
	if res.NotStarted || res.Interrupted {
		a.queue = append(a.queue, job) // the same attempt
		return Requeued, nil
	}
	select {
	case <-a.done:
	default:
		close(a.done)
	}
	if res.OK() {
		return Completed, nil
	}
	return Failed, nil
}

func (a *requeueApp) snapshot() []timedResult {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]timedResult(nil), a.results...)
}

// A job whose program is missing is not a run: it goes back to its
// source as it was, three times, with the daemon backing off longer each
// time, and runs once the program is there; the Observer and the
// counters see one start and one run.
func TestNotStartedGoesBackUnharmed(t *testing.T) {
	prog := filepath.Join(t.TempDir(), "job")
	tries := 0
	a := &requeueApp{done: make(chan struct{}), queue: []*Job{{ID: "j", Attempt: 1}}}
	a.command = func(*Job) (string, error) {
		if tries++; tries == 4 {
			if err := os.WriteFile(prog, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
				return "", err
			}
		}
		return prog, nil
	}
	rec := &recorder{started: map[string]time.Duration{}, finished: map[string]Result{}}
	d, err := New(a, Options{MaxChildren: 2, NoSignals: true, Logger: testLogger(t), Observer: rec})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- d.Run(context.Background()) }()
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the job never ran: %+v", a.snapshot())
	}
	st := d.Status()
	d.Stop(Drain)
	waitRun(t, errc, "drain")

	rs := a.snapshot()
	if len(rs) != 4 {
		t.Fatalf("%d results, want 3 not started and 1 run: %+v", len(rs), rs)
	}
	for i, r := range rs[:3] {
		if !r.res.NotStarted || r.res.OK() || r.res.Interrupted || r.res.Error == "" {
			t.Errorf("result %d: %+v; want not started, with the error", i, r.res)
		}
		if i > 0 {
			// The back-off doubles from 100 ms: 100, then 200 ms at least.
			if gap, least := r.at.Sub(rs[i-1].at), minStartBackoff<<(i-1); gap < least {
				t.Errorf("start %d came %v after the one before, within the back-off of %v", i, gap, least)
			}
		}
	}
	if last := rs[3].res; !last.OK() {
		t.Errorf("the job once its program was there: %+v", last)
	}
	if st.NotStarted != 3 || st.RunsStarted != 1 || st.RunsFailed != 0 || st.RunsSucceeded != 1 || st.LastStartError == "" {
		t.Errorf("status: %d not started, %d started, %d failed, %d succeeded, last error %q; want 3, 1, 0, 1 and the error",
			st.NotStarted, st.RunsStarted, st.RunsFailed, st.RunsSucceeded, st.LastStartError)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.started) != 1 || len(rec.finished) != 1 || !rec.finished["j"].OK() {
		t.Errorf("the Observer saw %d starts and %v; want one start and one run", len(rec.started), rec.finished)
	}
}

// A Command that fails for want of descriptors has not started the job;
// one that refuses the job has run it, and failed.
func TestCommandResourceErrorIsNotStarted(t *testing.T) {
	emfile := true
	a := &requeueApp{done: make(chan struct{}), queue: []*Job{{ID: "j", Attempt: 1, Payload: []byte("exit 0")}}}
	a.command = func(*Job) (string, error) {
		if emfile {
			emfile = false
			return "", fmt.Errorf("open job file: %w", syscall.EMFILE)
		}
		return "", nil
	}
	d, err := New(a, Options{MaxChildren: 1, NoSignals: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- d.Run(context.Background()) }()
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the job never ran: %+v", a.snapshot())
	}
	d.Stop(Drain)
	waitRun(t, errc, "drain")
	rs := a.snapshot()
	if len(rs) != 2 || !rs[0].res.NotStarted || !rs[1].res.OK() {
		t.Errorf("results %+v; want not started, then ok", rs)
	}
}

// Only the jobs that a stop signalled are interrupted: one that fails by
// itself during a graceful stop (which forwards no signal here) counts,
// and so does one that ran past its timeout, whose timeout still applies
// during the stop; one that the stop's signal or its deadline ended is
// interrupted.
func TestOnlySignalledJobsAreInterrupted(t *testing.T) {
	for _, tc := range []struct {
		name        string
		payload     string
		opts        Options
		interrupted bool
	}{
		{"fails by itself", "sleep 0.5; exit 3", Options{NoForwardSignals: true}, false},
		{"ended by the stop's signal", "sleep 30", Options{}, true},
		{"killed at the stop's deadline", "sleep 30", Options{NoForwardSignals: true, StopTimeout: 300 * time.Millisecond}, true},
		{"timed out during the stop", "trap '' TERM; sleep 30", Options{NoForwardSignals: true, JobTimeout: 400 * time.Millisecond, KillGrace: 100 * time.Millisecond, StopTimeout: time.Hour}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &requeueApp{done: make(chan struct{}), queue: []*Job{{ID: "j", Attempt: 1, Payload: []byte(tc.payload)}}}
			opts := tc.opts
			opts.MaxChildren, opts.NoSignals, opts.Logger = 1, true, testLogger(t)
			d, err := New(a, opts)
			if err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() { errc <- d.Run(context.Background()) }()
			waitFor(t, "the job runs", func() bool { return d.Status().Busy == 1 })
			time.Sleep(100 * time.Millisecond) // the shell has set its trap
			d.Stop(Graceful)
			select {
			case err := <-errc:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return")
			}
			rs := a.snapshot()
			if len(rs) != 1 || rs[0].res.OK() || rs[0].res.Interrupted != tc.interrupted {
				t.Errorf("results %+v; want one failure, interrupted %v", rs, tc.interrupted)
			}
		})
	}
}
