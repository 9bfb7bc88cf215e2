package lifecycle

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary is its own helper process, as in os/exec's tests:
// TestMain runs the helper named by envTestHelper instead of the tests.
// Helpers exercise what only a separate process can show: the double fork,
// a lock held by another process, a privilege drop that cannot be undone.
const (
	envTestHelper = "LIFECYCLE_TEST_HELPER" // helper mode
	envTestArg    = "LIFECYCLE_TEST_ARG"    // its argument (a path)
)

// testHelpers maps a mode to a function returning the exit status.
var testHelpers = map[string]func() int{
	"daemon-ready": helperDaemonReady,
	"daemon-fail":  helperDaemonFail,
	"daemon-crash": func() int { return 3 },
	"daemon-hang":  helperDaemonHang,
	"fds":          helperFDs,
	"lockpid":      helperLockPID,
	"privdrop":     helperPrivDrop,
}

func TestMain(m *testing.M) {
	// As in main: in Daemonize's intermediate child this never returns.
	ContinueDaemonize()
	if mode := os.Getenv(envTestHelper); mode != "" {
		h := testHelpers[mode]
		if h == nil {
			fmt.Fprintf(os.Stderr, "unknown helper %q\n", mode)
			os.Exit(2)
		}
		os.Exit(h())
	}
	os.Exit(m.Run())
}

// helperEnv is the environment for a helper: ours without the variables
// this package interprets, plus the mode and its argument.
func helperEnv(mode, arg string) []string {
	env := withoutEnv(os.Environ(), EnvDaemonized, envReportFD, envIntermediate,
		envTestHelper, envTestArg, "NOTIFY_SOCKET", "INVOCATION_ID")
	// The race detector sleeps a second at exit by default, waiting for
	// other threads to report; helpers exit often, and have nothing to wait
	// for.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	env = withoutEnv(env, "GORACE")
	return append(env, envTestHelper+"="+mode, envTestArg+"="+arg, "GORACE="+gorace)
}

// helperCommand returns a command running the helper as a direct child.
func helperCommand(t *testing.T, mode, arg string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = helperEnv(mode, arg)
	return cmd
}

// requireRoot skips a test that needs root, unless CI=true, where the
// environment is meant to provide it and a skip would hide a gap.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root, and CI=true")
	}
	t.Skip("needs root")
}

// procStat returns the fields of /proc/<pid>/stat after the command name:
// [0] is the state, [1] ppid, [2] pgrp, [3] session, [4] tty_nr.
func procStat(pid string) ([]string, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return nil, err
	}
	s := string(b)
	// The command name is in parentheses and may itself contain ") ".
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("bad stat %q", s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 5 {
		return nil, fmt.Errorf("bad stat %q", s)
	}
	return f, nil
}

// killAndWait kills a process that is not our child and waits until it is
// gone; a zombie counts as gone, since only its parent (init, or whatever
// subreaper adopted it) can reap it.
func killAndWait(t *testing.T, pid int) {
	t.Helper()
	if pid <= 0 {
		return
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return // already gone
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		f, err := procStat(strconv.Itoa(pid))
		if errors.Is(err, fs.ErrNotExist) || (err == nil && f[0] == "Z") {
			return
		}
	}
	t.Errorf("process %d still there 10s after SIGKILL", pid)
}
