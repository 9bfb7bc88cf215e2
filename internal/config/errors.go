package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/BurntSushi/toml"

	suggestpkg "github.com/jobdaemon/jobdaemon/internal/suggest"
)

// ExitConfig is the exit status for a configuration error (EX_CONFIG from
// sysexits.h). Callers that fail to Load the configuration print the error
// and exit with it; systemd shows it as "status=78/CONFIG", and a unit with
// RestartPreventExitStatus=78 is not restarted into the same mistake.
const ExitConfig = 78

// Error is one problem in a configuration file. Load and Validate return
// either a single *Error or several joined with errors.Join; each line of
// the joined message is one *Error.
type Error struct {
	// File is the configuration file's path as given to Load; empty for a
	// Config that did not come from a file.
	File string
	// Line is the 1-based line of Key in File, or 0 when unknown (a key
	// that was left at its default has no line).
	Line int
	// Key is the dotted TOML key the problem is about ("pool.max_children"),
	// or empty for a problem with the file as a whole.
	Key string
	// Msg says what is wrong and how to fix it; it names the key.
	Msg string
	// Err is the underlying error, if any; Unwrap returns it.
	Err error
}

// Error formats e as "file:line: msg", leaving out the line when it is 0
// and the file when it is empty.
func (e *Error) Error() string {
	switch {
	case e.File == "":
		return e.Msg
	case e.Line == 0:
		return e.File + ": " + e.Msg
	}
	return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Msg
}

// Unwrap returns the underlying error, or nil.
func (e *Error) Unwrap() error { return e.Err }

// syntaxError turns an error from parsing text into an *Error.
func syntaxError(file, text string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		line := pe.Position.Line
		// An error at a newline ("expected ']' ... but got '\n'") is
		// counted by the lexer on the next line; it belongs to the line
		// that the newline ends.
		if s := pe.Position.Start; s >= 0 && s < len(text) && text[s] == '\n' {
			line = 1 + strings.Count(text[:s], "\n")
		}
		return &Error{File: file, Line: line, Msg: "invalid TOML: " + pe.Message, Err: err}
	}
	return &Error{File: file, Msg: fmt.Sprintf("invalid TOML: %v", err), Err: err}
}

// mdError matches the errors toml v1.6 makes with fmt.Errorf while decoding
// (type mismatches): `toml: line 7 (last key "pool.max_children"): msg`.
// They carry a line but are not ParseErrors.
var (
	mdError = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`(?s)^toml: (?:line (\d+) )?\(last key ("(?:[^"\\]|\\.)*")\): (.*)$`)
	})
	typeError = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^incompatible types: TOML value has type (.+); destination has type (.+)$`)
	})
)

// decodeError turns an error from decoding into Config (a value of the
// wrong type, or one that the value types refused) into an *Error without
// File, and without Line when the decoder did not know it.
func decodeError(err error) *Error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return &Error{Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.LastKey + ": " + pe.Message, Err: err}
	}
	if m := mdError().FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		key, uerr := strconv.Unquote(m[2])
		if uerr != nil {
			key = m[2]
		}
		msg := m[3]
		if t := typeError().FindStringSubmatch(msg); t != nil {
			msg = fmt.Sprintf("want %s, not %s", goTypeWord(t[2]), goTypeWord(t[1]))
		}
		return &Error{Line: line, Key: key, Msg: key + ": " + msg, Err: err}
	}
	return &Error{Msg: strings.TrimPrefix(err.Error(), "toml: "), Err: err}
}

// goTypeWord names a type from a decoder message, which may be a Go type
// ("int64") or a TOML one ("integer"), as a TOML type.
func goTypeWord(t string) string {
	switch t {
	case "int64", "integer":
		return "an integer"
	case "float64", "float":
		return "a float"
	case "bool", "boolean":
		return "a boolean"
	case "map", "map[string]interface {}", "map[string]any":
		return "a table"
	case "slice", "[]interface {}", "[]any":
		return "an array"
	case "[]map[string]interface {}", "[]map[string]any":
		return "an array of tables"
	case "time.Time":
		return "a date-time"
	}
	return article(t)
}

// article puts "a" or "an" before a TOML type name from the decoder.
func article(s string) string {
	s = strings.ToLower(s)
	if s != "" && strings.ContainsRune("aeiou", rune(s[0])) {
		return "an " + s
	}
	return "a " + s
}

// suggest returns the candidate closest to s, or "" when none is close
// enough to be a likely typo.
func suggest(s string, candidates []string) string { return suggestpkg.Closest(s, candidates) }
