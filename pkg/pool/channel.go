package pool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// The worker channel is two pipes, one each way: the parent's messages go
// down one (fd 3 in the worker), the worker's come up the other (fd 4).
// Each message is framed: a type byte, the length of the payload (4 bytes,
// little endian), the payload. Pipes rather than a SOCK_SEQPACKET socket
// pair, which would keep message boundaries for us: a job's round trip over
// two pipes costs both ends a fifth less CPU (bench/floors.c pingpong,
// docs/PERFORMANCE.md), and one side writes each pipe, so framing is ours
// to keep anyway.
const (
	msgJob    byte = 'J' // parent → worker: run this
	msgResult byte = 'R' // worker → parent: the result of the job
	msgCall   byte = 'C' // worker → parent: a request (app variables)
	msgReply  byte = 'A' // parent → worker: the answer to msgCall
	msgQuit   byte = 'Q' // parent → worker: exit once idle

	headerLen = 5 // type, length
	// minBuf is a reader's first buffer. Most messages are a few hundred
	// bytes, and a worker that runs one job (JobsPerChild 1) would
	// otherwise have its parent allocate and clear chanBuf for each (6%
	// of the dispatcher's samples per re-executed child, in a profile).
	minBuf = 4 << 10
	// chanBuf is the most a reader's buffer grows to, with the messages
	// it holds: the pipe's default capacity. A larger message is read
	// into a buffer of its own size.
	chanBuf = 64 << 10
	// MaxMessage is the largest message the channel carries.
	MaxMessage = 64 << 20
)

// Built without fmt: package initialisation runs in every re-executed
// child, where fmt would be paged in for this one message.
var errMessageTooLarge = errors.New("message larger than " + strconv.Itoa(MaxMessage) + " bytes")

// channel is one end of a worker channel.
type channel struct {
	r io.ReadCloser
	w io.WriteCloser

	wmu  sync.Mutex // one message at a time, written whole
	wbuf []byte

	rbuf       []byte // what was read and not yet taken: rbuf[rpos:rend]
	rpos, rend int
}

// channelPipes returns the parent's end, ready to use, and the worker's
// two ends (blocking: it waits on nothing else) to pass to it: what it
// reads, then what it writes. Our ends go to the runtime's poller: reads
// park the goroutine, not a thread, and Close interrupts them.
func channelPipes() (ch *channel, down, up int, err error) {
	w, down, err := inputPipe()
	if err != nil {
		return nil, -1, -1, fmt.Errorf("create worker channel: %w", err)
	}
	r, up, err := outputPipe()
	if err != nil {
		w.Close()
		unix.Close(down)
		return nil, -1, -1, fmt.Errorf("create worker channel: %w", err)
	}
	return newChannel(newRawConn(r, "worker channel"), newRawConn(w, "worker channel")), down, up, nil
}

// newChannel returns a channel that reads r and writes w.
func newChannel(r io.ReadCloser, w io.WriteCloser) *channel {
	return &channel{r: r, w: w, rbuf: make([]byte, minBuf)}
}

// send writes one message whole. A short write (a pipe whose reader is
// slower than the message is long) is resumed until the message is out.
func (ch *channel) send(typ byte, payload []byte) error {
	if len(payload) > MaxMessage {
		return errMessageTooLarge
	}
	ch.wmu.Lock()
	defer ch.wmu.Unlock()
	ch.wbuf = append(ch.wbuf[:0], typ, 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(ch.wbuf[1:], uint32(len(payload)))
	if len(payload) <= chanBuf {
		// One write, header and payload: the common case, and one system
		// call rather than two.
		ch.wbuf = append(ch.wbuf, payload...)
		return ch.writeAll(ch.wbuf)
	}
	if err := ch.writeAll(ch.wbuf); err != nil {
		return err
	}
	return ch.writeAll(payload)
}

func (ch *channel) writeAll(b []byte) error {
	for len(b) > 0 {
		n, err := ch.w.Write(b)
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b = b[n:]
	}
	return nil
}

// recv returns the next message. Its payload is valid until the next recv.
// Only one goroutine may call it. The other end's close before a message
// begins is errEOF; in the middle of one, errTruncated.
func (ch *channel) recv() (typ byte, payload []byte, err error) {
	if err := ch.fill(headerLen); err != nil {
		return 0, nil, err
	}
	h := ch.rbuf[ch.rpos:]
	typ, size := h[0], binary.LittleEndian.Uint32(h[1:headerLen])
	if size > MaxMessage {
		return 0, nil, errMessageTooLarge
	}
	ch.rpos += headerLen
	n := int(size)
	if n <= chanBuf {
		if err := ch.fill(n); err != nil {
			return 0, nil, truncated(err)
		}
		payload = ch.rbuf[ch.rpos : ch.rpos+n]
		ch.rpos += n
		return typ, payload, nil
	}
	// Larger than the buffer: what was buffered, then the rest read
	// straight into the message's own buffer, which grows with what
	// arrives rather than with what the header claims.
	payload = append(make([]byte, 0, min(n, 4*chanBuf)), ch.rbuf[ch.rpos:ch.rend]...)
	ch.rpos, ch.rend = 0, 0
	for len(payload) < n {
		if len(payload) == cap(payload) {
			payload = slices.Grow(payload, min(n-len(payload), cap(payload)))
		}
		k, err := ch.r.Read(payload[len(payload):min(cap(payload), n)])
		payload = payload[:len(payload)+k]
		if err != nil || k == 0 {
			return 0, nil, truncated(err)
		}
	}
	return typ, payload, nil
}

// fill reads until n bytes are buffered, growing the buffer if it is
// smaller than n. It returns errEOF when the other end closed the pipe
// first, with the bytes that did arrive still buffered; n must not exceed
// chanBuf.
func (ch *channel) fill(n int) error {
	if ch.rend-ch.rpos >= n {
		return nil
	}
	if ch.rpos+n > len(ch.rbuf) {
		buf := ch.rbuf
		if n > len(buf) {
			buf = make([]byte, min(max(2*len(buf), n), chanBuf))
		}
		ch.rend = copy(buf, ch.rbuf[ch.rpos:ch.rend])
		ch.rpos, ch.rbuf = 0, buf
	}
	for ch.rend-ch.rpos < n {
		k, err := ch.r.Read(ch.rbuf[ch.rend:])
		ch.rend += k
		switch {
		case errors.Is(err, io.EOF), err == nil && k == 0:
			if ch.rend-ch.rpos >= n {
				return nil
			}
			if ch.rend > ch.rpos {
				return errTruncated
			}
			return errEOF
		case err != nil:
			return err
		}
	}
	return nil
}

// truncated turns the end of the pipe inside a message into errTruncated.
func truncated(err error) error {
	if err == nil || errors.Is(err, errEOF) || errors.Is(err, io.EOF) {
		return errTruncated
	}
	return err
}

// close closes both pipes.
func (ch *channel) close() error { return errors.Join(ch.w.Close(), ch.r.Close()) }

var (
	errEOF             = errors.New("worker channel closed")
	errTruncated error = truncatedError{}
)

// truncatedError is the end of a pipe inside a message. It wraps errEOF:
// the other end is gone all the same. (A type, not fmt.Errorf, for the
// reason of errMessageTooLarge.)
type truncatedError struct{}

func (truncatedError) Error() string { return "worker channel closed in the middle of a message" }
func (truncatedError) Unwrap() error { return errEOF }
