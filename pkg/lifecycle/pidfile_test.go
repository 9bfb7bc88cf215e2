package lifecycle

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lockResult is what the lockpid helper prints.
type lockResult struct {
	Pid        int    // the helper's pid
	Won        bool   // LockPIDFile succeeded
	RunningPid int    // RunningError.Pid, if that was the error
	Stale      int    // StalePid, if it won
	Err        string // any error
}

// helperLockPID locks the PID file at envTestArg, with a umask that would
// make the file private if LockPIDFile did not set the mode. If stdin is a
// pipe it first prints "ready" and waits for one byte (a starting gun for
// races), then prints its result; a winner holds the lock until stdin is
// closed.
func helperLockPID() int {
	unix.Umask(0o077)
	in := bufio.NewReader(os.Stdin)
	if st, err := os.Stdin.Stat(); err == nil && st.Mode()&fs.ModeNamedPipe != 0 {
		fmt.Println("ready")
		if _, err := in.ReadByte(); err != nil {
			return 1
		}
	}
	res := lockResult{Pid: os.Getpid()}
	p, err := LockPIDFile(os.Getenv(envTestArg))
	var re *RunningError
	switch {
	case err == nil:
		res.Won, res.Stale = true, p.StalePid()
	case errors.As(err, &re):
		res.RunningPid = re.Pid
		res.Err = err.Error()
	default:
		res.Err = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(res)
	if res.Won {
		io.Copy(io.Discard, in)
	}
	return 0
}

// lockInHelper runs LockPIDFile in another process that exits at once.
func lockInHelper(t *testing.T, path string) lockResult {
	t.Helper()
	out, err := helperCommand(t, "lockpid", path).Output()
	if err != nil {
		t.Fatalf("lockpid helper: %v", err)
	}
	var res lockResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("lockpid helper said %q: %v", out, err)
	}
	return res
}

func readFileOrEmpty(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func TestPIDFileLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobdaemon.pid")
	p, err := LockPIDFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Remove()
	me := os.Getpid()
	if got, want := readFileOrEmpty(path), strconv.Itoa(me)+"\n"; got != want {
		t.Errorf("file holds %q, want %q", got, want)
	}
	if p.StalePid() != 0 || p.Path() != path {
		t.Errorf("StalePid %d, Path %q", p.StalePid(), p.Path())
	}
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode())
	}
	// No temporary file left behind.
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want 1", len(ents))
	}
	// The lock fd is named after the path, not a deleted temporary name,
	// for whoever looks with lsof.
	if name, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(p.fd)); name != path {
		t.Errorf("lock fd is %q (%v), want %s", name, err, path)
	}

	// Another process is refused, and told our pid.
	res := lockInHelper(t, path)
	if res.Won || res.RunningPid != me || res.Err != fmt.Sprintf("already running (pid %d)", me) {
		t.Errorf("second process: %+v; want RunningError with pid %d", res, me)
	}
	// So is a second open in this process: flock belongs to the open file,
	// not to the process as fcntl locks would.
	if _, err := LockPIDFile(path); !isRunning(err, me) {
		t.Errorf("second LockPIDFile in the same process: %v", err)
	}

	pid, locked, err := ReadPIDFile(path)
	if pid != me || !locked || err != nil {
		t.Errorf("ReadPIDFile = %d, %v, %v; want %d, true, nil", pid, locked, err, me)
	}

	if err := p.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Remove: %v", err)
	}
	if err := p.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if _, _, err := ReadPIDFile(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadPIDFile of a missing file: %v, want fs.ErrNotExist", err)
	}
	// Free again: another process takes it, and its umask 077 does not
	// change the mode.
	if res := lockInHelper(t, path); !res.Won || res.Stale != 0 {
		t.Errorf("after Remove, another process: %+v", res)
	}
	if st, err := os.Lstat(path); err != nil || st.Mode() != 0o644 {
		t.Errorf("file made under umask 077: %v, %v", st, err)
	}
}

func isRunning(err error, pid int) bool {
	var re *RunningError
	return errors.As(err, &re) && re.Pid == pid
}

func TestPIDFileRemoveReplaced(t *testing.T) {
	// Remove must not unlink a file that is no longer ours.
	path := filepath.Join(t.TempDir(), "p.pid")
	p, err := LockPIDFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove(); err != nil {
		t.Fatal(err)
	}
	if got := readFileOrEmpty(path); got != "1\n" {
		t.Errorf("Remove touched someone else's file: now %q", got)
	}
}

func TestPIDFileStale(t *testing.T) {
	tests := []struct {
		content string
		stale   int
	}{
		{"99999\n", 99999},
		{"  42 \n", 42},
		{"", 0},
		{"hello\n", 0},
		{"12abc\n", 0},
		{"-5\n", 0},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.content), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "p.pid")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if pid, locked, err := ReadPIDFile(path); pid != tt.stale || locked || err != nil {
				t.Errorf("ReadPIDFile of the stale file = %d, %v, %v", pid, locked, err)
			}
			old, _ := os.Lstat(path)
			p, err := LockPIDFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Remove()
			if p.StalePid() != tt.stale {
				t.Errorf("StalePid %d, want %d", p.StalePid(), tt.stale)
			}
			if got, want := readFileOrEmpty(path), strconv.Itoa(os.Getpid())+"\n"; got != want {
				t.Errorf("file holds %q, want %q", got, want)
			}
			// Replaced by rename, not written in place.
			if now, _ := os.Lstat(path); os.SameFile(old, now) {
				t.Errorf("the stale inode was rewritten in place")
			}
			if now, _ := os.Lstat(path); now.Mode() != 0o644 {
				t.Errorf("mode %v after takeover, want 0644", now.Mode())
			}
		})
	}
}

func TestPIDFileRefused(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("123\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.pid")
	dangling := filepath.Join(dir, "dangling.pid")
	for _, l := range []struct{ from, to string }{{link, target}, {dangling, filepath.Join(dir, "nowhere")}} {
		if err := os.Symlink(l.to, l.from); err != nil {
			t.Fatal(err)
		}
	}
	for _, path := range []string{link, dangling} {
		_, err := LockPIDFile(path)
		if err == nil || !errors.Is(err, unix.ELOOP) || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("LockPIDFile(%s) = %v; want a symbolic link error", filepath.Base(path), err)
		}
		if _, _, err := ReadPIDFile(path); !errors.Is(err, unix.ELOOP) {
			t.Errorf("ReadPIDFile(%s) = %v; want ELOOP", filepath.Base(path), err)
		}
	}
	if got := readFileOrEmpty(target); got != "123\n" {
		t.Errorf("symlink target changed to %q", got)
	}
	if _, err := os.Lstat(filepath.Join(dir, "nowhere")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dangling symlink's target was created")
	}
	if _, err := LockPIDFile(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("LockPIDFile of a directory: %v", err)
	}
	if _, err := LockPIDFile(filepath.Join(dir, "missing", "p.pid")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LockPIDFile in a missing directory: %v", err)
	}
}

// TestPIDFileInterleavings plays the protocol's awkward interleavings
// step by step in one process (flock locks belong to open files, so two
// fds contend like two processes).
func TestPIDFileInterleavings(t *testing.T) {
	me := os.Getpid()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	deadPid := dead.Process.Pid
	openFD := func(path string) int {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	writeStale := func(path string, pid int) {
		if err := os.WriteFile(path, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("opened before a takeover, locked after it", func(t *testing.T) {
		// B opens the stale file; A takes it over (rename) and lets the old
		// inode go; B's lock on the old inode must not make B a winner.
		path := filepath.Join(t.TempDir(), "p.pid")
		writeStale(path, deadPid)
		fdB := openFD(path)
		a, err := LockPIDFile(path)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Remove()
		if p, _, err := lockOpenPIDFile(path, fdB); p != nil || !errors.Is(err, errRetry) {
			t.Fatalf("B locked the replaced inode: %v, %v; want errRetry", p, err)
		}
		if _, err := LockPIDFile(path); !isRunning(err, me) {
			t.Errorf("after the takeover: %v", err)
		}
	})

	t.Run("reader opened before a takeover", func(t *testing.T) {
		// The reader's shared lock on the old inode succeeds once the taker
		// lets it go; that is no proof that nobody runs.
		path := filepath.Join(t.TempDir(), "p.pid")
		writeStale(path, deadPid)
		fdR := openFD(path)
		a, err := LockPIDFile(path)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Remove()
		if pid, locked, err := readPIDFile(path, fdR); pid != me || !locked || err != nil {
			t.Errorf("readPIDFile = %d, %v, %v; want %d, true, nil", pid, locked, err, me)
		}
	})

	t.Run("opened before Remove", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "p.pid")
		a, err := LockPIDFile(path)
		if err != nil {
			t.Fatal(err)
		}
		fdB := openFD(path)
		if err := a.Remove(); err != nil {
			t.Fatal(err)
		}
		if p, _, err := lockOpenPIDFile(path, fdB); p != nil || !errors.Is(err, errRetry) {
			t.Fatalf("B locked the removed inode: %v, %v; want errRetry", p, err)
		}
	})

	// A lock held by another fd on a stale file, released after a while:
	// by a taker that has not renamed yet (the file names a dead pid), or
	// by a reader's shared lock (the stale pid may even be alive). Neither
	// is a running daemon.
	for _, tt := range []struct {
		name string
		pid  int
		how  int
	}{
		{"taker before its rename", deadPid, unix.LOCK_EX},
		{"reader's shared lock on a live pid", me, unix.LOCK_SH},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "p.pid")
			writeStale(path, tt.pid)
			fd := openFD(path)
			if err := unix.Flock(fd, tt.how); err != nil {
				t.Fatal(err)
			}
			const hold = 100 * time.Millisecond
			// Timed from before the timer is armed: the lock goes no
			// sooner than hold after start, however late this runs.
			start := time.Now()
			time.AfterFunc(hold, func() { unix.Close(fd) })
			p, err := LockPIDFile(path)
			if err != nil {
				t.Fatalf("LockPIDFile: %v", err)
			}
			defer p.Remove()
			if elapsed := time.Since(start); elapsed < hold {
				t.Errorf("won after %v, while the other lock was still held", elapsed)
			}
			if p.StalePid() != tt.pid {
				t.Errorf("StalePid %d, want %d", p.StalePid(), tt.pid)
			}
		})
	}
}

// TestLinkOnly tests createOnly's fallback for file systems without
// RENAME_NOREPLACE.
func TestLinkOnly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.pid")
	tmp1, tmp2 := filepath.Join(dir, "t1"), filepath.Join(dir, "t2")
	for _, name := range []string{tmp1, tmp2} {
		if err := os.WriteFile(name, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := linkOnly(tmp1, path); err != nil {
		t.Fatalf("linkOnly onto no file: %v", err)
	}
	if err := linkOnly(tmp2, path); !errors.Is(err, unix.EEXIST) {
		t.Errorf("linkOnly onto an existing file: %v, want EEXIST", err)
	}
	if got := readFileOrEmpty(path); got != tmp1 {
		t.Errorf("path holds %q, want the first file", got)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the path", len(ents))
	}
}

var pidContent = regexp.MustCompile(`^[1-9][0-9]*\n$`)

// TestPIDFileRace starts 8 processes on the same path at once, on no file
// and on a stale one, while this process reads the file without a lock and
// with ReadPIDFile: exactly one wins, the others are told its pid, and the
// file is never seen empty or half written (nor missing, once it exists).
func TestPIDFileRace(t *testing.T) {
	const contenders, rounds = 8, 3
	// A pid that is surely dead: one of our own children, reaped.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	deadPid := dead.Process.Pid
	for _, stale := range []bool{false, true} {
		for round := 0; round < rounds; round++ {
			t.Run(fmt.Sprintf("stale=%v/%d", stale, round), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "race.pid")
				if stale {
					if err := os.WriteFile(path, []byte(strconv.Itoa(deadPid)+"\n"), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				raceRound(t, path, contenders, stale, deadPid)
			})
		}
	}
}

func raceRound(t *testing.T, path string, n int, stale bool, deadPid int) {
	type contender struct {
		cmd *exec.Cmd
		in  io.WriteCloser
		out *bufio.Reader
	}
	cs := make([]contender, n)
	for i := range cs {
		cmd := helperCommand(t, "lockpid", path)
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		outPipe, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cs[i] = contender{cmd, in, bufio.NewReader(outPipe)}
		defer func() {
			in.Close()
			cmd.Wait()
		}()
	}
	for i, c := range cs {
		if line, err := c.out.ReadString('\n'); line != "ready\n" {
			t.Fatalf("contender %d: %q, %v", i, line, err)
		}
	}

	// Readers run while the contenders race.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var badReads []string
	lockedPids := map[int]bool{}
	bad := func(format string, args ...any) {
		mu.Lock()
		if len(badReads) < 10 {
			badReads = append(badReads, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		seen := stale
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := os.ReadFile(path)
			switch {
			case errors.Is(err, fs.ErrNotExist) && !seen:
			case err != nil:
				bad("read: %v", err)
			case !pidContent.Match(b):
				bad("read %q", b)
			default:
				seen = true
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			pid, locked, err := ReadPIDFile(path)
			switch {
			case errors.Is(err, fs.ErrNotExist) && !stale:
			case err != nil:
				bad("ReadPIDFile: %v", err)
			case locked:
				mu.Lock()
				lockedPids[pid] = true
				mu.Unlock()
			case pid != deadPid:
				bad("ReadPIDFile: unlocked with pid %d", pid)
			}
		}
	}()
	time.Sleep(20 * time.Millisecond) // let the readers get going

	// The starting gun: one byte to each, as fast as we can.
	for _, c := range cs {
		c.in.Write([]byte{'!'})
	}
	results := make([]lockResult, n)
	for i, c := range cs {
		line, err := c.out.ReadString('\n')
		if err != nil {
			t.Fatalf("contender %d: %v", i, err)
		}
		if err := json.Unmarshal([]byte(line), &results[i]); err != nil {
			t.Fatalf("contender %d said %q: %v", i, line, err)
		}
	}
	time.Sleep(20 * time.Millisecond) // readers see the final state too
	close(stop)
	wg.Wait()

	winner := 0
	for _, r := range results {
		if r.Won {
			if winner != 0 {
				t.Errorf("two winners: %d and %d", winner, r.Pid)
			}
			winner = r.Pid
			wantStale := 0
			if stale {
				wantStale = deadPid
			}
			if r.Stale != wantStale {
				t.Errorf("winner's StalePid %d, want %d", r.Stale, wantStale)
			}
		}
	}
	if winner == 0 {
		t.Fatalf("no winner: %+v", results)
	}
	for _, r := range results {
		if !r.Won && r.RunningPid != winner {
			t.Errorf("loser %d: %q (RunningPid %d), want RunningError naming %d", r.Pid, r.Err, r.RunningPid, winner)
		}
	}
	if got, want := readFileOrEmpty(path), strconv.Itoa(winner)+"\n"; got != want {
		t.Errorf("file holds %q, want the winner's %q", got, want)
	}
	for _, b := range badReads {
		t.Errorf("reader: %s", b)
	}
	for pid := range lockedPids {
		if pid != winner {
			t.Errorf("ReadPIDFile said locked by pid %d; the winner is %d", pid, winner)
		}
	}
	if len(lockedPids) == 0 {
		t.Logf("ReadPIDFile never saw the file locked (no overlap this round)")
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want 1 (temporary files left?)", len(ents))
	}
}

// TestPIDFileStartStopDaemon checks that our PID file passes
// start-stop-daemon's checks (dpkg >= 1.19.3): it refuses a world-writable
// PID file, and, when matching on the PID file alone, one whose owner or
// group is neither root nor its own. The file is made in a setgid
// directory of another group, which would give it that group if
// LockPIDFile did not set it.
func TestPIDFileStartStopDaemon(t *testing.T) {
	ssd, err := exec.LookPath("start-stop-daemon")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("start-stop-daemon not found, and CI=true")
		}
		t.Skip("start-stop-daemon not found")
	}
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		if err := os.Chown(dir, 0, 65534); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o755|os.ModeSetgid); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "jobdaemon.pid")
	p, err := LockPIDFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Remove()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	if int(sys.Uid) != os.Geteuid() || int(sys.Gid) != os.Getegid() || st.Mode() != 0o644 {
		t.Errorf("PID file uid %d gid %d mode %v; want %d %d 0644", sys.Uid, sys.Gid, st.Mode(), os.Geteuid(), os.Getegid())
	}
	// --status exits 0 when the pid in the file runs, 4 when it refuses the
	// file (or cannot tell), 1 when the file is stale, 3 when there is none.
	status := func() (int, string) {
		out, err := exec.Command(ssd, "--status", "--pidfile", path).CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), string(out)
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	if code, out := status(); code != 0 {
		t.Errorf("start-stop-daemon --status on our PID file: exit %d %q, want 0 (running)", code, out)
	}
	if err := p.Remove(); err != nil {
		t.Fatal(err)
	}
	if code, out := status(); code != 3 {
		t.Errorf("start-stop-daemon --status after Remove: exit %d %q, want 3 (not running)", code, out)
	}
}

// A FIFO at the path is refused at once rather than blocking the open
// (a job running as the daemon's user could plant one in its directory);
// a missing directory is named.
func TestPIDFileFIFOAndMissingDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo.pid")
	if err := unix.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() { _, err := LockPIDFile(path); done <- err }()
	go func() { _, _, err := ReadPIDFile(path); done <- err }()
	for range 2 {
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("FIFO: %v, want \"not a regular file\"", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("blocked on a FIFO")
		}
	}
	missing := filepath.Join(t.TempDir(), "no-such-dir", "jobdaemon.pid")
	if _, err := LockPIDFile(missing); err == nil || !strings.Contains(err.Error(), "the directory "+filepath.Dir(missing)+" does not exist") {
		t.Errorf("missing directory: %v", err)
	}
}
