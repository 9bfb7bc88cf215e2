package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The systemd tests run the dist/ units in a real systemd 252, booted as
// PID 1 of private namespaces by the shared tools' systemd-testbed.sh.
// .ci/run brings it up around the tests; run by hand, the test brings it
// up itself and takes it down at the end.
//
// The service's files live under /var/lib, which the testbed shares with
// the host: the unit's PrivateTmp= hides the host's /tmp from it.
const (
	sdWork  = "/var/lib/jobdaemon-it"       // binary, config, job script
	sdState = "/var/lib/jobdaemon-it-state" // the unit's StateDirectory: the spool
)

// testbed finds systemd-testbed.sh: $JOBDAEMON_TESTBED, or the shared
// tools next to the repository.
func testbed(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("JOBDAEMON_TESTBED"), "../../../shared/tools/systemd-testbed.sh", "/work/shared/tools/systemd-testbed.sh"}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if _, err := os.Stat(c); err == nil {
			abs, _ := filepath.Abs(c)
			return abs
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("systemd-testbed.sh not found: set JOBDAEMON_TESTBED")
	}
	t.Skip("systemd-testbed.sh not found (set JOBDAEMON_TESTBED)")
	return ""
}

// sdJobScript is the job, which runs as the jobs' own user and reads its
// file on standard input: "ok" prints, "sleep" runs until TERM and says
// that it got it.
const sdJobScript = `#!/bin/sh
read -r what arg || true
case "$what" in
ok) echo "ok $JOB_ID attempt $JOB_ATTEMPT as $(id -un)" ;;
sleep) trap 'echo "got TERM"; exit 0' TERM; sleep 300 & wait ;;
setsid) setsid sh -c "sleep 3501 &"; echo "left a setsid sleep" ;;
*) echo "unknown job $what" >&2; exit 64 ;;
esac
`

type sdBed struct {
	t      *testing.T
	script string
}

// exec runs a command inside the testbed and returns its exit code and
// output.
func (b *sdBed) exec(args ...string) (int, string) {
	b.t.Helper()
	out, err := exec.Command(b.script, append([]string{"exec"}, args...)...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		b.t.Fatalf("testbed exec %v: %v", args, err)
	}
	return 0, string(out)
}

// must runs a command inside the testbed that must succeed.
func (b *sdBed) must(args ...string) string {
	b.t.Helper()
	code, out := b.exec(args...)
	if code != 0 {
		b.t.Fatalf("%v: exit %d\n%s", args, code, out)
	}
	return out
}

func (b *sdBed) show(prop string) string {
	b.t.Helper()
	return strings.TrimSpace(b.must("systemctl", "show", "-p", prop, "--value", "jobdaemon.service"))
}

func (b *sdBed) ctl(args ...string) (int, string) {
	b.t.Helper()
	return b.exec(append([]string{sdWork + "/jobdaemon", args[0], "--config", sdWork + "/config.toml"}, args[1:]...)...)
}

func (b *sdBed) status() statusReply {
	b.t.Helper()
	code, out := b.ctl("status", "--json")
	return decodeStatus(b.t, code, out, b.journal)
}

func (b *sdBed) journal() string {
	_, out := b.exec("journalctl", "-u", "jobdaemon", "--no-pager", "-n", "60")
	return out
}

// entries returns the journal entries of the unit that match the filters.
func (b *sdBed) entries(filters ...string) []map[string]string {
	b.t.Helper()
	out := b.must(append([]string{"journalctl", "-u", "jobdaemon", "-o", "json", "--no-pager"}, filters...)...)
	var es []map[string]string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var raw map[string]any
		if json.Unmarshal(sc.Bytes(), &raw) != nil {
			continue
		}
		e := map[string]string{}
		for k, v := range raw {
			e[k] = fmt.Sprint(v)
		}
		es = append(es, e)
	}
	return es
}

func (b *sdBed) waitFor(what string, cond func() bool) {
	b.t.Helper()
	pollUntil(b.t, what, 30*time.Second, cond, b.journal)
}

// installUnits writes the dist/ units into the testbed, changed only where
// a test must: the paths of the binary and the config, the user (nobody,
// since the test does not create a jobdaemon user on the shared /etc), and
// the state directory.
func (b *sdBed) installUnits() {
	b.t.Helper()
	svc, err := os.ReadFile("../../dist/systemd/jobdaemon.service")
	if err != nil {
		b.t.Fatal(err)
	}
	sock, err := os.ReadFile("../../dist/systemd/jobdaemon.socket")
	if err != nil {
		b.t.Fatal(err)
	}
	s := strings.NewReplacer(
		"/usr/bin/jobdaemon", sdWork+"/jobdaemon",
		"/etc/jobdaemon/config.toml", sdWork+"/config.toml",
		"\nUser=jobdaemon", "\nUser=nobody",
		"\nGroup=jobdaemon", "\nGroup=nogroup",
		"\nStateDirectory=jobdaemon", "\nStateDirectory="+filepath.Base(sdState),
	).Replace(string(svc))
	k := strings.NewReplacer("\nSocketUser=jobdaemon", "\nSocketUser=nobody", "\nSocketGroup=jobdaemon", "\nSocketGroup=nogroup").Replace(string(sock))
	for name, content := range map[string]string{"jobdaemon.service": s, "jobdaemon.socket": k} {
		if !strings.Contains(content, sdWork) && name == "jobdaemon.service" {
			b.t.Fatalf("the unit's paths were not replaced:\n%s", content)
		}
		tmp := filepath.Join(sdWork, name)
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			b.t.Fatal(err)
		}
		b.must("cp", tmp, "/run/systemd/system/"+name)
	}
	b.must("systemctl", "daemon-reload")
}

// writeConfig writes dist/config.toml with the test's paths and user,
// and edit applied.
func writeSdConfig(t *testing.T, edit func(string) string) {
	t.Helper()
	cfg, err := os.ReadFile("../../dist/config.toml")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.NewReplacer(
		`user = "jobdaemon"`, `user = "nobody"`,
		`group = "jobdaemon"`, `group = "nogroup"`,
		// The jobs' own user: another one that the shared /etc has.
		`user = "jobdaemon-job"`, `user = "daemon"`,
		`group = "jobdaemon-job"`, `group = "daemon"`,
		"/usr/libexec/jobdaemon/example-job", sdWork+"/job.sh",
		"/var/lib/jobdaemon/spool", sdState+"/spool",
	).Replace(string(cfg))
	if edit != nil {
		s = edit(s)
	}
	if err := os.WriteFile(filepath.Join(sdWork, "config.toml"), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSystemd(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the systemd testbed needs root")
		}
		t.Skip("the systemd testbed needs root")
	}
	b := &sdBed{t: t, script: testbed(t)}
	if out, err := exec.Command(b.script, "status").CombinedOutput(); err != nil || !strings.Contains(string(out), "up") {
		if out, err := exec.Command(b.script, "up").CombinedOutput(); err != nil {
			t.Fatalf("testbed up: %v\n%s", err, out)
		}
		t.Cleanup(func() { exec.Command(b.script, "down").Run() })
	}
	os.RemoveAll(sdWork)
	os.RemoveAll(sdState)
	if err := os.MkdirAll(sdWork, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.exec("systemctl", "stop", "jobdaemon.socket", "jobdaemon.service")
		b.exec("rm", "-rf", "/run/systemd/system/jobdaemon.service", "/run/systemd/system/jobdaemon.socket",
			"/run/systemd/system/jobdaemon.service.d")
		b.exec("systemctl", "daemon-reload")
		os.RemoveAll(sdWork)
		os.RemoveAll(sdState)
	})
	// The binary is copied, not linked: the unit's user must read it.
	data, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(sdWork, "jobdaemon"), data, 0o755)
	os.WriteFile(filepath.Join(sdWork, "job.sh"), []byte(sdJobScript), 0o755)
	writeSdConfig(t, func(s string) string { return strings.Replace(s, "max_children = 4", "max_children = 2", 1) })
	b.installUnits()

	// systemctl start returns once the daemon said READY=1, which it
	// says only when it can answer: status works at once, and the journal
	// has "ready" before systemd's "Started".
	b.must("systemctl", "start", "jobdaemon.service")
	s := b.status()
	if s.State != "running" || s.Manager != "systemd" || s.MaxChildren != 2 {
		t.Fatalf("right after systemctl start: %+v", s)
	}
	var readyAt, startedAt int = -1, -1
	for i, e := range b.entries() {
		if e["SYSLOG_IDENTIFIER"] == "jobdaemon" && e["MESSAGE"] == "ready" && readyAt < 0 {
			readyAt = i
		}
		if e["SYSLOG_IDENTIFIER"] == "systemd" && strings.HasPrefix(e["MESSAGE"], "Started jobdaemon.service") && startedAt < 0 {
			startedAt = i
		}
	}
	if readyAt < 0 || startedAt < 0 || readyAt > startedAt {
		t.Errorf("\"ready\" at entry %d, systemd's \"Started\" at %d; want ready first\n%s", readyAt, startedAt, b.journal())
	}
	if got := b.show("StatusText"); !strings.Contains(got, "0/2 busy") {
		t.Errorf("StatusText = %q", got)
	}

	t.Run("reload", func(t *testing.T) {
		writeSdConfig(t, func(s string) string { return strings.Replace(s, "max_children = 4", "max_children = 3", 1) })
		b.must("systemctl", "reload", "jobdaemon.service")
		if s := b.status(); s.MaxChildren != 3 || s.Generation != 2 {
			t.Errorf("right after systemctl reload: max_children %d, generation %d", s.MaxChildren, s.Generation)
		}
		writeSdConfig(t, func(s string) string { return strings.Replace(s, "max_children = 4", "max_children = 0", 1) })
		if code, out := b.exec("systemctl", "reload", "jobdaemon.service"); code == 0 {
			t.Errorf("systemctl reload of a broken config succeeded:\n%s", out)
		}
		if st := b.show("ActiveState"); st != "active" {
			t.Errorf("after a refused reload the service is %s", st)
		}
		if got := b.show("StatusText"); !strings.Contains(got, "reload refused") || !strings.Contains(got, "config.toml:") ||
			!strings.Contains(got, "pool.max_children") {
			t.Errorf("StatusText does not say why the reload was refused: %q", got)
		}
		if s := b.status(); s.MaxChildren != 3 || s.Generation != 2 || s.ReloadsFailed != 1 {
			t.Errorf("after a refused reload: %+v", s)
		}
		writeSdConfig(t, func(s string) string { return strings.Replace(s, "max_children = 4", "max_children = 2", 1) })
		b.must("systemctl", "reload", "jobdaemon.service")
	})

	// Under systemd with Delegate=yes, each job has a cgroup of its own:
	// not even what escapes its process group with setsid outlives it.
	t.Run("cgroups", func(t *testing.T) {
		killSleepers(t, 3501)
		if iso := b.status().Isolation; !strings.Contains(iso, "cgroups in /sys/fs/cgroup") || !strings.Contains(iso, "jobdaemon.service/jobs") {
			t.Errorf("isolation under systemd: %q", iso)
		}
		os.WriteFile(filepath.Join(sdWork, "setsidjob"), []byte("setsid\n"), 0o644)
		if code, out := b.ctl("submit", "--id", "setsid-job", sdWork+"/setsidjob"); code != 0 {
			t.Fatalf("submit: exit %d\n%s", code, out)
		}
		b.waitFor("the job done", func() bool {
			_, err := os.Stat(filepath.Join(sdState, "spool", "done", "setsid-job"))
			return err == nil
		})
		if pids := sleepers(3501); len(pids) > 0 {
			t.Errorf("what the job started with setsid outlived it: %v", pids)
		}
	})

	t.Run("journal", func(t *testing.T) {
		os.WriteFile(filepath.Join(sdWork, "okjob"), []byte("ok\n"), 0o644)
		if code, out := b.ctl("submit", "--id", "journal-job", sdWork+"/okjob"); code != 0 {
			t.Fatalf("submit: exit %d\n%s", code, out)
		}
		var job []map[string]string
		b.waitFor("the job's line in the journal", func() bool {
			job = b.entries("JOB_ID=journal-job", "SYSLOG_IDENTIFIER=job.sh")
			return len(job) > 0
		})
		e := job[0]
		if e["MESSAGE"] != "ok journal-job attempt 1 as daemon" || e["SYSLOG_FACILITY"] != "1" || e["JOB_ATTEMPT"] != "1" ||
			e["JOB_SLOT"] == "" || e["CHILD_PID"] == "" {
			t.Errorf("job line: %v", e)
		}
		daemon := b.entries("SYSLOG_FACILITY=3", "SYSLOG_IDENTIFIER=jobdaemon")
		if len(daemon) < 3 {
			t.Fatalf("%d daemon lines with SYSLOG_FACILITY=3", len(daemon))
		}
		for _, e := range daemon {
			if e["JOB_ID"] == "journal-job" && e["SYSLOG_IDENTIFIER"] != "jobdaemon" {
				t.Errorf("a job line among the daemon's: %v", e)
			}
		}
		if n := len(b.entries("SYSLOG_FACILITY=3", "JOB_ID=journal-job", "SYSLOG_IDENTIFIER=job.sh")); n != 0 {
			t.Errorf("%d job lines carry the daemon's facility", n)
		}
	})

	t.Run("stop with running jobs", func(t *testing.T) {
		os.WriteFile(filepath.Join(sdWork, "sleepjob"), []byte("sleep\n"), 0o644)
		for _, id := range []string{"long-a", "long-b"} {
			if code, out := b.ctl("submit", "--id", id, sdWork+"/sleepjob"); code != 0 {
				t.Fatalf("submit: exit %d\n%s", code, out)
			}
		}
		b.waitFor("two jobs running", func() bool { return b.status().Busy == 2 })
		var pids []int
		for _, sl := range b.status().Slots {
			pids = append(pids, sl.Pid)
		}
		start := time.Now()
		b.must("systemctl", "stop", "jobdaemon.service")
		took := time.Since(start)
		if took > 45*time.Second {
			t.Errorf("systemctl stop took %v, more than TimeoutStopSec", took)
		}
		if st := b.show("ActiveState"); st != "inactive" {
			t.Errorf("after stop: %s (result %s)", st, b.show("Result"))
		}
		for _, id := range []string{"long-a", "long-b"} {
			got := false
			for _, e := range b.entries("JOB_ID=" + id) {
				got = got || e["MESSAGE"] == "got TERM"
			}
			if !got {
				t.Errorf("job %s did not get TERM:\n%s", id, b.journal())
			}
		}
		// Nothing of the unit is left: no job, no grandchild sleep. The
		// pids are the testbed's (its own PID namespace): looked up in its
		// /proc, not in this one's, where another process may have any of
		// them (pid_max is 32768 here, and a test run wraps it).
		if code, out := b.exec("test", "-e", "/proc/1"); code != 0 {
			t.Fatalf("cannot look up a pid in the testbed: exit %d\n%s", code, out)
		}
		for _, p := range pids {
			if code, _ := b.exec("test", "-e", "/proc/"+strconv.Itoa(p)); code == 0 {
				t.Errorf("job pid %d still exists in the testbed", p)
			}
		}
		if left := processesWithEnv("JOB_ID=long-"); len(left) > 0 {
			t.Errorf("processes of the jobs left after stop: %v", left)
		}
		if cg := b.show("ControlGroup"); cg != "" {
			t.Errorf("the unit still has a cgroup: %s", cg)
		}
		t.Logf("systemctl stop took %v", took.Round(time.Millisecond))
	})

	t.Run("socket activation", func(t *testing.T) {
		b.must("systemctl", "start", "jobdaemon.socket")
		if st := b.show("ActiveState"); st != "inactive" {
			t.Fatalf("the service is %s before anyone connected", st)
		}
		// jobdaemon status sees that no daemon holds the PID file, and
		// does not wake one.
		if code, out := b.ctl("status"); code != 3 || !strings.Contains(out, "not running") {
			t.Errorf("status of a stopped, socket-activatable service: exit %d\n%s", code, out)
		}
		if st := b.show("ActiveState"); st != "inactive" {
			t.Errorf("jobdaemon status started the service: %s", st)
		}
		// A client that connects (curl, a monitoring probe) starts it,
		// and its first request is answered by the ready daemon.
		activate := func() {
			t.Helper()
			out := b.must("curl", "-sS", "--unix-socket", "/run/jobdaemon/control.sock", "http://localhost/v1/status")
			var s statusReply
			if err := json.Unmarshal([]byte(out), &s); err != nil || s.State != "running" || s.Manager != "systemd" {
				t.Errorf("status through the activated socket: %v\n%s", err, out)
			}
		}
		activate()
		if st := b.show("ActiveState"); st != "active" {
			t.Errorf("after a connection the service is %s", st)
		}
		b.must("systemctl", "stop", "jobdaemon.service")
		// The socket file survives the service's stop, so that the next
		// connection starts it again.
		activate()
		b.must("systemctl", "stop", "jobdaemon.service", "jobdaemon.socket")
	})

	t.Run("watchdog", func(t *testing.T) {
		b.must("mkdir", "-p", "/run/systemd/system/jobdaemon.service.d")
		dropIn := filepath.Join(sdWork, "watchdog.conf")
		os.WriteFile(dropIn, []byte("[Service]\nWatchdogSec=2s\nRestartSec=100ms\nEnvironment="+envTestStallName+"=3s\n"), 0o644)
		b.must("cp", dropIn, "/run/systemd/system/jobdaemon.service.d/watchdog.conf")
		b.must("systemctl", "daemon-reload")
		b.must("systemctl", "start", "jobdaemon.service")
		first := b.show("MainPID")
		// Before the stall, the pings keep it alive past WatchdogSec.
		time.Sleep(2500 * time.Millisecond)
		if pid := b.show("MainPID"); pid != first {
			t.Fatalf("restarted before the stall: %s then %s\n%s", first, pid, b.journal())
		}
		b.waitFor("a restart by the watchdog", func() bool {
			n, _ := strconv.Atoi(b.show("NRestarts"))
			return n >= 1
		})
		found := false
		for _, e := range b.entries("SYSLOG_IDENTIFIER=systemd") {
			if strings.Contains(e["MESSAGE"], "Watchdog timeout") {
				found = true
			}
		}
		if !found {
			t.Errorf("no \"Watchdog timeout\" from systemd:\n%s", b.journal())
		}
		b.must("systemctl", "stop", "jobdaemon.service")
		b.must("rm", "-r", "/run/systemd/system/jobdaemon.service.d")
		b.must("systemctl", "daemon-reload")
	})
}

// envTestStallName is the binary's test hook (cmd/jobdaemon envTestStall).
const envTestStallName = "JOBDAEMON_TEST_STALL_AFTER"

// processesWithEnv lists the pids whose environment holds s.
func processesWithEnv(s string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err == nil && strings.Contains(string(b), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}
