package pool

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A job that runs as the daemon's user may make cgroups below its own;
// closing the pool removes them with the pool's cgroup, and the slot's.
func TestCloseRemovesCgroupsJobsMade(t *testing.T) {
	needCgroups(t)
	p, err := New(Config{Max: 1, Sink: newLineRouter(), Isolation: Isolation{Cgroups: CgroupRequire, CgroupName: testCgroupName(t)}})
	if err != nil {
		t.Fatal(err)
	}
	dir := p.iso.cg.dir.path
	// The job finds its cgroup from /proc/self/cgroup and the cgroup2 mount.
	script := `m=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts) &&
		own=$m$(sed -n 's/^0:://p' /proc/self/cgroup) &&
		mkdir "$own/made-by-job" "$own/made-by-job/deeper" && echo "$own"`
	c := mustStart(t, p, &Spec{Path: "/bin/sh", Args: []string{"sh", "-c", script}})
	<-c.Done()
	if e := c.Exit(); !e.Success() {
		t.Fatalf("the job: %s\n%s", e, e.Output)
	}
	own := strings.TrimSpace(string(c.Exit().Output))
	if _, err := os.Stat(filepath.Join(own, "made-by-job", "deeper")); err != nil || !strings.HasPrefix(own, dir+"/") {
		t.Fatalf("the job's cgroup %q, in the pool's %s: %v", own, dir, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Stop(ctx, Graceful, StopOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Close, the pool's cgroup %s: %v (want it removed, with what the job made below)", dir, err)
	}
}
