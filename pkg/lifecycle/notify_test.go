package lifecycle

import (
	"context"
	"errors"
	"log/slog"
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

// shortSockDir returns a directory for sockets whose paths fit in sun_path
// (108 bytes): t.TempDir() does when TMPDIR is short, which it usually is.
func shortSockDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if len(dir) < 80 {
		return dir
	}
	dir, err := os.MkdirTemp("/tmp", "lc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// fakeManager is a NOTIFY_SOCKET listener, like systemd's.
type fakeManager struct {
	t    *testing.T
	conn *net.UnixConn
}

func newFakeManager(t *testing.T) *fakeManager {
	t.Helper()
	path := filepath.Join(shortSockDir(t), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "")
	t.Setenv("WATCHDOG_PID", "")
	return &fakeManager{t: t, conn: conn}
}

// next returns the next datagram, failing the test if none comes in time.
func (m *fakeManager) next() string {
	m.t.Helper()
	buf := make([]byte, 4096)
	m.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	nr, err := m.conn.Read(buf)
	if err != nil {
		m.t.Fatalf("reading a notification: %v", err)
	}
	return string(buf[:nr])
}

// none fails the test if a datagram is waiting.
func (m *fakeManager) none() {
	m.t.Helper()
	buf := make([]byte, 4096)
	m.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if nr, err := m.conn.Read(buf); err == nil {
		m.t.Fatalf("unexpected notification %q", buf[:nr])
	}
}

func TestNotifyMessages(t *testing.T) {
	m := newFakeManager(t)
	n := NewNotifier(nil)
	if !n.Enabled() {
		t.Fatal("Enabled() = false with NOTIFY_SOCKET set")
	}
	tests := []struct {
		name string
		call func()
		want string
	}{
		{"Ready", n.Ready, "READY=1"},
		{"Stopping", n.Stopping, "STOPPING=1"},
		{"Watchdog", n.Watchdog, "WATCHDOG=1"},
		{"Status", func() { n.Status("3 jobs running") }, "STATUS=3 jobs running"},
		{"StatusNewlines", func() { n.Status("line one\nline two\r\n") }, "STATUS=line one line two  "},
		{"ReadyStatus", func() { n.ReadyStatus("reloaded\nok") }, "READY=1\nSTATUS=reloaded ok"},
		{"Errno", func() { n.Errno(syscall.EADDRINUSE) }, "ERRNO=98"},
		{"ExtendTimeout", func() { n.ExtendTimeout(90 * time.Second) }, "EXTEND_TIMEOUT_USEC=90000000"},
		{"ExtendTimeoutRoundsUp", func() { n.ExtendTimeout(1500 * time.Nanosecond) }, "EXTEND_TIMEOUT_USEC=2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.call()
			if got := m.next(); got != tt.want {
				t.Errorf("sent %q, want %q", got, tt.want)
			}
		})
	}
	n.ExtendTimeout(0)
	n.ExtendTimeout(-time.Second)
	m.none()
}

func TestNotifyReloadingIsOneDatagram(t *testing.T) {
	m := newFakeManager(t)
	n := NewNotifier(nil)
	before := monotonicUsec(t)
	n.Reloading()
	after := monotonicUsec(t)
	got := m.next()
	head, usec, ok := strings.Cut(got, "\nMONOTONIC_USEC=")
	if !ok || head != "RELOADING=1" {
		t.Fatalf("sent %q, want RELOADING=1 and MONOTONIC_USEC in one datagram", got)
	}
	v, err := strconv.ParseInt(usec, 10, 64)
	if err != nil {
		t.Fatalf("MONOTONIC_USEC=%q: %v", usec, err)
	}
	if v < before || v > after {
		t.Errorf("MONOTONIC_USEC=%d, not within [%d, %d]", v, before, after)
	}
	m.none()
}

func monotonicUsec(t *testing.T) int64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Sec*1_000_000 + ts.Nsec/1_000
}

func TestNotifyStatusDedup(t *testing.T) {
	m := newFakeManager(t)
	n := NewNotifier(nil)
	n.Status("idle")
	n.Status("idle")
	n.Status("idle\n") // becomes "idle ", another text
	n.Status("busy")
	n.Status("busy")
	n.ReadyStatus("busy")   // always sent: it carries READY=1
	n.ReadyStatus("reload") // sets the status Status compares with
	n.Status("reload")
	n.Status("idle")
	want := []string{
		"STATUS=idle", "STATUS=idle ", "STATUS=busy",
		"READY=1\nSTATUS=busy", "READY=1\nSTATUS=reload", "STATUS=idle",
	}
	for _, w := range want {
		if got := m.next(); got != w {
			t.Errorf("sent %q, want %q", got, w)
		}
	}
	m.none()
}

func TestNotifyWatchdog(t *testing.T) {
	tests := []struct {
		name, usec, pid string
		want            time.Duration
	}{
		{"NoWatchdog", "", "", 0},
		{"NoPid", "2000000", "", time.Second},
		{"OurPid", "2000000", strconv.Itoa(os.Getpid()), time.Second},
		{"OtherPid", "2000000", strconv.Itoa(os.Getpid() + 1), 0},
		{"Malformed", "soon", "", 0},
		{"Zero", "0", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			newFakeManager(t)
			t.Setenv("WATCHDOG_USEC", tt.usec)
			t.Setenv("WATCHDOG_PID", tt.pid)
			if got := NewNotifier(nil).WatchdogInterval(); got != tt.want {
				t.Errorf("WatchdogInterval() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNotifyDisabled(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "2000000")
	t.Setenv("WATCHDOG_PID", "")
	rec := &recordHandler{}
	n := NewNotifier(slog.New(rec))
	if n.Enabled() {
		t.Error("Enabled() = true without NOTIFY_SOCKET")
	}
	if d := n.WatchdogInterval(); d != 0 {
		t.Errorf("WatchdogInterval() = %v without NOTIFY_SOCKET, want 0", d)
	}
	n.Ready()
	n.Reloading()
	n.Status("x")
	n.ReadyStatus("x")
	n.Watchdog()
	if got := rec.count(); got != 0 {
		t.Errorf("%d log records, want none", got)
	}
}

func TestNotifyFailureLoggedOnce(t *testing.T) {
	m := newFakeManager(t)
	rec := &recordHandler{}
	n := NewNotifier(slog.New(rec))
	n.Ready()
	if got := m.next(); got != "READY=1" {
		t.Fatalf("sent %q, want READY=1", got)
	}
	// The listener goes away, as start-stop-daemon's does after READY=1:
	// the path stays, so every send is refused.
	m.conn.Close()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 10 {
				n.Watchdog()
				n.Status("gone")
				n.Reloading()
			}
		})
	}
	wg.Wait()
	recs := rec.all()
	if len(recs) != 1 {
		t.Fatalf("%d log records for 120 failed sends, want 1: %v", len(recs), recs)
	}
	r := recs[0]
	if r.Level != slog.LevelDebug {
		t.Errorf("logged at %v, want DEBUG", r.Level)
	}
	var errAttr error
	r.Attrs(func(a slog.Attr) bool {
		if e, ok := a.Value.Any().(error); ok && a.Key == "err" {
			errAttr = e
		}
		return true
	})
	if !errors.Is(errAttr, syscall.ECONNREFUSED) {
		t.Errorf("logged err %v, want ECONNREFUSED", errAttr)
	}
}

// recordHandler keeps every record, at every level.
type recordHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}

func (h *recordHandler) all() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), h.recs...)
}

func (h *recordHandler) count() int { return len(h.all()) }

func TestNotifyNil(t *testing.T) {
	m := newFakeManager(t)
	var n *Notifier
	if n.Enabled() || n.WatchdogInterval() != 0 {
		t.Error("a nil Notifier is enabled")
	}
	n.Ready()
	n.Reloading()
	n.Status("x")
	n.ReadyStatus("x")
	n.Errno(syscall.EIO)
	n.ExtendTimeout(time.Second)
	n.Stopping()
	n.Watchdog()
	m.none()
}
