package pool

import (
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lineLog records what a sink receives.
type lineLog struct {
	mu    sync.Mutex
	lines []Line
}

func (l *lineLog) Line(x Line) {
	x.Text = []byte(string(x.Text))
	l.mu.Lock()
	l.lines = append(l.lines, x)
	l.mu.Unlock()
}

// keptPipes returns slot 0's pipes, and fails the test unless they are
// there and are those of before (unless before is nil).
func keptPipes(t *testing.T, p *Pool, before *slotOutput, after string) *slotOutput {
	t.Helper()
	var so *slotOutput
	p.mu.Lock()
	if len(p.slotOut) > 0 {
		so = p.slotOut[0]
	}
	p.mu.Unlock()
	if so == nil || before != nil && so != before {
		t.Fatalf("after %s: the slot's pipes were not kept (%p, before %p)", after, so, before)
	}
	return so
}

// The children of a slot share its output pipes one after another, where
// their cgroups empty: every line, the unended last one too, is the job's
// that wrote it, in the sink and in the job's tail; and the pipes are the
// same for every job.
func TestSlotOutputAttribution(t *testing.T) {
	needCgroups(t)
	var log lineLog
	p := newPool(t, Config{Max: 1, Sink: &log, MaxLine: 64,
		Isolation: Isolation{Cgroups: CgroupRequire, CgroupName: testCgroupName(t)}})
	var pipes *slotOutput
	const jobs = 30
	for i := range jobs {
		// A long line, cut in MaxLine pieces, and a last line without its
		// newline, which only the end of the job ends.
		script := fmt.Sprintf(`echo out-%d; echo err-%d >&2; printf '%%0200d\n' %d; printf end-%d`, i, i, i, i)
		spec := &Spec{Path: "/bin/sh", Args: []string{"sh", "-c", script}, Label: fmt.Sprintf("job-%d", i)}
		c := mustStart(t, p, spec)
		e := waitDone(t, c, 10*time.Second)
		if !e.Success() {
			t.Fatalf("job %d: %s", i, e)
		}
		out := string(e.Output)
		for _, want := range []string{fmt.Sprintf("out-%d\n", i), fmt.Sprintf("err-%d\n", i), fmt.Sprintf("end-%d", i)} {
			if !strings.Contains(out, want) {
				t.Errorf("job %d: output %q lacks %q", i, out, want)
			}
		}
		if strings.Count(out, "-") != 3 || len(out) != len(fmt.Sprintf("out-%d\nerr-%d\nend-%d", i, i, i))+201 {
			t.Errorf("job %d: output %q is not its own, whole", i, out)
		}
		pipes = keptPipes(t, p, pipes, fmt.Sprint("job ", i))
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	got := map[string][]string{}
	for _, l := range log.lines {
		got[l.Label] = append(got[l.Label], fmt.Sprintf("%s:%s:%v", l.Stream, l.Text, l.Partial))
	}
	for i := range jobs {
		label := fmt.Sprintf("job-%d", i)
		lines := got[label]
		want := []string{fmt.Sprintf("stdout:out-%d:false", i), fmt.Sprintf("stderr:err-%d:false", i),
			fmt.Sprintf("stdout:end-%d:true", i)}
		for _, w := range want {
			n := 0
			for _, l := range lines {
				if l == w {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%s: %q %d times in %q", label, w, n, lines)
			}
		}
		// The 201 bytes of the long line: 3 pieces of 64, and the rest.
		pieces := 0
		for _, l := range lines {
			if strings.HasPrefix(l, "stdout:0") {
				pieces++
			}
		}
		if pieces != 4 || len(lines) != 7 {
			t.Errorf("%s: %d pieces of the long line, %d lines in all: %q", label, pieces, len(lines), lines)
		}
	}
}

// Workers of one job that run one after another in a slot write into its
// pipes, as command children do: each line is handed over under the label
// of the job that wrote it, a last line that a worker left unended is
// handed over, Partial, once the worker has exited, and the pipes stay
// the slot's from one worker to the next.
func TestWorkerSlotOutput(t *testing.T) {
	needCgroups(t)
	var log lineLog
	p := newPool(t, Config{Max: 1, Sink: &log,
		Isolation: Isolation{Cgroups: CgroupRequire, CgroupName: testCgroupName(t)}})
	var pipes *slotOutput
	const workers = 5
	for i := range workers {
		spec := linesSpec(t)
		spec.Jobs = 1
		spec.Label = fmt.Sprint("job-", i)
		a := newAnswers(spec)
		w := startWorker(t, p, spec)
		if w.shared == nil {
			t.Fatalf("worker %d has pipes of its own", i)
		}
		if got := a.ask(t, w, fmt.Sprint("sayend:", i)); got != "said" {
			t.Fatalf("worker %d: answer %q", i, got)
		}
		if e := waitDone(t, w.Child, 10*time.Second); !e.Success() {
			t.Fatalf("worker %d: %s", i, e)
		}
		pipes = keptPipes(t, p, pipes, fmt.Sprint("worker ", i))
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	var got []string
	for _, l := range log.lines {
		got = append(got, fmt.Sprintf("%s %s:%s:%v", l.Label, l.Stream, l.Text, l.Partial))
	}
	var want []string
	for i := range workers {
		want = append(want, fmt.Sprintf("job-%d stdout:%d-line:false", i, i),
			fmt.Sprintf("job-%d stdout:%d-end:true", i, i))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("lines handed over:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A worker of one job in its slot's pipes that hangs, with a grandchild
// holding the pipes too, is stopped with its whole cgroup; the pipes,
// empty of it, go back to the slot, and the next worker's lines are its
// own.
func TestWorkerSlotOutputStopped(t *testing.T) {
	needCgroups(t)
	var log lineLog
	cfg := Config{Sink: &log, Isolation: Isolation{Cgroups: CgroupRequire, CgroupName: testCgroupName(t)}}
	w, grandchild := hangingWorker(t, cfg, 1)
	if w.shared == nil {
		t.Fatal("the worker has pipes of its own")
	}
	p := w.pool
	pipes := w.shared
	w.Stop(syscall.SIGTERM, 5*time.Second)
	if e := waitDone(t, w.Child, 10*time.Second); e.Signal != syscall.SIGTERM {
		t.Errorf("worker: %s, want SIGTERM", e)
	}
	if !eventually(5*time.Second, func() bool { return !alive(grandchild) }) {
		syscall.Kill(grandchild, syscall.SIGKILL)
		t.Errorf("grandchild %d outlived the stop of its worker", grandchild)
	}
	keptPipes(t, p, pipes, "the stopped worker")

	spec := linesSpec(t)
	spec.Jobs = 1
	spec.Label = "next"
	a := newAnswers(spec)
	next := startWorker(t, p, spec)
	if got := a.ask(t, next, "say:after"); got != "said" {
		t.Fatalf("answer %q", got)
	}
	waitDone(t, next.Child, 10*time.Second)
	log.mu.Lock()
	defer log.mu.Unlock()
	var after []string
	for _, l := range log.lines {
		if l.Label == "next" {
			after = append(after, string(l.Text))
		}
	}
	if len(after) != 1 || after[0] != "after" {
		t.Errorf("the next worker's lines: %q, want [after]", after)
	}
	noZombies(t)
}
