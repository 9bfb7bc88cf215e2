package workerproto

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxAnswer is the longest answer line, in bytes. The pool should stop
// reading at the same length (pool.WorkerSpec.MaxAnswer).
const MaxAnswer = 1 << 20

// maxDepth bounds the nesting of the values the parser skips, so that a
// line of "[[[[..." costs no more than a flat one.
const maxDepth = 64

// ErrMalformed is wrapped by every error of ParseAnswer.
var ErrMalformed = errors.New("malformed answer")

// Answer is a worker's answer to one job.
type Answer struct {
	ID string
	OK bool
	// Error is the worker's description of a failure; it may be "" when
	// OK is false, and is "" when OK is true.
	Error string
}

// ParseAnswer parses an answer line (without its newline) and checks that
// it answers the job whose id is id. A well-formed answer with "ok": false
// is not an error: it is returned with OK false. The error of a malformed
// answer wraps ErrMalformed, says what was wrong, and quotes the start of
// the line.
func ParseAnswer(line []byte, id string) (Answer, error) {
	if len(line) > MaxAnswer {
		return Answer{}, malformed(line, fmt.Sprintf("longer than %d bytes", MaxAnswer))
	}
	p := parser{b: line, id: id}
	a, err := p.answer()
	if err != nil {
		return Answer{}, malformed(line, err.Error())
	}
	if a.ID != id && a.ID != sentForm(id) {
		return Answer{}, malformed(line, fmt.Sprintf("it answers job %q, but the job in progress is %q", a.ID, id))
	}
	if a.OK {
		a.Error = ""
	}
	return a, nil
}

// excerpt is how much of a malformed line its error quotes.
const excerpt = 100

func malformed(line []byte, why string) error {
	q := line
	more := ""
	if len(q) > excerpt {
		q, more = q[:excerpt], fmt.Sprintf("... (%d bytes)", len(line))
	}
	return fmt.Errorf("%w: %s; the line: %q%s", ErrMalformed, why, q, more)
}

// parser reads one JSON value from b. It decodes only what an answer
// needs and validates the rest, without reflection or allocation beyond
// the strings it returns.
type parser struct {
	b     []byte
	i     int
	depth int
	id    string // the expected id, returned rather than a copy
}

func (p *parser) answer() (Answer, error) {
	var a Answer
	var haveID, haveOK, haveErr bool
	p.space()
	if p.i == len(p.b) {
		return a, errors.New("empty line, not JSON")
	}
	if p.b[p.i] != '{' {
		if err := p.value(); err != nil {
			return a, err
		}
		return a, errors.New("not a JSON object")
	}
	p.i++
	for first := true; ; first = false {
		p.space()
		if first && p.peek() == '}' {
			p.i++
			break
		}
		if p.peek() != '"' {
			return a, p.syntax("expected a member name")
		}
		raw, plain, err := p.rawStr()
		if err != nil {
			return a, err
		}
		key := string(raw) // no copy: only compared
		if !plain {
			key = decodeStr(raw)
		}
		p.space()
		if p.peek() != ':' {
			return a, p.syntax("expected ':'")
		}
		p.i++
		p.space()
		switch key {
		case "id":
			if haveID {
				return a, errors.New(`"id" appears twice`)
			}
			haveID = true
			if p.peek() != '"' {
				if err := p.value(); err != nil {
					return a, err
				}
				return a, errors.New(`"id" is not a string`)
			}
			raw, plain, err := p.rawStr()
			switch {
			case err != nil:
				return a, err
			case plain && string(raw) == p.id:
				a.ID = p.id
			case plain:
				a.ID = string(raw)
			default:
				a.ID = decodeStr(raw)
			}
		case "ok":
			if haveOK {
				return a, errors.New(`"ok" appears twice`)
			}
			haveOK = true
			switch {
			case p.literal("true"):
				a.OK = true
			case p.literal("false"):
				a.OK = false
			default:
				if err := p.value(); err != nil {
					return a, err
				}
				return a, errors.New(`"ok" is not true or false`)
			}
		case "error":
			if haveErr {
				return a, errors.New(`"error" appears twice`)
			}
			haveErr = true
			switch {
			case p.literal("null"):
			case p.peek() == '"':
				if a.Error, err = p.str(); err != nil {
					return a, err
				}
			default:
				if err := p.value(); err != nil {
					return a, err
				}
				return a, errors.New(`"error" is not a string`)
			}
		default:
			if err := p.value(); err != nil {
				return a, err
			}
		}
		p.space()
		switch p.peek() {
		case ',':
			p.i++
			continue
		case '}':
			p.i++
		default:
			return a, p.syntax("expected ',' or '}'")
		}
		break
	}
	p.space()
	if p.i != len(p.b) {
		return a, p.syntax("text after the JSON object")
	}
	switch {
	case !haveID:
		return a, errors.New(`no "id"`)
	case !haveOK:
		return a, errors.New(`no "ok"`)
	}
	return a, nil
}

// peek returns the next byte, or 0 at the end.
func (p *parser) peek() byte {
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

func (p *parser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\r', '\n':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) syntax(what string) error {
	if p.i >= len(p.b) {
		return fmt.Errorf("not JSON: %s, found the end of the line", what)
	}
	return fmt.Errorf("not JSON: %s at byte %d, found %q", what, p.i, p.b[p.i])
}

// literal consumes word if it comes next.
func (p *parser) literal(word string) bool {
	if len(p.b)-p.i >= len(word) && string(p.b[p.i:p.i+len(word)]) == word {
		p.i += len(word)
		return true
	}
	return false
}

// value checks and skips one JSON value.
func (p *parser) value() error {
	switch c := p.peek(); {
	case c == '"':
		_, err := p.skipStr()
		return err
	case c == '{' || c == '[':
		return p.container(c)
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	case p.literal("true"), p.literal("false"), p.literal("null"):
		return nil
	}
	return p.syntax("expected a value")
}

func (p *parser) container(open byte) error {
	p.depth++
	if p.depth > maxDepth {
		return fmt.Errorf("values nested more than %d deep", maxDepth)
	}
	end := byte(']')
	if open == '{' {
		end = '}'
	}
	p.i++
	p.space()
	if p.peek() == end {
		p.i++
		p.depth--
		return nil
	}
	for {
		p.space()
		if open == '{' {
			if p.peek() != '"' {
				return p.syntax("expected a member name")
			}
			if _, err := p.skipStr(); err != nil {
				return err
			}
			p.space()
			if p.peek() != ':' {
				return p.syntax("expected ':'")
			}
			p.i++
			p.space()
		}
		if err := p.value(); err != nil {
			return err
		}
		p.space()
		switch p.peek() {
		case ',':
			p.i++
		case end:
			p.i++
			p.depth--
			return nil
		default:
			return p.syntax(fmt.Sprintf("expected ',' or '%c'", end))
		}
	}
}

func (p *parser) number() error {
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	start := p.i
	if p.peek() == '-' {
		p.i++
	}
	switch {
	case p.peek() == '0':
		p.i++
	case digits() == 0:
		return p.syntax("expected a digit")
	}
	if p.peek() == '.' {
		p.i++
		if digits() == 0 {
			return p.syntax("expected a digit")
		}
	}
	if c := p.peek(); c == 'e' || c == 'E' {
		p.i++
		if c := p.peek(); c == '+' || c == '-' {
			p.i++
		}
		if digits() == 0 {
			return p.syntax("expected a digit")
		}
	}
	// A number JSON decoders cannot hold (1e700) is refused, as
	// encoding/json refuses it: the answer must read the same everywhere.
	if _, err := strconv.ParseFloat(string(p.b[start:p.i]), 64); err != nil {
		return fmt.Errorf("not JSON: number %s out of range at byte %d", p.b[start:p.i], start)
	}
	return nil
}

// skipStr checks a string and skips it; it reports whether the string
// holds escapes or bytes that decoding changes.
func (p *parser) skipStr() (plain bool, err error) {
	plain = true
	p.i++ // the opening quote
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return plain, nil
		case c == '\\':
			plain = false
			p.i++
			switch p.peek() {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i++
			case 'u':
				p.i++
				for k := 0; k < 4; k++ {
					if !isHex(p.peek()) {
						return false, p.syntax("expected a hexadecimal digit")
					}
					p.i++
				}
			default:
				return false, p.syntax("expected an escape character")
			}
		case c < 0x20:
			return false, p.syntax("expected a string's next character (control characters must be escaped)")
		case c < utf8.RuneSelf:
			p.i++
		default:
			r, size := utf8.DecodeRune(p.b[p.i:])
			if r == utf8.RuneError && size == 1 {
				plain = false
			}
			p.i += size
		}
	}
	return false, p.syntax("expected the end of a string")
}

// str reads a string and returns it decoded. Invalid UTF-8 and lone
// surrogates become U+FFFD, as encoding/json has them.
func (p *parser) str() (string, error) {
	raw, plain, err := p.rawStr()
	if err != nil {
		return "", err
	}
	if plain {
		return string(raw), nil
	}
	return decodeStr(raw), nil
}

// rawStr reads a string and returns what is between its quotes, and
// whether that is its value as it stands.
func (p *parser) rawStr() ([]byte, bool, error) {
	start := p.i
	plain, err := p.skipStr()
	if err != nil {
		return nil, false, err
	}
	return p.b[start+1 : p.i-1], plain, nil
}

// decodeStr decodes the inside of a string skipStr has checked.
func decodeStr(raw []byte) string {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		if c == '\\' {
			i++
			switch raw[i] {
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r := hex4(raw[i+1:])
				i += 4
				if utf16.IsSurrogate(r) {
					r2 := utf8.RuneError
					if i+6 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u' {
						r2 = hex4(raw[i+3:])
					}
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						r = dec
						i += 6
					} else {
						r = utf8.RuneError
					}
				}
				out = utf8.AppendRune(out, r)
			default: // '"', '\\', '/'
				out = append(out, raw[i])
			}
			i++
			continue
		}
		if c < utf8.RuneSelf {
			out = append(out, c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(raw[i:])
		if r == utf8.RuneError && size == 1 {
			out = utf8.AppendRune(out, utf8.RuneError)
		} else {
			out = append(out, raw[i:i+size]...)
		}
		i += size
	}
	return string(out)
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}
