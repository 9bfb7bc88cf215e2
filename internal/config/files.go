package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// openRegular opens path for reading and returns it only if it is a
// regular file. The open does not block: a FIFO at a configured path
// (planted, or left by mistake) would make a plain open wait for a writer
// for ever, in check-config, at start-up, where TERM could not end it,
// and in a reload, where it would freeze the daemon's dispatcher.
// With follow, a symbolic link at path is followed
// (/etc/jobdaemon/config.toml may be one); without, it is refused.
func openRegular(path string, follow bool) (*os.File, error) {
	flags := os.O_RDONLY | syscall.O_NONBLOCK | syscall.O_NOCTTY
	if !follow {
		flags |= syscall.O_NOFOLLOW
	}
	f, err := os.OpenFile(path, flags, 0)
	if errors.Is(err, syscall.ELOOP) && !follow {
		return nil, fmt.Errorf("%q is a symbolic link: refusing to follow it", path)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%q is not a regular file but %s", path, fileKind(fi.Mode()))
	}
	return f, nil
}

// fileKind names the type of a file for people: "a FIFO", "a directory".
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m.IsRegular():
		return "a regular file"
	}
	return "a file of an unknown kind"
}
