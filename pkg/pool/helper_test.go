package pool

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary is its own helper process, as in os/exec's tests:
// POOL_HELPER selects what it does instead of running the tests.
const helperEnv = "POOL_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "worker":
		helperWorker()
	case "daemon":
		helperDaemon()
	case "cmd":
		helperCommand(os.Args[1:])
	case "lines":
		helperLines()
	default:
		// The helpers of the isolation tests (isolation_helper_test.go).
		if runIsolationHelper(os.Getenv(helperEnv), os.Args[1:]) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", helperEnv, os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// helperCommand runs one of a few behaviours a job can have.
func helperCommand(args []string) {
	switch args[0] {
	case "exit":
		code, _ := strconv.Atoi(args[1])
		os.Exit(code)
	case "env":
		for _, kv := range os.Environ() {
			fmt.Println(kv)
		}
	case "fds":
		ents, _ := os.ReadDir("/proc/self/fd")
		for _, e := range ents {
			fmt.Println(e.Name())
		}
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		time.Sleep(time.Hour)
	case "spew":
		// A line far longer than any buffer, with no newline at all.
		n, _ := strconv.Atoi(args[1])
		w := bufio.NewWriterSize(os.Stdout, 1<<16)
		for i := 0; i < n; i++ {
			w.WriteByte('x')
		}
		w.Flush()
	case "lines":
		n, _ := strconv.Atoi(args[1])
		for i := 0; i < n; i++ {
			fmt.Printf("line %d\n", i)
			fmt.Fprintf(os.Stderr, "err %d\n", i)
		}
	}
	os.Exit(0)
}

// helperWorker answers jobs over its channel: "ok" → "done:ok",
// "exit:N" exits at once, "sleep" hangs, "call:X" asks the parent X and
// returns its answer.
func helperWorker() {
	conn, err := OpenChild()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for {
		job, err := conn.Next()
		if err == io.EOF {
			os.Exit(0)
		}
		s := string(job)
		switch {
		case strings.HasPrefix(s, "exit:"):
			code, _ := strconv.Atoi(s[5:])
			os.Exit(code)
		case s == "sleep":
			fmt.Println("sleeping")
			time.Sleep(time.Hour)
		case s == "grow":
			// Touch 64 MiB and keep it: the resident set grows.
			ballast = make([]byte, 64<<20)
			for i := range ballast {
				ballast[i] = 1
			}
			conn.Reply([]byte("grown"))
		case s == "huge-header":
			// A frame whose header claims more than MaxMessage, written
			// past the channel: a broken worker.
			hdr := []byte{msgResult, 0, 0, 0, 0}
			binary.LittleEndian.PutUint32(hdr[1:], MaxMessage+1)
			syscall.Write(4, hdr)
			time.Sleep(time.Hour)
		case strings.HasPrefix(s, "call:"):
			r, err := conn.Call([]byte(s[5:]))
			if err != nil {
				os.Exit(3)
			}
			conn.Reply(r)
		default:
			conn.Reply(append([]byte("done:"), job...))
		}
	}
}

var ballast []byte

// helperDaemon starts 4 sleeping command children, a sleeping Go worker
// and a sleeping command worker, prints their pids, and waits to be killed.
func helperDaemon() {
	p, err := New(Config{Max: 6})
	if err != nil {
		panic(err)
	}
	self, _ := os.Executable()
	for i := 0; i < 4; i++ {
		slot, _ := p.TryAcquire()
		c, err := p.Start(slot, &Spec{Path: "/bin/sleep", Args: []string{"sleep", "300"}})
		if err != nil {
			panic(err)
		}
		fmt.Println(c.Pid)
	}
	slot, _ := p.TryAcquire()
	w, err := p.StartWorker(slot, &WorkerSpec{Spec: Spec{Path: self, Env: append(os.Environ(), helperEnv+"=worker")}})
	if err != nil {
		panic(err)
	}
	w.Send([]byte("sleep"))
	fmt.Println(w.Pid)
	slot, _ = p.TryAcquire()
	lw, err := p.StartWorker(slot, &WorkerSpec{Protocol: ProtocolLines, Spec: Spec{Path: "/bin/sleep", Args: []string{"sleep", "300"}}})
	if err != nil {
		panic(err)
	}
	lw.Send([]byte("job"))
	fmt.Println(lw.Pid)
	time.Sleep(time.Hour)
}

// helperSpec re-executes the test binary as a command child.
func helperSpec(t testing.TB, args ...string) *Spec {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &Spec{
		Path: self,
		Args: append([]string{"helper"}, args...),
		Env:  append(os.Environ(), helperEnv+"=cmd", "GORACE=atexit_sleep_ms=0"),
	}
}

func workerSpec(t testing.TB) *WorkerSpec {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &WorkerSpec{Spec: Spec{Path: self, Env: append(os.Environ(), helperEnv+"=worker", "GORACE=atexit_sleep_ms=0")}}
}

// exits collects the children a pool reports through OnExit.
type exits struct {
	mu   sync.Mutex
	all  []*Child
	cond chan struct{}
}

func newExits() *exits { return &exits{cond: make(chan struct{}, 1)} }

func (e *exits) add(c *Child) {
	e.mu.Lock()
	e.all = append(e.all, c)
	e.mu.Unlock()
	select {
	case e.cond <- struct{}{}:
	default:
	}
}

func (e *exits) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.all)
}

func newPool(t testing.TB, cfg Config) *Pool {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Stop(ctx, Immediate, StopOptions{}); err != nil {
			t.Errorf("stop: %v", err)
		}
		p.Close()
	})
	return p
}

func mustStart(t testing.TB, p *Pool, spec *Spec) *Child {
	t.Helper()
	slot, ok := p.TryAcquire()
	if !ok {
		t.Fatal("no free slot")
	}
	c, err := p.Start(slot, spec)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitDone(t testing.TB, c *Child, d time.Duration) *Exit {
	t.Helper()
	select {
	case <-c.Done():
		return c.Exit()
	case <-time.After(d):
		t.Fatalf("child %d did not end within %v", c.Pid, d)
		return nil
	}
}

// alive reports whether pid is a live process; a zombie is not alive.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// eventually polls cond until it holds or d passes.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}
