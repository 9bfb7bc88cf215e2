// Package jobstest helps an application's author unit-test its jobs hooks
// in the test's own process, without a daemon.
//
// A [Harness] calls the hooks the way the dispatcher and a child would:
// NextJob with a slot, RunJob with a copy of the job, Done with the
// Result, each with a context that carries shared variables (see
// jobs.VarsFrom). It turns what RunJob returns into the Result a daemon
// would report, with the same exit codes as a real child: 0 for success, 1
// for a returned error, 2 for a panic.
//
//	func TestResize(t *testing.T) {
//		h := jobstest.New(t, &resizer{dir: t.TempDir()})
//		if err := h.LoadConfig(); err != nil {
//			t.Fatal(err)
//		}
//		for _, o := range h.Drain(100) {
//			if !o.Result.OK() {
//				t.Errorf("%s: %s", o.Job.ID, o.Result)
//			}
//		}
//	}
//
// # What differs from a daemon
//
// Everything runs in one process, so the harness cannot catch what only
// separate processes show:
//
//   - RunJob shares memory with the other hooks. In a daemon, what RunJob
//     changes in the application's fields is lost with the child; here the
//     parent's hooks see it. Share state through jobs.VarsFrom, as under a
//     daemon, and a test cannot pass by accident.
//   - LoadConfig runs only when the test calls it, not once per child, and
//     jobs.IsChild reports false in every hook.
//   - RunJob's output is not captured (Result.Output stays nil), nothing is
//     measured but the wall time, there is no job timeout, and a RunJob
//     that calls os.Exit ends the test binary.
//   - A Commander application's jobs, external programs, do run as real
//     processes, one at a time, with the Spec's input, environment and
//     timeout; their output tail, exit status and CPU time are measured.
//
// Tests of the daemon itself, with real children, belong in a TestMain
// that calls jobs.Run when jobs.IsChild reports true; see package jobs's
// own tests.
package jobstest
