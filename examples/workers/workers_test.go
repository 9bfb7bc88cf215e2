package workers

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jobdaemon/jobdaemon/internal/workerproto"
	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

// language is a reference worker: its interpreter and scripts.
type language struct {
	name, interp     string
	handler, example string
	exception        string // the class name of a handler's RuntimeError
}

var languages = []language{
	{name: "python", interp: "python3", handler: "testdata/handler.py", example: "python/example.py", exception: "RuntimeError"},
	{name: "php", interp: "php", handler: "testdata/handler.php", example: "php/example.php", exception: "RuntimeException"},
}

// interpreter returns the path of lang's interpreter. Without it the test
// is skipped, or fails under CI=true, where .ci/run installs it.
func interpreter(t testing.TB, lang language) string {
	t.Helper()
	path, err := exec.LookPath(lang.interp)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found under CI=true (.ci/run installs it): %v", lang.interp, err)
		}
		t.Skipf("%s not found: %v", lang.interp, err)
	}
	return path
}

func forEach(t *testing.T, f func(t *testing.T, lang language, interp string)) {
	for _, lang := range languages {
		t.Run(lang.name, func(t *testing.T) { f(t, lang, interpreter(t, lang)) })
	}
}

// logs collects the workers' output.
type logs struct {
	mu    sync.Mutex
	lines []pool.Line
}

func (l *logs) Line(line pool.Line) {
	l.mu.Lock()
	line.Text = bytes.Clone(line.Text)
	l.lines = append(l.lines, line)
	l.mu.Unlock()
}

// of returns the lines of label on stream, waiting a little for them:
// output and answers travel on different pipes.
func (l *logs) of(label string, stream pool.Stream) []string {
	var out []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		out = out[:0]
		l.mu.Lock()
		for _, line := range l.lines {
			if line.Label == label && line.Stream == stream {
				out = append(out, string(line.Text))
			}
		}
		l.mu.Unlock()
		if len(out) > 0 || time.Now().After(deadline) {
			return out
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// has reports whether label wrote text on stream, waiting a little for it.
func (l *logs) has(label string, stream pool.Stream, text string) bool {
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, s := range l.of(label, stream) {
			if s == text {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// driver runs jobs through command workers as the daemon does.
type driver struct {
	t       testing.TB
	p       *pool.Pool
	spec    *pool.WorkerSpec
	answers chan answer
	logs    logs
	buf     []byte
}

type answer struct {
	w    *pool.Worker
	line string
}

func newDriver(t testing.TB, slots int, args ...string) *driver {
	d := &driver{t: t, answers: make(chan answer, 64)}
	p, err := pool.New(pool.Config{Max: slots, Sink: &d.logs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := p.Stop(ctx, pool.Graceful, pool.StopOptions{Signal: syscall.SIGTERM, Timeout: 10 * time.Second}); err != nil {
			t.Errorf("stop: %v", err)
		}
		p.Close()
	})
	d.p = p
	d.spec = &pool.WorkerSpec{
		Protocol:  pool.ProtocolLines,
		Spec:      pool.Spec{Path: args[0], Args: args, StopSignal: syscall.SIGTERM, KillGrace: 5 * time.Second},
		MaxAnswer: workerproto.MaxAnswer,
		OnResult:  func(w *pool.Worker, msg []byte) { d.answers <- answer{w, string(msg)} },
	}
	return d
}

func (d *driver) start() *pool.Worker {
	d.t.Helper()
	slot, ok := d.p.TryAcquire()
	if !ok {
		d.t.Fatal("no free slot")
	}
	w, err := d.p.StartWorker(slot, d.spec)
	if err != nil {
		d.t.Fatal(err)
	}
	return w
}

func (d *driver) send(w *pool.Worker, job *workerproto.Job) {
	d.t.Helper()
	var err error
	if d.buf, err = workerproto.AppendJob(d.buf[:0], job); err != nil {
		d.t.Fatal(err)
	}
	w.SetLabel(job.ID)
	if err := w.Send(d.buf); err != nil {
		d.t.Fatalf("send %s: %v", job.ID, err)
	}
}

// run sends job to w and returns the worker's answer to it.
func (d *driver) run(w *pool.Worker, job *workerproto.Job) (workerproto.Answer, error) {
	d.t.Helper()
	d.send(w, job)
	select {
	case a := <-d.answers:
		return workerproto.ParseAnswer([]byte(a.line), job.ID)
	case <-time.After(20 * time.Second):
		d.t.Fatalf("no answer to %s within 20 s", job.ID)
		return workerproto.Answer{}, nil
	}
}

func waitDone(t testing.TB, w *pool.Worker) *pool.Exit {
	t.Helper()
	select {
	case <-w.Done():
		return w.Exit()
	case <-time.After(20 * time.Second):
		t.Fatalf("worker %d did not exit within 20 s", w.Pid)
		return nil
	}
}

func TestServe(t *testing.T) {
	forEach(t, func(t *testing.T, lang language, interp string) {
		d := newDriver(t, 1, interp, lang.handler)
		w := d.start()
		ok := func(job *workerproto.Job) {
			t.Helper()
			a, err := d.run(w, job)
			if err != nil || !a.OK {
				t.Fatalf("%s: %+v, %v", job.ID, a, err)
			}
		}

		ok(&workerproto.Job{ID: "1", Attempt: 1, Payload: []byte("ok")})

		// Output is log output, under the job's label.
		ok(&workerproto.Job{ID: "say", Attempt: 1, Payload: []byte(`say:{"id":"say","ok":false}`)})
		if got := d.logs.of("say", pool.Stdout); len(got) != 1 || got[0] != `{"id":"say","ok":false}` {
			t.Errorf("stdout of the job: %q", got)
		}
		if got := d.logs.of("say", pool.Stderr); len(got) != 1 || got[0] != `err:{"id":"say","ok":false}` {
			t.Errorf("stderr of the job: %q", got)
		}

		// A handler's exception fails the job with its message.
		a, err := d.run(w, &workerproto.Job{ID: "f", Attempt: 1, Payload: []byte("fail:no such customer")})
		if err != nil || a.OK || a.Error != lang.exception+": no such customer" {
			t.Errorf("failing job: %+v, %v", a, err)
		}
		if tb := strings.Join(d.logs.of("f", pool.Stderr), "\n"); !strings.Contains(tb, "no such customer") {
			t.Errorf("no trace of the exception in the job's log: %q", tb)
		}

		// Payloads are bytes.
		all := make([]byte, 256)
		for i := range all {
			all[i] = byte(i)
		}
		ok(&workerproto.Job{ID: "bytes", Attempt: 1, Payload: append([]byte("hex:"), all...)})
		if got := d.logs.of("bytes", pool.Stdout); len(got) != 1 || got[0] != hex.EncodeToString(all) {
			t.Errorf("the handler saw the payload as %q", got)
		}

		// Every field arrives, whatever its characters.
		id := "é \"q\" \\ \u2028 \t 😀"
		job := &workerproto.Job{ID: id, Attempt: 3, Slot: 0, Payload: []byte("job"), Path: "/spool/running/ü x.json",
			Meta: map[string]string{"queue": "mail", "note": "a\nb"}}
		ok(job)
		var seen struct {
			ID      string
			Attempt int
			Slot    int
			Path    string
			Meta    map[string]string
		}
		got := d.logs.of(id, pool.Stdout)
		if len(got) != 1 || json.Unmarshal([]byte(got[0]), &seen) != nil {
			t.Fatalf("job fields: %q", got)
		}
		if seen.ID != id || seen.Attempt != 3 || seen.Path != job.Path || seen.Meta["queue"] != "mail" || seen.Meta["note"] != "a\nb" {
			t.Errorf("the handler saw %+v", seen)
		}

		if lang.name == "python" {
			ok(&workerproto.Job{ID: "child", Attempt: 1, Payload: []byte("child")})
			ok(&workerproto.Job{ID: "after", Attempt: 1, Payload: []byte("ok")})
		}

		// Stdin closes: the worker exits cleanly.
		w.Retire()
		if e := waitDone(t, w); !e.Success() || w.Err() != nil {
			t.Errorf("retired worker: %s, %v", e, w.Err())
		}
	})
}

// A handler that exits ends the worker with its status, its job in
// flight.
func TestServeExitMidJob(t *testing.T) {
	forEach(t, func(t *testing.T, lang language, interp string) {
		d := newDriver(t, 1, interp, lang.handler)
		w := d.start()
		d.send(w, &workerproto.Job{ID: "x", Attempt: 1, Payload: []byte("exit:7")})
		if e := waitDone(t, w); e.Code != 7 || !w.Busy() {
			t.Errorf("worker: %s, busy %v; want exit 7 with its job in flight", e, w.Busy())
		}
	})
}

// Run by hand, without fd 3, a worker says what it is and exits 2.
func TestServeNotAWorker(t *testing.T) {
	forEach(t, func(t *testing.T, lang language, interp string) {
		cmd := exec.Command(interp, lang.handler)
		cmd.Stdin = strings.NewReader(`{"id":"1","attempt":1,"slot":0,"payload":""}` + "\n")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(stderr.String(), "file descriptor 3 is not open") {
			t.Errorf("run without fd 3: %v, stderr %q", err, stderr.String())
		}
	})
}

// The example handlers do what their comments say.
func TestExamples(t *testing.T) {
	forEach(t, func(t *testing.T, lang language, interp string) {
		d := newDriver(t, 1, interp, lang.example)
		w := d.start()
		a, err := d.run(w, &workerproto.Job{ID: "fox", Attempt: 1, Payload: []byte("the quick brown fox")})
		if err != nil || !a.OK {
			t.Fatalf("fox: %+v, %v", a, err)
		}
		// The worker's greeting at start-up may come under the first job's
		// label: it is read when the label already says "fox".
		if !d.logs.has("fox", pool.Stdout, "fox (attempt 1, slot 0): 4 words") {
			t.Errorf("fox's log: %q", d.logs.of("fox", pool.Stdout))
		}
		a, err = d.run(w, &workerproto.Job{ID: "bad", Attempt: 2, Payload: []byte("fail\n")})
		if err != nil || a.OK || !strings.HasSuffix(a.Error, ": job bad asked to fail") {
			t.Errorf("bad: %+v, %v", a, err)
		}
	})
}

// 20 000 jobs through 2 workers that retire every 5 000, replaced as they
// exit: every job answered exactly once, by a worker that parsed it. Once
// the pool is stable, the workers that exited ran 5 000 jobs each and the
// 2 live ones fewer, so at least 3 exited and 5 started.
func TestManyJobsRecycled(t *testing.T) {
	if testing.Short() {
		t.Skip("20 000 jobs per language")
	}
	forEach(t, func(t *testing.T, lang language, interp string) {
		const jobs, limit = 20000, 5000
		d := newDriver(t, 2, interp, lang.handler)
		d.spec.Jobs = limit
		exits := make(chan *pool.Worker, 8)
		live := map[*pool.Worker]*workerproto.Job{} // → the job in flight
		started, exited, sent, answered := 0, 0, 0, 0
		seen := make([]bool, jobs)
		feed := func(w *pool.Worker) {
			live[w] = nil
			if sent < jobs && !w.Retiring() {
				job := &workerproto.Job{ID: strconv.Itoa(sent), Attempt: 1, Slot: w.Slot, Payload: []byte("ok")}
				d.send(w, job)
				live[w] = job
				sent++
			}
		}
		fill := func() {
			for {
				slot, ok := d.p.TryAcquire()
				if !ok {
					return
				}
				w, err := d.p.StartWorker(slot, d.spec)
				if err != nil {
					t.Fatal(err)
				}
				started++
				go func() { <-w.Done(); exits <- w }()
				feed(w)
			}
		}
		stable := func() bool {
			for w := range live {
				if w.Retiring() {
					return false
				}
			}
			return len(live) == 2
		}
		handle := func(a answer) {
			job := live[a.w]
			if job == nil {
				t.Fatalf("answer %q with no job in flight", a.line)
			}
			ans, err := workerproto.ParseAnswer([]byte(a.line), job.ID)
			if err != nil || !ans.OK {
				t.Fatalf("job %s: %+v, %v", job.ID, ans, err)
			}
			n, _ := strconv.Atoi(job.ID)
			if seen[n] {
				t.Fatalf("job %d answered twice", n)
			}
			seen[n] = true
			answered++
			feed(a.w)
		}
		fill()
		timeout := time.After(300 * time.Second)
		for answered < jobs || !stable() {
			select {
			case a := <-d.answers:
				handle(a)
			case w := <-exits:
				// The pool hands over a worker's answers before its exit,
				// but on another channel: the last ones may wait there.
				for len(d.answers) > 0 {
					handle(<-d.answers)
				}
				delete(live, w)
				exited++
				if e := w.Exit(); !e.Success() || w.Busy() || w.Completed() != limit {
					t.Fatalf("worker %d: %s after %d jobs, busy %v", w.Pid, e, w.Completed(), w.Busy())
				}
				fill()
			case <-timeout:
				t.Fatalf("timeout: %d sent, %d answered, %d workers started", sent, answered, started)
			}
		}
		if started < 5 || exited < 3 {
			t.Errorf("%d workers started, %d exited; want at least 5 and 3", started, exited)
		}
		t.Logf("%d jobs, %d workers started", jobs, started)
	})
}

// The complete worker of docs/WORKER-PROTOCOL.md works as it says.
func TestProtocolDocWorker(t *testing.T) {
	lang := languages[0]
	interp := interpreter(t, lang)
	doc, err := os.ReadFile("../../docs/WORKER-PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, _ := strings.Cut(string(doc), "## A complete worker in Python")
	_, code, _ := strings.Cut(after, "```python\n")
	code, _, found := strings.Cut(code, "```")
	if !found || !strings.Contains(code, "answers.flush()") {
		t.Fatalf("no worker in the doc: %q", code)
	}
	script := t.TempDir() + "/worker.py"
	if err := os.WriteFile(script, []byte(code), 0o755); err != nil {
		t.Fatal(err)
	}
	d := newDriver(t, 1, interp, script)
	w := d.start()
	a, err := d.run(w, &workerproto.Job{ID: "hi", Attempt: 1, Payload: []byte("hi")})
	if err != nil || !a.OK {
		t.Errorf("ok job: %+v, %v", a, err)
	}
	if !d.logs.has("hi", pool.Stdout, "job hi: 2 bytes") {
		t.Errorf("log of the job: %q", d.logs.of("hi", pool.Stdout))
	}
	a, err = d.run(w, &workerproto.Job{ID: "f", Attempt: 1, Payload: []byte("fail")})
	if err != nil || a.OK || a.Error != "asked to fail" {
		t.Errorf("failing job: %+v, %v", a, err)
	}
	w.Retire()
	if e := waitDone(t, w); !e.Success() {
		t.Errorf("worker after stdin closed: %s", e)
	}
}
