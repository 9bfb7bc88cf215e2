package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

const (
	// tmpPrefix starts the names of the spool's temporary files. It is
	// distinctive so that cleaning up never removes a writer's own hidden
	// temporary files.
	tmpPrefix    = ".jobdaemon-tmp-"
	metaSuffix   = ".meta.json"
	resultSuffix = ".result.json"
	// maxNameLen is the longest job name: NAME_MAX (255) less
	// ".result.json", so that a job's record fits beside it. Its sidecar,
	// "." + name + ".meta.json", fits too.
	maxNameLen = 255 - len(resultSuffix)
	// maxAlts bounds the new names tried when a job's name is taken.
	maxAlts = 100
)

// renameNoReplace renames from to to, and fails with EEXIST rather than
// replace an existing to: the spool never overwrites a file.
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if err != unix.EINVAL && err != unix.ENOSYS {
		if err != nil {
			return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
		}
		return nil
	}
	// A file system without RENAME_NOREPLACE (some network and FUSE file
	// systems): look, then leap. Only an outside writer racing for the same
	// name can slip in between; the spool's own moves are serialized.
	if _, err := os.Lstat(to); err == nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: unix.EEXIST}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.Rename(from, to)
}

// exists reports whether dir/name exists, without following a symbolic link.
func exists(dir, name string) (bool, error) {
	_, err := os.Lstat(filepath.Join(dir, name))
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, err
}

// createTemp creates a new hidden temporary file in dir, mode 0640 less
// the umask (os.CreateTemp would make it 0600, and a chmod costs a system
// call per job).
func createTemp(dir string) (*os.File, error) {
	for range 100 {
		name := filepath.Join(dir, tmpPrefix+strconv.FormatUint(rand.Uint64(), 36))
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_CLOEXEC, 0o640)
		if !errors.Is(err, fs.ErrExist) {
			return f, err
		}
	}
	return nil, fmt.Errorf("create a temporary file in %s: too many clashes", dir)
}

// writeTemp writes data to a new hidden temporary file in dir, mode 0640
// less the umask, and returns its path. It does not sync: records and
// sidecars are cheap to lose to a power failure, and the job files
// themselves are only renamed. It uses the system calls directly, which
// saves the runtime poller's half a dozen per file: it runs for every job.
func writeTemp(dir string, data []byte) (string, error) {
	for range 100 {
		path := filepath.Join(dir, tmpPrefix+strconv.FormatUint(rand.Uint64(), 36))
		fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o640)
		if err == unix.EEXIST || err == unix.EINTR {
			continue
		}
		if err != nil {
			return "", &os.PathError{Op: "open", Path: path, Err: err}
		}
		for p := data; len(p) > 0 && err == nil; {
			var n int
			n, err = unix.Write(fd, p)
			if n > 0 {
				p = p[n:]
			}
			if err == unix.EINTR {
				err = nil
			}
		}
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return "", &os.PathError{Op: "write", Path: path, Err: err}
		}
		return path, nil
	}
	return "", fmt.Errorf("create a temporary file in %s: too many clashes", dir)
}

// writeAtomic replaces dir/name with data: temporary file, then rename, so
// that a reader sees the old content or the new, never a part.
func writeAtomic(dir, name string, data []byte) error {
	tmp, err := writeTemp(dir, data)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

func inode(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// meta is a job's retry state, kept in a sidecar beside the job file (see
// the package documentation).
type meta struct {
	// Attempt is the number of the job's next run, in incoming/, or of its
	// current run, in running/.
	Attempt int `json:"attempt"`
	// NotBefore is when the job may run again; zero for at once.
	NotBefore time.Time `json:"not_before,omitzero"`
	// Inode is the inode number of the job file the sidecar belongs to.
	Inode uint64 `json:"inode"`
	// LastResult is how the previous attempt ended, for people.
	LastResult string `json:"last_result,omitempty"`
}

func metaName(job string) string { return "." + job + metaSuffix }

// metaJob returns the job a sidecar name belongs to.
func metaJob(name string) (string, bool) {
	if len(name) <= 1+len(metaSuffix) || name[0] != '.' || !strings.HasSuffix(name, metaSuffix) {
		return "", false
	}
	return name[1 : len(name)-len(metaSuffix)], true
}

// readMeta reads the sidecar of dir/job, and reports whether it exists,
// parses, and belongs to the file with inode number ino.
func readMeta(dir, job string, ino uint64) (meta, bool) {
	m, err := decodeMeta(filepath.Join(dir, metaName(job)))
	return m, err == nil && m.Inode == ino
}

func decodeMeta(path string) (meta, error) {
	var m meta
	b, err := os.ReadFile(path)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, err
	}
	if m.Attempt < 1 {
		return m, fmt.Errorf("%s: attempt %d", path, m.Attempt)
	}
	return m, nil
}

func writeMeta(dir, job string, m meta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return writeAtomic(dir, metaName(job), b)
}

// removeMeta removes the sidecar of dir/job, if there is one.
func removeMeta(dir, job string) error {
	err := os.Remove(filepath.Join(dir, metaName(job)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// CheckName returns nil if name may be given to Submit, and otherwise an
// error wrapping ErrBadName that says why. A name must be 1 to 243 bytes of
// valid UTF-8 without '/', control characters (C0, DEL, C1) or bidi
// controls (U+202A to U+202E, U+2066 to U+2069), and must not start with
// '.': hidden names are never jobs, which also rules out "." and "..".
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrBadName)
	case name[0] == '.':
		return fmt.Errorf("%w %q: starts with '.'", ErrBadName, name)
	case strings.ContainsRune(name, '/'):
		return fmt.Errorf("%w %q: contains '/'", ErrBadName, name)
	}
	if why := badName(name); why != "" {
		return fmt.Errorf("%w %q: %s", ErrBadName, name, why)
	}
	return nil
}

// badName says what is wrong with the name of a file found in incoming/,
// or returns "". Such names are refused rather than run because they
// confuse logs, terminals and the shell scripts of people.
func badName(name string) string {
	if len(name) > maxNameLen {
		return fmt.Sprintf("name longer than %d bytes", maxNameLen)
	}
	if !utf8.ValidString(name) {
		return "name is not valid UTF-8"
	}
	if strings.ContainsFunc(name, isControl) {
		return "name contains control characters"
	}
	return ""
}

// isControl reports whether r is a control character (C0, DEL, C1) or a
// bidi control, which can make a name display as another.
func isControl(r rune) bool {
	return unicode.IsControl(r) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}

// safeName is name with invalid UTF-8 and control characters replaced by
// '_': the name a refused job is filed under in failed/.
func safeName(name string) string {
	name = strings.ToValidUTF8(name, "_")
	return strings.Map(func(r rune) rune {
		if isControl(r) {
			return '_'
		}
		return r
	}, name)
}

// altName returns the n-th name to try for a job called name: name itself
// for 0, else name with "~STAMP" (and "-n" from 2 on) before its
// extension, cut so that the result is at most maxNameLen bytes long.
func altName(name string, n int, stamp time.Time) string {
	if n == 0 && len(name) <= maxNameLen {
		return name
	}
	suffix := ""
	if n > 0 {
		suffix = "~" + stamp.UTC().Format("20060102T150405Z")
		if n > 1 {
			suffix += "-" + strconv.Itoa(n)
		}
	}
	ext := filepath.Ext(name)
	if len(ext) > 16 {
		ext = ""
	}
	stem := name[:len(name)-len(ext)]
	if room := maxNameLen - len(suffix) - len(ext); len(stem) > room {
		stem = cutUTF8(stem, room)
	}
	return stem + suffix + ext
}

// cutUTF8 returns the first n bytes of s at most, not splitting a
// character of valid UTF-8.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for i := n; i > 0 && i > n-utf8.UTFMax; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i]
		}
	}
	return s[:n]
}
