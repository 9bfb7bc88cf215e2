package config

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/BurntSushi/toml"
)

// probe fails whenever it is decoded. The TOML decoder reports an
// Unmarshaler's error as a ParseError carrying the position of the key
// being decoded; that is the only way toml v1.6 lets a caller learn where a
// key is (MetaData keeps the positions but does not export them).
type probe struct{}

var errProbe = errors.New("position probe")

func (*probe) UnmarshalTOML(any) error { return errProbe }

// lineIndex finds the line of a key in a parsed document, when asked: the
// tables on the way are decoded into maps of Primitives, and the key's
// Primitive into a probe. Each probe costs a pass over the file (the
// decoder computes a column), so lines are looked up only for the few keys
// that an error is about, and cached.
type lineIndex struct {
	mu     sync.Mutex // PrimitiveDecode writes to md
	md     *toml.MetaData
	top    map[string]toml.Primitive
	keys   map[string]toml.Key // the document's keys, by Key.String()
	tables map[string]map[string]toml.Primitive
	lines  map[string]int
}

func newLineIndex(md *toml.MetaData, top map[string]toml.Primitive) *lineIndex {
	idx := &lineIndex{
		md:     md,
		top:    top,
		keys:   make(map[string]toml.Key),
		tables: make(map[string]map[string]toml.Primitive),
		lines:  make(map[string]int),
	}
	for _, k := range md.Keys() {
		idx.keys[k.String()] = k
	}
	return idx
}

// line returns the line of the key that toml.Key.String() writes as key,
// or 0: for a nil index, a key that is not in the document, a table that
// is only implied by a dotted key or a [a.b] header, and keys inside arrays
// of tables.
func (idx *lineIndex) line(key string) int {
	if idx == nil {
		return 0
	}
	idx.mu.Lock()
	defer idx.mu.Unlock()
	if l, ok := idx.lines[key]; ok {
		return l
	}
	l := 0
	if k, ok := idx.keys[key]; ok {
		if prim, ok := idx.primitive(k); ok {
			var pe toml.ParseError
			if err := idx.md.PrimitiveDecode(prim, &probe{}); errors.As(err, &pe) {
				l = pe.Position.Line
			}
		}
	}
	idx.lines[key] = l
	return l
}

// has reports whether the document sets key, as toml.Key.String()
// writes it; false for a nil index.
func (idx *lineIndex) has(key string) bool {
	if idx == nil {
		return false
	}
	_, ok := idx.keys[key]
	return ok
}

// primitive finds the undecoded value of key.
func (idx *lineIndex) primitive(key toml.Key) (toml.Primitive, bool) {
	tbl := idx.top
	for i := range len(key) - 1 {
		prefix := key[:i+1].String()
		sub, ok := idx.tables[prefix]
		if !ok {
			prim, found := tbl[key[i]]
			if !found || idx.md.PrimitiveDecode(prim, &sub) != nil {
				return toml.Primitive{}, false
			}
			idx.tables[prefix] = sub
		}
		tbl = sub
	}
	prim, ok := tbl[key[len(key)-1]]
	return prim, ok
}

// maxErrors is how many problems are reported; a file with more is best
// fixed from the top and read again.
const maxErrors = 20

// problems collects the errors of one file, looking up their lines.
type problems struct {
	file string
	idx  *lineIndex
	errs []error
	more int // not kept, beyond maxErrors
}

// full reports whether maxErrors problems were kept; further ones are
// only counted.
func (p *problems) full() bool { return len(p.errs) >= maxErrors }

// add records e, filling in File, and Line from Key when it is 0.
func (p *problems) add(e *Error) {
	if p.full() {
		p.more++
		return
	}
	e.File = p.file
	if e.Line == 0 && e.Key != "" {
		e.Line = p.idx.line(e.Key)
	}
	p.errs = append(p.errs, e)
}

// err returns nil, the only problem, or all of them joined, in the order
// of their lines; problems without a line come last.
func (p *problems) err() error {
	errs := slices.Clone(p.errs)
	slices.SortStableFunc(errs, func(a, b error) int {
		la, lb := a.(*Error).Line, b.(*Error).Line
		switch {
		case la == lb:
			return 0
		case la == 0:
			return 1
		case lb == 0:
			return -1
		}
		return la - lb
	})
	if p.more > 0 {
		errs = append(errs, &Error{File: p.file, Msg: fmt.Sprintf("and %d more problems", p.more)})
	}
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return errors.Join(errs...)
}
