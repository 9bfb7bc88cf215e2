package pool

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// cgroupPool is the pool's cgroup, which holds one cgroup per job (or per
// slot), and nothing else: it never holds a process itself, so that its
// children can have controllers.
type cgroupPool struct {
	dir     *cgroupDir
	parent  *cgroupDir // where dir is; nil at the top of the hierarchy
	useKill bool       // cgroup.kill exists
	perSlot bool
	limits  []limitFile
	enabled []string // controllers enabled for the jobs
	// orphans are the cgroups of pools whose process is gone, found
	// beside this pool's default name at the top of the hierarchy.
	orphans []string

	mu    sync.Mutex
	seq   int
	slots []*jobCgroup // per slot: a clean cgroup to reuse, or nil
	kept  []string     // cgroups left holding processes, removed once empty
}

// jobCgroup is the cgroup of one job, or of one slot's jobs in turn.
type jobCgroup struct {
	*cgroupDir
	slot int     // -1 for a per-job cgroup
	base cpuStat // cpu.stat when the current job started
	peak int     // memory.peak opened and reset for this job, or -1
	// killed is set once cgroup.kill was written: the kernel (6.18 at
	// least) then kills every process cloned into the cgroup afterwards,
	// so it cannot be reused.
	killed bool
	// empty is set when kill found the cgroup empty: nothing to wait for.
	empty bool
	// cgroup.events and cpu.stat, opened once and read with pread for
	// each job of a reused cgroup: an open of a cgroup file costs more
	// than its read. -1 until opened.
	events, stat int
	noPeak       bool // memory.peak is missing: not looked for again
}

// kill kills what is in the job's cgroup. One that holds nothing is left
// alone, so that a slot's can be reused.
func (j *jobCgroup) kill(useKill bool) error {
	if populated, err := j.populated(); err == nil && !populated {
		j.empty = true
		return nil
	}
	if useKill {
		j.killed = true
	}
	return j.cgroupDir.kill(useKill)
}

// populated reads cgroup.events through the descriptor kept open.
func (j *jobCgroup) populated() (bool, error) {
	b, err := j.pread(&j.events, "cgroup.events")
	if err != nil {
		return false, err
	}
	return eventsPopulated(b), nil
}

// cpuStat reads cpu.stat through the descriptor kept open.
func (j *jobCgroup) cpuStat() (cpuStat, error) {
	b, err := j.pread(&j.stat, "cpu.stat")
	if err != nil {
		return cpuStat{}, err
	}
	return parseCPUStat(b)
}

// pread reads the whole of the cgroup's file name through *fd, which it
// opens the first time. The files it reads are short.
func (j *jobCgroup) pread(fd *int, name string) ([]byte, error) {
	if *fd < 0 {
		f, err := unix.Openat(j.fd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: filepath.Join(j.path, name), Err: err}
		}
		*fd = f
	}
	var buf [512]byte
	for {
		n, err := unix.Pread(*fd, buf[:], 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: filepath.Join(j.path, name), Err: err}
		}
		return buf[:n], nil
	}
}

// close closes the cgroup's descriptors.
func (j *jobCgroup) close() {
	for _, fd := range []*int{&j.events, &j.stat, &j.peak} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
	j.cgroupDir.close()
}

// poolSeq numbers the pools of this process, for default names.
var poolSeq atomic.Int64

// validCgroupName reports whether name is one path element of plain
// characters, ^[A-Za-z0-9_][A-Za-z0-9_.@:-]*$: what CgroupName may be,
// less the names systemd or this package gives a meaning to. (Not a
// regexp: the package would then initialise regexp in every program and
// re-executed child that links it.)
func validCgroupName(name string) bool {
	for i, c := range []byte(name) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_':
		case i > 0 && (c == '.' || c == '@' || c == ':' || c == '-'):
		default:
			return false
		}
	}
	return name != ""
}

// newCgroupPool finds where this process may make cgroups, creates the
// pool's, and checks that the limits' controllers can be had. It returns
// the reason when per-job cgroups cannot be used.
func newCgroupPool(cfg Isolation, limits []limitFile) (cg *cgroupPool, err error) {
	if _, err := SettleCgroup(); err != nil {
		return nil, err
	}
	pl := place.p
	name := cfg.CgroupName
	switch {
	case name == "" && pl.atRoot:
		name = fmt.Sprintf("%s-%d-%d", programName(), os.Getpid(), poolSeq.Add(1))
		defer func() {
			if cg != nil {
				cg.orphans = orphanPools(pl.fs.dir(pl.parent))
			}
		}()
	case name == "":
		name = "jobs"
	case !validCgroupName(name) || name == leafName || strings.HasPrefix(name, "cgroup.") ||
		strings.HasSuffix(name, ".slice") || strings.HasSuffix(name, ".service") || strings.HasSuffix(name, ".scope"):
		return nil, fmt.Errorf("cgroup name %q: want a plain name, not %s, a .slice/.service/.scope or a cgroup.* file", name, leafName)
	}
	rel := path.Join(pl.parent, name)
	dirPath := pl.fs.dir(rel)
	if err := os.Mkdir(dirPath, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("create the pool's cgroup: %w (this needs root, or a cgroup delegated to uid %d)", err, os.Geteuid())
		}
		return nil, fmt.Errorf("create the pool's cgroup: %w", err)
	}
	if err := claim("cgroup", dirPath); err != nil {
		return nil, err
	}
	dir, err := openCgroup(dirPath, rel, false)
	if err != nil {
		claims.Delete(dirPath)
		return nil, err
	}
	cg = &cgroupPool{dir: dir, perSlot: !cfg.PerJobCgroups, limits: limits}
	if !pl.atRoot {
		if cg.parent, err = openCgroup(pl.fs.dir(pl.parent), pl.parent, false); err != nil {
			cg.close()
			return nil, err
		}
	}
	// Needs Linux 5.14; older kernels get the freeze-and-kill loop.
	cg.useKill = dir.has("cgroup.kill")
	if err := cg.probe(); err != nil {
		cg.close()
		return nil, err
	}
	if err := cg.checkControllers(); err != nil {
		cg.close()
		return nil, err
	}
	return cg, nil
}

// orphanPools lists the cgroups in dir that pools of this program made
// under their default names (program-pid-n) in processes that are gone:
// what a crashed daemon without a state directory left.
func orphanPools(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	prefix := programName() + "-"
	var found []string
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || !e.IsDir() {
			continue
		}
		pidStr, n, ok := strings.Cut(rest, "-")
		pid, err1 := strconv.Atoi(pidStr)
		_, err2 := strconv.Atoi(n)
		if !ok || err1 != nil || err2 != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		// EPERM: alive, someone else's.
		if err := unix.Kill(pid, 0); err == unix.ESRCH {
			found = append(found, filepath.Join(dir, e.Name()))
		}
	}
	return found
}

// programName is this program's file name, for a default cgroup name.
func programName() string {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	name := strings.Map(func(r rune) rune {
		if r < 128 && (r == '.' || r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return r
		}
		return '_'
	}, filepath.Base(exe))
	return strings.TrimLeft(name, ".")
}

// wantedControllers returns the controllers the limits need, and those
// that are worth enabling without limits: memory and pids, for the peaks.
func (cg *cgroupPool) wantedControllers() (need, want map[string]bool) {
	need, want = map[string]bool{}, map[string]bool{"memory": true, "pids": true}
	for _, l := range cg.limits {
		need[l.controller] = true
		want[l.controller] = true
	}
	return need, want
}

// checkControllers fails when a controller the limits need cannot be
// enabled for the jobs: the parent does not offer it.
func (cg *cgroupPool) checkControllers() error {
	need, _ := cg.wantedControllers()
	if len(need) == 0 {
		return nil
	}
	// Under a parent of ours, the pool's cgroup can have whatever the
	// parent has; at the top, what the host enabled for the root's
	// children.
	from := cg.dir
	if cg.parent != nil {
		from = cg.parent
	}
	avail, err := from.controllers("cgroup.controllers")
	if err != nil {
		return err
	}
	v1 := controllersV1()
	for _, l := range cg.limits {
		if avail[l.controller] {
			continue
		}
		why := "the cgroup v2 hierarchy does not offer it"
		if v1[l.controller] {
			why = "it is bound to a cgroup v1 hierarchy on this host"
		}
		return fmt.Errorf("job limit %s needs the %s controller, which cgroup %s cannot give its jobs: %s",
			l.name, l.controller, from.path, why)
	}
	return nil
}

// enableControllers enables the wanted controllers for the jobs: in the
// parent's cgroup.subtree_control (unless the parent is the host's top,
// whose controllers are the host's business), then in the pool's. It runs
// after the recovery, since the pool's cgroup must hold no process.
func (cg *cgroupPool) enableControllers() error {
	need, want := cg.wantedControllers()
	names := make([]string, 0, len(want))
	for c := range want {
		names = append(names, c)
	}
	sort.Strings(names)
	for _, d := range []*cgroupDir{cg.parent, cg.dir} {
		if d == nil {
			continue
		}
		avail, err := d.controllers("cgroup.controllers")
		if err != nil {
			return err
		}
		on, err := d.controllers("cgroup.subtree_control")
		if err != nil {
			return err
		}
		for _, c := range names {
			if on[c] || !avail[c] {
				continue
			}
			if err := d.write("cgroup.subtree_control", "+"+c); err != nil && need[c] {
				if errors.Is(err, unix.EBUSY) {
					return fmt.Errorf("enable the %s controller for the jobs: %w (cgroup %s holds processes: settle the daemon into its leaf cgroup before it starts any)", c, err, d.path)
				}
				return fmt.Errorf("enable the %s controller for the jobs: %w", c, err)
			}
		}
	}
	on, err := cg.dir.controllers("cgroup.subtree_control")
	if err != nil {
		return err
	}
	for c := range need {
		if !on[c] {
			return fmt.Errorf("the %s controller is not enabled in %s/cgroup.subtree_control", c, cg.dir.path)
		}
	}
	cg.enabled = cg.enabled[:0]
	for c := range on {
		cg.enabled = append(cg.enabled, c)
	}
	sort.Strings(cg.enabled)
	return nil
}

// acquire returns the cgroup for a job starting in slot: the slot's own
// clean one if it has one, else a new one with the limits written.
func (cg *cgroupPool) acquire(slot int) (*jobCgroup, error) {
	cg.mu.Lock()
	if cg.perSlot && slot < len(cg.slots) && cg.slots[slot] != nil {
		j := cg.slots[slot]
		cg.slots[slot] = nil
		cg.mu.Unlock()
		j.empty = false
		j.resetPeak()
		return j, nil
	}
	cg.mu.Unlock()
	for try := 0; ; try++ {
		cg.mu.Lock()
		cg.seq++
		name := "job-" + strconv.Itoa(cg.seq)
		if cg.perSlot {
			name = "slot-" + strconv.Itoa(slot)
			if try > 0 {
				// The slot's first cgroup kept leftovers.
				name += "-" + strconv.Itoa(cg.seq)
			}
		}
		cg.mu.Unlock()
		d, err := openCgroup(filepath.Join(cg.dir.path, name), cg.dir.rel+"/"+name, true)
		if errors.Is(err, unix.EEXIST) && try < 100 {
			continue // left by a job with leftovers, or by a previous run
		}
		if err != nil {
			return nil, err
		}
		if err := writeLimits(d, cg.limits); err != nil {
			d.close()
			unix.Rmdir(d.path)
			return nil, err
		}
		j := &jobCgroup{cgroupDir: d, slot: -1, peak: -1, events: -1, stat: -1}
		if cg.perSlot {
			j.slot = slot
			j.resetPeak()
		}
		return j, nil
	}
}

// resetPeak opens memory.peak for the next job of a reused cgroup, and
// resets it for that descriptor (Linux 6.12); without that, the job's
// memory peak is not measured.
func (j *jobCgroup) resetPeak() {
	j.peak = -1
	if j.noPeak {
		return
	}
	fd, err := unix.Openat(j.fd, "memory.peak", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		// Without the memory controller there is none, and it does not
		// come back for this cgroup (controllers are enabled at New).
		j.noPeak = err == unix.ENOENT
		return
	}
	if _, err := unix.Write(fd, []byte("reset\n")); err != nil {
		unix.Close(fd)
		return
	}
	j.peak = fd
}

// account fills in what the cgroup knows of the job that just ended.
func (j *jobCgroup) account(e *Exit) {
	if st, err := j.cpuStat(); err == nil {
		e.UserCPU, e.SysCPU, e.CPUFrom = st.user-j.base.user, st.system-j.base.system, FromCgroup
		j.base = st
	}
	switch {
	case j.peak >= 0:
		if b, err := readAllFD(j.peak, "memory.peak"); err == nil {
			if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
				e.MemoryPeak = n
			}
		}
		unix.Close(j.peak)
		j.peak = -1
	case j.slot < 0 && j.has("memory.peak"):
		if n, err := j.readInt("memory.peak"); err == nil {
			e.MemoryPeak = n
		}
	}
	if j.slot < 0 && j.has("pids.peak") {
		if n, err := j.readInt("pids.peak"); err == nil {
			e.PidsPeak = n
		}
	}
}

// release takes back a job's cgroup: an empty one is removed, or kept for
// the slot's next job; one that still holds processes is left in place
// until they are gone.
func (cg *cgroupPool) release(j *jobCgroup, empty bool) {
	if j.peak >= 0 {
		unix.Close(j.peak)
		j.peak = -1
	}
	cg.mu.Lock()
	defer cg.mu.Unlock()
	if empty && j.slot >= 0 && !j.killed {
		for len(cg.slots) <= j.slot {
			cg.slots = append(cg.slots, nil)
		}
		if cg.slots[j.slot] == nil {
			cg.slots[j.slot] = j
			cg.sweepLocked()
			return
		}
	}
	j.close()
	if !empty || removeCgroup(j.path) != nil {
		cg.kept = append(cg.kept, j.path)
	}
	cg.sweepLocked()
}

// sweepLocked removes the kept cgroups that have emptied.
func (cg *cgroupPool) sweepLocked() {
	kept := cg.kept[:0]
	for _, p := range cg.kept {
		b, err := os.ReadFile(filepath.Join(p, "cgroup.events"))
		if err == nil && eventsPopulated(b) || err == nil && removeCgroup(p) != nil {
			kept = append(kept, p)
		}
	}
	cg.kept = kept
}

// close removes the slots' cgroups and the pool's, which fails while a
// cgroup with leftovers is still there.
func (cg *cgroupPool) close() error {
	cg.mu.Lock()
	for i, j := range cg.slots {
		if j != nil {
			j.close()
			if removeCgroup(j.path) != nil {
				cg.kept = append(cg.kept, j.path)
			}
			cg.slots[i] = nil
		}
	}
	cg.sweepLocked()
	cg.mu.Unlock()
	if cg.parent != nil {
		cg.parent.close()
	}
	cg.dir.close()
	err := unix.Rmdir(cg.dir.path)
	if err == unix.ENOENT {
		err = nil
	}
	claims.Delete(cg.dir.path)
	return err
}

// probe checks that a child can be started into a cgroup: that needs
// clone3, which a seccomp filter may refuse with ENOSYS (systemd's
// RestrictNamespaces= does, since it cannot see clone3's flags). It starts
// "/", which the kernel refuses to execute: EACCES comes after the clone,
// ENOSYS or EPERM from the clone itself.
func (cg *cgroupPool) probe() error {
	name := "probe-" + strconv.Itoa(os.Getpid())
	d, err := openCgroup(filepath.Join(cg.dir.path, name), cg.dir.rel+"/"+name, true)
	if err != nil {
		return err
	}
	defer func() {
		d.close()
		removeCgroup(d.path)
	}()
	attr := &os.ProcAttr{Sys: &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: d.fd}}
	p, err := os.StartProcess("/", []string{"clone3-probe"}, attr)
	switch {
	case err == nil:
		p.Kill()
		p.Wait()
		return nil
	case errors.Is(err, unix.EACCES):
		return nil
	case errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM):
		return fmt.Errorf("cannot start a process into a cgroup: clone3 is refused (a seccomp filter, such as systemd's RestrictNamespaces=, or a kernel before 5.7): %w", err)
	}
	return fmt.Errorf("cannot start a process into a cgroup: %w", err)
}
