package service

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"syscall"

	"github.com/jobdaemon/jobdaemon/pkg/lifecycle"
)

// Jobs run as a user of their own ([job] user), never the daemon's: a job
// that is taken over by its input (an image converter fed a crafted file)
// must not own the daemon. As another user it cannot use the control
// socket (0660, the daemon's group, peers checked), write the daemon's
// log or spool, read other jobs' files, or signal the daemon; its
// processes count against its own user's RLIMIT_NPROC, not the daemon's,
// so a fork bomb cannot stop the daemon from making threads.
//
// To start processes as another user and signal them, a daemon that is
// not root keeps CAP_SETUID, CAP_SETGID and CAP_KILL, never inheritable
// nor ambient (lifecycle.DropPrivilegesKeepCaps, pool's spawner thread):
// started as root it keeps them through its privilege drop; under systemd
// it is started with them (AmbientCapabilities=). docs/INSTALL.md says
// why this and not a privileged helper.

// jobIdentity works out whom jobs run as, once the daemon has its final
// identity: the credential for jobs.Options (nil: as the daemon), and the
// warnings for status. It fails when jobs must run as another user and
// the daemon has not the right to start them so.
func (r *daemonRun) jobIdentity() (*syscall.Credential, []string, error) {
	st := &r.st
	jc, err := st.JobCredential()
	if err != nil {
		return nil, nil, err
	}
	uid, gid := os.Geteuid(), os.Getegid()
	var warnings []string
	warn := func(format string, args ...any) {
		w := fmt.Sprintf(format, args...)
		r.log.Warn(w)
		warnings = append(warnings, w)
	}
	if jc == nil || int(jc.Uid) == uid {
		warn("jobs run as the daemon's own user (%s): a job can use the control socket, write the daemon's log and spool, "+
			"and signal or exhaust the daemon; set job.user to a user of the jobs' own", describeUser(uid))
		if jc == nil || int(jc.Gid) == gid {
			r.limitCaps(false)
			return nil, warnings, nil
		}
	}
	if uid != 0 && !lifecycle.HasCaps(lifecycle.JobCaps...) {
		return nil, nil, fmt.Errorf("job.user %q: jobs run as another user than the daemon (%s), which needs CAP_SETUID, CAP_SETGID and CAP_KILL: "+
			"start the daemon as root, or with these capabilities (systemd: AmbientCapabilities=; see docs/INSTALL.md), or remove job.user",
			st.Job.User, describeUser(uid))
	}
	r.limitCaps(true)
	for _, g := range r.trustedGroups() {
		if int(jc.Gid) == g || slices.Contains(jc.Groups, uint32(g)) {
			warn("job.user %q is in group %s, which may use the control socket or read the daemon's files: "+
				"give the jobs a group of their own", st.Job.User, describeGroup(g))
		}
	}
	return jc, warnings, nil
}

// trustedGroups are the daemon's group and the control socket's.
func (r *daemonRun) trustedGroups() []int {
	groups := []int{os.Getegid()}
	if g, err := r.st.ControlGid(); err == nil && g >= 0 && g != groups[0] {
		groups = append(groups, g)
	}
	return groups
}

// limitCaps drops the capabilities that a daemon which is not root holds
// beyond what its jobs need: JobCaps when they run as another user
// (forJobs), none otherwise (a unit with AmbientCapabilities= and no
// job.user). A root daemon keeps its own. A cgo build cannot change them
// on every thread and leaves them; the forking threads give none to jobs
// anyway.
func (r *daemonRun) limitCaps(forJobs bool) {
	if os.Geteuid() == 0 {
		return
	}
	var keep []uintptr
	if forJobs {
		keep = lifecycle.JobCaps
	}
	if err := lifecycle.LimitCaps(keep); err != nil && !errors.Is(err, lifecycle.ErrThreadCaps) {
		r.log.Warn("cannot drop the capabilities the daemon does not need", "err", err)
	}
}

// keepCapsForJobs reports whether a root daemon that drops to cred must
// keep the capabilities to run jobs as their own user.
func (r *daemonRun) keepCapsForJobs(cred *syscall.Credential) bool {
	jc, err := r.st.JobCredential()
	return err == nil && jc != nil && (jc.Uid != cred.Uid || jc.Gid != cred.Gid)
}

func describeUser(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return fmt.Sprintf("%s, uid %d", u.Username, uid)
	}
	return "uid " + strconv.Itoa(uid)
}

func describeGroup(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return fmt.Sprintf("%s (gid %d)", g.Name, gid)
	}
	return "gid " + strconv.Itoa(gid)
}
