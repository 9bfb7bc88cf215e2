package jobs

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envLinesWorker makes the test binary a command worker (helperLines)
// instead of a test run.
const envLinesWorker = "JOBS_TEST_LINES_WORKER"

// helperLines is a command worker, written as anyone would write one from
// docs/WORKER-PROTOCOL.md: a job per line on stdin, an answer per line on
// fd 3. What it does with a job depends on the payload:
//
//	ok             answer ok
//	fail:MSG       answer "ok": false with the error MSG
//	fail-empty     answer "ok": false without an error
//	exit:N         exit N without answering
//	kill-self      die of SIGKILL
//	hang           start a grandchild (sleep 300) in its group, print its
//	               pid ("grandchild N"), ignore SIGTERM and never answer
//	late           on SIGTERM, answer ok and go on serving
//	garbage        answer with a line that is not JSON
//	wrong-id       answer for another job
//	long           answer with a line of 2 MiB
//	partial        write half an answer and exit
//	twice          answer twice
//	proto-stdout   print an answer-like line on stdout, then answer ok
//	pid            print "pid N", then answer ok
//	env            print JOBDAEMON_WORKER and JOB_SLOT, then answer ok
//	echo           print the job as it decoded it (JSON), then answer ok
//	sleep:MS       sleep MS ms, then answer ok
//
// With JOBS_TEST_LINES_START=exit it prints a complaint on stderr and
// exits 3 at once, as a worker script with a syntax error would.
func helperLines() {
	if os.Getenv("JOBS_TEST_LINES_START") == "exit" {
		fmt.Fprintln(os.Stderr, "cannot load the application: config.php missing")
		os.Exit(3)
	}
	answers := os.NewFile(3, "answers")
	answer := func(v any) {
		b, _ := json.Marshal(v)
		if _, err := answers.Write(append(b, '\n')); err != nil {
			os.Exit(4)
		}
	}
	var late chan os.Signal
	in := bufio.NewReaderSize(os.Stdin, 1<<16)
	for {
		line, err := in.ReadBytes('\n')
		if err != nil {
			os.Exit(0) // stdin closed: retired
		}
		var job struct {
			ID      string            `json:"id"`
			Attempt int               `json:"attempt"`
			Slot    int               `json:"slot"`
			Payload []byte            `json:"payload"` // base64, decoded by encoding/json
			Path    *string           `json:"path"`
			Meta    map[string]string `json:"meta"`
		}
		if err := json.Unmarshal(line, &job); err != nil {
			fmt.Fprintln(os.Stderr, "bad job line:", err)
			os.Exit(2)
		}
		ok := map[string]any{"id": job.ID, "ok": true}
		verb, arg, _ := strings.Cut(string(job.Payload), ":")
		switch verb {
		case "ok":
			answer(ok)
		case "fail":
			answer(map[string]any{"id": job.ID, "ok": false, "error": arg})
		case "fail-empty":
			answer(map[string]any{"id": job.ID, "ok": false})
		case "exit":
			code, _ := strconv.Atoi(arg)
			os.Exit(code)
		case "kill-self":
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			time.Sleep(time.Hour)
		case "hang":
			signal.Ignore(syscall.SIGTERM)
			cmd := exec.Command("sleep", "300")
			if err := cmd.Start(); err != nil {
				os.Exit(5)
			}
			fmt.Println("grandchild", cmd.Process.Pid)
			// Not select {}: with no other goroutine, the runtime calls
			// that a deadlock and exits 2. It did not while descriptor 3
			// was non-blocking (os.NewFile put it in the poller).
			for {
				time.Sleep(time.Hour)
			}
		case "late":
			if late == nil {
				late = make(chan os.Signal, 1)
				signal.Notify(late, syscall.SIGTERM)
			}
			fmt.Println("late: waiting for SIGTERM")
			<-late
			answer(ok)
		case "garbage":
			answers.WriteString("PHP Warning: undefined variable $x\n")
		case "wrong-id":
			answer(map[string]any{"id": "someone-else", "ok": true})
		case "long":
			answer(map[string]any{"id": job.ID, "ok": true, "junk": strings.Repeat("x", 2<<20)})
		case "partial":
			answers.WriteString(`{"id":"` + job.ID + `","ok":`)
			os.Exit(0)
		case "twice":
			answer(ok)
			answer(ok)
		case "proto-stdout":
			fmt.Printf("{\"id\":%q,\"ok\":false,\"error\":\"from stdout\"}\n", job.ID)
			answer(ok)
		case "pid":
			fmt.Println("pid", os.Getpid())
			answer(ok)
		case "env":
			fmt.Printf("JOBDAEMON_WORKER=%s JOB_SLOT=%s\n", os.Getenv("JOBDAEMON_WORKER"), os.Getenv("JOB_SLOT"))
			answer(ok)
		case "echo":
			b, _ := json.Marshal(job)
			fmt.Println(string(b))
			answer(ok)
		case "sleep":
			ms, _ := strconv.Atoi(arg)
			time.Sleep(time.Duration(ms) * time.Millisecond)
			answer(ok)
		default:
			answer(map[string]any{"id": job.ID, "ok": false, "error": "unknown job " + verb})
		}
	}
}

// workerApp is testApp with command workers: the test binary as
// helperLines. With process set, WorkerCommand says nil, and each job is
// a process of its own (/bin/sh with the payload as its script).
type workerApp struct {
	*testApp
	env     []string // added to the worker's environment
	process bool
	spec    *Spec // the worker's command, instead of this test binary
	calls   int   // WorkerCommand calls
}

func (w *workerApp) Command(ctx context.Context, job *Job) (*Spec, error) {
	return &Spec{Path: "/bin/sh", Args: []string{"sh", "-c", string(job.Payload)}}, nil
}

func (w *workerApp) WorkerCommand(ctx context.Context, slot int) (*Spec, error) {
	w.calls++
	if w.process {
		return nil, nil
	}
	if w.spec != nil {
		return w.spec, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	env := append(os.Environ(), envLinesWorker+"=1", "JOB_SLOT=wrong")
	return &Spec{Path: self, Args: []string{"lines-worker"}, Env: append(env, w.env...)}, nil
}

func newWorkerApp(payloads ...string) *workerApp {
	return &workerApp{testApp: newTestApp(payloads...)}
}

// runWorkers runs a daemon for w until all its results are in, then drains
// it, and returns the results.
func runWorkers(t *testing.T, w *workerApp, opts Options) map[string]Result {
	t.Helper()
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	opts.NoSignals = true
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	d, err := New(w, opts)
	if err != nil {
		t.Fatal(err)
	}
	w.d = d
	errc := make(chan error, 1)
	go func() { errc <- d.Run(context.Background()) }()
	select {
	case <-w.allDone:
	case err := <-errc:
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(120 * time.Second):
		w.mu.Lock()
		t.Fatalf("only %d of %d results after 120 s", len(w.results), w.want)
	}
	d.Stop(Drain)
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	noZombies(t)
	return w.results
}

// zombies returns the pids of this process's children that have exited
// and not been reaped.
func zombies() []int {
	ents, _ := os.ReadDir("/proc")
	self := strconv.Itoa(os.Getpid())
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[0] == "Z" && f[1] == self {
			out = append(out, pid)
		}
	}
	return out
}

// noZombies fails the test if a child of this process is left a zombie.
func noZombies(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for z := zombies(); len(z) > 0; z = zombies() {
		if time.Now().After(deadline) {
			t.Errorf("zombie children left: %v", z)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid is a process that has not exited (a zombie
// has).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z"
}
