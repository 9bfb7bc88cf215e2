package pool

import (
	"fmt"
	"io"
	"os"
)

// pipeBuffer is what a new pipe holds without a reader: 16 pages on
// Linux. A payload that fits is written before the child starts, with no
// goroutine to feed it.
const pipeBuffer = 64 << 10

// stdin returns the file that becomes the child's standard input for r
// (see Spec.Stdin), and prepares what startStdin feeds into it.
func (c *Child) stdin(r io.Reader) (*os.File, error) {
	switch r := r.(type) {
	case nil:
		return c.pool.devNull, nil
	case *os.File:
		return r, nil
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create stdin pipe: %w", err)
	}
	c.stdinR = pr
	if l, ok := r.(interface{ Len() int }); ok && l.Len() <= pipeBuffer {
		_, err := io.Copy(pw, r)
		pw.Close()
		if err != nil {
			pr.Close()
			return nil, fmt.Errorf("write stdin pipe: %w", err)
		}
		return pr, nil
	}
	c.stdinW, c.stdinSrc = pw, r
	return pr, nil
}

// startStdin closes the parent's copy of the read end of a stdin pipe, and
// feeds the rest of a large input while the child reads it. The copy ends
// with the input, or when the child exits or closes its standard input
// (EPIPE), so it never outlives the child for long.
func (c *Child) startStdin(started bool) {
	if c.stdinR != nil {
		c.stdinR.Close()
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
