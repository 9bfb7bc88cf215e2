package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/jobdaemon/jobdaemon/pkg/pool"
)

// Vars is a small key/value map held by the parent and shared by all the
// daemon's hooks: the PHP original's setAppVar and getAppVar, without its
// SysV mutex. In the parent the calls are local; in a child they travel
// over the child's channel and each one is atomic in the parent.
//
// Keep it small: it is for counters, flags and rate limits, not a cache.
type Vars interface {
	// Get returns the value of key, and false if it is not set.
	Get(key string) (string, bool, error)
	// Set sets key to value.
	Set(key, value string) error
	// CompareAndSwap sets key to new if its value is old; an unset key
	// has the value "". It reports whether it swapped.
	CompareAndSwap(key, old, new string) (bool, error)
	// Add adds delta to the integer value of key (unset counts as 0) and
	// returns the sum. It fails if the value is not an integer.
	Add(key string, delta int64) (int64, error)
}

type varsKey struct{}

// WithVars returns a context that carries v, for VarsFrom.
func WithVars(ctx context.Context, v Vars) context.Context {
	return context.WithValue(ctx, varsKey{}, v)
}

// VarsFrom returns the shared variables reachable from a hook's context,
// or nil for a context that did not come from the daemon (or WithVars).
func VarsFrom(ctx context.Context) Vars {
	v, _ := ctx.Value(varsKey{}).(Vars)
	return v
}

// VarStore is the parent's side of Vars: an in-memory map, safe for
// concurrent use. The zero value is ready. Its keys and values hold at
// most MaxVarsSize bytes: a child that a bad input took over must not be
// able to fill the daemon's memory through it.
type VarStore struct {
	mu   sync.Mutex
	m    map[string]string
	size int // the bytes of the keys and values in m
}

// MaxVarsSize bounds the bytes of the keys and values of a VarStore.
const MaxVarsSize = 1 << 20

// ErrVarsFull is returned by Set, CompareAndSwap and Add when the change
// would make the shared variables hold more than MaxVarsSize bytes.
var ErrVarsFull = errors.New("shared variables are full: keys and values may hold " + strconv.Itoa(MaxVarsSize) + " bytes")

// NewVarStore returns an empty store.
func NewVarStore() *VarStore { return &VarStore{} }

// Get implements Vars.
func (s *VarStore) Get(key string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	return v, ok, nil
}

// Set implements Vars.
func (s *VarStore) Set(key, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setLocked(key, value)
}

func (s *VarStore) setLocked(key, value string) error {
	if s.m == nil {
		s.m = make(map[string]string)
	}
	size := s.size + len(value)
	if old, ok := s.m[key]; ok {
		size -= len(old)
	} else {
		size += len(key)
	}
	if size > MaxVarsSize {
		return ErrVarsFull
	}
	s.m[key], s.size = value, size
	return nil
}

// CompareAndSwap implements Vars.
func (s *VarStore) CompareAndSwap(key, old, new string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[key] != old {
		return false, nil
	}
	if err := s.setLocked(key, new); err != nil {
		return false, err
	}
	return true, nil
}

// Add implements Vars.
func (s *VarStore) Add(key string, delta int64) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	if v, ok := s.m[key]; ok {
		var err error
		if n, err = strconv.ParseInt(v, 10, 64); err != nil {
			return 0, fmt.Errorf("add to %q: value %q is not an integer", key, v)
		}
	}
	n += delta
	if err := s.setLocked(key, strconv.FormatInt(n, 10)); err != nil {
		return 0, err
	}
	return n, nil
}

// The operations of a call from a child.
const (
	opGet byte = iota + 1
	opSet
	opCAS
	opAdd
)

// serve answers a child's call: op, key, two arguments; the reply is an
// error string, a flag and a value.
func (s *VarStore) serve(req []byte) []byte {
	if len(req) == 0 {
		return encodeVarReply("empty request", false, "")
	}
	d := decoder{b: req[1:]}
	key, a, b := d.string(), d.string(), d.string()
	if d.err != nil {
		return encodeVarReply(d.err.Error(), false, "")
	}
	switch req[0] {
	case opGet:
		v, ok, _ := s.Get(key)
		return encodeVarReply("", ok, v)
	case opSet:
		if err := s.Set(key, a); err != nil {
			return encodeVarReply(err.Error(), false, "")
		}
		return encodeVarReply("", true, "")
	case opCAS:
		ok, err := s.CompareAndSwap(key, a, b)
		if err != nil {
			return encodeVarReply(err.Error(), false, "")
		}
		return encodeVarReply("", ok, "")
	case opAdd:
		delta, err := strconv.ParseInt(a, 10, 64)
		if err != nil {
			return encodeVarReply("bad delta", false, "")
		}
		n, err := s.Add(key, delta)
		if err != nil {
			return encodeVarReply(err.Error(), false, "")
		}
		return encodeVarReply("", true, strconv.FormatInt(n, 10))
	}
	return encodeVarReply(fmt.Sprintf("unknown operation %d", req[0]), false, "")
}

func encodeVarReply(errText string, ok bool, v string) []byte {
	e := encoder{}
	e.string(errText)
	if ok {
		e.int(1)
	} else {
		e.int(0)
	}
	e.string(v)
	return e.b
}

// remoteVars is a child's side of Vars.
type remoteVars struct{ conn *pool.ChildConn }

func (r remoteVars) call(op byte, key, a, b string) (bool, string, error) {
	e := encoder{b: []byte{op}}
	e.string(key)
	e.string(a)
	e.string(b)
	reply, err := r.conn.Call(e.b)
	if err != nil {
		return false, "", err
	}
	d := decoder{b: reply}
	errText, ok, v := d.string(), d.int() == 1, d.string()
	if d.err != nil {
		return false, "", fmt.Errorf("vars reply: %w", d.err)
	}
	if errText != "" {
		return false, "", errors.New(errText)
	}
	return ok, v, nil
}

// Get implements Vars.
func (r remoteVars) Get(key string) (string, bool, error) {
	ok, v, err := r.call(opGet, key, "", "")
	return v, ok, err
}

// Set implements Vars.
func (r remoteVars) Set(key, value string) error {
	_, _, err := r.call(opSet, key, value, "")
	return err
}

// CompareAndSwap implements Vars.
func (r remoteVars) CompareAndSwap(key, old, new string) (bool, error) {
	ok, _, err := r.call(opCAS, key, old, new)
	return ok, err
}

// Add implements Vars.
func (r remoteVars) Add(key string, delta int64) (int64, error) {
	_, v, err := r.call(opAdd, key, strconv.FormatInt(delta, 10), "")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(v, 10, 64)
}
