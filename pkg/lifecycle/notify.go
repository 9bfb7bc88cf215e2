package lifecycle

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// Notifier sends sd_notify messages to the service manager that started the
// daemon: systemd for Type=notify units, or start-stop-daemon --notify-await.
//
// Every method is a no-op when NOTIFY_SOCKET was unset at [NewNotifier], and
// on a nil *Notifier. Every method is safe for concurrent use and never
// returns an error: a daemon must keep running whether or not anyone
// listens. The first failed send is logged at
// debug level, later ones are not (start-stop-daemon stops listening after
// READY=1, so every later message fails, and that is normal).
type Notifier struct {
	log      *slog.Logger
	enabled  bool
	watchdog time.Duration // the full WATCHDOG_USEC, 0 without a watchdog for us

	// mu serializes sends, so that the datagrams leave in the order the
	// calls took the lock and lastStatus is the STATUS the manager has seen.
	mu         sync.Mutex
	lastStatus string
	sentStatus bool // lastStatus is meaningful (an empty STATUS= is a status)
	failed     bool // the first failure was logged
}

// NewNotifier reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. The
// watchdog is enabled only when WATCHDOG_USEC is a positive number and
// WATCHDOG_PID is unset or this process's pid (a child that inherited the
// variables is not the one systemd watches); a malformed WATCHDOG_USEC is
// logged at warning level and leaves the watchdog off. A nil log discards.
//
// The environment is left as it is (SdNotify(false, ...)): the pool already
// strips NOTIFY_SOCKET and WATCHDOG_* from the jobs' environment, and a
// re-executed daemon must still see them.
func NewNotifier(log *slog.Logger) *Notifier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{log: log, enabled: os.Getenv("NOTIFY_SOCKET") != ""}
	if !n.enabled {
		return n
	}
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("ignoring the systemd watchdog", "err", err)
		d = 0
	}
	n.watchdog = d
	return n
}

// Enabled reports whether NOTIFY_SOCKET was set when n was made, that is
// whether the other methods send anything.
func (n *Notifier) Enabled() bool { return n != nil && n.enabled }

// Ready sends READY=1: startup, or a reload, is complete.
func (n *Notifier) Ready() { n.send(daemon.SdNotifyReady) }

// Reloading sends RELOADING=1 with MONOTONIC_USEC, the current
// CLOCK_MONOTONIC in microseconds, in one datagram. systemd 253+ uses the
// timestamp to tell which reload the message belongs to (Type=notify-reload
// depends on it); older versions ignore it. Send [Notifier.Ready] or
// [Notifier.ReadyStatus] when the reload is done.
func (n *Notifier) Reloading() {
	if !n.Enabled() {
		return
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		// Cannot happen on Linux; without a timestamp RELOADING=1 alone
		// is still right for systemd < 253.
		n.send(daemon.SdNotifyReloading)
		return
	}
	usec := ts.Sec*1_000_000 + ts.Nsec/1_000
	n.send(daemon.SdNotifyReloading + "\nMONOTONIC_USEC=" + strconv.FormatInt(usec, 10))
}

// Stopping sends STOPPING=1: the daemon has begun to shut down.
func (n *Notifier) Stopping() { n.send(daemon.SdNotifyStopping) }

// Status sends STATUS=text, shown by systemctl status. Newlines in text
// become spaces (the protocol is one assignment per line). Nothing is sent
// when the text is the one last sent by Status or ReadyStatus, so callers
// may call it on every change of state without flooding the manager.
func (n *Notifier) Status(text string) {
	if !n.Enabled() {
		return
	}
	text = oneLine(text)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sentStatus && text == n.lastStatus {
		return
	}
	if n.sendLocked("STATUS=" + text) {
		n.lastStatus, n.sentStatus = text, true
	}
}

// ReadyStatus sends READY=1 and STATUS=text in one datagram, so that the
// status shown after a reload never lags behind the readiness. Unlike
// Status it is always sent.
func (n *Notifier) ReadyStatus(text string) {
	if !n.Enabled() {
		return
	}
	text = oneLine(text)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sendLocked(daemon.SdNotifyReady + "\nSTATUS=" + text) {
		n.lastStatus, n.sentStatus = text, true
	}
}

// Errno sends ERRNO=N, the reason a failed start gives to systemctl status.
func (n *Notifier) Errno(errno syscall.Errno) {
	n.send("ERRNO=" + strconv.FormatUint(uint64(errno), 10))
}

// ExtendTimeout sends EXTEND_TIMEOUT_USEC: the start, reload or stop in
// progress needs d more from now, rounded up to a whole microsecond. systemd
// (236+) only extends, never shortens; a d of zero or less is not sent,
// since it would ask for a timeout that has already run out.
func (n *Notifier) ExtendTimeout(d time.Duration) {
	if d <= 0 {
		return
	}
	usec := (d + time.Microsecond - 1) / time.Microsecond
	n.send("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(int64(usec), 10))
}

// WatchdogInterval returns how often to call [Notifier.Watchdog]: half of
// WATCHDOG_USEC, as sd_watchdog_enabled(3) recommends. It is 0 when n is
// not Enabled, when the unit has no WatchdogSec=, or when WATCHDOG_PID names
// another process.
func (n *Notifier) WatchdogInterval() time.Duration {
	if !n.Enabled() {
		return 0
	}
	return n.watchdog / 2
}

// Watchdog sends WATCHDOG=1, telling systemd the daemon is alive. It sends
// even when WatchdogInterval is 0 (systemd ignores it then).
func (n *Notifier) Watchdog() { n.send(daemon.SdNotifyWatchdog) }

func (n *Notifier) send(state string) {
	if !n.Enabled() {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sendLocked(state)
}

// sendLocked sends state and reports whether it was delivered. n.mu is held.
func (n *Notifier) sendLocked(state string) bool {
	sent, err := daemon.SdNotify(false, state)
	if err != nil && !n.failed {
		n.failed = true
		first, _, _ := strings.Cut(state, "\n")
		n.log.LogAttrs(context.Background(), slog.LevelDebug,
			"sd_notify failed, further failures are not logged",
			slog.String("state", first), slog.Any("err", err))
	}
	return sent
}

// oneLine replaces the line breaks in s by spaces: a newline would end the
// STATUS= assignment and start a bogus one.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}
