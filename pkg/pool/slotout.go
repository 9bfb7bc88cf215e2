package pool

import (
	"bytes"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A command child's output pipes are its slot's, reused by the children
// that run in the slot one after another, where the pool can tell that
// nothing of a finished job is left to write into them: the job's cgroup
// is empty (per-job cgroups, and leftovers killed). A new pair of pipes
// per child, with two goroutines to read them to their end of file, cost
// a command job about 20 system calls and two wake-ups of a thread, a
// fifth of what the daemon spends on a job that writes nothing
// (docs/PERFORMANCE-HISTORY.md).
//
// A slot's pipes are read as any child's are, line by line, each line
// handed over under the label of the child of the slot. When a child has
// ended and its cgroup is empty, the pipes are drained to the last byte
// it wrote (no process of the job can write more) and a last unended line
// is handed over as Partial, before the child is finalized and the slot
// given to the next job: every line is the job's that wrote it. Where the
// cgroup does not empty, the pipes leave the slot with the child, and are
// read to their end as a child's own pipes are (Config.OutputDrain).
//
// A worker of one job writes into them too: it lives as briefly as a
// command child, and the slot's pipes spare it two pipes, their two
// reader goroutines and the poller's bookkeeping, about 100 µs of the
// parent's CPU (docs/PERFORMANCE.md, the seventh session). Its answer
// needs no count of bytes here (catchup.go): a slot's pipe is read and
// handed over under its lock, so reading it, under the lock, until it is
// empty hands over what the worker wrote before the answer (readFor).

// slotOutput is a slot's stdout and stderr.
type slotOutput struct {
	out [2]*slotStream
}

// slotStream is one of a slot's output pipes.
type slotStream struct {
	p      *Pool
	stream Stream
	f      *os.File // the read end, in the runtime's poller
	rc     syscall.RawConn
	w      int // the write end, handed to each child; -1 once detached
	readF  func(uintptr) bool
	drainF func(uintptr)

	mu       sync.Mutex
	cur      *Child // whose output this is
	detached bool   // the pipe left the slot with cur: EOF ends cur's output
	exited   bool   // run has returned
	skipped  bool   // readSome found output and no child to give it to
	buf      []byte // buf[:n] is an unended line
	n        int
	eof      bool
}

// newSlotOutput creates a slot's pipes and starts their readers.
func (p *Pool) newSlotOutput() (*slotOutput, error) {
	so := &slotOutput{}
	for i, st := range []Stream{Stdout, Stderr} {
		f, w, err := outputPipe()
		if err != nil {
			if i == 1 {
				so.out[0].close()
			}
			return nil, err
		}
		s := &slotStream{p: p, stream: st, f: f, rc: syscallConn(f), w: w, buf: make([]byte, p.cfg.MaxLine)}
		s.readF, s.drainF = s.readSome, s.drain
		so.out[i] = s
	}
	for _, s := range so.out {
		go s.run()
	}
	return so, nil
}

// takeSlotOutput returns the slot's pipes, ready for c, or nil when c
// cannot reuse them (no cgroups, or leftovers kept) or keeps pipes of its
// own (a worker of more than one job).
func (p *Pool) takeSlotOutput(c *Child) (*slotOutput, error) {
	if p.iso.cg == nil || p.cfg.Isolation.KeepLeftovers {
		return nil, nil
	}
	if c.worker != nil && c.worker.jobLimit != 1 {
		// Its answers come often, and each catches up with its output:
		// with one poll of both of its own pipes, where a slot's would
		// take a read of each under its reader's lock (the parent's CPU
		// per job of Go workers: 18 to 23 µs with its own, 27 to 32
		// with the slot's).
		return nil, nil
	}
	p.mu.Lock()
	var so *slotOutput
	if c.Slot < len(p.slotOut) {
		so, p.slotOut[c.Slot] = p.slotOut[c.Slot], nil
	}
	p.mu.Unlock()
	if so == nil {
		var err error
		if so, err = p.newSlotOutput(); err != nil {
			return nil, err
		}
	}
	return so, nil
}

// watchSlotOutput makes the slot's pipes c's, once c has started: what c
// wrote before (its reader found no child, and left it in the pipe) is
// read now.
func (c *Child) watchSlotOutput() {
	for _, s := range c.slotOut.out {
		s.mu.Lock()
		s.cur = c
		if s.skipped {
			s.skipped = false
			_ = s.rc.Control(s.drainF)
		}
		s.mu.Unlock()
	}
}

// putSlotOutput gives a slot's pipes back, once the child that wrote into
// them has been caught up with, or, on a closing pool, closes them.
func (p *Pool) putSlotOutput(slot int, so *slotOutput) {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		so.close()
		return
	}
	for len(p.slotOut) <= slot {
		p.slotOut = append(p.slotOut, nil)
	}
	if p.slotOut[slot] == nil {
		p.slotOut[slot], so = so, nil
	}
	p.mu.Unlock()
	if so != nil {
		so.close() // the slot has pipes already (never, by the slots' rules)
	}
}

// settleOutput ends c's use of its slot's pipes: drained to what c wrote
// and given back to the slot when c's cgroup is empty; else taken out of
// the slot, to be read to their end as c's own.
func (c *Child) settleOutput(empty bool) {
	so := c.slotOut
	if so == nil {
		return
	}
	c.slotOut = nil
	if empty {
		for _, s := range so.out {
			s.catchUp()
		}
		c.pool.putSlotOutput(c.Slot, so)
		return
	}
	// Processes of the job may still write: the pipes are the job's alone
	// from now on, ended as a child's own pipes are.
	c.pending.Add(2)
	for _, s := range so.out {
		if !s.detach() {
			c.ended() // its reader is gone already
		}
	}
	time.AfterFunc(c.pool.cfg.OutputDrain, so.close)
}

// run reads the pipe until it is closed, or, once detached, to its end.
func (s *slotStream) run() {
	// It returns when the pipe is closed (the pool, or the drain timer),
	// at its end, or on an error: done either way.
	_ = s.rc.Read(s.readF)
	s.mu.Lock()
	s.exited = true
	detached, cur := s.detached, s.cur
	if detached && cur != nil {
		s.cur = nil
		s.flushLocked(cur)
	}
	s.mu.Unlock()
	s.f.Close()
	if detached && cur != nil {
		cur.ended()
	}
}

// readSome reads what the pipe holds, under the lock, and hands over the
// lines. It returns false, to wait for more, on an empty pipe; true at the
// end of file or on an error.
func (s *slotStream) readSome(fd uintptr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		// A child just started, and has not been made the pipe's owner
		// yet: watchSlotOutput reads this.
		s.skipped = true
		return false
	}
	return s.readLocked(int(fd))
}

// readLocked reads until the pipe is empty (false) or at its end (true).
// The runtime's poller is edge-triggered: an empty pipe is the only safe
// place to wait.
func (s *slotStream) readLocked(fd int) bool {
	for {
		m, err := unix.Read(fd, s.buf[s.n:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false
		case err != nil || m == 0:
			s.eof = true
			return true
		}
		s.lines(m)
	}
}

// lines hands over the complete lines of buf[:n+m], m bytes just read,
// and keeps the rest; a full buffer without a newline goes as a Partial
// piece.
func (s *slotStream) lines(m int) {
	start, end := 0, s.n+m
	scan := s.n
	for {
		i := bytes.IndexByte(s.buf[scan:end], '\n')
		if i < 0 {
			break
		}
		nl := scan + i
		s.emit(s.cur, s.buf[start:nl+1], false)
		start, scan = nl+1, nl+1
	}
	if rest := end - start; rest == len(s.buf) {
		s.emit(s.cur, s.buf[:end], true)
		s.n = 0
	} else {
		s.n = copy(s.buf, s.buf[start:end])
	}
}

// emit hands one line of c (with its newline, unless partial) over.
func (s *slotStream) emit(c *Child, line []byte, partial bool) {
	c.handLine(s.stream, line, partial)
}

// flushLocked hands over an unended line of c as Partial.
func (s *slotStream) flushLocked(c *Child) {
	if s.n > 0 {
		s.emit(c, s.buf[:s.n], true)
		s.n = 0
	}
}

// catchUp hands over what the pipe holds, to its last byte, and the
// unended line, as the current child's, which has ended with nothing of
// it left to write; the pipe then belongs to no child.
func (s *slotStream) catchUp() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.rc.Control(s.drainF); err != nil {
		return // closed: the pool closes
	}
	if c := s.cur; c != nil {
		s.flushLocked(c)
	}
	s.cur = nil
}

// readFor hands over what the pipe holds when c is still its writer: a
// worker's output up to its answer. An unended line stays, to be handed
// over once it ends.
func (s *slotStream) readFor(c *Child) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == c {
		_ = s.rc.Control(s.drainF) // an error: closed, nothing more to read
	}
}

func (s *slotStream) drain(fd uintptr) {
	if !s.eof && s.cur != nil {
		s.readLocked(int(fd))
	}
}

// detach takes the pipe out of its slot: the pool's write end is closed,
// and the end of file ends the current child's output. It returns false
// when the reader has returned already, and will not end it.
func (s *slotStream) detach() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.detached = true
	if s.w >= 0 {
		unix.Close(s.w)
		s.w = -1
	}
	return !s.exited
}

func (s *slotStream) close() {
	s.mu.Lock()
	if s.w >= 0 {
		unix.Close(s.w)
		s.w = -1
	}
	s.mu.Unlock()
	s.f.Close() // the reader returns
}

func (so *slotOutput) close() {
	for _, s := range so.out {
		if s != nil {
			s.close()
		}
	}
}

// closeSlotOutputs closes the pipes the slots keep, when the pool closes.
func (p *Pool) closeSlotOutputs() {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	p.shedSlotOutputs()
}

// shedSlotOutputs closes the pipes the slots keep for their next child; a
// child that runs keeps its own.
func (p *Pool) shedSlotOutputs() {
	p.mu.Lock()
	outs := p.slotOut
	p.slotOut = nil
	p.mu.Unlock()
	for _, so := range outs {
		if so != nil {
			so.close()
		}
	}
}
