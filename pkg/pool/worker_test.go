package pool

import (
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestWorkerRoundTripAndCall(t *testing.T) {
	results := make(chan string, 4)
	p := newPool(t, Config{Max: 1})
	spec := workerSpec(t)
	spec.OnResult = func(w *Worker, msg []byte) { results <- string(msg) }
	spec.OnCall = func(w *Worker, msg []byte) []byte { return append([]byte("answer to "), msg...) }
	w := startWorker(t, p, spec)
	recv := func() string {
		select {
		case r := <-results:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no result")
			return ""
		}
	}
	if err := w.Send([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := w.Send([]byte("again")); err != ErrBusy {
		t.Errorf("second send while busy: %v, want ErrBusy", err)
	}
	if got := recv(); got != "done:hello" {
		t.Errorf("result %q", got)
	}
	if err := w.Send([]byte("call:x")); err != nil {
		t.Fatal(err)
	}
	if got := recv(); got != "answer to x" {
		t.Errorf("call result %q", got)
	}
	// A message much larger than a reader's buffer arrives whole; larger
	// than a pipe's capacity too (64 KiB), so that its sending waits on
	// the poller for the worker to read (rawConn) and resumes short writes.
	big := make([]byte, 33*chanBuf+17)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	if err := w.Send(big); err != nil {
		t.Fatal(err)
	}
	if got := recv(); got != "done:"+string(big) {
		t.Errorf("big result has %d bytes, want %d", len(got), len(big)+5)
	}
	w.Retire()
	if err := w.Send([]byte("late")); err != ErrRetiring {
		t.Errorf("send after retire: %v, want ErrRetiring", err)
	}
	e := waitDone(t, w.Child, 10*time.Second)
	if !e.Success() || w.Completed() != 3 {
		t.Errorf("worker ended with %s after %d jobs", e, w.Completed())
	}
}

// A worker that dies mid-job is reported with the job still in flight and
// the status it died with.
func TestWorkerDiesMidJob(t *testing.T) {
	ex := newExits()
	p := newPool(t, Config{Max: 1, OnExit: ex.add})
	w := startWorker(t, p, workerSpec(t))
	if err := w.Send([]byte("exit:5")); err != nil {
		t.Fatal(err)
	}
	e := waitDone(t, w.Child, 10*time.Second)
	if e.Code != 5 || !w.Busy() {
		t.Errorf("worker: %s, busy %v; want exit 5 with its job in flight", e, w.Busy())
	}
	if ex.count() != 1 {
		t.Errorf("OnExit called %d times", ex.count())
	}
}

// A Go worker whose message claims more than MaxMessage broke its
// protocol: it is stopped, with nothing allocated for the claim, and its
// job fails with it.
func TestWorkerMessageTooLarge(t *testing.T) {
	p := newPool(t, Config{Max: 1})
	w := startWorker(t, p, workerSpec(t))
	if err := w.Send([]byte("huge-header")); err != nil {
		t.Fatal(err)
	}
	e := waitDone(t, w.Child, 10*time.Second)
	if !errors.Is(w.Err(), errProtocol) || !errors.Is(w.Err(), errMessageTooLarge) || !w.Busy() || e.Signal != syscall.SIGTERM {
		t.Errorf("worker: %s, err %v, busy %v; want stopped by SIGTERM for a message too large, its job in flight", e, w.Err(), w.Busy())
	}
}

// A worker whose channel ends without "quit" takes it that its parent is
// gone, and kills its process group: the end of the parent's pipe is seen
// even when Pdeathsig was not (the parent alive, its channel closed).
func TestWorkerParentGone(t *testing.T) {
	p := newPool(t, Config{Max: 1})
	results := make(chan string, 1)
	spec := workerSpec(t)
	spec.OnResult = func(w *Worker, msg []byte) { results <- string(msg) }
	w := startWorker(t, p, spec)
	if err := w.Send([]byte("first")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-results:
		if r != "done:first" {
			t.Fatalf("result %q", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no result")
	}
	w.tr.close()
	if e := waitDone(t, w.Child, 10*time.Second); e.Signal != syscall.SIGKILL {
		t.Errorf("worker: %s, want killed by SIGKILL (its OnParentGone)", e)
	}
}

// 10 000 jobs over 2 workers retiring every 1 000 jobs: every job answered
// once, and the workers replaced as they retire.
func TestWorkerRecycling(t *testing.T) {
	const jobs, perWorker = 10000, 1000
	type event struct {
		w      *Worker
		result string
	}
	events := make(chan event, 64)
	p := newPool(t, Config{Max: 2, OnExit: func(c *Child) { events <- event{w: c.Worker()} }})
	spec := workerSpec(t)
	spec.Jobs = perWorker
	spec.Jitter = 0.1
	spec.OnResult = func(w *Worker, msg []byte) { events <- event{w: w, result: string(msg)} }

	var starts atomic.Int64
	sent, answered := 0, 0
	seen := make(map[string]bool, jobs)
	feed := func(w *Worker) {
		if sent < jobs && !w.Retiring() {
			if err := w.Send([]byte(strconv.Itoa(sent))); err != nil {
				t.Fatalf("send: %v", err)
			}
			sent++
		}
	}
	fill := func() {
		for sent < jobs {
			slot, ok := p.TryAcquire()
			if !ok {
				return
			}
			w, err := p.StartWorker(slot, spec)
			if err != nil {
				t.Fatal(err)
			}
			starts.Add(1)
			feed(w)
		}
	}
	fill()
	timeout := time.After(60 * time.Second)
	for answered < jobs {
		select {
		case ev := <-events:
			if ev.result == "" { // a worker exited
				if ev.w.Busy() {
					t.Fatalf("worker %d died with a job in flight: %s", ev.w.Pid, ev.w.Exit())
				}
				fill()
				continue
			}
			if seen[ev.result] {
				t.Fatalf("result %s twice", ev.result)
			}
			seen[ev.result] = true
			answered++
			feed(ev.w)
		case <-timeout:
			t.Fatalf("timeout: %d sent, %d answered", sent, answered)
		}
	}
	for i := 0; i < jobs; i++ {
		if !seen[fmt.Sprintf("done:%d", i)] {
			t.Fatalf("job %d never answered", i)
		}
	}
	if starts.Load() < jobs/perWorker {
		t.Errorf("%d workers started, want at least %d", starts.Load(), jobs/perWorker)
	}
}

// A worker past its age or memory limit retires after the job that
// crossed it.
func TestWorkerRetiresOnAgeAndRSS(t *testing.T) {
	results := make(chan *Worker, 1)
	p := newPool(t, Config{Max: 2})
	start := func(mod func(*WorkerSpec)) *Worker {
		spec := workerSpec(t)
		spec.OnResult = func(w *Worker, msg []byte) { results <- w }
		mod(spec)
		w := startWorker(t, p, spec)
		return w
	}
	roundTrip := func(w *Worker, job string) {
		t.Helper()
		if err := w.Send([]byte(job)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-results:
		case <-time.After(10 * time.Second):
			t.Fatal("no result")
		}
	}

	old := start(func(s *WorkerSpec) { s.MaxAge = 300 * time.Millisecond })
	roundTrip(old, "ok")
	if old.Retiring() {
		t.Fatal("young worker retired")
	}
	time.Sleep(400 * time.Millisecond)
	roundTrip(old, "ok")
	if !old.Retiring() {
		t.Error("worker past MaxAge did not retire")
	}

	fat := start(func(s *WorkerSpec) { s.MaxRSS = 32 << 20 })
	roundTrip(fat, "ok")
	if fat.Retiring() {
		t.Fatal("small worker retired")
	}
	roundTrip(fat, "grow")
	if !fat.Retiring() {
		t.Error("worker past MaxRSS did not retire")
	}
	for _, w := range []*Worker{old, fat} {
		if e := waitDone(t, w.Child, 10*time.Second); !e.Success() {
			t.Errorf("retired worker exited with %s", e)
		}
	}
}
