package pool

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// A job is its whole process tree: whatever the child forks belongs to the
// job, and nothing of it outlives the job. Two mechanisms hold a tree
// together:
//
//   - A cgroup per job (cgroup v2, where this process may write it: as
//     root, or under systemd with Delegate=yes). The child starts inside it
//     from its first instruction (CLONE_INTO_CGROUP: moving a pid in after
//     the fork would miss what it forks meanwhile), nothing it forks can
//     leave it, and cgroup.kill ends all of it, setsid escapees included.
//   - Otherwise the child's process group, which a process leaves by
//     calling setsid or setpgid.
//
// When the child (the job's leader) exits, what is left of its tree is
// killed, unless Isolation.KeepLeftovers says the job means to leave
// something behind; a timeout or a stop kills it in any case.

// CgroupMode says whether jobs get cgroups of their own.
type CgroupMode uint8

// The cgroup modes.
const (
	// CgroupAuto uses per-job cgroups where cgroup v2 can be written, and
	// process groups elsewhere, saying why once at New.
	CgroupAuto CgroupMode = iota
	// CgroupOff always uses process groups.
	CgroupOff
	// CgroupRequire makes New fail where per-job cgroups cannot be used.
	CgroupRequire
)

// String returns "auto", "off" or "require".
func (m CgroupMode) String() string {
	switch m {
	case CgroupAuto:
		return "auto"
	case CgroupOff:
		return "off"
	case CgroupRequire:
		return "require"
	}
	return fmt.Sprintf("CgroupMode(%d)", int(m))
}

// Isolation configures how a pool holds each job's processes together.
// The zero value uses per-job cgroups where it can, kills what a job
// leaves behind, sets no limits, and keeps no state across restarts but
// the cgroups themselves.
type Isolation struct {
	// Cgroups selects per-job cgroups or process groups.
	Cgroups CgroupMode
	// CgroupName names the pool's cgroup, which holds the cgroups of its
	// jobs: beside the daemon's leaf under a delegated cgroup (default
	// "jobs"), or at the top of the hierarchy as root without systemd,
	// where the name must be unique on the host (default: the program's
	// name, pid and a number, which a restarted daemon finds again only
	// through StateDir). A restarted daemon kills whatever its pool's
	// cgroup still holds.
	CgroupName string
	// PerJobCgroups makes a new cgroup for each job, instead of one per
	// slot that the slot's jobs reuse (a job that needed killing leaves a
	// cgroup that is not reused). A new cgroup costs about 80 µs more per
	// job (bench/cgroups.sh: +17% for /bin/true against +2%), but gives
	// each job its pids.peak, and its memory.peak before Linux 6.12 (which
	// can reset the peak of a reused cgroup).
	PerJobCgroups bool
	// KeepLeftovers lets the processes a job leaves behind when its leader
	// exits run on, for jobs that mean to start something that outlives
	// them. A timeout or a stop still kills them, and so does the next
	// start of a pool with the same StateDir or cgroup, as after a crash.
	KeepLeftovers bool
	// Limits apply to each job's cgroup. New fails when they are set and
	// per-job cgroups, or the controllers they need, are not available.
	Limits Limits
	// StateDir, if set, is a directory (for example under /run) where the
	// pool records, for a later start after a crash, the process group of
	// each running job and the pool's cgroup. New creates it (mode 0700)
	// if needed.
	StateDir string
}

// IsolationStatus says how a pool holds its jobs together, for a status
// display.
type IsolationStatus struct {
	// Cgroups is true when each job runs in a cgroup of its own.
	Cgroups bool
	// Cgroup is the pool's cgroup directory, which holds the jobs'.
	Cgroup string
	// PerSlot is true when a slot's jobs share one reused cgroup.
	PerSlot bool
	// Controllers lists the cgroup controllers enabled for the jobs.
	Controllers []string
	// Reason says why jobs run in process groups; "" with cgroups.
	Reason string
	// KeepLeftovers is Isolation.KeepLeftovers.
	KeepLeftovers bool
}

// String describes the status in a few words: "cgroups (memory pids)
// under /sys/fs/cgroup/...", "process groups: <reason>".
func (s IsolationStatus) String() string {
	if !s.Cgroups {
		return "process groups: " + s.Reason
	}
	kind := "per-job cgroups"
	if s.PerSlot {
		kind = "per-slot cgroups"
	}
	if len(s.Controllers) > 0 {
		kind += " (" + strings.Join(s.Controllers, " ") + ")"
	}
	return kind + " in " + s.Cgroup
}

// isolation is a pool's side of it.
type isolation struct {
	cfg       Isolation
	reason    string      // why process groups
	cg        *cgroupPool // nil in process-group mode
	sid       int         // the daemon's session, recorded with each group
	recovered Recovery
	claimed   []string
	recorded  bool // the state directory records the pool's cgroup
}

// claims holds the cgroups and state directories that pools of this
// process use: two pools sharing one would kill each other's jobs.
var claims sync.Map

func claim(what, path string) error {
	if _, taken := claims.LoadOrStore(path, true); taken {
		return fmt.Errorf("%s %s is used by another pool of this process", what, path)
	}
	return nil
}

// isolate sets up the pool's isolation, and kills what a previous run's
// jobs left behind, before any job of this one starts.
func (p *Pool) isolate() error {
	cfg := p.cfg.Isolation
	iso := &isolation{cfg: cfg}
	p.iso = iso
	if cfg.StateDir != "" {
		dir, err := filepath.Abs(cfg.StateDir)
		if err != nil {
			return fmt.Errorf("state directory %s: %w", cfg.StateDir, err)
		}
		if err := claim("state directory", dir); err != nil {
			return err
		}
		iso.claimed = append(iso.claimed, dir)
		iso.cfg.StateDir = dir
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create state directory: %w", err)
		}
		// Its records say which processes to kill: a link planted there
		// would hand that to whoever owns the directory it points at.
		if fi, err := os.Lstat(dir); err != nil {
			return fmt.Errorf("state directory: %w", err)
		} else if !fi.IsDir() {
			return fmt.Errorf("state directory %s is a symbolic link, or not a directory: refusing it", dir)
		}
	}
	limits, err := cfg.Limits.files()
	if err != nil {
		return err
	}
	if cfg.Cgroups == CgroupOff {
		iso.reason = "per-job cgroups are turned off"
	} else {
		cg, err := newCgroupPool(cfg, limits)
		switch {
		case err == nil:
			iso.cg = cg
			iso.claimed = append(iso.claimed, cg.dir.path)
		case cfg.Cgroups == CgroupRequire:
			return fmt.Errorf("per-job cgroups: %w", err)
		default:
			iso.reason = err.Error()
		}
	}
	if iso.cg == nil && len(limits) > 0 {
		return fmt.Errorf("job limits need per-job cgroups, and jobs run in process groups: %s", iso.reason)
	}
	sid, err := readProcStat(0)
	if err == nil {
		var n int64
		n, err = sid.field(statSession)
		iso.sid = int(n)
	}
	if err != nil {
		return fmt.Errorf("read the daemon's session: %w", err)
	}

	if err := iso.recover(); err != nil {
		return err
	}
	if iso.cg != nil {
		if err := iso.cg.enableControllers(); err != nil {
			return err
		}
		if err := iso.recordCgroup(); err != nil {
			return err
		}
	}

	st := p.Isolation()
	if st.Cgroups {
		p.log.Info("jobs run in cgroups of their own", "cgroup", st.Cgroup, "per_slot", st.PerSlot,
			"controllers", strings.Join(st.Controllers, " "), "keep_leftovers", cfg.KeepLeftovers)
	} else {
		level := p.log.Warn
		if cfg.Cgroups == CgroupOff {
			level = p.log.Info
		}
		level("jobs run in process groups, without cgroups: a job that calls setsid escapes its stops",
			"reason", iso.reason, "keep_leftovers", cfg.KeepLeftovers)
	}
	if r := iso.recovered; len(r.Killed) > 0 {
		p.log.Warn("killed what a previous run's jobs left behind", "processes", len(r.Killed),
			"detail", r.String())
	}
	return nil
}

// Isolation says how the pool holds its jobs together: in cgroups, or in
// process groups and why.
func (p *Pool) Isolation() IsolationStatus {
	iso := p.iso
	st := IsolationStatus{Reason: iso.reason, KeepLeftovers: iso.cfg.KeepLeftovers}
	if cg := iso.cg; cg != nil {
		st.Cgroups = true
		st.Cgroup = cg.dir.path
		st.PerSlot = cg.perSlot
		st.Controllers = append([]string(nil), cg.enabled...)
		sort.Strings(st.Controllers)
	}
	return st
}

// Recovered returns what New found and killed of a previous run's jobs.
func (p *Pool) Recovered() Recovery { return p.iso.recovered }

// closeIsolation removes the pool's cgroup and its record once every job
// is gone. A cgroup that kept leftovers stays, with its record, for the
// next start to clean up.
func (p *Pool) closeIsolation() {
	iso := p.iso
	if iso == nil {
		return
	}
	if cg := iso.cg; cg != nil {
		if cg.close() == nil && iso.recorded {
			os.Remove(filepath.Join(iso.cfg.StateDir, cgroupRecord))
		}
	}
	for _, c := range iso.claimed {
		claims.Delete(c)
	}
	iso.claimed = nil
}
