package service

import (
	"reflect"
	"strings"

	"github.com/BurntSushi/toml"
)

// NULMessage says why a string with a NUL byte is refused, after its key.
const NULMessage = "holds a NUL byte (\\0), which no path, name, argument or variable can: remove it"

// NULKeys returns the dotted keys, as config.toml names them, of the
// strings in v that hold a NUL byte: v is a struct of tables with toml
// tags, such as Settings, or a pointer to one. A string slice is one key;
// in a table of strings (map[string]string) it is the entry's key, or the
// table's when the NUL is in an entry's name. No path, user name,
// argument or environment variable can hold NUL: the kernel and libc take
// it for the end of the string, so a value with one would mean something
// else than it says, or fail at every job.
func NULKeys(v any) []string {
	var keys []string
	walkStrings(reflect.ValueOf(v), nil, func(key toml.Key, s string) {
		if strings.IndexByte(s, 0) >= 0 {
			keys = append(keys, key.String())
		}
	})
	return keys
}

// walkStrings calls fn with every string value below v and its key.
// Slices report under their own key; map entries under theirs, and a
// map's key strings under the map's.
func walkStrings(v reflect.Value, key toml.Key, fn func(toml.Key, string)) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			walkStrings(v.Elem(), key, fn)
		}
	case reflect.String:
		fn(key, v.String())
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			walkStrings(v.Index(i), key, fn)
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			if k.Kind() == reflect.String {
				fn(key, k.String())
				walkStrings(v.MapIndex(k), append(key[:len(key):len(key)], k.String()), fn)
			}
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			if f.Anonymous {
				walkStrings(v.Field(i), key, fn)
				continue
			}
			name := tomlName(f)
			if name == "" {
				continue
			}
			walkStrings(v.Field(i), append(key[:len(key):len(key)], name), fn)
		}
	}
}
