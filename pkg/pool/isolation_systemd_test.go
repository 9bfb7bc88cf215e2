package pool

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The pool as the main process of a systemd unit, in the real systemd 252
// of the shared tools' testbed: the unit is dist/systemd/jobdaemon.service
// with its hardening and Delegate=yes as shipped, its user nobody, and the
// test binary (isoUnitDaemon) as its program.

// testbedScript finds systemd-testbed.sh: $JOBDAEMON_TESTBED, or the
// shared tools next to the repository.
func testbedScript(t *testing.T) string {
	t.Helper()
	for _, c := range []string{os.Getenv("JOBDAEMON_TESTBED"), "../../../shared/tools/systemd-testbed.sh", "/work/shared/tools/systemd-testbed.sh"} {
		if c == "" {
			continue
		}
		if _, err := os.Stat(c); err == nil {
			abs, _ := filepath.Abs(c)
			return abs
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("systemd-testbed.sh not found, and CI=true: set JOBDAEMON_TESTBED")
	}
	t.Skip("systemd-testbed.sh not found (set JOBDAEMON_TESTBED)")
	return ""
}

type testbed struct {
	t      *testing.T
	script string
}

// run runs a command inside the testbed; it returns the exit code and the
// output.
func (b testbed) run(args ...string) (int, string) {
	b.t.Helper()
	out, err := exec.Command(b.script, append([]string{"exec"}, args...)...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		b.t.Fatalf("testbed exec %v: %v", args, err)
	}
	return 0, string(out)
}

func (b testbed) must(args ...string) string {
	b.t.Helper()
	code, out := b.run(args...)
	if code != 0 {
		b.t.Fatalf("%v: exit %d\n%s", args, code, out)
	}
	return out
}

// testUnit turns dist/systemd/jobdaemon.service into the unit of the test:
// the test binary as the program, user nobody, directories of its own,
// nothing that needs the socket unit, no restart; the hardening and
// Delegate= as they are.
func testUnit(t *testing.T, id, bin string, env ...string) string {
	t.Helper()
	dist, err := os.ReadFile("../../dist/systemd/jobdaemon.service")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(dist), "\nDelegate=yes\n") {
		t.Fatal("dist/systemd/jobdaemon.service has no Delegate=yes")
	}
	var b strings.Builder
	section := ""
	sc := bufio.NewScanner(strings.NewReader(string(dist)))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "[") {
			section = line
		}
		key, _, _ := strings.Cut(line, "=")
		switch {
		case section == "[Install]", key == "Wants", key == "After", key == "NotifyAccess",
			key == "ExecReload", key == "WatchdogSec", key == "RestartPreventExitStatus", key == "RuntimeDirectoryPreserve":
			continue
		case key == "Type":
			line = "Type=exec"
		case key == "ExecStart":
			line = "ExecStart=" + bin
			b.WriteString(fmt.Sprintf("Environment=%s=%s POOLTEST_OUT=/var/lib/%s-state GORACE=atexit_sleep_ms=0 %s\n",
				helperEnv, isoUnit, id, strings.Join(env, " ")))
		case key == "Restart":
			line = "Restart=no"
		case key == "User":
			line = "User=nobody"
		case key == "Group":
			line = "Group=nogroup"
		case key == "RuntimeDirectory":
			line = "RuntimeDirectory=" + id
		case key == "StateDirectory":
			line = "StateDirectory=" + id + "-state"
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// readOut waits for the file name that the unit's daemon writes, and
// decodes it into v.
func readOut(t *testing.T, b testbed, unit, dir, name string, v any) {
	t.Helper()
	var data []byte
	if !eventually(90*time.Second, func() bool {
		var err error
		data, err = os.ReadFile(filepath.Join(dir, name))
		return err == nil
	}) {
		_, journal := b.run("journalctl", "-u", unit, "--no-pager", "-n", "40")
		t.Fatalf("the unit wrote no %s\n%s", name, journal)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, data)
	}
}

// installUnit writes the test's unit, named after id, into the testbed,
// and removes it and its directories at the end of the test.
func installUnit(t *testing.T, b testbed, id string, edit func(string) string, env ...string) (unit, out string) {
	t.Helper()
	unit = id + ".service"
	work, out := "/var/lib/"+id, "/var/lib/"+id+"-state"
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.run("systemctl", "stop", unit)
		b.run("rm", "-f", "/run/systemd/system/"+unit)
		b.run("systemctl", "daemon-reload")
		os.RemoveAll(work)
		os.RemoveAll(out)
	})
	bin := filepath.Join(work, "pool.test")
	copyFile(t, bin)
	content := testUnit(t, id, bin, env...)
	if edit != nil {
		content = edit(content)
	}
	if err := os.WriteFile(filepath.Join(work, unit), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	b.must("cp", filepath.Join(work, unit), "/run/systemd/system/"+unit)
	b.must("systemctl", "daemon-reload")
	return unit, out
}

// Under systemd with the shipped unit, each job gets a cgroup of its own
// beside the daemon's leaf, nothing of a job outlives it, and at
// "systemctl stop" the daemon leaves systemd nothing to kill.
func TestIsolationUnderSystemd(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the systemd testbed needs root, and CI=true")
		}
		t.Skip("the systemd testbed needs root")
	}
	b := testbed{t: t, script: testbedScript(t)}
	// Shared with other tests: brought up if it is down, and then taken
	// down again.
	if out, err := exec.Command(b.script, "status").CombinedOutput(); err != nil || !strings.Contains(string(out), "up") {
		if out, err := exec.Command(b.script, "up").CombinedOutput(); err != nil {
			t.Fatalf("testbed up: %v\n%s", err, out)
		}
		t.Cleanup(func() { exec.Command(b.script, "down").Run() })
	}
	unit, out := installUnit(t, b, fmt.Sprintf("pooltest-%d", os.Getpid()), nil)
	b.must("systemctl", "start", unit)

	var iso struct {
		Status IsolationStatus
		Leaf   string
		Error  string
	}
	readOut(t, b, unit, out, "isolation.json", &iso)
	if iso.Error != "" {
		t.Fatalf("the pool under systemd: %s", iso.Error)
	}
	unitCgroup := "/system.slice/" + unit
	if !iso.Status.Cgroups || !strings.HasSuffix(iso.Leaf, unitCgroup+"/supervisor") ||
		!strings.HasSuffix(iso.Status.Cgroup, unitCgroup+"/jobs") {
		t.Fatalf("under systemd: %+v", iso)
	}
	t.Logf("under systemd: %s; the daemon in %s", iso.Status, iso.Leaf)

	var results []scenarioResult
	readOut(t, b, unit, out, "scenarios.json", &results)
	if len(results) != len(scenarios) {
		t.Fatalf("%d results for %d scenarios", len(results), len(scenarios))
	}
	for i, res := range results {
		checkScenario(t, scenarios[i], res, true, true)
	}

	var running int
	readOut(t, b, unit, out, "running", &running)
	start := time.Now()
	b.must("systemctl", "stop", unit)
	t.Logf("systemctl stop took %v with %d processes of jobs running", time.Since(start).Round(time.Millisecond), running)
	var rep unitStopReport
	readOut(t, b, unit, out, "stopped.json", &rep)
	if rep.Err != "" || len(rep.Marked) > 0 || len(rep.Cgroups) > 0 || len(rep.LeafPids) != 1 {
		t.Errorf("when the daemon exited: %+v; want no job's process, no cgroup but its leaf, itself alone in it", rep)
	}
	if res := strings.TrimSpace(b.must("systemctl", "show", "-p", "Result", "--value", unit)); res != "success" {
		t.Errorf("the unit's result: %s", res)
	}
	journal := b.must("journalctl", "-u", unit, "--no-pager", "-o", "cat")
	for _, line := range strings.Split(journal, "\n") {
		if strings.Contains(line, "Killing process") || strings.Contains(line, "remaining process") {
			t.Errorf("systemd had something left to kill: %s", line)
		}
	}
	if !strings.Contains(journal, "Deactivated successfully") {
		t.Errorf("no \"Deactivated successfully\" in the journal:\n%s", journal)
	}

	// The check can fail: a daemon that exits at TERM without stopping
	// its jobs leaves systemd processes to kill, and the journal says so.
	t.Run("control", func(t *testing.T) {
		unit, out := installUnit(t, b, fmt.Sprintf("pooltest-%d-control", os.Getpid()), nil, "POOLTEST_CONTROL=1")
		b.must("systemctl", "start", unit)
		var running int
		readOut(t, b, unit, out, "running", &running)
		b.must("systemctl", "stop", unit)
		journal := b.must("journalctl", "-u", unit, "--no-pager", "-o", "cat")
		if !strings.Contains(journal, "Killing process") {
			t.Errorf("systemd killed nothing after a daemon that left %d processes:\n%s", running, journal)
		}
	})

	// Without Delegate=yes, the pool says why it cannot have cgroups.
	t.Run("no delegation", func(t *testing.T) {
		unit, out := installUnit(t, b, fmt.Sprintf("pooltest-%d-nodelegate", os.Getpid()), func(s string) string {
			return strings.Replace(s, "\nDelegate=yes\n", "\nDelegate=no\n", 1)
		})
		b.run("systemctl", "start", unit) // fails: the helper requires cgroups
		var iso struct{ Error string }
		readOut(t, b, unit, out, "isolation.json", &iso)
		if !strings.Contains(iso.Error, "without delegation (Delegate=yes)") {
			t.Errorf("without Delegate=yes: %q", iso.Error)
		}
		b.run("systemctl", "reset-failed", unit)
	})
}
