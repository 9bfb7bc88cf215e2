package workerproto

import (
	"encoding/base64"
	"errors"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Job is what a command worker is told about one job.
type Job struct {
	ID      string
	Attempt int
	Slot    int
	Payload []byte
	// Path is the job's file, for sources that have one; "" omits it.
	Path string
	// Meta holds the source's small attributes; empty omits it.
	Meta map[string]string
	// Omit is a key of Meta that is not sent, such as the one Path came
	// from.
	Omit string
}

// ErrPathNotUTF8 is returned by AppendJob for a path that is not valid
// UTF-8, which a JSON string cannot carry unchanged.
var ErrPathNotUTF8 = errors.New("job path is not valid UTF-8")

// AppendJob appends the job line of j to b, without a newline (the pool
// adds it), and returns the extended buffer. It fails only for a path
// that is not valid UTF-8, and returns b unchanged then. It allocates
// nothing when b has room, unless Meta has more than 8 keys.
func AppendJob(b []byte, j *Job) ([]byte, error) {
	if j.Path != "" && !utf8.ValidString(j.Path) {
		return b, ErrPathNotUTF8
	}
	b = append(b, `{"id":`...)
	b = appendString(b, j.ID)
	b = append(b, `,"attempt":`...)
	b = strconv.AppendInt(b, int64(j.Attempt), 10)
	b = append(b, `,"slot":`...)
	b = strconv.AppendInt(b, int64(j.Slot), 10)
	b = append(b, `,"payload":"`...)
	b = base64.StdEncoding.AppendEncode(b, j.Payload)
	b = append(b, '"')
	if j.Path != "" {
		b = append(b, `,"path":`...)
		b = appendString(b, j.Path)
	}
	n := len(j.Meta)
	if _, ok := j.Meta[j.Omit]; ok {
		n--
	}
	if n > 0 {
		b = appendMeta(b, j.Meta, j.Omit)
	}
	return append(b, '}'), nil
}

// appendMeta appends the members of m but omit in the order of their
// keys, so that one job always makes one line.
func appendMeta(b []byte, m map[string]string, omit string) []byte {
	var small [8]string // no allocation for the few keys a source sets
	keys := small[:0]
	for k := range m {
		if k != omit {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	b = append(b, `,"meta":{`...)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendString(b, m[k])
	}
	return append(b, '}')
}

const hex = "0123456789abcdef"

// safe[c] is true for the ASCII bytes that stand for themselves in a JSON
// string.
var safe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendString appends s as a JSON string. Control characters are
// escaped, U+2028 and U+2029 too (some line readers split on them), and
// each byte that is not part of valid UTF-8 becomes U+FFFD, as
// encoding/json does, so that the line is always valid JSON and UTF-8.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if safe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// sentForm returns s as a worker decodes it from a job line: each byte
// that is not part of valid UTF-8 replaced by U+FFFD.
func sentForm(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	out := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			out = utf8.AppendRune(out, utf8.RuneError)
		} else {
			out = append(out, s[i:i+size]...)
		}
		i += size
	}
	return string(out)
}
