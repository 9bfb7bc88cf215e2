package jobs

import (
	"bytes"
	"maps"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The Go worker protocol, parent side: whatever bytes a worker sends as
// a job (it never does, but the codec is shared) or as an answer, the
// decoder returns a job or an error and never panics nor allocates more
// than the message holds; what the encoder wrote reads back the same.
func FuzzJobCodec(f *testing.F) {
	f.Add("job-1", []byte("payload"), 1, 0, "path", "/spool/running/job-1", 15)
	f.Add("", []byte{}, 0, -1, "", "", 0)
	f.Add("\x00\xff", bytes.Repeat([]byte{0x80}, 300), 1<<30, 9999, "k\x00", "v\xff", -1)
	f.Fuzz(func(t *testing.T, id string, payload []byte, attempt, slot int, key, value string, stop int) {
		j := &Job{ID: id, Payload: payload, Attempt: attempt, Slot: slot}
		if key != "" {
			j.Meta = map[string]string{key: value, "queue": "q"}
		}
		b := encodeJob(nil, j, syscall.Signal(stop))
		got, gotStop, err := decodeJob(b)
		if err != nil {
			t.Fatalf("decode of an encoded job: %v", err)
		}
		if got.ID != j.ID || !bytes.Equal(got.Payload, j.Payload) || got.Attempt != j.Attempt || got.Slot != j.Slot ||
			!maps.Equal(got.Meta, j.Meta) || gotStop != syscall.Signal(stop) {
			t.Fatalf("round trip: %+v (stop %d) != %+v (stop %d)", got, gotStop, j, stop)
		}
		// Every cut and every corruption of the message decodes or fails.
		for i := range b {
			_, _, _ = decodeJob(b[:i])
			c := bytes.Clone(b)
			c[i] ^= 0xff
			_, _, _ = decodeJob(c)
		}
	})
}

// Any bytes as a worker's answer: decoded, or refused with an error,
// never a panic.
func FuzzReplyCodec(f *testing.F) {
	f.Add(encodeReply(nil, &workerReply{code: 0, userCPU: time.Millisecond, maxRSS: 1 << 20}))
	f.Add(encodeReply(nil, &workerReply{code: 2, err: "panic: boom"}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, msg []byte) {
		r, err := decodeReply(msg)
		if err != nil {
			return
		}
		// What decodes survives a round trip.
		back, err := decodeReply(encodeReply(nil, &r))
		if err != nil || back != r {
			t.Fatalf("round trip of %+v: %+v, %v", r, back, err)
		}
	})
}

// Any bytes as a worker's call to the shared variables: an answer, never
// a panic, and the store never holds more than MaxVarsSize bytes,
// whatever a worker a bad input took over sends, however often.
func FuzzVarCalls(f *testing.F) {
	call := func(op byte, key, a, b string) []byte {
		e := encoder{b: []byte{op}}
		e.string(key)
		e.string(a)
		e.string(b)
		return e.b
	}
	f.Add(call(opSet, "k", "v", ""), 1)
	f.Add(call(opAdd, "n", "9223372036854775807", ""), 3)
	f.Add(call(opCAS, "k", "", strings.Repeat("x", 70000)), 20)
	f.Add([]byte{opGet}, 1)
	f.Add([]byte{99, 0, 0, 0}, 1)
	f.Fuzz(func(t *testing.T, req []byte, times int) {
		s := NewVarStore()
		for i := range min(max(times, 1), 50) {
			// The same call under more keys: each a new variable.
			r := req
			if len(r) > 2 && i > 0 {
				r = append(bytes.Clone(r), byte(i))
			}
			reply := s.serve(r)
			d := decoder{b: reply}
			d.string()
			d.int()
			d.string()
			if d.err != nil {
				t.Fatalf("reply %x to %x does not decode: %v", reply, r, d.err)
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		total := 0
		for k, v := range s.m {
			total += len(k) + len(v)
		}
		if total != s.size || total > MaxVarsSize {
			t.Fatalf("store holds %d bytes, counted %d", total, s.size)
		}
	})
}

// A child cannot fill the daemon's memory through the shared variables.
func TestVarsBounded(t *testing.T) {
	s := NewVarStore()
	big := strings.Repeat("x", MaxVarsSize/4)
	for i := range 3 {
		if err := s.Set(string(rune('a'+i)), big); err != nil {
			t.Fatalf("set %d: %v", i, err)
		}
	}
	if err := s.Set("d", big); err != ErrVarsFull {
		t.Errorf("a fourth quarter: %v, want ErrVarsFull", err)
	}
	if err := s.Set("a", ""); err != nil { // replacing frees room
		t.Fatal(err)
	}
	if err := s.Set("d", big); err != nil {
		t.Errorf("after freeing room: %v", err)
	}
	e := encoder{b: []byte{opSet}}
	e.string("e")
	e.string(big)
	e.string("")
	d := decoder{b: s.serve(e.b)}
	if msg := d.string(); !strings.Contains(msg, "full") {
		t.Errorf("a worker's Set past the bound is answered %q", msg)
	}
}
