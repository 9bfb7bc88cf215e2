package lifecycle

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// DropPrivileges switches the whole process, every thread, to uid and gid
// with exactly the supplementary groups in groups (nil or empty: none), for
// good: setgroups(groups), then setgid(gid), then setuid(uid). The order
// matters: changing groups needs privilege, which setuid takes away.
// Go's syscall.Setgroups, Setgid and Setuid (since Go 1.16) apply to all
// threads of the process, through libc with cgo and AllThreadsSyscall
// without, so no thread is left behind as root. Call it after the PID file
// is locked and the sockets are bound, which may need root.
//
// It then verifies: real, effective and saved ids are all uid and gid, in
// every thread listed in /proc/self/task, the groups are the ones asked
// for, and setuid(0) fails (when uid is not 0). A failed check returns an
// error, and the caller must exit: the process is in an unknown state.
//
// When the process already runs as uid and gid (real, effective and saved;
// systemd's User=, or a start as that user) it changes nothing and returns
// nil; the supplementary groups are then left as they are, unless the
// process is root and they differ. When it is not root and a change is
// needed, it returns an error that says to start as root or remove the
// user setting ([daemon] user).
//
// Why seteuid, which the PHP original offered, is not a drop: it changes
// only the effective uid. The real or saved set-user-ID stays 0, and the
// kernel lets a process set its effective uid back to its real or saved
// one, so the process, or code injected into it, can seteuid(0) or
// setuid(0) and be root again. Only setuid as root sets all three ids.
// After the drop the kernel also clears the process's capabilities and
// makes it non-dumpable (/proc/self/fd and the like become root's).
func DropPrivileges(uid, gid int, groups []int) error {
	return drop(uid, gid, groups, false)
}

// drop is DropPrivileges; keepsSetuid says that the process keeps
// CAP_SETUID (DropPrivilegesKeepCaps), and so can still setuid(0).
func drop(uid, gid int, groups []int, keepsSetuid bool) error {
	if uid < 0 || gid < 0 {
		return fmt.Errorf("drop privileges: invalid uid %d or gid %d", uid, gid)
	}
	want := normGroups(groups)
	ruid, euid, suid := unix.Getresuid()
	rgid, egid, sgid := unix.Getresgid()
	have, err := unix.Getgroups()
	if err != nil {
		return fmt.Errorf("drop privileges: getgroups: %w", err)
	}
	idsDone := ruid == uid && euid == uid && suid == uid && rgid == gid && egid == gid && sgid == gid
	if idsDone && (euid != 0 || slices.Equal(normGroups(have), want)) {
		return nil
	}
	if err := syscall.Setgroups(want); err != nil {
		return dropError(euid, egid, uid, gid, "setgroups", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return dropError(euid, egid, uid, gid, "setgid", err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return dropError(euid, egid, uid, gid, "setuid", err)
	}
	if err := verifyDrop(uid, gid, want, keepsSetuid); err != nil {
		return fmt.Errorf("drop privileges to uid %d gid %d: %w", uid, gid, err)
	}
	return nil
}

func dropError(euid, egid, uid, gid int, call string, err error) error {
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("drop privileges: running as uid %d gid %d, cannot switch to uid %d gid %d (%s: %w): only root can switch users",
			euid, egid, uid, gid, call, err)
	}
	return fmt.Errorf("drop privileges to uid %d gid %d: %s: %w", uid, gid, call, err)
}

// verifyDrop checks the result of DropPrivileges.
func verifyDrop(uid, gid int, groups []int, keepsSetuid bool) error {
	ruid, euid, suid := unix.Getresuid()
	rgid, egid, sgid := unix.Getresgid()
	if ruid != uid || euid != uid || suid != uid {
		return fmt.Errorf("uids are %d/%d/%d after setuid", ruid, euid, suid)
	}
	if rgid != gid || egid != gid || sgid != gid {
		return fmt.Errorf("gids are %d/%d/%d after setgid", rgid, egid, sgid)
	}
	have, err := unix.Getgroups()
	if err != nil {
		return fmt.Errorf("getgroups: %w", err)
	}
	if !slices.Equal(normGroups(have), groups) {
		return fmt.Errorf("groups are %v after setgroups(%v)", have, groups)
	}
	if err := verifyThreads(uid, gid); err != nil {
		return err
	}
	if uid != 0 && !keepsSetuid {
		// If this succeeds the drop is worthless; the caller exits.
		if err := syscall.Setuid(0); err == nil {
			return errors.New("setuid(0) succeeded after the drop")
		}
	}
	return nil
}

// verifyThreads checks the Uid: and Gid: lines of every thread's status:
// the one thread left as root is the bug to catch. Without /proc (a chroot)
// the check is skipped; threads that exit meanwhile are skipped.
func verifyThreads(uid, gid int) error {
	tasks, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil || len(tasks) == 0 {
		return nil
	}
	wantU := fmt.Sprintf("%d\t%d\t%d\t%d", uid, uid, uid, uid)
	wantG := fmt.Sprintf("%d\t%d\t%d\t%d", gid, gid, gid, gid)
	for _, name := range tasks {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), ":")
			v = strings.TrimSpace(v)
			if (k == "Uid" && v != wantU) || (k == "Gid" && v != wantG) {
				f.Close()
				return fmt.Errorf("thread %s still has %s %s", filepath.Base(filepath.Dir(name)), k, v)
			}
		}
		f.Close()
	}
	return nil
}

// normGroups returns the groups sorted and without duplicates, so that two
// lists compare as sets: the order given and the order getgroups returns
// need not agree.
func normGroups(groups []int) []int {
	out := slices.Clone(groups)
	slices.Sort(out)
	return slices.Compact(out)
}
