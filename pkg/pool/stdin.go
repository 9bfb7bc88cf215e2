package pool

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// pipeBuffer is what a new pipe holds without a reader: 16 pages on
// Linux. A payload that fits is written before the child starts, with no
// goroutine to feed it.
const pipeBuffer = 64 << 10

// stdin makes the child's standard input from r (see Spec.Stdin), its
// descriptor 0 in l, and prepares what startStdin feeds into it.
func (c *Child) stdin(l *launch, r io.Reader) error {
	switch r := r.(type) {
	case nil:
		l.file(c.pool.devNull)
		return nil
	case *os.File:
		l.file(r)
		return nil
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("create stdin pipe: %w", err)
	}
	c.stdinR = fds[0]
	l.files = append(l.files, uintptr(fds[0]))
	if n, ok := r.(interface{ Len() int }); ok && n.Len() <= pipeBuffer {
		// It fits: a blocking write that cannot block.
		_, err := io.Copy(fdWriter(fds[1]), r)
		unix.Close(fds[1])
		if err != nil {
			unix.Close(fds[0])
			c.stdinR = -1
			return fmt.Errorf("write stdin pipe: %w", err)
		}
		return nil
	}
	// The rest is copied by a goroutine, parked in the runtime's poller
	// while the child does not read.
	if err := unix.SetNonblock(fds[1], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		c.stdinR = -1
		return fmt.Errorf("create stdin pipe: %w", err)
	}
	c.stdinW, c.stdinSrc = os.NewFile(uintptr(fds[1]), "|1"), r
	return nil
}

// fdWriter writes to a blocking descriptor.
type fdWriter int

func (fd fdWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Write(int(fd), p[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		n += m
	}
	return n, nil
}

// startStdin closes the parent's copy of the read end of a stdin pipe, and
// feeds the rest of a large input while the child reads it. The copy ends
// with the input, or when the child exits or closes its standard input
// (EPIPE), so it never outlives the child for long.
func (c *Child) startStdin(started bool) {
	if c.stdinR >= 0 {
		unix.Close(c.stdinR)
		c.stdinR = -1
	}
	if c.stdinW == nil {
		return
	}
	if !started {
		c.stdinW.Close()
		return
	}
	w, src := c.stdinW, c.stdinSrc
	go func() {
		defer w.Close()
		_, _ = io.Copy(w, src) // a child that stops reading is its own business
	}()
}

// closeStdin undoes stdin when the child could not be started.
func (c *Child) closeStdin() { c.startStdin(false) }
