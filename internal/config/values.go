package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/lifecycle"
)

// Duration is a time.Duration written in config.toml as a string that
// time.ParseDuration accepts: "30s", "1m30s", "500ms", "2h". The bare value
// "0" (or the integer 0) means zero. A number without a unit is refused,
// because "30" could mean seconds or milliseconds.
type Duration time.Duration

// String formats d like time.Duration does ("1m30s", "0s").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes d in the form UnmarshalText reads.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a duration such as "30s". See Duration.
func (d *Duration) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	v, err := time.ParseDuration(s) // "0" needs no unit
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			return fmt.Errorf("duration %q has no unit: write it as %q or %q", s, s+"s", s+"ms")
		}
		return fmt.Errorf("invalid duration %q: write a number with a unit (ns, us, ms, s, m, h), such as \"30s\" or \"1m30s\"", s)
	}
	*d = Duration(v)
	return nil
}

// UnmarshalTOML is called by the TOML decoder with the raw value, so that a
// value of the wrong TOML type gets a message that says what to write.
func (d *Duration) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		return d.UnmarshalText([]byte(v))
	case int64:
		if v == 0 {
			*d = 0
			return nil
		}
		return fmt.Errorf("duration %d has no unit: write it as a string such as \"%ds\"", v, v)
	}
	return fmt.Errorf("want a duration string such as \"30s\", not %s", tomlTypeName(v))
}

// Size is a number of bytes, written in config.toml as a string (or an
// integer) with an optional unit: "4096", "512B", "10KiB", "64MiB", "1GiB".
// All units are binary: K, KB and KiB are 1024 bytes; M, MB and MiB are
// 1024² bytes; G, GB and GiB 1024³; T, TB and TiB 1024⁴. KB and MB are read as
// binary too, as systemd and nginx read them; there are no decimal units.
// Units are case-insensitive, and a space may stand between number and
// unit. Only whole numbers are accepted.
type Size int64

var sizeUnits = []struct {
	symbol string
	names  []string
	shift  uint
}{
	{"B", []string{"", "b"}, 0},
	{"KiB", []string{"k", "kb", "kib"}, 10},
	{"MiB", []string{"m", "mb", "mib"}, 20},
	{"GiB", []string{"g", "gb", "gib"}, 30},
	{"TiB", []string{"t", "tb", "tib"}, 40},
}

// String formats s with the largest binary unit that divides it exactly
// ("64MiB", "1536B").
func (s Size) String() string {
	if s != 0 {
		for i := len(sizeUnits) - 1; i > 0; i-- {
			u := sizeUnits[i]
			if s%(1<<u.shift) == 0 {
				return strconv.FormatInt(int64(s)>>u.shift, 10) + u.symbol
			}
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// MarshalText writes s in the form UnmarshalText reads.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a size such as "64MiB". See Size.
func (s *Size) UnmarshalText(text []byte) error {
	str := strings.TrimSpace(string(text))
	i := 0
	for i < len(str) && str[i] >= '0' && str[i] <= '9' {
		i++
	}
	num, unit := str[:i], strings.ToLower(strings.TrimSpace(str[i:]))
	if num == "" {
		return fmt.Errorf("invalid size %q: write a whole number of bytes with an optional unit, such as \"4096\", \"10KiB\" or \"64MiB\"", str)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return fmt.Errorf("size %q is too large", str)
	}
	for _, u := range sizeUnits {
		for _, name := range u.names {
			if unit != name {
				continue
			}
			if n > math.MaxInt64>>u.shift {
				return fmt.Errorf("size %q is too large", str)
			}
			*s = Size(n << u.shift)
			return nil
		}
	}
	return fmt.Errorf("invalid size %q: unknown unit %q; use B, KiB, MiB, GiB or TiB (K, M, G, T and KB, MB, GB, TB are binary too)", str, strings.TrimSpace(str[i:]))
}

// UnmarshalTOML is called by the TOML decoder with the raw value; it accepts
// a string or an integer number of bytes.
func (s *Size) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		return s.UnmarshalText([]byte(v))
	case int64:
		if v < 0 {
			return fmt.Errorf("size %d is negative", v)
		}
		*s = Size(v)
		return nil
	}
	return fmt.Errorf("want a size such as \"64MiB\", not %s", tomlTypeName(v))
}

// Signal is a signal written in config.toml by name or number: "SIGTERM",
// "TERM", "sigterm" and "15" are the same signal. Numbers from 1 to 64 are
// accepted, which includes the real-time signals (for which there are no
// names here). See lifecycle.ParseSignal.
type Signal syscall.Signal

// String returns the signal's name ("SIGTERM"), or its number when it has
// no name.
func (s Signal) String() string { return lifecycle.SignalName(syscall.Signal(s)) }

// MarshalText writes s in the form UnmarshalText reads.
func (s Signal) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a signal name or number. See Signal.
func (s *Signal) UnmarshalText(text []byte) error {
	sig, err := lifecycle.ParseSignal(strings.TrimSpace(string(text)))
	if err != nil {
		return err
	}
	*s = Signal(sig)
	return nil
}

// UnmarshalTOML is called by the TOML decoder with the raw value; it accepts
// a name or an integer.
func (s *Signal) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		return s.UnmarshalText([]byte(v))
	case int64:
		return s.UnmarshalText([]byte(strconv.FormatInt(v, 10)))
	}
	return fmt.Errorf("want a signal such as \"SIGTERM\", not %s", tomlTypeName(v))
}

// tomlTypeName names the TOML type of a decoded value for error messages.
func tomlTypeName(v any) string {
	switch v := v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	case time.Time:
		return "a date-time"
	default:
		return fmt.Sprintf("a %T", v)
	}
}
