package pool

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
)

// Stream names a child's output stream.
type Stream uint8

// The two output streams.
const (
	Stdout Stream = 1
	Stderr Stream = 2
)

// String returns "stdout" or "stderr".
func (s Stream) String() string {
	if s == Stderr {
		return "stderr"
	}
	return "stdout"
}

// Line is one line of a child's output, without its newline.
type Line struct {
	Label  string // the child's label at the time, usually the job id
	Slot   int
	Pid    int
	Stream Stream
	// Text is only valid during the call to Sink.Line: copy it to keep it.
	Text []byte
	// Partial is true for every piece but the last of a line longer than
	// Config.MaxLine, and for a last line that ended without a newline.
	Partial bool
}

// Sink receives the output of children. Line may be called from several
// goroutines at once.
type Sink interface {
	Line(Line)
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(Line)

// Line calls f(l).
func (f SinkFunc) Line(l Line) { f(l) }

// readerPool recycles line buffers: most children live shortly, and a fresh
// MaxLine buffer per stream per child would be most of what a job costs
// the garbage collector.
var readerPool sync.Pool

// readOutput hands each line of f to the sink and keeps the tail, until EOF
// or until the drain timer closes f. Memory is bounded by MaxLine, however
// handLine hands one line of c's output (with its newline, unless
// partial) to c's tail and to the sink.
func (c *Child) handLine(stream Stream, line []byte, partial bool) {
	c.tail.write(line)
	if sink := c.pool.cfg.Sink; sink != nil {
		text := line
		if !partial {
			text = line[:len(line)-1]
		}
		sink.Line(Line{Label: c.Label(), Slot: c.Slot, Pid: c.Pid, Stream: stream, Text: text, Partial: partial})
	}
}

// long the child's lines are.
func (c *Child) readOutput(f *os.File, stream Stream) {
	defer c.ended()
	defer f.Close()
	var src io.Reader = f
	out := c.outs[stream-1] // a worker's: see catchUp
	if out != nil {
		src = out
		defer out.end()
	}
	size := c.pool.cfg.MaxLine
	br, _ := readerPool.Get().(*bufio.Reader)
	if br == nil || br.Size() != size {
		br = bufio.NewReaderSize(src, size)
	} else {
		br.Reset(src)
	}
	defer func() {
		br.Reset(nil)
		readerPool.Put(br)
	}()
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			c.handLine(stream, line, line[len(line)-1] != '\n')
			if out != nil {
				out.handedOver(len(line))
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// Tail keeps the last bytes written to it, up to a limit: the output tail
// of a job. It grows only as far as the output does, since most jobs write
// little. It is safe for concurrent use.
type Tail struct {
	mu   sync.Mutex
	max  int
	buf  []byte
	head int // once full: where the oldest byte is
	full bool
}

// NewTail returns a Tail that keeps at most limit bytes (at least 1).
func NewTail(limit int) *Tail { return &Tail{max: max(limit, 1)} }

// Write adds p to the tail, dropping the oldest bytes past the limit. It
// never fails.
func (t *Tail) Write(p []byte) (int, error) {
	n := len(p)
	t.write(p)
	return n, nil
}

func (t *Tail) write(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		t.head, t.full = 0, true
		return
	}
	if !t.full {
		if len(t.buf)+len(p) <= t.max {
			t.buf = append(t.buf, p...)
			return
		}
		// Fill up to max, then wrap.
		n := t.max - len(t.buf)
		t.buf = append(t.buf, p[:n]...)
		p = p[n:]
		t.full = true
	}
	for len(p) > 0 {
		n := copy(t.buf[t.head:], p)
		p = p[n:]
		t.head = (t.head + n) % t.max
	}
}

// Bytes returns a copy of the tail, oldest byte first; nil when nothing
// was written.
func (t *Tail) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.full {
		return bytes.Clone(t.buf)
	}
	out := make([]byte, 0, t.max)
	out = append(out, t.buf[t.head:]...)
	return append(out, t.buf[:t.head]...)
}
