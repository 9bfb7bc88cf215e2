package pool

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The helpers of the isolation tests, selected by POOL_HELPER: job
// commands, and daemons that the tests kill, run as another user, or run
// as a systemd unit.
const (
	isoCmd        = "isocmd"      // a job: spin DURATION, alloc MIB
	isoCrash      = "isocrash"    // a daemon whose jobs leave processes behind
	isoReportMode = "isoreport"   // a daemon that reports its isolation and one job
	isoUnit       = "isounit"     // the daemon of a systemd unit in the testbed
	isoDelegate   = "isodelegate" // a daemon that delegates a cgroup, then drops to nobody
)

// markEnv marks every process of a test's jobs: what a job forks inherits
// it, so a scan of /proc finds whatever a job left, whatever it printed.
const markEnv = "POOLTEST_MARK"

func runIsolationHelper(mode string, args []string) bool {
	switch mode {
	case isoCmd:
		isoCommand(args)
	case isoCrash:
		isoCrashDaemon(args)
	case isoReportMode:
		isoReportDaemon(args)
	case isoUnit:
		isoUnitDaemon()
	case isoDelegate:
		isoDelegateDaemon(args)
	default:
		return false
	}
	return true
}

// isoCommand: "spin D FILE" uses D of CPU time, then creates FILE;
// "alloc N" touches N MiB.
func isoCommand(args []string) {
	switch args[0] {
	case "spin":
		d, _ := time.ParseDuration(args[1])
		for {
			var ru syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
			if time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) >= d {
				break
			}
			for i := 0; i < 1e6; i++ {
				spinSink += i
			}
		}
		os.WriteFile(args[2], nil, 0o644)
	case "alloc":
		n, _ := strconv.Atoi(args[1])
		ballast = make([]byte, n<<20)
		for i := 0; i < len(ballast); i += 4096 {
			ballast[i] = 1
		}
	}
}

// scenario is a job that tries to leave something behind.
type scenario struct {
	Name   string
	Script string // sh; $PIDFILE names a file for a grandchild's pid
	// Timeout, if set, stops the job; KillLeader kills its leader from
	// outside once it printed the pid of what it left.
	Timeout    time.Duration
	KillLeader bool
	// Setsid: what it leaves escapes its process group.
	Setsid bool
}

// setsidChild double-forks a grandchild into a session of its own, waits
// until it wrote its pid, and prints it.
const setsidChild = `( setsid sh -c 'echo $$ >"$PIDFILE.tmp"; mv "$PIDFILE.tmp" "$PIDFILE"; exec sleep 300' </dev/null >/dev/null 2>&1 & )
while [ ! -s "$PIDFILE" ]; do sleep 0.01; done
cat "$PIDFILE"
`

var spinSink int

var scenarios = []scenario{
	{Name: "background", Script: `sleep 300 & echo $!`},
	{Name: "setsid", Script: setsidChild, Setsid: true},
	{Name: "leader-killed", Script: `sleep 300 & echo $!; wait`, KillLeader: true},
	{Name: "timeout", Script: `sleep 300 & echo $!; wait`, Timeout: 1500 * time.Millisecond},
	{Name: "timeout-setsid", Script: setsidChild + "sleep 300\n", Timeout: 3 * time.Second, Setsid: true},
}

// scenarioResult is what runScenario saw.
type scenarioResult struct {
	Name        string
	Exit        string
	TimedOut    bool
	Leftover    int  // the pid the job printed
	AliveBefore bool // the leftover ran before the leader was killed
	Cgroup      string
	CgroupLeft  bool  // the job's cgroup still exists after the job
	CgroupProcs int   // processes in it, if it does
	Left        []int // processes with the job's mark after the job
	Err         string
}

// lineRouter hands each child's output lines to whoever waits for them,
// by label.
type lineRouter struct {
	mu sync.Mutex
	ch map[string]chan string
}

func newLineRouter() *lineRouter { return &lineRouter{ch: map[string]chan string{}} }

func (r *lineRouter) lines(label string) chan string {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.ch[label]
	if c == nil {
		c = make(chan string, 100)
		r.ch[label] = c
	}
	return c
}

func (r *lineRouter) Line(l Line) {
	select {
	case r.lines(l.Label) <- string(l.Text):
	default:
	}
}

// runScenario runs sc in p and looks for what it left, at once in cgroup
// mode (its cgroup was empty before the job ended) or, in process-group
// mode, within grace (a SIGKILLed process takes a moment to die).
func runScenario(p *Pool, r *lineRouter, sc scenario, tmp string, grace time.Duration) scenarioResult {
	res := scenarioResult{Name: sc.Name}
	mark := fmt.Sprintf("%s-%d-%d", sc.Name, os.Getpid(), time.Now().UnixNano())
	defer func() {
		for _, pid := range markedProcs(mark) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}()
	spec := &Spec{
		Path:      "/bin/sh",
		Args:      []string{"sh", "-c", sc.Script},
		Env:       []string{"PATH=" + os.Getenv("PATH"), markEnv + "=" + mark, "PIDFILE=" + filepath.Join(tmp, mark+".pid")},
		Label:     mark,
		Timeout:   sc.Timeout,
		KillGrace: 5 * time.Second,
	}
	var slot int
	var ok bool
	for i := 0; !ok; i++ {
		if slot, ok = p.TryAcquire(); !ok {
			if i == 1000 {
				res.Err = "no free slot"
				return res
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	c, err := p.Start(slot, spec)
	if err != nil {
		p.Release(slot)
		res.Err = err.Error()
		return res
	}
	select {
	case line := <-r.lines(mark):
		res.Leftover, _ = strconv.Atoi(line)
	case <-time.After(20 * time.Second):
		res.Err = "the job printed no pid"
	}
	if sc.KillLeader {
		res.AliveBefore = res.Leftover > 0 && alive(res.Leftover)
		syscall.Kill(c.Pid, syscall.SIGKILL)
	}
	select {
	case <-c.Done():
	case <-time.After(30 * time.Second):
		res.Err = "the job did not end"
		return res
	}
	e := c.Exit()
	res.Exit, res.TimedOut, res.Cgroup = e.String(), e.TimedOut, c.Cgroup()
	if res.Cgroup != "" {
		if b, err := os.ReadFile(filepath.Join(res.Cgroup, "cgroup.procs")); err == nil {
			res.CgroupLeft = true
			res.CgroupProcs = len(bytes.Fields(b))
		}
	}
	res.Left = markedProcs(mark)
	for deadline := time.Now().Add(grace); len(res.Left) > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		res.Left = markedProcs(mark)
	}
	return res
}

// markedProcs lists the live processes whose environment holds the mark.
func markedProcs(mark string) []int {
	want := []byte(markEnv + "=" + mark + "\x00")
	var pids []int
	for _, pid := range allPids() {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		if err != nil || !bytes.Contains(b, want) {
			continue
		}
		if st, err := readProcStat(pid); err == nil && !st.zombie() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// printJSON writes v as one line of JSON on stdout.
func printJSON(v any) {
	b, _ := json.Marshal(v)
	os.Stdout.Write(append(b, '\n'))
}

func helperFail(err error) {
	fmt.Fprintln(os.Stderr, "helper:", err)
	os.Exit(2)
}

// crashJobs are the 4 jobs of isoCrashDaemon: each leaves processes that
// a SIGKILLed daemon's Pdeathsig does not reach.
var crashJobs = []string{
	`sleep 300 & wait`,
	`sleep 300 & sleep 300 & wait`,
	`sh -c 'sleep 300 & wait' & wait`,
	`(sleep 300 &); sleep 300`,
}

// isoCrashDaemon ARGS: CGROUPS(auto|off|require) STATEDIR CGROUPNAME MARK
// [start]. It prints its Recovery, then the number of processes with the
// mark left right after New; with "start", it starts crashJobs (plus a
// setsid escapee in cgroup mode), prints "ready" when all their processes
// run, and waits to be killed.
func isoCrashDaemon(args []string) {
	mode := map[string]CgroupMode{"auto": CgroupAuto, "off": CgroupOff, "require": CgroupRequire}[args[0]]
	p, err := New(Config{Max: 5, Isolation: Isolation{Cgroups: mode, StateDir: args[1], CgroupName: args[2]}})
	if err != nil {
		helperFail(err)
	}
	mark := args[3]
	printJSON(p.Recovered())
	printJSON(len(markedProcs(mark)))
	if len(args) < 5 {
		p.Close()
		return
	}
	jobs := crashJobs
	if p.Isolation().Cgroups {
		jobs = append(jobs, setsidChild+"sleep 300\n")
	}
	for _, script := range jobs {
		slot, _ := p.TryAcquire()
		_, err := p.Start(slot, &Spec{
			Path: "/bin/sh", Args: []string{"sh", "-c", script},
			Env: []string{"PATH=" + os.Getenv("PATH"), markEnv + "=" + mark, "PIDFILE=" + filepath.Join(args[1], "setsid.pid")},
		})
		if err != nil {
			helperFail(err)
		}
	}
	// Each job's leader and at least one process it leaves.
	for len(markedProcs(mark)) < 2*len(jobs) {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("ready")
	time.Sleep(time.Hour)
}

// logCounter counts the log records whose message contains a string.
type logCounter struct {
	slog.Handler
	mu   *sync.Mutex
	msgs *[]string
}

func (h logCounter) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	*h.msgs = append(*h.msgs, r.Message)
	h.mu.Unlock()
	return h.Handler.Handle(ctx, r)
}

func (h logCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return logCounter{h.Handler.WithAttrs(as), h.mu, h.msgs}
}

// isoReport is what isoReportDaemon prints.
type isoReport struct {
	Uid       int
	Isolation IsolationStatus
	Logged    []string // the pool's log messages
	Result    scenarioResult
}

// isoReportDaemon ARGS: STATEDIR. It runs one job that leaves a process
// behind, as the user it runs as, and prints an isoReport.
func isoReportDaemon(args []string) {
	var mu sync.Mutex
	var msgs []string
	log := slog.New(logCounter{slog.NewTextHandler(os.Stderr, nil), &mu, &msgs})
	r := newLineRouter()
	p, err := New(Config{Max: 1, Sink: r, Logger: log, Isolation: Isolation{StateDir: args[0]}})
	if err != nil {
		helperFail(err)
	}
	res := runScenario(p, r, scenarios[0], args[0], 5*time.Second)
	p.Close()
	mu.Lock()
	defer mu.Unlock()
	printJSON(isoReport{Uid: os.Getuid(), Isolation: p.Isolation(), Logged: msgs, Result: res})
}

// isoDelegateDaemon ARGS: NAME UID. As root, it delegates the cgroup NAME
// to UID, drops to UID, and prints an isoReport of its pool.
func isoDelegateDaemon(args []string) {
	uid, _ := strconv.Atoi(args[1])
	if _, err := DelegateCgroup(args[0], uid, uid); err != nil {
		helperFail(err)
	}
	if err := syscall.Setgroups(nil); err != nil {
		helperFail(err)
	}
	if err := syscall.Setgid(uid); err != nil {
		helperFail(err)
	}
	if err := syscall.Setuid(uid); err != nil {
		helperFail(err)
	}
	r := newLineRouter()
	p, err := New(Config{Max: 1, Sink: r, Isolation: Isolation{Cgroups: CgroupRequire}})
	if err != nil {
		helperFail(err)
	}
	tmp, _ := os.MkdirTemp("", "delegate")
	res := runScenario(p, r, scenarios[1], tmp, 0)
	p.Close()
	os.RemoveAll(tmp)
	printJSON(isoReport{Uid: os.Getuid(), Isolation: p.Isolation(), Result: res})
}

// unitStopReport is what isoUnitDaemon found once its pool stopped.
type unitStopReport struct {
	Took     time.Duration
	Cgroups  []string // the cgroups under the unit's, but the daemon's leaf
	LeafPids []int    // the processes in the daemon's leaf
	Marked   []int    // the processes of its jobs
	Err      string
}

// isoUnitDaemon is the main process of a systemd unit with Delegate=yes.
// It writes into $POOLTEST_OUT: isolation.json, scenarios.json, then
// starts jobs that leave processes behind (one ignores SIGTERM) and
// writes "running"; at SIGTERM it stops them, writes stopped.json with
// what is left in the unit's cgroup, and exits.
func isoUnitDaemon() {
	out := os.Getenv("POOLTEST_OUT")
	// Each file appears whole: the test polls for it and reads it at
	// once, and a file written in place can be read while still empty
	// (TestIsolationUnderSystemd failed so once in CI).
	write := func(name string, v any) {
		b, _ := json.MarshalIndent(v, "", "  ")
		tmp := filepath.Join(out, "."+name+".tmp")
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			helperFail(err)
		}
		if err := os.Rename(tmp, filepath.Join(out, name)); err != nil {
			helperFail(err)
		}
	}
	terms := make(chan os.Signal, 1)
	signal.Notify(terms, syscall.SIGTERM)
	r := newLineRouter()
	p, err := New(Config{Max: 4, Sink: r, Isolation: Isolation{Cgroups: CgroupRequire, StateDir: os.Getenv("RUNTIME_DIRECTORY")}})
	if err != nil {
		write("isolation.json", map[string]string{"Error": err.Error()})
		helperFail(err)
	}
	leaf, _ := SettleCgroup()
	write("isolation.json", map[string]any{"Status": p.Isolation(), "Leaf": leaf})
	tmp, _ := os.MkdirTemp("", "scenarios")
	// The control run of the test skips the scenarios, and exits at TERM
	// without stopping its jobs.
	control := os.Getenv("POOLTEST_CONTROL") != ""
	if !control {
		var results []scenarioResult
		for _, sc := range scenarios {
			results = append(results, runScenario(p, r, sc, tmp, 0))
		}
		write("scenarios.json", results)
	}

	mark := fmt.Sprintf("unit-%d", os.Getpid())
	for _, script := range []string{
		`sleep 300 & wait`,
		setsidChild + "sleep 300\n",
		`trap "" TERM; sleep 300 & wait`,
	} {
		slot, _ := p.TryAcquire()
		_, err := p.Start(slot, &Spec{
			Path: "/bin/sh", Args: []string{"sh", "-c", script},
			Env: []string{"PATH=" + os.Getenv("PATH"), markEnv + "=" + mark, "PIDFILE=" + filepath.Join(tmp, "running.pid")},
		})
		if err != nil {
			helperFail(err)
		}
	}
	for len(markedProcs(mark)) < 6 {
		time.Sleep(10 * time.Millisecond)
	}
	write("running", len(markedProcs(mark)))

	<-terms
	if control {
		os.Exit(0)
	}
	start := time.Now()
	var rep unitStopReport
	if err := p.Stop(context.Background(), Graceful, StopOptions{Signal: syscall.SIGTERM, Timeout: 2 * time.Second}); err != nil {
		rep.Err = err.Error()
	}
	rep.Took = time.Since(start)
	rep.Marked = markedProcs(mark)
	if err := p.Close(); err != nil && rep.Err == "" {
		rep.Err = err.Error()
	}
	unit := filepath.Dir(leaf)
	filepath.WalkDir(unit, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && path != unit && path != leaf {
			rep.Cgroups = append(rep.Cgroups, strings.TrimPrefix(path, unit+"/"))
		}
		return nil
	})
	b, _ := os.ReadFile(filepath.Join(leaf, "cgroup.procs"))
	for _, f := range bytes.Fields(b) {
		pid, _ := strconv.Atoi(string(f))
		rep.LeafPids = append(rep.LeafPids, pid)
	}
	write("stopped.json", rep)
}
