package pool

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// This file finds the cgroup v2 hierarchy and the place in it where this
// process may make cgroups for its jobs; cgroupdir.go works on the
// directories themselves.
//
// The place is decided once per process, because the process may have to
// move itself: a delegated cgroup (systemd's Delegate=yes) can only have
// children whose controllers are enabled if it holds no process itself
// (the "no internal processes" rule), so the daemon first moves into a leaf
// of its own, leafName, beside its pools' cgroups.

// leafName is the cgroup the daemon moves into under a delegated cgroup.
// Not ".control": systemd 252 runs a delegated unit's ExecReload= and the
// like there.
const leafName = "supervisor"

// cgroupFS is the cgroup v2 hierarchy as this process sees it.
type cgroupFS struct {
	mount string // where it is mounted, e.g. /sys/fs/cgroup/unified
	top   string // the cgroup the mount shows at its top, usually "/"
}

// dir returns the directory of the cgroup rel (a path like
// "/system.slice/x.service", as in /proc/self/cgroup).
func (fs cgroupFS) dir(rel string) string {
	return filepath.Join(fs.mount, strings.TrimPrefix(rel, fs.top))
}

// placement is where this process makes the cgroups of its pools.
type placement struct {
	fs     cgroupFS
	parent string // the cgroup under which pools make theirs
	// atRoot is true when parent is the top of the hierarchy, shared with
	// every other program on the host: pool cgroups need names that are
	// unique there.
	atRoot bool
	leaf   string // the leaf this process moved into, "" if it did not
}

var place struct {
	once    sync.Once
	settled atomic.Bool
	p       placement
	err     error
}

// SettleCgroup decides, once per process, where per-job cgroups go, and
// moves the process into a leaf cgroup of its own when it runs in a
// delegated cgroup (systemd's Delegate=yes): per-job cgroups can have
// controllers (and so limits) only beside the daemon, never under a cgroup
// that holds it. New calls it; a program that starts processes of its own
// before New should call it first, so that those start in the leaf too.
//
// It returns the leaf's directory, or "" when the process stays where it
// is (at the top of the hierarchy, as root on a host without systemd). The
// error says why per-job cgroups cannot be used here: no cgroup v2, a
// cgroup that systemd manages without delegation, no permission. Later
// calls return the same.
func SettleCgroup() (leaf string, err error) {
	place.once.Do(func() {
		place.settled.Store(true)
		place.p, place.err = settle()
	})
	if place.err != nil {
		return "", place.err
	}
	if place.p.leaf == "" {
		return "", nil
	}
	return place.p.fs.dir(place.p.leaf), nil
}

func settle() (placement, error) {
	own, err := ownCgroup(0)
	if err != nil {
		return placement{}, err
	}
	fs, err := findCgroupFS(own)
	if err != nil {
		return placement{}, err
	}
	pl := placement{fs: fs, parent: own}
	dir := fs.dir(own)
	base := path.Base(own)
	switch {
	case own == "/":
		// The top of the hierarchy (of our cgroup namespace) is exempt
		// from the no-internal-processes rule: nothing to move.
		pl.atRoot = true
		return pl, nil
	case base == leafName:
		// Moved before, by this process or by the one that exec'd it.
		pl.parent = path.Dir(own)
		return pl, nil
	case (strings.HasSuffix(base, ".service") || strings.HasSuffix(base, ".scope")) && !delegated(dir):
		return placement{}, fmt.Errorf("cgroup %s is managed by systemd without delegation (Delegate=yes)", own)
	}
	leaf := path.Join(own, leafName)
	if err := os.Mkdir(fs.dir(leaf), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return placement{}, fmt.Errorf("create leaf cgroup: %w", err)
	}
	// "0" is the writing process: all its threads move at once.
	if err := os.WriteFile(filepath.Join(fs.dir(leaf), "cgroup.procs"), []byte("0"), 0); err != nil {
		return placement{}, fmt.Errorf("move into leaf cgroup %s: %w", leaf, err)
	}
	pl.leaf = leaf
	return pl, nil
}

// DelegateCgroup does for a daemon that root starts without systemd what
// systemd's Delegate=yes does for a service: it creates the cgroup name at
// the top of the hierarchy, hands it to uid and gid (the directory and its
// cgroup.procs, cgroup.threads and cgroup.subtree_control, as systemd
// does), and moves the process into its leaf. The daemon may then drop its
// privileges: New, run as uid, makes the jobs' cgroups in it, and a
// restarted daemon that delegates the same name finds what its jobs left
// there. Without it, a daemon that is not root runs its jobs in process
// groups.
//
// Call it as root, before SettleCgroup or New. It returns the delegated
// cgroup's directory; calling it again with the same name does nothing
// more. It fails when the process is not at the top of the hierarchy (a
// service manager placed it: that manager delegates, or not).
func DelegateCgroup(name string, uid, gid int) (string, error) {
	if place.settled.Load() {
		return "", errors.New("delegate cgroup: the process's cgroup was settled already (DelegateCgroup must come before New)")
	}
	if !validCgroupName(name) || name == leafName {
		return "", fmt.Errorf("delegate cgroup: bad name %q", name)
	}
	own, err := ownCgroup(0)
	if err != nil {
		return "", fmt.Errorf("delegate cgroup: %w", err)
	}
	fs, err := findCgroupFS(own)
	if err != nil {
		return "", fmt.Errorf("delegate cgroup: %w", err)
	}
	top := "/" + name
	dir := fs.dir(top)
	switch own {
	case path.Join(top, leafName):
		return dir, nil
	case "/":
	default:
		return "", fmt.Errorf("delegate cgroup: the process is in cgroup %s, not at the top of the hierarchy", own)
	}
	for _, d := range []string{dir, filepath.Join(dir, leafName)} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("delegate cgroup: %w", err)
		}
		for _, f := range []string{"", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"} {
			if err := os.Chown(filepath.Join(d, f), uid, gid); err != nil {
				return "", fmt.Errorf("delegate cgroup: %w", err)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, leafName, "cgroup.procs"), []byte("0"), 0); err != nil {
		return "", fmt.Errorf("delegate cgroup: move into %s: %w", filepath.Join(dir, leafName), err)
	}
	return dir, nil
}

// delegated reports whether systemd delegated the cgroup in dir to the
// service: systemd marks such a cgroup with the extended attribute
// user.delegate (from version 251; trusted.delegate, readable by root
// only, before), and hands its files to the service's user.
func delegated(dir string) bool {
	buf := make([]byte, 8)
	for _, name := range []string{"user.delegate", "trusted.delegate"} {
		if n, err := unix.Getxattr(dir, name, buf); err == nil && string(buf[:n]) == "1" {
			return true
		}
	}
	var st unix.Stat_t
	euid := os.Geteuid()
	return euid != 0 && unix.Stat(filepath.Join(dir, "cgroup.procs"), &st) == nil && int(st.Uid) == euid
}

// ownCgroup returns the cgroup v2 path of pid (0: this process), from
// /proc/PID/cgroup.
func ownCgroup(pid int) (string, error) {
	p := "/proc/self/cgroup"
	if pid != 0 {
		p = "/proc/" + strconv.Itoa(pid) + "/cgroup"
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rel, ok := strings.CutPrefix(line, "0::"); ok {
			if !strings.HasPrefix(rel, "/") || strings.HasPrefix(rel, "/..") {
				return "", fmt.Errorf("cgroup %q is outside this process's cgroup namespace", rel)
			}
			return rel, nil
		}
	}
	return "", errors.New("no cgroup v2 hierarchy: the process is in cgroup v1 hierarchies only")
}

// findCgroupFS finds the mount of the cgroup v2 hierarchy that shows the
// cgroup own.
func findCgroupFS(own string) (cgroupFS, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return cgroupFS{}, err
	}
	for _, m := range mounts {
		if m.top == "/" || own == m.top || strings.HasPrefix(own, m.top+"/") {
			return m, nil
		}
	}
	if len(mounts) > 0 {
		return cgroupFS{}, fmt.Errorf("no mount of the cgroup v2 hierarchy shows cgroup %s", own)
	}
	return cgroupFS{}, errors.New("no cgroup v2 hierarchy is mounted")
}

// cgroupRel returns the cgroup that the directory dir is, as
// /proc/PID/cgroup would name it.
func cgroupRel(dir string) (string, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return "", err
	}
	for _, m := range mounts {
		if rest, ok := strings.CutPrefix(dir, m.mount); ok && (rest == "" || rest[0] == '/') {
			return path.Join(m.top, rest), nil
		}
	}
	return "", fmt.Errorf("%s is not in a cgroup v2 hierarchy", dir)
}

// cgroupMounts lists the mounts of the cgroup v2 hierarchy.
func cgroupMounts() ([]cgroupFS, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ms []cgroupFS
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		left, right, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(right, "cgroup2 ") {
			continue
		}
		if fields := strings.Fields(left); len(fields) >= 5 {
			ms = append(ms, cgroupFS{mount: unescapeMount(fields[4]), top: unescapeMount(fields[3])})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read /proc/self/mountinfo: %w", err)
	}
	return ms, nil
}

// unescapeMount undoes the octal escapes (\040 for a space) of a path in
// /proc/self/mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// controllersV1 lists the controllers this process sees bound to cgroup
// v1 hierarchies, which cgroup v2 cannot use: an error names them, since
// "not available" alone sends the reader looking in the wrong place.
func controllersV1() map[string]bool {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil
	}
	v1 := map[string]bool{}
	for _, line := range bytes.Split(b, []byte("\n")) {
		f := bytes.SplitN(line, []byte(":"), 3)
		if len(f) == 3 && len(f[1]) > 0 {
			for _, c := range bytes.Split(f[1], []byte(",")) {
				v1[string(c)] = true
			}
		}
	}
	return v1
}
