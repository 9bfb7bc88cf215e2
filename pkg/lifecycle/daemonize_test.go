package lifecycle

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// daemonObs is what the daemon helper saw of itself after Detach and Ready.
type daemonObs struct {
	Pid, Ppid, Pgid, Sid, TTY int
	Args                      []string          // argv after argv[0]
	Cwd                       string            // from getcwd
	Umask                     string            // the Umask: line of /proc/self/status
	FDs                       map[string]string // open fd -> readlink target
	Daemonized                string            // value of EnvDaemonized
	ReportVar, IntermVar      bool              // private variables still set
	ReadyErr                  string
	Comm                      string // the command name ps and pgrep show
}

func helperDaemonReady() int {
	rep, err := Detach()
	if err != nil || rep == nil {
		return 1 // Daemonize reports "exited during start-up"
	}
	readyErr := rep.Ready()
	obs := daemonObs{FDs: listFDs()}
	if readyErr != nil {
		obs.ReadyErr = readyErr.Error()
	}
	obs.Pid = os.Getpid()
	if f, err := procStat("self"); err == nil {
		obs.Ppid, _ = strconv.Atoi(f[1])
		obs.Pgid, _ = strconv.Atoi(f[2])
		obs.Sid, _ = strconv.Atoi(f[3])
		obs.TTY, _ = strconv.Atoi(f[4])
	}
	obs.Args = os.Args[1:]
	if b, err := os.ReadFile("/proc/self/comm"); err == nil {
		obs.Comm = strings.TrimSpace(string(b))
	}
	obs.Cwd, _ = os.Getwd()
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				obs.Umask = strings.TrimSpace(v)
			}
		}
	}
	obs.Daemonized = os.Getenv(EnvDaemonized)
	_, obs.ReportVar = os.LookupEnv(envReportFD)
	_, obs.IntermVar = os.LookupEnv(envIntermediate)
	writeJSONFile(os.Getenv(envTestArg), obs)
	time.Sleep(time.Hour) // until the test kills it
	return 0
}

func helperDaemonFail() int {
	rep, err := Detach()
	if err != nil {
		return 1
	}
	rep.Fail(78, errors.New("config.toml:3: bad"))
	return 1
}

func helperDaemonHang() int {
	if _, err := Detach(); err != nil {
		return 1
	}
	time.Sleep(time.Hour) // never reports; until the test kills it
	return 0
}

// helperFDs prints the fds of a fresh Go process started with only stdio:
// the runtime's own (epoll, eventfd) that any daemon will have too.
func helperFDs() int {
	json.NewEncoder(os.Stdout).Encode(listFDs())
	return 0
}

// listFDs returns this process's open fds and what they point to. The fd
// of the directory being read is closed before its link is read, and so
// left out.
func listFDs() map[string]string {
	fds := map[string]string{}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			fds[e.Name()] = target
		}
	}
	return fds
}

// writeJSONFile writes v to path atomically, so the test never reads half.
func writeJSONFile(path string, v any) {
	b, _ := json.Marshal(v)
	tmp := path + ".tmp"
	if os.WriteFile(tmp, b, 0o644) == nil {
		os.Rename(tmp, path)
	}
}

// readJSONFile waits for the file a helper writes with writeJSONFile.
func readJSONFile(t *testing.T, path string, v any) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, err := os.ReadFile(path)
		if err == nil {
			if err := json.Unmarshal(b, v); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("helper did not write %s: %v", path, err)
		}
	}
}

func TestDaemonize(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "obs.json")

	// An fd without FD_CLOEXEC, as a shell or an init script may leave
	// open: the intermediate child inherits it, the daemon must not.
	stray := filepath.Join(dir, "stray")
	if err := os.WriteFile(stray, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	strayFD, err := unix.Open(stray, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(strayFD)

	pid, err := Daemonize([]string{"run", "--config", "x.toml"}, helperEnv("daemon-ready", out), 30*time.Second)
	if err != nil {
		t.Fatalf("Daemonize: %v", err)
	}
	t.Cleanup(func() { killAndWait(t, pid) })
	var obs daemonObs
	readJSONFile(t, out, &obs)
	exe, _ := os.Executable()
	if want := filepath.Base(exe); obs.Comm == "" || !strings.HasPrefix(want, obs.Comm) {
		t.Errorf("the daemon's command name is %q, want the binary's (%q), not \"exe\"", obs.Comm, want)
	}

	self, err := procStat("self")
	if err != nil {
		t.Fatal(err)
	}
	if pid != obs.Pid {
		t.Errorf("Daemonize returned pid %d, the daemon is %d", pid, obs.Pid)
	}
	if obs.Ppid == os.Getpid() {
		t.Errorf("daemon's parent is the test process")
	}
	if obs.Sid == obs.Pid {
		t.Errorf("daemon is a session leader (sid %d)", obs.Sid)
	}
	if strconv.Itoa(obs.Sid) == self[3] {
		t.Errorf("daemon is in the test's session %d", obs.Sid)
	}
	if strconv.Itoa(obs.Pgid) == self[2] {
		t.Errorf("daemon is in the test's process group %d", obs.Pgid)
	}
	if obs.TTY != 0 {
		t.Errorf("daemon has a controlling tty: tty_nr %d", obs.TTY)
	}
	if want := []string{"run", "--config", "x.toml"}; !slices.Equal(obs.Args, want) {
		t.Errorf("daemon args %q, want %q", obs.Args, want)
	}
	if obs.Cwd != "/" {
		t.Errorf("daemon cwd %q, want /", obs.Cwd)
	}
	if obs.Umask != "0027" {
		t.Errorf("daemon umask %q, want 0027", obs.Umask)
	}
	if obs.Daemonized != "1" || obs.ReportVar || obs.IntermVar {
		t.Errorf("daemon env: %s=%q, report fd var set %v, intermediate var set %v",
			EnvDaemonized, obs.Daemonized, obs.ReportVar, obs.IntermVar)
	}
	if obs.ReadyErr != "" {
		t.Errorf("Ready: %s", obs.ReadyErr)
	}

	// The runtime's own fds are those a fresh Go process opens itself: the
	// netpoller's epoll and eventfd, and since Go 1.25 the cgroup CPU limit
	// files it watches for GOMAXPROCS. A fresh child also inherits our fds
	// that lack FD_CLOEXEC (the stray above, and whatever go test left
	// open); those must not excuse an fd in the daemon.
	control, err := helperCommand(t, "fds", "").Output()
	if err != nil {
		t.Fatalf("fds helper: %v", err)
	}
	var fresh map[string]string
	if err := json.Unmarshal(control, &fresh); err != nil {
		t.Fatal(err)
	}
	runtimeFD := map[string]bool{}
	for fdText, target := range fresh {
		fd, _ := strconv.Atoi(fdText)
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		inherited := err == nil && flags&unix.FD_CLOEXEC == 0
		if fd > 2 && !inherited {
			runtimeFD[target] = true
		}
	}
	if len(runtimeFD) == len(fresh)-3 {
		t.Errorf("no fd of the fresh process was inherited: the stray fd %d did not reach it", strayFD)
	}
	for _, std := range []string{"0", "1", "2"} {
		if obs.FDs[std] != os.DevNull {
			t.Errorf("daemon fd %s is %q, want %s", std, obs.FDs[std], os.DevNull)
		}
	}
	for fd, target := range obs.FDs {
		if fd != "0" && fd != "1" && fd != "2" && !runtimeFD[target] {
			t.Errorf("daemon has stray fd %s -> %s (a fresh Go process has %v)", fd, target, fresh)
		}
	}
}

func TestDaemonizeErrors(t *testing.T) {
	tests := []struct {
		mode    string
		timeout time.Duration
		want    string
		wantPid bool
	}{
		{"daemon-fail", 30 * time.Second, "daemon failed to start: config.toml:3: bad", false},
		{"daemon-crash", 30 * time.Second, "the daemon exited during start-up", false},
		{"daemon-hang", 2 * time.Second, "did not report within 2s", true},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			start := time.Now()
			pid, err := Daemonize(nil, helperEnv(tt.mode, ""), tt.timeout)
			elapsed := time.Since(start)
			t.Cleanup(func() { killAndWait(t, pid) })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Daemonize: pid %d, err %v; want an error containing %q", pid, err, tt.want)
			}
			var se *StartError
			if tt.mode == "daemon-fail" && (!errors.As(err, &se) || se.Code != 78) {
				t.Errorf("Daemonize: %#v; want a StartError with the daemon's exit status 78", err)
			}
			if !tt.wantPid {
				if pid != 0 {
					t.Errorf("pid %d with error, want 0", pid)
				}
				if elapsed > tt.timeout/2 {
					t.Errorf("took %v, should not have waited for the timeout", elapsed)
				}
				return
			}
			if elapsed < tt.timeout {
				t.Errorf("returned after %v, before the %v timeout", elapsed, tt.timeout)
			}
			// The pid is the still running daemon: it has the helper's env.
			env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
			if err != nil {
				t.Fatalf("pid %d returned with the timeout: %v", pid, err)
			}
			if !slices.Contains(strings.Split(string(env), "\x00"), envTestHelper+"="+tt.mode) {
				t.Errorf("pid %d is not the daemon helper", pid)
			}
		})
	}
}

func TestDetachNotDaemon(t *testing.T) {
	t.Setenv(EnvDaemonized, "")
	if rep, err := Detach(); rep != nil || err != nil {
		t.Fatalf("Detach outside a daemon = %v, %v; want nil, nil", rep, err)
	}
}

func TestDetachWithoutPipe(t *testing.T) {
	// EnvDaemonized set by hand, no report pipe: an error, and nothing
	// changed (still in the test's directory).
	t.Setenv(EnvDaemonized, "1")
	t.Setenv(envReportFD, "")
	os.Unsetenv(envReportFD)
	wd, _ := os.Getwd()
	rep, err := Detach()
	if err == nil || rep != nil {
		t.Fatalf("Detach = %v, %v; want an error", rep, err)
	}
	if now, _ := os.Getwd(); now != wd {
		t.Errorf("Detach failed but changed the directory to %s", now)
	}
	// An fd that is open but not a pipe is refused too.
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	t.Setenv(envReportFD, strconv.Itoa(int(f.Fd())))
	if _, err := Detach(); err == nil || !strings.Contains(err.Error(), "not a pipe") {
		t.Errorf("Detach with a non-pipe report fd: %v", err)
	}
}

func TestReportNil(t *testing.T) {
	var r *Report
	if err := r.Ready(); err != nil {
		t.Errorf("nil Report: Ready = %v", err)
	}
	r.Fail(1, errors.New("x")) // must not panic
}

func TestReportMessages(t *testing.T) {
	long := strings.Repeat("\x00é", 3000) // quoted, far above PIPE_BUF
	tests := []struct {
		name string
		send func(*Report) error
		want report
	}{
		{"ready", (*Report).Ready, report{ready: true, pid: os.Getpid()}},
		{"fail", func(r *Report) error { r.Fail(78, errors.New("bad\nline 2")); return nil },
			report{failed: true, code: 78, text: "bad\nline 2"}},
		{"fail nil", func(r *Report) error { r.Fail(0, nil); return nil },
			report{failed: true, code: 1, text: "unknown error"}},
		{"fail long", func(r *Report) error { r.Fail(300, errors.New(long)); return nil },
			report{failed: true, code: 1, text: long[:900] + "..."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer pr.Close()
			r := &Report{f: pw}
			if err := tt.send(r); err != nil {
				t.Fatal(err)
			}
			// The first call closed the pipe; a second one does nothing.
			if err := r.Ready(); err != nil {
				t.Errorf("second call: %v", err)
			}
			if got := readReport(pr); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
