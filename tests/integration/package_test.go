package integration

// The Debian package, as an operator gets it: built by
// packaging/build-deb.sh, checked by lintian and dpkg-deb, then installed
// with dpkg, run, reloaded, upgraded, removed and purged in a real
// systemd 252; and its init script run on the host, which has no
// systemd.
//
// The systemd testbed shares /, /etc and /var with the host, so
// installing the package there installs it on the host too. The test
// therefore refuses to run where jobdaemon is installed already, holds a
// lock against a second copy of itself, never runs in parallel with the
// other tests of this package, and purges the package at the end, even
// when it fails. It boots a testbed of its own (another SDTB_NAME), whose
// /run is private: the shared testbed's units, /run/jobdaemon included,
// are not touched. What Debian's conventions keep after a purge, the
// system user jobdaemon, the test checks and then deletes, if it created
// it.
//
// It needs root, the testbed, lintian and dpkg-deb: without them it
// skips, except under CI=true, where it fails.

import (
	"bytes"
	"compress/gzip"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	pkgBuildScript = "../../packaging/build-deb.sh"
	pkgTestbedName = "jobdaemon-package-test" // SDTB_NAME of the test's own testbed
	pkgConfig      = "/etc/jobdaemon/config.toml"
	pkgSpool       = "/var/lib/jobdaemon/spool"
)

// pkgBuild runs packaging/build-deb.sh into dir and returns the package's
// path.
func pkgBuild(t *testing.T, dir string) string {
	t.Helper()
	c := exec.Command("bash", pkgBuildScript)
	c.Env = append(os.Environ(), "OUT_DIR="+dir)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		t.Fatalf("build-deb.sh: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	deb := lines[len(lines)-1]
	if _, err := os.Stat(deb); err != nil {
		t.Fatalf("build-deb.sh printed %q: %v\n%s", deb, err, stderr.String())
	}
	return deb
}

// pkgGitCommit makes a commit in the repository dir at the given time.
func pkgGitCommit(t *testing.T, dir, when string) {
	t.Helper()
	c := exec.Command("git", "-c", "user.name=test", "-c", "user.email=test@example.org", "commit", "-q", "--allow-empty", "-m", when)
	c.Dir = dir
	c.Env = append(os.Environ(), "GIT_AUTHOR_DATE="+when, "GIT_COMMITTER_DATE="+when)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("git commit: %v\n%s", err, out)
	}
}

// The package version comes from git: a tag as it is, commits after a tag
// after it, no tag a snapshot of the commit's time; and dpkg orders them
// as the history goes. Run on a repository of its own, whose tags and
// times the test chooses.
func TestPackageVersion(t *testing.T) {
	dpkg := distTool(t, "dpkg")
	distTool(t, "git")
	dir := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		c := exec.Command("git", args...)
		c.Dir = dir
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	script, err := os.ReadFile(pkgBuildScript)
	if err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "packaging"), 0o755)
	os.WriteFile(filepath.Join(dir, "packaging", "build-deb.sh"), script, 0o755)
	git("add", "packaging/build-deb.sh")
	version := func() string {
		t.Helper()
		c := exec.Command("bash", "packaging/build-deb.sh", "--print-version")
		c.Dir = dir
		c.Env = append(os.Environ(), "VERSION=")
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("build-deb.sh --print-version: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}

	pkgGitCommit(t, dir, "2025-01-02T03:04:05Z")
	var got []string
	want := []string{"0.0~git20250102.030405." + git("rev-parse", "--short=7", "HEAD")}
	got = append(got, version())
	git("tag", "v1.2.0")
	want, got = append(want, "1.2.0"), append(got, version())
	pkgGitCommit(t, dir, "2025-02-01T00:00:00Z")
	want, got = append(want, "1.2.0+1.g"+git("rev-parse", "--short=7", "HEAD")), append(got, version())
	git("tag", "v1.3.0-rc1")
	want, got = append(want, "1.3.0~rc1"), append(got, version())
	os.WriteFile(filepath.Join(dir, "packaging", "build-deb.sh"), append(script, '\n'), 0o755)
	want, got = append(want, "1.3.0~rc1+dirty"), append(got, version())
	os.WriteFile(filepath.Join(dir, "packaging", "build-deb.sh"), script, 0o755)
	pkgGitCommit(t, dir, "2025-03-01T00:00:00Z")
	git("tag", "v1.3.0")
	want, got = append(want, "1.3.0"), append(got, version())
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("versions along the history:\n got %q\nwant %q", got, want)
	}
	for i := 1; i < len(got); i++ {
		if code, out := distRun(t, exec.Command(dpkg, "--compare-versions", got[i-1], "lt", got[i])); code != 0 {
			t.Errorf("dpkg does not order %s before %s: %s", got[i-1], got[i], out)
		}
	}
	// VERSION wins, and must be one dpkg accepts.
	c := exec.Command("bash", "packaging/build-deb.sh", "--print-version")
	c.Dir, c.Env = dir, append(os.Environ(), "VERSION=2.0.0")
	if out, err := c.Output(); err != nil || strings.TrimSpace(string(out)) != "2.0.0" {
		t.Errorf("VERSION=2.0.0: %q, %v", out, err)
	}
	c = exec.Command("bash", "packaging/build-deb.sh", "--print-version")
	c.Dir, c.Env = dir, append(os.Environ(), "VERSION=v2.0")
	if out, err := c.CombinedOutput(); err == nil || !strings.Contains(string(out), "not a Debian version") {
		t.Errorf("VERSION=v2.0 accepted: %q, %v", out, err)
	}
}

// pkgEntry is a line of dpkg-deb --contents.
type pkgEntry struct{ mode, owner string }

// pkgContents lists the package's files: path → mode string and owner.
func pkgContents(t *testing.T, deb string) map[string]pkgEntry {
	t.Helper()
	out, err := exec.Command("dpkg-deb", "--contents", deb).Output()
	if err != nil {
		t.Fatalf("dpkg-deb --contents: %v", err)
	}
	files := map[string]pkgEntry{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb --contents: %q", line)
		}
		path := strings.TrimSuffix(strings.TrimPrefix(f[5], "."), "/")
		if path == "" {
			path = "/"
		}
		files[path] = pkgEntry{mode: f[0], owner: f[1]}
	}
	return files
}

// pkgGunzip returns the uncompressed content of a gzip file.
func pkgGunzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return string(b)
}

// pkgCheckContents checks what the package holds, unpacked into root: the
// files where Debian wants them, with their modes, the conffiles, the
// binary as built, and the same bytes as their sources under dist/.
func pkgCheckContents(t *testing.T, deb, root, version string) {
	files := pkgContents(t, deb)
	for path, want := range map[string]string{
		"/usr/bin/jobdaemon":                                   "-rwxr-xr-x root/root",
		"/lib/systemd/system/jobdaemon.service":                "-rw-r--r-- root/root",
		"/lib/systemd/system/jobdaemon.socket":                 "-rw-r--r-- root/root",
		"/etc/init.d/jobdaemon":                                "-rwxr-xr-x root/root",
		"/etc/default/jobdaemon":                               "-rw-r--r-- root/root",
		"/etc/jobdaemon/config.toml":                           "-rw-r--r-- root/root",
		"/etc/logrotate.d/jobdaemon":                           "-rw-r--r-- root/root",
		"/usr/lib/sysusers.d/jobdaemon.conf":                   "-rw-r--r-- root/root",
		"/usr/lib/tmpfiles.d/jobdaemon.conf":                   "-rw-r--r-- root/root",
		"/usr/libexec/jobdaemon/example-job":                   "-rwxr-xr-x root/root",
		"/usr/share/man/man8/jobdaemon.8.gz":                   "-rw-r--r-- root/root",
		"/usr/share/man/man8/jobdaemon-run.8.gz":               "-rw-r--r-- root/root",
		"/usr/share/man/man8/jobdaemon-submit.8.gz":            "-rw-r--r-- root/root",
		"/usr/share/man/man8/jobdaemon-check-config.8.gz":      "-rw-r--r-- root/root",
		"/usr/share/bash-completion/completions/jobdaemon":     "-rw-r--r-- root/root",
		"/usr/share/doc/jobdaemon/copyright":                   "-rw-r--r-- root/root",
		"/usr/share/doc/jobdaemon/changelog.gz":                "-rw-r--r-- root/root",
		"/usr/share/doc/jobdaemon/examples/notify-reload.conf": "-rw-r--r-- root/root",
		"/usr/share/lintian/overrides/jobdaemon":               "-rw-r--r-- root/root",
		"/var/log/jobdaemon":                                   "drwxr-xr-x root/adm",
	} {
		e, ok := files[path]
		if !ok {
			t.Errorf("the package has no %s", path)
		} else if got := e.mode + " " + e.owner; got != want {
			t.Errorf("%s: %s, want %s", path, got, want)
		}
	}
	for path, e := range files {
		if e.owner != "root/root" && path != "/var/log/jobdaemon" {
			t.Errorf("%s is owned by %s", path, e.owner)
		}
		if strings.Contains(path, "notify-reload") && !strings.HasPrefix(path, "/usr/share/doc/") {
			t.Errorf("%s: the notify-reload drop-in is an example only (systemd 252 cannot use it)", path)
		}
	}

	// The files under /etc, and only they, are conffiles.
	ctrl := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "--control", deb, ctrl).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --control: %v\n%s", err, out)
	}
	conffiles, _ := os.ReadFile(filepath.Join(ctrl, "conffiles"))
	var etc []string
	for path, e := range files {
		if strings.HasPrefix(path, "/etc/") && e.mode[0] == '-' {
			etc = append(etc, path)
		}
	}
	for _, path := range etc {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(path) + `$`).Match(conffiles) {
			t.Errorf("%s is not a conffile:\n%s", path, conffiles)
		}
	}
	if n := strings.Count(strings.TrimSpace(string(conffiles)), "\n") + 1; n != len(etc) {
		t.Errorf("%d conffiles for %d files under /etc:\n%s", n, len(etc), conffiles)
	}
	control, _ := os.ReadFile(filepath.Join(ctrl, "control"))
	for _, want := range []string{
		"Package: jobdaemon\n",
		"Version: " + version + "\n",
		"Architecture: " + runtime.GOARCH + "\n",
		"Depends: adduser\n",
		"Pre-Depends: init-system-helpers (>= 1.54~)\n",
	} {
		if !strings.Contains(string(control), want) {
			t.Errorf("control has no %q:\n%s", want, control)
		}
	}

	// The same bytes as the sources.
	for dst, src := range map[string]string{
		"lib/systemd/system/jobdaemon.service":                distPath("systemd", "jobdaemon.service"),
		"lib/systemd/system/jobdaemon.socket":                 distPath("systemd", "jobdaemon.socket"),
		"usr/share/doc/jobdaemon/examples/notify-reload.conf": distPath("systemd", "notify-reload.conf"),
		"etc/init.d/jobdaemon":                                distPath("initd", "jobdaemon"),
		"etc/default/jobdaemon":                               distPath("default", "jobdaemon"),
		"etc/jobdaemon/config.toml":                           distPath("config.toml"),
		"etc/logrotate.d/jobdaemon":                           distPath("logrotate.d", "jobdaemon"),
		"usr/lib/sysusers.d/jobdaemon.conf":                   distPath("sysusers.d", "jobdaemon.conf"),
		"usr/lib/tmpfiles.d/jobdaemon.conf":                   distPath("tmpfiles.d", "jobdaemon.conf"),
		"usr/libexec/jobdaemon/example-job":                   "../../packaging/example-job",
		"usr/share/doc/jobdaemon/copyright":                   "../../packaging/deb/copyright",
	} {
		a, err1 := os.ReadFile(filepath.Join(root, dst))
		b, err2 := os.ReadFile(src)
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			t.Errorf("/%s differs from %s (%v, %v)", dst, src, err1, err2)
		}
	}
	cfg, _ := os.ReadFile(filepath.Join(root, "etc/jobdaemon/config.toml"))
	if !strings.Contains(string(cfg), `command = ["/usr/libexec/jobdaemon/example-job", "{name}"]`) {
		t.Errorf("the packaged config.toml does not run the packaged example-job")
	}

	// The binary: position-independent, linked against no library,
	// stripped, built without cgo and with -trimpath, and with the
	// package's version.
	bin := filepath.Join(root, "usr/bin/jobdaemon")
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	libs, _ := ef.ImportedLibraries()
	if ef.Type != elf.ET_DYN || len(libs) != 0 || ef.Section(".symtab") != nil {
		t.Errorf("/usr/bin/jobdaemon: type %v (want ET_DYN, a PIE), libraries %q (want none), symbols %v (want stripped)",
			ef.Type, libs, ef.Section(".symtab") != nil)
	}
	ef.Close()
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	// (-trimpath keeps -ldflags out of the build information: --version
	// shows the -X below.)
	if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" || settings["-buildmode"] != "pie" {
		t.Errorf("/usr/bin/jobdaemon built with %v", settings)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "jobdaemon "+version {
		t.Errorf("jobdaemon --version: %q, %v; want jobdaemon %s", out, err, version)
	}
	// Every module linked into it is in the copyright file.
	copyright, _ := os.ReadFile(filepath.Join(root, "usr/share/doc/jobdaemon/copyright"))
	files2 := regexp.MustCompile(`(?m)^Files:((?:.*\n)(?: .*\n)*)`).FindAllSubmatch(copyright, -1)
	listed := map[string]bool{}
	for _, m := range files2 {
		for _, f := range strings.Fields(string(m[1])) {
			listed[strings.TrimSuffix(f, "/*")] = true
		}
	}
	for _, dep := range bi.Deps {
		if !listed[dep.Path] {
			t.Errorf("the binary links %s, which the copyright file does not list", dep.Path)
		}
	}

	// The man pages and the completion come from the binary: they show
	// the default --config.
	run := pkgGunzip(t, filepath.Join(root, "usr/share/man/man8/jobdaemon-run.8.gz"))
	if !strings.Contains(run, `config\fP="/etc/jobdaemon/config.toml"`) || !strings.Contains(run, `.TH "jobdaemon" "8"`) {
		t.Errorf("jobdaemon-run(8) is not the binary's page of section 8 with the default --config:\n%s", run)
	}
	completion := filepath.Join(root, "usr/share/bash-completion/completions/jobdaemon")
	if code, out := distRun(t, exec.Command("bash", "-c", `. "$1" && complete -p jobdaemon`, "bash", completion)); code != 0 ||
		!strings.Contains(out, "jobdaemon") {
		t.Errorf("the bash completion registers nothing for jobdaemon: exit %d\n%s", code, out)
	}
	changelog := pkgGunzip(t, filepath.Join(root, "usr/share/doc/jobdaemon/changelog.gz"))
	if !strings.HasPrefix(changelog, "jobdaemon ("+version+") unstable; urgency=medium\n") {
		t.Errorf("changelog.gz does not start with this version:\n%s", changelog)
	}
}

// pkgBed is the test's own systemd testbed.
type pkgBed struct {
	t      *testing.T
	script string
}

func (b *pkgBed) cmd(args ...string) *exec.Cmd {
	c := exec.Command(b.script, args...)
	c.Env = append(os.Environ(), "SDTB_NAME="+pkgTestbedName, "GORACE=atexit_sleep_ms=0")
	return c
}

// exec runs a command inside the testbed; it returns the exit code and
// the output.
func (b *pkgBed) exec(args ...string) (int, string) {
	b.t.Helper()
	return distRun(b.t, b.cmd(append([]string{"exec"}, args...)...))
}

// must runs a command inside the testbed that must succeed.
func (b *pkgBed) must(args ...string) string {
	b.t.Helper()
	code, out := b.exec(args...)
	if code != 0 {
		b.t.Fatalf("%v: exit %d\n%s", args, code, out)
	}
	return out
}

// show returns a property of a unit.
func (b *pkgBed) show(unit, prop string) string {
	b.t.Helper()
	return strings.TrimSpace(b.must("systemctl", "show", "-p", prop, "--value", unit))
}

func (b *pkgBed) journal() string {
	_, out := b.exec("journalctl", "-u", "jobdaemon", "--no-pager", "-n", "40")
	return out
}

// dpkg runs dpkg in the testbed, again while another dpkg or apt holds
// its lock (other work on this machine installs packages too).
func (b *pkgBed) dpkg(args ...string) string {
	b.t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		code, out := b.exec(append([]string{"dpkg"}, args...)...)
		if code == 0 {
			return out
		}
		if !strings.Contains(out, "lock") || time.Now().After(deadline) {
			b.t.Fatalf("dpkg %v: exit %d\n%s", args, code, out)
		}
		time.Sleep(2 * time.Second)
	}
}

// pkgOutput runs a command on the host that must succeed, and returns
// its standard output.
func pkgOutput(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	c := exec.Command(name, args...)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, stderr.String())
	}
	return stdout.String()
}

// pkgStatus returns dpkg's status of the package, such as "ii" or "rc";
// "" when dpkg does not know it.
func pkgStatus(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "jobdaemon").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// pkgExists reports whether path exists on the host (or the shared disk).
func pkgExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// pkgDaemons returns the pids of the processes that run /usr/bin/jobdaemon,
// on the host and in every testbed.
func pkgDaemons() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.HasPrefix(b, []byte("/usr/bin/jobdaemon\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pkgStat returns a path's mode and owner names as ls shows them, such as
// "drwxrws--- jobdaemon:jobdaemon".
func pkgStat(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("stat", "-c", "%A %U:%G", path).CombinedOutput()
	if err != nil {
		t.Errorf("stat %s: %v\n%s", path, err, out)
	}
	return strings.TrimSpace(string(out))
}

// pkgResult waits for the record of job name in done/ or failed/ and
// returns where it went and the record.
func pkgResult(t *testing.T, name string, logs func() string) (string, record) {
	t.Helper()
	var where string
	var r record
	pollUntil(t, "job "+name+" finished", 30*time.Second, func() bool {
		for _, w := range []string{"done", "failed"} {
			b, err := os.ReadFile(filepath.Join(pkgSpool, w, name+".result.json"))
			if err == nil && json.Unmarshal(b, &r) == nil {
				where = w
				return true
			}
		}
		return false
	}, logs)
	return where, r
}

// The package, end to end: built, linted, installed, run under systemd
// with the unit and config as shipped, reloaded, upgraded, run by its init
// script on the host, removed and purged.
func TestPackage(t *testing.T) {
	needRoot(t)
	for _, tool := range []string{"dpkg", "dpkg-deb", "dpkg-query", "lintian", "git", "stat", "bash"} {
		distTool(t, tool)
	}
	b := &pkgBed{t: t, script: testbed(t)}
	start := time.Now()
	phase := start
	lap := func(what string) {
		t.Logf("%-28s %6.1fs", what, time.Since(phase).Seconds())
		phase = time.Now()
	}

	// One copy of this test at a time on the machine.
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "jobdaemon-package-test.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	// Registered first, so released last: after the cleanup's purge.
	t.Cleanup(func() { lock.Close() })
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if st := pkgStatus(t); st != "" && st != "un" {
		t.Fatalf("the package jobdaemon is installed on this machine already (%s): the test would remove it "+
			"(if a killed run of this test left it, purge it: dpkg --purge jobdaemon)", st)
	}
	for _, p := range []string{"/usr/bin/jobdaemon", "/etc/jobdaemon", "/var/lib/jobdaemon", "/var/log/jobdaemon", "/etc/init.d/jobdaemon"} {
		if pkgExists(p) {
			t.Fatalf("%s exists, from no package: the test would replace or delete it", p)
		}
	}

	deb := pkgBuild(t, t.TempDir())
	version := strings.TrimSpace(pkgOutput(t, "dpkg-deb", "--field", deb, "Version"))
	if !strings.HasSuffix(deb, "/jobdaemon_"+version+"_"+runtime.GOARCH+".deb") {
		t.Errorf("package file %s for version %s", deb, version)
	}
	if head, err := exec.Command("git", "rev-parse", "--short=7", "HEAD").Output(); err == nil &&
		!strings.Contains(version, strings.TrimSpace(string(head))) && !regexp.MustCompile(`^\d+(\.\d+)*(~\w+)?$`).MatchString(version) {
		t.Errorf("version %s names neither a tag nor the commit %s", version, head)
	}
	lap("build-deb.sh")

	root := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "--extract", deb, root).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --extract: %v\n%s", err, out)
	}
	pkgCheckContents(t, deb, root, version)
	lap("contents")

	// lintian: no error and no warning (the overrides shipped in the
	// package say why for the rest).
	code, out := distRun(t, exec.Command("lintian", "--fail-on", "error,warning", "--display-level", ">=warning", deb))
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
			t.Errorf("lintian: %s", line)
		}
	}
	if code != 0 {
		t.Errorf("lintian: exit %d\n%s", code, out)
	}
	lap("lintian")
	if t.Failed() {
		return // nothing is installed from a package that is wrong
	}

	// Everything the package and the test leave on the host is removed
	// at the end, whatever happens.
	userBefore := exec.Command("getent", "passwd", "jobdaemon").Run() == nil
	groupBefore := exec.Command("getent", "group", "jobdaemon").Run() == nil
	jobUserBefore := exec.Command("getent", "passwd", "jobdaemon-job").Run() == nil
	jobGroupBefore := exec.Command("getent", "group", "jobdaemon-job").Run() == nil
	hostRunBefore := pkgExists("/run/jobdaemon")
	bedUp := false
	t.Cleanup(func() {
		if pkgExists("/etc/init.d/jobdaemon") && pkgExists("/usr/bin/jobdaemon") {
			c := exec.Command("/etc/init.d/jobdaemon", "stop")
			c.Env = append(os.Environ(), "SYSTEMCTL_SKIP_REDIRECT=1")
			c.Run()
		}
		if st := pkgStatus(t); st != "" && st != "un" {
			args := []string{"dpkg", "--purge", "jobdaemon"}
			if bedUp {
				args = append([]string{b.script, "exec"}, args...)
			}
			c := exec.Command(args[0], args[1:]...)
			c.Env = append(os.Environ(), "SDTB_NAME="+pkgTestbedName)
			if out, err := c.CombinedOutput(); err != nil {
				t.Errorf("cleanup: dpkg --purge: %v\n%s", err, out)
			}
		}
		if bedUp {
			if out, err := b.cmd("purge").CombinedOutput(); err != nil {
				t.Errorf("cleanup: testbed purge: %v\n%s", err, out)
			}
		}
		// What a broken postrm may leave; none of it was there before
		// (the test refuses to start otherwise).
		if !hostRunBefore {
			os.RemoveAll("/run/jobdaemon")
		}
		for _, p := range []string{"/var/lib/jobdaemon", "/var/log/jobdaemon", "/etc/jobdaemon"} {
			os.RemoveAll(p)
		}
		if !userBefore && exec.Command("getent", "passwd", "jobdaemon").Run() == nil {
			if out, err := exec.Command("userdel", "jobdaemon").CombinedOutput(); err != nil {
				t.Errorf("cleanup: userdel jobdaemon: %v\n%s", err, out)
			}
		}
		if !groupBefore && exec.Command("getent", "group", "jobdaemon").Run() == nil {
			exec.Command("groupdel", "jobdaemon").Run()
		}
		if !jobUserBefore && exec.Command("getent", "passwd", "jobdaemon-job").Run() == nil {
			if out, err := exec.Command("userdel", "jobdaemon-job").CombinedOutput(); err != nil {
				t.Errorf("cleanup: userdel jobdaemon-job: %v\n%s", err, out)
			}
		}
		if !jobGroupBefore && exec.Command("getent", "group", "jobdaemon-job").Run() == nil {
			exec.Command("groupdel", "jobdaemon-job").Run()
		}
		t.Logf("%-28s %6.1fs", "total", time.Since(start).Seconds())
	})

	if out, err := b.cmd("up").CombinedOutput(); err != nil {
		t.Fatalf("testbed up: %v\n%s", err, out)
	}
	bedUp = true
	lap("testbed up")

	// What the package will put on the disk, and what was there before:
	// after the purge, only what was there before may remain.
	files := pkgContents(t, deb)
	existed := map[string]bool{}
	for path := range files {
		existed[path] = pkgExists(path)
	}

	t.Run("install", func(t *testing.T) {
		b := &pkgBed{t: t, script: b.script}
		b.dpkg("--install", deb)
		if st := pkgStatus(t); st != "ii" {
			t.Fatalf("dpkg status %q after the installation", st)
		}
		passwd, _ := os.ReadFile("/etc/passwd")
		if !regexp.MustCompile(`(?m)^jobdaemon:x:\d{1,3}:\d+:[^:]*:/var/lib/jobdaemon:/usr/sbin/nologin$`).Match(passwd) {
			t.Errorf("no system user jobdaemon with home /var/lib/jobdaemon and no shell")
		}
		for path, want := range map[string]string{
			pkgConfig:               "-rw-r----- root:jobdaemon",
			"/var/lib/jobdaemon":    "drwxr-x--- jobdaemon:jobdaemon",
			pkgSpool:                "drwxr-x--- jobdaemon:jobdaemon",
			pkgSpool + "/incoming":  "drwxrws--- jobdaemon:jobdaemon",
			pkgSpool + "/done":      "drwxr-x--- jobdaemon:jobdaemon",
			"/var/log/jobdaemon":    "drwxr-xr-x root:adm",
			"/usr/bin/jobdaemon":    "-rwxr-xr-x root:root",
			"/etc/init.d/jobdaemon": "-rwxr-xr-x root:root",
		} {
			if got := pkgStat(t, path); got != want {
				t.Errorf("%s: %s, want %s", path, got, want)
			}
		}
		if got := strings.TrimSpace(b.must("stat", "-c", "%A %U:%G", "/run/jobdaemon")); got != "drwxr-xr-x jobdaemon:jobdaemon" {
			t.Errorf("/run/jobdaemon in the testbed: %s", got)
		}
		// Enabled, at boot and for socket activation, but not started.
		for _, unit := range []string{"jobdaemon.service", "jobdaemon.socket"} {
			if code, out := b.exec("systemctl", "is-enabled", unit); code != 0 || strings.TrimSpace(out) != "enabled" {
				t.Errorf("%s is not enabled: %s", unit, out)
			}
			if st := b.show(unit, "ActiveState"); st != "inactive" {
				t.Errorf("%s is %s right after the installation, want inactive", unit, st)
			}
		}
		if links, _ := filepath.Glob("/etc/rc2.d/S*jobdaemon"); len(links) != 1 {
			t.Errorf("no start link in /etc/rc2.d for the init script: %v", links)
		}
		if got := strings.TrimSpace(b.must("jobdaemon", "version")); got != "jobdaemon "+version {
			t.Errorf("jobdaemon version: %q", got)
		}
		if out := b.must("jobdaemon", "check-config"); !strings.Contains(out, pkgConfig+" is valid") {
			t.Errorf("check-config without --config:\n%s", out)
		}
	})
	if t.Failed() {
		return
	}
	lap("install")

	jobDir := t.TempDir()
	writeJob := func(t *testing.T, name, content string) string {
		t.Helper()
		p := filepath.Join(jobDir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	checkDone := func(t *testing.T, name string, logs func() string) {
		t.Helper()
		where, r := pkgResult(t, name, logs)
		// Run as the jobs' own user, from its standard input.
		if where != "done" || r.ExitCode != 0 || !strings.Contains(r.Output, "example-job: job "+name+" (attempt 1") ||
			!strings.Contains(r.Output, "bytes in "+name+", as jobdaemon-job") {
			t.Errorf("job %s ended in %s: %+v\n%s", name, where, r, logs())
		}
	}

	t.Run("systemd", func(t *testing.T) {
		b := &pkgBed{t: t, script: b.script}
		// apt install, then jobdaemon submit: no daemon runs yet, so the
		// job waits in the spool.
		if out := b.must("jobdaemon", "submit", writeJob(t, "before-start.txt", "queued before the start\n")); strings.TrimSpace(out) != "before-start.txt" {
			t.Errorf("submit printed %q", out)
		}
		if !pkgExists(pkgSpool + "/incoming/before-start.txt") {
			t.Fatalf("the job is not in %s/incoming", pkgSpool)
		}
		// The unit and config as shipped: no drop-in, no edit.
		b.must("systemctl", "start", "jobdaemon.service")
		if p := b.show("jobdaemon.service", "FragmentPath"); p != "/lib/systemd/system/jobdaemon.service" {
			t.Errorf("the unit comes from %s", p)
		}
		if d := b.show("jobdaemon.service", "DropInPaths"); d != "" {
			t.Errorf("the unit has drop-ins: %s", d)
		}
		checkDone(t, "before-start.txt", b.journal)
		code, out := b.exec("jobdaemon", "status", "--json")
		s := decodeStatus(t, code, out, b.journal)
		if s.State != "running" || s.Manager != "systemd" || s.User != "jobdaemon" || s.Generation != 1 {
			t.Errorf("status without --config: %+v", s)
		}
		// Through the control socket, now that the daemon runs.
		b.must("jobdaemon", "submit", writeJob(t, "after-start.txt", "queued while it runs\n"))
		checkDone(t, "after-start.txt", b.journal)
		if out := b.must("journalctl", "-u", "jobdaemon", "-o", "cat", "SYSLOG_IDENTIFIER=example-job"); !strings.Contains(out, "example-job: job after-start.txt") {
			t.Errorf("the job's output is not in the journal:\n%s", out)
		}

		b.must("systemctl", "reload", "jobdaemon.service")
		code, out = b.exec("jobdaemon", "status", "--json")
		if s := decodeStatus(t, code, out, b.journal); s.Generation != 2 || s.ReloadsFailed != 0 {
			t.Errorf("after systemctl reload: generation %d, %d refused", s.Generation, s.ReloadsFailed)
		}

		// An upgrade restarts a running daemon on the new binary, and
		// leaves a stopped one stopped.
		pid := b.show("jobdaemon.service", "MainPID")
		b.dpkg("--install", deb)
		if st, p := b.show("jobdaemon.service", "ActiveState"), b.show("jobdaemon.service", "MainPID"); st != "active" || p == pid || p == "0" {
			t.Errorf("after an upgrade while it ran: %s, pid %s then %s", st, pid, p)
		}
		b.must("systemctl", "stop", "jobdaemon.socket", "jobdaemon.service")
		b.dpkg("--install", deb)
		if st := b.show("jobdaemon.service", "ActiveState"); st != "inactive" {
			t.Errorf("after an upgrade while it was stopped: %s", st)
		}
		if left := pkgDaemons(); len(left) > 0 {
			t.Errorf("jobdaemon processes after the stop: %v", left)
		}
	})
	if t.Failed() {
		return
	}
	lap("systemd")

	// Classic init on the host, which runs no systemd: the package's
	// script and defaults file as shipped. The host has no syslog daemon
	// (/dev/log), so the config logs to a file, as docs/INSTALL.md says
	// to; the change is undone afterwards.
	t.Run("init script", func(t *testing.T) {
		shipped, err := os.ReadFile(pkgConfig)
		if err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(pkgConfig, shipped, 0o640)
		target, file := regexp.MustCompile(`(?m)^target = "auto"$`), regexp.MustCompile(`(?m)^file = ""$`)
		if len(target.FindAll(shipped, -1)) != 1 || len(file.FindAll(shipped, -1)) != 1 {
			t.Fatal("the shipped config.toml no longer has target = \"auto\" and file = \"\" in [log]")
		}
		edited := target.ReplaceAllLiteral(shipped, []byte(`target = "file"`))
		edited = file.ReplaceAllLiteral(edited, []byte(`file = "/var/log/jobdaemon/jobdaemon.log"`))
		os.WriteFile(pkgConfig, edited, 0o640)
		logFile := func() string {
			b, _ := os.ReadFile("/var/log/jobdaemon/jobdaemon.log")
			return tail(string(b))
		}
		script := func(want int, action string) string {
			t.Helper()
			c := exec.Command("/etc/init.d/jobdaemon", action)
			c.Env = append(os.Environ(), "SYSTEMCTL_SKIP_REDIRECT=1", "GORACE=atexit_sleep_ms=0")
			code, out := distRun(t, c)
			if code != want {
				t.Fatalf("/etc/init.d/jobdaemon %s: exit %d, want %d\n%s\nlog:\n%s", action, code, want, out, logFile())
			}
			return out
		}
		script(3, "status")
		if out := script(0, "start"); strings.Contains(out, "systemctl") {
			t.Errorf("the init script went through systemctl on a host without systemd:\n%s", out)
		}
		if len(pkgDaemons()) == 0 {
			t.Errorf("no /usr/bin/jobdaemon process after the init script's start")
		}
		if out := script(0, "status"); !strings.Contains(out, "a classic daemon, user jobdaemon") {
			t.Errorf("status of the init script's daemon:\n%s", out)
		}
		code, out := distRun(t, exec.Command("/usr/bin/jobdaemon", "submit", writeJob(t, "init-script.txt", "run by the classic daemon\n")))
		if code != 0 {
			t.Fatalf("submit: exit %d\n%s", code, out)
		}
		checkDone(t, "init-script.txt", logFile)
		script(0, "stop")
		script(3, "status")
		if left := pkgDaemons(); len(left) > 0 {
			t.Errorf("jobdaemon processes after the init script's stop: %v", left)
		}
		if !strings.Contains(logFile(), `"msg":"ready"`) {
			t.Errorf("no \"ready\" in the log file:\n%s", logFile())
		}
	})
	if t.Failed() {
		return
	}
	lap("init script")

	// dpkg -L, while the package is installed: the files it owns.
	owned := strings.Fields(pkgOutput(t, "dpkg-query", "--listfiles", "jobdaemon"))

	t.Run("remove", func(t *testing.T) {
		b := &pkgBed{t: t, script: b.script}
		b.must("systemctl", "start", "jobdaemon.service")
		if len(pkgDaemons()) == 0 {
			t.Fatal("no daemon runs before the removal")
		}
		b.dpkg("--remove", "jobdaemon")
		if st := pkgStatus(t); st != "rc" {
			t.Errorf("dpkg status %q after the removal, want rc (config files left)", st)
		}
		for _, unit := range []string{"jobdaemon.service", "jobdaemon.socket"} {
			if st := b.show(unit, "ActiveState"); st != "inactive" {
				t.Errorf("%s is %s after the removal", unit, st)
			}
		}
		if left := pkgDaemons(); len(left) > 0 {
			t.Errorf("jobdaemon processes after the removal: %v", left)
		}
		// The program goes; configuration, data and user stay.
		for _, p := range []string{"/usr/bin/jobdaemon", "/lib/systemd/system/jobdaemon.service", "/usr/libexec/jobdaemon/example-job"} {
			if pkgExists(p) {
				t.Errorf("%s is left after the removal", p)
			}
		}
		for _, p := range []string{pkgConfig, "/etc/init.d/jobdaemon", "/etc/default/jobdaemon",
			pkgSpool + "/done/before-start.txt", pkgSpool + "/done/after-start.txt.result.json"} {
			if !pkgExists(p) {
				t.Errorf("%s is gone after the removal; remove keeps configuration and data", p)
			}
		}
		if exec.Command("getent", "passwd", "jobdaemon").Run() != nil {
			t.Errorf("the user jobdaemon is gone after the removal")
		}
		// The leftover init script cannot be started by systemd.
		if st := b.show("jobdaemon.service", "LoadState"); st != "masked" {
			t.Errorf("jobdaemon.service is %s after the removal, want masked", st)
		}
	})
	if t.Failed() {
		return
	}
	lap("remove")

	t.Run("purge", func(t *testing.T) {
		b := &pkgBed{t: t, script: b.script}
		b.dpkg("--purge", "jobdaemon")
		if st := pkgStatus(t); st != "" && st != "un" {
			t.Errorf("dpkg status %q after the purge", st)
		}
		for _, p := range owned {
			if p = filepath.Clean(p); !existed[p] && pkgExists(p) {
				t.Errorf("%s, which the package installed, is left after the purge", p)
			}
		}
		var left []string
		for _, pattern := range []string{
			"/etc/jobdaemon", "/var/lib/jobdaemon", "/var/log/jobdaemon", "/usr/libexec/jobdaemon",
			"/etc/systemd/system/jobdaemon.*", "/etc/systemd/system/*/jobdaemon.*",
			"/etc/rc?.d/[SK][0-9][0-9]jobdaemon",
			"/var/lib/systemd/deb-systemd-helper-enabled/jobdaemon.*",
			"/var/lib/systemd/deb-systemd-helper-enabled/*/jobdaemon.*",
			"/var/lib/systemd/deb-systemd-helper-masked/jobdaemon.*",
			"/var/lib/dpkg/info/jobdaemon.*",
		} {
			m, _ := filepath.Glob(pattern)
			left = append(left, m...)
		}
		if len(left) > 0 {
			t.Errorf("left after the purge: %q", left)
		}
		if code, _ := b.exec("test", "-e", "/run/jobdaemon"); code == 0 {
			t.Errorf("/run/jobdaemon is left after the purge")
		}
		b.must("systemctl", "daemon-reload")
		for _, unit := range []string{"jobdaemon.service", "jobdaemon.socket"} {
			if st := b.show(unit, "LoadState"); st != "not-found" {
				t.Errorf("systemd still knows %s after the purge: %s", unit, st)
			}
		}
		// Debian's convention: the system user stays (files it owns may
		// remain elsewhere). The cleanup deletes it, as the test made it.
		if !userBefore && exec.Command("getent", "passwd", "jobdaemon").Run() != nil {
			t.Errorf("the purge deleted the user jobdaemon; Debian keeps system users")
		}
	})
	lap("purge")
}
