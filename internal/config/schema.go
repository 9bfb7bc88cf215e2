package config

import (
	"encoding"
	"fmt"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/jobdaemon/jobdaemon/pkg/service"
)

// node is one table of the schema, built from Config's toml tags.
type node struct {
	field    []int            // index path of the struct field in its parent
	names    []string         // keys in declaration order
	children map[string]*node // nil for a value
	anyKeys  bool             // a map: every key is allowed
}

var schema = buildSchema(reflect.TypeFor[Config]())

func buildSchema(t reflect.Type) *node {
	if reflect.PointerTo(t).Implements(reflect.TypeFor[encoding.TextUnmarshaler]()) {
		return &node{}
	}
	switch t.Kind() {
	case reflect.Map:
		return &node{anyKeys: true}
	case reflect.Struct:
		n := &node{children: make(map[string]*node)}
		// Visible fields include those of embedded tables (config.Log
		// embeds service.LogSettings), with their index paths.
		for _, f := range reflect.VisibleFields(t) {
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if f.Anonymous || name == "" || name == "-" || !f.IsExported() {
				continue
			}
			c := buildSchema(f.Type)
			c.field = f.Index
			n.names = append(n.names, name)
			n.children[name] = c
		}
		return n
	}
	return &node{}
}

// where finds the keys, below the top level, whose last part is name.
func (n *node) where(name string, prefix toml.Key, found *[]toml.Key) {
	for _, k := range n.names {
		key := append(prefix[:len(prefix):len(prefix)], k)
		if k == name && len(prefix) > 0 {
			*found = append(*found, key)
		}
		if c := n.children[k]; c.children != nil {
			c.where(name, key, found)
		}
	}
}

// unknownKeys checks every key of the document against the schema, exactly
// (the TOML decoder alone would ignore unknown keys and match field names
// case-insensitively). A key is reported once, at its first component that
// is not in the schema, on the line where the first key under it appears.
func unknownKeys(p *problems, md *toml.MetaData) {
	seen := make(map[string]bool)
	for _, key := range md.Keys() {
		n := schema
		for i, part := range key {
			if n.anyKeys || n.children == nil {
				break // a map, or a value: the decoder checks the type
			}
			if c, ok := n.children[part]; ok {
				n = c
				continue
			}
			bad := key[:i+1].String()
			if seen[bad] {
				break
			}
			seen[bad] = true
			if p.full() {
				p.more++
				break
			}
			line := p.idx.line(bad)
			if line == 0 { // an implied table: where its first key is
				line = p.idx.line(key.String())
			}
			p.add(&Error{Line: line, Key: bad,
				Msg: unknownMsg(n, key[:i], part, i < len(key)-1 || md.Type(key...) == "Hash")})
			break
		}
	}
}

func unknownMsg(n *node, table toml.Key, name string, isTable bool) string {
	var b strings.Builder
	full := append(table[:len(table):len(table)], name)
	switch {
	case isTable:
		fmt.Fprintf(&b, "unknown table [%s]", full)
	case len(table) == 0:
		fmt.Fprintf(&b, "unknown key %q at the top level", name)
	default:
		fmt.Fprintf(&b, "unknown key %q in [%s]", name, table)
	}
	var elsewhere []toml.Key
	schema.where(name, nil, &elsewhere)
	if len(elsewhere) > 0 {
		var alts []string
		for _, k := range elsewhere {
			if isTable {
				alts = append(alts, "["+k.String()+"]")
			} else {
				alts = append(alts, "["+k[:len(k)-1].String()+"]")
			}
		}
		if isTable {
			fmt.Fprintf(&b, " (did you mean %s?)", strings.Join(alts, " or "))
		} else {
			fmt.Fprintf(&b, " (%q belongs in %s)", name, strings.Join(alts, " or "))
		}
		return b.String()
	}
	if s := suggest(name, n.names); s != "" {
		if n.children[s].children != nil {
			fmt.Fprintf(&b, " (did you mean [%s]?)", append(table[:len(table):len(table)], s))
		} else {
			fmt.Fprintf(&b, " (did you mean %q?)", s)
		}
		return b.String()
	}
	if len(table) == 0 {
		fmt.Fprintf(&b, "; the tables are [%s]", strings.Join(n.names, "], ["))
	} else {
		fmt.Fprintf(&b, "; the keys of [%s] are %s", table, strings.Join(n.names, ", "))
	}
	return b.String()
}

// decodeTable decodes the keys of tbl into rv, a struct whose schema is n,
// one key at a time, so that every value of the wrong type is reported and
// not only the first. Keys absent from tbl keep their value in rv.
func decodeTable(p *problems, md *toml.MetaData, tbl map[string]toml.Primitive, n *node, rv reflect.Value, prefix toml.Key) {
	for _, name := range n.names {
		prim, ok := tbl[name]
		if !ok {
			continue
		}
		c := n.children[name]
		fv := rv.FieldByIndex(c.field)
		key := append(prefix[:len(prefix):len(prefix)], name)
		t := md.Type(key...)
		if c.anyKeys && t != "Hash" && t != "" {
			// The decoder would silently skip a value where a table belongs.
			p.add(&Error{Key: key.String(), Msg: fmt.Sprintf("%s: want a table, not %s", key, typeWord(t))})
			continue
		}
		if c.children == nil {
			if err := md.PrimitiveDecode(prim, decodeTarget(fv)); err != nil {
				p.add(decodeError(err))
			}
			continue
		}
		var sub map[string]toml.Primitive
		if t != "Hash" && t != "" || md.PrimitiveDecode(prim, &sub) != nil {
			p.add(&Error{Key: key.String(), Msg: fmt.Sprintf("%s: want a table, not %s", key, typeWord(t))})
			continue
		}
		decodeTable(p, md, sub, c, fv, key)
	}
}

// typeWord names a type as toml.MetaData.Type gives it, for messages.
func typeWord(t string) string {
	switch t {
	case "Hash":
		return "a table"
	case "ArrayHash":
		return "an array of tables"
	case "Bool":
		return "a boolean"
	case "":
		return "a value"
	}
	return article(t)
}

// decodeTarget returns what a value is decoded into: the field itself, or,
// for the plain Go types of the service's settings, this package's types
// that read the same values with clearer messages ("30" has no unit;
// "SIGTREM" is not a signal, did you mean "SIGTERM"?), and sizes with
// units ("256MiB").
func decodeTarget(fv reflect.Value) any {
	switch fv.Type() {
	case reflect.TypeFor[time.Duration]():
		return (*Duration)(fv.Addr().Interface().(*time.Duration))
	case reflect.TypeFor[syscall.Signal]():
		return (*Signal)(fv.Addr().Interface().(*syscall.Signal))
	case reflect.TypeFor[service.Bytes]():
		return (*Size)(fv.Addr().Interface().(*service.Bytes))
	}
	return fv.Addr().Interface()
}
