package jobs

import (
	"context"
	"testing"
)

// BenchmarkDispatchWorkers runs b.N trivial jobs through the whole daemon
// (NextJob, a worker round trip, Done) with 2 workers that never retire:
// the per-job cost of the dispatcher on top of pool.BenchmarkWorkerJob.
func BenchmarkDispatchWorkers(b *testing.B) {
	b.Setenv("GORACE", "atexit_sleep_ms=0")
	payloads := make([]string, b.N)
	for i := range payloads {
		payloads[i] = "ok"
	}
	a := newTestApp(payloads...)
	d, err := New(a, Options{MaxChildren: 2, JobsPerChild: 1 << 30, NoSignals: true, Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	errc := make(chan error, 1)
	go func() { errc <- d.Run(context.Background()) }()
	<-a.allDone
	b.StopTimer()
	d.Stop(Drain)
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	for id, r := range a.results {
		if !r.OK() {
			b.Fatalf("%s: %s", id, r.String())
		}
	}
}
