package lifecycle

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// cgoBuild reports whether this test binary is built with cgo, which
// cannot change capabilities on every thread.
func cgoBuild() bool {
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_GETPID, 0, 0, 0)
	return errno == syscall.ENOTSUP
}

// In a cgo build, DropPrivilegesKeepCaps says why it cannot, and changes
// nothing: the process is still root.
func TestKeepCapsRefusedWithCgo(t *testing.T) {
	if !cgoBuild() {
		t.Skip("this test binary is built without cgo")
	}
	if os.Geteuid() != 0 {
		if err := DropPrivilegesKeepCaps(nobody, nobody, nil, JobCaps); err == nil {
			t.Error("a process that is not root kept capabilities through a drop")
		}
		return
	}
	err := DropPrivilegesKeepCaps(nobody, nobody, nil, JobCaps)
	if !errors.Is(err, ErrThreadCaps) {
		t.Fatalf("DropPrivilegesKeepCaps = %v, want ErrThreadCaps", err)
	}
	if ruid, euid, suid := unix.Getresuid(); ruid != 0 || euid != 0 || suid != 0 {
		t.Fatalf("uids %d/%d/%d after the refusal", ruid, euid, suid)
	}
	if !HasCaps(unix.CAP_SYS_ADMIN, unix.CAP_SETUID) {
		t.Error("capabilities lost after the refusal")
	}
}

// Built without cgo, a root process drops to nobody on every thread
// (those that goroutines hold locked too) and keeps exactly CAP_SETUID,
// CAP_SETGID and CAP_KILL, permitted and effective, bounded, never
// inheritable or ambient.
func TestKeepCapsOnEveryThread(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test needs root")
		}
		t.Skip("this test needs root")
	}
	bin := filepath.Join(t.TempDir(), "keepcaps")
	build := exec.Command("go", "build", "-o", bin, "./testdata/keepcaps")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the helper: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	var got struct {
		Error   string
		Threads map[string][]string
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got.Error != "" {
		t.Fatalf("DropPrivilegesKeepCaps: %s", got.Error)
	}
	if len(got.Threads) < 5 {
		t.Errorf("only %d threads seen", len(got.Threads))
	}
	want := []string{
		"Uid: 65534 65534 65534 65534",
		"CapInh: 0000000000000000",
		"CapPrm: 00000000000000e0",
		"CapEff: 00000000000000e0",
		"CapBnd: 00000000000000e0",
		"CapAmb: 0000000000000000",
	}
	for tid, lines := range got.Threads {
		for _, w := range want {
			if !slices.Contains(lines, w) {
				t.Errorf("thread %s: %q, want %q", tid, lines, w)
			}
		}
	}
}
