package pool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// The worker channel is a SOCK_SEQPACKET socket pair: the kernel keeps
// message boundaries, so a packet is read whole or not at all. A message
// larger than one packet is sent as several, each but the last flagged
// "more". Packet: type byte, flags byte, payload.
const (
	msgJob    byte = 'J' // parent → worker: run this
	msgResult byte = 'R' // worker → parent: the result of the job
	msgCall   byte = 'C' // worker → parent: a request (app variables)
	msgReply  byte = 'A' // parent → worker: the answer to msgCall
	msgQuit   byte = 'Q' // parent → worker: exit once idle

	flagMore = 1

	maxPacket = 32 << 10 // payload per packet, well below the socket buffer
	// MaxMessage is the largest message the channel carries.
	MaxMessage = 64 << 20
)

// Built without fmt: package initialisation runs in every re-executed
// child, where fmt would be paged in for this one message.
var errMessageTooLarge = errors.New("message larger than " + strconv.Itoa(MaxMessage) + " bytes")

// channel is one end of a worker channel.
type channel struct {
	c io.ReadWriteCloser

	wmu  sync.Mutex // one message at a time, fragments in order
	wbuf []byte

	rbuf []byte // one packet
	msg  []byte // a reassembled message
}

// socketPair returns the parent's end, ready to use, and the child's end as
// a file to pass to the child.
func socketPair() (*channel, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("create worker channel: %w", err)
	}
	// Our end goes to the runtime's poller, as a non-blocking *os.File:
	// reads park the goroutine, not a thread, and Close interrupts them.
	// Not through package net, whose import alone links cgo into every
	// program on this library, and costs each re-executed child the C
	// runtime's start-up (0.8 ms of CPU here, docs/PERFORMANCE.md).
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("create worker channel: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "worker-channel")
	theirs := os.NewFile(uintptr(fds[1]), "worker-channel")
	rc, err := newRawConn(ours, "worker channel")
	if err != nil {
		ours.Close()
		theirs.Close()
		return nil, nil, fmt.Errorf("create worker channel: %w", err)
	}
	return newChannelRW(rc), theirs, nil
}

func newChannelRW(c io.ReadWriteCloser) *channel {
	return &channel{c: c, rbuf: make([]byte, 2+maxPacket)}
}

func (ch *channel) send(typ byte, payload []byte) error {
	ch.wmu.Lock()
	defer ch.wmu.Unlock()
	if len(payload) > MaxMessage {
		return errMessageTooLarge
	}
	for {
		n, flags := len(payload), byte(0)
		if n > maxPacket {
			n, flags = maxPacket, flagMore
		}
		ch.wbuf = append(append(ch.wbuf[:0], typ, flags), payload[:n]...)
		if _, err := ch.c.Write(ch.wbuf); err != nil {
			return err
		}
		payload = payload[n:]
		if flags == 0 {
			return nil
		}
	}
}

// recv returns the next message. Its payload is valid until the next recv.
// Only one goroutine may call it.
func (ch *channel) recv() (typ byte, payload []byte, err error) {
	ch.msg = ch.msg[:0]
	for {
		n, err := ch.c.Read(ch.rbuf)
		if errors.Is(err, io.EOF) {
			return 0, nil, errEOF // an *os.File's zero-length read
		}
		if err != nil {
			return 0, nil, err
		}
		if n == 0 {
			// A zero-length read on a SEQPACKET socket is the peer's close.
			return 0, nil, errEOF
		}
		if n < 2 {
			return 0, nil, fmt.Errorf("%w of %d bytes", errShortPacket, n)
		}
		typ = ch.rbuf[0]
		if ch.rbuf[1]&flagMore == 0 && len(ch.msg) == 0 {
			return typ, ch.rbuf[2:n], nil // the common case: one packet, no copy
		}
		if len(ch.msg)+n-2 > MaxMessage {
			return 0, nil, errMessageTooLarge
		}
		ch.msg = append(ch.msg, ch.rbuf[2:n]...)
		if ch.rbuf[1]&flagMore == 0 {
			return typ, ch.msg, nil
		}
	}
}

func (ch *channel) close() error { return ch.c.Close() }

var (
	errEOF         = errors.New("worker channel closed")
	errShortPacket = errors.New("worker channel: short packet")
)
