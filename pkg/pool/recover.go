package pool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A daemon killed with SIGKILL takes its jobs' leaders with it (Pdeathsig),
// but not what they forked. Restarted, it would run the same jobs again
// while those still work: New kills them first. With cgroups, they are in
// the cgroups under the pool's; with process groups, in the groups that
// the state directory records, one file per running job.
//
// A record holds the group's id, the start time of its leader and the
// daemon's session. A group id is never reused while a process is in the
// group, but once the group is empty its number may come back as another
// program's group. So a process is killed only if it is in the recorded
// group AND the recorded session (which the daemon's jobs share and only
// they do: a new daemon is in a new session) AND started no earlier than
// the recorded leader; and if a live process has the group's number as its
// pid with another start time, the number was reused and the record is
// dropped. Each kill goes through a pidfd, after checking the process
// again, so a pid reused between the check and the kill is never hit.

// The state directory's files.
const (
	cgroupRecord      = "cgroup" // the pool's cgroup directory
	groupRecordPrefix = "pgid-"  // + the group id: one per running job
)

// jobCgroupName reports whether name is one of the cgroups the pool makes
// for its jobs, ^((job|slot)-[0-9]+(-[0-9]+)?|probe-[0-9]+)$: recovery
// touches no other.
func jobCgroupName(name string) bool {
	if rest, ok := strings.CutPrefix(name, "probe-"); ok {
		return digits(rest)
	}
	rest, ok := strings.CutPrefix(name, "job-")
	if !ok {
		rest, ok = strings.CutPrefix(name, "slot-")
	}
	if !ok {
		return false
	}
	first, second, two := strings.Cut(rest, "-")
	return digits(first) && (!two || digits(second))
}

// digits reports whether s is one or more ASCII digits.
func digits(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }

// Leftover is a process that a previous run's job left, and New killed.
type Leftover struct {
	Pid     int
	Command string // its name, as in /proc/PID/comm
	// Cgroup is the job cgroup it was found in, "" for a process group.
	Cgroup string
	// Pgid is the recorded process group it was in, 0 for a cgroup.
	Pgid int
}

// Recovery is what New found of a previous run's jobs.
type Recovery struct {
	// Killed lists the processes killed.
	Killed []Leftover
	// Cgroups counts the job cgroups removed, empty or not.
	Cgroups int
	// Groups counts the process-group records read; Stale those whose
	// group was gone, or whose number another program now uses.
	Groups, Stale int
}

// String summarises the recovery for a log line: "killed 3 processes
// (sleep 412, sh 415, sleep 420) in 2 job cgroups and 0 process groups".
func (r Recovery) String() string {
	var procs []string
	for i, l := range r.Killed {
		if i == 10 {
			procs = append(procs, fmt.Sprintf("and %d more", len(r.Killed)-i))
			break
		}
		procs = append(procs, l.Command+" "+strconv.Itoa(l.Pid))
	}
	s := fmt.Sprintf("killed %d processes", len(r.Killed))
	if len(procs) > 0 {
		s += " (" + strings.Join(procs, ", ") + ")"
	}
	return s + fmt.Sprintf(" in %d job cgroups and %d process groups (%d records stale)",
		r.Cgroups, r.Groups-r.Stale, r.Stale)
}

// recover kills what a previous run's jobs left: in the cgroup the state
// directory records, in the pool's own cgroup, and in the recorded process
// groups. It fails if it cannot, rather than let a job run twice at once.
func (iso *isolation) recover() error {
	r := &iso.recovered
	state := iso.cfg.StateDir
	if state != "" {
		b, err := os.ReadFile(filepath.Join(state, cgroupRecord))
		switch {
		case err == nil:
			prev := strings.TrimSpace(string(b))
			if iso.cg == nil || prev != iso.cg.dir.path {
				if err := r.killCgroupTree(prev, true); err != nil {
					return fmt.Errorf("recover the previous run's jobs: %w", err)
				}
			}
		case !errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("recover the previous run's jobs: %w", err)
		}
	}
	if iso.cg != nil {
		if err := r.killCgroupTree(iso.cg.dir.path, false); err != nil {
			return fmt.Errorf("recover the previous run's jobs: %w", err)
		}
		for _, dir := range iso.cg.orphans {
			if err := r.killCgroupTree(dir, true); err != nil {
				return fmt.Errorf("recover the jobs of a gone pool: %w", err)
			}
		}
	}
	if state != "" {
		if err := r.killGroups(state); err != nil {
			return fmt.Errorf("recover the previous run's jobs: %w", err)
		}
	}
	return nil
}

// recordCgroup notes the pool's cgroup in the state directory, for a
// restart that does not find it by its name.
func (iso *isolation) recordCgroup() error {
	if iso.cfg.StateDir == "" {
		return nil
	}
	err := writeRecord(filepath.Join(iso.cfg.StateDir, cgroupRecord), iso.cg.dir.path+"\n")
	iso.recorded = err == nil
	return err
}

// writeRecord writes a record through a temporary file and a rename, so
// that a crash leaves the old record or the new one, never half of one.
func writeRecord(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write record: %w", err)
	}
	return nil
}

// killCgroupTree kills and removes the job cgroups under dir, and dir
// itself with removeTop. A dir that no longer exists is fine.
func (r *Recovery) killCgroupTree(dir string, removeTop bool) error {
	if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir {
		return fmt.Errorf("recorded cgroup %q is not a clean absolute path", dir)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); errors.Is(err, unix.ENOENT) {
		return nil
	} else if err != nil {
		return fmt.Errorf("recorded cgroup %s: %w", dir, err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("recorded cgroup %s is not in a cgroup v2 file system", dir)
	}
	rel, err := cgroupRel(dir)
	if err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil // another daemon's recovery removed it: see killCgroup
	} else if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.IsDir() || !jobCgroupName(e.Name()) {
			continue
		}
		if err := r.killCgroup(filepath.Join(dir, e.Name()), rel+"/"+e.Name()); err != nil {
			return err
		}
	}
	if removeTop {
		// A cgroup someone else made in it keeps it; what matters, that
		// no job of it runs, is done.
		unix.Rmdir(dir)
	}
	return nil
}

// killCgroup kills what the job cgroup at path holds, and removes it. A
// cgroup that is gone is no error: only an empty cgroup can be removed, so
// nothing of it runs. Two daemons on a host may recover the cgroups of a
// third that died (the orphans of their common parent) at the same time.
func (r *Recovery) killCgroup(path, rel string) error {
	d, err := openCgroup(path, rel, false)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	defer d.close()
	pids, err := d.procs()
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV) {
		return nil // removed since it was opened
	} else if err != nil {
		return err
	}
	if len(pids) > 0 {
		for _, pid := range pids {
			r.Killed = append(r.Killed, Leftover{Pid: pid, Command: commOf(pid), Cgroup: path})
		}
		if err := d.kill(d.has("cgroup.kill")); err != nil {
			return err
		}
		if err := d.waitEmpty(cgroupEmptyTimeout); err != nil {
			return err
		}
	}
	if err := removeCgroup(path); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	r.Cgroups++
	return nil
}

func commOf(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return strings.TrimSpace(string(b))
}

// groupRecord is a process group a job ran in.
type groupRecord struct {
	pgid, session int
	start         int64 // the leader's start time, in clock ticks after boot
	file          string
}

// recordGroup writes the record of the process group that the child pid
// leads, and returns its file.
func (iso *isolation) recordGroup(pid int) (string, error) {
	st, err := readProcStat(pid)
	if err != nil {
		return "", err
	}
	start, err := st.field(statStarttime)
	if err != nil {
		return "", err
	}
	file := filepath.Join(iso.cfg.StateDir, groupRecordPrefix+strconv.Itoa(pid))
	// Plain system calls: one record per job, on the job's start path.
	fd, err := unix.Open(file, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return "", &os.PathError{Op: "create", Path: file, Err: err}
	}
	_, err = unix.Write(fd, fmt.Appendf(nil, "%d %d %d\n", pid, start, iso.sid))
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		unix.Unlink(file)
		return "", &os.PathError{Op: "write", Path: file, Err: err}
	}
	return file, nil
}

// killGroups kills the members of the process groups recorded in dir, and
// removes the records.
func (r *Recovery) killGroups(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	live := map[int]groupRecord{}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), groupRecordPrefix) {
			continue
		}
		file := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		var g groupRecord
		if _, err := fmt.Sscanf(string(b), "%d %d %d", &g.pgid, &g.start, &g.session); err != nil || g.pgid <= 1 {
			// A record cut short by a crash: its group is unknown.
			os.Remove(file)
			continue
		}
		g.file = file
		r.Groups++
		if st, err := readProcStat(g.pgid); err == nil {
			if start, err := st.field(statStarttime); err == nil && start != g.start {
				r.Stale++ // the number is another process's now
				os.Remove(file)
				continue
			}
		}
		live[g.pgid] = g
	}
	if len(live) == 0 {
		return nil
	}
	killed := map[int]bool{}
	// Members may fork while they are killed: scan again until a scan
	// finds none.
	for round := 0; ; round++ {
		found := 0
		for _, pid := range allPids() {
			g, ok := memberOf(pid, live)
			if !ok {
				continue
			}
			found++
			if killMember(pid, g) && !killed[pid] {
				killed[pid] = true
				r.Killed = append(r.Killed, Leftover{Pid: pid, Command: commOf(pid), Pgid: g.pgid})
			}
		}
		if found == 0 {
			break
		}
		if round == 100 {
			return fmt.Errorf("the processes of the recorded groups outran %d rounds of kills", round)
		}
		time.Sleep(10 * time.Millisecond)
	}
	emptied := map[int]bool{}
	for _, l := range r.Killed {
		emptied[l.Pgid] = true
	}
	for _, g := range live {
		if !emptied[g.pgid] {
			r.Stale++
		}
		os.Remove(g.file)
	}
	return nil
}

// memberOf returns the record of the group pid is a live member of.
func memberOf(pid int, groups map[int]groupRecord) (groupRecord, bool) {
	st, err := readProcStat(pid)
	if err != nil || st.zombie() {
		return groupRecord{}, false
	}
	pgrp, err1 := st.field(statPgrp)
	sid, err2 := st.field(statSession)
	start, err3 := st.field(statStarttime)
	if err1 != nil || err2 != nil || err3 != nil {
		return groupRecord{}, false
	}
	g, ok := groups[int(pgrp)]
	if !ok || int(sid) != g.session || start < g.start {
		return groupRecord{}, false
	}
	return g, true
}

// killMember kills pid through a pidfd, if it is still a member of g once
// the pidfd pins it. It reports whether it sent the signal.
func killMember(pid int, g groupRecord) bool {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false
	}
	defer unix.Close(pfd)
	if _, ok := memberOf(pid, map[int]groupRecord{g.pgid: g}); !ok {
		return false
	}
	return unix.PidfdSendSignal(pfd, unix.SIGKILL, nil, 0) == nil
}

// allPids lists the processes in /proc.
func allPids() []int {
	ents, _ := os.ReadDir("/proc")
	pids := make([]int, 0, len(ents))
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}
