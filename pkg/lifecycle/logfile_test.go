package lifecycle

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func readLog(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLogFileRotate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "jobdaemon.log")
	if err := os.WriteFile(path, []byte("before\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := OpenLogFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintln(f, "old line")
	if got := readLog(t, path); got != "before\nold line\n" {
		t.Fatalf("the file holds %q, want the line appended", got)
	}

	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "between") // logrotate renamed, the daemon not yet told
	if err := f.Reopen(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "new line")

	if got := readLog(t, rotated); got != "before\nold line\nbetween\n" {
		t.Errorf("rotated file holds %q", got)
	}
	if got := readLog(t, path); got != "new line\n" {
		t.Errorf("new file holds %q, want only the new line", got)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// 0640 less whatever the umask takes away.
	if perm := fi.Mode().Perm(); perm&^0o640 != 0 || perm&0o600 != 0o600 {
		t.Errorf("new file mode %v, want 0640 less the umask", perm)
	}
}

func TestLogFileReopenFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "jobdaemon.log")
	f, err := OpenLogFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	// A directory where the file should be: open fails even for root.
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	err = f.Reopen()
	if err == nil || !errors.Is(err, unix.EISDIR) {
		t.Fatalf("Reopen onto a directory returned %v, want EISDIR", err)
	}
	if _, err := fmt.Fprintln(f, "still logged"); err != nil {
		t.Fatalf("write after a failed Reopen: %v", err)
	}
	if got := readLog(t, rotated); got != "still logged\n" {
		t.Errorf("old file holds %q, want the line written after the failed Reopen", got)
	}
}

func TestLogFileCloseOnExec(t *testing.T) {
	f, err := OpenLogFile(filepath.Join(t.TempDir(), "x.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rc, err := f.f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	var ferr error
	if err := rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFD, 0) }); err != nil {
		t.Fatal(err)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
	if flags&unix.FD_CLOEXEC == 0 {
		t.Error("the log file descriptor is inherited by children (no FD_CLOEXEC)")
	}
}

func TestLogFileClosed(t *testing.T) {
	f, err := OpenLogFile(filepath.Join(t.TempDir(), "x.log"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("x\n")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close: %v, want os.ErrClosed", err)
	}
	if err := f.Reopen(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Reopen after Close: %v, want os.ErrClosed", err)
	}
	if err := f.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Close: %v, want os.ErrClosed", err)
	}
}

func TestLogFileOpenError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing-dir", "x.log")
	if _, err := OpenLogFile(path); err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("OpenLogFile in a missing directory: %v, want ENOENT naming the path", err)
	}
}

// TestLogFileConcurrent writes from several slog loggers while the file is
// rotated underneath them: every line arrives whole, exactly once, in one of
// the files.
func TestLogFileConcurrent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "jobdaemon.log")
	f, err := OpenLogFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := slog.NewTextHandler(f, nil)

	const writers, each, rotations = 8, 200, 5
	var wg sync.WaitGroup
	for w := range writers {
		log := slog.New(h).With("w", w)
		wg.Go(func() {
			for i := range each {
				log.Info("line", "i", i, "pad", strings.Repeat("x", 100))
			}
		})
	}
	wg.Go(func() {
		for r := range rotations {
			if err := os.Rename(path, fmt.Sprintf("%s.%d", path, r)); err != nil {
				t.Error(err)
				return
			}
			if err := f.Reopen(); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()

	seen := make(map[string]bool)
	files, _ := filepath.Glob(path + "*")
	for _, name := range files {
		fh, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			line := sc.Text()
			var w, i int
			k := strings.Index(line, " w=")
			if k < 0 || !strings.HasSuffix(line, " pad="+strings.Repeat("x", 100)) {
				t.Errorf("%s: mangled line %q", name, line)
				continue
			}
			if _, err := fmt.Sscanf(line[k:], " w=%d i=%d", &w, &i); err != nil {
				t.Errorf("%s: mangled line %q", name, line)
				continue
			}
			key := fmt.Sprint(w, "/", i)
			if seen[key] {
				t.Errorf("line %s twice", key)
			}
			seen[key] = true
		}
		fh.Close()
	}
	if len(seen) != writers*each {
		t.Errorf("%d lines in %d files, want %d", len(seen), len(files), writers*each)
	}
}

// Chown gives the open file to another user: after a privilege drop, the
// daemon can still reopen it.
func TestLogFileChown(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root")
		}
		t.Skip("needs root")
	}
	path := filepath.Join(t.TempDir(), "daemon.log")
	f, err := OpenLogFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Chown(65534, 65534); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 {
		t.Errorf("owner %d:%d, want 65534:65534", st.Uid, st.Gid)
	}
	f.Close()
	if err := f.Chown(0, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Chown after Close = %v, want os.ErrClosed", err)
	}
}

// The path is not trusted: a symbolic link, a FIFO or a file with another
// hard link is refused, and a file that was already there is not handed
// over by Chown.
func TestLogFileUntrustedPath(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.log")
	os.Symlink(victim, link)
	if _, err := OpenLogFile(link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("symlink: %v", err)
	}
	hard := filepath.Join(dir, "hard.log")
	os.Link(victim, hard)
	if _, err := OpenLogFile(hard); err == nil || !strings.Contains(err.Error(), "hard links") {
		t.Errorf("hard link: %v", err)
	}
	fifo := filepath.Join(dir, "fifo.log")
	unix.Mkfifo(fifo, 0o644)
	if _, err := OpenLogFile(fifo); err == nil {
		t.Errorf("FIFO accepted")
	}
	if b, _ := os.ReadFile(victim); string(b) != "secret\n" {
		t.Errorf("the victim was written to: %q", b)
	}

	existing := filepath.Join(dir, "existing.log")
	os.WriteFile(existing, nil, 0o640)
	f, err := OpenLogFile(existing)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Chown(12345, 12345); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(existing)
	if st := fi.Sys().(*syscall.Stat_t); st.Uid == 12345 {
		t.Errorf("Chown handed over a file it did not create")
	}
}
