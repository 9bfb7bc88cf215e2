package lifecycle

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

const nobody = 65534 // nobody, and the nogroup group, on Debian

// privObs is what the privdrop helper reports after dropping to nobody.
type privObs struct {
	DropErr     string
	Threads     map[string][]string // task id -> Uid:, Gid:, Groups: lines
	LockedTasks int                 // threads held by LockOSThread goroutines
	SetuidErr   string              // setuid(0) afterwards
	SetgidErr   string              // setgid(0) afterwards
	AgainErr    string              // DropPrivileges to nobody again: a no-op
	OtherErr    string              // DropPrivileges to another user: refused
}

// helperPrivDrop drops to nobody while goroutines hold their OS threads, so
// that the drop has threads other than its own to reach.
func helperPrivDrop() int {
	const locked = 4
	ready := make(chan int)
	release := make(chan struct{})
	for i := 0; i < locked; i++ {
		go func() {
			runtime.LockOSThread()
			ready <- syscall.Gettid()
			<-release
		}()
	}
	tids := map[int]bool{}
	for i := 0; i < locked; i++ {
		tids[<-ready] = true
	}

	var obs privObs
	obs.LockedTasks = len(tids)
	if err := DropPrivileges(nobody, nobody, nil); err != nil {
		obs.DropErr = err.Error()
	}
	obs.Threads = map[string][]string{}
	tasks, _ := filepath.Glob("/proc/self/task/*/status")
	for _, name := range tasks {
		b, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "Uid:") || strings.HasPrefix(l, "Gid:") || strings.HasPrefix(l, "Groups:") {
				lines = append(lines, strings.Join(strings.Fields(l), " "))
			}
		}
		obs.Threads[filepath.Base(filepath.Dir(name))] = lines
	}
	if err := syscall.Setuid(0); err != nil {
		obs.SetuidErr = err.Error()
	}
	if err := syscall.Setgid(0); err != nil {
		obs.SetgidErr = err.Error()
	}
	if err := DropPrivileges(nobody, nobody, nil); err != nil {
		obs.AgainErr = err.Error()
	}
	if err := DropPrivileges(1, 1, nil); err != nil {
		obs.OtherErr = err.Error()
	}
	close(release)
	json.NewEncoder(os.Stdout).Encode(obs)
	return 0
}

func TestDropPrivileges(t *testing.T) {
	requireRoot(t)
	out, err := helperCommand(t, "privdrop", "").Output()
	if err != nil {
		t.Fatalf("privdrop helper: %v", err)
	}
	var obs privObs
	if err := json.Unmarshal(out, &obs); err != nil {
		t.Fatalf("privdrop helper said %q: %v", out, err)
	}
	if obs.DropErr != "" {
		t.Fatalf("DropPrivileges: %s", obs.DropErr)
	}
	// The main thread, the 4 locked ones, and the runtime's (sysmon...).
	if len(obs.Threads) < obs.LockedTasks+1 || obs.LockedTasks != 4 {
		t.Errorf("saw %d threads with %d locked; want more than 4 locked", len(obs.Threads), obs.LockedTasks)
	}
	want := []string{"Uid: 65534 65534 65534 65534", "Gid: 65534 65534 65534 65534", "Groups:"}
	for tid, lines := range obs.Threads {
		if strings.Join(lines, "|") != strings.Join(want, "|") {
			t.Errorf("thread %s: %q, want %q", tid, lines, want)
		}
	}
	if obs.SetuidErr == "" {
		t.Errorf("setuid(0) succeeded after the drop")
	}
	if obs.SetgidErr == "" {
		t.Errorf("setgid(0) succeeded after the drop")
	}
	if obs.AgainErr != "" {
		t.Errorf("DropPrivileges to the current user: %s, want nil", obs.AgainErr)
	}
	if !strings.Contains(obs.OtherErr, "only root can switch users") {
		t.Errorf("DropPrivileges as nobody to uid 1: %q, want advice to start as root", obs.OtherErr)
	}
}

func TestDropPrivilegesInvalid(t *testing.T) {
	if err := DropPrivileges(-1, 0, nil); err == nil {
		t.Error("DropPrivileges(-1, ...) = nil")
	}
}
