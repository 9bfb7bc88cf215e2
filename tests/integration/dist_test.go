package integration

// Checks of the files under dist/: the systemd units and the files they
// depend on, checked by systemd's own tools; the init script, checked by
// shellcheck and dash and run against the real binary; and the
// production config, which must agree with all of them.
//
// The tools come from Debian's systemd, shellcheck and dash packages. A
// missing tool skips a test, except under CI=true, where it fails it: CI
// installs them, so a missing one there is a broken setup, not a reason
// to pass.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jobdaemon/jobdaemon/internal/config"
)

// distDir is the repository's dist/, relative to this package.
const distDir = "../../dist"

// distPath returns the path of a file under dist/.
func distPath(parts ...string) string {
	return filepath.Join(append([]string{distDir}, parts...)...)
}

// distTool returns the path of an external program, or skips the test
// without it; under CI=true it fails the test instead.
func distTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is needed and missing, and CI=true: %v", name, err)
	}
	t.Skipf("%s is missing: %v", name, err)
	return ""
}

// distRun runs a command and returns its exit code and its combined
// output; it fails the test if the command could not be started.
func distRun(t *testing.T, c *exec.Cmd) (int, string) {
	t.Helper()
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String()
	}
	t.Fatalf("%v: %v", c.Args, err)
	return -1, ""
}

// distUnit is a unit file: section → key → values, in file order.
type distUnit map[string]map[string][]string

// distReadUnit reads a unit file's assignments; comments and blank lines
// are skipped (the files here use no line continuations).
func distReadUnit(t *testing.T, path string) distUnit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := distUnit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, `\`) {
				t.Fatalf("%s:%d: not a plain assignment: %q", path, n, line)
			}
			k = strings.TrimSpace(k)
			u[section][k] = append(u[section][k], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// get returns the single value of key in section; it fails the test when
// the key is missing or set more than once.
func (u distUnit) get(t *testing.T, section, key string) string {
	t.Helper()
	vs := u[section][key]
	if len(vs) != 1 {
		t.Fatalf("[%s] %s: %d values %q, want exactly one", section, key, len(vs), vs)
	}
	return vs[0]
}

// distDefaults sources dist/default/jobdaemon with sh, as the init script
// does, and returns the variables it sets.
func distDefaults(t *testing.T) map[string]string {
	t.Helper()
	names := []string{"DAEMON", "CONFIG", "PIDFILE", "STOP_TIMEOUT", "RUNTIME_DIR", "RUNTIME_USER", "RUNTIME_GROUP"}
	script := `set -eu; . "$1"; shift; for v in "$@"; do eval "printf '%s=%s\n' \"\$v\" \"\${$v}\""; done`
	args := append([]string{"-c", script, "sh", distPath("default", "jobdaemon")}, names...)
	out, err := exec.Command("sh", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("sourcing dist/default/jobdaemon: %v\n%s", err, out)
	}
	vars := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		vars[k] = v
	}
	return vars
}

// distSystemdVersion returns the major version of systemd-analyze.
func distSystemdVersion(t *testing.T, analyze string) int {
	t.Helper()
	out, err := exec.Command(analyze, "--version").Output()
	if err != nil {
		t.Fatalf("systemd-analyze --version: %v", err)
	}
	m := regexp.MustCompile(`^systemd (\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze --version: unexpected output %q", out)
	}
	v, _ := strconv.Atoi(string(m[1]))
	return v
}

// distUnitsCopy copies the two units into a temporary directory, with
// /usr/bin/jobdaemon replaced by the binary built for the tests: verify
// checks that ExecStart's program exists, and it is not installed here.
// The replacement is the only change.
func distUnitsCopy(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"jobdaemon.service", "jobdaemon.socket"} {
		b, err := os.ReadFile(distPath("systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if name == "jobdaemon.service" {
			if n := strings.Count(s, "=/usr/bin/jobdaemon "); n != 2 {
				t.Fatalf("jobdaemon.service names /usr/bin/jobdaemon in %d commands, want 2 (ExecStart, ExecReload)", n)
			}
			s = strings.ReplaceAll(s, "=/usr/bin/jobdaemon ", "="+binary+" ")
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// distVerify runs systemd-analyze verify on the units in dir.
func distVerify(t *testing.T, analyze, dir string) (int, string) {
	t.Helper()
	c := exec.Command(analyze, "verify", "--man=no",
		filepath.Join(dir, "jobdaemon.service"), filepath.Join(dir, "jobdaemon.socket"))
	return distRun(t, c)
}

// systemd-analyze verify finds nothing to say about the units. It exits 0
// even for an unknown key or a bad value (it only warns), so any output at
// all is a failure.
func TestDistSystemdVerify(t *testing.T) {
	analyze := distTool(t, "systemd-analyze")
	dir := distUnitsCopy(t)
	code, out := distVerify(t, analyze, dir)
	if code != 0 || out != "" {
		t.Errorf("systemd-analyze verify: exit %d, want 0 and no output:\n%s", code, out)
	}

	// The check above can fail: verify does report a mistake.
	t.Run("control", func(t *testing.T) {
		bad := distUnitsCopy(t)
		path := filepath.Join(bad, "jobdaemon.service")
		b, _ := os.ReadFile(path)
		os.WriteFile(path, bytes.Replace(b, []byte("KillMode=mixed"), []byte("KillMode=mixd"), 1), 0o644)
		if _, out := distVerify(t, analyze, bad); !strings.Contains(out, "mixd") {
			t.Errorf("verify did not report KillMode=mixd:\n%s", out)
		}
	})

	// The notify-reload drop-in is for systemd 253 and later; 252
	// (Debian 12) does not know its two settings, and says so, as the
	// drop-in's comment warns.
	t.Run("notify-reload", func(t *testing.T) {
		dir := distUnitsCopy(t)
		dropin := filepath.Join(dir, "jobdaemon.service.d")
		os.Mkdir(dropin, 0o755)
		b, err := os.ReadFile(distPath("systemd", "notify-reload.conf"))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dropin, "notify-reload.conf"), b, 0o644)
		code, out := distVerify(t, analyze, dir)
		if v := distSystemdVersion(t, analyze); v >= 253 {
			if code != 0 || out != "" {
				t.Errorf("systemd %d: verify with the drop-in: exit %d, want 0 and no output:\n%s", v, code, out)
			}
		} else {
			if !strings.Contains(out, "notify-reload.conf") || !strings.Contains(out, "notify-reload") ||
				!strings.Contains(out, "ReloadSignal") {
				t.Errorf("systemd %d: verify did not reject Type=notify-reload and ReloadSignal=:\n%s", v, out)
			}
			t.Logf("systemd %d, as expected:\n%s", v, out)
		}
	})

	// The drop-in for [metrics] listen is a valid one.
	t.Run("metrics-tcp", func(t *testing.T) {
		dir := distUnitsCopy(t)
		dropin := filepath.Join(dir, "jobdaemon.service.d")
		os.Mkdir(dropin, 0o755)
		b, err := os.ReadFile(distPath("systemd", "metrics-tcp.conf"))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dropin, "metrics-tcp.conf"), b, 0o644)
		if code, out := distVerify(t, analyze, dir); code != 0 || out != "" {
			t.Errorf("verify with metrics-tcp.conf: exit %d\n%s", code, out)
		}
	})
}

// The service's hardening scores 2.0 or lower in systemd-analyze
// security, without the two settings that would turn per-job cgroups off:
// ProtectControlGroups= makes the cgroup file system read-only, and
// RestrictNamespaces= makes clone3, which starts a child into a cgroup,
// fail with ENOSYS.
func TestDistSecurity(t *testing.T) {
	analyze := distTool(t, "systemd-analyze")
	if v := distSystemdVersion(t, analyze); v < 250 {
		t.Skipf("systemd %d has no systemd-analyze security --offline", v)
	}
	svc := distReadUnit(t, distPath("systemd", "jobdaemon.service"))
	for _, key := range []string{"ProtectControlGroups", "RestrictNamespaces"} {
		if vs := svc["Service"][key]; len(vs) > 0 {
			t.Errorf("jobdaemon.service sets %s=%s, which turns per-job cgroups off", key, vs[0])
		}
	}
	dir := distUnitsCopy(t)
	score := func(dir string) float64 {
		t.Helper()
		code, out := distRun(t, exec.Command(analyze, "security", "--offline=true", "--no-pager",
			filepath.Join(dir, "jobdaemon.service")))
		m := regexp.MustCompile(`Overall exposure level for jobdaemon\.service: (\d+\.\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("systemd-analyze security: exit %d, no overall exposure level:\n%s", code, out)
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	got := score(dir)
	if got > 2.0 {
		t.Errorf("systemd-analyze security: exposure %.1f, want 2.0 or lower", got)
	}
	t.Logf("exposure %.1f", got)

	// The check can fail: a unit without its hardening scores higher.
	t.Run("control", func(t *testing.T) {
		bad := distUnitsCopy(t)
		path := filepath.Join(bad, "jobdaemon.service")
		b, _ := os.ReadFile(path)
		unbounded := regexp.MustCompile(`(?m)^CapabilityBoundingSet=.*\n`).ReplaceAll(b, nil)
		if bytes.Equal(unbounded, b) {
			t.Fatal("the unit has no CapabilityBoundingSet= line")
		}
		os.WriteFile(path, unbounded, 0o644)
		if worse := score(bad); worse <= got {
			t.Errorf("without CapabilityBoundingSet= the exposure is %.1f, not above %.1f", worse, got)
		}
	})
}

// The units, the defaults file of the init script and the production
// config name the same paths, user and times.
func TestDistFilesAgree(t *testing.T) {
	svc := distReadUnit(t, distPath("systemd", "jobdaemon.service"))
	sock := distReadUnit(t, distPath("systemd", "jobdaemon.socket"))
	def := distDefaults(t)
	cfg, err := config.Parse(distPath("config.toml"))
	if err != nil {
		t.Fatalf("dist/config.toml: %v", err)
	}
	const cfgPath = "/etc/jobdaemon/config.toml"

	for key, want := range map[string]string{
		"Type":                     "notify",
		"NotifyAccess":             "main",
		"ExecStart":                "/usr/bin/jobdaemon run --config " + cfgPath,
		"ExecReload":               "/usr/bin/jobdaemon reload --config " + cfgPath,
		"KillMode":                 "mixed",
		"Delegate":                 "yes", // per-job cgroups (docs/CGROUPS.md)
		"Restart":                  "on-failure",
		"RestartPreventExitStatus": strconv.Itoa(config.ExitConfig),
		"User":                     "jobdaemon",
		"Group":                    "jobdaemon",
		"RuntimeDirectory":         "jobdaemon",
		"RuntimeDirectoryPreserve": "yes", // the socket unit's file lives there
		"StateDirectory":           "jobdaemon",
		"ProtectSystem":            "strict",
		"NoNewPrivileges":          "yes",
		// Jobs run as their own user: the right to start and stop them
		// so, and nothing else (docs/INSTALL.md).
		"CapabilityBoundingSet": "CAP_SETUID CAP_SETGID CAP_KILL",
		"AmbientCapabilities":   "CAP_SETUID CAP_SETGID CAP_KILL",
	} {
		if got := svc.get(t, "Service", key); got != want {
			t.Errorf("jobdaemon.service %s=%s, want %s", key, got, want)
		}
	}
	if got := svc.get(t, "Unit", "After"); !strings.Contains(got, "jobdaemon.socket") {
		t.Errorf("jobdaemon.service After=%s: not ordered after jobdaemon.socket", got)
	}
	if _, ok := svc["Unit"]["Requires"]; ok {
		t.Errorf("jobdaemon.service Requires= something: it must start without jobdaemon.socket")
	}
	if got := svc.get(t, "Install", "Also"); got != "jobdaemon.socket" {
		t.Errorf("jobdaemon.service Also=%s", got)
	}

	// Every daemon user and group is jobdaemon; the jobs' are their own.
	if cfg.Daemon.User != "jobdaemon" || cfg.Daemon.Group != "jobdaemon" || cfg.Control.Group != "jobdaemon" {
		t.Errorf("config: user %q, group %q, control.group %q; want jobdaemon", cfg.Daemon.User, cfg.Daemon.Group, cfg.Control.Group)
	}
	if cfg.Job.User != "jobdaemon-job" || cfg.Job.Group != "jobdaemon-job" {
		t.Errorf("config: job.user %q, job.group %q; want jobdaemon-job, distinct from the daemon's", cfg.Job.User, cfg.Job.Group)
	}
	if def["RUNTIME_USER"] != cfg.Daemon.User || def["RUNTIME_GROUP"] != cfg.Daemon.Group {
		t.Errorf("defaults RUNTIME_USER=%q RUNTIME_GROUP=%q, config user %q group %q",
			def["RUNTIME_USER"], def["RUNTIME_GROUP"], cfg.Daemon.User, cfg.Daemon.Group)
	}
	if got := sock.get(t, "Socket", "SocketGroup"); got != cfg.Control.Group {
		t.Errorf("jobdaemon.socket SocketGroup=%s, config control.group %q", got, cfg.Control.Group)
	}
	if got := sock.get(t, "Socket", "SocketMode"); got != "0660" {
		t.Errorf("jobdaemon.socket SocketMode=%s, want 0660", got)
	}

	// The paths.
	if def["CONFIG"] != cfgPath || def["DAEMON"] != "/usr/bin/jobdaemon" {
		t.Errorf("defaults CONFIG=%q DAEMON=%q", def["CONFIG"], def["DAEMON"])
	}
	if def["PIDFILE"] != cfg.Daemon.PIDFile {
		t.Errorf("defaults PIDFILE=%q, config daemon.pid_file %q", def["PIDFILE"], cfg.Daemon.PIDFile)
	}
	if got := sock.get(t, "Socket", "ListenStream"); got != cfg.Control.Socket {
		t.Errorf("jobdaemon.socket ListenStream=%s, config control.socket %q", got, cfg.Control.Socket)
	}
	if got := sock.get(t, "Socket", "FileDescriptorName"); got != "control" {
		t.Errorf("jobdaemon.socket FileDescriptorName=%s, want control", got)
	}
	runDir := "/run/" + svc.get(t, "Service", "RuntimeDirectory")
	for what, p := range map[string]string{"pid_file": cfg.Daemon.PIDFile, "control.socket": cfg.Control.Socket} {
		if filepath.Dir(p) != runDir {
			t.Errorf("config %s %q is not in the RuntimeDirectory %s", what, p, runDir)
		}
	}
	if def["RUNTIME_DIR"] != runDir {
		t.Errorf("defaults RUNTIME_DIR=%q, want %s", def["RUNTIME_DIR"], runDir)
	}
	stateDir := "/var/lib/" + svc.get(t, "Service", "StateDirectory")
	if !strings.HasPrefix(cfg.Source.Spool.Dir, stateDir+"/") {
		t.Errorf("config spool %q is not under the StateDirectory %s (ProtectSystem=strict)", cfg.Source.Spool.Dir, stateDir)
	}
	// The directory modes agree between tmpfiles.d, the service and the
	// socket unit, whichever creates the directory first.
	tmpfiles, err := os.ReadFile(distPath("tmpfiles.d", "jobdaemon.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for dir, mode := range map[string]string{
		runDir:   svc.get(t, "Service", "RuntimeDirectoryMode"),
		stateDir: svc.get(t, "Service", "StateDirectoryMode"),
	} {
		re := regexp.MustCompile(`(?m)^d\s+` + regexp.QuoteMeta(dir) + `\s+` + mode + `\s+jobdaemon\s+jobdaemon\s`)
		if !re.Match(tmpfiles) {
			t.Errorf("tmpfiles.d has no line %q with mode %s owned by jobdaemon", dir, mode)
		}
	}
	if got, want := sock.get(t, "Socket", "DirectoryMode"), svc.get(t, "Service", "RuntimeDirectoryMode"); got != want {
		t.Errorf("jobdaemon.socket DirectoryMode=%s, service RuntimeDirectoryMode=%s", got, want)
	}
	if !regexp.MustCompile(`(?m)^d\s+` + regexp.QuoteMeta(cfg.Source.Spool.Dir) + `/incoming\s`).Match(tmpfiles) {
		t.Errorf("tmpfiles.d does not create %s/incoming", cfg.Source.Spool.Dir)
	}

	// The times: the stop gives the daemon its stop_timeout and more.
	unitStop, err := time.ParseDuration(svc.get(t, "Service", "TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}
	stop := time.Duration(cfg.Daemon.StopTimeout)
	if stop <= 0 || unitStop <= stop {
		t.Errorf("TimeoutStopSec %v is not above stop_timeout %v", unitStop, stop)
	}
	initStop, err := strconv.Atoi(def["STOP_TIMEOUT"])
	if err != nil || time.Duration(initStop)*time.Second <= stop {
		t.Errorf("defaults STOP_TIMEOUT=%q is not a number of seconds above stop_timeout %v", def["STOP_TIMEOUT"], stop)
	}
	if _, err := time.ParseDuration(svc.get(t, "Service", "WatchdogSec")); err != nil {
		t.Errorf("WatchdogSec: %v", err)
	}
	if cfg.Log.Target != "auto" {
		t.Errorf("config log.target %q, want auto (journal under systemd, syslog for the init script)", cfg.Log.Target)
	}
}

// The sysusers.d file creates the user, and the tmpfiles.d file the
// directories with their owner and modes, both in a temporary root: the
// host is not touched.
func TestDistSysusersTmpfiles(t *testing.T) {
	sysusers := distTool(t, "systemd-sysusers")
	tmpfiles := distTool(t, "systemd-tmpfiles")
	if os.Geteuid() != 0 {
		t.Skip("systemd-tmpfiles --root chowns to the new user: needs root")
	}
	root := t.TempDir()
	os.Mkdir(filepath.Join(root, "etc"), 0o755)
	abs := func(p string) string { a, _ := filepath.Abs(p); return a } // relative paths are taken as names
	if code, out := distRun(t, exec.Command(sysusers, "--root="+root, abs(distPath("sysusers.d", "jobdaemon.conf")))); code != 0 {
		t.Fatalf("systemd-sysusers: exit %d\n%s", code, out)
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc", "passwd"))
	m := regexp.MustCompile(`(?m)^jobdaemon:x:(\d+):(\d+):[^:]*:/var/lib/jobdaemon:/usr/sbin/nologin$`).FindSubmatch(passwd)
	if m == nil {
		t.Fatalf("no jobdaemon user with home /var/lib/jobdaemon and nologin:\n%s", passwd)
	}
	// The jobs' user, in a group of its own, not in jobdaemon's.
	mj := regexp.MustCompile(`(?m)^jobdaemon-job:x:(\d+):(\d+):[^:]*:[^:]*:/usr/sbin/nologin$`).FindSubmatch(passwd)
	if mj == nil || string(mj[1]) == string(m[1]) || string(mj[2]) == string(m[2]) {
		t.Errorf("no jobdaemon-job user with a uid and group of its own:\n%s", passwd)
	}
	uid, _ := strconv.Atoi(string(m[1]))
	gid, _ := strconv.Atoi(string(m[2]))
	if uid >= 1000 {
		t.Errorf("uid %d is not a system user's", uid)
	}
	group, _ := os.ReadFile(filepath.Join(root, "etc", "group"))
	if !regexp.MustCompile(fmt.Sprintf(`(?m)^jobdaemon:x:%d:`, gid)).Match(group) {
		t.Errorf("no group jobdaemon with gid %d:\n%s", gid, group)
	}

	if code, out := distRun(t, exec.Command(tmpfiles, "--root="+root, "--create", abs(distPath("tmpfiles.d", "jobdaemon.conf")))); code != 0 || out != "" {
		t.Fatalf("systemd-tmpfiles --create: exit %d\n%s", code, out)
	}
	cfg, err := config.Parse(distPath("config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	spool := cfg.Source.Spool.Dir
	for path, mode := range map[string]os.FileMode{
		"/run/jobdaemon":                 0o755,
		"/var/lib/jobdaemon":             0o750,
		spool:                            0o750,
		spool + "/incoming":              0o770 | os.ModeSetgid,
		spool + "/running":               0o750,
		spool + "/done":                  0o750,
		spool + "/failed":                0o750,
		filepath.Dir(cfg.Daemon.PIDFile): 0o755,
	} {
		fi, err := os.Lstat(filepath.Join(root, path))
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !fi.IsDir() || fi.Mode()&(os.ModePerm|os.ModeSetgid|os.ModeSticky) != mode || int(st.Uid) != uid || int(st.Gid) != gid {
			t.Errorf("%s: %v %d:%d, want a directory %v %d:%d", path, fi.Mode(), st.Uid, st.Gid, mode, uid, gid)
		}
	}
}

// The init script is POSIX sh, as dash reads it and shellcheck sees it,
// with the LSB header update-rc.d needs.
func TestDistInitScriptLint(t *testing.T) {
	script := distPath("initd", "jobdaemon")
	shellcheck := distTool(t, "shellcheck")
	dash := distTool(t, "dash")
	if code, out := distRun(t, exec.Command(shellcheck, "-s", "sh", script)); code != 0 {
		t.Errorf("shellcheck -s sh: exit %d\n%s", code, out)
	}
	if code, out := distRun(t, exec.Command(dash, "-n", script)); code != 0 {
		t.Errorf("dash -n: exit %d\n%s", code, out)
	}
	b, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("#!/bin/sh\n")) {
		t.Errorf("the script does not start with #!/bin/sh")
	}
	if fi, _ := os.Stat(script); fi.Mode()&0o111 == 0 {
		t.Errorf("the script is not executable: %v", fi.Mode())
	}
	header := regexp.MustCompile(`(?s)### BEGIN INIT INFO\n(.*?)### END INIT INFO`).FindSubmatch(b)
	if header == nil {
		t.Fatal("no LSB header")
	}
	for _, want := range []string{
		`# Provides:\s+jobdaemon\n`,
		`# Required-Start:\s+\$remote_fs \$syslog\n`,
		`# Required-Stop:\s+\$remote_fs \$syslog\n`,
		`# Default-Start:\s+2 3 4 5\n`,
		`# Default-Stop:\s+0 1 6\n`,
		`# Short-Description:\s+\S`,
		`# Description:\s+\S`,
	} {
		if !regexp.MustCompile(want).Match(header[1]) {
			t.Errorf("LSB header lacks %s:\n%s", want, header[1])
		}
	}
}

// distInit runs the init script under dash with the defaults file
// defaults and returns its exit code, standard output and error.
func distInit(t *testing.T, defaults string, args ...string) (int, string, string) {
	t.Helper()
	dash := distTool(t, "dash")
	c := exec.Command(dash, append([]string{distPath("initd", "jobdaemon")}, args...)...)
	c.Env = append(os.Environ(), "JOBDAEMON_DEFAULTS="+defaults, "GORACE=atexit_sleep_ms=0")
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatalf("init script %v: %v", args, err)
	return -1, "", ""
}

// distWriteDefaults writes a defaults file for the init script into dir.
func distWriteDefaults(t *testing.T, dir string, vars map[string]string) string {
	t.Helper()
	var b strings.Builder
	for k, v := range vars {
		fmt.Fprintf(&b, "%s='%s'\n", k, v)
	}
	path := filepath.Join(dir, "defaults")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The init script's exit codes for what it decides alone: usage errors
// and a binary that is not installed.
func TestDistInitScriptUsage(t *testing.T) {
	dir := t.TempDir()
	defaults := distWriteDefaults(t, dir, map[string]string{
		"DAEMON":       filepath.Join(dir, "not-installed"),
		"CONFIG":       filepath.Join(dir, "config.toml"),
		"PIDFILE":      filepath.Join(dir, "jobdaemon.pid"),
		"RUNTIME_DIR":  filepath.Join(dir, "run"),
		"RUNTIME_USER": "",
	})
	for _, args := range [][]string{{"bogus"}, {}, {"try-restart"}} {
		code, stdout, stderr := distInit(t, defaults, args...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, "Usage: /etc/init.d/jobdaemon {start|stop|restart|reload|force-reload|status}") {
			t.Errorf("%q: exit %d, want 2 and the usage on stderr\nstdout: %s\nstderr: %s", args, code, stdout, stderr)
		}
	}
	// LSB: 5 is "program is not installed"; status says "unknown" (4);
	// stop finds nothing to stop.
	for action, want := range map[string]int{"start": 5, "restart": 5, "reload": 5, "force-reload": 5, "status": 4, "stop": 0} {
		if code, stdout, stderr := distInit(t, defaults, action); code != want {
			t.Errorf("%s without the binary: exit %d, want %d\n%s%s", action, code, want, stdout, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "run")); err == nil {
		t.Errorf("RUNTIME_DIR was created")
	}
}

// distHasCommand reports whether the binary knows the subcommand.
func distHasCommand(name string) bool {
	out, err := exec.Command(binary, name, "--help").CombinedOutput()
	return err == nil || !strings.Contains(string(out), "unknown command")
}

// distPID reads the PID file; 0 if there is none.
func distPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("PID file %q: %v", b, err)
	}
	return pid
}

// distAlive reports whether pid runs and is not a zombie.
func distAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] != 'Z'
}

// The init script drives the real daemon through every action, with the
// LSB exit codes: start and stop are idempotent, reload needs a running
// daemon, and a refused configuration is reported.
func TestDistInitScriptLifecycle(t *testing.T) {
	distTool(t, "start-stop-daemon")
	for _, sub := range []string{"start", "stop", "status", "reload"} {
		if !distHasCommand(sub) {
			t.Skipf("the binary has no %q command yet", sub)
		}
	}
	e := newEnv(t, "target = \"file\"\nfile = \"daemon.log\"\n")
	pidFile := filepath.Join(e.dir, "jobdaemon.pid")
	runDir := filepath.Join(e.dir, "run")
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	grp, err := user.LookupGroupId(me.Gid)
	if err != nil {
		t.Fatal(err)
	}
	defaults := distWriteDefaults(t, e.dir, map[string]string{
		"DAEMON":        binary,
		"CONFIG":        e.config,
		"PIDFILE":       pidFile,
		"STOP_TIMEOUT":  "15",
		"RUNTIME_DIR":   runDir,
		"RUNTIME_USER":  me.Username,
		"RUNTIME_GROUP": grp.Name,
	})
	var started []int
	t.Cleanup(func() {
		for _, pid := range started {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	log := func() string {
		b, _ := os.ReadFile(filepath.Join(e.dir, "daemon.log"))
		return tail(string(b))
	}
	expect := func(want int, args ...string) string {
		t.Helper()
		code, stdout, stderr := distInit(t, defaults, args...)
		if code != want {
			t.Fatalf("init script %v: exit %d, want %d\nstdout: %s\nstderr: %s\ndaemon log:\n%s", args, code, want, stdout, stderr, log())
		}
		return stdout + stderr
	}

	expect(3, "status")
	expect(7, "reload")
	expect(7, "force-reload")
	expect(0, "stop")

	expect(0, "start")
	pid := distPID(t, pidFile)
	if pid == 0 || !distAlive(pid) {
		t.Fatalf("after start: PID file says %d, which does not run", pid)
	}
	started = append(started, pid)
	// What start-stop-daemon --exec compares: the daemon was re-executed
	// from /proc/self/exe, and its executable is still the binary.
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil || exe != binary {
		t.Errorf("/proc/%d/exe is %q (%v), want %s", pid, exe, err, binary)
	}
	if fi, err := os.Stat(runDir); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
		t.Errorf("RUNTIME_DIR: %v, %v; want a directory 0755", fi, err)
	}

	expect(0, "start") // LSB: starting a running service succeeds
	if p := distPID(t, pidFile); p != pid || !distAlive(pid) {
		t.Fatalf("a second start replaced the daemon: pid %d, then %d", pid, p)
	}
	expect(0, "status")
	expect(0, "reload")
	expect(0, "force-reload")

	// A file that does not parse (6), and one the daemon refuses (1):
	// the reload fails, and the daemon runs on.
	good, _ := os.ReadFile(e.config)
	bad := bytes.Replace(good, []byte("max_children = 8"), []byte("max_chidren = 8"), 1)
	refused := bytes.Replace(good, []byte("max_children = 8"), []byte("max_children = 0"), 1)
	if bytes.Equal(bad, good) || bytes.Equal(refused, good) {
		t.Fatal("newEnv's config no longer sets max_children = 8")
	}
	os.WriteFile(e.config, bad, 0o644)
	if out := expect(6, "reload"); !strings.Contains(out, "max_chidren") {
		t.Errorf("reload of a file that does not parse does not name the bad key:\n%s", out)
	}
	os.WriteFile(e.config, refused, 0o644)
	if out := expect(1, "reload"); !strings.Contains(out, "max_children") {
		t.Errorf("a refused reload does not name the bad key:\n%s", out)
	}
	os.WriteFile(e.config, good, 0o644)
	expect(0, "status")
	if p := distPID(t, pidFile); p != pid || !distAlive(pid) {
		t.Fatalf("after the refused reloads: pid %d, then %d", pid, p)
	}

	expect(0, "restart")
	pid2 := distPID(t, pidFile)
	if pid2 == 0 || pid2 == pid || !distAlive(pid2) || distAlive(pid) {
		t.Fatalf("restart: pid %d (alive %v) became %d (alive %v)", pid, distAlive(pid), pid2, distAlive(pid2))
	}
	started = append(started, pid2)

	expect(0, "stop")
	if distAlive(pid2) {
		t.Errorf("the daemon %d still runs after stop", pid2)
	}
	if _, err := os.Stat(pidFile); err == nil {
		t.Errorf("the PID file is left after stop")
	}
	expect(3, "status")
	expect(0, "stop") // LSB: stopping a stopped service succeeds

	// An invalid configuration: start fails with 6 and nothing runs.
	os.WriteFile(e.config, bad, 0o644)
	if out := expect(6, "start"); !strings.Contains(out, "max_chidren") {
		t.Errorf("start with a broken config does not name the bad key:\n%s", out)
	}
	if p := distPID(t, pidFile); p != 0 && distAlive(p) {
		started = append(started, p)
		t.Errorf("a daemon %d runs after a failed start", p)
	}
}
