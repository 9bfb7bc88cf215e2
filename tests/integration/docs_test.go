package integration

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The README shows examples/minimal, the whole program and its unit, as
// they are in the repository: the program builds and runs (below), and
// the unit passes systemd-analyze verify.
func TestReadmeMinimalExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"main.go", "minimal.service"} {
		b, err := os.ReadFile("../../examples/minimal/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(readme), "\n"+string(b)+"```") {
			t.Errorf("README.md does not show examples/minimal/%s as it is", name)
		}
		if name == "main.go" && strings.Count(string(b), "\n") >= 60 {
			t.Errorf("examples/minimal/main.go has %d lines: the README promises under 60", strings.Count(string(b), "\n"))
		}
	}

	dir := t.TempDir()
	bin := filepath.Join(dir, "minimal")
	if out, err := exec.Command("go", "build", "-o", bin, "../../examples/minimal").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	c := exec.Command(bin, "run", "--drain")
	c.Env = append(os.Environ(), "MINIMAL_RUN_DIR="+dir, "MINIMAL_CHILDREN=3")
	out, err := c.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "1000 jobs completed, 0 failed (1000 runs, 0 failed)") ||
		!strings.Contains(string(out), "job-1000 in slot") {
		t.Errorf("minimal run --drain: %v\n%s", err, tail(string(out)))
	}

	analyze := distTool(t, "systemd-analyze")
	unit, _ := os.ReadFile("../../examples/minimal/minimal.service")
	path := filepath.Join(dir, "minimal.service")
	os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/minimal", bin)), 0o644)
	if code, out := distRun(t, exec.Command(analyze, "verify", "--man=no", path)); code != 0 || out != "" {
		t.Errorf("systemd-analyze verify minimal.service: exit %d\n%s", code, out)
	}
}

// Every jobdaemon command that README.md and docs/INSTALL.md show is one
// the binary takes, with those flags (it is parsed, then --help stops it
// before it acts); every TOML block of README.md is a valid piece of
// config.toml.
func TestDocsCommandsAndConfig(t *testing.T) {
	block := regexp.MustCompile("(?s)```(sh|toml)\n(.*?)```")
	bad := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(bad, []byte("[job]\ncommand = [\"/bin/true\"]\nbogus = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if parseOnly(bad) == nil {
		t.Fatal("parseOnly took a file with an unknown key: the TOML check below could not fail")
	}
	for _, doc := range []string{"../../README.md", "../../docs/INSTALL.md"} {
		text, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, m := range block.FindAllStringSubmatch(string(text), -1) {
			for _, line := range strings.Split(m[2], "\n") {
				if m[1] == "toml" {
					continue
				}
				line = strings.TrimSpace(line)
				if i := strings.Index(line, " #"); i >= 0 {
					line = strings.TrimSpace(line[:i])
				}
				if i := strings.Index(line, "| jobdaemon "); i >= 0 {
					line = line[i+2:]
				}
				if !strings.HasPrefix(line, "jobdaemon ") || strings.ContainsAny(line, "|;&<>$*") {
					continue
				}
				args := strings.Fields(line)[1:]
				n++
				c := exec.Command(binary, append(args, "--help")...)
				out, err := c.CombinedOutput()
				if err != nil || !strings.Contains(string(out), "Usage: jobdaemon") {
					t.Errorf("%s: %q is not a command the binary takes: %v\n%s", doc, line, err, out)
				}
			}
			if m[1] == "toml" && doc == "../../README.md" {
				dir := t.TempDir()
				body := m[2]
				if !strings.Contains(body, "command =") {
					body = "[job]\ncommand = [\"/bin/true\"]\n" + body
				}
				path := filepath.Join(dir, "config.toml")
				if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := parseOnly(path); err != nil {
					t.Errorf("README.md: a TOML example is not valid config.toml: %v\n%s", err, m[2])
				}
			}
		}
		if n < 5 {
			t.Errorf("%s: only %d jobdaemon commands found: is the extraction broken?", doc, n)
		}
	}
}

// parseOnly reads a config file as the client commands do: keys, types
// and values, not whether its users and programs exist here.
func parseOnly(path string) error {
	out, err := exec.Command(binary, "status", "--config", path).CombinedOutput()
	// status says "not running" with LSB's codes, even for a file it
	// cannot read: what tells is an error naming the file's line.
	var exit *exec.ExitError
	named := regexp.MustCompile(regexp.QuoteMeta(path) + `:[0-9]+: `)
	if errors.As(err, &exit) && exit.ExitCode() == 78 || named.Match(out) || strings.Contains(string(out), "invalid configuration") {
		return fmt.Errorf("exit %v: %s", err, out)
	}
	// Any other answer (not running, running) read the file.
	return nil
}

// Every fuzz target of the repository is in .ci/fuzz-targets, which CI
// and bench/fuzz.sh run, and every line there names one that exists.
func TestFuzzTargetsListed(t *testing.T) {
	listed := map[string]bool{}
	b, err := os.ReadFile("../../.ci/fuzz-targets")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && !strings.HasPrefix(f[0], "#") {
			listed[strings.TrimPrefix(f[0], "./")+" "+f[1]] = true
		}
	}
	found := map[string]bool{}
	decl := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(`)
	err = filepath.WalkDir("../..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && p != "../.." {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range decl.FindAllSubmatch(src, -1) {
			found[strings.TrimPrefix(filepath.Dir(p), "../../")+" "+string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for k := range found {
		if !listed[k] {
			t.Errorf("fuzz target %s is not in .ci/fuzz-targets", k)
		}
	}
	for k := range listed {
		if !found[k] {
			t.Errorf(".ci/fuzz-targets lists %s, which does not exist", k)
		}
	}
	if len(found) < 10 {
		t.Errorf("only %d fuzz targets found: %v", len(found), found)
	}
}

// docs/GUARANTEES.md names, beside each guarantee, the tests that prove
// it: each of them exists.
func TestGuaranteesNameRealTests(t *testing.T) {
	doc, err := os.ReadFile("../../docs/GUARANTEES.md")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	decl := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)\w+)\(`)
	filepath.WalkDir("../..", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !strings.HasSuffix(p, "_test.go") {
			return err
		}
		src, _ := os.ReadFile(p)
		for _, m := range decl.FindAllSubmatch(src, -1) {
			defined[string(m[1])] = true
		}
		return nil
	})
	named := regexp.MustCompile("`((?:Test|Fuzz)\\w+)`").FindAllSubmatch(doc, -1)
	if len(named) < 40 {
		t.Fatalf("GUARANTEES.md names only %d tests", len(named))
	}
	for _, m := range named {
		if !defined[string(m[1])] {
			t.Errorf("GUARANTEES.md names %s, which is no test", m[1])
		}
	}
}
