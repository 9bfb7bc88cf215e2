package jobstest_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/jobstest"
)

// app serves the payloads it was given, one job each, and does in RunJob
// what the payload says. It counts hook calls and keeps what Done got.
type app struct {
	payloads  []string
	nextCalls int
	slots     []int
	done      []jobs.Result
	doneMeta  []map[string]string
	doneErr   error
	nextErr   error
}

func (a *app) LoadConfig(ctx context.Context) error {
	return jobs.VarsFrom(ctx).Set("config", "loaded")
}

func (a *app) NextJob(ctx context.Context, slot int) (*jobs.Job, error) {
	a.nextCalls++
	a.slots = append(a.slots, slot)
	if a.nextErr != nil {
		return nil, a.nextErr
	}
	if len(a.payloads) == 0 {
		return nil, nil
	}
	p := a.payloads[0]
	a.payloads = a.payloads[1:]
	if _, err := jobs.VarsFrom(ctx).Add("handed-out", 1); err != nil {
		return nil, err
	}
	return &jobs.Job{ID: fmt.Sprintf("job-%d", a.nextCalls), Payload: []byte(p), Attempt: 1,
		Meta: map[string]string{"from": "source"}}, nil
}

func (a *app) RunJob(ctx context.Context, job *jobs.Job) error {
	if job.Meta != nil {
		job.Meta["from"] = "RunJob" // must not reach Done
	}
	switch p := string(job.Payload); p {
	case "ok":
		return nil
	case "fail":
		return errors.New("failed on purpose")
	case "panic":
		panic("exploded")
	case "sleep":
		time.Sleep(20 * time.Millisecond)
		return nil
	case "cancelled?":
		return ctx.Err()
	case "empty meta":
		if job.Meta != nil {
			return fmt.Errorf("Meta %#v, want nil as a child would get", job.Meta)
		}
		return nil
	case "config?":
		if v, _, _ := jobs.VarsFrom(ctx).Get("config"); v != "loaded" {
			return fmt.Errorf("config = %q", v)
		}
		_, err := jobs.VarsFrom(ctx).Add("ran", 1)
		return err
	default:
		return fmt.Errorf("unknown payload %q", p)
	}
}

func (a *app) Done(ctx context.Context, job *jobs.Job, res jobs.Result) error {
	a.done = append(a.done, res)
	a.doneMeta = append(a.doneMeta, job.Meta)
	return a.doneErr
}

func TestRunJobResults(t *testing.T) {
	tests := []struct {
		payload string
		code    int
		err     string
	}{
		{"ok", 0, ""},
		{"fail", 1, "failed on purpose"},
		{"panic", 2, "panic in RunJob: exploded"},
		{"empty meta", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.payload, func(t *testing.T) {
			h := jobstest.New(t, &app{})
			res := h.RunJob(&jobs.Job{ID: "j", Payload: []byte(tt.payload), Meta: map[string]string{}})
			if res.ExitCode != tt.code || res.Error != tt.err || res.OK() != (tt.code == 0) {
				t.Errorf("RunJob(%s) = %+v, want exit %d, error %q", tt.payload, res, tt.code, tt.err)
			}
		})
	}
}

func TestRunJobMeasuresDuration(t *testing.T) {
	h := jobstest.New(t, &app{})
	res := h.RunJob(&jobs.Job{ID: "j", Payload: []byte("sleep"), Meta: map[string]string{}})
	if !res.OK() || res.Duration < 20*time.Millisecond {
		t.Errorf("RunJob(sleep) = %+v, want ok and at least 20 ms", res)
	}
}

func TestRunJobSeesCtx(t *testing.T) {
	h := jobstest.New(t, &app{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h.Ctx = ctx
	res := h.RunJob(&jobs.Job{ID: "j", Payload: []byte("cancelled?"), Meta: map[string]string{}})
	if res.ExitCode != 1 || res.Error != context.Canceled.Error() {
		t.Errorf("RunJob with a cancelled Ctx = %+v", res)
	}
}

func TestDrainStopsOnNil(t *testing.T) {
	a := &app{payloads: []string{"ok", "fail", "panic", "ok"}}
	h := jobstest.New(t, a)
	h.Slot = 3
	out := h.Drain(0)
	want := []int{0, 1, 2, 0}
	if len(out) != len(want) {
		t.Fatalf("Drain ran %d jobs, want %d", len(out), len(want))
	}
	for i, o := range out {
		if o.Result.ExitCode != want[i] || o.Job.Slot != 3 || o.Job.ID != fmt.Sprintf("job-%d", i+1) {
			t.Errorf("outcome %d: %s in slot %d: %+v", i, o.Job.ID, o.Job.Slot, o.Result)
		}
		if a.done[i].ExitCode != o.Result.ExitCode {
			t.Errorf("Done %d got %+v, Drain returned %+v", i, a.done[i], o.Result)
		}
		if a.doneMeta[i]["from"] != "source" {
			t.Errorf("Done %d saw Meta %v: RunJob's change to its copy leaked", i, a.doneMeta[i])
		}
	}
	if a.nextCalls != 5 {
		t.Errorf("NextJob called %d times, want 5 (4 jobs and the nil)", a.nextCalls)
	}
	for _, s := range a.slots {
		if s != 3 {
			t.Errorf("NextJob got slot %d, want 3", s)
		}
	}
}

func TestDrainMax(t *testing.T) {
	a := &app{payloads: []string{"ok", "ok", "ok", "ok"}}
	out := jobstest.New(t, a).Drain(2)
	if len(out) != 2 || a.nextCalls != 2 || len(a.payloads) != 2 {
		t.Errorf("Drain(2): %d outcomes, %d NextJob calls, %d jobs left", len(out), a.nextCalls, len(a.payloads))
	}
}

func TestVarsSharedBetweenHooks(t *testing.T) {
	a := &app{payloads: []string{"config?", "config?"}}
	h := jobstest.New(t, a)
	if err := h.LoadConfig(); err != nil {
		t.Fatal(err)
	}
	for _, o := range h.Drain(0) {
		if !o.Result.OK() {
			t.Errorf("%s: %s", o.Job.ID, o.Result)
		}
	}
	for key, want := range map[string]string{"config": "loaded", "handed-out": "2", "ran": "2"} {
		if v, _, _ := h.Vars.Get(key); v != want {
			t.Errorf("Vars[%s] = %q, want %q", key, v, want)
		}
	}
}

// Without LoadConfig and Done, the harness's calls do nothing.
func TestOptionalHooks(t *testing.T) {
	h := jobstest.New(t, runnerOnly{})
	if err := h.LoadConfig(); err != nil {
		t.Errorf("LoadConfig: %v", err)
	}
	if err := h.Done(&jobs.Job{}, jobs.Result{}); err != nil {
		t.Errorf("Done: %v", err)
	}
	if out := h.Drain(5); len(out) != 5 || !out[4].Result.OK() {
		t.Errorf("Drain: %+v", out)
	}
}

type runnerOnly struct{}

func (runnerOnly) NextJob(context.Context, int) (*jobs.Job, error) { return &jobs.Job{ID: "x"}, nil }
func (runnerOnly) RunJob(context.Context, *jobs.Job) error         { return nil }

type sourceOnly struct{}

func (sourceOnly) NextJob(context.Context, int) (*jobs.Job, error) { return nil, nil }

// failures records how a harness failed a test.
type failures struct {
	testing.TB
	mu     sync.Mutex
	fatal  string
	errors []string
}

func (f *failures) Helper()                  {}
func (f *failures) Logf(string, ...any)      {}
func (f *failures) Context() context.Context { return context.Background() }
func (f *failures) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}
func (f *failures) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.fatal = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

// run calls fn with a harness for a on its own goroutine, as a test
// function, and returns how it failed.
func run(a jobs.Source, fn func(h *jobstest.Harness)) *failures {
	f := &failures{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(jobstest.New(f, a))
	}()
	<-done
	return f
}

func TestFatalCases(t *testing.T) {
	tests := []struct {
		name string
		app  jobs.Source
		fn   func(h *jobstest.Harness)
		want string
	}{
		{"no RunJob", sourceOnly{}, func(h *jobstest.Harness) { h.RunJob(&jobs.Job{}) }, "has neither RunJob"},
		{"NextJob error", &app{nextErr: errors.New("db down")}, func(h *jobstest.Harness) { h.Drain(0) }, "NextJob(slot 0): db down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := run(tt.app, tt.fn)
			if !strings.Contains(f.fatal, tt.want) {
				t.Errorf("fatal %q, want it to contain %q", f.fatal, tt.want)
			}
		})
	}
}

func TestDrainGoesOnAfterDoneError(t *testing.T) {
	a := &app{payloads: []string{"ok", "fail"}, doneErr: errors.New("cannot ack")}
	var n int
	f := run(a, func(h *jobstest.Harness) { n = len(h.Drain(0)) })
	if f.fatal != "" || n != 2 || len(f.errors) != 2 || !strings.Contains(f.errors[1], "cannot ack") {
		t.Errorf("Drain with a failing Done: %d outcomes, fatal %q, errors %q", n, f.fatal, f.errors)
	}
}
