package lifecycle

import (
	"log/slog"
	"slices"
)

// attrs is what WithAttrs and WithGroup add to a handler that formats
// attributes in its own way: the open groups, and the attributes given so
// far, formatted already (journal fields, or syslog text). The journal and
// syslog handlers share it; each brings its own add.
type attrs[T any] struct {
	groups []string
	pre    []T
}

// adder appends one attribute, under the open groups, in a handler's form.
type adder[T any] func(dst []T, groups []string, a slog.Attr) []T

// with returns a copy of a with as added.
func (a attrs[T]) with(as []slog.Attr, add adder[T]) attrs[T] {
	a.pre = slices.Clip(a.pre)
	for _, x := range as {
		a.pre = add(a.pre, a.groups, x)
	}
	return a
}

// group returns a copy of a with the group name open.
func (a attrs[T]) group(name string) attrs[T] {
	a.groups = append(slices.Clip(a.groups), name)
	return a
}

// appendRecord appends to dst the attributes given so far, then those of r.
func (a attrs[T]) appendRecord(dst []T, r slog.Record, add adder[T]) []T {
	dst = append(dst, a.pre...)
	r.Attrs(func(x slog.Attr) bool {
		dst = add(dst, a.groups, x)
		return true
	})
	return dst
}
