package pool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"testing"
)

// nopWriteCloser lets a channel write into a buffer.
type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// chunkReader returns what it holds in reads of the sizes it cycles
// through, as a pipe returns what a writer wrote in pieces.
type chunkReader struct {
	b     []byte
	sizes []int
	i     int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if len(r.sizes) > 0 {
		n = min(n, max(1, r.sizes[r.i%len(r.sizes)]))
		r.i++
	}
	n = copy(p, r.b[:min(n, len(r.b))])
	r.b = r.b[n:]
	return n, nil
}

func (r *chunkReader) Close() error { return nil }

// frame is one message as the channel writes it.
func frame(typ byte, payload []byte) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// Messages of every size around the reader's buffer cross a real pipe
// whole and in order, however the kernel splits them, while the writer
// blocks on the pipe's capacity.
func TestChannelOverPipes(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int{0, 1, headerLen, minBuf - headerLen, minBuf, minBuf + 1, 3 * minBuf, 7, chanBuf - headerLen, chanBuf - 1, chanBuf, chanBuf + 1, 3*chanBuf + 5, 100}
	go func() {
		ch := newChannel(io.NopCloser(nil), w)
		for i, n := range sizes {
			if err := ch.send(byte('a'+i), pattern(n)); err != nil {
				t.Errorf("send %d bytes: %v", n, err)
			}
		}
		w.Close()
	}()
	ch := newChannel(r, nopWriteCloser{io.Discard})
	for i, n := range sizes {
		typ, msg, err := ch.recv()
		if err != nil {
			t.Fatalf("message %d (%d bytes): %v", i, n, err)
		}
		if typ != byte('a'+i) || !bytes.Equal(msg, pattern(n)) {
			t.Fatalf("message %d: type %q, %d bytes; want %q, %d bytes of the pattern", i, typ, len(msg), byte('a'+i), n)
		}
	}
	if _, _, err := ch.recv(); !errors.Is(err, errEOF) || errors.Is(err, errTruncated) {
		t.Errorf("after the last message and the writer's close: %v, want errEOF", err)
	}
	r.Close()
}

// The end of the stream inside a message is errTruncated (which is also
// errEOF: the other end is gone); a length over MaxMessage is refused
// before anything is allocated for it.
func TestChannelBadStreams(t *testing.T) {
	whole := frame(msgResult, pattern(3*chanBuf))
	tooLarge := []byte{msgResult, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(tooLarge[1:], MaxMessage+1)
	for _, tc := range []struct {
		name   string
		stream []byte
		want   error
	}{
		{"nothing", nil, errEOF},
		{"half a header", []byte{msgResult, 1, 0}, errTruncated},
		{"header without its payload", frame(msgResult, []byte("abc"))[:headerLen+1], errTruncated},
		{"large payload cut short", whole[:len(whole)-1], errTruncated},
		{"length over MaxMessage", tooLarge, errMessageTooLarge},
	} {
		for _, chunks := range [][]int{nil, {1}, {3, 4096}} {
			ch := newChannel(&chunkReader{b: tc.stream, sizes: chunks}, nopWriteCloser{io.Discard})
			_, _, err := ch.recv()
			if !errors.Is(err, tc.want) {
				t.Errorf("%s, reads of %v: %v, want %v", tc.name, chunks, err, tc.want)
			}
			if tc.want == errTruncated && !errors.Is(err, errEOF) {
				t.Errorf("%s: %v does not wrap errEOF", tc.name, err)
			}
		}
	}
	ch := newChannel(io.NopCloser(nil), nopWriteCloser{io.Discard})
	if err := ch.send(msgJob, make([]byte, MaxMessage+1)); !errors.Is(err, errMessageTooLarge) {
		t.Errorf("send of MaxMessage+1 bytes: %v, want errMessageTooLarge", err)
	}
}

// FuzzChannel reads arbitrary streams, split arbitrarily: the channel
// never panics, and messages that were written whole come back whole.
func FuzzChannel(f *testing.F) {
	f.Add([]byte("J\x03\x00\x00\x00abcQ\x00\x00\x00\x00"), []byte{1, 2})
	f.Add(frame(msgResult, pattern(chanBuf+3)), []byte{200})
	f.Add([]byte("R\xff\xff\xff\xff"), []byte{})
	f.Fuzz(func(t *testing.T, stream []byte, chunks []byte) {
		sizes := make([]int, len(chunks))
		for i, c := range chunks {
			sizes[i] = int(c) * 37
		}
		// Arbitrary bytes: whatever comes out is within bounds, and the
		// reading ends in an error, never a hang or a panic.
		ch := newChannel(&chunkReader{b: stream, sizes: sizes}, nopWriteCloser{io.Discard})
		for {
			_, msg, err := ch.recv()
			if err != nil {
				break
			}
			if len(msg) > len(stream) {
				t.Fatalf("a message of %d bytes from a stream of %d", len(msg), len(stream))
			}
		}
		// The same bytes as payloads, framed by send: the same messages.
		var buf bytes.Buffer
		w := newChannel(io.NopCloser(nil), nopWriteCloser{&buf})
		var sent [][]byte
		for rest := stream; len(rest) > 0; {
			n := min(len(rest), int(rest[0])*int(rest[0])+1)
			if err := w.send(rest[0], rest[:n]); err != nil {
				t.Fatal(err)
			}
			sent = append(sent, rest[:n])
			rest = rest[n:]
		}
		r := newChannel(&chunkReader{b: buf.Bytes(), sizes: sizes}, nopWriteCloser{io.Discard})
		for i, want := range sent {
			typ, msg, err := r.recv()
			if err != nil || typ != want[0] || !bytes.Equal(msg, want) {
				t.Fatalf("message %d: %q %q %v, want %q %q", i, typ, msg, err, want[0], want)
			}
		}
		if _, _, err := r.recv(); !errors.Is(err, errEOF) {
			t.Fatalf("after the messages: %v, want errEOF", err)
		}
	})
}
