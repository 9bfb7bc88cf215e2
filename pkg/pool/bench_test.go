package pool

import (
	"os"
	"runtime"
	"testing"
)

// The benchmarks run b.N children through a pool of 2×NumCPU slots, as a
// daemon would, and report ns per job: the inverse of the job rate. Compare
// them with bench/run.sh's baselines measured in the same run (a C
// fork+exec+waitpid loop and a bare Go re-exec loop); absolute numbers on
// a shared machine mean little.

func benchSlots() int { return 2 * runtime.NumCPU() }

// runChildren starts b.N children from start and waits for all of them.
func runChildren(b *testing.B, start func(p *Pool, slot int) error) {
	runChildrenIn(b, Isolation{}, start)
}

// runChildrenIn is runChildren in a pool with the isolation iso.
func runChildrenIn(b *testing.B, iso Isolation, start func(p *Pool, slot int) error) {
	done := make(chan struct{}, benchSlots())
	p, err := New(Config{Max: benchSlots(), Isolation: iso, OnExit: func(c *Child) {
		if !c.Exit().Success() {
			b.Errorf("child %d: %s", c.Pid, c.Exit())
		}
		done <- struct{}{}
	}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	b.ReportAllocs()
	b.ResetTimer()
	started, ended := 0, 0
	for ended < b.N {
		for started < b.N {
			slot, ok := p.TryAcquire()
			if !ok {
				break
			}
			if err := start(p, slot); err != nil {
				b.Fatal(err)
			}
			started++
		}
		<-done
		ended++
	}
}

// BenchmarkCommandChild runs /bin/true as a command child.
func BenchmarkCommandChild(b *testing.B) {
	spec := &Spec{Path: "/bin/true", Env: []string{}}
	runChildren(b, func(p *Pool, slot int) error {
		_, err := p.Start(slot, spec)
		return err
	})
}

// BenchmarkReexecChild re-executes the test binary, which exits at once
// (helper "exit 0"), as a command child.
func BenchmarkReexecChild(b *testing.B) {
	spec := helperSpec(b, "exit", "0")
	runChildren(b, func(p *Pool, slot int) error {
		_, err := p.Start(slot, spec)
		return err
	})
}

// BenchmarkWorkerJob sends trivial jobs to 2 workers that live for the
// whole run: the cost of one round trip over the worker channel.
func BenchmarkWorkerJob(b *testing.B) {
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	results := make(chan *Worker, 2)
	p, err := New(Config{Max: 2})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	spec := &WorkerSpec{
		Spec:     Spec{Path: self, Env: append(os.Environ(), helperEnv+"=worker")},
		OnResult: func(w *Worker, msg []byte) { results <- w },
	}
	job := []byte("x")
	var workers []*Worker
	for i := 0; i < 2; i++ {
		slot, _ := p.TryAcquire()
		w, err := p.StartWorker(slot, spec)
		if err != nil {
			b.Fatal(err)
		}
		workers = append(workers, w)
	}
	// Warm up: both workers have started and answered once.
	for _, w := range workers {
		w.Send(job)
		<-results
	}
	b.ReportAllocs()
	b.ResetTimer()
	sent := 0
	for _, w := range workers {
		if sent < b.N {
			w.Send(job)
			sent++
		}
	}
	for i := 0; i < b.N; i++ {
		w := <-results
		if sent < b.N {
			if err := w.Send(job); err != nil {
				b.Fatal(err)
			}
			sent++
		}
	}
	b.StopTimer()
	for _, w := range workers {
		w.Retire()
		<-w.Done()
	}
}
