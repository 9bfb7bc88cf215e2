package jobs

import (
	"encoding/binary"
	"errors"
	"slices"
	"syscall"
	"time"
)

// The messages between the dispatcher and its workers are small and
// frequent, so they use a compact binary form rather than JSON: fields in
// a fixed order, integers as varints, strings and bytes length-prefixed.
// Parent and worker are always the same binary (/proc/self/exe), so the
// format needs no version.

type encoder struct{ b []byte }

func (e *encoder) int(v int64) { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) bytes(p []byte) {
	e.b = binary.AppendUvarint(e.b, uint64(len(p)))
	e.b = append(e.b, p...)
}
func (e *encoder) string(s string) {
	e.b = binary.AppendUvarint(e.b, uint64(len(s)))
	e.b = append(e.b, s...)
}
func (e *encoder) dur(d time.Duration) { e.int(int64(d)) }

type decoder struct {
	b   []byte
	err error
}

var errShort = errors.New("truncated message")

func (d *decoder) int() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	if d.err != nil {
		return nil
	}
	l, n := binary.Uvarint(d.b)
	if n <= 0 || uint64(len(d.b)-n) < l {
		d.err = errShort
		return nil
	}
	p := d.b[n : n+int(l)]
	d.b = d.b[n+int(l):]
	return p
}

func (d *decoder) string() string     { return string(d.bytes()) }
func (d *decoder) dur() time.Duration { return time.Duration(d.int()) }

// encodeJob writes a Go worker's job, and the signal that will stop it
// (Options.StopSignal when it was sent), which the worker must catch.
func encodeJob(b []byte, j *Job, stop syscall.Signal) []byte {
	e := encoder{b[:0]}
	e.int(int64(stop))
	e.string(j.ID)
	e.bytes(j.Payload)
	e.int(int64(j.Attempt))
	e.int(int64(j.Slot))
	keys := make([]string, 0, len(j.Meta))
	for k := range j.Meta {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	e.int(int64(len(keys)))
	for _, k := range keys {
		e.string(k)
		e.string(j.Meta[k])
	}
	return e.b
}

func decodeJob(b []byte) (*Job, syscall.Signal, error) {
	d := decoder{b: b}
	stop := syscall.Signal(d.int())
	j := &Job{ID: d.string()}
	if p := d.bytes(); len(p) > 0 {
		j.Payload = slices.Clone(p)
	}
	j.Attempt = int(d.int())
	j.Slot = int(d.int())
	if n := d.int(); n > 0 && d.err == nil {
		if n > int64(len(d.b)) {
			return nil, 0, errShort
		}
		j.Meta = make(map[string]string, n)
		for i := int64(0); i < n; i++ {
			k := d.string()
			j.Meta[k] = d.string()
		}
	}
	return j, stop, d.err
}

// workerReply is what a worker says about one job: how RunJob returned and
// what the job cost, measured in the worker with getrusage.
type workerReply struct {
	code            int
	err             string
	userCPU, sysCPU time.Duration
	maxRSS          int64
}

func encodeReply(b []byte, r *workerReply) []byte {
	e := encoder{b[:0]}
	e.int(int64(r.code))
	e.string(r.err)
	e.dur(r.userCPU)
	e.dur(r.sysCPU)
	e.int(r.maxRSS)
	return e.b
}

func decodeReply(b []byte) (workerReply, error) {
	d := decoder{b: b}
	r := workerReply{
		code:    int(d.int()),
		err:     d.string(),
		userCPU: d.dur(),
		sysCPU:  d.dur(),
		maxRSS:  d.int(),
	}
	return r, d.err
}

// rusageSelf returns the CPU time and peak RSS of this process so far.
func rusageSelf() (user, sys time.Duration, maxRSS int64) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0, 0, 0
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano()), ru.Maxrss << 10
}
