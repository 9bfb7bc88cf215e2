package integration

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// notifySocket is a fake systemd notify socket: it keeps every datagram.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	return n
}

func (n *notifySocket) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// find returns the index of the first datagram from index from on that
// starts with prefix, or -1.
func (n *notifySocket) find(from int, prefix string) int {
	for i, m := range n.all() {
		if i >= from && strings.HasPrefix(m, prefix) {
			return i
		}
	}
	return -1
}

// The sd_notify protocol, datagram by datagram, with a fake systemd:
// READY=1 once the PID file and the control socket are there;
// RELOADING=1 with MONOTONIC_USEC, then READY=1, for each reload (with
// the reason in STATUS= when refused); STOPPING=1 and EXTEND_TIMEOUT_USEC
// while a stop waits for a job that ignores TERM; ERRNO= when start-up
// fails.
func TestNotifyProtocol(t *testing.T) {
	e := newEnv(t, "")
	e.longJobs()
	os.WriteFile(filepath.Join(e.dir, "job.sh"), []byte(strings.Replace(jobScript, "*)",
		"stubborn) trap '' TERM; sleep 300 & wait ;;\n*)", 1)), 0o755)
	n := newNotifySocket(t)
	d := &daemon{Cmd: e.cmd("run"), out: &syncBuffer{}, waited: make(chan struct{})}
	d.Env = append(d.Env, "NOTIFY_SOCKET="+n.path)
	d.Stdout, d.Stderr = d.out, d.out
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.Wait(); close(d.waited) }()
	t.Cleanup(func() { d.Process.Kill(); <-d.waited })
	waitFor := func(what string, cond func() bool) { t.Helper(); e.waitFor(what, d, cond) }

	waitFor("READY=1", func() bool { return n.find(0, "READY=1") >= 0 })
	// At READY=1 everything is in place: no waiting needed.
	pid, _ := os.ReadFile(filepath.Join(e.dir, "jobdaemon.pid"))
	if strings.TrimSpace(string(pid)) != strconv.Itoa(d.Process.Pid) {
		t.Errorf("PID file at READY=1: %q, want %d", pid, d.Process.Pid)
	}
	if code, out := e.run("status"); code != 0 {
		t.Errorf("control socket at READY=1: exit %d\n%s", code, out)
	}
	if ready := n.all()[n.find(0, "READY=1")]; !strings.Contains(ready, "\nSTATUS=0/8 busy, 0 queued, 0 completed, 0 failed") {
		t.Errorf("READY=1 datagram: %q", ready)
	}

	// A reload: RELOADING=1 and MONOTONIC_USEC in one datagram, then READY=1.
	var mono unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono); err != nil {
		t.Fatal(err)
	}
	before := mono.Nano() / 1000
	mark := len(n.all())
	if code, out := e.run("reload"); code != 0 {
		t.Fatalf("reload: exit %d\n%s", code, out)
	}
	i := n.find(mark, "RELOADING=1")
	if i < 0 {
		t.Fatalf("no RELOADING=1 after %d: %q", mark, n.all())
	}
	msg := n.all()[i]
	_, usec, ok := strings.Cut(msg, "\nMONOTONIC_USEC=")
	if v, err := strconv.ParseInt(usec, 10, 64); !ok || err != nil || v < before || v > before+30_000_000 {
		t.Errorf("RELOADING datagram %q: want MONOTONIC_USEC from the monotonic clock (%d)", msg, before)
	}
	if n.find(i, "READY=1") < 0 {
		t.Errorf("no READY=1 after RELOADING=1: %q", n.all()[i:])
	}

	// A refused reload ends in READY=1 too (the daemon runs on), saying why.
	good, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, []byte(strings.Replace(string(good), "max_children = 8", "max_children = -1", 1)), 0o644)
	mark = len(n.all())
	if code, _ := e.run("reload"); code != 1 {
		t.Errorf("broken reload: exit %d, want 1", code)
	}
	i = n.find(mark, "RELOADING=1")
	j := n.find(i+1, "READY=1")
	if i < 0 || j < 0 || !strings.Contains(n.all()[j], "reload refused") || !strings.Contains(n.all()[j], "pool.max_children") {
		t.Errorf("refused reload: %q", n.all()[mark:])
	}
	os.WriteFile(e.config, good, 0o644)

	// A graceful stop that waits for a job ignoring TERM: STOPPING=1,
	// then EXTEND_TIMEOUT_USEC for the time it may still take.
	e.put("stubborn", "stubborn\n")
	waitFor("the job runs", func() bool { return e.status().Busy == 1 })
	mark = len(n.all())
	stopAt := time.Now()
	d.Process.Signal(syscall.SIGTERM)
	waitFor("EXTEND_TIMEOUT_USEC", func() bool { return n.find(mark, "EXTEND_TIMEOUT_USEC=") >= 0 })
	if n.find(mark, "STOPPING=1") < 0 || n.find(mark, "STOPPING=1") > n.find(mark, "EXTEND_TIMEOUT_USEC=") {
		t.Errorf("STOPPING=1 should come first: %q", n.all()[mark:])
	}
	ext := n.all()[n.find(mark, "EXTEND_TIMEOUT_USEC=")]
	v, err := strconv.ParseInt(strings.TrimPrefix(ext, "EXTEND_TIMEOUT_USEC="), 10, 64)
	// stop_timeout 5s + kill_grace 500ms + a 5s margin, less what passed.
	if left := 10500*time.Millisecond - time.Since(stopAt); err != nil || time.Duration(v)*time.Microsecond > 10500*time.Millisecond ||
		time.Duration(v)*time.Microsecond < left-time.Second {
		t.Errorf("%q: want about %v", ext, left)
	}
	<-d.waited
	// The interrupted job went back to incoming/: the next daemon must not
	// run it (it is killed at the end of the test, and a SIGKILLed daemon
	// cannot stop what its jobs started).
	if err := os.Remove(filepath.Join(e.spool, "incoming", "stubborn")); err != nil {
		t.Errorf("the interrupted job is not back in incoming/: %v", err)
	}

	// A start that fails says why: ERRNO= and STATUS=.
	blocker := e.start() // holds the PID file
	e.waitFor("first daemon", blocker, func() bool { code, _ := e.run("status"); return code == 0 })
	n2 := newNotifySocket(t)
	c := e.cmd("run")
	c.Env = append(c.Env, "NOTIFY_SOCKET="+n2.path)
	if out, err := c.CombinedOutput(); err == nil || !strings.Contains(string(out), "already running") {
		t.Errorf("second daemon: %v\n%s", err, out)
	}
	if n2.find(0, "ERRNO=") < 0 || n2.find(0, "STATUS=start-up failed") < 0 || n2.find(0, "READY=1") >= 0 {
		t.Errorf("failed start-up told systemd: %q", n2.all())
	}
}
