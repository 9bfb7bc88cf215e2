package jobstest_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/jobstest"
)

// squarer is the application under test: it squares numbers, adds the
// squares up in a shared variable, and records which jobs failed.
type squarer struct {
	numbers []string
	next    int
	failed  []string
}

func (s *squarer) NextJob(ctx context.Context, slot int) (*jobs.Job, error) {
	if s.next == len(s.numbers) {
		return nil, nil
	}
	s.next++
	return &jobs.Job{
		ID:      fmt.Sprintf("n%d", s.next),
		Payload: []byte(s.numbers[s.next-1]),
		Attempt: 1,
	}, nil
}

// RunJob runs in a child under a daemon: its result reaches the parent
// only through its return value and the shared variables.
func (s *squarer) RunJob(ctx context.Context, job *jobs.Job) error {
	n, err := strconv.Atoi(string(job.Payload))
	if err != nil {
		return errors.New("not a number")
	}
	_, err = jobs.VarsFrom(ctx).Add("sum", int64(n*n))
	return err
}

func (s *squarer) Done(ctx context.Context, job *jobs.Job, res jobs.Result) error {
	if !res.OK() {
		s.failed = append(s.failed, job.ID)
	}
	return nil
}

func Example() {
	// In a real test this is the *testing.T of a TestXxx function.
	var t testing.TB = exampleT{}

	app := &squarer{numbers: []string{"3", "4", "x"}}
	h := jobstest.New(t, app)
	h.Slot = 1
	for _, o := range h.Drain(10) {
		fmt.Printf("%s in slot %d: %s (exit %d)\n", o.Job.ID, o.Job.Slot, o.Result, o.Result.ExitCode)
	}
	sum, _, _ := h.Vars.Get("sum")
	fmt.Println("sum of squares:", sum)
	fmt.Println("failed:", app.failed)
	// Output:
	// n1 in slot 1: ok (exit 0)
	// n2 in slot 1: ok (exit 0)
	// n3 in slot 1: error: not a number (exit 1)
	// sum of squares: 25
	// failed: [n3]
}

// exampleT stands in for a *testing.T, which an example does not have. It
// implements the methods the harness calls; failures panic.
type exampleT struct{ testing.TB }

func (exampleT) Helper()                           {}
func (exampleT) Context() context.Context          { return context.Background() }
func (exampleT) Logf(string, ...any)               {}
func (exampleT) Errorf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (exampleT) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
