package lifecycle

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

// journalSend is journal.Send; tests swap it to see the entries or make
// sending fail.
var journalSend = journal.Send

// JournalStream reports whether stderr is the journal's stream transport,
// that is JOURNAL_STREAM names stderr's device and inode: systemd runs the
// daemon with StandardError=journal. It is false when JOURNAL_STREAM is
// unset, malformed, or names another file (stderr was redirected, or the
// variable was inherited from a service by a process started by hand), and
// false when fstat fails. Only then is the native protocol worth using:
// journald attributes its datagrams to our unit either way, but elsewhere
// nobody may read /run/systemd/journal.
func JournalStream() bool {
	ok, err := journal.StderrIsJournalStream()
	return err == nil && ok
}

// JournalOptions configures [NewJournalHandler].
type JournalOptions struct {
	// Identifier is SYSLOG_IDENTIFIER, the name journalctl -t matches and
	// shows before each line, e.g. "jobdaemon". "" means the program's
	// base name.
	Identifier string
	// Facility is SYSLOG_FACILITY, e.g. 3 (daemon) or 1 (user), which
	// journalctl --facility matches.
	Facility int
	// Level is the minimum level logged; nil means slog.LevelInfo.
	Level slog.Leveler
	// Fields renames attribute keys to journal fields, e.g.
	// {"job_id": "JOB_ID", "slot": "JOB_SLOT"}. A key inside groups is
	// matched with its groups joined by ".", as in "http.method".
	Fields map[string]string
}

// NewJournalHandler returns a slog.Handler that sends each record to the
// journal as one entry through the native protocol, with MESSAGE, PRIORITY
// (Error 3, Warn 4, Info 6, Debug and below 7), SYSLOG_IDENTIFIER and
// SYSLOG_FACILITY (go-systemd sets neither of the last two, and journald
// would otherwise file the entries under the executable's name and the
// user facility) and one field per attribute.
//
// A field's name is the attribute's key renamed by Fields, or else the key
// with its groups joined by "_", upper-cased, and every character outside
// [A-Z0-9_] turned into "_"; a name starting with "_" or a digit gets the
// prefix "X" or "X_" ("_pid" becomes X_PID, "2fa" X_2FA: journald drops
// fields starting with "_" from clients, those are its trusted fields, and
// names must start with a letter), and so does a name that would clash with
// one of the four fields above ("message" becomes X_MESSAGE). Names are cut to 64 bytes, the
// journal's limit. Attributes with an empty key are skipped. A value is
// slog's Value.String(), except times, which are RFC 3339 with nanoseconds.
// Values may hold newlines (the protocol has a binary-safe form).
//
// When the journal cannot be written to, the record goes to stderr as a
// text line instead (under systemd that is the journal's stream, so the
// line still arrives), and Handle returns nil.
func NewJournalHandler(o JournalOptions) slog.Handler {
	ident := o.Identifier
	if ident == "" {
		ident = filepath.Base(os.Args[0])
	}
	level := o.Level
	if level == nil {
		level = slog.LevelInfo
	}
	return &journalHandler{c: &journalCommon{
		ident:    ident,
		facility: strconv.Itoa(o.Facility),
		level:    level,
		fields:   maps.Clone(o.Fields),
		stderr:   os.Stderr,
	}}
}

// journalCommon is what the handlers derived by WithAttrs and WithGroup
// share.
type journalCommon struct {
	ident    string
	facility string
	level    slog.Leveler
	fields   map[string]string

	mu     sync.Mutex // serializes writes to stderr
	stderr io.Writer
	warned bool // the journal's failure was reported on stderr
}

type journalHandler struct {
	c     *journalCommon
	attrs attrs[journalField] // from WithAttrs and WithGroup
}

type journalField struct{ name, value string }

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.c.level.Level()
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	return &journalHandler{c: h.c, attrs: h.attrs.with(as, h.c.appendFields)}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &journalHandler{c: h.c, attrs: h.attrs.group(name)}
}

func (h *journalHandler) Handle(_ context.Context, r slog.Record) error {
	fs := h.attrs.appendRecord(nil, r, h.c.appendFields)
	vars := make(map[string]string, len(fs)+2)
	for _, f := range fs {
		vars[f.name] = f.value
	}
	vars["SYSLOG_IDENTIFIER"] = h.c.ident
	vars["SYSLOG_FACILITY"] = h.c.facility
	err := journalSend(r.Message, journal.Priority(severity(r.Level)), vars)
	if err != nil {
		h.c.fallback(r, fs, err)
	}
	return nil
}

// appendFields appends the journal fields of a, an attribute inside groups.
func (c *journalCommon) appendFields(fs []journalField, groups []string, a slog.Attr) []journalField {
	walkAttr(groups, a, func(groups []string, key string, v slog.Value) {
		qualified := key
		if len(groups) > 0 {
			qualified = strings.Join(groups, ".") + "." + key
		}
		name, ok := c.fields[qualified]
		if !ok {
			name = strings.Join(append(slices.Clip(groups), key), "_")
		}
		if name = fieldName(name); name != "" {
			fs = append(fs, journalField{name, valueString(v)})
		}
	})
	return fs
}

// fallback writes r to stderr when the journal refused it, so the message
// is not lost; the first time it also says why.
func (c *journalCommon) fallback(r slog.Record, fs []journalField, err error) {
	var b strings.Builder
	pid := os.Getpid()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.warned {
		c.warned = true
		fmt.Fprintf(&b, "%s[%d]: cannot log to the journal, logging to stderr: %v\n", c.ident, pid, err)
	}
	fmt.Fprintf(&b, "%s[%d]: %s %s", c.ident, pid, r.Level, r.Message)
	for _, f := range fs {
		b.WriteByte(' ')
		b.WriteString(f.name)
		b.WriteByte('=')
		b.WriteString(quoteValue(f.value))
	}
	b.WriteByte('\n')
	io.WriteString(c.stderr, b.String())
}

// reservedFields are set by the handler (or go-systemd) on every entry; an
// attribute of the same name would add a second value to them.
var reservedFields = []string{"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "SYSLOG_FACILITY"}

// fieldName turns s into a journal field name journald accepts from a
// client: [A-Z0-9_], starting with a letter, at most 64 bytes. It returns ""
// for an empty s.
func fieldName(s string) string {
	if s == "" {
		return ""
	}
	b := make([]byte, 0, len(s)+2)
	for _, r := range s {
		switch {
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			b = append(b, byte(r))
		case r >= 'a' && r <= 'z':
			b = append(b, byte(r-'a'+'A'))
		default:
			b = append(b, '_')
		}
	}
	name := string(b)
	switch {
	case b[0] == '_':
		name = "X" + name
	case b[0] >= '0' && b[0] <= '9', slices.Contains(reservedFields, name):
		name = "X_" + name
	}
	if len(name) > 64 {
		name = name[:64]
	}
	return name
}

// severity maps a slog level to a syslog severity, which journald calls the
// priority: err, warning, info, debug.
func severity(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	default:
		return 7
	}
}

// walkAttr calls fn for each leaf of a, an attribute inside groups,
// following slog's rules: values are resolved, a group's attributes are
// inside it (inline when its key is empty), an empty group is nothing, and
// other attributes with an empty key are skipped.
func walkAttr(groups []string, a slog.Attr, fn func(groups []string, key string, v slog.Value)) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		as := v.Group()
		if len(as) == 0 {
			return
		}
		if a.Key != "" {
			groups = append(slices.Clip(groups), a.Key)
		}
		for _, g := range as {
			walkAttr(groups, g, fn)
		}
		return
	}
	if a.Key == "" {
		return
	}
	fn(groups, a.Key, v)
}

// valueString is v as text: slog's String, but times in RFC 3339 rather than
// Go's time.String, which has the monotonic reading and a zone name.
func valueString(v slog.Value) string {
	if v.Kind() == slog.KindTime {
		return v.Time().Format(time.RFC3339Nano)
	}
	return v.String()
}
