package pool

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// The child's side of isolation.go: hooks that Pool.start and Child.reap
// call at each step of a child's life.

// childIsolation is what a child holds of its pool's isolation.
type childIsolation struct {
	cg        *jobCgroup // nil in process-group mode
	inherited int64      // the daemon's peak RSS when the child started
	record    string     // the process group's record, "" for none
}

// cgroupEmptyTimeout bounds the wait for a killed job's cgroup to empty:
// cgroup.kill takes about a millisecond, but a process in uninterruptible
// sleep (a hung NFS read) dies only when that ends.
const cgroupEmptyTimeout = 10 * time.Second

// Cgroup returns the directory of the child's cgroup, or "" when it runs
// in a process group only.
func (c *Child) Cgroup() string {
	if c.iso.cg == nil {
		return ""
	}
	return c.iso.cg.path
}

// isolate places the child, about to be started by cmd, into its cgroup.
func (c *Child) isolate(l *launch) error {
	cg := c.pool.iso.cg
	if cg == nil {
		return nil
	}
	j, err := cg.acquire(c.Slot)
	if err != nil {
		return fmt.Errorf("start %s: %w", c.spec.Path, err)
	}
	c.iso.cg = j
	// CLONE_INTO_CGROUP: the child is in the cgroup from its first
	// instruction, before it can fork anything.
	l.sys.UseCgroupFD = true
	l.sys.CgroupFD = j.fd
	return nil
}

// isolationFailed gives back what isolate took, for a child that did not
// start.
func (c *Child) isolationFailed() {
	if j := c.iso.cg; j != nil {
		c.pool.iso.cg.release(j, true)
		c.iso.cg = nil
	}
}

// isolationStarted records what the end of the child will need. It runs
// before the reaper can see the child, so the child, even if it has exited
// already, is still there to be read.
func (c *Child) isolationStarted() {
	c.iso.inherited = selfMaxRSS()
	iso := c.pool.iso
	if iso.cg == nil && iso.cfg.StateDir != "" {
		rec, err := iso.recordGroup(c.Pid)
		if err != nil {
			c.pool.log.Warn("cannot record the job's process group for a restart after a crash",
				"pid", c.Pid, "err", err)
		}
		c.iso.record = rec
	}
}

// killTree kills the child's cgroup, all of it, where it has one.
func (c *Child) killTree() {
	if j := c.iso.cg; j != nil {
		if err := j.kill(c.pool.iso.cg.useKill); err != nil {
			c.pool.log.Warn("cannot kill the job's cgroup", "cgroup", j.path, "err", err)
		}
	}
}

// leaderReaped settles the exit of a reaped child: which figures of the
// rusage hold, and, with a cgroup, the rest once the cgroup is empty.
// killed says whether Child.reap killed what the leader left.
func (c *Child) leaderReaped(killed bool) {
	e := &c.exit
	settleMaxRSS(e, c.iso.inherited)
	if c.iso.record != "" {
		// A group with kept leftovers keeps its record: the next start
		// after a crash kills them too.
		if killed || syscall.Kill(-c.Pgid, 0) != nil {
			os.Remove(c.iso.record)
		}
	}
	if j := c.iso.cg; j != nil {
		c.pending.Add(1)
		if killed && !j.empty {
			go c.settleCgroup(killed) // the kill takes a moment: wait apart
		} else {
			// Empty already (Child.reap looked), or left as it is: no
			// wait, and no goroutine to hand the end of the job over to.
			c.settleCgroup(killed)
		}
	}
}

// settleCgroup waits until the killed job's cgroup is empty, so that the
// job's figures are final and the slot is clean for the next job, then
// reads them and gives the cgroup back.
func (c *Child) settleCgroup(killed bool) {
	defer c.ended()
	j := c.iso.cg
	empty := false
	if killed && j.empty {
		empty = true
	} else if killed {
		err := j.waitEmpty(cgroupEmptyTimeout)
		if err != nil {
			c.pool.log.Warn("the job's cgroup is not empty after it was killed", "cgroup", j.path, "err", err)
		}
		empty = err == nil
	} else if populated, err := j.populated(); err == nil && !populated {
		empty = true
	}
	c.settleOutput(empty)
	j.account(&c.exit)
	c.pool.iso.cg.release(j, empty)
}
