package lifecycle

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSyslog is a datagram syslog socket, like rsyslog's /dev/log.
type fakeSyslog struct {
	t    *testing.T
	path string
	conn *net.UnixConn
}

func newFakeSyslog(t *testing.T, path string) *fakeSyslog {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fakeSyslog{t: t, path: path, conn: conn}
}

func (s *fakeSyslog) next() string {
	s.t.Helper()
	buf := make([]byte, 8192)
	s.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := s.conn.Read(buf)
	if err != nil {
		s.t.Fatalf("reading a syslog datagram: %v", err)
	}
	return string(buf[:n])
}

// syslogLine matches <PRI>Jan _2 15:04:05 TAG[PID]: rest
var syslogLine = regexp.MustCompile(`^<(\d+)>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) ([^\[ ]+)\[(\d+)\]: (.*)$`)

type syslogMsg struct {
	pri   int
	stamp string
	tag   string
	pid   int
	msg   string
}

func parseSyslog(t *testing.T, line string) syslogMsg {
	t.Helper()
	m := syslogLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("not a syslog line: %q", line)
	}
	pri, _ := strconv.Atoi(m[1])
	pid, _ := strconv.Atoi(m[4])
	return syslogMsg{pri: pri, stamp: m[2], tag: m[3], pid: pid, msg: m[5]}
}

func TestSyslogPriority(t *testing.T) {
	levels := []struct {
		level slog.Level
		sev   int
	}{
		{slog.LevelDebug - 4, 7}, {slog.LevelDebug, 7}, {slog.LevelInfo, 6}, {slog.LevelInfo + 2, 6},
		{slog.LevelWarn, 4}, {slog.LevelError, 3}, {slog.LevelError + 4, 3},
	}
	for _, fac := range []struct {
		facility int
		tag      string
	}{{3, "jobdaemon"}, {1, "process-job.sh"}} {
		t.Run(fac.tag, func(t *testing.T) {
			s := newFakeSyslog(t, filepath.Join(shortSockDir(t), "log"))
			h, err := NewSyslogHandler(SyslogOptions{
				Tag: fac.tag, Facility: fac.facility, Level: slog.LevelDebug - 4, Path: s.path,
			})
			if err != nil {
				t.Fatal(err)
			}
			log := slog.New(h)
			for _, l := range levels {
				before := time.Now()
				log.Log(context.Background(), l.level, "at "+l.level.String())
				m := parseSyslog(t, s.next())
				if want := fac.facility*8 + l.sev; m.pri != want {
					t.Errorf("%v: PRI %d, want %d", l.level, m.pri, want)
				}
				if m.tag != fac.tag || m.pid != os.Getpid() {
					t.Errorf("%v: %s[%d], want %s[%d]", l.level, m.tag, m.pid, fac.tag, os.Getpid())
				}
				if m.msg != "at "+l.level.String() {
					t.Errorf("%v: message %q", l.level, m.msg)
				}
				// The stamp has whole seconds, and may have ticked over.
				if m.stamp != before.Format(time.Stamp) && m.stamp != time.Now().Format(time.Stamp) {
					t.Errorf("%v: stamp %q, not the current local time %q", l.level, m.stamp, before.Format(time.Stamp))
				}
			}
		})
	}
}

func TestSyslogExactLine(t *testing.T) {
	s := newFakeSyslog(t, filepath.Join(shortSockDir(t), "log"))
	h, err := NewSyslogHandler(SyslogOptions{Tag: "jobdaemon", Facility: 3, Path: s.path})
	if err != nil {
		t.Fatal(err)
	}
	when := time.Date(2024, 3, 7, 9, 5, 1, 0, time.Local)
	log := slog.New(h).With("job_id", "j-1").WithGroup("child").With("pid", 42)
	r := slog.NewRecord(when, slog.LevelWarn, "job failed\ntwice", 0)
	r.AddAttrs(
		slog.String("reason", "exit status 2"),
		slog.Duration("took", 2500*time.Millisecond),
		slog.String("empty", ""),
		slog.String("eq", "a=b"),
		slog.String("quote", `say "hi"`),
		slog.Group("rusage", slog.Int("maxrss_kb", 1024)),
		slog.String("", "no key"),
	)
	if err := log.Handler().Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`<28>Mar  7 09:05:01 jobdaemon[%d]: job failed\ntwice job_id=j-1 child.pid=42`+
		` child.reason="exit status 2" child.took=2.5s child.empty="" child.eq="a=b"`+
		` child.quote="say \"hi\"" child.rusage.maxrss_kb=1024`, os.Getpid())
	if got := s.next(); got != want {
		t.Errorf("sent\n%s\nwant\n%s", got, want)
	}
}

func TestSyslogLevel(t *testing.T) {
	s := newFakeSyslog(t, filepath.Join(shortSockDir(t), "log"))
	h, err := NewSyslogHandler(SyslogOptions{Tag: "t", Facility: 3, Path: s.path})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(h)
	log.Debug("dropped")
	log.Info("kept")
	if got := parseSyslog(t, s.next()); got.msg != "kept" {
		t.Errorf("first line %q, want \"kept\" (Debug is below the default Info)", got.msg)
	}
}

func TestSyslogAbsent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no-log")
	_, err := NewSyslogHandler(SyslogOptions{Tag: "t", Facility: 3, Path: path})
	if err == nil {
		t.Fatal("no error for a missing socket")
	}
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path+" does not exist") {
		t.Errorf("error %q does not say the socket does not exist", err)
	}
}

func TestSyslogBadFacility(t *testing.T) {
	s := newFakeSyslog(t, filepath.Join(shortSockDir(t), "log"))
	for _, f := range []int{-1, 24} {
		if _, err := NewSyslogHandler(SyslogOptions{Facility: f, Path: s.path}); err == nil {
			t.Errorf("facility %d accepted", f)
		}
	}
}

// TestSyslogReconnect replaces the socket as a restarted syslog daemon
// does: the handler's connected socket is refused, it reconnects once and
// the line arrives at the new socket.
func TestSyslogReconnect(t *testing.T) {
	path := filepath.Join(shortSockDir(t), "log")
	s1 := newFakeSyslog(t, path)
	h, err := NewSyslogHandler(SyslogOptions{Tag: "t", Facility: 3, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(h)
	log.Info("one")
	if m := parseSyslog(t, s1.next()); m.msg != "one" {
		t.Fatalf("got %q, want one", m.msg)
	}

	s1.conn.Close()
	os.Remove(path)
	// Gone and not back yet: the record is lost and Handle says why.
	err = h.Handle(context.Background(), slog.NewRecord(time.Now(), slog.LevelInfo, "lost", 0))
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Handle with no socket returned %v, want ENOENT", err)
	}

	s2 := newFakeSyslog(t, path)
	log.Info("two")
	if m := parseSyslog(t, s2.next()); m.msg != "two" {
		t.Errorf("after the restart got %q, want two", m.msg)
	}

	// The same again, with the old connection still open when the socket
	// is replaced (the first write after the restart fails).
	s2.conn.Close()
	os.Remove(path)
	s3 := newFakeSyslog(t, path)
	if err := h.Handle(context.Background(), slog.NewRecord(time.Now(), slog.LevelInfo, "three", 0)); err != nil {
		t.Errorf("Handle after a restart: %v", err)
	}
	if m := parseSyslog(t, s3.next()); m.msg != "three" {
		t.Errorf("after the second restart got %q, want three", m.msg)
	}
}

// TestSyslogStream talks to a stream socket, as syslog-ng's unix-stream
// makes: each line ends in a newline.
func TestSyslogStream(t *testing.T) {
	path := filepath.Join(shortSockDir(t), "log")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lines := make(chan string, 10)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	h, err := NewSyslogHandler(SyslogOptions{Tag: "t", Facility: 1, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(h)
	log.Info("first", "k", "v")
	log.Error("second\nhalf")
	for _, want := range []struct {
		pri int
		msg string
	}{{14, "first k=v"}, {11, `second\nhalf`}} {
		select {
		case l := <-lines:
			m := parseSyslog(t, l)
			if m.pri != want.pri || m.msg != want.msg {
				t.Errorf("got <%d> %q, want <%d> %q", m.pri, m.msg, want.pri, want.msg)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no line on the stream socket")
		}
	}
}

func TestSyslogConcurrent(t *testing.T) {
	s := newFakeSyslog(t, filepath.Join(shortSockDir(t), "log"))
	h, err := NewSyslogHandler(SyslogOptions{Tag: "t", Facility: 3, Path: s.path})
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 4, 25
	var wg sync.WaitGroup
	for w := range writers {
		log := slog.New(h).With("w", w)
		wg.Go(func() {
			for i := range each {
				log.Info("m", "i", i)
			}
		})
	}
	seen := make(map[string]bool)
	for range writers * each {
		m := parseSyslog(t, s.next())
		seen[m.msg] = true
	}
	wg.Wait()
	if len(seen) != writers*each {
		t.Errorf("%d distinct lines, want %d", len(seen), writers*each)
	}
}
