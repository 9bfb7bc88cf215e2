package control

import (
	"context"
	"fmt"
	"net"
	"os/user"
	"slices"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Peer is the process at the other end of a connection.
type Peer struct {
	Pid, Uid, Gid int
	Groups        []int // supplementary groups; nil when unknown
}

type peerKey struct{}

// peerOf returns the peer that ConnContext stored in ctx, or nil.
func peerOf(ctx context.Context) *Peer {
	p, _ := ctx.Value(peerKey{}).(*Peer)
	return p
}

// readPeer reads the credentials of conn's peer from the kernel. The
// groups come from SO_PEERGROUPS (Linux 4.13), which, like SO_PEERCRED,
// records the peer at connect time; without it they come from the group
// database for the peer's uid.
func readPeer(conn net.Conn) (*Peer, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("not a unix socket connection: %T", conn)
	}
	cred, err := peerCred(uc)
	if err != nil {
		return nil, err
	}
	p := &Peer{Pid: int(cred.Pid), Uid: int(cred.Uid), Gid: int(cred.Gid)}
	if raw, err := uc.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) { p.Groups = peerGroups(int(fd)) })
	}
	if p.Groups == nil {
		p.Groups = databaseGroups(p.Uid)
	}
	return p, nil
}

// peerGroups reads SO_PEERGROUPS: an array of gid_t. x/sys has no typed
// wrapper for it (GetsockoptString would cut the array at the first zero
// byte, which most gids hold).
func peerGroups(fd int) []int {
	buf := make([]uint32, 64)
	for {
		size := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch {
		case errno == unix.ERANGE && int(size/4) > len(buf):
			buf = make([]uint32, size/4) // size is what it needs
			continue
		case errno != 0:
			return nil
		}
		groups := make([]int, size/4)
		for i := range groups {
			groups[i] = int(buf[i])
		}
		return groups
	}
}

func databaseGroups(uid int) []int {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return nil
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil
	}
	var groups []int
	for _, id := range ids {
		if n, err := strconv.Atoi(id); err == nil {
			groups = append(groups, n)
		}
	}
	return groups
}

// allowed reports whether p may use the socket: root, the daemon's own
// user, or a member of group (when group >= 0).
func allowed(p *Peer, ownUID, group int) bool {
	switch {
	case p == nil:
		return false
	case p.Uid == 0, p.Uid == ownUID:
		return true
	case group < 0:
		return false
	}
	return p.Gid == group || slices.Contains(p.Groups, group)
}
