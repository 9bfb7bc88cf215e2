package lifecycle

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

// sentEntry is one call of journalSend.
type sentEntry struct {
	message  string
	priority journal.Priority
	vars     map[string]string
}

// captureJournal swaps journalSend for one that records each entry, or
// fails with err when err is not nil.
func captureJournal(t *testing.T, err error) func() []sentEntry {
	t.Helper()
	var mu sync.Mutex
	var got []sentEntry
	orig := journalSend
	journalSend = func(m string, p journal.Priority, vars map[string]string) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, sentEntry{m, p, vars})
		return err
	}
	t.Cleanup(func() { journalSend = orig })
	return func() []sentEntry {
		mu.Lock()
		defer mu.Unlock()
		return append([]sentEntry(nil), got...)
	}
}

func TestJournalPriorityAndOrigin(t *testing.T) {
	entries := captureJournal(t, nil)
	log := slog.New(NewJournalHandler(JournalOptions{
		Identifier: "jobdaemon", Facility: 3, Level: slog.LevelDebug - 4,
	}))
	log.Debug("d")
	log.Info("i")
	log.Warn("w")
	log.Error("e")
	log.Log(context.Background(), slog.LevelDebug-4, "trace")
	log.Log(context.Background(), slog.LevelInfo+2, "notice-ish")
	log.Log(context.Background(), slog.LevelError+4, "fatal-ish")
	want := []struct {
		msg string
		pri journal.Priority
	}{
		{"d", journal.PriDebug}, {"i", journal.PriInfo}, {"w", journal.PriWarning}, {"e", journal.PriErr},
		{"trace", journal.PriDebug}, {"notice-ish", journal.PriInfo}, {"fatal-ish", journal.PriErr},
	}
	got := entries()
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	for i, w := range want {
		e := got[i]
		if e.message != w.msg || e.priority != w.pri {
			t.Errorf("entry %d: %q at priority %d, want %q at %d", i, e.message, e.priority, w.msg, w.pri)
		}
		if e.vars["SYSLOG_IDENTIFIER"] != "jobdaemon" || e.vars["SYSLOG_FACILITY"] != "3" {
			t.Errorf("entry %d: SYSLOG_IDENTIFIER=%q SYSLOG_FACILITY=%q, want jobdaemon and 3",
				i, e.vars["SYSLOG_IDENTIFIER"], e.vars["SYSLOG_FACILITY"])
		}
	}
}

func TestJournalLevel(t *testing.T) {
	entries := captureJournal(t, nil)
	ctx := context.Background()
	def := NewJournalHandler(JournalOptions{Identifier: "x"})
	if def.Enabled(ctx, slog.LevelDebug) || !def.Enabled(ctx, slog.LevelInfo) {
		t.Error("a nil Level is not Info")
	}
	var lv slog.LevelVar
	lv.Set(slog.LevelWarn)
	log := slog.New(NewJournalHandler(JournalOptions{Identifier: "x", Level: &lv}))
	log.Info("dropped")
	lv.Set(slog.LevelInfo) // a LevelVar changes the level of a live handler (reload)
	log.Info("kept")
	got := entries()
	if len(got) != 1 || got[0].message != "kept" {
		t.Errorf("entries %v, want only \"kept\"", got)
	}
}

// logValuer is resolved by the handler.
type logValuer string

func (v logValuer) LogValue() slog.Value { return slog.StringValue("resolved " + string(v)) }

func TestJournalFields(t *testing.T) {
	entries := captureJournal(t, nil)
	when := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	log := slog.New(NewJournalHandler(JournalOptions{
		Identifier: "jobdaemon",
		Facility:   3,
		Fields:     map[string]string{"job_id": "JOB_ID", "http.code": "HTTP_STATUS", "odd": "odd name"},
	}))
	log.With("job_id", "j-1", "pid", 42).
		WithGroup("http").With("method", "GET").
		Info("served",
			"code", 200,
			"took", 1500*time.Millisecond,
			"at", when,
			"err", errors.New("broken pipe"),
			slog.Group("peer", "addr", "10.0.0.1", slog.Group("tls", "version", "1.3")),
			slog.Group("", "inline", "yes"),
			slog.Group("empty"),
			"", "no key",
			"_secret", "s",
			"2fa", "on",
			"message", "not MESSAGE",
			"Content-Type", "text/plain",
			"lazy", logValuer("v"),
			"multi", "line 1\nline 2",
		)
	log.Info("renamed", "odd", 1)
	got := entries()
	if len(got) != 2 {
		t.Fatalf("%d entries, want 2", len(got))
	}
	want := map[string]string{
		"JOB_ID":                "j-1",
		"PID":                   "42",
		"HTTP_METHOD":           "GET",
		"HTTP_STATUS":           "200",
		"HTTP_TOOK":             "1.5s",
		"HTTP_AT":               "2024-05-06T07:08:09.123456789Z",
		"HTTP_ERR":              "broken pipe",
		"HTTP_PEER_ADDR":        "10.0.0.1",
		"HTTP_PEER_TLS_VERSION": "1.3",
		"HTTP_INLINE":           "yes",
		"HTTP__SECRET":          "s",
		"HTTP_2FA":              "on",
		"HTTP_MESSAGE":          "not MESSAGE",
		"HTTP_CONTENT_TYPE":     "text/plain",
		"HTTP_LAZY":             "resolved v",
		"HTTP_MULTI":            "line 1\nline 2",
		"SYSLOG_IDENTIFIER":     "jobdaemon",
		"SYSLOG_FACILITY":       "3",
	}
	assertVars(t, got[0].vars, want)
	assertVars(t, got[1].vars, map[string]string{
		"ODD_NAME": "1", "SYSLOG_IDENTIFIER": "jobdaemon", "SYSLOG_FACILITY": "3",
	})
}

func assertVars(t *testing.T, got, want map[string]string) {
	t.Helper()
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			t.Errorf("%s=%q (present %v), want %q", k, g, ok, w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected field %s=%q", k, g)
		}
	}
}

func TestJournalFieldName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"job_id", "JOB_ID"},
		{"JOB_ID", "JOB_ID"},
		{"a.b-c d", "A_B_C_D"},
		{"héllo", "H_LLO"},
		{"_pid", "X_PID"},
		{"__x", "X__X"},
		{"9lives", "X_9LIVES"},
		{"message", "X_MESSAGE"},
		{"priority", "X_PRIORITY"},
		{"syslog_identifier", "X_SYSLOG_IDENTIFIER"},
		{"syslog_facility", "X_SYSLOG_FACILITY"},
		{"syslog_pid", "SYSLOG_PID"},
		{"", ""},
		{strings.Repeat("k", 70), strings.Repeat("K", 64)},
	}
	for _, tt := range tests {
		if got := fieldName(tt.in); got != tt.want {
			t.Errorf("fieldName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestJournalJobLines checks the fields of the handler jobdaemon gives the
// jobs' output lines, so that `journalctl SYSLOG_FACILITY=1 JOB_ID=...` and
// `journalctl -t process-job.sh` find them, while the daemon's own entries
// match `journalctl SYSLOG_FACILITY=3`.
func TestJournalJobLines(t *testing.T) {
	entries := captureJournal(t, nil)
	daemon := slog.New(NewJournalHandler(JournalOptions{Identifier: "jobdaemon", Facility: 3}))
	jobs := slog.New(NewJournalHandler(JournalOptions{
		Identifier: "process-job.sh",
		Facility:   1,
		Fields:     map[string]string{"job_id": "JOB_ID", "slot": "JOB_SLOT", "attempt": "JOB_ATTEMPT", "child_pid": "CHILD_PID"},
	}))
	daemon.Info("job started", "job_id", "a1")
	jobs.Warn("disk almost full", "job_id", "a1", "slot", 3, "attempt", 2, "child_pid", 4242)
	got := entries()
	if len(got) != 2 {
		t.Fatalf("%d entries, want 2", len(got))
	}
	assertVars(t, got[0].vars, map[string]string{
		"SYSLOG_IDENTIFIER": "jobdaemon", "SYSLOG_FACILITY": "3", "JOB_ID": "a1",
	})
	assertVars(t, got[1].vars, map[string]string{
		"SYSLOG_IDENTIFIER": "process-job.sh", "SYSLOG_FACILITY": "1",
		"JOB_ID": "a1", "JOB_SLOT": "3", "JOB_ATTEMPT": "2", "CHILD_PID": "4242",
	})
	if got[1].priority != journal.PriWarning {
		t.Errorf("priority %d, want %d", got[1].priority, journal.PriWarning)
	}
}

func TestJournalFallbackToStderr(t *testing.T) {
	entries := captureJournal(t, errors.New("no journal here"))
	h := NewJournalHandler(JournalOptions{Identifier: "jobdaemon", Facility: 3})
	var buf bytes.Buffer
	h.(*journalHandler).c.stderr = &buf
	log := slog.New(h).With("job_id", "j 1")
	for i := range 3 {
		if err := log.Handler().Handle(context.Background(),
			slog.NewRecord(time.Now(), slog.LevelWarn, fmt.Sprint("lost ", i), 0)); err != nil {
			t.Errorf("Handle returned %v, want nil", err)
		}
	}
	if n := len(entries()); n != 3 {
		t.Errorf("%d sends, want 3", n)
	}
	pid := os.Getpid()
	want := fmt.Sprintf("jobdaemon[%d]: cannot log to the journal, logging to stderr: no journal here\n", pid)
	for i := range 3 {
		want += fmt.Sprintf("jobdaemon[%d]: WARN lost %d JOB_ID=\"j 1\"\n", pid, i)
	}
	if got := buf.String(); got != want {
		t.Errorf("stderr got\n%s\nwant\n%s", got, want)
	}
}

// TestJournalNativeSocket sends through the real go-systemd code to a
// socket at journald's fixed path, when no journald owns it, and parses the
// datagram as journald would.
func TestJournalNativeSocket(t *testing.T) {
	const path = "/run/systemd/journal/socket"
	if _, err := os.Lstat(path); err == nil {
		t.Skipf("%s exists (journald or another test owns it)", path)
	}
	created, err := mkdirAllRecord(filepath.Dir(path))
	if err != nil {
		t.Skipf("cannot create %s: %v", filepath.Dir(path), err)
	}
	t.Cleanup(func() {
		for i := len(created) - 1; i >= 0; i-- {
			os.Remove(created[i])
		}
	})
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Skipf("cannot bind %s: %v", path, err)
	}
	t.Cleanup(func() {
		conn.Close()
		os.Remove(path)
	})

	log := slog.New(NewJournalHandler(JournalOptions{
		Identifier: "process-job.sh",
		Facility:   1,
		Fields:     map[string]string{"job_id": "JOB_ID", "slot": "JOB_SLOT"},
	}))
	log.Error("line one\nline two", "job_id", "j-7", "slot", 2, "detail", "a=b")

	buf := make([]byte, 64<<10)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("reading the entry: %v", err)
	}
	fields := parseNative(t, buf[:n])
	want := map[string]string{
		"MESSAGE":           "line one\nline two",
		"PRIORITY":          "3",
		"SYSLOG_IDENTIFIER": "process-job.sh",
		"SYSLOG_FACILITY":   "1",
		"JOB_ID":            "j-7",
		"JOB_SLOT":          "2",
		"DETAIL":            "a=b",
	}
	got := make(map[string]string)
	for k, vs := range fields {
		if len(vs) != 1 {
			t.Errorf("field %s appears %d times: %q", k, len(vs), vs)
		}
		got[k] = vs[0]
	}
	assertVars(t, got, want)
}

// mkdirAllRecord is os.MkdirAll that returns the directories it created,
// outermost first, so the test can remove exactly those.
func mkdirAllRecord(dir string) ([]string, error) {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append([]string{d}, missing...)
		if d == filepath.Dir(d) {
			break
		}
	}
	var created []string
	for _, d := range missing {
		if err := os.Mkdir(d, 0o755); err != nil {
			for i := len(created) - 1; i >= 0; i-- {
				os.Remove(created[i])
			}
			return nil, err
		}
		created = append(created, d)
	}
	return created, nil
}

// parseNative parses a datagram of the journal's native protocol: lines of
// KEY=value, or KEY, a newline, the value's length as a little-endian
// uint64, the value, and a newline.
func parseNative(t *testing.T, b []byte) map[string][]string {
	t.Helper()
	fields := make(map[string][]string)
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			t.Fatalf("entry does not end in a newline: %q", b)
		}
		line := b[:nl]
		b = b[nl+1:]
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			fields[string(k)] = append(fields[string(k)], string(v))
			continue
		}
		if len(b) < 8 {
			t.Fatalf("field %s: no length", line)
		}
		size := binary.LittleEndian.Uint64(b)
		b = b[8:]
		if uint64(len(b)) < size+1 || b[size] != '\n' {
			t.Fatalf("field %s: %d bytes not followed by a newline in %q", line, size, b)
		}
		fields[string(line)] = append(fields[string(line)], string(b[:size]))
		b = b[size+1:]
	}
	return fields
}
