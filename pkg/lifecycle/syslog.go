package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
)

// SyslogOptions configures [NewSyslogHandler].
type SyslogOptions struct {
	// Tag names the program in each line, e.g. "jobdaemon". "" means the
	// program's base name.
	Tag string
	// Facility is the syslog facility, 0 to 23: 3 is daemon; the jobs'
	// lines use another handler with e.g. 1, user.
	Facility int
	// Level is the minimum level logged; nil means slog.LevelInfo.
	Level slog.Leveler
	// Path is the syslog socket; "" means "/dev/log".
	Path string
}

// NewSyslogHandler returns a slog.Handler that sends each record to the
// local syslog daemon as one line,
//
//	<PRI>Jan _2 15:04:05 TAG[PID]: message key=value key="quoted value"
//
// where PRI is Facility*8 plus the severity (Error 3, Warn 4, Info 6, Debug
// and below 7) and the time is local, as RFC 3164 has it (no host name: the
// local daemon adds its own). Attribute keys inside groups are joined with
// "."; keys and values that are empty or hold spaces, '=', '"' or
// unprintable characters are quoted Go-style, and unprintable characters in
// the message are escaped, so a record is always one line.
//
// The socket is a datagram socket as rsyslog and journald make it, or a
// stream socket (syslog-ng's unix-stream) where each line ends in a newline.
// After a failed write (the syslog daemon restarted and made a new socket)
// the handler reconnects once and writes again; if that fails too, Handle
// returns the error, the record is lost, and the next record tries to
// connect again. The handler is safe for concurrent use.
//
// NewSyslogHandler connects at once: when the socket does not exist (no
// syslog daemon on the machine) the error says so and matches
// fs.ErrNotExist, so the caller can log to stderr instead.
func NewSyslogHandler(o SyslogOptions) (slog.Handler, error) {
	if o.Facility < 0 || o.Facility > 23 {
		return nil, fmt.Errorf("syslog facility %d is not between 0 and 23", o.Facility)
	}
	path := o.Path
	if path == "" {
		path = "/dev/log"
	}
	tag := o.Tag
	if tag == "" {
		tag = filepath.Base(os.Args[0])
	}
	level := o.Level
	if level == nil {
		level = slog.LevelInfo
	}
	c := &syslogCommon{
		path:     path,
		tag:      tag,
		pid:      os.Getpid(),
		facility: o.Facility,
		level:    level,
	}
	c.mu.Lock()
	err := c.connectLocked()
	c.mu.Unlock()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("syslog socket %s does not exist: %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("connecting to syslog socket %s: %w", path, err)
	}
	return &syslogHandler{c: c}, nil
}

// syslogCommon is what the handlers derived by WithAttrs and WithGroup
// share: the connection above all.
type syslogCommon struct {
	path     string
	tag      string
	pid      int
	facility int
	level    slog.Leveler

	mu     sync.Mutex
	conn   net.Conn // nil after a failed reconnect
	stream bool     // conn is a stream socket: lines end in '\n'
}

type syslogHandler struct {
	c     *syslogCommon
	attrs attrs[byte] // from WithAttrs and WithGroup
}

func (h *syslogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.c.level.Level()
}

func (h *syslogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	return &syslogHandler{c: h.c, attrs: h.attrs.with(as, appendTextAttr)}
}

func (h *syslogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &syslogHandler{c: h.c, attrs: h.attrs.group(name)}
}

func (h *syslogHandler) Handle(_ context.Context, r slog.Record) error {
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	b := make([]byte, 0, 128+len(r.Message)+len(h.attrs.pre))
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(h.c.facility*8+severity(r.Level)), 10)
	b = append(b, '>')
	b = t.AppendFormat(b, time.Stamp)
	b = append(b, ' ')
	b = append(b, h.c.tag...)
	b = append(b, '[')
	b = strconv.AppendInt(b, int64(h.c.pid), 10)
	b = append(b, "]: "...)
	b = append(b, escapeControl(r.Message)...)
	b = h.attrs.appendRecord(b, r, appendTextAttr)
	return h.c.write(b)
}

// write sends one line, reconnecting once if the connection is gone or the
// write fails.
func (c *syslogCommon) write(line []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		if err := c.writeLocked(line); err == nil {
			return nil
		}
		c.conn.Close()
		c.conn = nil
	}
	if err := c.connectLocked(); err != nil {
		return fmt.Errorf("reconnecting to syslog socket %s: %w", c.path, err)
	}
	if err := c.writeLocked(line); err != nil {
		c.conn.Close()
		c.conn = nil
		return fmt.Errorf("writing to syslog socket %s: %w", c.path, err)
	}
	return nil
}

func (c *syslogCommon) writeLocked(line []byte) error {
	if c.stream {
		// Framing for stream sockets is the newline; nothing in line is
		// one, since the message and attributes are escaped.
		line = append(line, '\n')
	}
	_, err := c.conn.Write(line)
	return err
}

// connectLocked connects to the socket at c.path, a datagram socket or,
// failing that with EPROTOTYPE, a stream socket, as log/syslog does.
func (c *syslogCommon) connectLocked() error {
	conn, err := net.Dial("unixgram", c.path)
	if err == nil {
		c.conn, c.stream = conn, false
		return nil
	}
	if !errors.Is(err, syscall.EPROTOTYPE) {
		return err
	}
	conn, err = net.Dial("unix", c.path)
	if err != nil {
		return err
	}
	c.conn, c.stream = conn, true
	return nil
}

// appendTextAttr appends " key=value" for each leaf of a, an attribute
// inside groups.
func appendTextAttr(b []byte, groups []string, a slog.Attr) []byte {
	walkAttr(groups, a, func(groups []string, key string, v slog.Value) {
		b = append(b, ' ')
		if len(groups) > 0 {
			key = strings.Join(groups, ".") + "." + key
		}
		b = append(b, quoteValue(key)...)
		b = append(b, '=')
		b = append(b, quoteValue(valueString(v))...)
	})
	return b
}

// quoteValue returns s Go-quoted when it would not read back as one token
// of a key=value line: empty, or holding a space, '=', '"' or an
// unprintable character.
func quoteValue(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return r == ' ' || r == '=' || r == '"' || !unicode.IsPrint(r)
	}) {
		return s
	}
	return strconv.Quote(s)
}

// escapeControl escapes the unprintable characters of s Go-style, so that a
// multi-line message stays one syslog line.
func escapeControl(s string) string {
	unprintable := func(r rune) bool { return r != ' ' && !unicode.IsPrint(r) }
	if !strings.ContainsFunc(s, unprintable) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unprintable(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}
